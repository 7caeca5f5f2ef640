#!/usr/bin/env bash
# Bare-metal AArch64 (firmware/cortex-a-virt) under qemu-system-aarch64 `virt`, as a
# Cortex-A53 (base NEON), a Cortex-A76 (dotprod) and `max` (i8mm): kernel sweeps against
# scalar and the tiny int8 model's output bytes against the host's, with the blob, input and
# expected output placed in RAM by QEMU's loader device. `--bench` also prints instructions
# per MAC of every int8 GEMM variant at BLIP-2's shapes (-icount shift=0, PMU cycle counter).
set -euo pipefail
cd "$(dirname "$0")/../firmware/cortex-a-virt"
features=()
[[ "${1:-}" == "--bench" ]] && features=(--features bench)
if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-none; then
  cargo build --quiet --release --locked "${features[@]}"
else
  RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo build --quiet --release --locked -Zbuild-std=core,alloc "${features[@]}" 2>&1 \
    | grep -v -e "unknown and unstable feature specified" -e "still passed through" -e "consider filing" -e "^warning: 1 warning" -e "^\s*=" -e "^$" || true
fi
elf=target/aarch64-unknown-none/release/cortex-a-virt
fix=../../tests/fixtures/tiny_int8
failures=0
for cpu in cortex-a53 cortex-a76 max; do
  echo "==> qemu-system-aarch64 -machine virt -cpu $cpu"
  status=0
  timeout 300 qemu-system-aarch64 -machine virt -cpu "$cpu" -m 1G -nographic -semihosting -icount shift=0 \
    -device loader,file=$fix/model.qfb,addr=0x48000000,force-raw=on \
    -device loader,file=$fix/input.f32,addr=0x46000000,force-raw=on \
    -device loader,file=$fix/output.f32,addr=0x47000000,force-raw=on \
    -kernel "$elf" 2>&1 || status=$?
  if ((status != 0)); then
    echo "FAILED: $cpu (exit status $status)"
    failures=$((failures + 1))
  fi
done
# Image size (the blob and the arena are not in the image: loader memory and heap).
aarch64-linux-gnu-size "$elf" | awk 'NR == 2 { printf "image: text+rodata %d bytes, data %d, bss %d\n", $1, $2, $3 }'
((failures == 0)) && echo "cortex-a: all CPUs passed"
exit $((failures > 0))
