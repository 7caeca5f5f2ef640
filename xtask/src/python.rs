//! `cargo xtask python`: the Python package (`python/`, PyO3 + maturin) built and installed by
//! pip into a throwaway venv under `target/`, with numpy and pytest from PyPI, then its tests.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::util::{at, cmd, root, run};

/// Builds the CLI binaries the tests compare with, makes `target/python-venv` anew, installs
/// `./python` (maturin, fetched by pip as the build backend, builds into the workspace's
/// `target/` with the release profile, so the dependencies `cargo build --release` built are
/// reused) plus numpy and pytest, and runs `pytest python/tests`. The transformers test is
/// skipped when torch or transformers is missing (they are not installed here).
pub fn python() -> Result<()> {
    let t = Instant::now();
    run(cmd("cargo", &root()).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "qformer-std",
        "-p",
        "quantize",
        "--bins",
    ]))?;
    println!("-- CLI binaries: {:.1} s", t.elapsed().as_secs_f64());
    let venv = at("target/python-venv");
    if venv.exists() {
        std::fs::remove_dir_all(&venv).with_context(|| format!("cannot remove {}", venv.display()))?;
    }
    let t = Instant::now();
    run(cmd("python3", &root()).args(["-m", "venv"]).arg(&venv))?;
    let bin = venv.join("bin");
    run(cmd(&bin.join("pip").to_string_lossy(), &root())
        .env("CARGO_TARGET_DIR", at("target"))
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .args(["install", "--quiet", "./python", "numpy", "pytest"]))?;
    println!("-- venv and pip install ./python numpy pytest: {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    run(cmd(&bin.join("python").to_string_lossy(), &root())
        .env("QFORMER_BIN_DIR", at("target/release"))
        .env("QFORMER_REQUIRE_CLI", "1")
        .args(["-m", "pytest", "python/tests", "-q", "-rs", "-p", "no:cacheprovider"]))?;
    println!("-- pytest: {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}
