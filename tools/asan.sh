#!/usr/bin/env bash
# Runs the qformer-core unit tests and the integration tests (qformer-tests) under
# AddressSanitizer: the standard library is rebuilt with the sanitizer (-Zbuild-std), so
# an out-of-bounds access or use-after-free anywhere — the SIMD kernels' raw-pointer loads
# included — aborts the test with a report.
#
#   tools/asan.sh [extra cargo test arguments, e.g. -- --skip accuracy]
#
# Needs the nightly toolchain with rust-src (`rustup component add rust-src --toolchain
# nightly`, installed here if missing). Builds into target/asan, so the normal build is
# untouched. The first build of std takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

sysroot=$(rustc +nightly --print sysroot)
if [[ ! -d $sysroot/lib/rustlib/src/rust/library ]]; then
  echo "==> installing rust-src for nightly"
  rustup component add rust-src --toolchain nightly
fi

host=$(rustc +nightly -vV | awk '/^host:/ {print $2}')
flags="-Zsanitizer=address"
# detect_leaks: the tests leak nothing on purpose; report leaks too.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
RUSTFLAGS="$flags" RUSTDOCFLAGS="$flags" cargo +nightly test -Zbuild-std --target "$host" \
  --target-dir target/asan -p qformer-core -p qformer-tests "$@"
