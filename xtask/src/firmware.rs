//! The Cortex-M firmware examples (firmware/cortex-m55, firmware/cortex-m4) under QEMU with
//! their size table, and the same images (and the kernel tests) as a stable rustup toolchain
//! builds them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::arm::{qemu_arm, run_timeout_secs};
use crate::checks::firmware_cargo;
use crate::util::{at, cmd, describe, have, kib, require, run, run_timeout, stdout_of, thousands, Echo, Outcome};

const M55: (&str, &str) = ("firmware/cortex-m55", "thumbv8m.main-none-eabihf");
const M4: (&str, &str) = ("firmware/cortex-m4", "thumbv7em-none-eabihf");

/// The bins of each example crate: `forward` (firmware/models/mcu, the image alone) and
/// `instruct` (firmware/models/mcu-instruct, InstructBLIP with a fixed instruction tokenized
/// on the device).
const BINS: [&str; 2] = ["forward", "instruct"];

/// The flash of a 1 MiB part (an nRF52840), which every `forward` image must fit.
const FORWARD_FLASH: u64 = 1024 * 1024;

/// A firmware image and the QEMU machines it runs on: (label, machine).
struct Image {
    bin: &'static str,
    elf: PathBuf,
    runs: &'static [(&'static str, &'static str)],
}

impl Image {
    /// Every bin of both example crates, built into `target_dir`.
    fn all(target_dir: &Path) -> Vec<Image> {
        [(M55.1, M55_RUNS), (M4.1, M4_RUNS)]
            .into_iter()
            .flat_map(|(target, runs)| {
                BINS.map(|bin| Image { bin, elf: target_dir.join(format!("{target}/release/{bin}")), runs })
            })
            .collect()
    }

    fn label(&self, core: &str) -> String {
        match self.bin {
            "forward" => core.to_owned(),
            bin => format!("{core}, `{bin}`"),
        }
    }
}

const M55_RUNS: &[(&str, &str)] = &[("Cortex-M55 + Helium", "mps3-an547")];
const M4_RUNS: &[(&str, &str)] = &[("Cortex-M4 + DSP", "mps2-an386"), ("Cortex-M7 + DSP (M4 ELF)", "mps2-an500")];

/// What one run of an example printed and how it ended.
struct Run {
    outcome: Outcome,
    /// The decoded defmt log, when defmt-print is installed.
    log: Option<String>,
}

impl Run {
    /// `key=value` of the log's last `summary:` line.
    fn summary(&self, key: &str) -> Option<String> {
        let line = self.log.as_deref()?.lines().rev().find_map(|l| l.split_once("summary: ").map(|(_, s)| s))?;
        line.split_whitespace().find_map(|f| f.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
    }
}

/// Runs `elf` on `machine` with `-icount shift=0`, decodes the defmt log with defmt-print when
/// there is one, and prints it.
fn run_example(label: &str, machine: &str, elf: &Path) -> Result<Run> {
    println!("==> {label}: qemu-system-arm -machine {machine} -icount shift=0");
    // QEMU writes semihosting output (the defmt stream) to stderr; run_timeout merges it.
    let (outcome, raw) = run_timeout(qemu_arm(machine, true, elf), run_timeout_secs(120), Echo::Nothing)?;
    let log = if have("defmt-print") { Some(defmt_print(elf, &raw)?) } else { None };
    if let Some(log) = &log {
        print!("{log}");
    }
    Ok(Run { outcome, log })
}

/// `raw`, a defmt stream of `elf`, decoded by `defmt-print -e ELF`.
fn defmt_print(elf: &Path, raw: &[u8]) -> Result<String> {
    let mut c = Command::new("defmt-print");
    c.arg("-e").arg(elf).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = c.spawn().with_context(|| format!("cannot start `{}`", describe(&c)))?;
    let mut stdin = child.stdin.take().context("defmt-print has no stdin")?;
    let raw = raw.to_vec();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&raw);
    });
    let out = child.wait_with_output()?;
    let _ = feeder.join();
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Size in bytes of each section of `elf` (`arm-none-eabi-size -A`).
fn sections(elf: &Path) -> Result<Vec<(String, u64)>> {
    let text = stdout_of(cmd("arm-none-eabi-size", Path::new(".")).arg("-A").arg(elf))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (name, size) = (f.next()?, f.next()?.parse().ok()?);
            name.starts_with('.').then(|| (name.to_owned(), size))
        })
        .collect())
}

/// Whether section `.qfb` of `elf` has flags `A` only (allocated, read-only: flash).
fn qfb_read_only(elf: &Path) -> Result<bool> {
    let text = stdout_of(cmd("arm-none-eabi-readelf", Path::new(".")).arg("-SW").arg(elf))?;
    Ok(text.lines().any(|l| {
        let Some((_, rest)) = l.split_once("] ") else { return false };
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.first() == Some(&".qfb") && f.get(6) == Some(&"A")
    }))
}

/// Size of the static `BIN::ARENA` in `elf` (`arm-none-eabi-nm -S -C`), 0 if absent.
fn arena_size(elf: &Path, bin: &str) -> Result<u64> {
    let symbol = format!("{bin}::ARENA");
    let text = stdout_of(cmd("arm-none-eabi-nm", Path::new(".")).args(["-S", "-C"]).arg(elf))?;
    Ok(text
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[3] == symbol).then(|| u64::from_str_radix(f[1], 16).ok()).flatten()
        })
        .unwrap_or(0))
}

/// Builds the bins ([`BINS`]) of the example crate `dir` for `target` with `cargo`, into the
/// shared firmware/target (their host-side build scripts and proc macros are built once).
fn build_example(mut c: Command, dir: &str, target: &str, target_dir: &Path) -> Result<()> {
    println!("==> build {dir} ({target}, release)");
    c.args(["--quiet", "--release", "--locked", "--target", target, "--target-dir"])
        .arg(target_dir)
        .args(BINS.iter().flat_map(|b| ["--bin", b]));
    run(&mut c)
}

/// The Cortex-M firmware examples under QEMU: builds each image once, runs the M55 images on
/// mps3-an547 and the M4 images on mps2-an386 and mps2-an500, fails on any failure and prints
/// the size table. The `forward` images run the int8 model of firmware/models/mcu from flash,
/// the `instruct` images that of firmware/models/mcu-instruct with the instruction tokenized
/// on the device; each compares its output with the host's bit for bit (and the token ids);
/// the exit status comes from semihosting. A `forward` image over 1 MiB of flash fails.
///
/// Table columns: flash = .vector_table + .text + .rodata + .qfb (the blob) + .data's load
/// image; RAM statics = .data + .bss + .uninit (the arena and output buffer included); peak
/// stack = deepest stack use, measured by the firmware; tokenize and forward = instructions
/// counted by SysTick under `-icount shift=0`. The log is defmt, decoded with defmt-print when installed
/// (`cargo install defmt-print --locked`); without it the runs still pass or fail, and the
/// stack and instruction columns read n/a.
pub fn firmware() -> Result<()> {
    require(
        &["qemu-system-arm", "arm-none-eabi-ld", "arm-none-eabi-size", "arm-none-eabi-readelf", "arm-none-eabi-nm"],
        "qemu-system-arm gcc-arm-none-eabi",
    )?;
    if !have("defmt-print") {
        println!(
            "firmware: defmt-print not found: logs stay encoded, stack and instruction columns n/a (cargo install defmt-print --locked)"
        );
    }
    let start = std::time::Instant::now();
    let target_dir = at("firmware/target");
    for (dir, target) in [M55, M4] {
        build_example(firmware_cargo("build", dir, target), dir, target, &target_dir)?;
    }
    println!("(builds: {} s)", start.elapsed().as_secs());
    let images = Image::all(&target_dir);

    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for image in &images {
        for &(core, machine) in image.runs {
            let label = &image.label(core);
            let run = run_example(label, machine, &image.elf)?;
            if !run.outcome.ok() {
                println!("FAILED: {label} on {machine} ({})", run.outcome);
                failures.push(format!("{label} on {machine}: {}", run.outcome));
            }
            // Sizes from the ELF. The blob must sit in a read-only section (flash), not in RAM.
            let s = sections(&image.elf)?;
            let size = |name: &str| s.iter().find(|(n, _)| n == name).map_or(0, |(_, b)| *b);
            let (vt, text, rodata, qfb) = (size(".vector_table"), size(".text"), size(".rodata"), size(".qfb"));
            let (data, bss, uninit) = (size(".data"), size(".bss"), size(".uninit"));
            if !qfb_read_only(&image.elf)? || data >= qfb {
                println!("FAILED: {label}: the blob is not in a read-only (flash) section of {}", image.elf.display());
                failures.push(format!("{label}: blob not in flash"));
            }
            let code = vt + text + rodata + data;
            let statics = data + bss + uninit;
            if image.bin == "forward" && code + qfb > FORWARD_FLASH {
                println!("FAILED: {label}: {} of flash, over the 1 MiB the forward image must fit", kib(code + qfb));
                failures.push(format!("{label}: over 1 MiB of flash"));
            }
            let arena = arena_size(&image.elf, image.bin)?;
            let stack = run.summary("stack").and_then(|s| s.parse::<u64>().ok());
            let instr = run.summary("forward_instructions").map_or("n/a".to_owned(), |s| thousands(&s));
            let tokenize = match run.summary("tokenize_instructions") {
                Some(s) if s == "0" => "-".to_owned(),
                Some(s) => thousands(&s),
                None => "n/a".to_owned(),
            };
            let crc = run.summary("crc32").unwrap_or_else(|| "n/a".to_owned());
            rows.push(format!(
                "| {label} | `{machine}` | {} | {} | {} | {} ({}) | {} | {} | {tokenize} | {instr} | {crc} |",
                kib(code),
                kib(qfb),
                kib(code + qfb),
                kib(statics),
                kib(arena),
                stack.map_or("n/a".to_owned(), kib),
                stack.map_or("n/a".to_owned(), |st| kib(statics + st)),
            ));
        }
    }
    println!();
    println!("| image | QEMU machine | flash: code + constants | flash: blob | flash total | RAM: statics (arena) | peak stack | RAM total | tokenize (instructions) | forward (instructions) | output CRC-32 |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    println!();
    if !failures.is_empty() {
        bail!("firmware: {} failure(s): {}", failures.len(), failures.join("; "));
    }
    println!("firmware: all images passed ({} s)", start.elapsed().as_secs());
    Ok(())
}

// ---- What a stable toolchain builds ----

/// The targets of the stable view.
const STABLE_TARGETS: [&str; 2] = ["thumbv7em-none-eabihf", "thumbv8m.main-none-eabihf"];

/// Builds `core` for `target` once with `-Zbuild-std` (the only step that needs
/// `RUSTC_BOOTSTRAP`) and puts its rlibs in `sysroot/lib/rustlib/<target>/lib`.
fn sysroot_for(target: &str, base: &Path, sysroot: &Path, names: &mut String) -> Result<()> {
    let boot = base.join("boot");
    fs::create_dir_all(boot.join("src"))?;
    fs::write(
        boot.join("Cargo.toml"),
        "[package]\nname = \"boot\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )?;
    fs::write(boot.join("src/lib.rs"), "#![no_std]\n")?;
    let mut c = cmd("/usr/bin/cargo", &boot);
    // embed-bitcode: the firmware crates link with LTO, which needs core's bitcode.
    c.env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTFLAGS", "-C embed-bitcode=yes")
        .args(["build", "--quiet", "--release", "-Zbuild-std=core", "--target", target, "--target-dir"])
        .arg(base.join("boot-target"));
    run(&mut c)?;
    let deps = base.join(format!("boot-target/{target}/release/deps"));
    let lib = sysroot.join(format!("lib/rustlib/{target}/lib"));
    if lib.exists() {
        fs::remove_dir_all(&lib)?;
    }
    fs::create_dir_all(&lib)?;
    // rustc_std_workspace_core only where this toolchain's library has it.
    for (krate, required) in [("core", true), ("compiler_builtins", true), ("rustc_std_workspace_core", false)] {
        // The newest build of each, should the boot target hold older ones.
        let newest = fs::read_dir(&deps)?
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&format!("lib{krate}-")) && n.ends_with(".rlib")
            })
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
        match newest {
            Some(e) => {
                fs::copy(e.path(), lib.join(e.file_name()))?;
                *names += &e.file_name().to_string_lossy();
            }
            None if required => bail!("no lib{krate}-*.rlib in {}", deps.display()),
            None => {}
        }
    }
    Ok(())
}

/// Makes `sysroot` for the stable view: the host's libraries linked from Debian's rustc (build
/// scripts and proc macros), `core` built once per target. Also returns a tag that changes
/// with the rlibs (their names carry cargo's hash), for a build directory of their own:
/// cargo does not see a changed sysroot, and crates built against another `core` do not load.
fn stable_sysroot(base: &Path) -> Result<(PathBuf, String)> {
    let sysroot = base.join("sysroot");
    let host_sysroot = stdout_of(Command::new("/usr/bin/rustc").args(["--print", "sysroot"]))?.trim().to_owned();
    let host = stdout_of(Command::new("/usr/bin/rustc").arg("-vV"))?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("/usr/bin/rustc -vV names no host")?;
    let host_lib = sysroot.join(format!("lib/rustlib/{host}/lib"));
    fs::create_dir_all(host_lib.parent().expect("has a parent"))?;
    if fs::symlink_metadata(&host_lib).is_err() {
        std::os::unix::fs::symlink(format!("{host_sysroot}/lib/rustlib/{host}/lib"), &host_lib)?;
    }
    let mut names = String::new();
    for target in STABLE_TARGETS {
        println!("==> core for {target} (-Zbuild-std, once) into {}", sysroot.display());
        sysroot_for(target, base, &sysroot, &mut names)?;
    }
    Ok((sysroot, format!("{:08x}", crc32fast::hash(names.as_bytes()))))
}

/// The kernels a stable toolchain compiles for each core configuration, read from the probe
/// crate (`xtask/stable-view-probe`, which records `Kernels::COMPILED`'s names in its object
/// file) without running anything: it covers the configurations no firmware image is built
/// for (thumbv8m.main without Helium, with and without the `dsp` feature).
fn probe_kernels(sysroot: &Path, build_dir: &Path) -> Result<Vec<(String, bool, Vec<String>)>> {
    const DSP: &str = "q8=dsp_gemm_q8_smlad_4x1 f=dsp_gemm_f32_f16_4x2_vfma quant=dsp_quant_i8_vcvt_shadd16";
    const HELIUM: &str = "q8=helium_gemm_q8_vmladav_2x4 f=helium_gemm_f32_f16_2x2_vfma quant=helium_quant_i8_vcvta";
    const SCALAR: &str = "q8=scalar_gemm_q8 f=scalar_gemm_f32_f16 quant=scalar_quant_i8";
    let configs: [(&str, &[&str], &str); 4] = [
        ("thumbv7em-none-eabihf", &[], DSP),
        ("thumbv8m.main-none-eabihf", &["--features", "helium"], HELIUM),
        ("thumbv8m.main-none-eabihf", &[], SCALAR),
        ("thumbv8m.main-none-eabihf", &["--features", "dsp"], DSP),
    ];
    let mut results = Vec::new();
    for (target, features, want) in configs {
        let what = format!("kernels compiled for {target} {}", features.join(" "));
        println!("==> {what} (probe)");
        let dir = build_dir.join(format!("probe{}", features.join("")));
        let mut c = stable_cargo("xtask/stable-view-probe", target, sysroot);
        c.args(["--quiet", "--release", "--locked", "--target", target, "--target-dir"]).arg(&dir).args(features);
        run(&mut c)?;
        let deps = dir.join(format!("{target}/release/deps"));
        let rlib = fs::read_dir(&deps)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libqformer_stable_view")))
            .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
            .with_context(|| format!("no probe rlib in {}", deps.display()))?;
        let bytes = fs::read(&rlib)?;
        // The record, not the crate docs' description of it (`q8=NAME`): names are lower case.
        let tag = b"qformer-kernels q8=";
        let got = (0..bytes.len().saturating_sub(tag.len()))
            .filter(|&at| bytes[at..].starts_with(tag) && bytes[at + tag.len()].is_ascii_lowercase())
            .find_map(|at| {
                let rest = &bytes[at + tag.len() - 3..];
                rest.iter().position(|&b| b == b';').map(|end| String::from_utf8_lossy(&rest[..end]).into_owned())
            })
            .with_context(|| format!("no kernel record in {}", rlib.display()))?;
        println!("  {got}");
        let ok = got == want;
        let fails = if ok { Vec::new() } else { vec![format!("FAIL: compiled {got}, expected {want}")] };
        results.push((format!("{what}: {got}"), ok, fails));
    }
    Ok(results)
}

/// `/usr/bin/cargo build` as a stable toolchain runs it: no `RUSTC_BOOTSTRAP`, no
/// `-Zbuild-std`, `core` from `sysroot` (target-only flags, appended to the crate's own).
fn stable_cargo(dir: &str, target: &str, sysroot: &Path) -> Command {
    let mut c = cmd("/usr/bin/cargo", &at(dir));
    c.env_remove("RUSTC_BOOTSTRAP")
        .env("RUSTC", "/usr/bin/rustc")
        .env(
            format!("CARGO_TARGET_{}_RUSTFLAGS", target.to_uppercase().replace(['-', '.'], "_")),
            format!("--sysroot {}", sysroot.display()),
        )
        .arg("build");
    c
}

/// The firmware images and the kernel tests built as a stable rustup toolchain builds them,
/// run under QEMU. `RUSTC_BOOTSTRAP=1` (which `-Zbuild-std` needs) also makes rustc report
/// unstable target features such as `dsp` to `cfg`; a stable toolchain with `rustup target
/// add` does not. Here `core` is built once per target with `-Zbuild-std` into a sysroot, and
/// the crates are then built by the same rustc without `RUSTC_BOOTSTRAP`, with `--sysroot`:
/// `cfg` sees what stable sees (docs/CROSS.md). Every image checks that its compiled kernels
/// are the ones for its core, so one built with scalar kernels fails.
pub fn stable_view() -> Result<()> {
    require(&["qemu-system-arm", "arm-none-eabi-ld"], "qemu-system-arm gcc-arm-none-eabi")?;
    let base = at("target/stable-view");
    let (sysroot, tag) = stable_sysroot(&base)?;
    for target in STABLE_TARGETS {
        let cfg = stdout_of(
            Command::new("/usr/bin/rustc")
                .env_remove("RUSTC_BOOTSTRAP")
                .args(["--print", "cfg", "--target", target, "--sysroot"])
                .arg(&sysroot),
        )?;
        let features: Vec<&str> = cfg.lines().filter_map(|l| l.strip_prefix("target_feature=")).collect();
        println!("stable cfg for {target}: target_feature = [{}]", features.join(", "));
    }

    let build_dir = base.join(format!("build-{tag}"));
    let mut results: Vec<(String, bool, Vec<String>)> = probe_kernels(&sysroot, &build_dir)?;
    for (dir, target) in [M55, M4] {
        build_example(stable_cargo(dir, target, &sysroot), dir, target, &build_dir)?;
    }
    for (target, features) in
        [("thumbv8m.main-none-eabihf", &["--features", "helium"][..]), ("thumbv7em-none-eabihf", &[])]
    {
        println!("==> build firmware/kernel-tests tests ({target} {}, release)", features.join(" "));
        let mut c = stable_cargo("firmware/kernel-tests", target, &sysroot);
        c.args(["--quiet", "--release", "--locked", "--target", target, "--target-dir"])
            .arg(&build_dir)
            .args(["--bin", "tests"])
            .args(features);
        run(&mut c)?;
    }

    for image in Image::all(&build_dir) {
        for &(core, machine) in image.runs {
            let label = &image.label(core);
            let run = run_example(label, machine, &image.elf)?;
            let fails = match &run.log {
                Some(log) => log.lines().filter(|l| l.contains("FAIL")).map(str::to_owned).collect(),
                None => {
                    vec!["(defmt log not decoded: install defmt-print to read it; the kernel tests below print theirs)"
                        .into()]
                }
            };
            results.push((format!("{label} example on {machine}: {}", run.outcome), run.outcome.ok(), fails));
        }
    }
    for (target, machine, label) in [
        ("thumbv8m.main-none-eabihf", "mps3-an547", "Cortex-M55"),
        ("thumbv7em-none-eabihf", "mps2-an386", "Cortex-M4"),
    ] {
        println!("==> {label} kernel tests: qemu-system-arm -machine {machine}");
        let elf = build_dir.join(format!("{target}/release/tests"));
        let (outcome, out) = run_timeout(qemu_arm(machine, false, &elf), run_timeout_secs(120), Echo::All)?;
        let text = String::from_utf8_lossy(&out);
        let fails = text.lines().filter(|l| l.starts_with("FAIL")).map(str::to_owned).collect();
        results.push((format!("{label} kernel tests on {machine}: {outcome}"), outcome.ok(), fails));
    }

    println!("\nstable-view: the images as a stable toolchain (rustup target, no RUSTC_BOOTSTRAP) builds them");
    for (what, ok, fails) in &results {
        println!("  {} {what}", if *ok { "ok    " } else { "FAILED" });
        if !ok {
            for f in fails {
                println!("           {}", f.trim());
            }
        }
    }
    let failed = results.iter().filter(|r| !r.1).count();
    if failed > 0 {
        bail!(
            "stable-view: {failed} of {} runs fail when built as on a stable toolchain (see the FAIL lines above)",
            results.len()
        );
    }
    println!("stable-view: all {} runs pass as a stable toolchain builds them", results.len());
    Ok(())
}
