//! The C API (qformer-ffi): the committed header against what cbindgen generates, the host and
//! aarch64 Linux libraries with the C example and the C error test (host and qemu-aarch64), the
//! bare-metal static libraries, and the C firmware on QEMU (Cortex-M4 mps2-an386, Cortex-M55
//! mps3-an547) with its output checked bit for bit against the host's, and its size table.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::arm::{qemu_arm, run_timeout_secs};
use crate::util::{self, at, cmd, kib, require, root, run, run_timeout, stdout_of, thousands, Echo};

const FFI: &str = "qformer-ffi";
const HEADER: &str = "qformer-ffi/include/qformer.h";

/// The header cbindgen generates from qformer-ffi/src with qformer-ffi/cbindgen.toml.
fn generate_header() -> Result<Vec<u8>> {
    let crate_dir = at(FFI);
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .map_err(|e| anyhow::anyhow!("qformer-ffi/cbindgen.toml: {e}"))?;
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/lib.rs"))
        .with_src(crate_dir.join("src/status.rs"))
        .generate()
        .context("cbindgen cannot generate the header")?;
    let mut out = Vec::new();
    bindings.write(&mut out);
    Ok(out)
}

/// Writes qformer-ffi/include/qformer.h (`write`), or fails when it differs from what the
/// code generates.
fn header(write: bool) -> Result<()> {
    let generated = generate_header()?;
    let path = at(HEADER);
    if write {
        fs::create_dir_all(path.parent().expect("has a parent"))?;
        fs::write(&path, &generated)?;
        println!("wrote {HEADER} ({} bytes)", generated.len());
        return Ok(());
    }
    let committed = fs::read(&path).with_context(|| format!("cannot read {HEADER}"))?;
    if committed != generated {
        let (c, g) = (String::from_utf8_lossy(&committed), String::from_utf8_lossy(&generated));
        let line =
            c.lines().zip(g.lines()).position(|(a, b)| a != b).unwrap_or(c.lines().count().min(g.lines().count()));
        bail!(
            "{HEADER} differs from what qformer-ffi/src generates (first at line {}): run `cargo xtask c-api --write-header` and commit it",
            line + 1
        );
    }
    println!("ok: {HEADER} is what cbindgen generates from qformer-ffi/src");
    Ok(())
}

/// The Cortex-M images: (label, directory name under examples/, target, cargo features, QEMU
/// machine, make's CPU).
const FIRMWARE: &[(&str, &str, &[&str], &str, &str)] = &[
    ("Cortex-M4 + DSP (C)", "thumbv7em-none-eabihf", &[], "mps2-an386", "m4"),
    ("Cortex-M55 + Helium (C)", "thumbv8m.main-none-eabihf", &["--features", "helium"], "mps3-an547", "m55"),
];

/// The bare-metal static libraries: `cargo rustc --crate-type staticlib` for `target`, LTO and
/// one codegen unit (as the Rust firmware is built), panics aborting. Returns the library.
fn bare_metal_lib(target: &str, features: &[&str]) -> Result<PathBuf> {
    let target_dir = "target/c-api";
    let mut c = util::cross_cargo(target, "core", "rustc", &root());
    c.args(["--quiet", "--release", "-p", FFI, "--target", target, "--target-dir", target_dir])
        .args(features)
        .args(["--crate-type", "staticlib"])
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0");
    if target.starts_with("thumbv8m") {
        // As firmware/cortex-m55: MVE for LLVM's own code (the Helium kernels are asm).
        c.env("CARGO_TARGET_THUMBV8M_MAIN_NONE_EABIHF_RUSTFLAGS", "-C target-feature=+mve");
    }
    println!("==> libqformer.a for {target} {}", features.join(" "));
    let (outcome, _) = run_timeout(c, Duration::from_secs(1800), Echo::Filtered(&BUILD_STD_NOISE))?;
    if !outcome.ok() {
        bail!("building libqformer.a for {target}: {outcome}");
    }
    // One directory per feature set: the helium and plain builds would share release/.
    let lib = at(&format!("{target_dir}/{target}/release/libqformer.a"));
    let keep = at(&format!("{target_dir}/{target}/lib{}", features.join("").replace("--features", "-")));
    fs::create_dir_all(&keep)?;
    fs::copy(&lib, keep.join("libqformer.a"))?;
    Ok(keep)
}

/// rustc's notes about `+mve` that a `-Zbuild-std` build prints.
const BUILD_STD_NOISE: util::Filter = util::Filter {
    contains: &[
        "unknown and unstable feature specified",
        "still passed through",
        "consider filing",
        "warning: 1 warning",
        "dropping unsupported crate type",
    ],
    prefixes: &["="],
    blank: true,
};

/// The host libraries (`cargo build --release -p qformer-ffi`: target/release/libqformer.{a,so}),
/// the Linux example and the C error test built with make, run on the host.
fn linux_host() -> Result<()> {
    println!("==> cargo build --release -p qformer-ffi");
    run(cmd("cargo", &root()).args(["build", "--quiet", "--release", "-p", FFI]))?;
    let out = at("target/c-api/linux-x86_64");
    make_linux(&out, "cc", &at("target/release"))?;
    run_linux(&out, None)
}

/// The aarch64 Linux libraries (std built from source as for the Pi build) and the example
/// under qemu-aarch64 as a Pi 4 (Cortex-A72) and a Pi 5 (Cortex-A76).
fn linux_aarch64() -> Result<()> {
    let target = "aarch64-unknown-linux-gnu";
    println!("==> libqformer for {target}");
    let mut c = util::debian_cargo("build", "std,panic_abort", &root());
    // The linker (aarch64-linux-gnu-gcc) comes from .cargo/config.toml; the target directory is
    // the Pi build's, so std is built once for both.
    c.args(["--quiet", "--release", "-p", FFI, "--target", target, "--target-dir", "target/cross"]);
    run(&mut c)?;
    let out = at("target/c-api/linux-aarch64");
    make_linux(&out, "aarch64-linux-gnu-gcc", &at(&format!("target/cross/{target}/release")))?;
    for cpu in ["cortex-a72", "cortex-a76"] {
        run_linux(&out, Some(cpu))?;
    }
    Ok(())
}

/// `make` of examples/linux into `out` with `cc` against the libraries in `libdir`.
fn make_linux(out: &Path, cc: &str, libdir: &Path) -> Result<()> {
    fs::create_dir_all(out)?;
    run(cmd("make", &at("qformer-ffi/examples/linux"))
        .arg("--no-print-directory")
        .arg("-s")
        .arg(format!("CC={cc}"))
        .arg(format!("OUT={}", out.display()))
        .arg(format!("LIBDIR={}", libdir.display())))
}

/// Runs the example (shared library, found by its rpath) on the MCU model and the tiny int8
/// model, and the C error test (static library) with the InstructBLIP and no-projection blobs,
/// natively or under qemu-aarch64 as `cpu`.
fn run_linux(out: &Path, cpu: Option<&str>) -> Result<()> {
    let m = |f: &str| at(&format!("firmware/models/mcu/{f}")).display().to_string();
    let t = |f: &str| at(&format!("tests/fixtures/tiny_int8/{f}")).display().to_string();
    let c = |f: &str| at(&format!("target/c-api/{f}")).display().to_string();
    let runs: [(&str, Vec<String>); 3] = [
        ("qf_run", vec![m("model.qfb"), m("input.f32"), m("expected.f32")]),
        ("qf_run", vec![t("model.qfb"), t("input.f32"), t("output.f32")]),
        ("test_errors", vec![m("model.qfb"), m("input.f32"), c("instruct.qfb"), c("noproj.qfb")]),
    ];
    for (bin, args) in runs {
        let exe = out.join(bin);
        let mut c = match cpu {
            None => Command::new(&exe),
            Some(cpu) => {
                let mut c = Command::new("qemu-aarch64");
                c.args(["-L", "/usr/aarch64-linux-gnu", "-cpu", cpu]).arg(&exe);
                c
            }
        };
        c.args(&args);
        println!("==> {}{bin} {}", cpu.map_or(String::new(), |c| format!("qemu-aarch64 -cpu {c} ")), args.join(" "));
        let (outcome, _) = run_timeout(c, Duration::from_secs(300), Echo::All)?;
        if !outcome.ok() {
            bail!("{bin}: {outcome}");
        }
    }
    Ok(())
}

/// The blobs of the C error test's InstructBLIP and no-projection checks, made once with the
/// project's tools: `qformer synth --preset mcu-instruct` quantized to int8, and the
/// `hf_relu_f1` golden checkpoint (no language projection) quantized to int8.
fn test_blobs() -> Result<()> {
    let instruct = at("target/c-api/instruct.qfb");
    if !instruct.exists() {
        let dir = at("target/c-api/mcu-instruct");
        println!("==> InstructBLIP int8 blob for the C tests (qformer synth --preset mcu-instruct, quantize)");
        run(cmd("cargo", &root())
            .args(["run", "--quiet", "--release", "--bin", "qformer", "--", "synth"])
            .arg(&dir)
            .args(["--preset", "mcu-instruct"]))?;
        quantize(&dir, &instruct)?;
    }
    let noproj = at("target/c-api/noproj.qfb");
    if !noproj.exists() {
        println!("==> int8 blob without a projection for the C tests (quantize tests/fixtures/hf_relu_f1)");
        quantize(&at("tests/fixtures/hf_relu_f1"), &noproj)?;
    }
    Ok(())
}

/// `quantize CHECKPOINT -o BLOB --dtype int8`.
fn quantize(checkpoint: &Path, blob: &Path) -> Result<()> {
    run(cmd("cargo", &root())
        .args(["run", "--quiet", "--release", "-p", "quantize", "--"])
        .arg(checkpoint)
        .arg("-o")
        .arg(blob)
        .args(["--dtype", "int8"])
        .stdout(std::process::Stdio::null()))
}

/// One C firmware image: built with make for `cpu` against `lib`, run on `machine`.
struct FirmwareRun {
    label: &'static str,
    machine: &'static str,
    elf: PathBuf,
    log: String,
}

/// `key=value` of the log's `summary:` line.
fn summary(log: &str, key: &str) -> Option<String> {
    let line = log.lines().rev().find_map(|l| l.split_once("summary: ").map(|(_, s)| s))?;
    line.split_whitespace().find_map(|f| f.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
}

/// Builds and runs the C firmware for every entry of [`FIRMWARE`] and prints the size table.
fn firmware() -> Result<()> {
    require(&["arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm"], "gcc-arm-none-eabi qemu-system-arm")?;
    let mut runs = Vec::new();
    for &(label, target, features, machine, cpu) in FIRMWARE {
        let lib = bare_metal_lib(target, features)?;
        let out = at(&format!("target/c-api/firmware-{cpu}"));
        fs::create_dir_all(&out)?;
        println!("==> make -C qformer-ffi/examples/cortex-m CPU={cpu}");
        run(cmd("make", &at("qformer-ffi/examples/cortex-m"))
            .args(["--no-print-directory", "-s", &format!("CPU={cpu}")])
            .arg(format!("OUT={}", out.display()))
            .arg(format!("LIBDIR={}", lib.display()))
            .arg(format!("HOST_LIBDIR={}", at("target/release").display())))?;
        let elf = out.join("forward.elf");
        println!("==> {label}: qemu-system-arm -machine {machine} -icount shift=0");
        let (outcome, raw) = run_timeout(qemu_arm(machine, true, &elf), run_timeout_secs(120), Echo::All)?;
        if !outcome.ok() {
            bail!("{label} on {machine}: {outcome}");
        }
        runs.push(FirmwareRun { label, machine, elf, log: String::from_utf8_lossy(&raw).into_owned() });
    }
    println!();
    println!("| image | QEMU machine | flash: code + constants | flash: blob | flash total | RAM: statics (arena) | peak stack | RAM total | forward (instructions) | output CRC-32 |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        let text = stdout_of(cmd("arm-none-eabi-size", Path::new(".")).arg("-A").arg(&r.elf))?;
        let size = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| {
                    let mut f = l.split_whitespace();
                    (f.next()? == name).then(|| f.next()?.parse().ok()).flatten()
                })
                .unwrap_or(0)
        };
        let (vectors, code, rodata, exidx) = (size(".vectors"), size(".text"), size(".rodata"), size(".ARM.exidx"));
        let (data, bss, qfb) = (size(".data"), size(".bss"), size(".qfb"));
        let flash = vectors + code + rodata + exidx + data;
        let statics = data + bss;
        let stack = summary(&r.log, "stack").and_then(|s| s.parse::<u64>().ok());
        let arena = summary(&r.log, "arena").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        println!(
            "| {} | `{}` | {} | {} | {} | {} ({}) | {} | {} | {} | {} |",
            r.label,
            r.machine,
            kib(flash),
            kib(qfb),
            kib(flash + qfb),
            kib(statics),
            kib(arena),
            stack.map_or("n/a".into(), kib),
            stack.map_or("n/a".into(), |s| kib(statics + s)),
            summary(&r.log, "forward_instructions").map_or("n/a".into(), |s| thousands(&s)),
            summary(&r.log, "crc32").unwrap_or_else(|| "n/a".into()),
        );
    }
    println!();
    Ok(())
}

/// `cargo xtask c-api`: everything above, in order. `write_header`: only regenerate the header.
pub fn c_api(write_header: bool) -> Result<()> {
    if write_header {
        return header(true);
    }
    require(
        &["make", "cc", "pkg-config", "aarch64-linux-gnu-gcc", "qemu-aarch64"],
        "make gcc pkg-config gcc-aarch64-linux-gnu qemu-user",
    )?;
    let start = Instant::now();
    header(false)?;
    test_blobs()?;
    linux_host()?;
    firmware()?;
    linux_aarch64()?;
    // aarch64 bare metal: the static library builds (no C image runs it here).
    let lib = bare_metal_lib("aarch64-unknown-none", &[])?;
    println!("ok: {}", lib.join("libqformer.a").display());
    println!("c-api: all passed ({} s)", start.elapsed().as_secs());
    Ok(())
}
