//! The `qformer` binary end to end: quantize a fixture, run, verify, inspect, demo.

use std::path::{Path, PathBuf};
use std::process::Command;

use qformer_std::writer::{build_blob, BlobOptions};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(case)
}

fn qformer(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qformer")).args(args).output().expect("run qformer")
}

/// An int8 blob of the sharded fixture and an input file with its image_embeds.
fn setup(dir: &Path, precision: qformer_core::Precision) -> (PathBuf, PathBuf) {
    let w = qformer_std::checkpoint::load(&fixture("hf_sharded_gelu_f2_proj"), &Default::default()).unwrap();
    let blob = dir.join("m.qfb");
    std::fs::write(&blob, build_blob(&w, BlobOptions::new(precision), || {}).unwrap()).unwrap();
    let images = qformer_std::io::read_images(&fixture("hf_sharded_gelu_f2_proj").join("io.safetensors")).unwrap();
    let input = dir.join("in.safetensors");
    qformer_std::io::write_tensors(
        &input,
        &[("image_embeds", vec![images.batch, images.tokens, images.dim], &images.data)],
    )
    .unwrap();
    (blob, input)
}

#[test]
fn run_writes_outputs_with_interface_names() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, input) = setup(dir.path(), qformer_core::Precision::F32);
    let out = dir.path().join("out.safetensors");
    let o = qformer(&run_args(&blob, &input, &out));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("qformer_output").unwrap().shape(), [2, 8, 48]);
    assert_eq!(st.tensor("projected").unwrap().shape(), [2, 8, 56]);
    // Equal to Hugging Face's output to 1e-4 (f32 blob).
    let got =
        qformer_std::checkpoint::to_f32(st.tensor("qformer_output").unwrap().data(), safetensors::Dtype::F32).unwrap();
    let gold = std::fs::read(fixture("hf_sharded_gelu_f2_proj").join("io.safetensors")).unwrap();
    let gst = safetensors::SafeTensors::deserialize(&gold).unwrap();
    let want =
        qformer_std::checkpoint::to_f32(gst.tensor("qformer_output").unwrap().data(), safetensors::Dtype::F32).unwrap();
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(err <= 1e-4, "max abs error {err}");
}

#[test]
fn verify_prints_per_layer_table_and_enforces_min_cosine() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, input) = setup(dir.path(), qformer_core::Precision::Int8);
    let reference = fixture("hf_sharded_gelu_f2_proj");
    let args = |min: &str| {
        vec![
            "verify".into(),
            blob.clone().into_os_string(),
            "--reference".into(),
            reference.clone().into_os_string(),
            "--input".into(),
            input.clone().into_os_string(),
            "--min-cosine".into(),
            min.into(),
        ]
    };
    let ok_args: Vec<std::ffi::OsString> = args("0.99");
    let o = qformer(&ok_args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    for row in ["input norm", "layer 0", "layer 3", "qformer_output", "projected"] {
        assert!(text.contains(row), "missing row {row}: {text}");
    }
    let strict: Vec<std::ffi::OsString> = args("0.9999999");
    let o = qformer(&strict.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("below --min-cosine"));
}

#[test]
fn verify_rejects_a_blob_of_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, input) = setup(dir.path(), qformer_core::Precision::F32);
    let o = qformer(&[
        "verify".as_ref(),
        blob.as_os_str(),
        "--reference".as_ref(),
        fixture("hf_relu_f1").as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("configs differ"));
}

#[test]
fn inspect_shows_sizes_and_bad_blobs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, input) = setup(dir.path(), qformer_core::Precision::Int8);
    let o = qformer(&["inspect".as_ref(), blob.as_os_str()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success()
            && text.contains("blob bytes")
            && text.contains("arena bytes")
            && text.contains("int8 group 32"),
        "{text}"
    );
    // A truncated blob: clear error, exit 1, no panic.
    let bytes = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, &bytes[..bytes.len() - 100]).unwrap();
    let out = dir.path().join("out.safetensors");
    let o = qformer(&run_args(&blob, &input, &out));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("blob is truncated") && !err.contains("panicked"), "{err}");
    assert!(!out.exists());
}

#[test]
fn demo_prints_a_row_per_dtype() {
    let o = qformer(&["demo".as_ref()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    // Two tables (BLIP-2, then InstructBLIP with a tokenized instruction), a row per dtype
    // each, every cosine against the fp32 reference at its bar.
    for dtype in ["f32 ", "fp16 ", "int8 "] {
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with(dtype)).collect();
        assert_eq!(rows.len(), 2, "{dtype} rows: {text}");
        for row in rows {
            let cosine: f64 = row.split_whitespace().nth(4).unwrap().parse().unwrap();
            assert!(cosine >= if dtype == "int8 " { 0.9999 } else { 0.999999 }, "{row}");
        }
    }
    assert!(text.contains("InstructBLIP: the same model with text parts"), "{text}");
    let questions: Vec<&str> = text.lines().filter(|l| l.starts_with("int8, image encoded once")).collect();
    assert_eq!(questions.len(), 2, "{text}");
}

/// Runs `qformer` with a deadline: a command that blocks (on a FIFO, say) fails the test
/// instead of hanging it.
fn qformer_within(args: &[&std::ffi::OsStr], secs: u64) -> std::process::Output {
    let child = Command::new(env!("CARGO_BIN_EXE_qformer"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run qformer");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(out) => out.expect("wait for qformer"),
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(id.to_string()).status();
            panic!("qformer {args:?} did not finish within {secs} s");
        }
    }
}

fn run_args<'a>(blob: &'a Path, input: &'a Path, output: &'a Path) -> Vec<&'a std::ffi::OsStr> {
    vec![
        "run".as_ref(),
        blob.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        output.as_os_str(),
    ]
}

fn assert_outputs(bytes: &[u8]) {
    let st = safetensors::SafeTensors::deserialize(bytes).expect("a safetensors output");
    assert_eq!(st.tensor("qformer_output").unwrap().shape(), [2, 8, 48]);
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
#[test]
fn output_symlink_is_written_through_and_keeps_the_targets_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (blob, input) = setup(dir.path(), qformer_core::Precision::F32);
    let target = dir.path().join("real.safetensors");
    std::fs::write(&target, b"old").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o604)).unwrap();
    let link = dir.path().join("link.safetensors");
    std::os::unix::fs::symlink("real.safetensors", &link).unwrap();
    let o = qformer(&run_args(&blob, &input, &link));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
    assert_outputs(&std::fs::read(&target).unwrap());
    assert_eq!(mode(&target), 0o604, "an existing output keeps its mode");
    // A dangling link creates its target.
    let dangling = dir.path().join("dangling.safetensors");
    std::os::unix::fs::symlink("new.safetensors", &dangling).unwrap();
    let o = qformer(&run_args(&blob, &input, &dangling));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::symlink_metadata(&dangling).unwrap().file_type().is_symlink());
    assert_outputs(&std::fs::read(dir.path().join("new.safetensors")).unwrap());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[cfg(unix)]
#[test]
fn output_fifo_is_written_in_place_not_replaced() {
    // Like `--output /dev/null` on a board (as root that was replaced by a regular file).
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let (blob, input) = setup(dir.path(), qformer_core::Precision::F32);
    let fifo = dir.path().join("out.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut reader = Command::new("cat").arg(&fifo).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let o = qformer_within(&run_args(&blob, &input, &fifo), 60);
    let ok = o.status.success();
    let still_fifo = std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo();
    if !ok || !still_fifo {
        let _ = reader.kill();
    }
    let got = reader.wait_with_output().unwrap();
    assert!(ok, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(still_fifo, "the FIFO was replaced");
    assert_outputs(&got.stdout);
}

#[test]
fn output_that_is_an_input_is_refused_and_the_input_survives() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, input) = setup(dir.path(), qformer_core::Precision::F32);
    let (blob_bytes, input_bytes) = (std::fs::read(&blob).unwrap(), std::fs::read(&input).unwrap());
    let mut outputs = vec![input.clone(), blob.clone()];
    #[cfg(unix)]
    {
        let link = dir.path().join("to-input.safetensors");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let hard = dir.path().join("hard.safetensors");
        std::fs::hard_link(&input, &hard).unwrap();
        outputs.extend([link, hard]);
    }
    for out in &outputs {
        let o = qformer(&run_args(&blob, &input, out));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{}: {err}", out.display());
        assert!(err.contains("refusing to write") && err.contains("same file as the input"), "{err}");
    }
    assert_eq!(std::fs::read(&blob).unwrap(), blob_bytes);
    assert_eq!(std::fs::read(&input).unwrap(), input_bytes);
}

#[cfg(unix)]
#[test]
fn new_outputs_respect_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, input) = setup(dir.path(), qformer_core::Precision::F32);
    for (umask, want) in [("027", 0o640), ("002", 0o664)] {
        let out = dir.path().join(format!("out-{umask}.safetensors"));
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_qformer"))
            .args(run_args(&blob, &input, &out))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(mode(&out), want, "umask {umask}");
    }
}

#[test]
fn absurd_thread_counts_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, input) = setup(dir.path(), qformer_core::Precision::F32);
    let out = dir.path().join("out.safetensors");
    for n in ["100000", "4294967295", "18446744073709551615"] {
        let mut args = run_args(&blob, &input, &out);
        args.extend::<[&std::ffi::OsStr; 2]>(["--threads".as_ref(), n.as_ref()]);
        let o = qformer_within(&args, 30);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{n}: {err}");
        assert!(err.contains(&format!("{n} threads asked for, at most")), "{err}");
        let o = qformer_within(&["bench".as_ref(), blob.as_os_str(), "--threads".as_ref(), n.as_ref()], 30);
        assert_eq!(o.status.code(), Some(1));
    }
    assert!(!out.exists());
}

#[test]
fn thread_start_failure_says_why_once() {
    // A stack no system gives makes every worker thread fail to start.
    let dir = tempfile::tempdir().unwrap();
    let (blob, input) = setup(dir.path(), qformer_core::Precision::F32);
    let out = dir.path().join("out.safetensors");
    let mut args = run_args(&blob, &input, &out);
    args.extend::<[&std::ffi::OsStr; 2]>(["--threads".as_ref(), "2".as_ref()]);
    let o = Command::new(env!("CARGO_BIN_EXE_qformer"))
        .args(&args)
        .env("RUST_MIN_STACK", (1u64 << 46).to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot start 1 worker threads"), "{err}");
    let cause = err.trim().rsplit(": ").next().unwrap();
    assert_eq!(err.matches(cause).count(), 1, "the cause is repeated: {err}");
    assert!(!out.exists());
}

#[cfg(unix)]
#[test]
fn special_files_are_refused_with_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, input) = setup(dir.path(), qformer_core::Precision::F32);
    let out = dir.path().join("out.safetensors");
    let fifo = dir.path().join("in.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let zero = Path::new("/dev/zero");
    for (model, input, want) in [
        (blob.as_path(), zero, "/dev/zero is not a regular file (it is a character device)"),
        (blob.as_path(), fifo.as_path(), "in.fifo is not a regular file (it is a FIFO)"),
        (zero, input.as_path(), "/dev/zero is not a regular file (it is a character device)"),
        (dir.path(), input.as_path(), "is not a regular file (it is a directory)"),
        (fifo.as_path(), input.as_path(), "in.fifo is not a regular file (it is a FIFO)"),
    ] {
        let o = qformer_within(&run_args(model, input, &out), 30);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{want}: {err}");
    }
    assert!(!out.exists());
    let o = qformer_within(&run_args(&blob, &input, dir.path()), 30);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory; give a file name"));
}

#[test]
fn verify_refuses_a_min_cosine_that_is_not_a_cosine() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, input) = setup(dir.path(), qformer_core::Precision::Int8);
    for bad in ["NaN", "nan", "inf", "1.5", "-2"] {
        let o = qformer(&[
            "verify".as_ref(),
            blob.as_os_str(),
            "--reference".as_ref(),
            fixture("hf_sharded_gelu_f2_proj").as_os_str(),
            "--input".as_ref(),
            input.as_os_str(),
            format!("--min-cosine={bad}").as_ref(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("not a cosine similarity"), "{err}");
    }
}

#[test]
fn a_read_blob_does_not_change_when_its_file_does() {
    // A mapped blob rewritten during `run` gave NaN with exit 0, and truncated gave SIGBUS.
    let dir = tempfile::tempdir().unwrap();
    let (blob_path, input) = setup(dir.path(), qformer_core::Precision::Int8);
    let blob = qformer_std::runtime::BlobBytes::open(&blob_path).unwrap();
    let len = blob.bytes().len();
    std::fs::write(&blob_path, vec![0xffu8; len]).unwrap();
    std::fs::OpenOptions::new().write(true).open(&blob_path).unwrap().set_len(64).unwrap();
    let model = qformer_core::Model::from_blob(blob.bytes()).expect("the copy is intact");
    let images = qformer_std::io::read_images(&input).unwrap();
    let out = qformer_std::runtime::run_batch(&model, &images.data, images.batch, images.tokens, false).unwrap();
    assert!(out.output.iter().all(|v| v.is_finite()));
}

#[test]
fn a_blob_whose_length_disagrees_with_its_header_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, _) = setup(dir.path(), qformer_core::Precision::Int8);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(&blob, &bytes).unwrap();
    for mmap in [false, true] {
        let opened = if mmap {
            qformer_std::runtime::BlobBytes::map(&blob)
        } else {
            qformer_std::runtime::BlobBytes::open(&blob)
        };
        let e = format!("{:#}", opened.err().expect("refused"));
        assert!(e.contains("blob has trailing bytes"), "{e}");
    }
    let o = qformer(&["inspect".as_ref(), blob.as_os_str(), "--mmap".as_ref()]);
    assert_eq!(o.status.code(), Some(1));
}

#[cfg(unix)]
#[test]
fn synth_onto_a_full_disk_removes_what_it_created() {
    // A file size limit makes writes fail with EFBIG like a full disk does (SIGXFSZ ignored).
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("new").join("ckpt");
    let o = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 256; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_qformer"))
        .args(["synth".as_ref(), target.as_os_str(), "--preset".as_ref(), "demo".as_ref()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(!dir.path().join("new").exists(), "synth left the directory it created");
    // Into an existing directory: its own files go, the directory and other files stay.
    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("notes.txt"), b"mine").unwrap();
    let o = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 256; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_qformer"))
        .args(["synth".as_ref(), existing.as_os_str(), "--preset".as_ref(), "demo".as_ref()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let left: Vec<String> =
        std::fs::read_dir(&existing).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, ["notes.txt"]);
}

#[cfg(unix)]
#[test]
fn interrupted_synth_removes_the_directory_it_created() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("b2");
    // BLIP-2's checkpoint takes seconds to draw and write: time to interrupt it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_qformer"))
        .args(["synth".as_ref(), target.as_os_str()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !target.exists() {
        assert!(child.try_wait().unwrap().is_none(), "synth finished before it could be interrupted");
        assert!(t.elapsed().as_secs() < 30, "synth created no directory");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(15), "{status:?}");
    assert!(!target.exists(), "the interrupted synth left {}", target.display());
}

#[test]
fn absurd_synth_batches_and_bench_iterations_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("s");
    for (batch, want) in [
        ("0", "--batch must be at least 1"),
        ("100000000000000", "than this machine can address"),
        ("1000000000", "of memory available"),
    ] {
        let o = qformer_within(&["synth".as_ref(), target.as_os_str(), "--batch".as_ref(), batch.as_ref()], 30);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{batch}: {err}");
        assert!(err.contains(want), "{batch}: {err}");
        assert!(!target.exists());
    }
    // `--iters` was an allocation size (a capacity-overflow panic at once); now it only
    // counts, so the bench is still running when stopped.
    let (blob, _) = setup(dir.path(), qformer_core::Precision::Int8);
    let mut child = Command::new(env!("CARGO_BIN_EXE_qformer"))
        .args(["bench".as_ref(), blob.as_os_str(), "--warmup".as_ref(), "0".as_ref()])
        .args(["--iters", "18446744073709551615"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let early = child.try_wait().unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(early.is_none(), "bench ended at once: {}", String::from_utf8_lossy(&out.stderr));
}

#[cfg(unix)]
#[test]
fn interrupted_run_leaves_no_temporary_file() {
    use std::os::unix::process::ExitStatusExt;
    // BLIP-2's widths with two layers and 64 images: a run of seconds, even in release.
    let config = qformer_core::Config { num_layers: 2, ..qformer_core::Config::BLIP2 };
    let dir = tempfile::tempdir().unwrap();
    let w = qformer_std::synth::Spec::hf_init(config, 3).build();
    let blob = dir.path().join("m.qfb");
    std::fs::write(&blob, build_blob(&w, BlobOptions::new(qformer_core::Precision::Int8), || {}).unwrap()).unwrap();
    let (b, m, dv) = (64, config.max_image_tokens as usize, config.encoder_hidden as usize);
    let input = dir.path().join("in.safetensors");
    let images = qformer_std::synth::images(4, b, m, dv, &[], 1.0);
    qformer_std::io::write_tensors(&input, &[("image_embeds", vec![b, m, dv], &images)]).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.safetensors");
    let mut args = run_args(&blob, &input, &out);
    args.extend::<[&std::ffi::OsStr; 2]>(["--threads".as_ref(), "1".as_ref()]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_qformer"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    let tmp_seen = || {
        std::fs::read_dir(out_dir.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
    };
    while !tmp_seen() {
        assert!(child.try_wait().unwrap().is_none(), "run finished before it could be interrupted");
        assert!(t.elapsed().as_secs() < 30, "no temporary file appeared");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap().success());
    assert_eq!(child.wait().unwrap().signal(), Some(2));
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0, "SIGINT left files behind");
}
