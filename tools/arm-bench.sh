#!/usr/bin/env bash
# Instruction counts of the int8 GEMM, the float GEMM (f32/fp16 weights) and the activation
# quantizer at BLIP-2 shapes on Cortex-M under QEMU, scalar vs SIMD
# (firmware/kernel-tests, bin `bench`). A benchmark, not a test: QEMU with `-icount shift=0`
# counts instructions (read from SysTick), not cycles; quote them as instruction counts.
#
#   Cortex-M55 + Helium: thumbv8m.main-none-eabihf, feature helium -> qemu mps3-an547, twice:
#     with +mve (LLVM auto-vectorizes the "scalar" kernel's i8 dot with MVE) and without it
#     (the scalar kernel really scalar; the Helium asm needs no global flag)
#   Cortex-M4/M7 + DSP: thumbv7em-none-eabihf -> qemu mps2-an386 (M4) and mps2-an500 (M7)
set -euo pipefail
cd "$(dirname "$0")/../firmware/kernel-tests"

RUN_TIMEOUT=${RUN_TIMEOUT:-900}

cargo_for() {
  if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$1"; then
    echo "cargo"
  else
    echo "env RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo -Zbuild-std=core"
  fi
}

build() { # TARGET TARGET_DIR [cargo args...]
  local target=$1 dir=$2
  shift 2
  echo "==> build bench for $target $*"
  $(cargo_for "$target") build --quiet --release --locked --target "$target" --target-dir "$dir" --bin bench "$@"
}

run() { # LABEL MACHINE ELF
  echo
  echo "==> $1 (qemu-system-arm -machine $2 -icount shift=0)"
  timeout "$RUN_TIMEOUT" qemu-system-arm -machine "$2" -icount shift=0 -nographic \
    -semihosting-config enable=on,target=native -kernel "$3" 2>&1
}

build thumbv8m.main-none-eabihf target --features helium
# Same image without MVE code generation: cargo appends these flags to the config's, and the
# later `-mve` wins (the Helium asm enables MVE itself with `.arch armv8.1-m.main`).
CARGO_TARGET_THUMBV8M_MAIN_NONE_EABIHF_RUSTFLAGS="-C target-feature=-mve" \
  build thumbv8m.main-none-eabihf target/no-autovec --features helium
build thumbv7em-none-eabihf target

run "Cortex-M55, +mve (scalar kernel auto-vectorized by LLVM)" mps3-an547 target/thumbv8m.main-none-eabihf/release/bench
run "Cortex-M55, no +mve (scalar kernel scalar)" mps3-an547 target/no-autovec/thumbv8m.main-none-eabihf/release/bench
run "Cortex-M4" mps2-an386 target/thumbv7em-none-eabihf/release/bench
run "Cortex-M7" mps2-an500 target/thumbv7em-none-eabihf/release/bench
