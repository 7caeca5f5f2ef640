//! The `quantize` binary: exit codes, summary, and no partial output on failure.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(case)
}

fn quantize(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quantize")).args(args).output().expect("run quantize")
}

#[test]
fn writes_blob_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.qfb");
    for dtype in ["f32", "fp16", "int8"] {
        let o = quantize(&[
            fixture("hf_sharded_gelu_f2_proj").as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--dtype".as_ref(),
            dtype.as_ref(),
            "-q".as_ref(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("blob bytes") && text.contains("arena bytes") && text.contains("tensors"), "{text}");
        let blob = std::fs::read(&out).unwrap();
        assert_eq!(&blob[..8], b"QFMRBLOB");
    }
}

#[test]
fn failure_leaves_no_file_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.qfb");
    // LAVIS checkpoint without --config.
    let o = quantize(&[fixture("lavis_gelu_f2").as_os_str(), "-o".as_ref(), out.as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error: ") && err.contains("--config") && !err.contains("backtrace"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no output and no temporary file");
}

#[test]
fn existing_output_survives_a_failed_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.qfb");
    std::fs::write(&out, b"previous").unwrap();
    let o = quantize(&[fixture("lavis_gelu_f2").as_os_str(), "-o".as_ref(), out.as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
}

#[test]
fn usage_error_exits_2() {
    let o = quantize(&["--dtype".as_ref(), "int3".as_ref()]);
    assert_eq!(o.status.code(), Some(2));
}
