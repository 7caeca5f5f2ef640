//! Host-side checks and the aarch64 Linux runs: rustfmt, clippy (workspace and firmware
//! crates), rustdoc, the no_std checks, the host tests, qformer-core's tests under
//! qemu-aarch64 and the Raspberry Pi demo.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::util::{self, at, cmd, cross_cargo, root, run, run_timeout, Echo, Outcome};

/// The firmware crates, each with the targets (and features) it is built for. Each is its own
/// workspace, so every one is checked on its own.
pub const FIRMWARE_CRATES: &[(&str, &str, &[&str])] = &[
    ("firmware/board", "thumbv7em-none-eabihf", &[]),
    ("firmware/board", "thumbv7em-none-eabihf", &["--features", "qemu"]),
    ("firmware/board", "thumbv8m.main-none-eabihf", &["--features", "rtt"]),
    ("firmware/cortex-m4", "thumbv7em-none-eabihf", &[]),
    ("firmware/cortex-m55", "thumbv8m.main-none-eabihf", &[]),
    ("firmware/kernel-tests", "thumbv8m.main-none-eabihf", &["--features", "helium"]),
    ("firmware/kernel-tests", "thumbv7em-none-eabihf", &[]),
    ("firmware/cortex-a-virt", "aarch64-unknown-none", &["--all-features"]),
    // The C API's bare-metal code (panic handler, no catch_unwind); a workspace member.
    ("qformer-ffi", "thumbv7em-none-eabihf", &[]),
    ("qformer-ffi", "thumbv8m.main-none-eabihf", &["--features", "helium"]),
];

/// The standard-library crates a firmware crate's target needs built from source.
fn build_std(target: &str) -> &'static str {
    if target.starts_with("aarch64") {
        "core,alloc"
    } else {
        "core"
    }
}

/// `cargo fmt --check` over the workspace and every firmware crate.
pub fn fmt() -> Result<()> {
    run(cmd("cargo", &root()).args(["fmt", "--all", "--check"]))?;
    let mut dirs: Vec<&str> = FIRMWARE_CRATES.iter().map(|c| c.0).collect();
    dirs.dedup();
    for dir in dirs {
        run(cmd("cargo", &at(dir)).args(["fmt", "--check"]))?;
    }
    println!("ok: rustfmt");
    Ok(())
}

/// clippy `-D warnings` over the workspace (all targets, release), then over every firmware
/// crate for its own target. Without the target's rustup standard library, rustup's clippy
/// checks `core` from its `rust-src` with `-Zbuild-std` (`RUSTC_BOOTSTRAP=1`).
pub fn clippy() -> Result<()> {
    run(cmd("cargo", &root()).args(["clippy", "--workspace", "--all-targets", "--release", "--", "-D", "warnings"]))?;
    let target_dir = at("firmware/target/clippy");
    for (dir, target, features) in FIRMWARE_CRATES {
        println!("-- clippy {dir} --target {target} {}", features.join(" "));
        let mut c = if util::rustup_has_target(target) {
            let mut c = cmd("cargo", &at(dir));
            c.arg("clippy");
            c
        } else {
            util::ensure_component("stable", "rust-src")?;
            let mut c = cmd("cargo", &at(dir));
            c.env("RUSTC_BOOTSTRAP", "1").args(["clippy", &format!("-Zbuild-std={}", build_std(target))]);
            c
        };
        c.args(["--release", "--locked", "--quiet", "--target", target, "--target-dir"])
            .arg(&target_dir)
            .args(*features)
            .args(["--", "-D", "warnings"]);
        run(&mut c)?;
    }
    println!("ok: clippy");
    Ok(())
}

/// rustdoc of the workspace with `-D warnings`.
pub fn doc() -> Result<()> {
    run(cmd("cargo", &root()).env("RUSTDOCFLAGS", "-D warnings").args(["doc", "--workspace", "--no-deps", "--quiet"]))
}

/// `cargo check -p qformer-core` for the bare-metal targets: it builds as `no_std` without
/// `alloc`.
pub fn no_std() -> Result<()> {
    for target in ["thumbv7em-none-eabihf", "thumbv8m.main-none-eabihf", "aarch64-unknown-none"] {
        let mut c = util::debian_cargo("check", "core", &root());
        c.args(["--quiet", "-p", "qformer-core", "--target", target, "--target-dir", "target/cross"]);
        run(&mut c)?;
        println!("ok: {target}");
    }
    Ok(())
}

/// The host tests, then qformer-core's unit tests with debug assertions (the kernels'
/// `debug_assert!`ed preconditions, the `QRows` activation range).
pub fn test() -> Result<()> {
    run(cmd("cargo", &root()).args(["test", "--workspace", "--release"]))?;
    run(cmd("cargo", &root()).args(["test", "-p", "qformer-core", "--lib"]))
}

const QEMU_AARCH64_CPUS: [&str; 3] = ["cortex-a72", "cortex-a76", "max"];

/// qformer-core's unit tests for aarch64-unknown-linux-gnu (std and the test harness built
/// from source), run under `qemu-aarch64` as each CPU of [`QEMU_AARCH64_CPUS`].
pub fn aarch64() -> Result<()> {
    for cpu in QEMU_AARCH64_CPUS {
        println!("-- cpu {cpu}");
        let mut c = util::debian_cargo("test", "std,panic_abort,test", &root());
        c.env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER",
            format!("qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu {cpu}"),
        )
        .args(["--release", "-p", "qformer-core", "--lib", "--target", "aarch64-unknown-linux-gnu"])
        .args(["--target-dir", "target/cross", "--", "--nocapture"]);
        let (outcome, _) = run_timeout(c, Duration::from_secs(3600), Echo::Filtered(&util::CARGO_PROGRESS))?;
        if !outcome.ok() {
            bail!("qformer-core's tests on aarch64 as {cpu}: {outcome}");
        }
    }
    Ok(())
}

/// The `qformer` binary for aarch64 Linux, and its demo under `qemu-aarch64` as a Pi 4
/// (Cortex-A72) and a Pi 5 (Cortex-A76).
pub fn pi() -> Result<()> {
    let mut c = util::debian_cargo("build", "std,panic_abort", &root());
    c.args(["--quiet", "--release", "-p", "qformer-std", "--bin", "qformer", "--target", "aarch64-unknown-linux-gnu"])
        .args(["--target-dir", "target/cross"]);
    run(&mut c)?;
    let bin = at("target/cross/aarch64-unknown-linux-gnu/release/qformer");
    for cpu in ["cortex-a72", "cortex-a76"] {
        println!("-- cpu {cpu}");
        let mut c = cmd("qemu-aarch64", Path::new("."));
        c.args(["-L", "/usr/aarch64-linux-gnu", "-cpu", cpu]).arg(&bin).args(["demo", "--runs", "1"]);
        let (outcome, _) = run_timeout(c, Duration::from_secs(600), Echo::All)?;
        if outcome != Outcome::Exited(0) {
            bail!("the Pi demo as {cpu}: {outcome}");
        }
    }
    Ok(())
}

/// `cross_cargo` for a firmware crate: the target's rustup library or Debian's cargo building
/// what [`build_std`] says.
pub fn firmware_cargo(subcommand: &str, dir: &str, target: &str) -> std::process::Command {
    cross_cargo(target, build_std(target), subcommand, &at(dir))
}
