//! `cargo xtask`: the project's checks, cross builds, emulated runs and benchmarks, each
//! step runnable alone; `cargo xtask ci` runs them all in order (the README's test command,
//! what `.ci/run` runs). `cargo xtask --help` lists the steps.

mod arm;
mod c_api;
mod checks;
mod firmware;
mod fuzz;
mod models;
mod python;
mod util;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "qformer's build, check, emulation and benchmark steps"
)]
struct Cli {
    #[command(subcommand)]
    step: Step,
}

#[derive(Subcommand)]
enum Step {
    /// Every step from apt to stable-view below, in order, stopping at the first failure (the test command)
    Ci,
    /// Install the Debian packages the cross builds and QEMU runs need, when missing (root)
    Apt,
    /// rustfmt --check over the workspace and the firmware crates
    Fmt,
    /// clippy -D warnings over the workspace, then each firmware crate for its target
    Clippy,
    /// rustdoc of the workspace, warnings as errors
    Doc,
    /// qformer-core is no_std without alloc: cargo check for the bare-metal targets
    NoStd,
    /// The host tests: cargo test --workspace --release, then qformer-core's in debug (debug_asserts)
    Test,
    /// qformer-core's tests on aarch64 Linux under qemu-aarch64: Cortex-A72, A76, max
    Aarch64,
    /// The Raspberry Pi build's demo under qemu-aarch64 as Pi 4 (A72) and Pi 5 (A76)
    Pi,
    /// Cortex-M kernel tests under qemu-system-arm: M55 (Helium), M4 and M7 (DSP)
    #[command(alias = "qemu")]
    ArmTests,
    /// Bare-metal AArch64 (firmware/cortex-a-virt) on QEMU virt: Cortex-A53, A76, max
    CortexA {
        /// Also print instructions per MAC of every int8 GEMM variant at BLIP-2's shapes
        #[arg(long)]
        bench: bool,
    },
    /// Check (--check) or regenerate firmware/models/{mcu,mcu-instruct} from the project's own tools
    Models {
        /// Write nothing; fail if the committed files differ from what the tools produce
        #[arg(long)]
        check: bool,
    },
    /// The Cortex-M firmware examples under QEMU (M55, M4, M7), with their size table
    Firmware,
    /// The C API (qformer-ffi): header check, Linux example and C tests (host, qemu-aarch64), C firmware under QEMU
    CApi {
        /// Only regenerate qformer-ffi/include/qformer.h (from qformer-ffi/src, with cbindgen)
        #[arg(long)]
        write_header: bool,
    },
    /// The Python package: pip install ./python (maturin) into a throwaway venv under target/, then pytest
    Python,
    /// The Python package on aarch64 Linux under qemu-aarch64 (Debian's arm64 CPython, the wheel cross-built), as Cortex-A72 and A76; not in ci
    PythonAarch64,
    /// Every cargo-fuzz target (or TARGETS) for SECONDS each (default 60; ci: $QFORMER_FUZZ_SECONDS, default 30)
    Fuzz {
        /// Seconds per target
        #[arg(default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
        /// Targets (default: all of `cargo fuzz list`)
        targets: Vec<String>,
    },
    /// The firmware images as a stable rustup toolchain builds them (no RUSTC_BOOTSTRAP), under QEMU
    StableView,
    /// Regenerate firmware/models/{mcu,mcu-instruct} (what `models` without --check does)
    Bless,
    /// Instruction counts of the Cortex-M kernels (int8 GEMM, float GEMM, quantizer) under QEMU
    Bench,
    /// qformer-core and the integration tests under AddressSanitizer (nightly, -Zbuild-std)
    Asan {
        /// Extra arguments for cargo test (e.g. -- --skip accuracy)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// A step of `ci`: its subcommand, what it shows, how to run it.
type CiStep = (&'static str, &'static str, fn() -> Result<()>);

/// `ci`'s steps, in order.
const CI: &[CiStep] = &[
    ("apt", "Debian packages for the cross builds", util::apt),
    ("fmt", "rustfmt", checks::fmt),
    ("clippy", "clippy, workspace and firmware crates", checks::clippy),
    ("doc", "rustdoc", checks::doc),
    ("no-std", "qformer-core is no_std without alloc: cargo check for the bare-metal targets", checks::no_std),
    ("test", "tests (host)", checks::test),
    (
        "aarch64",
        "qformer-core on aarch64 under qemu-aarch64: Cortex-A72 (Pi 4, base NEON), Cortex-A76 (Pi 5, dotprod), max (i8mm)",
        checks::aarch64,
    ),
    (
        "pi",
        "qformer for the Raspberry Pi (aarch64-unknown-linux-gnu): demo under qemu-aarch64 as Pi 4 (Cortex-A72) and Pi 5 (Cortex-A76)",
        checks::pi,
    ),
    ("arm-tests", "Cortex-M kernels and the int8 model under qemu-system-arm: M55 (Helium), M4 and M7 (DSP)", arm::arm_tests),
    ("cortex-a", "Bare-metal Cortex-A (AArch64 virt): Cortex-A53, Cortex-A76, max", || arm::cortex_a(false)),
    ("models --check", "The firmware models (mcu, mcu-instruct) up to date", || models::models(true)),
    (
        "firmware",
        "Firmware examples under QEMU (the image alone; InstructBLIP with an instruction tokenized on the device): Cortex-M55 (Helium), Cortex-M4 and M7 (DSP)",
        firmware::firmware,
    ),
    ("c-api", "The C API: header, Linux example and C tests (host, qemu-aarch64), C firmware on Cortex-M4 and M55", || {
        c_api::c_api(false)
    }),
    ("python", "The Python package: built by pip and maturin into a throwaway venv, pytest python/tests", python::python),
    ("fuzz", "Fuzzing: blob parsing, mutated blobs, checkpoint and input loading (corpus in fuzz/corpus)", ci_fuzz),
    (
        "stable-view",
        "The firmware images as a stable toolchain builds them (no RUSTC_BOOTSTRAP, core from a sysroot)",
        firmware::stable_view,
    ),
];

fn ci_fuzz() -> Result<()> {
    let seconds = match std::env::var("QFORMER_FUZZ_SECONDS") {
        Ok(s) => s.parse().map_err(|_| anyhow::anyhow!("QFORMER_FUZZ_SECONDS={s} is not a number of seconds"))?,
        // 30 s per target keeps the whole test command under half an hour on 2 cores; longer
        // runs: `cargo xtask fuzz 300`.
        Err(_) => 30,
    };
    fuzz::fuzz(seconds, &[])
}

fn ci() -> ExitCode {
    let start = Instant::now();
    for (i, (name, what, step)) in CI.iter().enumerate() {
        println!("\n==> [{}/{}] {name}: {what}", i + 1, CI.len());
        let t = Instant::now();
        if let Err(e) = step() {
            println!("\nci: step `{name}` failed: {e:#}");
            println!("ci: {} passed, 1 failed, {} skipped", i, CI.len() - i - 1);
            return ExitCode::FAILURE;
        }
        println!("--> {name}: ok ({} s)", t.elapsed().as_secs());
    }
    println!("\nci: every step passed in {} s", start.elapsed().as_secs());
    println!("ci: {} passed, 0 failed", CI.len());
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.step {
        Step::Ci => return ci(),
        Step::Apt => util::apt(),
        Step::Fmt => checks::fmt(),
        Step::Clippy => checks::clippy(),
        Step::Doc => checks::doc(),
        Step::NoStd => checks::no_std(),
        Step::Test => checks::test(),
        Step::Aarch64 => checks::aarch64(),
        Step::Pi => checks::pi(),
        Step::ArmTests => arm::arm_tests(),
        Step::CortexA { bench } => arm::cortex_a(bench),
        Step::Models { check } => models::models(check),
        Step::Bless => models::models(false),
        Step::Firmware => firmware::firmware(),
        Step::CApi { write_header } => c_api::c_api(write_header),
        Step::Python => python::python(),
        Step::PythonAarch64 => python::python_aarch64(),
        Step::StableView => firmware::stable_view(),
        Step::Fuzz { seconds, targets } => fuzz::fuzz(seconds, &targets),
        Step::Bench => arm::bench(),
        Step::Asan { args } => fuzz::asan(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
