#!/usr/bin/env bash
# The Cortex-M firmware examples (firmware/cortex-m55, firmware/cortex-m4) under QEMU: builds
# each image once (release), runs it with a timeout, fails on any failure, and prints a size
# table. Each image runs the int8 model of firmware/models/mcu from flash and compares its
# output with the host's bit for bit; the exit status comes from semihosting.
#
#   Cortex-M55 + Helium: firmware/cortex-m55, thumbv8m.main-none-eabihf -> qemu mps3-an547
#   Cortex-M4 + DSP:     firmware/cortex-m4,  thumbv7em-none-eabihf      -> qemu mps2-an386
#   Cortex-M7 + DSP:     the same cortex-m4 ELF                          -> qemu mps2-an500
#
# Table columns: flash = .vector_table + .text + .rodata + .qfb (the blob) + .data's load
# image; RAM statics = .data + .bss + .uninit (the arena and output buffer included); peak stack
# = deepest stack use, measured by the firmware (cortex-m-rt paints the stack at reset and the
# firmware scans for the high-water mark after the forward); forward = instructions counted by
# SysTick under `-icount shift=0` (instructions, not cycles).
#
# The log is defmt; it is decoded with defmt-print when installed (`cargo install defmt-print
# --locked`); without it the runs still pass or fail, and the stack and instruction columns
# read n/a. Uses an installed rustup target when there is one, else Debian's cargo
# (rust-web-src) with `-Zbuild-std=core` (docs/CROSS.md). Needs gcc-arm-none-eabi (linker and
# size) and qemu-system-arm.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

RUN_TIMEOUT=${RUN_TIMEOUT:-120}
log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT

for tool in qemu-system-arm arm-none-eabi-ld arm-none-eabi-size arm-none-eabi-readelf arm-none-eabi-nm; do
  command -v "$tool" >/dev/null || { echo "firmware.sh: $tool not found (apt-get install qemu-system-arm gcc-arm-none-eabi)" >&2; exit 1; }
done
have_defmt_print=0
if command -v defmt-print >/dev/null 2>&1; then
  have_defmt_print=1
else
  echo "firmware.sh: defmt-print not found: logs stay encoded, stack and instruction columns n/a (cargo install defmt-print --locked)"
fi

# cargo_for TARGET: the cargo command line prefix for TARGET.
cargo_for() {
  if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$1"; then
    echo "cargo"
  else
    echo "env RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo -Zbuild-std=core"
  fi
}

# One target directory for both crates: their host-side build scripts and proc macros are
# built once.
target_dir="$root/firmware/target"
build() { # CRATE TARGET
  echo "==> build firmware/$1 ($2, release)"
  (cd "$root/firmware/$1" &&
    $(cargo_for "$2") build --quiet --release --locked --target "$2" --target-dir "$target_dir" --bin forward)
}

# section ELF NAME: size in bytes of section NAME (0 when absent).
section() {
  arm-none-eabi-size -A "$1" | awk -v s="$2" '$1 == s { print $2; found = 1 } END { if (!found) print 0 }'
}

failures=0
rows=()
run() { # LABEL MACHINE ELF
  local label=$1 machine=$2 elf=$3 raw="$log_dir/$2.raw" status=0
  echo "==> $label: qemu-system-arm -machine $machine -icount shift=0"
  # QEMU writes semihosting output (the defmt stream) to stderr.
  timeout "$RUN_TIMEOUT" qemu-system-arm -machine "$machine" -icount shift=0 -nographic \
    -semihosting-config enable=on,target=native -kernel "$elf" >"$raw" 2>&1 || status=$?
  local summary=""
  if ((have_defmt_print)); then
    defmt-print -e "$elf" <"$raw" | tee "$log_dir/$machine.log" || true
    summary=$(grep -o 'summary: .*' "$log_dir/$machine.log" | tail -1 || true)
  fi
  if ((status != 0)); then
    echo "FAILED: $label on $machine (exit status $status$( ((status == 124)) && echo ", timed out"))"
    failures=$((failures + 1))
  fi

  # Sizes from the ELF. The blob must sit in a read-only section (flash), not in RAM.
  local vt text rodata qfb data bss uninit
  vt=$(section "$elf" .vector_table) text=$(section "$elf" .text) rodata=$(section "$elf" .rodata)
  qfb=$(section "$elf" .qfb) data=$(section "$elf" .data) bss=$(section "$elf" .bss) uninit=$(section "$elf" .uninit)
  if ! arm-none-eabi-readelf -SW "$elf" | awk '{ sub(/^.*\] */, "") } $1 == ".qfb" && $7 == "A" { ok = 1 } END { exit !ok }' || ((data >= qfb)); then
    echo "FAILED: $label: the blob is not in a read-only (flash) section of $elf"
    failures=$((failures + 1))
  fi
  local code=$((vt + text + rodata + data)) statics=$((data + bss + uninit))
  local arena field stack=n/a instr=n/a crc=n/a
  arena=$(arm-none-eabi-nm -S -C "$elf" | awk '$4 == "forward::ARENA" { print $2 }')
  arena=$((16#${arena:-0}))
  for field in $summary; do
    case $field in
      stack=*) stack=${field#stack=} ;;
      forward_instructions=*) instr=${field#forward_instructions=} ;;
      crc32=*) crc=${field#crc32=} ;;
    esac
  done
  local ram_total=n/a
  [[ $stack == n/a ]] || ram_total=$(kib $((statics + stack)))
  [[ $stack == n/a ]] || stack=$(kib "$stack")
  [[ $instr == n/a ]] || instr=$(sed ':a; s/\B[0-9]\{3\}\>/,&/; ta' <<<"$instr")
  rows+=("| $label | \`$machine\` | $(kib $code) | $(kib $qfb) | $(kib $((code + qfb))) | $(kib $statics) ($(kib "$arena")) | $stack | $ram_total | $instr | $crc |")
}

kib() { awk -v b="$1" 'BEGIN { printf "%.1f KiB", b / 1024 }'; }

start=$SECONDS
build cortex-m55 thumbv8m.main-none-eabihf
build cortex-m4 thumbv7em-none-eabihf
echo "(builds: $((SECONDS - start)) s)"
m55="$target_dir/thumbv8m.main-none-eabihf/release/forward"
m4="$target_dir/thumbv7em-none-eabihf/release/forward"
run "Cortex-M55 + Helium" mps3-an547 "$m55"
run "Cortex-M4 + DSP" mps2-an386 "$m4"
run "Cortex-M7 + DSP (M4 ELF)" mps2-an500 "$m4"

echo
echo "| image | QEMU machine | flash: code + constants | flash: blob | flash total | RAM: statics (arena) | peak stack | RAM total | forward (instructions) | output CRC-32 |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
if ((failures)); then
  echo "firmware: $failures failure(s)"
  exit 1
fi
echo "firmware: all images passed ($((SECONDS - start)) s)"
