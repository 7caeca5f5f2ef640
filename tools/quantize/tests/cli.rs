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

fn copy_case(case: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(case)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn output_that_is_a_checkpoint_file_is_refused_and_the_checkpoint_survives() {
    let dir = copy_case("hf_sharded_gelu_f2_proj");
    let before: Vec<(String, Vec<u8>)> =
        names_in(dir.path()).into_iter().map(|n| (n.clone(), std::fs::read(dir.path().join(&n)).unwrap())).collect();
    let mut outputs = vec![
        dir.path().join("model-00001-of-00002.safetensors"),
        dir.path().join("model.safetensors.index.json"),
        dir.path().join("config.json"),
    ];
    #[cfg(unix)]
    {
        let link = tempfile::tempdir().unwrap().keep().join("link.qfb");
        std::os::unix::fs::symlink(dir.path().join("model-00002-of-00002.safetensors"), &link).unwrap();
        outputs.push(link);
    }
    for out in &outputs {
        let o = quantize(&[dir.path().as_os_str(), "-o".as_ref(), out.as_os_str(), "-q".as_ref()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{}: {err}", out.display());
        assert!(err.contains("refusing to write") && err.contains("would be destroyed"), "{err}");
    }
    let after: Vec<(String, Vec<u8>)> =
        names_in(dir.path()).into_iter().map(|n| (n.clone(), std::fs::read(dir.path().join(&n)).unwrap())).collect();
    assert!(before == after, "the checkpoint folder changed");
    // A new file inside the checkpoint folder destroys nothing and is fine.
    let out = dir.path().join("m.qfb");
    let o = quantize(&[dir.path().as_os_str(), "-o".as_ref(), out.as_os_str(), "-q".as_ref()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A single-file checkpoint given as the file itself.
    let single = copy_case("hf_relu_f1");
    let file = single.path().join("model.safetensors");
    let o = quantize(&[file.as_os_str(), "-o".as_ref(), file.as_os_str(), "-q".as_ref()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(fixture("hf_relu_f1").join("model.safetensors")).unwrap());
}

#[test]
fn absurd_group_sizes_are_refused_before_any_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.qfb");
    // 268435456 aborted on a 34 GB allocation before the size check.
    for g in ["268435456", "4294967280", "0", "24"] {
        let t = std::time::Instant::now();
        let o = quantize(&[
            fixture("hf_sharded_gelu_f2_proj").as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--group".as_ref(),
            g.as_ref(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{g}: {err}");
        assert!(err.contains("not a valid int8 group size"), "{err}");
        assert!(t.elapsed().as_secs() < 10);
    }
    // Within the core's rule but wider than any row of this model (48 and 96 channels).
    let o = quantize(&[
        fixture("hf_sharded_gelu_f2_proj").as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--group".as_ref(),
        "1048576".as_ref(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--group 1048576 is wider than every matrix row"), "{err}");
    assert_eq!(names_in(dir.path()).len(), 0, "no output and no temporary file");
}

#[cfg(unix)]
#[test]
fn new_blobs_respect_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.qfb");
    let o = Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_quantize"))
        .args([fixture("hf_relu_f1").as_os_str(), "-o".as_ref(), out.as_os_str(), "-q".as_ref()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o644);
}

#[test]
fn instructblip_checkpoints_quantize_with_their_text_parts() {
    // The whole InstructBLIP checkpoint, its tokenizer found in qformer_tokenizer/.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ib.qfb");
    let src = fixture("instructblip_hf_sharded");
    let o = quantize(&[src.as_os_str(), "-o".as_ref(), out.as_os_str(), "-q".as_ref()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("instruction            up to 32 tokens") && text.contains("BERT WordPiece"), "{text}");
    // --max-text-tokens plans a shorter instruction (and keeps fewer position embeddings).
    let short = dir.path().join("short.qfb");
    let o = quantize(&[
        src.as_os_str(),
        "-o".as_ref(),
        short.as_os_str(),
        "-q".as_ref(),
        "--max-text-tokens".as_ref(),
        "8".as_ref(),
    ]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("up to 8 tokens"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::metadata(&short).unwrap().len() < std::fs::metadata(&out).unwrap().len());
    // The tokenizer's files are sources too: an output over one is refused, the file survives.
    let vocab = src.join("qformer_tokenizer/vocab.txt");
    let before = std::fs::read(&vocab).unwrap();
    let o = quantize(&[src.as_os_str(), "-o".as_ref(), vocab.as_os_str(), "-q".as_ref()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(1) && err.contains("refusing to write"), "{err}");
    assert_eq!(std::fs::read(&vocab).unwrap(), before);
    // A config that says InstructBLIP over a checkpoint without the instruction path.
    let dir = copy_case("hf_relu_f1");
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"model_type\": \"blip-2\"", "\"model_type\": \"instructblip\"");
    std::fs::write(&cfg, text).unwrap();
    let out = dir.path().join("m.qfb");
    let o = quantize(&[dir.path().as_os_str(), "-o".as_ref(), out.as_os_str(), "-q".as_ref()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("says this is InstructBLIP") && err.contains("word_embeddings"), "{err}");
    assert!(!out.exists());
    let help = quantize(&["--help".as_ref()]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("BLIP-2 / InstructBLIP / MiniGPT-4") && help.contains("--tokenizer"), "{help}");
}

#[cfg(unix)]
#[test]
fn interrupted_quantize_leaves_no_temporary_file() {
    use std::os::unix::process::ExitStatusExt;
    // BLIP-2's widths with two layers (~90 MB of f32), so quantizing takes a while.
    let config = qformer_core::Config { num_layers: 2, ..qformer_core::Config::BLIP2 };
    let ckpt = tempfile::tempdir().unwrap();
    let w = qformer_std::synth::Spec::hf_init(config, 5).build();
    qformer_std::weights::save_hf_checkpoint(&w, ckpt.path()).unwrap();
    drop(w);
    for (signal, number) in [("TERM", 15), ("INT", 2)] {
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("m.qfb");
        let mut child = Command::new(env!("CARGO_BIN_EXE_quantize"))
            .args([ckpt.path().as_os_str(), "-o".as_ref(), out.as_os_str(), "-q".as_ref()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The temporary file exists from the start of the work.
        let t = std::time::Instant::now();
        while !names_in(out_dir.path()).iter().any(|n| n.starts_with(".qformer-") && n.ends_with(".tmp")) {
            assert!(child.try_wait().unwrap().is_none(), "quantize finished before it could be interrupted");
            assert!(t.elapsed().as_secs() < 30, "no temporary file appeared");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap().success());
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(number), "{status:?}");
        assert_eq!(names_in(out_dir.path()), Vec::<String>::new(), "SIG{signal} left files behind");
    }
    // A signal ignored by the parent stays ignored (`nohup quantize ...` survives a hang-up).
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("m.qfb");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("trap '' HUP; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_quantize"))
        .args([ckpt.path().as_os_str(), "-o".as_ref(), out.as_os_str(), "-q".as_ref()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !names_in(out_dir.path()).iter().any(|n| n.ends_with(".tmp")) {
        assert!(child.try_wait().unwrap().is_none(), "quantize finished before the hang-up");
        assert!(t.elapsed().as_secs() < 30, "no temporary file appeared");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(Command::new("kill").arg("-HUP").arg(child.id().to_string()).status().unwrap().success());
    assert!(child.wait().unwrap().success(), "an ignored SIGHUP ended quantize");
    assert_eq!(names_in(out_dir.path()), ["m.qfb"]);
}
