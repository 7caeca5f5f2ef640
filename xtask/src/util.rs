//! Helpers every step uses: where the tree is, how to run a command and say what failed, which
//! cargo builds for a cross target, running QEMU with a timeout, installing what is missing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The repository's root (this crate's parent).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the repository root").to_path_buf()
}

/// `path` under the repository's root.
pub fn at(path: &str) -> PathBuf {
    root().join(path)
}

/// A command in `dir`.
pub fn cmd(program: &str, dir: &Path) -> Command {
    let mut c = Command::new(program);
    c.current_dir(dir);
    c
}

/// The command line of `c`, for messages.
pub fn describe(c: &Command) -> String {
    let mut s = String::new();
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            s += &format!("{}={} ", k.to_string_lossy(), v.to_string_lossy());
        }
    }
    s += &c.get_program().to_string_lossy();
    for a in c.get_args() {
        s += " ";
        s += &a.to_string_lossy();
    }
    s
}

/// Runs `c` with inherited output; fails naming the command unless it exits with status 0.
pub fn run(c: &mut Command) -> Result<()> {
    let status = c.status().with_context(|| format!("cannot start `{}`", describe(c)))?;
    check(status, c)
}

fn check(status: ExitStatus, c: &Command) -> Result<()> {
    if !status.success() {
        bail!("`{}` failed ({status})", describe(c));
    }
    Ok(())
}

/// Runs `c` and returns its standard output; fails unless it exits with status 0.
pub fn stdout_of(c: &mut Command) -> Result<String> {
    let out = c.stderr(Stdio::inherit()).output().with_context(|| format!("cannot start `{}`", describe(c)))?;
    check(out.status, c)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` is on the PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How a run with a timeout ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exited with this status.
    Exited(i32),
    /// Killed by a signal.
    Signal,
    /// Still running at the timeout; killed.
    TimedOut,
}

impl Outcome {
    /// Exit status 0.
    pub fn ok(self) -> bool {
        self == Outcome::Exited(0)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited(s) => write!(f, "exit status {s}"),
            Outcome::Signal => write!(f, "killed by a signal"),
            Outcome::TimedOut => write!(f, "timed out"),
        }
    }
}

/// What [`run_timeout`] echoes of the output while it runs.
#[derive(Clone, Copy)]
pub enum Echo {
    /// Everything, as it comes.
    All,
    /// Nothing (binary output, e.g. a defmt stream, decoded afterwards).
    Nothing,
    /// Every line except those [`Filter`] leaves out.
    Filtered(&'static Filter),
}

/// Lines left out of echoed output.
pub struct Filter {
    /// Lines containing one of these.
    pub contains: &'static [&'static str],
    /// Lines starting with one of these after leading blanks.
    pub prefixes: &'static [&'static str],
    /// Blank lines too.
    pub blank: bool,
}

/// Cargo's progress lines, left out of a test run's output.
pub const CARGO_PROGRESS: Filter =
    Filter { contains: &[], prefixes: &["Compiling ", "Finished ", "Running "], blank: false };

/// Runs `c` with standard output and error merged (QEMU 7.2 writes semihosting output to
/// stderr), echoing it as `echo` says, and kills it after `timeout`. Returns how it ended and
/// all it wrote.
pub fn run_timeout(mut c: Command, timeout: Duration, echo: Echo) -> Result<(Outcome, Vec<u8>)> {
    let (mut reader, writer) = std::io::pipe().context("cannot make a pipe")?;
    c.stdin(Stdio::null()).stdout(writer.try_clone()?).stderr(writer);
    let what = describe(&c);
    let mut child = c.spawn().with_context(|| format!("cannot start `{what}`"))?;
    // The parent's copies of the pipe's write end must close, or the reader never ends.
    drop(c);
    let collector = std::thread::spawn(move || -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        let mut line = Vec::new();
        let mut out = std::io::stdout();
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            match echo {
                Echo::All => {
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
                Echo::Nothing => {}
                Echo::Filtered(..) => {
                    for &b in &buf[..n] {
                        line.push(b);
                        if b == b'\n' {
                            print_unless_filtered(&line, echo);
                            line.clear();
                        }
                    }
                }
            }
        }
        if !line.is_empty() {
            print_unless_filtered(&line, echo);
        }
        all
    });
    let start = Instant::now();
    let outcome = loop {
        if let Some(status) = child.try_wait()? {
            break status.code().map_or(Outcome::Signal, Outcome::Exited);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break Outcome::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = collector.join().map_err(|_| anyhow::anyhow!("the output reader of `{what}` panicked"))?;
    Ok((outcome, output))
}

fn print_unless_filtered(line: &[u8], echo: Echo) {
    let Echo::Filtered(f) = echo else { return };
    let text = String::from_utf8_lossy(line);
    let trimmed = text.trim_start();
    if f.contains.iter().any(|c| text.contains(c))
        || f.prefixes.iter().any(|p| trimmed.starts_with(p))
        || (f.blank && trimmed.is_empty())
    {
        return;
    }
    print!("{text}");
    let _ = std::io::stdout().flush();
}

/// Whether rustup has the standard library of `target` installed.
pub fn rustup_has_target(target: &str) -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == target))
}

/// `cargo SUBCOMMAND` for `target` in `dir`: rustup's cargo when rustup has the target's
/// standard library, else Debian's cargo (rust-web-src) building `build_std` (e.g. `core`)
/// from source with `-Zbuild-std` (unstable, so with `RUSTC_BOOTSTRAP=1`). See docs/CROSS.md.
pub fn cross_cargo(target: &str, build_std: &str, subcommand: &str, dir: &Path) -> Command {
    if rustup_has_target(target) {
        let mut c = cmd("cargo", dir);
        c.arg(subcommand);
        c
    } else {
        debian_cargo(subcommand, build_std, dir)
    }
}

/// Debian's `/usr/bin/cargo SUBCOMMAND -Zbuild-std=BUILD_STD` with its own rustc and
/// `RUSTC_BOOTSTRAP=1`.
pub fn debian_cargo(subcommand: &str, build_std: &str, dir: &Path) -> Command {
    let mut c = cmd("/usr/bin/cargo", dir);
    c.env("RUSTC_BOOTSTRAP", "1").env("RUSTC", "/usr/bin/rustc").arg(subcommand);
    c.arg(format!("-Zbuild-std={build_std}"));
    c
}

/// Installs rustup `component` for `toolchain` when it is missing.
pub fn ensure_component(toolchain: &str, component: &str) -> Result<()> {
    let installed =
        stdout_of(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", toolchain]))?;
    if !installed.lines().any(|l| l.trim() == component || l.starts_with(&format!("{component}-"))) {
        println!("==> installing {component} for {toolchain}");
        run(Command::new("rustup").args(["component", "add", component, "--toolchain", toolchain]))?;
    }
    Ok(())
}

/// The Debian packages the cross builds and emulation need (docs/CROSS.md).
pub const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "gcc-arm-none-eabi",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "qemu-system-arm",
    "qemu-user",
    // The C API's Linux example (qformer-ffi/examples/linux) finds libqformer through it.
    "pkg-config",
];

/// Installs the missing ones of [`APT_PACKAGES`] (needs root, as on CI).
pub fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg")
                .args(["-s", p])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        println!("all installed: {}", APT_PACKAGES.join(" "));
        return Ok(());
    }
    println!("installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .stdout(Stdio::null()))
}

/// Fails naming the tools of `tools` that are not on the PATH and the packages that have them.
pub fn require(tools: &[&str], packages: &str) -> Result<()> {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if !missing.is_empty() {
        bail!("{} not found (apt-get install {packages}, or `cargo xtask apt`)", missing.join(", "));
    }
    Ok(())
}

/// `bytes` as KiB with one decimal, as the tables print them.
pub fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// `n` with thousands separators.
pub fn thousands(n: &str) -> String {
    let digits: Vec<char> = n.chars().collect();
    let mut out = String::new();
    for (i, c) in digits.iter().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(*c);
    }
    out
}
