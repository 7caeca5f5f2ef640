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
    let o = qformer(&[
        "run".as_ref(),
        blob.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ]);
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
    let o = qformer(&[
        "run".as_ref(),
        blob.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ]);
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
    for dtype in ["f32 ", "fp16 ", "int8 "] {
        assert!(text.lines().any(|l| l.starts_with(dtype)), "no {dtype} row: {text}");
    }
}
