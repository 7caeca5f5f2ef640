#!/usr/bin/env bash
# The kernels a *stable* toolchain compiles into qformer-core for the Cortex-M targets, and a
# check that they are the ones expected for each core. Exits non-zero if any differs.
#
# Why: RUSTC_BOOTSTRAP=1 (which the -Zbuild-std cross builds of this machine need) also makes
# rustc report unstable target features such as `dsp` to cfg; a stable rustup toolchain does
# not. A choice based on them would give a stable user of thumbv7em-none-eabihf the scalar
# kernels without a sign. qformer-core chooses from the target and its cargo features
# (qformer-core/build.rs); this script proves it. It follows the "Seeing what a stable rustup
# user builds" recipe of docs/CROSS.md (../shared/notes/cross-targets.md):
#   1. build `core` for the target once with RUSTC_BOOTSTRAP=1 -Zbuild-std=core (this also
#      gives the bootstrap view of the probe),
#   2. put its rlibs into a sysroot folder (the host's libraries linked in for build scripts),
#   3. build the probe crate (tools/stable-view/) with the same rustc WITHOUT RUSTC_BOOTSTRAP
#      and --sysroot pointing there: cfg then sees what `rustc --print cfg` shows on stable.
# The probe writes `Kernels::COMPILED`'s names into its object file
# (`qformer-kernels q8=... f=... quant=...;`), read back with `strings`.
#
# Checked (stable view, and the bootstrap view must agree):
#   thumbv7em-none-eabihf                      DSP int8 GEMM, FPU float GEMM and quantizer
#   thumbv8m.main-none-eabihf --features helium  Helium kernels
#   thumbv8m.main-none-eabihf                  scalar (DSP is optional on Armv8-M Mainline)
#   thumbv8m.main-none-eabihf --features dsp     DSP kernels
#
# Needs Debian's rustc/cargo with library sources (rustc-web, cargo-web, rust-web-src) at
# /usr/bin and binutils' `strings`. Outputs go to target/stable-view/. Usage: tools/stable-view.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/target/stable-view
probe=$root/tools/stable-view
sysroot=$out/sysroot
host_lib=$(/usr/bin/rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu

DSP="q8=dsp_gemm_q8_smlad_4x1 f=dsp_gemm_f32_f16_4x2_vfma quant=dsp_quant_i8_vcvt_shadd16"
HELIUM="q8=helium_gemm_q8_vmladav_2x4 f=helium_gemm_f32_f16_2x2_vfma quant=helium_quant_i8_vcvta"
SCALAR="q8=scalar_gemm_q8 f=scalar_gemm_f32_f16 quant=scalar_quant_i8"

# record TARGET_DIR TARGET: the kernel record of the last probe build there.
record() {
  local rlib
  rlib=$(ls -t "$1/$2/release/deps/"libqformer_stable_view-*.rlib | head -1)
  strings -a "$rlib" | grep -o -m1 'qformer-kernels q8=[a-z].*;' | sed 's/^qformer-kernels //; s/;$//'
}

# build_boot TARGET [cargo args]: the bootstrap build (also the source of `core` for the sysroot).
build_boot() {
  local target=$1
  shift
  (cd "$probe" && RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo build --quiet --release --locked \
    --target "$target" -Zbuild-std=core --target-dir "$out/boot" "$@")
}

# make_sysroot TARGET: `core` and `compiler_builtins` of the bootstrap build, as a sysroot.
make_sysroot() {
  local lib=$sysroot/lib/rustlib/$1/lib deps=$out/boot/$1/release/deps
  rm -rf "$lib"
  mkdir -p "$lib"
  for crate in core compiler_builtins; do
    cp "$(ls -t "$deps/lib$crate"-*.rlib | head -1)" "$lib/"
  done
  ln -sfn "$host_lib" "$sysroot/lib/rustlib/x86_64-unknown-linux-gnu"
}

# build_stable TARGET [cargo args]: the same probe as a stable toolchain builds it.
build_stable() {
  local target=$1
  shift
  (cd "$probe" && env -u RUSTC_BOOTSTRAP RUSTFLAGS="--sysroot $sysroot" RUSTC=/usr/bin/rustc \
    /usr/bin/cargo build --quiet --release --locked --target "$target" --target-dir "$out/stable" "$@")
}

failures=0
# check TARGET EXPECTED [cargo args]
check() {
  local target=$1 want=$2
  shift 2
  echo "==> $target $*"
  build_boot "$target" "$@"
  local boot
  boot=$(record "$out/boot" "$target")
  make_sysroot "$target"
  build_stable "$target" "$@"
  local stable
  stable=$(record "$out/stable" "$target")
  echo "  stable:    $stable"
  echo "  bootstrap: $boot"
  if [[ "$stable" != "$want" ]]; then
    echo "FAIL: a stable toolchain compiles other kernels than expected ($want)"
    failures=$((failures + 1))
  elif [[ "$boot" != "$stable" ]]; then
    echo "FAIL: RUSTC_BOOTSTRAP=1 compiles other kernels than a stable toolchain"
    failures=$((failures + 1))
  fi
}

check thumbv7em-none-eabihf "$DSP"
check thumbv8m.main-none-eabihf "$HELIUM" --features helium
check thumbv8m.main-none-eabihf "$SCALAR"
check thumbv8m.main-none-eabihf "$DSP" --features dsp

if ((failures)); then
  echo "stable-view: $failures check(s) failed"
  exit 1
fi
echo "stable-view: every toolchain compiles the expected kernels"
