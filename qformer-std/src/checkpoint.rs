//! Reads a Q-Former out of a Hugging Face or LAVIS safetensors checkpoint.
//!
//! Accepted layouts:
//! * a directory with `config.json` and `model.safetensors`, or sharded
//!   `model-0000k-of-0000n.safetensors` listed in `model.safetensors.index.json`;
//! * a single `.safetensors` file, with the config given separately.
//!
//! Only each shard's safetensors header and the Q-Former tensors (plus `query_tokens` and
//! the language projection) are read, with ordinary reads (no mapping: a shard truncated
//! while it is read is an error, not a SIGBUS); the vision encoder and the language model
//! are never touched. Tensor names in Hugging Face (BLIP-2) and LAVIS (BLIP-2, MiniGPT-4)
//! spelling are recognised; f32, f16, bf16 and f64 tensors are converted to f32.
//! InstructBLIP checkpoints (transformers' `InstructBlipForConditionalGeneration`, LAVIS's
//! `blip2_vicuna_instruct` / `blip2_t5_instruct`) also give their text parts: word and
//! position embeddings, every layer's text-side feed-forward, and the Q-Former tokenizer's
//! vocabulary (`qformer_tokenizer/` beside the weights, or `LoadOptions::tokenizer`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use qformer_core::blob::{self, Role};
use qformer_core::{Activation, Config};
use safetensors::tensor::Metadata;
use safetensors::Dtype;
use serde_json::Value;

use crate::files::{self, OsError};
use crate::vocab::TokenizerSpec;
use crate::weights::{hf_name, holds_values, Tensor, VocabTables, Weights};

/// How to read a checkpoint.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Config file (`config.json` of BLIP-2, or a bare Q-Former config);
    /// default: `config.json` beside the weights.
    pub config: Option<PathBuf>,
    /// Largest number of image tokens to plan for; default: from `vision_config`
    /// (`(image_size / patch_size)^2 + 1`), else 257.
    pub max_image_tokens: Option<u32>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// InstructBLIP: the Q-Former tokenizer's directory (`vocab.txt`, `tokenizer_config.json`);
    /// default: `qformer_tokenizer/` beside the weights.
    pub tokenizer: Option<PathBuf>,
    /// InstructBLIP: the most instruction tokens to plan for (T_max); default: 128 (LAVIS's
    /// `max_txt_len`), or the position table's length if shorter.
    pub max_text_tokens: Option<u32>,
}

/// T_max when none is asked for: LAVIS InstructBLIP's `max_txt_len`.
pub const DEFAULT_MAX_TEXT_TOKENS: u32 = 128;

/// Spelling of the tensor names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// Hugging Face transformers (`...attention.attention.query...`).
    HuggingFace,
    /// LAVIS / MiniGPT-4 (`Qformer.bert...attention.self.query...`).
    Lavis,
}

/// One tensor's place in a shard: shape, dtype and byte range in its data section.
struct Located {
    shard: usize,
    shape: Vec<usize>,
    dtype: Dtype,
    bytes: std::ops::Range<usize>,
}

struct Shard {
    path: PathBuf,
    file: File,
    /// File offset of the data section (8 + header length).
    data_start: u64,
}

/// The open files of a checkpoint and where each tensor lives.
pub struct Checkpoint {
    shards: Vec<Shard>,
    /// Tensor name → where it is, read once from the shard headers at open.
    index: BTreeMap<String, Located>,
    config_path: Option<PathBuf>,
    /// Every file this checkpoint is read from (shards, index, config).
    files: Vec<PathBuf>,
    source: PathBuf,
}

/// safetensors' own limit on the JSON header.
const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Largest config or index file read (real ones are a few KiB).
const MAX_JSON_BYTES: u64 = 64 << 20;

/// Opens a shard and reads its safetensors header, checking that the data section it
/// describes is exactly the rest of the file.
fn open_shard(path: &Path) -> Result<(Shard, Metadata)> {
    let invalid = |why: String| anyhow!("{}: not a valid safetensors file: {why}", path.display());
    let (mut file, len) = files::open_regular(path)?;
    let mut n = [0u8; 8];
    if len < 8 {
        return Err(invalid(format!("{len} bytes, shorter than the 8-byte header length")));
    }
    file.read_exact(&mut n).with_context(|| format!("cannot read {}", path.display()))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_BYTES || n > len - 8 {
        return Err(invalid(format!("header length {n} exceeds the file or safetensors' limit")));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).with_context(|| format!("cannot read the header of {}", path.display()))?;
    let text = std::str::from_utf8(&header).map_err(|e| invalid(format!("header is not UTF-8: {e}")))?;
    let meta: Metadata = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let data_start = 8 + n;
    if data_start + meta.data_len() as u64 != len {
        return Err(invalid(format!(
            "the header describes {} data bytes, the file holds {}",
            meta.data_len(),
            len - data_start
        )));
    }
    Ok((Shard { path: path.to_path_buf(), file, data_start }, meta))
}

/// Whether `name` (a `weight_map` value) is a plain file name, so the shard is a file of
/// the checkpoint folder (links inside it, as in the Hugging Face cache, are followed).
fn plain_file_name(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty()
        && !name.contains(['/', '\\'])
        && matches!(p.components().collect::<Vec<_>>()[..], [std::path::Component::Normal(_)])
}

impl Checkpoint {
    /// Opens `path` (directory or `.safetensors` file) and reads the safetensors headers.
    pub fn open(path: &Path, config: Option<&Path>) -> Result<Checkpoint> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OsError::error(format!("{} does not exist", path.display()), &e),
            _ => OsError::error(format!("cannot open {}: {e}", path.display()), &e),
        })?;
        let mut read_files = Vec::new();
        let (shard_files, default_config) = if meta.is_dir() {
            let index = path.join("model.safetensors.index.json");
            let single = path.join("model.safetensors");
            let shard_files = if std::fs::symlink_metadata(&index).is_ok() {
                let bytes = files::read_bounded(&index, MAX_JSON_BYTES, "the limit for an index file")?;
                read_files.push(index.clone());
                let v: Value =
                    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", index.display()))?;
                let map = v
                    .get("weight_map")
                    .and_then(Value::as_object)
                    .ok_or_else(|| anyhow!("{} has no \"weight_map\" object", index.display()))?;
                let mut shard_files: Vec<PathBuf> = Vec::new();
                for f in map.values() {
                    let name = f
                        .as_str()
                        .ok_or_else(|| anyhow!("{}: weight_map values must be file names", index.display()))?;
                    if !plain_file_name(name) {
                        bail!(
                            "{}: shard {name:?} is not a file name in the checkpoint folder (weight_map values name files beside the index)",
                            index.display()
                        );
                    }
                    let p = path.join(name);
                    if !shard_files.contains(&p) {
                        shard_files.push(p);
                    }
                }
                shard_files.sort();
                shard_files
            } else if std::fs::symlink_metadata(&single).is_ok() {
                vec![single]
            } else {
                bail!("{} has neither model.safetensors nor model.safetensors.index.json", path.display());
            };
            (shard_files, path.join("config.json"))
        } else if meta.is_file() {
            let dir = path.parent().unwrap_or(Path::new("."));
            (vec![path.to_path_buf()], dir.join("config.json"))
        } else {
            bail!(
                "{} is neither a checkpoint directory nor a .safetensors file (it is {})",
                path.display(),
                files::kind(&meta.file_type())
            );
        };
        let config_path = match config {
            Some(c) => Some(c.to_path_buf()),
            // A config.json that exists but is no regular file is an error, not "absent".
            None if std::fs::symlink_metadata(&default_config).is_ok() => {
                files::require_regular(&default_config)?;
                Some(default_config)
            }
            None => None,
        };
        read_files.extend(config_path.iter().cloned());
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for (i, file) in shard_files.iter().enumerate() {
            let (shard, meta) = open_shard(file)?;
            for (name, info) in meta.tensors() {
                let located = Located {
                    shard: i,
                    shape: info.shape.clone(),
                    dtype: info.dtype,
                    bytes: info.data_offsets.0..info.data_offsets.1,
                };
                if let Some(prev) = index.insert(name.clone(), located) {
                    bail!("tensor {name} appears in both {} and {}", shard_files[prev.shard].display(), file.display());
                }
            }
            read_files.push(file.clone());
            shards.push(shard);
        }
        Ok(Checkpoint { shards, index, config_path, files: read_files, source: path.to_path_buf() })
    }

    /// Every file the checkpoint is read from: shards, index and config. An output must not
    /// be one of them.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(PathBuf::as_path)
    }

    /// All tensor names.
    pub fn names(&self) -> impl Iterator<Item = &str> + Clone {
        self.index.keys().map(String::as_str)
    }

    fn locate(&self, name: &str) -> Result<&Located> {
        self.index.get(name).ok_or_else(|| anyhow!("tensor {name} is missing from {}", self.source.display()))
    }

    /// Shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.locate(name)?.shape.clone())
    }

    /// Tensor `name` converted to f32, with its shape. Reads its bytes from the file now: a
    /// file shortened since it was opened is an error naming it.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.locate(name)?;
        let shard = &self.shards[t.shard];
        let mut bytes = vec![0u8; t.bytes.len()];
        let mut f = &shard.file;
        f.seek(SeekFrom::Start(shard.data_start + t.bytes.start as u64))
            .and_then(|_| f.read_exact(&mut bytes))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => anyhow!(
                    "{}: tensor {name}: the file ends before the tensor's data (shortened while being read?)",
                    shard.path.display()
                ),
                _ => anyhow!("{}: tensor {name}: cannot read: {e}", shard.path.display()),
            })?;
        Ok((
            t.shape.clone(),
            to_f32(&bytes, t.dtype).with_context(|| format!("{}: tensor {name}", shard.path.display()))?,
        ))
    }
}

/// Converts little-endian tensor bytes to f32.
pub fn to_f32(bytes: &[u8], dtype: Dtype) -> Result<Vec<f32>> {
    let words = |n: usize| bytes.chunks_exact(n);
    Ok(match dtype {
        Dtype::F32 => words(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => words(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => words(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::F64 => words(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
        other => bail!("unsupported dtype {other:?} (expected F32, F16, BF16 or F64)"),
    })
}

/// Where the Q-Former's tensors are in a checkpoint.
#[derive(Clone, Debug)]
pub struct Names {
    /// Spelling.
    pub naming: Naming,
    /// Prefix before `encoder.layer.` (e.g. `qformer.` or `Qformer.bert.`).
    pub prefix: String,
    /// Key of the query tokens.
    pub query_tokens: String,
    /// Prefix of the input LayerNorm (`...layernorm`), without `.weight`.
    pub input_norm: String,
    /// Prefix of the language projection, if the checkpoint has one.
    pub projection: Option<String>,
}

const HF_PROBE: &str = "encoder.layer.0.attention.attention.query.weight";
const LAVIS_PROBE: &str = "encoder.layer.0.attention.self.query.weight";
const PROJECTIONS: [&str; 5] = ["language_projection", "opt_proj", "t5_proj", "llm_proj", "llama_proj"];

impl Names {
    /// Finds the Q-Former's tensors among `names`.
    pub fn detect<'n>(names: impl Iterator<Item = &'n str> + Clone, source: &Path) -> Result<Names> {
        let find_suffix = |suffix: &str| {
            names
                .clone()
                .find(|n| {
                    n.ends_with(suffix) && (n.len() == suffix.len() || n[..n.len() - suffix.len()].ends_with('.'))
                })
                .map(str::to_string)
        };
        let (naming, probe, suffix) = if let Some(k) = find_suffix(HF_PROBE) {
            (Naming::HuggingFace, k, HF_PROBE)
        } else if let Some(k) = find_suffix(LAVIS_PROBE) {
            (Naming::Lavis, k, LAVIS_PROBE)
        } else {
            bail!(
                "{}: no Q-Former found (no tensor named like `qformer.{HF_PROBE}` or `Qformer.bert.{LAVIS_PROBE}`)",
                source.display()
            );
        };
        let prefix = probe[..probe.len() - suffix.len()].to_string();
        let query_tokens = if names.clone().any(|n| n == "query_tokens") {
            "query_tokens".to_string()
        } else {
            find_suffix("query_tokens")
                .ok_or_else(|| anyhow!("{}: tensor query_tokens is missing", source.display()))?
        };
        let has = |n: &str| names.clone().any(|k| k == n);
        let candidates: Vec<String> = match naming {
            // BLIP-2: qformer.layernorm; also found as qformer.embeddings.layernorm.
            Naming::HuggingFace => vec![format!("{prefix}layernorm"), format!("{prefix}embeddings.layernorm")],
            Naming::Lavis => vec![format!("{prefix}embeddings.LayerNorm")],
        };
        let input_norm = candidates.iter().find(|c| has(&format!("{c}.weight"))).cloned().ok_or_else(|| {
            anyhow!(
                "{}: the Q-Former's input LayerNorm is missing (looked for {}.weight)",
                source.display(),
                candidates.join(".weight, ")
            )
        })?;
        let projection = PROJECTIONS.iter().find(|p| has(&format!("{p}.weight"))).map(|p| p.to_string());
        Ok(Names { naming, prefix, query_tokens, input_norm, projection })
    }

    /// The checkpoint key of `role` in `layer`.
    pub fn key(&self, role: Role, layer: u16) -> String {
        let hf = hf_name(role, layer);
        match role {
            Role::QueryTokens => self.query_tokens.clone(),
            Role::InputNormWeight => format!("{}.weight", self.input_norm),
            Role::InputNormBias => format!("{}.bias", self.input_norm),
            Role::ProjWeight | Role::ProjBias => {
                let p = self.projection.as_deref().unwrap_or("language_projection");
                format!("{p}.{}", if role == Role::ProjWeight { "weight" } else { "bias" })
            }
            _ => {
                let local = hf.strip_prefix("qformer.").expect("layer tensors start with qformer.");
                let local = match self.naming {
                    Naming::HuggingFace => local.to_string(),
                    Naming::Lavis => local.replace("attention.attention.", "attention.self."),
                };
                format!("{}{local}", self.prefix)
            }
        }
    }
}

/// Q-Former fields of a config file with Hugging Face's defaults for absent ones
/// (`save_pretrained` omits fields equal to the default).
fn config_from_json(v: &Value, path: &Path) -> Result<(Config, Option<u32>)> {
    let (qf, top) = match v.get("qformer_config") {
        Some(q) => (q, Some(v)),
        None if v.get("hidden_size").is_some()
            || v.get("model_type").and_then(Value::as_str) == Some("blip_2_qformer") =>
        {
            (v, None)
        }
        None => bail!("{}: neither a BLIP-2 config (no \"qformer_config\") nor a Q-Former config", path.display()),
    };
    let int = |obj: &Value, key: &str, default: u64| -> Result<u32> {
        match obj.get(key) {
            None => Ok(default as u32),
            Some(Value::Null) => {
                bail!("{}: \"{key}\" is null; give a number, or leave it out for the default {default}", path.display())
            }
            Some(x) => x
                .as_u64()
                .filter(|&n| n <= u32::MAX as u64)
                .map(|n| n as u32)
                .ok_or_else(|| anyhow!("{}: \"{key}\" must be a non-negative integer, found {x}", path.display())),
        }
    };
    let act = match qf.get("hidden_act") {
        None => Activation::Gelu,
        Some(Value::String(name)) => match name.as_str() {
            "gelu" => Activation::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => bail!(
                "{}: hidden_act \"{other}\" is not supported (gelu, gelu_pytorch_tanh, gelu_new, gelu_fast, relu)",
                path.display()
            ),
        },
        Some(other) => bail!("{}: \"hidden_act\" must be a string such as \"gelu\", found {other}", path.display()),
    };
    let eps = match qf.get("layer_norm_eps") {
        None => 1e-12,
        Some(Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            // The f32 the runtime uses must still be positive (1e-50 is not).
            if !(v > 0.0 && v < 1.0 && (v as f32) > 0.0) {
                bail!(
                    "{}: layer_norm_eps {n} is out of range (it must be above 0, below 1, and not round to 0 as f32)",
                    path.display()
                );
            }
            v as f32
        }
        Some(other) => bail!("{}: \"layer_norm_eps\" must be a number such as 1e-12, found {other}", path.display()),
    };
    let dim = |obj: &Value, key: &str, default: u64| -> Result<u32> {
        let v = int(obj, key, default)?;
        if v == 0 || v > qformer_core::config::MAX_DIM {
            bail!("{}: \"{key}\" = {v} is out of range (1 to {})", path.display(), qformer_core::config::MAX_DIM);
        }
        Ok(v)
    };
    let mut encoder_hidden = dim(qf, "encoder_hidden_size", 1408)?;
    let mut max_tokens = None;
    let mut num_queries = 0;
    if let Some(top) = top {
        num_queries = int(top, "num_query_tokens", 32)?;
        if let Some(vc) = top.get("vision_config") {
            // Blip2Config overwrites qformer_config.encoder_hidden_size with this; a config
            // that says two different widths is refused rather than silently resolved.
            let vision_hidden = dim(vc, "hidden_size", 1408)?;
            if qf.get("encoder_hidden_size").is_some() && vision_hidden != encoder_hidden {
                bail!(
                    "{}: qformer_config.encoder_hidden_size = {encoder_hidden} disagrees with vision_config.hidden_size = {vision_hidden} (the image features' width)",
                    path.display()
                );
            }
            encoder_hidden = vision_hidden;
            let image = dim(vc, "image_size", 224)?;
            let patch = dim(vc, "patch_size", 14)?;
            if patch > image {
                bail!(
                    "{}: vision_config patch_size {patch} is larger than image_size {image} (no patch fits)",
                    path.display()
                );
            }
            let side = image / patch;
            let tokens = side.checked_mul(side).and_then(|t| t.checked_add(1)).ok_or_else(|| {
                anyhow!(
                    "{}: vision_config image_size {image} / patch_size {patch} gives more image tokens than fit in u32",
                    path.display()
                )
            })?;
            max_tokens = Some(tokens);
        }
    }
    let config = Config {
        num_layers: int(qf, "num_hidden_layers", 12)?,
        hidden: int(qf, "hidden_size", 768)?,
        num_heads: int(qf, "num_attention_heads", 12)?,
        intermediate: int(qf, "intermediate_size", 3072)?,
        cross_attention_frequency: int(qf, "cross_attention_frequency", 2)?,
        encoder_hidden,
        num_queries,
        max_image_tokens: 0,
        projection_dim: 0,
        activation: act,
        layer_norm_eps: eps,
        max_text_tokens: 0,
        vocab_size: 0,
        vocab_bytes: 0,
    };
    Ok((config, max_tokens))
}

fn fmt_shape(s: &[usize]) -> String {
    format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

/// Loads the Q-Former of the checkpoint at `path`.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Weights> {
    let ck = Checkpoint::open(path, opts.config.as_deref())?;
    load_from(&ck, opts)
}

/// Loads the Q-Former of an opened checkpoint.
pub fn load_from(ck: &Checkpoint, opts: &LoadOptions) -> Result<Weights> {
    let names = Names::detect(ck.names(), &ck.source)?;
    let has = |n: &str| ck.index.contains_key(n);
    // Hugging Face's BLIP-2 Q-Former has no text embeddings; InstructBLIP's has. LAVIS keeps
    // them in BLIP-2's stage-1 and MiniGPT-4 checkpoints too (unused by the queries), so
    // there only with an instruction model's language projection (Vicuna's llm_proj, T5's
    // t5_proj).
    let word_embeddings = format!("{}embeddings.word_embeddings.weight", names.prefix);
    let instruct_tensors = has(&word_embeddings)
        && (names.naming == Naming::HuggingFace
            || matches!(names.projection.as_deref(), Some("llm_proj") | Some("t5_proj")));
    let config_path = ck
        .config_path
        .clone()
        .ok_or_else(|| anyhow!("no config.json beside {}; pass the config file with --config", ck.source.display()))?;
    let text = files::read_bounded(&config_path, MAX_JSON_BYTES, "the limit for a config file")?;
    let json: Value =
        serde_json::from_slice(&text).with_context(|| format!("{} is not valid JSON", config_path.display()))?;
    let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("");
    let instruct_arch = json
        .get("architectures")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().filter_map(Value::as_str).any(|a| a.starts_with("InstructBlip")));
    let instruct = instruct_tensors || model_type == "instructblip" || instruct_arch;
    if instruct && !has(&word_embeddings) {
        bail!(
            "{}: {} says this is InstructBLIP, but the checkpoint has no {word_embeddings} (its instruction path)",
            ck.source.display(),
            config_path.display()
        );
    }
    let (mut config, vision_tokens) = config_from_json(&json, &config_path)?;

    // Shapes the config does not carry come from the tensors.
    let qt_shape = ck.shape(&names.query_tokens)?;
    let (qn, qd) = match qt_shape[..] {
        [1, n, d] | [n, d] => (n, d),
        _ => bail!("tensor {} has shape {}, expected [1, N, d]", names.query_tokens, fmt_shape(&qt_shape)),
    };
    if config.num_queries == 0 {
        config.num_queries = qn as u32;
    }
    if let Some(p) = &names.projection {
        let key = format!("{p}.weight");
        let s = ck.shape(&key)?;
        match s[..] {
            [out, _] => config.projection_dim = out as u32,
            _ => bail!("tensor {key} has shape {}, expected [d_llm, d]", fmt_shape(&s)),
        }
    }
    config.max_image_tokens = opts.max_image_tokens.or(vision_tokens).unwrap_or(257);
    let tokenizer = if instruct {
        let spec = load_tokenizer(ck, opts)?;
        let rows = ck.shape(&word_embeddings)?;
        let positions = ck.shape(&names.key(Role::PositionEmbeddings, 0))?;
        let (vocab_rows, position_rows) = match (&rows[..], &positions[..]) {
            ([v, d], [p, d2]) if *d == qd && *d2 == qd => (*v, *p),
            _ => bail!(
                "{word_embeddings} has shape {} and the position embeddings {}, expected [V, {qd}] and [P, {qd}]",
                fmt_shape(&rows),
                fmt_shape(&positions)
            ),
        };
        let t_max = opts.max_text_tokens.unwrap_or(DEFAULT_MAX_TEXT_TOKENS.min(position_rows as u32));
        if t_max < 2 || t_max as usize > position_rows {
            bail!(
                "--max-text-tokens {t_max} is out of range: an instruction needs at least 2 tokens ([CLS] [SEP]) and the checkpoint has {position_rows} position embeddings"
            );
        }
        let tables = vocab_tables(spec, vocab_rows, &word_embeddings)?;
        config.max_text_tokens = t_max;
        config.vocab_size = vocab_rows as u32;
        config.vocab_bytes = u32::try_from(tables.text.len()).map_err(|_| anyhow!("the vocabulary is too large"))?;
        Some(tables)
    } else {
        None
    };
    if qd as u32 != config.hidden {
        bail!(
            "{} says hidden_size = {}, but {} has shape {} (d = {qd})",
            config_path.display(),
            config.hidden,
            names.query_tokens,
            fmt_shape(&qt_shape)
        );
    }
    config.validate().map_err(|e| anyhow!("{}: {e}", config_path.display()))?;

    // Layers and cross-attention present in the checkpoint must be what the config says.
    let layer_prefix = format!("{}encoder.layer.", names.prefix);
    for name in ck.names() {
        let Some(rest) = name.strip_prefix(&layer_prefix) else { continue };
        let Some((num, tail)) = rest.split_once('.') else { continue };
        let Ok(l) = num.parse::<u32>() else { continue };
        if l >= config.num_layers {
            bail!(
                "checkpoint has tensor {name} but {} says num_hidden_layers = {}",
                config_path.display(),
                config.num_layers
            );
        }
        if tail.starts_with("crossattention.") && !config.has_cross(l) {
            bail!(
                "checkpoint has cross-attention in layer {l} ({name}), but cross_attention_frequency = {} in {} puts none there",
                config.cross_attention_frequency,
                config_path.display()
            );
        }
    }

    let count = blob::tensor_count(&config);
    let bar = progress_bar(opts.progress, count as u64, "reading");
    let mut tensors = Vec::with_capacity(count as usize);
    for i in 0..count {
        let (role, layer) = blob::slot(&config, i).expect("index below tensor_count");
        let [r, c] = role.shape(&config);
        if !holds_values(role) {
            // The vocabulary's tables come from the tokenizer (in `tokenizer`).
            tensors.push(Tensor { role, layer, rows: r as usize, cols: c as usize, data: Vec::new() });
            bar.inc(1);
            continue;
        }
        let key = names.key(role, layer);
        let (mut shape, mut data) = ck.read_f32(&key)?;
        if role == Role::PositionEmbeddings {
            // The blob keeps the T_max positions an instruction can use.
            data.truncate(r as usize * c as usize);
            shape[0] = shape[0].min(r as usize);
        }
        let ok = match role {
            Role::QueryTokens => shape == [1, r as usize, c as usize] || shape == [r as usize, c as usize],
            _ if r == 1 => shape == [c as usize],
            _ => shape == [r as usize, c as usize],
        };
        if !ok {
            let want =
                if r == 1 && role != Role::QueryTokens { vec![c as usize] } else { vec![r as usize, c as usize] };
            bail!(
                "tensor {key} has shape {}, but the config implies {} (hidden_size {}, intermediate_size {}, encoder_hidden_size {}, num_query_tokens {})",
                fmt_shape(&shape),
                fmt_shape(&want),
                config.hidden,
                config.intermediate,
                config.encoder_hidden,
                config.num_queries
            );
        }
        if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
            bail!("tensor {key} contains a non-finite value at flat index {pos}");
        }
        tensors.push(Tensor { role, layer, rows: r as usize, cols: c as usize, data });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Weights::new(config, tensors, tokenizer)
}

/// Where the InstructBLIP Q-Former tokenizer of `ck` is: `opts.tokenizer`, else
/// `qformer_tokenizer/` beside the weights.
pub fn tokenizer_dir(ck: &Checkpoint, opts: &LoadOptions) -> PathBuf {
    match &opts.tokenizer {
        Some(d) => d.clone(),
        None => {
            let base = if ck.source.is_dir() {
                ck.source.clone()
            } else {
                ck.source.parent().unwrap_or(Path::new(".")).to_path_buf()
            };
            base.join("qformer_tokenizer")
        }
    }
}

/// The files of `ck`'s tokenizer directory that exist (an output must not be one of them).
pub fn tokenizer_files(ck: &Checkpoint, opts: &LoadOptions) -> Vec<PathBuf> {
    let dir = tokenizer_dir(ck, opts);
    crate::vocab::FILES.iter().map(|f| dir.join(f)).filter(|p| p.exists()).collect()
}

/// The InstructBLIP Q-Former tokenizer of `ck` ([`tokenizer_dir`]).
fn load_tokenizer(ck: &Checkpoint, opts: &LoadOptions) -> Result<TokenizerSpec> {
    let dir = match &opts.tokenizer {
        Some(d) => d.clone(),
        None => {
            let base = if ck.source.is_dir() {
                ck.source.clone()
            } else {
                ck.source.parent().unwrap_or(Path::new(".")).to_path_buf()
            };
            base.join("qformer_tokenizer")
        }
    };
    if !dir.is_dir() {
        bail!(
            "{} is an InstructBLIP checkpoint, but its Q-Former tokenizer {} is not a directory (give it with --tokenizer DIR: a BERT WordPiece tokenizer directory with vocab.txt)",
            ck.source.display(),
            dir.display()
        );
    }
    TokenizerSpec::load(&dir)
}

/// The blob's vocabulary tables for `spec`, whose ids must index the `rows` word embeddings.
/// Rows no token names (a table padded past the vocabulary) get placeholder tokens that no
/// text tokenizes to (`[` is split off as punctuation before WordPiece looks words up).
fn vocab_tables(mut spec: TokenizerSpec, rows: usize, word_embeddings: &str) -> Result<VocabTables> {
    if spec.tokens.len() > rows {
        bail!("the Q-Former tokenizer has {} tokens but {word_embeddings} only {rows} rows", spec.tokens.len());
    }
    for i in spec.tokens.len()..rows {
        spec.tokens.push(format!("[qformer:unused{i}]"));
    }
    let (text, offsets, sorted) = spec.tables();
    Ok(VocabTables { text, offsets, sorted, options: spec.options })
}

/// A progress bar on stderr, hidden when `show` is false.
pub fn progress_bar(show: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:>9} [{bar:40}] {pos}/{len} {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}
