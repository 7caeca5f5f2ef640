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

#[test]
fn instructblip_names_load_like_blip2() {
    // InstructBLIP's Q-Former keeps its input LayerNorm under `embeddings.layernorm` and has
    // word/position embeddings and text-side layers the query path does not use.
    let dir = copy_case("hf_relu_f1");
    rewrite_safetensors(&dir.path().join("model.safetensors"), |l| {
        for t in l.iter_mut() {
            if let Some(rest) = t.0.strip_prefix("qformer.layernorm.") {
                t.0 = format!("qformer.embeddings.layernorm.{rest}");
            }
        }
        let f32_bytes = |n: usize| vec![0u8; 4 * n];
        l.push((
            "qformer.embeddings.word_embeddings.weight".into(),
            safetensors::Dtype::F32,
            vec![10, 32],
            f32_bytes(320),
        ));
        l.push((
            "qformer.encoder.layer.0.intermediate.dense.weight".into(),
            safetensors::Dtype::F32,
            vec![64, 32],
            f32_bytes(2048),
        ));
    });
    let blip2 = weights("hf_relu_f1");
    let instruct = checkpoint::load(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(instruct, blip2);
}
