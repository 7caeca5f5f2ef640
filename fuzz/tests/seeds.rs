//! Writes the seed corpora under `fuzz/corpus/<target>/` (deterministic: re-running it
//! rewrites the same bytes). Run with
//! `cd fuzz && cargo +nightly test --test seeds -- --ignored`.

use std::path::{Path, PathBuf};

use qformer_core::blob::{CHECKSUM_OFFSET, HEADER_BYTES};
use qformer_core::{Activation, Config, Precision};
use qformer_std::synth::Spec;
use qformer_std::writer::{build_blob, BlobOptions};
use qformer_tests::{fixture, npy, tiny_blob};

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn read(case: &str, file: &str) -> Vec<u8> {
    std::fs::read(fixture(case).join(file)).unwrap()
}

/// A second shape of model: no projection, cross-attention in every layer, one head, relu,
/// int8 group 16, fewer queries than image tokens.
const SMALL: Config = Config {
    num_layers: 1,
    hidden: 16,
    num_heads: 1,
    intermediate: 48,
    cross_attention_frequency: 1,
    encoder_hidden: 20,
    num_queries: 3,
    max_image_tokens: 5,
    projection_dim: 0,
    activation: Activation::Relu,
    layer_norm_eps: 1e-6,
    max_text_tokens: 0,
    vocab_size: 0,
    vocab_bytes: 0,
};

/// A checkpoint_load input carrying its own config.
fn with_config(config: &[u8], safetensors: &[u8], flags: u8) -> Vec<u8> {
    let mut v = vec![flags & !1];
    v.extend_from_slice(&(config.len() as u16).to_le_bytes());
    v.extend_from_slice(config);
    v.extend_from_slice(safetensors);
    v
}

#[test]
#[ignore = "writes the seed corpora into the source tree"]
fn write_seed_corpora() {
    // blob_parse: a valid blob of each precision, another shape, and truncations.
    let dir = corpus("blob_parse");
    let int8 = tiny_blob(Precision::Int8);
    put(&dir, "tiny_int8.qfb", &int8);
    put(&dir, "tiny_fp16.qfb", &tiny_blob(Precision::F16));
    put(&dir, "tiny_f32.qfb", &tiny_blob(Precision::F32));
    let small = Spec::textured(SMALL, 11).build();
    put(
        &dir,
        "small_int8_g16.qfb",
        &build_blob(&small, BlobOptions { precision: Precision::Int8, group: 16 }, || {}).unwrap(),
    );
    put(&dir, "small_f32.qfb", &build_blob(&small, BlobOptions::new(Precision::F32), || {}).unwrap());
    // InstructBLIP: text parts (embeddings, text feed-forward, the vocabulary's tables).
    let instruct = Spec::textured(qformer_std::synth::with_text(SMALL, 6, qformer_std::synth::word_count()), 12).build();
    put(&dir, "small_instruct_int8.qfb", &build_blob(&instruct, BlobOptions::new(Precision::Int8), || {}).unwrap());
    let data_offset = u32::from_le_bytes(int8[32..36].try_into().unwrap()) as usize;
    put(&dir, "trunc_header.qfb", &int8[..HEADER_BYTES]);
    put(&dir, "trunc_table.qfb", &int8[..data_offset]);
    put(&dir, "trunc_half.qfb", &int8[..int8.len() / 2]);
    put(&dir, "trunc_short.qfb", &int8[..HEADER_BYTES - 1]);
    let mut stale = int8.clone();
    stale[CHECKSUM_OFFSET] ^= 1;
    put(&dir, "stale_crc.qfb", &stale);

    // blob_mutated: flags byte, optional cut length, then (u16 offset, xor) mutations.
    let dir = corpus("blob_mutated");
    put(&dir, "int8", &[0]);
    put(&dir, "fp16", &[1]);
    put(&dir, "f32", &[2]);
    let mutation = |flags: u8, at: u16, x: u8| {
        let mut v = vec![flags];
        v.extend_from_slice(&at.to_le_bytes());
        v.push(x);
        v
    };
    put(&dir, "int8_layers", &mutation(8, 44, 1)); // num_layers 2 -> 3
    put(&dir, "fp16_heads", &mutation(9, 52, 1)); // num_heads 4 -> 5
    put(&dir, "int8_entry_offset", &mutation(8, (HEADER_BYTES + 32 * 3 + 16) as u16, 0x10));
    put(&dir, "f32_weight_byte", &mutation(2, (data_offset + 7) as u16, 0x7f));
    put(&dir, "int8_stale_crc", &mutation(4, 200, 1));
    put(&dir, "int8_cut", &[16, 0x00, 0x10]);

    // checkpoint_load: flags byte (bit 0: the hf_relu_f1 config), then the safetensors.
    let dir = corpus("checkpoint_load");
    let mut relu = vec![1u8];
    relu.extend_from_slice(&read("hf_relu_f1", "model.safetensors"));
    put(&dir, "hf_relu_f1", &relu);
    put(&dir, "hf_bf16_fp16", &with_config(&read("hf_bf16", "config.json"), &read("hf_bf16", "model.safetensors"), 8));
    put(
        &dir,
        "lavis_gelu_f2_f32",
        &with_config(
            &read("lavis_gelu_f2", "qformer_config.json"),
            &read("lavis_gelu_f2", "model.safetensors"),
            16 | 2,
        ),
    );
    let tmp = tempfile::tempdir().unwrap();
    let small_hf = tmp.path().join("small");
    qformer_std::weights::save_hf_checkpoint(&small, &small_hf).unwrap();
    put(
        &dir,
        "small_hf",
        &with_config(
            &std::fs::read(small_hf.join("config.json")).unwrap(),
            &std::fs::read(small_hf.join("model.safetensors")).unwrap(),
            0,
        ),
    );
    let mut io = vec![1u8];
    io.extend_from_slice(&read("hf_relu_f1", "io.safetensors"));
    put(&dir, "image_embeds_safetensors", &io);
    let values: Vec<u8> = (0..2 * 3 * 4).flat_map(|i| (i as f32 * 0.25 - 1.0).to_le_bytes()).collect();
    let mut n = vec![1u8];
    n.extend_from_slice(&npy("<f4", false, "(2, 3, 4)", &values));
    put(&dir, "image_embeds_f32_npy", &n);
    let values: Vec<u8> = (0..3 * 4).flat_map(|i| (i as f64 * 0.5).to_le_bytes()).collect();
    let mut n = vec![1u8];
    n.extend_from_slice(&npy("<f8", false, "(3, 4)", &values));
    put(&dir, "image_embeds_f64_npy", &n);

    // tokenize: flags byte (bit 0 lowercase, bit 1 strip accents, bits 2-7 output length - 2),
    // then the text.
    let dir = corpus("tokenize");
    let texts = [
        "What is in the image?",
        "Café déjà vu, naïve Ångström",
        "图片里有什么？ 東京タワー ひらがな 안녕하세요",
        "family 👨\u{200d}👩\u{200d}👧 thumbs 👍🏽",
        "nul\u{0}ctl\u{1}\u{7f} repl\u{fffd} zw\u{200b}sp nb\u{a0}sp id\u{3000}sp ls\u{2028}",
        "ΟΔΟΣ ΑΣ'Β Α'Σ İstanbul Straße ﬁnance Ｆｕｌｌ",
        "hello[SEP]world [MASK] [sep] [SE\u{0}P] [DEC] [DE\u{0}C] x[CLS][CLS]y",
        "e\u{301}\u{323}\u{307}\u{345} q\u{307}\u{323} \u{1100}\u{1161}\u{11a8} \u{f900} \u{212a}",
        "3.14 https://example.com/a?b=1&c=d user@example.com (a)[b]{c}",
        "supercalifragilisticexpialidocious xqzvbnm",
    ];
    for (i, text) in texts.iter().enumerate() {
        let mut v = vec![[3u8, 1, 2, 0, 4 << 2 | 3][i % 5]];
        v.extend_from_slice(text.as_bytes());
        put(&dir, &format!("text_{i}"), &v);
    }
    let mut long = vec![3u8 | 30 << 2];
    long.extend_from_slice("a".repeat(101).as_bytes());
    long.extend_from_slice(" one two three".repeat(20).as_bytes());
    long.extend_from_slice("\u{301}".repeat(40).as_bytes());
    put(&dir, "long_word_and_marks", &long);
}
