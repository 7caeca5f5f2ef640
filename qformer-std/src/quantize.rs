//! The `quantize` pipeline: a Hugging Face / LAVIS checkpoint to a checked blob on disk. The
//! `quantize` command line and the Python module both call [`quantize`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use qformer_core::blob::round_up;
use qformer_core::{Model, Precision};

use crate::checkpoint::{self, progress_bar, LoadOptions};
use crate::files::Output;
use crate::report;
use crate::runtime::BlobBytes;
use crate::writer::{build_blob, BlobOptions, DEFAULT_GROUP};

/// What [`quantize`] is asked to do, besides the source and the output.
#[derive(Clone, Debug)]
pub struct Options {
    /// Storage and arithmetic of the blob.
    pub precision: Precision,
    /// Config file, when the checkpoint has no config.json beside it (e.g. LAVIS).
    pub config: Option<PathBuf>,
    /// int8 group size along the input channels (see [`check_group`]).
    pub group: u32,
    /// Largest number of image tokens to plan the arena for (default: from vision_config,
    /// else 257).
    pub max_image_tokens: Option<u32>,
    /// InstructBLIP: the Q-Former tokenizer directory (default: qformer_tokenizer/ beside the
    /// weights).
    pub tokenizer: Option<PathBuf>,
    /// InstructBLIP: the most instruction tokens to plan the arena for.
    pub max_text_tokens: Option<u32>,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            precision: Precision::Int8,
            config: None,
            group: DEFAULT_GROUP,
            max_image_tokens: None,
            tokenizer: None,
            max_text_tokens: None,
            progress: false,
        }
    }
}

/// What [`quantize`] wrote.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Parameters read from the checkpoint.
    pub parameters: usize,
    /// Bytes of the blob written.
    pub blob_bytes: usize,
    /// The blob's arena size.
    pub arena_bytes: usize,
    /// [`report::model`] of the written blob: config, bytes per dtype, arena plan.
    pub report: String,
}

/// The int8 group size rule the core applies to a blob's group sizes
/// (`qformer_core::valid_group`: non-zero, a multiple of 16, at most `MAX_DIM`), with the
/// message the command line shows.
pub fn check_group(g: u32) -> Result<(), String> {
    if !qformer_core::valid_group(g) {
        return Err(format!(
            "{g} is not a valid int8 group size (a non-zero multiple of 16, at most {})",
            qformer_core::config::MAX_DIM
        ));
    }
    Ok(())
}

/// Reads the checkpoint at `model` (directory or one .safetensors file), builds the blob,
/// checks it with the reader the devices use and writes it to `output` through a temporary
/// file and a rename (a failure never leaves a partial blob; an output that is one of the
/// checkpoint's files is refused before any work).
pub fn quantize(model: &Path, output: &Path, opts: &Options) -> Result<Summary> {
    check_group(opts.group).map_err(anyhow::Error::msg)?;
    let load = LoadOptions {
        config: opts.config.clone(),
        max_image_tokens: opts.max_image_tokens,
        progress: opts.progress,
        tokenizer: opts.tokenizer.clone(),
        max_text_tokens: opts.max_text_tokens,
    };
    let ck = checkpoint::Checkpoint::open(model, opts.config.as_deref())?;
    // Before the work: an output that would destroy a source file is refused, and the
    // temporary file exists from here on (removed on failure or signal).
    let tokenizer = checkpoint::tokenizer_files(&ck, &load);
    let sources: Vec<&Path> = ck.files().chain(tokenizer.iter().map(PathBuf::as_path)).collect();
    let out = Output::create(output, &sources)?;
    let weights = checkpoint::load_from(&ck, &load)?;
    drop(ck);
    let precision = opts.precision;
    let widest = weights.tensors.iter().filter(|t| t.role.is_matrix()).map(|t| t.cols).max().unwrap_or(0);
    if precision == Precision::Int8 && opts.group as usize > round_up(widest, 16) {
        bail!(
            "--group {} is wider than every matrix row of this model (at most {widest} input channels): each row would be one group padded with zeros",
            opts.group
        );
    }
    let blob_opts = BlobOptions { precision, group: opts.group };
    // Before any allocation: the blob's exact size from the writer's layout.
    if let Err(e) = crate::writer::layout(&weights, blob_opts) {
        let hint = if precision == Precision::Int8 { " (is --group too large?)" } else { "" };
        bail!("{e}{hint}");
    }
    let bar = progress_bar(opts.progress, weights.tensors.len() as u64, "writing");
    let bytes = build_blob(&weights, blob_opts, || bar.inc(1))?;
    bar.finish_and_clear();
    // Check what we are about to write with the reader the devices use.
    let copy = BlobBytes::copy(&bytes);
    let checked = Model::from_blob(copy.bytes()).context("internal error: the written blob does not validate")?;
    out.write(&bytes)?;
    Ok(Summary {
        parameters: weights.parameters(),
        blob_bytes: bytes.len(),
        arena_bytes: checked.arena_bytes(),
        report: report::model(&checked, &bytes),
    })
}
