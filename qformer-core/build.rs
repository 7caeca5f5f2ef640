//! Derives the named `cfg`s that choose qformer-core's kernels at compile time.
//!
//! Every kernel module and variant-table entry is gated on one of these names instead of a
//! `cfg(all(target_arch = ..., target_feature = ...))` chain. They come only from what a
//! stable toolchain gives a build script: the target triple (`TARGET`), its architecture and
//! ABI (`CARGO_CFG_TARGET_ARCH`, `CARGO_CFG_TARGET_ABI`), the target features stable rustc
//! reports (`CARGO_CFG_TARGET_FEATURE`: neon, dotprod, i8mm on aarch64; avx2, fma, f16c on
//! x86_64) and this crate's documented cargo features. Unstable target features (`dsp`,
//! `fpregs`, `mve` on 32-bit Arm) are reported only with `RUSTC_BOOTSTRAP` or nightly, so a
//! choice based on them differs between toolchains; they are never read here except to warn.
//!
//! | cfg | set when |
//! |---|---|
//! | `qf_x86` | `target_arch = "x86_64"` (the x86 kernels exist; which run is decided at run time unless enabled at compile time) |
//! | `qf_avx2` | `qf_x86` and target feature `avx2` |
//! | `qf_avx2_fma_f16c` | `qf_avx2` and target features `fma` and `f16c` |
//! | `qf_neon` | `target_arch = "aarch64"` and target feature `neon` |
//! | `qf_sdot` | `qf_neon` and target feature `dotprod` |
//! | `qf_i8mm` | `qf_neon` and target feature `i8mm` |
//! | `qf_dsp` | a `thumbv7em-*` target (Armv7E-M always has the DSP extension), or a `thumbv8m.main-*` target with the cargo feature `dsp` (DSP is optional on Armv8-M Mainline) |
//! | `qf_fpu` | a 32-bit Arm target with the hard-float ABI (`eabihf`): the FPU and its registers are present |
//! | `qf_v8m_dsp` | `qf_dsp` on a `thumbv8m.main-*` target, where LLVM's target lacks the DSP instructions: the DSP `asm!` blocks switch the assembler to Armv7E-M and back |
//! | `qf_helium` | a `thumbv8m.main-*` target with the cargo feature `helium` (MVE with floating point, Cortex-M55/M85) |

use std::env;

/// Every cfg this script may set (declared to rustc's `unexpected_cfgs` check).
const CFGS: [&str; 10] = [
    "qf_x86",
    "qf_avx2",
    "qf_avx2_fma_f16c",
    "qf_neon",
    "qf_sdot",
    "qf_i8mm",
    "qf_dsp",
    "qf_v8m_dsp",
    "qf_fpu",
    "qf_helium",
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for cfg in CFGS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    let var = |name: &str| env::var(name).unwrap_or_default();
    let target = var("TARGET");
    let arch = var("CARGO_CFG_TARGET_ARCH");
    let features = var("CARGO_CFG_TARGET_FEATURE");
    let has = |f: &str| features.split(',').any(|x| x == f);
    let cargo_feature = |f: &str| env::var_os(format!("CARGO_FEATURE_{}", f.to_uppercase())).is_some();
    let set = |cfg: &str, on: bool| {
        if on {
            println!("cargo::rustc-cfg={cfg}");
        }
        on
    };

    let x86 = set("qf_x86", arch == "x86_64");
    let avx2 = set("qf_avx2", x86 && has("avx2"));
    set("qf_avx2_fma_f16c", avx2 && has("fma") && has("f16c"));

    let neon = set("qf_neon", arch == "aarch64" && has("neon"));
    set("qf_sdot", neon && has("dotprod"));
    set("qf_i8mm", neon && has("i8mm"));

    if arch != "arm" {
        // `dsp` and `helium` describe 32-bit Arm cores; elsewhere (e.g. `--all-features` on
        // the host) they have no effect.
        return;
    }
    let v7em = target.starts_with("thumbv7em-");
    let v8m_main = target.starts_with("thumbv8m.main-") || target.starts_with("thumbv8.1m.main-");
    let (want_dsp, want_helium) = (cargo_feature("dsp"), cargo_feature("helium"));
    if want_dsp && !(v7em || v8m_main) {
        fail(&target, "the `dsp` feature needs an Armv7E-M (thumbv7em-*) or Armv8-M Mainline (thumbv8m.main-*) target");
    }
    if want_helium && !v8m_main {
        fail(&target, "the `helium` feature needs an Armv8-M Mainline target (thumbv8m.main-*, e.g. Cortex-M55)");
    }
    let dsp = set("qf_dsp", v7em || (v8m_main && want_dsp));
    set("qf_v8m_dsp", dsp && v8m_main);
    let abi = var("CARGO_CFG_TARGET_ABI");
    let hard_float = abi == "eabihf" || target.ends_with("eabihf");
    set("qf_fpu", hard_float);
    set("qf_helium", want_helium);

    // A toolchain that reports the unstable features (nightly, RUSTC_BOOTSTRAP) may know more
    // than the target name says: say how to get the same kernels on every toolchain.
    if has("dsp") && !dsp {
        println!(
            "cargo::warning=qformer-core: rustc reports target feature `dsp` for {target}, but its DSP kernels \
             follow the target and cargo features only (the same on every toolchain): enable qformer-core's \
             `dsp` feature to compile them"
        );
    }
    if has("fpregs") && !hard_float {
        println!(
            "cargo::warning=qformer-core: rustc reports an FPU for the soft-float target {target}; the FPU kernels \
             are compiled for hard-float (`eabihf`) targets only"
        );
    }
}

/// Stops the build with `why`.
fn fail(target: &str, why: &str) -> ! {
    eprintln!("qformer-core: {why}; this build is for {target}");
    std::process::exit(1)
}
