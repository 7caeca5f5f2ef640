#!/usr/bin/env bash
# Cargo runner of the Cortex-M examples (`runner = "../qemu-run.sh MACHINE"` in their
# .cargo/config.toml): qemu-run.sh MACHINE ELF. Runs ELF on QEMU's MACHINE (mps2-an386: Cortex-M4,
# mps2-an500: Cortex-M7, mps3-an547: Cortex-M55) with semihosting and `-icount shift=0` (one
# instruction per virtual nanosecond, so SysTick counts instructions), decodes the defmt log
# with defmt-print and exits with the program's semihosting exit status. QEMU_TIMEOUT
# (seconds, default 120) bounds the run. A script because a cargo runner cannot pipe, and
# not `cargo xtask`: a board folder is its own workspace (and is meant to be copied out).
set -uo pipefail
machine=$1
elf=$2
qemu=(timeout "${QEMU_TIMEOUT:-120}" qemu-system-arm -machine "$machine" -icount shift=0 -nographic
  -semihosting-config enable=on,target=native -kernel "$elf")
if command -v defmt-print >/dev/null 2>&1; then
  # QEMU writes semihosting output to stderr.
  "${qemu[@]}" 2>&1 | defmt-print -e "$elf"
  exit "${PIPESTATUS[0]}"
fi
echo "qemu-run.sh: defmt-print not found (cargo install defmt-print --locked); the log stays encoded" >&2
"${qemu[@]}" >/dev/null 2>&1
status=$?
echo "qemu-run.sh: exit status $status" >&2
exit "$status"
