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

use anyhow::Result;
use clap::{Parser, ValueEnum};
use qformer_core::Precision;
use qformer_std::quantize::{check_group, Options};
use qformer_std::writer::DEFAULT_GROUP;

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

/// `--group`, checked before anything is read or allocated (`qformer_std::quantize::check_group`).
fn parse_group(s: &str) -> Result<u32, String> {
    let g: u32 = s.trim().parse().map_err(|_| format!("{s:?} is not a whole number"))?;
    check_group(g)?;
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
    let opts = Options {
        precision: match args.dtype {
            Dtype::F32 => Precision::F32,
            Dtype::Fp16 => Precision::F16,
            Dtype::Int8 => Precision::Int8,
        },
        config: args.config,
        group: args.group,
        max_image_tokens: args.max_image_tokens,
        tokenizer: args.tokenizer,
        max_text_tokens: args.max_text_tokens,
        progress: !args.quiet,
    };
    let summary = qformer_std::quantize::quantize(&args.model, &args.output, &opts)?;
    println!("{} -> {}", args.model.display(), args.output.display());
    println!("{} parameters", summary.parameters);
    println!("{}", summary.report);
    Ok(())
}
