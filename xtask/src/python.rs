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

/// Debian's arm64 packages of CPython 3.11 and the libraries it loads, extracted (not
/// installed) into a sysroot for `qemu-aarch64 -L`.
const ARM64_PYTHON: &[&str] = &[
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "libexpat1",
    "zlib1g",
    "libffi8",
    "libssl3",
    "libbz2-1.0",
    "liblzma5",
    "libuuid1",
    "libsqlite3-0",
    "libncursesw6",
    "libtinfo6",
    "libcrypt1",
    "libgcc-s1",
    "libstdc++6",
    "libreadline8",
    "libdb5.3",
    "libgdbm6",
];

/// The Python package on aarch64 Linux (the Pi), under `qemu-aarch64`: Debian's arm64 CPython
/// 3.11 extracted into `target/python-aarch64/root` (`dpkg --add-architecture arm64` and
/// `apt-get download`; nothing arm64 is installed), the abi3 wheel cross-built by maturin with
/// Debian's toolchain (`-Zbuild-std`), numpy's and pytest's aarch64 wheels from PyPI, the CLI
/// binaries cross-built too (run through `qemu-aarch64` wrappers), then `pytest python/tests`
/// as a Cortex-A72 (Pi 4: `smull` kernels) and a Cortex-A76 (Pi 5: `sdot`). Not a step of
/// `ci` (about 7 minutes, most of it the cross builds).
pub fn python_aarch64() -> Result<()> {
    let base = at("target/python-aarch64");
    let (debs, root_dir, site, wheels, bins) =
        (base.join("debs"), base.join("root"), base.join("site"), base.join("wheels"), base.join("bin"));
    for d in [&debs, &wheels, &bins] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let t = Instant::now();
    let foreign = crate::util::stdout_of(cmd("dpkg", &root()).arg("--print-foreign-architectures"))?;
    if !foreign.lines().any(|l| l.trim() == "arm64") {
        run(cmd("dpkg", &root()).args(["--add-architecture", "arm64"]))?;
        run(cmd("apt-get", &root()).args(["update", "-qq"]))?;
    }
    let pkgs: Vec<String> = ARM64_PYTHON.iter().map(|p| format!("{p}:arm64")).collect();
    run(cmd("apt-get", &debs).args(["download", "-qq"]).args(&pkgs))?;
    for e in std::fs::read_dir(&debs)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "deb") {
            run(cmd("dpkg", &root()).arg("-x").arg(&p).arg(&root_dir))?;
        }
    }
    println!("-- arm64 CPython: {:.1} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let venv = base.join("host-venv");
    if !venv.join("bin/maturin").exists() {
        run(cmd("python3", &root()).args(["-m", "venv"]).arg(&venv))?;
        run(cmd(&venv.join("bin/pip").to_string_lossy(), &root())
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .args(["install", "--quiet", "maturin"]))?;
    }
    let cross = at("target/cross");
    let host_path = format!("/usr/bin:{}", std::env::var("PATH").unwrap_or_default());
    run(cmd(&venv.join("bin/maturin").to_string_lossy(), &root())
        .env("PATH", &host_path)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTC", "/usr/bin/rustc")
        .env("CARGO_TARGET_DIR", &cross)
        .args(["build", "--quiet", "--release", "-m", "python/Cargo.toml", "--target", "aarch64-unknown-linux-gnu"])
        .args(["-Z", "build-std=std,panic_abort", "-o"])
        .arg(&wheels))?;
    let mut c = crate::util::debian_cargo("build", "std,panic_abort", &root());
    c.args(["--quiet", "--release", "-p", "qformer-std", "-p", "quantize", "--bins"])
        .args(["--target", "aarch64-unknown-linux-gnu", "--target-dir"])
        .arg(&cross);
    run(&mut c)?;
    println!("-- aarch64 wheel and CLI binaries: {:.1} s", t.elapsed().as_secs_f64());

    run(cmd(&venv.join("bin/pip").to_string_lossy(), &root())
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .args(["download", "--quiet", "--only-binary=:all:", "--platform", "manylinux2014_aarch64"])
        .args(["--python-version", "3.11", "--implementation", "cp", "-d"])
        .arg(&wheels)
        .args(["numpy", "pytest"]))?;
    if site.exists() {
        std::fs::remove_dir_all(&site)?;
    }
    for e in std::fs::read_dir(&wheels)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "whl") {
            run(cmd("python3", &root()).args(["-m", "zipfile", "-e"]).arg(&p).arg(&site))?;
        }
    }

    let python = root_dir.join("usr/bin/python3.11");
    for cpu in ["cortex-a72", "cortex-a76"] {
        for b in ["qformer", "quantize"] {
            let script = format!(
                "#!/bin/sh\nexec qemu-aarch64 -cpu {cpu} -L {} {} \"$@\"\n",
                root_dir.display(),
                cross.join(format!("aarch64-unknown-linux-gnu/release/{b}")).display()
            );
            let path = bins.join(b);
            std::fs::write(&path, script).with_context(|| format!("cannot write {}", path.display()))?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        }
        println!("-- pytest python/tests under qemu-aarch64 -cpu {cpu}");
        let t = Instant::now();
        run(cmd("qemu-aarch64", &root())
            .env("PYTHONPATH", &site)
            .env("QFORMER_BIN_DIR", &bins)
            .env("QFORMER_REQUIRE_CLI", "1")
            .args(["-cpu", cpu, "-L"])
            .arg(&root_dir)
            .arg(&python)
            .args(["-m", "pytest", "python/tests", "-q", "-rs", "-p", "no:cacheprovider"]))?;
        println!("-- pytest ({cpu}): {:.1} s", t.elapsed().as_secs_f64());
    }
    Ok(())
}
