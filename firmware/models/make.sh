#!/usr/bin/env bash
# Regenerates the firmware examples' model from the project's own tools:
#
#   firmware/models/mcu/model.qfb     int8 blob of `qformer synth --preset mcu` (groups of 32)
#   firmware/models/mcu/input.f32     image features [M, d_v] = [50, 192], raw little-endian f32
#   firmware/models/mcu/expected.f32  `qformer run` on the host: qformer_output [16, 128] then
#                                     projected [16, 128], raw little-endian f32
#
# The firmware compares its output with expected.f32 bit for bit. Deterministic: rerunning it
# rewrites the same bytes. `make.sh --check` writes nothing and fails if the committed files
# differ from what the current tools produce (rerun make.sh after an intended change). Needs
# cargo (host) and coreutils; a few seconds once the tools are built.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
committed="$root/firmware/models/mcu"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
out="$committed"
if [[ "${1:-}" == "--check" ]]; then
  out="$tmp/mcu"
  mkdir -p "$out"
fi

cd "$root"
cargo build --quiet --release --locked -p qformer-std --bin qformer -p quantize
bin="$root/target/release"

# Two image channels 30x larger than the rest (real vision features have such outliers): the
# int8 path keeps them in f32, so the firmware runs that code too.
"$bin/qformer" synth "$tmp/ckpt" --preset mcu --outliers 17,150 --seed 11
"$bin/quantize" "$tmp/ckpt" -o "$out/model.qfb" --dtype int8 --quiet
"$bin/qformer" run "$out/model.qfb" --input "$tmp/ckpt/input.safetensors" --output "$tmp/out.safetensors" --threads 1

# raw TENSOR FILE: the bytes of one F32 tensor of a safetensors file (8-byte little-endian
# header length, JSON header with data_offsets relative to the data section, data).
raw() {
  local n json range
  n=$(od -An -t u8 -N 8 "$2" | tr -d ' ')
  json=$(head -c $((8 + n)) "$2" | tail -c "$n")
  range=$(grep -o "\"$1\":{[^}]*}" <<<"$json" | grep -o '"data_offsets":\[[0-9]*,[0-9]*\]' | grep -o '[0-9][0-9]*,[0-9]*')
  [[ -n "$range" ]] || { echo "make.sh: no tensor $1 in $2" >&2; exit 1; }
  grep -q "\"$1\":{\"dtype\":\"F32\"" <<<"$json" || { echo "make.sh: $1 in $2 is not F32" >&2; exit 1; }
  tail -c +$((8 + n + ${range%,*} + 1)) "$2" | head -c $((${range#*,} - ${range%,*}))
}
raw image_embeds "$tmp/ckpt/input.safetensors" >"$out/input.f32"
{ raw qformer_output "$tmp/out.safetensors"; raw projected "$tmp/out.safetensors"; } >"$out/expected.f32"

crc() { gzip -c "$1" | tail -c 8 | head -c 4 | od -An -t x4 | tr -d ' '; } # the gzip trailer's CRC-32
for f in model.qfb input.f32 expected.f32; do
  printf '%-14s %8d bytes  crc32 0x%s\n' "$f" "$(stat -c %s "$out/$f")" "$(crc "$out/$f")"
done
blob=$(stat -c %s "$out/model.qfb")
if ((blob > 1024 * 1024)); then
  echo "make.sh: model.qfb is $blob bytes, over the 1 MiB flash budget" >&2
  exit 1
fi
if [[ "$out" != "$committed" ]]; then
  for f in model.qfb input.f32 expected.f32; do
    cmp -s "$out/$f" "$committed/$f" || { echo "make.sh --check: firmware/models/mcu/$f differs from what the tools produce now; rerun firmware/models/make.sh" >&2; exit 1; }
  done
  echo "make.sh --check: firmware/models/mcu is what the tools produce"
fi
