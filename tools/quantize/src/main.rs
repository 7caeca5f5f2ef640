//! `quantize`: turns a Hugging Face / LAVIS safetensors checkpoint of BLIP-2, InstructBLIP
//! or MiniGPT-4 into a qformer blob.
//!
//! ```text
//! quantize MODEL -o OUT.qfb --dtype f32|fp16|int8
//! ```
//!
//! Exit codes: 0 success; 1 error (unreadable or inconsistent checkpoint, unwritable
//! output); 2 usage error. The output is written to a temporary file and renamed, so a
//! failure never leaves a partial blob.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use qformer_core::{Model, Precision};
use qformer_std::checkpoint::{self, progress_bar, LoadOptions};
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
    /// int8 group size along the input channels (multiple of 16).
    #[arg(long, default_value_t = DEFAULT_GROUP)]
    group: u32,
    /// Largest number of image tokens to plan the arena for (default: from vision_config,
    /// else 257).
    #[arg(long)]
    max_image_tokens: Option<u32>,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    match quantize(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn quantize(args: Args) -> Result<()> {
    let opts =
        LoadOptions { config: args.config.clone(), max_image_tokens: args.max_image_tokens, progress: !args.quiet };
    let weights = checkpoint::load(&args.model, &opts)?;
    let precision = match args.dtype {
        Dtype::F32 => Precision::F32,
        Dtype::Fp16 => Precision::F16,
        Dtype::Int8 => Precision::Int8,
    };
    let bar = progress_bar(!args.quiet, weights.tensors.len() as u64, "writing");
    let bytes = build_blob(&weights, BlobOptions { precision, group: args.group }, || bar.inc(1))?;
    bar.finish_and_clear();
    // Check what we are about to write with the reader the devices use.
    let copy = BlobBytes::copy(&bytes);
    let model = Model::from_blob(copy.bytes()).context("internal error: the written blob does not validate")?;
    qformer_std::write_atomic(&args.output, &bytes)?;
    println!("{} -> {}", args.model.display(), args.output.display());
    println!("{} parameters", weights.parameters());
    println!("{}", report::model(&model, &bytes));
    Ok(())
}
