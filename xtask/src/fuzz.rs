//! The nightly-toolchain steps: cargo-fuzz over every target, and the tests under
//! AddressSanitizer.

use std::fs;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::util::{at, cmd, ensure_component, root, run, run_timeout, stdout_of, Echo, CARGO_PROGRESS};

/// Runs every cargo-fuzz target (fuzz/fuzz_targets), or `targets`, for `seconds` each, one
/// after the other, and prints how many inputs each executed. Fails if any target crashed
/// (panic, AddressSanitizer report, a single input running 30 s, out of memory).
///
/// Seeds come from `fuzz/corpus/<target>` (committed, read only); what the fuzzer adds goes to
/// `fuzz/target/corpus/<target>`, so later runs continue from it. Crashing inputs are written
/// to `fuzz/artifacts/<target>/`; logs to `fuzz/target/logs/<target>.log`. Installs cargo-fuzz when
/// `cargo +nightly fuzz` is missing.
pub fn fuzz(seconds: u64, targets: &[String]) -> Result<()> {
    ensure_component("nightly", "rust-src")?;
    let dir = at("fuzz");
    let has_fuzz =
        Command::new("cargo").args(["+nightly", "fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !has_fuzz {
        println!("==> installing cargo-fuzz");
        run(cmd("cargo", &root()).args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let targets: Vec<String> = if targets.is_empty() {
        stdout_of(cmd("cargo", &dir).args(["+nightly", "fuzz", "list"]))?.lines().map(str::to_owned).collect()
    } else {
        targets.to_vec()
    };
    println!("==> building {}", targets.join(" "));
    let mut build = cmd("cargo", &dir);
    build.args(["+nightly", "fuzz", "build"]);
    let (outcome, _) = run_timeout(build, Duration::from_secs(3600), Echo::Filtered(&CARGO_PROGRESS))?;
    if !outcome.ok() {
        bail!("cargo +nightly fuzz build: {outcome}");
    }

    fs::create_dir_all(dir.join("target/logs"))?;
    let mut failed = Vec::new();
    let mut summary = Vec::new();
    for t in &targets {
        let (grown, seeds) = (format!("target/corpus/{t}"), format!("corpus/{t}"));
        fs::create_dir_all(dir.join(&grown))?;
        fs::create_dir_all(dir.join(&seeds))?;
        let log_path = dir.join(format!("target/logs/{t}.log"));
        println!("==> {t}: {seconds}s");
        let log = fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        // -timeout: a single input running 30 s is reported as a hang; -rss_limit_mb bounds memory.
        let status = cmd("cargo", &dir)
            .args(["+nightly", "fuzz", "run", t, &grown, &seeds, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .args(["-print_final_stats=1", "-timeout=30", "-rss_limit_mb=2048"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .with_context(|| format!("cannot run cargo +nightly fuzz run {t}"))?;
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let stat = |key: &str| {
            text.lines().rev().find_map(|l| l.strip_prefix(key)).map_or("?".to_owned(), |v| v.trim().to_owned())
        };
        let (execs, rate) = (stat("stat::number_of_executed_units:"), stat("stat::average_exec_per_sec:"));
        let units = [&grown, &seeds].iter().map(|d| fs::read_dir(dir.join(d)).map_or(0, |r| r.count())).sum::<usize>();
        if status.success() {
            summary.push(format!("{t:<16} {execs:>12} executions {rate:>8}/s  {units:>6} corpus files  ok"));
        } else {
            println!("!! {t} crashed ({status}); see {}", log_path.display());
            let mut shown = 0;
            let lines: Vec<&str> = text.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                let marker = ["panicked at", "ERROR: ", "SUMMARY: ", "Test unit written to", "Failing input"];
                if shown < 20 && marker.iter().any(|m| l.contains(m)) {
                    println!("{l}");
                    if let Some(next) = lines.get(i + 1) {
                        println!("{next}");
                    }
                    shown += 2;
                }
            }
            summary.push(format!("{t:<16} {execs:>12} executions {rate:>8}/s  CRASHED"));
            failed.push(t.clone());
        }
    }
    println!("\n==> fuzzing summary ({seconds}s per target)");
    for s in &summary {
        println!("{s}");
    }
    if !failed.is_empty() {
        bail!("fuzz targets crashed: {}", failed.join(" "));
    }
    Ok(())
}

/// qformer-core's unit tests and the integration tests (qformer-tests) under AddressSanitizer,
/// the standard library rebuilt with it (-Zbuild-std), so an out-of-bounds access or
/// use-after-free anywhere (the SIMD kernels' raw-pointer loads included) aborts with a
/// report. Builds into target/asan. `args` go to cargo test.
pub fn asan(args: &[String]) -> Result<()> {
    ensure_component("nightly", "rust-src")?;
    let host = stdout_of(Command::new("rustc").args(["+nightly", "-vV"]))?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc +nightly -vV names no host")?;
    let flags = "-Zsanitizer=address";
    let mut c = cmd("cargo", &root());
    // detect_leaks: the tests leak nothing on purpose; report leaks too.
    c.env("ASAN_OPTIONS", std::env::var("ASAN_OPTIONS").unwrap_or_else(|_| "detect_leaks=1:abort_on_error=1".into()))
        .env("RUSTFLAGS", flags)
        .env("RUSTDOCFLAGS", flags)
        .args(["+nightly", "test", "-Zbuild-std", "--target", &host, "--target-dir", "target/asan"])
        .args(["-p", "qformer-core", "-p", "qformer-tests"])
        .args(args);
    run(&mut c)
}
