//! Reads a Q-Former out of a Hugging Face or LAVIS safetensors checkpoint.
//!
//! Accepted layouts:
//! * a directory with `config.json` and `model.safetensors`, or sharded
//!   `model-0000k-of-0000n.safetensors` listed in `model.safetensors.index.json`;
//! * a single `.safetensors` file, with the config given separately.
//!
//! Files are memory-mapped and only the Q-Former tensors (plus `query_tokens` and the
//! language projection) are read; the vision encoder and the language model are never
//! touched. Tensor names in Hugging Face (BLIP-2, InstructBLIP) and LAVIS (BLIP-2,
//! MiniGPT-4) spelling are recognised; f32, f16, bf16 and f64 tensors are converted to f32.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use qformer_core::blob::{self, Role};
use qformer_core::{Activation, Config};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::weights::{hf_name, Tensor, Weights};

/// How to read a checkpoint.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Config file (`config.json` of BLIP-2/InstructBLIP, or a bare Q-Former config);
    /// default: `config.json` beside the weights.
    pub config: Option<PathBuf>,
    /// Largest number of image tokens to plan for; default: from `vision_config`
    /// (`(image_size / patch_size)^2 + 1`), else 257.
    pub max_image_tokens: Option<u32>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// Spelling of the tensor names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// Hugging Face transformers (`...attention.attention.query...`).
    HuggingFace,
    /// LAVIS / MiniGPT-4 (`Qformer.bert...attention.self.query...`).
    Lavis,
}

/// One tensor's place in a shard: shape, dtype and byte range in the mapped file.
struct Located {
    shard: usize,
    shape: Vec<usize>,
    dtype: Dtype,
    bytes: std::ops::Range<usize>,
}

struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// The memory-mapped files of a checkpoint and where each tensor lives.
pub struct Checkpoint {
    shards: Vec<Shard>,
    /// Tensor name → where it is, read once from the shard headers at open.
    index: BTreeMap<String, Located>,
    config_path: Option<PathBuf>,
    source: PathBuf,
}

fn open_map(path: &Path) -> Result<Mmap> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: the file is mapped read-only; we only read it while the map lives. A file
    // modified by another process while mapped may give inconsistent tensor values but
    // cannot make safe code unsound, since the bytes are only ever read as plain numbers.
    let map = unsafe { Mmap::map(&f) }.with_context(|| format!("cannot map {}", path.display()))?;
    Ok(map)
}

impl Checkpoint {
    /// Opens `path` (directory or `.safetensors` file) and reads the safetensors headers.
    pub fn open(path: &Path, config: Option<&Path>) -> Result<Checkpoint> {
        let (files, default_config) = if path.is_dir() {
            let index = path.join("model.safetensors.index.json");
            let files = if index.is_file() {
                let text =
                    std::fs::read_to_string(&index).with_context(|| format!("cannot read {}", index.display()))?;
                let v: Value =
                    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", index.display()))?;
                let map = v
                    .get("weight_map")
                    .and_then(Value::as_object)
                    .ok_or_else(|| anyhow!("{} has no \"weight_map\" object", index.display()))?;
                let mut files: Vec<PathBuf> = Vec::new();
                for f in map.values() {
                    let name = f
                        .as_str()
                        .ok_or_else(|| anyhow!("{}: weight_map values must be file names", index.display()))?;
                    let p = path.join(name);
                    if !files.contains(&p) {
                        files.push(p);
                    }
                }
                files.sort();
                files
            } else if path.join("model.safetensors").is_file() {
                vec![path.join("model.safetensors")]
            } else {
                bail!("{} has neither model.safetensors nor model.safetensors.index.json", path.display());
            };
            (files, path.join("config.json"))
        } else if path.is_file() {
            let dir = path.parent().unwrap_or(Path::new("."));
            (vec![path.to_path_buf()], dir.join("config.json"))
        } else {
            bail!("{} does not exist", path.display());
        };
        let config_path = match config {
            Some(c) => Some(c.to_path_buf()),
            None => default_config.is_file().then_some(default_config),
        };
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for (i, file) in files.iter().enumerate() {
            let map = open_map(file)?;
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", file.display()))?;
            for (name, v) in st.iter() {
                let start = v.data().as_ptr() as usize - map.as_ptr() as usize;
                let located = Located {
                    shard: i,
                    shape: v.shape().to_vec(),
                    dtype: v.dtype(),
                    bytes: start..start + v.data().len(),
                };
                if let Some(prev) = index.insert(name.to_string(), located) {
                    bail!("tensor {name} appears in both {} and {}", files[prev.shard].display(), file.display());
                }
            }
            drop(st);
            shards.push(Shard { path: file.clone(), map });
        }
        Ok(Checkpoint { shards, index, config_path, source: path.to_path_buf() })
    }

    /// All tensor names.
    pub fn names(&self) -> impl Iterator<Item = &str> + Clone {
        self.index.keys().map(String::as_str)
    }

    /// Shape and dtype of tensor `name`.
    fn view(&self, name: &str) -> Result<(Vec<usize>, Dtype, &[u8], &Path)> {
        let t =
            self.index.get(name).ok_or_else(|| anyhow!("tensor {name} is missing from {}", self.source.display()))?;
        let shard = &self.shards[t.shard];
        // In range: `SafeTensors::deserialize` checked every tensor's offsets against the file.
        Ok((t.shape.clone(), t.dtype, &shard.map[t.bytes.clone()], &shard.path))
    }

    /// Shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.view(name)?.0)
    }

    /// Tensor `name` converted to f32, with its shape.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (shape, dtype, bytes, file) = self.view(name)?;
        Ok((shape, to_f32(bytes, dtype).with_context(|| format!("{}: tensor {name}", file.display()))?))
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
            // BLIP-2: qformer.layernorm; InstructBLIP: qformer.embeddings.layernorm.
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
        None => bail!(
            "{}: neither a BLIP-2/InstructBLIP config (no \"qformer_config\") nor a Q-Former config",
            path.display()
        ),
    };
    let int = |obj: &Value, key: &str, default: u64| -> Result<u32> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(default as u32),
            Some(x) => x
                .as_u64()
                .filter(|&n| n <= u32::MAX as u64)
                .map(|n| n as u32)
                .ok_or_else(|| anyhow!("{}: \"{key}\" must be a non-negative integer, found {x}", path.display())),
        }
    };
    let act = match qf.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu") {
        "gelu" => Activation::Gelu,
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        other => bail!(
            "{}: hidden_act \"{other}\" is not supported (gelu, gelu_pytorch_tanh, gelu_new, relu)",
            path.display()
        ),
    };
    let eps = qf.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(1e-12) as f32;
    let mut encoder_hidden = int(qf, "encoder_hidden_size", 1408)?;
    let mut max_tokens = None;
    let mut num_queries = 0;
    if let Some(top) = top {
        num_queries = int(top, "num_query_tokens", 32)?;
        if let Some(vc) = top.get("vision_config") {
            // Blip2Config overwrites qformer_config.encoder_hidden_size with this.
            encoder_hidden = int(vc, "hidden_size", 1408)?;
            let image = int(vc, "image_size", 224)?;
            let patch = int(vc, "patch_size", 14)?;
            if let Some(side) = image.checked_div(patch) {
                let tokens = side.checked_mul(side).and_then(|t| t.checked_add(1)).ok_or_else(|| {
                    anyhow!(
                        "{}: vision_config image_size {image} / patch_size {patch} gives more image tokens than fit in u32",
                        path.display()
                    )
                })?;
                max_tokens = Some(tokens);
            }
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
    let config_path = ck
        .config_path
        .clone()
        .ok_or_else(|| anyhow!("no config.json beside {}; pass the config file with --config", ck.source.display()))?;
    let text =
        std::fs::read_to_string(&config_path).with_context(|| format!("cannot read {}", config_path.display()))?;
    let json: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", config_path.display()))?;
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
        let key = names.key(role, layer);
        let (shape, data) = ck.read_f32(&key)?;
        let [r, c] = role.shape(&config);
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
    Weights::new(config, tensors)
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
