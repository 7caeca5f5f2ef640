//! Checkpoint (and image input) loading: real layouts load, and every inconsistency is an error naming the
//! file, tensor and shapes.

use qformer_std::checkpoint::{self, LoadOptions};
use qformer_tests::{copy_case, fixture, load_options, npy, rewrite_safetensors, weights};

fn load_err(dir: &std::path::Path, opts: &LoadOptions) -> String {
    format!("{:#}", checkpoint::load(dir, opts).expect_err("load must fail"))
}

#[test]
fn sharded_hf_checkpoint_skips_vision_and_language_tensors() {
    let w = weights("hf_sharded_gelu_f2_proj");
    let c = w.config;
    assert_eq!((c.num_layers, c.hidden, c.num_heads, c.intermediate), (4, 48, 4, 96));
    assert_eq!((c.cross_attention_frequency, c.encoder_hidden, c.num_queries), (2, 40, 8));
    assert_eq!((c.max_image_tokens, c.projection_dim), (10, 56));
    // Query tokens, input norm, 4 x (self 10 + ffn 6), 2 x cross 10, projection 2.
    assert_eq!(w.tensors.len(), 3 + 4 * 16 + 2 * 10 + 2);
}

#[test]
fn lavis_and_hugging_face_names_give_the_same_model() {
    let lavis = weights("lavis_gelu_f2");
    assert_eq!(lavis.config.projection_dim, 20, "llama_proj is the projection");
    assert_eq!(lavis.config.max_image_tokens, 257, "a bare Q-Former config plans for BLIP-2's 257 tokens");
    let bf16 = weights("hf_bf16");
    assert_eq!(bf16.config.activation, qformer_core::Activation::Relu);
}

#[test]
fn lavis_without_config_asks_for_one() {
    let e = load_err(&fixture("lavis_gelu_f2"), &LoadOptions::default());
    assert!(e.contains("no config.json") && e.contains("--config"), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = copy_case("hf_relu_f1");
    let name = "qformer.encoder.layer.1.crossattention.attention.value.bias";
    rewrite_safetensors(&dir.path().join("model.safetensors"), |l| l.retain(|t| t.0 != name));
    let e = load_err(dir.path(), &load_options("hf_relu_f1"));
    assert!(e.contains(name) && e.contains("missing"), "{e}");
}

#[test]
fn wrong_shape_names_tensor_and_both_shapes() {
    let dir = copy_case("hf_relu_f1");
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"intermediate_size\": 64", "\"intermediate_size\": 80");
    std::fs::write(&cfg, text).unwrap();
    let e = load_err(dir.path(), &LoadOptions::default());
    assert!(e.contains("qformer.encoder.layer.0.intermediate_query.dense.weight"), "{e}");
    assert!(e.contains("[64, 32]") && e.contains("[80, 32]"), "{e}");
}

#[test]
fn config_hidden_size_mismatch_is_reported() {
    let dir = copy_case("hf_relu_f1");
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"hidden_size\": 32", "\"hidden_size\": 64");
    std::fs::write(&cfg, text).unwrap();
    let e = load_err(dir.path(), &LoadOptions::default());
    assert!(e.contains("hidden_size = 64") && e.contains("query_tokens"), "{e}");
}

#[test]
fn cross_attention_frequency_mismatch_is_reported() {
    let dir = copy_case("hf_relu_f1");
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"cross_attention_frequency\": 1", "\"cross_attention_frequency\": 2");
    std::fs::write(&cfg, text).unwrap();
    let e = load_err(dir.path(), &LoadOptions::default());
    assert!(e.contains("cross-attention in layer 1") && e.contains("cross_attention_frequency = 2"), "{e}");
}

#[test]
fn unsupported_dtype_is_named() {
    let dir = copy_case("hf_relu_f1");
    rewrite_safetensors(&dir.path().join("model.safetensors"), |l| {
        let t = l.iter_mut().find(|t| t.0 == "qformer.layernorm.bias").unwrap();
        t.1 = safetensors::Dtype::I32;
    });
    let e = load_err(dir.path(), &LoadOptions::default());
    assert!(e.contains("qformer.layernorm.bias") && e.contains("unsupported dtype I32"), "{e}");
}

#[test]
fn corrupt_safetensors_header_names_the_file() {
    let dir = copy_case("hf_relu_f1");
    let path = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] = b'{';
    bytes[11] = b'{';
    std::fs::write(&path, bytes).unwrap();
    let e = load_err(dir.path(), &LoadOptions::default());
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors file"), "{e}");
}

#[test]
fn truncated_shard_names_the_file() {
    let dir = copy_case("hf_sharded_gelu_f2_proj");
    let path = dir.path().join("model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(dir.path(), &LoadOptions::default());
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
}

#[test]
fn no_model_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_err(dir.path(), &LoadOptions::default());
    assert!(e.contains("neither model.safetensors nor model.safetensors.index.json"), "{e}");
}

#[test]
fn non_finite_weight_is_named() {
    let dir = copy_case("hf_relu_f1");
    rewrite_safetensors(&dir.path().join("model.safetensors"), |l| {
        let t = l.iter_mut().find(|t| t.0 == "qformer.encoder.layer.0.output_query.dense.bias").unwrap();
        t.3[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    let e = load_err(dir.path(), &LoadOptions::default());
    assert!(e.contains("output_query.dense.bias") && e.contains("non-finite"), "{e}");
}

#[test]
fn absurd_vision_image_size_is_an_error_not_an_overflow() {
    // Found by fuzzing (checkpoint_load): (image_size / patch_size)^2 + 1 overflowed u32.
    let dir = copy_case("hf_relu_f1");
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"image_size\": 4", "\"image_size\": 131072");
    std::fs::write(&cfg, text).unwrap();
    let e = load_err(dir.path(), &LoadOptions::default());
    assert!(e.contains("image_size 131072 / patch_size 2"), "{e}");
}

fn read_npy(bytes: &[u8]) -> anyhow::Result<qformer_std::io::Images> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("images.npy");
    std::fs::write(&path, bytes).unwrap();
    qformer_std::io::read_images(&path)
}

#[test]
fn npy_inputs_in_c_and_fortran_order_read_the_same() {
    let values: Vec<f32> = (0..6).map(|v| v as f32).collect();
    let c_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let c = read_npy(&npy("<f4", false, "(2, 3)", &c_bytes)).unwrap();
    assert_eq!((c.batch, c.tokens, c.dim, c.data), (1, 2, 3, values.clone()));
    // Found by fuzzing (checkpoint_load): a Fortran-order array (what np.save writes for a
    // transposed array) was read as if it were in C order.
    let f_bytes: Vec<u8> = [0f32, 3., 1., 4., 2., 5.].iter().flat_map(|v| v.to_le_bytes()).collect();
    let f = read_npy(&npy("<f4", true, "(2, 3)", &f_bytes)).unwrap();
    assert_eq!((f.batch, f.tokens, f.dim, f.data), (1, 2, 3, values));
    let f64_bytes: Vec<u8> = (0..12).flat_map(|v| (v as f64).to_le_bytes()).collect();
    let b = read_npy(&npy("<f8", false, "(2, 3, 2)", &f64_bytes)).unwrap();
    assert_eq!((b.batch, b.tokens, b.dim, b.data.len()), (2, 3, 2, 12));
}

#[test]
fn npy_shape_larger_than_the_file_is_an_error() {
    // Found by fuzzing (checkpoint_load): npyz multiplies the dimensions unchecked (a panic
    // with overflow checks) and trusts the shape for the data size.
    for shape in ["(1099511627776, 1073741824)", "(4611686018427387904, 4611686018427387904, 16)", "(1000, 1000)"] {
        let e = format!("{:#}", read_npy(&npy("<f4", false, shape, &[0; 16])).expect_err(shape));
        assert!(e.contains("not a valid .npy file") && e.contains("more values than the file holds"), "{shape}: {e}");
    }
    for (header, what) in [
        ("(2, x)", "not a decimal integer"),
        ("(2, 03)", "not a decimal integer"),
        ("(99999999999999999999999, 1)", "too large"),
    ] {
        let e = format!("{:#}", read_npy(&npy("<f4", false, header, &[0; 16])).expect_err(header));
        assert!(e.contains(what), "{header}: {e}");
    }
    let dup = npy("<f4", false, "(2, 2), 'shape': (1, 1)", &[0; 16]);
    assert!(format!("{:#}", read_npy(&dup).unwrap_err()).contains("appears twice"));
}

/// The hf_relu_f1 case turned into an InstructBLIP checkpoint the way transformers lays one
/// out: input LayerNorm under `embeddings.layernorm`, word embeddings, text-side layers.
#[test]
fn instructblip_checkpoints_need_their_text_parts() {
    // A config that says InstructBLIP without the instruction path's tensors is refused
    // (its queries alone are not InstructBLIP's outputs).
    for (from, to) in [
        ("\"model_type\": \"blip-2\"", "\"model_type\": \"instructblip\""),
        ("Blip2ForConditionalGeneration", "InstructBlipForConditionalGeneration"),
    ] {
        let dir = copy_case("hf_relu_f1");
        let cfg = dir.path().join("config.json");
        let text = std::fs::read_to_string(&cfg).unwrap();
        assert!(text.contains(from), "fixture config lacks {from}");
        std::fs::write(&cfg, text.replace(from, to)).unwrap();
        let e = load_err(dir.path(), &LoadOptions::default());
        assert!(e.contains("says this is InstructBLIP") && e.contains("word_embeddings"), "{e}");
    }
    // Without its tokenizer (HF: qformer_tokenizer/ beside the weights).
    let dir = copy_case("instructblip_hf");
    std::fs::remove_dir_all(dir.path().join("qformer_tokenizer")).unwrap();
    let e = load_err(dir.path(), &LoadOptions::default());
    assert!(
        e.contains("InstructBLIP checkpoint") && e.contains("qformer_tokenizer") && e.contains("--tokenizer"),
        "{e}"
    );
    // ... which --tokenizer can name.
    let opts =
        LoadOptions { tokenizer: Some(fixture("instructblip_hf").join("qformer_tokenizer")), ..LoadOptions::default() };
    let w = qformer_std::checkpoint::load(dir.path(), &opts).unwrap();
    assert_eq!(w.config.max_text_tokens, 16, "T_max defaults to the position table's 16 rows (below 128)");
    // T_max beyond the position embeddings, or below [CLS] [SEP].
    for t in [17, 1] {
        let opts = LoadOptions { max_text_tokens: Some(t), ..LoadOptions::default() };
        let e = load_err(&fixture("instructblip_hf"), &opts);
        assert!(
            e.contains(&format!("--max-text-tokens {t} is out of range")) && e.contains("16 position embeddings"),
            "{e}"
        );
    }
    // LAVIS keeps word embeddings in BLIP-2 / MiniGPT-4 checkpoints too (the lavis case has
    // them): those load query-only; with an instruction model's projection (llm_proj) they
    // are InstructBLIP and need the tokenizer.
    assert!(fixture_has("lavis_gelu_f2", "Qformer.bert.embeddings.word_embeddings.weight"));
    assert!(!qformer_tests::weights("lavis_gelu_f2").config.has_text());
    let dir = copy_case("lavis_gelu_f2");
    rewrite_safetensors(&dir.path().join("model.safetensors"), |l| {
        for t in l.iter_mut() {
            if let Some(rest) = t.0.strip_prefix("llama_proj.") {
                t.0 = format!("llm_proj.{rest}");
            }
        }
    });
    let e = load_err(dir.path(), &load_options("lavis_gelu_f2"));
    assert!(e.contains("InstructBLIP checkpoint") && e.contains("qformer_tokenizer"), "{e}");
}

fn fixture_has(case: &str, tensor: &str) -> bool {
    let bytes = std::fs::read(fixture(case).join("model.safetensors")).unwrap();
    safetensors::SafeTensors::deserialize(&bytes).unwrap().tensor(tensor).is_ok()
}

/// `config.json` of a copy of hf_relu_f1 with `from` replaced by `to`; the load error.
fn config_err(from: &str, to: &str) -> String {
    let dir = copy_case("hf_relu_f1");
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains(from), "fixture config lacks {from}");
    std::fs::write(&cfg, text.replace(from, to)).unwrap();
    load_err(dir.path(), &LoadOptions::default())
}

#[test]
fn config_values_out_of_range_are_refused_by_name() {
    // Each was accepted without a word (issue 13): replaced by a default, ignored, or
    // turned into a blob that accepts one image token.
    for (from, to, want) in [
        ("\"hidden_act\": \"relu\"", "\"hidden_act\": \"swish\"", "hidden_act \"swish\" is not supported"),
        ("\"hidden_act\": \"relu\"", "\"hidden_act\": 5", "\"hidden_act\" must be a string"),
        ("\"hidden_act\": \"relu\"", "\"hidden_act\": null", "\"hidden_act\" must be a string"),
        ("\"layer_norm_eps\": 1e-12", "\"layer_norm_eps\": \"nan\"", "\"layer_norm_eps\" must be a number"),
        ("\"layer_norm_eps\": 1e-12", "\"layer_norm_eps\": 2.5", "layer_norm_eps 2.5 is out of range"),
        ("\"layer_norm_eps\": 1e-12", "\"layer_norm_eps\": -0.001", "layer_norm_eps -0.001 is out of range"),
        ("\"layer_norm_eps\": 1e-12", "\"layer_norm_eps\": 0", "layer_norm_eps 0 is out of range"),
        ("\"layer_norm_eps\": 1e-12", "\"layer_norm_eps\": 1e-50", "not round to 0 as f32"),
        ("\"encoder_hidden_size\": 24", "\"encoder_hidden_size\": 0", "\"encoder_hidden_size\" = 0 is out of range"),
        (
            "\"encoder_hidden_size\": 24",
            "\"encoder_hidden_size\": 1000000000",
            "\"encoder_hidden_size\" = 1000000000 is out of range",
        ),
        (
            "\"encoder_hidden_size\": 24",
            "\"encoder_hidden_size\": 25",
            "encoder_hidden_size = 25 disagrees with vision_config.hidden_size = 24",
        ),
        ("\"image_size\": 4", "\"image_size\": 0", "\"image_size\" = 0 is out of range"),
        ("\"patch_size\": 2", "\"patch_size\": 0", "\"patch_size\" = 0 is out of range"),
        ("\"patch_size\": 2", "\"patch_size\": 1000000", "patch_size 1000000 is larger than image_size 4"),
        ("\"hidden_size\": 32", "\"hidden_size\": null", "\"hidden_size\" is null"),
    ] {
        let e = config_err(from, to);
        assert!(e.contains(want) && e.contains("config.json"), "{to}: {e}");
    }
}

#[test]
fn shard_paths_outside_the_checkpoint_folder_are_refused() {
    let dir = copy_case("hf_sharded_gelu_f2_proj");
    let index = dir.path().join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).unwrap();
    for evil in ["../../../../etc/passwd", "/dev/zero", "sub/model-00001-of-00002.safetensors", ".."] {
        let edited = text.replace("model-00001-of-00002.safetensors", evil);
        assert_ne!(edited, text);
        std::fs::write(&index, edited).unwrap();
        let e = load_err(dir.path(), &LoadOptions::default());
        assert!(e.contains("is not a file name in the checkpoint folder") && e.contains(evil), "{evil}: {e}");
    }
}

#[test]
fn special_files_get_their_own_reason() {
    // A character device as the checkpoint said "does not exist".
    let e = load_err(std::path::Path::new("/dev/zero"), &LoadOptions::default());
    assert!(e.contains("/dev/zero") && e.contains("(it is a character device)"), "{e}");
    // A FIFO config.json beside the weights said "no config.json beside"; it must not
    // block either (nothing writes to it).
    let dir = copy_case("hf_relu_f1");
    let cfg = dir.path().join("config.json");
    std::fs::remove_file(&cfg).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(&cfg).status().unwrap().success());
    let e = load_err(dir.path(), &LoadOptions::default());
    assert!(e.contains("config.json is not a regular file (it is a FIFO)"), "{e}");
    // Given with --config, the same.
    let opts = LoadOptions { config: Some(cfg.clone()), ..LoadOptions::default() };
    let e = load_err(dir.path(), &opts);
    assert!(e.contains("config.json is not a regular file (it is a FIFO)"), "{e}");
    // A FIFO shard.
    let dir = copy_case("hf_relu_f1");
    let shard = dir.path().join("model.safetensors");
    std::fs::remove_file(&shard).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(&shard).status().unwrap().success());
    let e = load_err(dir.path(), &LoadOptions::default());
    assert!(e.contains("model.safetensors is not a regular file (it is a FIFO)"), "{e}");
}

#[test]
fn checkpoint_truncated_after_opening_is_an_error_not_a_crash() {
    // Shards used to be memory-mapped: truncating one during quantize killed it with SIGBUS.
    let dir = copy_case("hf_relu_f1");
    let path = dir.path().join("model.safetensors");
    let ck = checkpoint::Checkpoint::open(dir.path(), None).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 3).unwrap();
    let e = format!("{:#}", checkpoint::load_from(&ck, &LoadOptions::default()).expect_err("truncated"));
    assert!(e.contains("model.safetensors") && e.contains("file ends before the tensor's data"), "{e}");
}

#[test]
fn npy_dtypes_are_named_in_words_and_float16_is_read() {
    let e = format!("{:#}", read_npy(&npy("<i4", false, "(2, 2)", &[0; 16])).unwrap_err());
    assert!(e.contains("dtype int32 ('<i4') is not supported (float32, float16 or float64)"), "{e}");
    assert!(!e.contains("TypeStr") && !e.contains("Plain"), "{e}");
    let e = format!("{:#}", read_npy(&npy("|b1", false, "(2, 2)", &[0; 4])).unwrap_err());
    assert!(e.contains("dtype bool"), "{e}");
    let values = [0.5f32, -2.0, 1024.0, 0.333];
    let f16_bytes: Vec<u8> = values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
    let got = read_npy(&npy("<f2", false, "(2, 2)", &f16_bytes)).unwrap();
    let want: Vec<f32> = values.iter().map(|v| half::f16::from_f32(*v).to_f32()).collect();
    assert_eq!((got.tokens, got.dim, got.data), (2, 2, want));
}

#[test]
fn inputs_that_are_not_regular_files_are_refused() {
    // `--input /dev/zero` read until the OOM killer came.
    let e = format!("{:#}", qformer_std::io::read_images(std::path::Path::new("/dev/zero")).unwrap_err());
    assert!(e.contains("/dev/zero is not a regular file (it is a character device)"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("in.npy");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let e = format!("{:#}", qformer_std::io::read_images(&fifo).unwrap_err());
    assert!(e.contains("is not a regular file (it is a FIFO)"), "{e}");
}

#[test]
fn inputs_larger_than_memory_are_refused_before_reading() {
    // A sparse file: no disk space used, and the read must not even start.
    let Some(avail) = qformer_std::files::available_memory() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.safetensors");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(avail + (1 << 30)).unwrap();
    let t = std::time::Instant::now();
    let e = format!("{:#}", qformer_std::io::read_images(&path).unwrap_err());
    assert!(e.contains("bytes of memory available"), "{e}");
    assert!(t.elapsed().as_secs() < 5, "it read the file");
}

/// A finite f32 weight beyond fp16's range would become infinity in an fp16 blob (which the
/// reader refuses): the writer says so, naming the tensor, and int8 and f32 still work.
#[test]
fn weights_beyond_fp16_range_are_refused_for_fp16_only() {
    use qformer_core::Precision;
    use qformer_std::writer::{build_blob, BlobOptions};
    let mut w = weights("hf_relu_f1");
    let t = w.tensors.iter_mut().find(|t| t.role.is_matrix()).expect("a matrix");
    t.data[3] = 1.0e6;
    let err = format!("{:#}", build_blob(&w, BlobOptions::new(Precision::F16), || {}).expect_err("fp16 must fail"));
    assert!(err.contains("value 3 (1000000) is beyond fp16's range"), "{err}");
    for p in [Precision::F32, Precision::Int8] {
        let blob = build_blob(&w, BlobOptions::new(p), || {}).expect("f32 and int8 store it");
        let copy = qformer_std::runtime::BlobBytes::copy(&blob);
        qformer_core::Model::from_blob(copy.bytes()).expect("and it validates");
    }
}
