//! Checkpoint loading: real layouts load, and every inconsistency is an error naming the
//! file, tensor and shapes.

use qformer_std::checkpoint::{self, LoadOptions};
use qformer_tests::{copy_case, fixture, load_options, rewrite_safetensors, weights};

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
