//! The InstructBLIP flow through the binaries: `quantize` an InstructBLIP checkpoint, then
//! `qformer run` with the input's `qformer_input_ids`, with `--prompt`, and with none;
//! `verify`, `inspect`, `bench --questions`; the refusals.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(case)
}

fn qformer(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qformer")).args(args).output().expect("run qformer")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tensor(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    qformer_std::checkpoint::to_f32(st.tensor(name).unwrap().data(), st.tensor(name).unwrap().dtype()).unwrap()
}

/// The blob of `case` at `dtype` and the case's prompts (text, ids).
fn setup(dir: &Path, case: &str, dtype: &str) -> (PathBuf, Vec<(String, Vec<u32>)>) {
    let blob = dir.join(format!("{case}.{dtype}.qfb"));
    let w = qformer_std::checkpoint::load(&fixture(case), &Default::default()).unwrap();
    let precision = qformer_core::Precision::ALL.iter().find(|p| p.name() == dtype).copied().unwrap();
    let bytes = qformer_std::writer::build_blob(&w, qformer_std::writer::BlobOptions::new(precision), || {}).unwrap();
    std::fs::write(&blob, bytes).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture(case).join("prompts.json")).unwrap()).unwrap();
    let prompts = json["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ids = p.get("truncated_ids").unwrap_or(&p["ids"]);
            (
                p["text"].as_str().unwrap().to_string(),
                ids.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect(),
            )
        })
        .collect();
    (blob, prompts)
}

/// One image of the case's input (image 0) with the ids of one instruction, as a file.
fn input_with_ids(dir: &Path, case: &str, ids: Option<&[u32]>) -> PathBuf {
    let images = qformer_std::io::read_images(&fixture(case).join("io.safetensors")).unwrap();
    let one = &images.data[..images.tokens * images.dim];
    let path = dir.join(format!("in{}.safetensors", ids.map_or(0, |i| i.len())));
    let shape = vec![1, images.tokens, images.dim];
    let mut views = vec![(
        "image_embeds".to_string(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, bytemuck::cast_slice(one)).unwrap(),
    )];
    let ids64: Vec<i64> = ids.unwrap_or(&[]).iter().map(|&v| v as i64).collect();
    if ids.is_some() {
        let v = safetensors::tensor::TensorView::new(
            safetensors::Dtype::I64,
            vec![1, ids64.len()],
            bytemuck::cast_slice(&ids64),
        )
        .unwrap();
        views.push(("qformer_input_ids".to_string(), v));
    }
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    path
}

fn run(blob: &Path, input: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec![
        "run".as_ref(),
        blob.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(|s| OsStr::new(*s)));
    qformer(&args)
}

#[test]
fn run_with_ids_with_prompt_and_without_instruction() {
    let dir = tempfile::tempdir().unwrap();
    for case in ["instructblip_hf", "instructblip_hf_sharded"] {
        let (blob, prompts) = setup(dir.path(), case, "int8");
        // The whole golden input: its [B, T] ids and mask, as InstructBlipProcessor makes them.
        let out = dir.path().join("all.safetensors");
        ok(&run(&blob, &fixture(case).join("io.safetensors"), &out, &[]));
        let b = blob.clone();
        let _ = b;
        for (text, ids) in &prompts {
            let with_ids = dir.path().join("ids.safetensors");
            let input = input_with_ids(dir.path(), case, Some(ids));
            ok(&run(&blob, &input, &with_ids, &[]));
            // --prompt tokenizes to the same ids (transformers' BertTokenizer's), so the same bytes.
            let plain = input_with_ids(dir.path(), case, None);
            let with_prompt = dir.path().join("prompt.safetensors");
            let o = run(&blob, &plain, &with_prompt, &["--prompt", text]);
            ok(&o);
            assert_eq!(
                std::fs::read(&with_ids).unwrap(),
                std::fs::read(&with_prompt).unwrap(),
                "{case}: --prompt {text:?} differs from its ids {ids:?}"
            );
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(stderr.contains("truncated"), ids.len() == 16 || ids.len() == 32, "{stderr}");
        }
        // Both at once is refused.
        let input = input_with_ids(dir.path(), case, Some(&prompts[0].1));
        let o = run(&blob, &input, &dir.path().join("x.safetensors"), &["--prompt", "hello"]);
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("give one of them"));
        // Without an instruction: the queries alone, said on stderr.
        let plain = input_with_ids(dir.path(), case, None);
        let o = run(&blob, &plain, &dir.path().join("none.safetensors"), &[]);
        ok(&o);
        assert!(String::from_utf8_lossy(&o.stderr).contains("no instruction given"));
        let got = tensor(&dir.path().join("none.safetensors"), "qformer_output");
        let want = tensor(&fixture(case).join("io.safetensors"), "qformer_output_no_instruction");
        let a = qformer_std::metrics::agreement(&got, &want[..got.len()]);
        assert!(a.cosine >= 0.999, "{case}: no-instruction cosine {}", a.cosine);
    }
}

#[test]
fn verify_inspect_and_bench_cover_instructblip() {
    let dir = tempfile::tempdir().unwrap();
    let case = "instructblip_lavis";
    let w = qformer_std::checkpoint::load(
        &fixture(case),
        &qformer_std::checkpoint::LoadOptions {
            config: Some(fixture(case).join("qformer_config.json")),
            ..Default::default()
        },
    )
    .unwrap();
    let blob = dir.path().join("l.qfb");
    let bytes = qformer_std::writer::build_blob(
        &w,
        qformer_std::writer::BlobOptions::new(qformer_core::Precision::Int8),
        || {},
    )
    .unwrap();
    std::fs::write(&blob, bytes).unwrap();
    let io = fixture(case).join("io.safetensors");
    let cfg = fixture(case).join("qformer_config.json");
    let reference = fixture(case);
    let args: Vec<&OsStr> = vec![
        "verify".as_ref(),
        blob.as_os_str(),
        "--reference".as_ref(),
        reference.as_os_str(),
        "--config".as_ref(),
        cfg.as_os_str(),
        "--input".as_ref(),
        io.as_os_str(),
    ];
    let text = ok(&qformer(&args));
    assert!(text.contains("qformer_output") && text.contains("ok: cosine >= 0.999"), "{text}");
    let text = ok(&qformer(&["inspect".as_ref(), blob.as_os_str()]));
    assert!(
        text.contains("instruction            up to 16 tokens") && text.contains("vocabulary             340 tokens"),
        "{text}"
    );
    assert!(text.contains("truncates on the left") && text.contains("[CLS] 2 = [CLS]"), "{text}");
    let args: Vec<&OsStr> = vec![
        "bench".as_ref(),
        blob.as_os_str(),
        "--prompt".as_ref(),
        "what is this?".as_ref(),
        "--questions".as_ref(),
        "3".as_ref(),
        "--iters".as_ref(),
        "2".as_ref(),
    ];
    let text = ok(&qformer(&args));
    assert!(text.contains("per question") && text.contains("bit-identical"), "{text}");
    // bench --questions without an instruction is refused.
    let o = qformer(&["bench".as_ref(), blob.as_os_str(), "--questions".as_ref(), "2".as_ref()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--questions needs an instruction"));
}

#[test]
fn an_instruction_for_a_blip2_blob_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let w = qformer_std::checkpoint::load(&fixture("hf_relu_f1"), &Default::default()).unwrap();
    let blob = dir.path().join("b.qfb");
    let bytes = qformer_std::writer::build_blob(
        &w,
        qformer_std::writer::BlobOptions::new(qformer_core::Precision::Int8),
        || {},
    )
    .unwrap();
    std::fs::write(&blob, bytes).unwrap();
    let input = fixture("hf_relu_f1").join("io.safetensors");
    let o = run(&blob, &input, &dir.path().join("o.safetensors"), &["--prompt", "what is this?"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("has no text parts") && e.contains("takes no instruction"), "{e}");
}

/// A tensor as `(name, dtype, shape, bytes)`.
type Raw<'a> = (&'a str, safetensors::Dtype, Vec<usize>, Vec<u8>);

/// The case's images with the tensors `extra`, as an input file.
fn write_input(dir: &Path, case: &str, extra: Vec<Raw<'_>>) -> PathBuf {
    let images = qformer_std::io::read_images(&fixture(case).join("io.safetensors")).unwrap();
    let path = dir.join("bad.safetensors");
    let mut views = vec![(
        "image_embeds".to_string(),
        safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            vec![images.batch, images.tokens, images.dim],
            bytemuck::cast_slice(&images.data),
        )
        .unwrap(),
    )];
    for (name, dtype, shape, bytes) in &extra {
        views.push((name.to_string(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap()));
    }
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    path
}

#[test]
fn bad_instruction_inputs_are_named() {
    use safetensors::Dtype::{I32, I64};
    let dir = tempfile::tempdir().unwrap();
    let case = "instructblip_hf";
    let (blob, _) = setup(dir.path(), case, "int8");
    let i64s = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let i32s = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let cases: Vec<(Vec<Raw<'_>>, &str)> = vec![
        (vec![("qformer_input_ids", I64, vec![1, 3], i64s(&[2, -5, 3]))], "value -5 at flat index 1 is not a token id"),
        (
            vec![("qformer_input_ids", I64, vec![1, 3], i64s(&[2, 5, 340]))],
            "token id 340 at position 2 is not in the vocabulary (size 340)",
        ),
        (
            vec![
                ("qformer_input_ids", I32, vec![1, 3], i32s(&[2, 5, 3])),
                ("qformer_attention_mask", I64, vec![1, 3], i64s(&[1, 2, 1])),
            ],
            "qformer_attention_mask value 2 at flat index 1 is not 0 or 1",
        ),
        (
            vec![
                ("qformer_input_ids", I64, vec![1, 3], i64s(&[2, 5, 3])),
                ("qformer_attention_mask", I64, vec![1, 2], i64s(&[1, 1])),
            ],
            "they must match",
        ),
        (vec![("qformer_input_ids", I64, vec![3, 2], i64s(&[2, 3, 2, 3, 2, 3]))], "3 instructions for 2 images"),
        (
            vec![("qformer_input_ids", I64, vec![1, 17], i64s(&[2; 17]))],
            "the instruction has 17 tokens; this blob accepts at most 16",
        ),
        (
            vec![("qformer_attention_mask", I64, vec![1, 2], i64s(&[1, 1]))],
            "has qformer_attention_mask but no qformer_input_ids",
        ),
        (
            vec![("qformer_input_ids", safetensors::Dtype::F32, vec![1, 1], vec![0; 4])],
            "has dtype F32, expected I64 or I32",
        ),
    ];
    for (tensors, want) in cases {
        let input = write_input(dir.path(), case, tensors);
        let o = run(&blob, &input, &dir.path().join("o.safetensors"), &[]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.code() == Some(1) && e.contains(want), "want {want:?}: {e}");
    }
}
