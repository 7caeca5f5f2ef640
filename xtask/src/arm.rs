//! Bare-metal runs under QEMU: the Cortex-M kernel tests and benchmark
//! (firmware/kernel-tests) and bare-metal AArch64 (firmware/cortex-a-virt).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::checks::firmware_cargo;
use crate::util::{at, cmd, run, run_timeout, stdout_of, Echo, Filter};

/// `qemu-system-arm` on `machine` with semihosting (and `-icount shift=0` when `icount`:
/// one instruction per virtual nanosecond, so SysTick counts instructions), running `elf`.
pub fn qemu_arm(machine: &str, icount: bool, elf: &Path) -> Command {
    let mut c = Command::new("qemu-system-arm");
    c.args(["-machine", machine]);
    if icount {
        c.args(["-icount", "shift=0"]);
    }
    c.args(["-nographic", "-semihosting-config", "enable=on,target=native", "-kernel"]).arg(elf);
    c
}

/// Seconds a run may take: `RUN_TIMEOUT`, else `default`.
pub fn run_timeout_secs(default: u64) -> Duration {
    Duration::from_secs(std::env::var("RUN_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(default))
}

const KERNEL_TESTS: &str = "firmware/kernel-tests";

/// Builds bin `bin` of firmware/kernel-tests for `target` into `target_dir` (relative to the
/// crate), with `extra` cargo arguments and `rustflags` appended to the config's.
fn build_kernel_tests(
    bin: &str,
    target: &str,
    target_dir: &str,
    extra: &[&str],
    rustflags: Option<&str>,
) -> Result<()> {
    println!("==> build {bin} for {target} {}", extra.join(" "));
    let mut c = firmware_cargo("build", KERNEL_TESTS, target);
    c.args(["--quiet", "--release", "--locked", "--target", target, "--target-dir", target_dir, "--bin", bin])
        .args(extra);
    if let Some(flags) = rustflags {
        c.env(format!("CARGO_TARGET_{}_RUSTFLAGS", target.to_uppercase().replace(['-', '.'], "_")), flags);
    }
    run(&mut c)
}

/// Every compiled int8 GEMM variant, quantizer and float GEMM against scalar and the tiny int8
/// model's output bytes against the host's, on the M55 (mps3-an547), M4 (mps2-an386) and M7
/// (mps2-an500, the M4 ELF). Builds each image once; fails if any machine fails.
pub fn arm_tests() -> Result<()> {
    build_kernel_tests("tests", "thumbv8m.main-none-eabihf", "target", &["--features", "helium"], None)?;
    build_kernel_tests("tests", "thumbv7em-none-eabihf", "target", &[], None)?;
    let elf = |t: &str| at(&format!("{KERNEL_TESTS}/target/{t}/release/tests"));
    let runs = [
        ("mps3-an547", elf("thumbv8m.main-none-eabihf")),
        ("mps2-an386", elf("thumbv7em-none-eabihf")),
        ("mps2-an500", elf("thumbv7em-none-eabihf")),
    ]
    .map(|(machine, elf)| (format!("qemu-system-arm -machine {machine}"), qemu_arm(machine, false, &elf)));
    run_all("arm-tests", runs, run_timeout_secs(120))?;
    println!("arm-tests: all machines passed");
    Ok(())
}

/// Runs each `(label, command)` with `timeout`, echoing its output, and fails naming those
/// that did not exit with status 0.
pub fn run_all(step: &str, runs: impl IntoIterator<Item = (String, Command)>, timeout: Duration) -> Result<()> {
    let mut failed = Vec::new();
    for (label, c) in runs {
        println!("==> {label}");
        let (outcome, _) = run_timeout(c, timeout, Echo::All)?;
        if !outcome.ok() {
            println!("FAILED: {label} ({outcome})");
            failed.push(label);
        }
    }
    if !failed.is_empty() {
        bail!("{step}: {} run(s) failed: {}", failed.len(), failed.join("; "));
    }
    Ok(())
}

/// Instruction counts at BLIP-2 shapes, scalar vs SIMD (bin `bench`): the M55 with `+mve`
/// (LLVM auto-vectorizes the scalar kernel's i8 dot) and without (the scalar kernel really
/// scalar; the Helium asm needs no global flag), the M4 and the M7.
pub fn bench() -> Result<()> {
    build_kernel_tests("bench", "thumbv8m.main-none-eabihf", "target", &["--features", "helium"], None)?;
    // Cargo appends these flags to the config's, and the later `-mve` wins.
    build_kernel_tests(
        "bench",
        "thumbv8m.main-none-eabihf",
        "target/no-autovec",
        &["--features", "helium"],
        Some("-C target-feature=-mve"),
    )?;
    build_kernel_tests("bench", "thumbv7em-none-eabihf", "target", &[], None)?;
    let elf = |dir: &str, t: &str| at(&format!("{KERNEL_TESTS}/{dir}/{t}/release/bench"));
    let runs = [
        (
            "Cortex-M55, +mve (scalar kernel auto-vectorized by LLVM)",
            "mps3-an547",
            elf("target", "thumbv8m.main-none-eabihf"),
        ),
        (
            "Cortex-M55, no +mve (scalar kernel scalar)",
            "mps3-an547",
            elf("target/no-autovec", "thumbv8m.main-none-eabihf"),
        ),
        ("Cortex-M4", "mps2-an386", elf("target", "thumbv7em-none-eabihf")),
        ("Cortex-M7", "mps2-an500", elf("target", "thumbv7em-none-eabihf")),
    ];
    let runs = runs.map(|(label, machine, elf)| {
        (format!("{label} (qemu-system-arm -machine {machine} -icount shift=0)"), qemu_arm(machine, true, &elf))
    });
    run_all("bench", runs, run_timeout_secs(900))
}

const CORTEX_A: &str = "firmware/cortex-a-virt";

/// rustc's notes about `+mve`-style unknown features that a `-Zbuild-std` build of `core`
/// prints; left out of the output.
const BUILD_STD_NOISE: Filter = Filter {
    contains: &[
        "unknown and unstable feature specified",
        "still passed through",
        "consider filing",
        "warning: 1 warning",
    ],
    prefixes: &["="],
    blank: true,
};

/// Bare-metal AArch64 on QEMU virt as a Cortex-A53 (base NEON), A76 (dotprod) and max (i8mm):
/// kernel sweeps against scalar and the tiny int8 model's output bytes against the host's,
/// with the blob, input and expected output placed in RAM by QEMU's loader device. `bench`:
/// also instructions per MAC of every int8 GEMM variant.
pub fn cortex_a(bench: bool) -> Result<()> {
    let target = "aarch64-unknown-none";
    let mut c = firmware_cargo("build", CORTEX_A, target);
    c.args(["--quiet", "--release", "--locked"]);
    if bench {
        c.args(["--features", "bench"]);
    }
    let (outcome, _) = run_timeout(c, Duration::from_secs(3600), Echo::Filtered(&BUILD_STD_NOISE))?;
    if !outcome.ok() {
        bail!("building {CORTEX_A}: {outcome}");
    }
    let elf = at(&format!("{CORTEX_A}/target/{target}/release/cortex-a-virt"));
    let fix = at("tests/fixtures/tiny_int8");
    let loader = |file: &str, addr: &str| format!("loader,file={},addr={addr},force-raw=on", fix.join(file).display());
    let runs = ["cortex-a53", "cortex-a76", "max"].map(|cpu| {
        let mut q = Command::new("qemu-system-aarch64");
        q.args(["-machine", "virt", "-cpu", cpu, "-m", "1G", "-nographic", "-semihosting", "-icount", "shift=0"])
            .args(["-device", &loader("model.qfb", "0x48000000")])
            .args(["-device", &loader("input.f32", "0x46000000")])
            .args(["-device", &loader("output.f32", "0x47000000")])
            .arg("-kernel")
            .arg(&elf);
        (format!("qemu-system-aarch64 -machine virt -cpu {cpu}"), q)
    });
    let result = run_all("cortex-a", runs, Duration::from_secs(300));
    // Image size (the blob and the arena are not in the image: loader memory and heap).
    let size = stdout_of(cmd("aarch64-linux-gnu-size", Path::new(".")).arg(&elf))?;
    if let Some(line) = size.lines().nth(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 3 {
            println!("image: text+rodata {} bytes, data {}, bss {}", f[0], f[1], f[2]);
        }
    }
    result?;
    println!("cortex-a: all CPUs passed");
    Ok(())
}
