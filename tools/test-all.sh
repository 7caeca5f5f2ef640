#!/usr/bin/env bash
# Runs every check and test of the project: the README's test command, and what .ci/run runs.
# Installs what it needs on a fresh Debian machine (run as root, or have the packages).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Debian's Rust toolchain ships the standard library sources, which `-Zbuild-std` needs to
# check (and later build) the bare-metal ARM targets; rustup cannot download targets here.
# See ../shared/notes/cross-targets.md (copied into docs/CROSS.md).
APT_PACKAGES=(rustc-web cargo-web rust-web-src gcc-arm-none-eabi gcc-aarch64-linux-gnu libc6-dev-arm64-cross
  qemu-system-arm qemu-user)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  step "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "rustfmt"
cargo fmt --all --check

step "clippy"
cargo clippy --workspace --all-targets --release -- -D warnings

step "rustdoc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "qformer-core is no_std without alloc: cargo check for the bare-metal targets"
for target in thumbv7em-none-eabihf thumbv8m.main-none-eabihf aarch64-unknown-none; do
  RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo check --quiet -p qformer-core --target "$target" \
    -Zbuild-std=core --target-dir target/cross
  echo "ok: $target"
done

step "tests (host)"
cargo test --workspace --release

step "qformer-core unit tests with debug assertions (the kernels' debug_assert!ed preconditions, the QRows activation range)"
cargo test -p qformer-core --lib

step "qformer-core on aarch64 under qemu-aarch64: Cortex-A72 (Pi 4, base NEON), Cortex-A76 (Pi 5, dotprod), max (i8mm)"
export RUSTC_BOOTSTRAP=1
for cpu in cortex-a72 cortex-a76 max; do
  echo "-- cpu $cpu"
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu $cpu" \
    RUSTC=/usr/bin/rustc /usr/bin/cargo test --release -p qformer-core --lib -Zbuild-std=std,panic_abort,test \
    --target aarch64-unknown-linux-gnu --target-dir target/cross -- --nocapture 2>&1 | grep -vE '^\s+(Compiling|Finished|Running)'
  test "${PIPESTATUS[0]}" -eq 0
done

step "qformer for the Raspberry Pi (aarch64-unknown-linux-gnu): demo under qemu-aarch64 as Pi 4 (Cortex-A72) and Pi 5 (Cortex-A76)"
RUSTC=/usr/bin/rustc /usr/bin/cargo build --quiet --release -p qformer-std --bin qformer -Zbuild-std=std,panic_abort \
  --target aarch64-unknown-linux-gnu --target-dir target/cross
for cpu in cortex-a72 cortex-a76; do
  echo "-- cpu $cpu"
  timeout 600 qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu "$cpu" target/cross/aarch64-unknown-linux-gnu/release/qformer demo --runs 1
done

step "Cortex-M kernels and the int8 model under qemu-system-arm: M55 (Helium), M4 and M7 (DSP)"
bash tools/arm-tests.sh

step "Bare-metal Cortex-A (AArch64 virt): Cortex-A53, Cortex-A76, max"
bash tools/cortex-a.sh

step "Firmware examples under QEMU: Cortex-M55 (Helium), Cortex-M4 and M7 (DSP); MCU model files up to date"
bash firmware/models/make.sh --check
bash tools/firmware.sh

step "Fuzzing: blob parsing, mutated blobs, checkpoint and input loading (60 s per target; corpus in fuzz/corpus)"
rustup component list --toolchain nightly --installed 2>/dev/null | grep -q rust-src || rustup component add rust-src --toolchain nightly
bash tools/fuzz.sh "${QFORMER_FUZZ_SECONDS:-60}"
