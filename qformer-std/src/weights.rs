//! A Q-Former's tensors in memory, f32, in the blob's canonical order.

use anyhow::{bail, Result};
use qformer_core::blob::{self, Role};
use qformer_core::tokenizer::TokenizerOptions;
use qformer_core::{Config, DType, Precision};

/// One tensor: `[rows, cols]` row-major f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// What it is.
    pub role: Role,
    /// Its layer (0 outside the layers).
    pub layer: u16,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// `rows * cols` values.
    pub data: Vec<f32>,
}

/// Config plus every tensor, `tensors[i]` being table slot `i` ([`blob::slot`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    /// The config.
    pub config: Config,
    /// The tensors in canonical order. The vocabulary's tables (not f32) have empty `data`:
    /// their contents are in [`Weights::vocab`].
    pub tensors: Vec<Tensor>,
    /// InstructBLIP: the tokenizer (vocabulary tables and options); `None` without text parts.
    pub vocab: Option<VocabTables>,
}

/// A vocabulary as the blob stores it (see `qformer_core::tokenizer::Vocab`).
#[derive(Clone, Debug, PartialEq)]
pub struct VocabTables {
    /// Every token's bytes, in id order.
    pub text: Vec<u8>,
    /// `V + 1` offsets into `text`.
    pub offsets: Vec<u32>,
    /// The ids in the order of their tokens' bytes.
    pub sorted: Vec<u32>,
    /// What the tokenizer does.
    pub options: TokenizerOptions,
}

impl VocabTables {
    /// The bytes of the table of `role` (one of the `Vocab*` roles).
    pub fn bytes(&self, role: Role) -> &[u8] {
        match role {
            Role::VocabText => &self.text,
            Role::VocabOffsets => bytemuck::cast_slice(&self.offsets),
            _ => bytemuck::cast_slice(&self.sorted),
        }
    }
}

/// Whether `role`'s tensor holds f32 values in [`Tensor::data`] (all but the vocabulary's).
pub fn holds_values(role: Role) -> bool {
    matches!(role.dtype(Precision::F32), DType::F32)
}

/// The Hugging Face key of `role` in `layer`, as a `String`.
pub fn hf_name(role: Role, layer: u16) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = role.write_name(&mut s, layer);
    s
}

impl Weights {
    /// Checks that `tensors` follow the canonical order with the config's shapes.
    pub fn new(config: Config, tensors: Vec<Tensor>, vocab: Option<VocabTables>) -> Result<Weights> {
        config.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        let count = blob::tensor_count(&config) as usize;
        if tensors.len() != count {
            bail!("{} tensors given, the config implies {count}", tensors.len());
        }
        for (i, t) in tensors.iter().enumerate() {
            let (role, layer) = blob::slot(&config, i as u32).expect("index below tensor_count");
            let [r, c] = role.shape(&config);
            if t.role != role || t.layer != layer {
                bail!("tensor {i} is {} but should be {}", hf_name(t.role, t.layer), hf_name(role, layer));
            }
            let values = if holds_values(role) { t.rows * t.cols } else { 0 };
            if (t.rows, t.cols) != (r as usize, c as usize) || t.data.len() != values {
                bail!(
                    "{} has shape [{}, {}] ({} values), expected [{r}, {c}]",
                    hf_name(role, layer),
                    t.rows,
                    t.cols,
                    t.data.len()
                );
            }
        }
        match &vocab {
            Some(v) => {
                let tables = qformer_core::tokenizer::Vocab::new(&v.text, &v.offsets, &v.sorted);
                let tables = tables.map_err(|e| anyhow::anyhow!("the vocabulary is inconsistent: {e}"))?;
                if tables.len() != config.vocab_size as usize || v.text.len() != config.vocab_bytes as usize {
                    bail!(
                        "the vocabulary has {} tokens of {} bytes, the config says {} of {}",
                        tables.len(),
                        v.text.len(),
                        config.vocab_size,
                        config.vocab_bytes
                    );
                }
            }
            None if config.has_text() => bail!("the config has text parts but no vocabulary is given"),
            None => {}
        }
        Ok(Weights { config, tensors, vocab })
    }

    /// The tensor of `role` in `layer`.
    ///
    /// # Panics
    /// If the config has no such tensor (a programming error: callers ask for tensors the
    /// config implies).
    pub fn get(&self, role: Role, layer: u16) -> &Tensor {
        let i = blob::index_of(&self.config, role, layer)
            .unwrap_or_else(|| panic!("config has no tensor {}", hf_name(role, layer)));
        &self.tensors[i as usize]
    }

    /// Number of parameters.
    pub fn parameters(&self) -> usize {
        self.tensors.iter().map(|t| t.data.len()).sum()
    }
}

/// Writes `w` as a Hugging Face BLIP-2 checkpoint directory: `config.json` (a
/// `Blip2Config` with the fields this project reads) and `model.safetensors` with
/// Hugging Face key names, so `quantize` and `verify` read it like a downloaded one. With
/// text parts it is an InstructBLIP directory instead (`InstructBlipConfig`, the Q-Former's
/// `qformer.embeddings.*` and text feed-forward, and `qformer_tokenizer/` with `vocab.txt`).
/// `max_image_tokens - 1` must be a square (the vision encoder's patch grid).
pub fn save_hf_checkpoint(w: &Weights, dir: &std::path::Path) -> Result<()> {
    use anyhow::Context;
    let c = &w.config;
    let grid = ((c.max_image_tokens - 1) as f64).sqrt().round() as u32;
    if grid * grid + 1 != c.max_image_tokens {
        bail!("max_image_tokens {} is not a square patch grid plus one", c.max_image_tokens);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = c.has_text();
    let mut config = serde_json::json!({
        "architectures": [if text { "InstructBlipForConditionalGeneration" } else { "Blip2ForConditionalGeneration" }],
        "model_type": if text { "instructblip" } else { "blip-2" },
        "num_query_tokens": c.num_queries,
        "qformer_config": {
            "model_type": if text { "instructblip_qformer" } else { "blip_2_qformer" },
            "hidden_size": c.hidden,
            "num_hidden_layers": c.num_layers,
            "num_attention_heads": c.num_heads,
            "intermediate_size": c.intermediate,
            "hidden_act": c.activation.name(),
            "layer_norm_eps": c.layer_norm_eps,
            "cross_attention_frequency": c.cross_attention_frequency,
            "encoder_hidden_size": c.encoder_hidden,
        },
        "vision_config": { "hidden_size": c.encoder_hidden, "image_size": grid * 14, "patch_size": 14 },
        "text_config": { "hidden_size": if c.projection_dim > 0 { c.projection_dim } else { 2560 } },
    });
    if let Some(v) = w.vocab.as_ref().filter(|_| text) {
        config["qformer_config"]["vocab_size"] = c.vocab_size.into();
        config["qformer_config"]["max_position_embeddings"] = c.max_text_tokens.into();
        let tokenizer = dir.join("qformer_tokenizer");
        std::fs::create_dir_all(&tokenizer).with_context(|| format!("cannot create {}", tokenizer.display()))?;
        let table = qformer_core::tokenizer::Vocab::new(&v.text, &v.offsets, &v.sorted)
            .map_err(|e| anyhow::anyhow!("the vocabulary is inconsistent: {e}"))?;
        let lines: String = (0..table.len() as u32).map(|i| format!("{}\n", table.token(i).unwrap_or(""))).collect();
        crate::write_atomic(&tokenizer.join("vocab.txt"), lines.as_bytes())?;
        let o = &v.options;
        let tc = serde_json::json!({
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": o.lowercase,
            "strip_accents": if o.strip_accents == o.lowercase { serde_json::Value::Null } else { o.strip_accents.into() },
            "truncation_side": if o.truncate_left { "left" } else { "right" },
            "cls_token": table.token(o.cls),
            "sep_token": table.token(o.sep),
            "unk_token": table.token(o.unk),
            "pad_token": table.token(o.pad),
        });
        let tc = serde_json::to_string_pretty(&tc).context("encode tokenizer config")?;
        crate::write_atomic(&tokenizer.join("tokenizer_config.json"), tc.as_bytes())?;
    }
    let text = serde_json::to_string_pretty(&config).context("encode config")?;
    crate::write_atomic(&dir.join("config.json"), text.as_bytes())?;
    // The vocabulary's tables are the tokenizer's files, not tensors.
    let tensors: Vec<&Tensor> = w.tensors.iter().filter(|t| holds_values(t.role)).collect();
    let names: Vec<String> = tensors
        .iter()
        .map(|t| match t.role {
            // InstructBLIP's name for the input LayerNorm.
            Role::InputNormWeight if c.has_text() => "qformer.embeddings.layernorm.weight".into(),
            Role::InputNormBias if c.has_text() => "qformer.embeddings.layernorm.bias".into(),
            _ => hf_name(t.role, t.layer),
        })
        .collect();
    let shapes: Vec<Vec<usize>> = tensors
        .iter()
        .map(|t| match t.role {
            Role::QueryTokens => vec![1, t.rows, t.cols],
            _ if t.rows == 1 => vec![t.cols],
            _ => vec![t.rows, t.cols],
        })
        .collect();
    let list: Vec<(&str, Vec<usize>, &[f32])> =
        tensors.iter().enumerate().map(|(i, t)| (names[i].as_str(), shapes[i].clone(), t.data.as_slice())).collect();
    crate::io::write_tensors(&dir.join("model.safetensors"), &list)
}
