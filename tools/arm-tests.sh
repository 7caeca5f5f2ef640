#!/usr/bin/env bash
# Bare-metal tests of qformer-core's kernels on Cortex-M under QEMU (firmware/kernel-tests):
# every compiled int8 GEMM variant and activation quantizer against scalar, bit for bit, every
# compiled float GEMM within its bound of scalar, and the tiny int8 model's output
# bytes against the host's. Builds each image once, runs it with a timeout, fails on any failure.
#
#   Cortex-M55 + Helium (MVE): thumbv8m.main-none-eabihf, +mve, feature helium -> qemu mps3-an547
#   Cortex-M4 + DSP:           thumbv7em-none-eabihf                          -> qemu mps2-an386
#   Cortex-M7 + DSP:           the same thumbv7em ELF                         -> qemu mps2-an500
#
# Uses an installed rustup target when there is one, else Debian's cargo (rust-web-src) with
# `-Zbuild-std=core`; see docs/CROSS.md. Needs gcc-arm-none-eabi (linker) and qemu-system-arm.
set -euo pipefail
cd "$(dirname "$0")/../firmware/kernel-tests"

RUN_TIMEOUT=${RUN_TIMEOUT:-120}

# cargo_for TARGET: prints the cargo command line prefix for TARGET.
cargo_for() {
  if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$1"; then
    echo "cargo"
  else
    echo "env RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo -Zbuild-std=core"
  fi
}

build() { # TARGET [cargo args...]
  local target=$1
  shift
  echo "==> build tests for $target $*"
  $(cargo_for "$target") build --quiet --release --locked --target "$target" --bin tests "$@"
}

failures=0
run() { # MACHINE ELF
  echo "==> qemu-system-arm -machine $1"
  local status=0
  # QEMU 7.2 writes semihosting output to stderr.
  timeout "$RUN_TIMEOUT" qemu-system-arm -machine "$1" -nographic -semihosting-config enable=on,target=native \
    -kernel "$2" 2>&1 || status=$?
  if ((status != 0)); then
    echo "FAILED: $1 (exit status $status${status/124/, timed out})"
    failures=$((failures + 1))
  fi
}

build thumbv8m.main-none-eabihf --features helium
build thumbv7em-none-eabihf
run mps3-an547 target/thumbv8m.main-none-eabihf/release/tests
run mps2-an386 target/thumbv7em-none-eabihf/release/tests
run mps2-an500 target/thumbv7em-none-eabihf/release/tests

if ((failures)); then
  echo "arm-tests: $failures machine(s) failed"
  exit 1
fi
echo "arm-tests: all machines passed"
