//! `quantize`: turns a Hugging Face / LAVIS safetensors checkpoint of BLIP-2, InstructBLIP or
//! MiniGPT-4 into a qformer blob. An InstructBLIP blob also carries the instruction path:
//! word and position embeddings, the text-side feed-forward of every layer, and the
//! Q-Former tokenizer's vocabulary.
//!
//! ```text
//! quantize MODEL -o OUT.qfb --dtype f32|fp16|int8
//! ```
//!
//! Exit codes: 0 success; 1 error (unreadable or inconsistent checkpoint, unwritable
//! output); 2 usage error. The output is written to a temporary file and renamed, so a
//! failure or an interruption (SIGINT, SIGTERM, SIGHUP) never leaves a partial blob or a
//! temporary file; an output that is one of the checkpoint's files is refused.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use qformer_core::blob::round_up;
use qformer_core::{Model, Precision};
use qformer_std::checkpoint::{self, progress_bar, LoadOptions};
use qformer_std::files::Output;
use qformer_std::report;
use qformer_std::runtime::BlobBytes;
use qformer_std::writer::{build_blob, BlobOptions, DEFAULT_GROUP};

#[derive(Clone, Copy, ValueEnum)]
enum Dtype {
    /// f32 weights (reference accuracy).
    F32,
    /// IEEE half weights, f32 arithmetic.
    Fp16,
    /// int8 weights and activations with group-wise scales.
    Int8,
}

#[derive(Parser)]
#[command(
    name = "quantize",
    version,
    about = "Turn a BLIP-2 / InstructBLIP / MiniGPT-4 safetensors checkpoint into a qformer blob"
)]
struct Args {
    /// Checkpoint directory (config.json + model.safetensors or sharded
    /// model-*.safetensors with model.safetensors.index.json), or one .safetensors file.
    model: PathBuf,
    /// Output blob.
    #[arg(short, long)]
    output: PathBuf,
    /// Storage and arithmetic of the blob.
    #[arg(long, value_enum, default_value = "int8")]
    dtype: Dtype,
    /// Config file, when the checkpoint has no config.json beside it (e.g. LAVIS).
    #[arg(long)]
    config: Option<PathBuf>,
    /// int8 group size along the input channels (a non-zero multiple of 16, at most 2^20).
    #[arg(long, default_value_t = DEFAULT_GROUP, value_parser = parse_group)]
    group: u32,
    /// Largest number of image tokens to plan the arena for (default: from vision_config,
    /// else 257).
    #[arg(long)]
    max_image_tokens: Option<u32>,
    /// InstructBLIP: the Q-Former tokenizer directory (BERT WordPiece: vocab.txt,
    /// tokenizer_config.json); default: qformer_tokenizer/ beside the weights.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// InstructBLIP: the most instruction tokens (`[CLS]` and `[SEP]` included) to plan the arena
    /// for, and position embeddings to keep (default: 128, LAVIS's max_txt_len, or the
    /// checkpoint's position table if shorter).
    #[arg(long)]
    max_text_tokens: Option<u32>,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

/// `--group`, checked before anything is read or allocated, with the rule the core applies
/// to a blob's group sizes (`qformer_core::blob`: non-zero, a multiple of 16, at most
/// `MAX_DIM`).
fn parse_group(s: &str) -> Result<u32, String> {
    let g: u32 = s.trim().parse().map_err(|_| format!("{s:?} is not a whole number"))?;
    if !qformer_core::valid_group(g) {
        return Err(format!(
            "{g} is not a valid int8 group size (a non-zero multiple of 16, at most {})",
            qformer_core::config::MAX_DIM
        ));
    }
    Ok(g)
}

fn main() -> ExitCode {
    match qformer_std::files::remove_temporaries_on_signals().and_then(|()| quantize(Args::parse())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn quantize(args: Args) -> Result<()> {
    let opts = LoadOptions {
        config: args.config.clone(),
        max_image_tokens: args.max_image_tokens,
        progress: !args.quiet,
        tokenizer: args.tokenizer.clone(),
        max_text_tokens: args.max_text_tokens,
    };
    let ck = checkpoint::Checkpoint::open(&args.model, args.config.as_deref())?;
    // Before the work: an output that would destroy a source file is refused, and the
    // temporary file exists from here on (removed on failure or signal).
    let tokenizer = checkpoint::tokenizer_files(&ck, &opts);
    let sources: Vec<&std::path::Path> = ck.files().chain(tokenizer.iter().map(PathBuf::as_path)).collect();
    let output = Output::create(&args.output, &sources)?;
    let weights = checkpoint::load_from(&ck, &opts)?;
    drop(ck);
    let precision = match args.dtype {
        Dtype::F32 => Precision::F32,
        Dtype::Fp16 => Precision::F16,
        Dtype::Int8 => Precision::Int8,
    };
    let widest = weights.tensors.iter().filter(|t| t.role.is_matrix()).map(|t| t.cols).max().unwrap_or(0);
    if precision == Precision::Int8 && args.group as usize > round_up(widest, 16) {
        bail!(
            "--group {} is wider than every matrix row of this model (at most {widest} input channels): each row would be one group padded with zeros",
            args.group
        );
    }
    let opts = BlobOptions { precision, group: args.group };
    // Before any allocation: the blob's exact size from the writer's layout.
    if let Err(e) = qformer_std::writer::layout(&weights, opts) {
        let hint = if precision == Precision::Int8 { " (is --group too large?)" } else { "" };
        bail!("{e}{hint}");
    }
    let bar = progress_bar(!args.quiet, weights.tensors.len() as u64, "writing");
    let bytes = build_blob(&weights, opts, || bar.inc(1))?;
    bar.finish_and_clear();
    // Check what we are about to write with the reader the devices use.
    let copy = BlobBytes::copy(&bytes);
    let model = Model::from_blob(copy.bytes()).context("internal error: the written blob does not validate")?;
    output.write(&bytes)?;
    println!("{} -> {}", args.model.display(), args.output.display());
    println!("{} parameters", weights.parameters());
    println!("{}", report::model(&model, &bytes));
    Ok(())
}
