//! The `qformer` command line: run, verify, inspect and demo Q-Former blobs.
//!
//! Exit codes: 0 success; 1 error (bad file, bad input, failed check); 2 usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use qformer_core::{Model, Precision};
use qformer_std::files::{CreatedDir, Output};
use qformer_std::io::{encode_tensors, read_images, read_instructions, write_tensors, Images};
use qformer_std::metrics::{agreement, Agreement};
use qformer_std::runtime::{
    check_images, detect_kernels, resolve_instructions, run_batch, run_batch_text, BlobBytes, Instructions, Threads,
    Wording,
};
use qformer_std::writer::{build_blob, BlobOptions};
use qformer_std::{reference, report, synth, verify};

#[derive(Parser)]
#[command(
    name = "qformer",
    version,
    about = "Run, verify and inspect quantized Q-Former blobs (BLIP-2, InstructBLIP, MiniGPT-4)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a blob on image features (and, for InstructBLIP, an instruction) and write the
    /// query outputs.
    Run {
        /// The blob (made by `quantize`).
        model: PathBuf,
        /// Image features: safetensors with `image_embeds` [M, d_v] or [B, M, d_v], or .npy.
        /// InstructBLIP: the file may also carry `qformer_input_ids` [B, T] (I64 or I32) and
        /// `qformer_attention_mask` [B, T], as `InstructBlipProcessor` makes them.
        #[arg(long)]
        input: PathBuf,
        #[command(flatten)]
        prompt: Prompt,
        /// Output safetensors: `qformer_output` [B, N, d] and `projected` [B, N, d_llm].
        /// Written through a temporary file and a rename; a symbolic link is followed, a
        /// device or FIFO written in place, an input never overwritten.
        #[arg(long)]
        output: PathBuf,
        /// Worker threads (0 = one per core; at most 4 per core). The output does not depend
        /// on it.
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[command(flatten)]
        load: Load,
    },
    /// Measure a blob's latency: warm-up, then repeated runs; median/min/max, throughput,
    /// peak memory.
    Bench {
        /// The blob.
        model: PathBuf,
        /// Image features (default: one deterministic random image of the blob's maximum size).
        #[arg(long)]
        input: Option<PathBuf>,
        #[command(flatten)]
        prompt: Prompt,
        /// InstructBLIP: answer this many instructions about the image, its cross-attention
        /// keys and values projected once (`Model::encode_image`); reports the cost of one
        /// more question against a full forward. Needs an instruction (`--prompt`).
        #[arg(long)]
        questions: Option<usize>,
        /// Worker threads (0 = one per core; at most 4 per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Untimed runs first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Timed runs.
        #[arg(long, default_value_t = 10)]
        iters: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        load: Load,
    },
    /// Compare a blob with the fp32 reference computed from the original checkpoint.
    Verify {
        /// The blob.
        model: PathBuf,
        /// The checkpoint the blob was made from (directory or .safetensors file).
        #[arg(long)]
        reference: PathBuf,
        /// Config of the checkpoint when it has no config.json beside it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Image features, as for `run` (with its instructions, for InstructBLIP).
        #[arg(long)]
        input: PathBuf,
        #[command(flatten)]
        prompt: Prompt,
        /// InstructBLIP: the Q-Former tokenizer directory, when it is not the checkpoint's
        /// `qformer_tokenizer/`.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Fail (exit 1) when the output's cosine similarity is below this (a number in
        /// [-1, 1]).
        #[arg(long, default_value_t = 0.999, value_parser = parse_cosine)]
        min_cosine: f64,
    },
    /// Print a blob's config, sizes and arena plan.
    Inspect {
        /// The blob.
        model: PathBuf,
        #[command(flatten)]
        load: Load,
    },
    /// Build a small model with deterministic weights, quantize it to every dtype, run and
    /// compare (no files needed).
    Demo {
        /// Timed runs per dtype (the median is shown).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Write a synthetic checkpoint (Hugging Face layout, deterministic random weights at
    /// Hugging Face's initialisation) and an input file, for trying the tools at full size.
    Synth {
        /// Output directory: config.json, model.safetensors, input.safetensors.
        dir: PathBuf,
        /// `blip2`: BLIP-2's Q-Former (12 x 768, 257 x 1408 image features); `demo`: the
        /// demo's small model; `mcu`: the firmware examples' model (4 x 128, 50 x 192 image
        /// features; 815 KiB in int8); `instructblip`: InstructBLIP's (BLIP-2's, plus a
        /// 30,523-row vocabulary and instructions up to 128 tokens); `demo-instruct`,
        /// `mcu-instruct`: the small ones with text parts over a built-in vocabulary of a few
        /// hundred tokens (instructions up to 32 / 16 tokens). The InstructBLIP presets also
        /// write qformer_tokenizer/.
        #[arg(long, default_value = "blip2")]
        preset: Preset,
        /// Images in input.safetensors.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Image channels scaled by 30 in input.safetensors (outlier channels).
        #[arg(long, value_delimiter = ',')]
        outliers: Vec<usize>,
        /// Seed of the weights.
        #[arg(long, default_value_t = 11)]
        seed: u64,
    },
}

/// An InstructBLIP instruction given as text.
#[derive(clap::Args, Clone)]
struct Prompt {
    /// InstructBLIP: one instruction for every image, tokenized with the blob's own
    /// vocabulary (as transformers' BertTokenizer would). Refused for a blob without text
    /// parts, and together with `qformer_input_ids` in the input.
    #[arg(long)]
    prompt: Option<String>,
}

/// How a blob is loaded.
#[derive(clap::Args, Clone, Copy)]
struct Load {
    /// Memory-map the blob instead of reading it into memory: for a blob larger than the
    /// memory available. The checksum is then checked once, at load: the file must not be
    /// changed while the command runs (a truncated mapping is a SIGBUS, see README "Errors").
    #[arg(long)]
    mmap: bool,
}

impl Load {
    fn open(self, path: &Path) -> Result<BlobBytes> {
        if self.mmap {
            BlobBytes::map(path)
        } else {
            BlobBytes::open(path)
        }
    }
}

/// `--min-cosine`: a finite number in [-1, 1] (NaN would make every comparison pass).
fn parse_cosine(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number"))?;
    verify::check_min_cosine(v, s)?;
    Ok(v)
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Preset {
    Blip2,
    Demo,
    Mcu,
    Instructblip,
    DemoInstruct,
    McuInstruct,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = qformer_std::files::remove_temporaries_on_signals().and_then(|()| match cli.command {
        Command::Run { model, input, prompt, output, threads, load } => {
            run(&model, &input, &prompt, &output, threads, load)
        }
        Command::Bench { model, input, prompt, questions, threads, warmup, iters, json, load } => {
            bench(&model, input.as_deref(), &prompt, questions, threads, warmup, iters, json, load)
        }
        Command::Verify { model, reference, config, input, prompt, tokenizer, min_cosine } => {
            verify(&model, &reference, config, tokenizer, &input, &prompt, min_cosine)
        }
        Command::Inspect { model, load } => inspect(&model, load),
        Command::Demo { runs } => demo(runs.max(1)),
        Command::Synth { dir, preset, batch, outliers, seed } => synth_checkpoint(&dir, preset, batch, &outliers, seed),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn open_model<'a>(blob: &'a BlobBytes, path: &Path) -> Result<Model<'a>> {
    Ok(Model::from_blob(blob.bytes()).with_context(|| format!("{}", path.display()))?.with_kernels(detect_kernels()))
}

fn check_input(model: &Model<'_>, images: &Images, path: &Path) -> Result<()> {
    check_images(model, images, &path.display().to_string())
}

/// The instructions of a run: `--prompt`, or the input file's `qformer_input_ids`, or none
/// (said on stderr for an InstructBLIP blob).
fn instructions(
    model: &Model<'_>,
    input: Option<&Path>,
    prompt: &Prompt,
    batch: usize,
) -> Result<Option<Instructions>> {
    let from_file = match input {
        Some(p) => read_instructions(p)?,
        None => None,
    };
    if let (Some(_), Some(_)) = (&prompt.prompt, &from_file) {
        bail!(
            "{} carries qformer_input_ids and --prompt gives an instruction too: give one of them",
            input.map_or(String::new(), |p| p.display().to_string())
        );
    }
    let (text, notes) = resolve_instructions(model, prompt.prompt.as_deref(), from_file, batch, Wording::CLI)?;
    for note in notes {
        eprintln!("{note}");
    }
    Ok(text)
}

fn run(model_path: &Path, input: &Path, prompt: &Prompt, output: &Path, threads: usize, load: Load) -> Result<()> {
    // Refused outputs and thread counts fail before any work.
    let out_file = Output::create(output, &[model_path, input])?;
    let pool = Threads::new(threads)?;
    let blob = load.open(model_path)?;
    let model = open_model(&blob, model_path)?;
    let images = read_images(input)?;
    check_input(&model, &images, input)?;
    let text = instructions(&model, Some(input), prompt, images.batch)?;
    let out = run_batch_text(&model, &images.data, images.batch, images.tokens, text.as_ref(), false, &pool)?;
    let c = model.config();
    let (b, n) = (images.batch, c.num_queries as usize);
    let mut tensors = vec![("qformer_output", vec![b, n, c.hidden as usize], out.output.as_slice())];
    if let Some(p) = &out.projected {
        tensors.push(("projected", vec![b, n, c.projection_dim as usize], p.as_slice()));
    }
    out_file.write(&encode_tensors(&tensors)?)?;
    eprintln!("wrote {} ({} image{})", output.display(), b, if b == 1 { "" } else { "s" });
    Ok(())
}

fn print_agreement(name: &str, a: &Agreement) {
    println!("{name:<16} {:>12.7} {:>12.3e} {:>12.3e}", a.cosine, a.max_abs, a.rms);
}

fn verify(
    model_path: &Path,
    reference_path: &Path,
    config: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
    input: &Path,
    prompt: &Prompt,
    min_cosine: f64,
) -> Result<()> {
    let blob = BlobBytes::open(model_path)?;
    let model = open_model(&blob, model_path)?;
    let weights = verify::load_reference(&model, model_path, reference_path, config, tokenizer, true)?;
    let images = read_images(input)?;
    check_input(&model, &images, input)?;
    let (b, m) = (images.batch, images.tokens);
    let text = instructions(&model, Some(input), prompt, b)?;
    let rows = verify::compare(&model, &weights, &images, text.as_ref())?;
    println!(
        "{} ({}) against the fp32 reference of {}, {b} image(s) of {m} tokens",
        model_path.display(),
        model.precision().name(),
        reference_path.display()
    );
    println!("{:<16} {:>12} {:>12} {:>12}", "", "cosine", "max abs", "rms");
    for r in &rows {
        print_agreement(&r.name, &r.agreement);
    }
    verify::check(&rows, min_cosine)?;
    println!("ok: cosine >= {min_cosine}");
    Ok(())
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`), if known.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Median of `ms` (sorted in place).
fn median(ms: &mut [f64]) -> f64 {
    ms.sort_by(f64::total_cmp);
    let k = ms.len();
    if k % 2 == 1 {
        ms[k / 2]
    } else {
        (ms[k / 2 - 1] + ms[k / 2]) / 2.0
    }
}

/// `bench --questions K`: the cost of answering one more instruction about an image whose
/// cross-attention keys and values were projected once, against a full forward.
fn bench_questions(
    model: &Model<'_>,
    images: &Images,
    text: &Instructions,
    questions: usize,
    pool: &Threads,
    iters: usize,
) -> Result<()> {
    let c = model.config();
    let (n, d, m) = (c.num_queries as usize, c.hidden as usize, images.tokens);
    let image = &images.data[..m * images.dim];
    let mut arena = qformer_std::runtime::Arena::new(model.arena_bytes());
    let mut cache = qformer_std::runtime::Arena::new(model.encoded_image_bytes());
    let mut out = vec![0f32; n * d];
    let t = text.text(0);
    let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        let mut ms = Vec::new();
        for _ in 0..iters {
            let s = Instant::now();
            f()?;
            ms.push(s.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(&mut ms))
    };
    let none = &mut |_: usize, _: &[f32]| {};
    let full = time(&mut || {
        model.forward_with(
            qformer_core::Image::Features(image),
            Some(t),
            arena.bytes_mut(),
            &mut out,
            None,
            pool,
            none,
        )?;
        Ok(())
    })?;
    let direct = out.clone();
    let encode = time(&mut || {
        model.encode_image(image, cache.bytes_mut(), arena.bytes_mut(), pool)?;
        Ok(())
    })?;
    let encoded = model.encode_image(image, cache.bytes_mut(), arena.bytes_mut(), pool)?;
    let mut one = || -> Result<()> {
        model.forward_with(
            qformer_core::Image::Encoded(&encoded),
            Some(t),
            arena.bytes_mut(),
            &mut out,
            None,
            pool,
            none,
        )?;
        Ok(())
    };
    let question = time(&mut one)?;
    if out != direct {
        bail!("internal error: the answer against the encoded image differs from the full forward's");
    }
    println!(
        "{questions} questions about one image of {m} tokens: full forward {full:.2} ms each; encode the image once {encode:.2} ms, then {question:.2} ms per question ({:.2}x a full forward); {questions} questions: {:.2} ms against {:.2} ms; encoded image {} (outputs bit-identical)",
        question / full,
        encode + questions as f64 * question,
        questions as f64 * full,
        report::bytes(model.encoded_image_bytes())
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn bench(
    model_path: &Path,
    input: Option<&Path>,
    prompt: &Prompt,
    questions: Option<usize>,
    threads: usize,
    warmup: usize,
    iters: usize,
    json: bool,
    load: Load,
) -> Result<()> {
    if iters == 0 {
        bail!("--iters must be at least 1");
    }
    if questions == Some(0) {
        bail!("--questions must be at least 1");
    }
    let pool = Threads::new(threads)?;
    let blob = load.open(model_path)?;
    let model = open_model(&blob, model_path)?;
    let c = *model.config();
    let images = match input {
        Some(p) => {
            let images = read_images(p)?;
            check_input(&model, &images, p)?;
            images
        }
        None => {
            let (m, dv) = (c.max_image_tokens as usize, c.encoder_hidden as usize);
            Images { data: synth::images(1, 1, m, dv, &[], 1.0), batch: 1, tokens: m, dim: dv }
        }
    };
    let text = instructions(&model, input, prompt, images.batch)?;
    if let Some(q) = questions {
        let Some(t) = &text else {
            bail!("--questions needs an instruction (--prompt, or qformer_input_ids in --input)")
        };
        return bench_questions(&model, &images, t, q, &pool, iters);
    }
    let run = || run_batch_text(&model, &images.data, images.batch, images.tokens, text.as_ref(), false, &pool);
    for _ in 0..warmup {
        run()?;
    }
    // Grown as it goes: `--iters` is the user's number, not an allocation size.
    let mut ms = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        run()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let median = median(&mut ms);
    let throughput = images.batch as f64 / (median / 1e3);
    let rss = peak_rss();
    let k = model.kernels();
    let n_threads = qformer_core::Executor::threads(&pool);
    if json {
        println!(
            "{{\"model\": {:?}, \"precision\": \"{}\", \"threads\": {n_threads}, \"batch\": {}, \"image_tokens\": {}, \"iters\": {iters}, \"median_ms\": {median:.3}, \"min_ms\": {:.3}, \"max_ms\": {:.3}, \"images_per_s\": {throughput:.3}, \"peak_rss_bytes\": {}, \"blob_bytes\": {}, \"arena_bytes\": {}, \"q8_kernel\": \"{}\", \"float_kernel\": \"{}\"}}",
            model_path.display().to_string(),
            model.precision().name(),
            images.batch,
            images.tokens,
            ms[0],
            ms[iters - 1],
            rss.map_or("null".to_string(), |r| r.to_string()),
            blob.bytes().len(),
            model.arena_bytes(),
            k.q8.name(),
            k.f.name()
        );
    } else {
        println!(
            "{} ({}), {} image(s) of {} tokens, {n_threads} thread(s), kernels {} / {}",
            model_path.display(),
            model.precision().name(),
            images.batch,
            images.tokens,
            k.q8.name(),
            k.f.name()
        );
        println!(
            "latency  median {median:.2} ms   min {:.2} ms   max {:.2} ms   ({iters} runs after {warmup} warm-up)",
            ms[0],
            ms[iters - 1]
        );
        println!("throughput {throughput:.2} images/s");
        if let Some(r) = rss {
            let how = if load.mmap { "memory-mapped, counted once touched" } else { "read into memory" };
            println!(
                "peak RSS {} (includes the blob, {}, {how})",
                report::bytes(r as usize),
                report::bytes(blob.bytes().len())
            );
        }
    }
    Ok(())
}

fn inspect(model_path: &Path, load: Load) -> Result<()> {
    let blob = load.open(model_path)?;
    let model = open_model(&blob, model_path)?;
    println!("{}", model_path.display());
    println!("{}", report::model(&model, blob.bytes()));
    Ok(())
}

fn synth_checkpoint(dir: &Path, preset: Preset, batch: usize, outliers: &[usize], seed: u64) -> Result<()> {
    let config = match preset {
        Preset::Blip2 => qformer_core::Config::BLIP2,
        Preset::Demo => synth::DEMO,
        Preset::Mcu => synth::MCU,
        Preset::Instructblip => synth::instructblip(),
        Preset::DemoInstruct => synth::demo_instruct(),
        Preset::McuInstruct => synth::mcu_instruct(),
    };
    if let Some(c) = outliers.iter().find(|&&c| c >= config.encoder_hidden as usize) {
        bail!("outlier channel {c} is beyond d_v = {}", config.encoder_hidden);
    }
    let (m, dv) = (config.max_image_tokens as usize, config.encoder_hidden as usize);
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    match (batch.checked_mul(m * dv * 4), qformer_std::files::available_memory()) {
        (None, _) => bail!("--batch {batch} needs more bytes of image features than this machine can address"),
        (Some(n), Some(avail)) if n as u64 > avail / 2 => bail!(
            "--batch {batch} needs {n} bytes of image features, more than half the {avail} bytes of memory available"
        ),
        _ => {}
    }
    // A failure (a full disk) or a signal removes what this command created: the directory
    // if it made it, else the files that were not there before.
    let created = CreatedDir::create(dir)?;
    let names = ["config.json", "model.safetensors", "input.safetensors", "qformer_tokenizer"];
    let new_files: Vec<PathBuf> =
        names.iter().map(|n| dir.join(n)).filter(|p| std::fs::symlink_metadata(p).is_err()).collect();
    let result = (|| {
        let w = synth::Spec::hf_init(config, seed).build();
        qformer_std::weights::save_hf_checkpoint(&w, dir)?;
        let images = synth::images(seed + 1, batch, m, dv, outliers, 30.0);
        write_tensors(&dir.join("input.safetensors"), &[("image_embeds", vec![batch, m, dv], &images)])?;
        Ok(())
    })();
    match result {
        Ok(()) => {}
        Err(e) => {
            for f in &new_files {
                let _ = std::fs::remove_file(f).or_else(|_| std::fs::remove_dir_all(f));
            }
            return Err(e);
        }
    }
    created.keep();
    println!("wrote {} (config.json, model.safetensors, input.safetensors: {batch} x {m} x {dv})", dir.display());
    Ok(())
}

fn demo(runs: usize) -> Result<()> {
    let spec = synth::Spec::hf_init(synth::DEMO, 2024);
    let weights = spec.build();
    let c = weights.config;
    let (b, m, dv) = (2usize, c.max_image_tokens as usize, c.encoder_hidden as usize);
    let images = synth::images(7, b, m, dv, &[3, 100, 257], 30.0);
    println!(
        "demo model: {} layers, d {}, {} heads, ffn {}, {} queries, {m} x {dv} image features (3 outlier channels x30), projection {}; {} parameters, {b} images",
        c.num_layers, c.hidden, c.num_heads, c.intermediate, c.num_queries, c.projection_dim, weights.parameters()
    );
    let t = Instant::now();
    let refs: Vec<Vec<f32>> =
        (0..b).map(|i| reference::forward(&weights, &images[i * m * dv..(i + 1) * m * dv], m).output).collect();
    let want: Vec<f32> = refs.concat();
    println!("fp32 reference (f64 arithmetic): {:.1} ms\n", t.elapsed().as_secs_f64() * 1e3);
    println!(
        "{:<6} {:>12} {:>12} {:>14} {:>12} {:>11}",
        "dtype", "blob bytes", "arena bytes", "ms per image", "cosine", "max abs"
    );
    for precision in [Precision::F32, Precision::F16, Precision::Int8] {
        let bytes = build_blob(&weights, BlobOptions::new(precision), || {})?;
        let blob = BlobBytes::copy(&bytes);
        let model = Model::from_blob(blob.bytes())?.with_kernels(detect_kernels());
        let mut times = Vec::new();
        let mut out = None;
        for _ in 0..runs {
            let t = Instant::now();
            out = Some(run_batch(&model, &images, b, m, false)?);
            times.push(t.elapsed().as_secs_f64() * 1e3 / b as f64);
        }
        times.sort_by(f64::total_cmp);
        let a = agreement(&out.expect("ran at least once").output, &want);
        println!(
            "{:<6} {:>12} {:>12} {:>14.2} {:>12.7} {:>11.2e}",
            precision.name(),
            bytes.len(),
            model.arena_bytes(),
            times[times.len() / 2],
            a.cosine,
            a.max_abs
        );
    }
    println!("\n(cosine and max abs error of qformer_output against the fp32 reference; time: median of {runs} runs, one thread; int8 GEMM: {})", detect_kernels().q8.name());
    demo_instruct(runs)
}

/// The demo's InstructBLIP part: the same model with text parts, an instruction tokenized by
/// each blob's own vocabulary, every dtype against the fp32 reference; then two more
/// questions about the first image through its encoded keys and values.
fn demo_instruct(runs: usize) -> Result<()> {
    let weights = synth::Spec::hf_init(synth::demo_instruct(), 2025).build();
    let c = weights.config;
    let (m, dv) = (c.max_image_tokens as usize, c.encoder_hidden as usize);
    let image = synth::images(8, 1, m, dv, &[3, 100, 257], 30.0);
    let prompts =
        ["What is the colour of the car in this picture?", "How many people are there?", "Describe the image briefly."];
    println!(
        "\nInstructBLIP: the same model with text parts (instructions up to {} tokens, a built-in vocabulary of {} tokens); instruction {:?}",
        c.max_text_tokens, c.vocab_size, prompts[0]
    );
    println!(
        "{:<6} {:>12} {:>12} {:>14} {:>12} {:>11}",
        "dtype", "blob bytes", "arena bytes", "ms per image", "cosine", "max abs"
    );
    let mut last = None;
    for precision in [Precision::F32, Precision::F16, Precision::Int8] {
        let bytes = build_blob(&weights, BlobOptions::new(precision), || {})?;
        let blob = BlobBytes::copy(&bytes);
        let model = Model::from_blob(blob.bytes())?.with_kernels(detect_kernels());
        let mut ids = vec![0u32; c.max_text_tokens as usize];
        let t = model.tokenize(prompts[0], &mut ids)?;
        ids.truncate(t.len);
        let text = Instructions::one(ids.clone());
        let want = reference::forward_text(&weights, &image, m, Some((&ids, &text.mask))).output;
        let mut times = Vec::new();
        let mut out = None;
        for _ in 0..runs {
            let t = Instant::now();
            out = Some(run_batch_text(&model, &image, 1, m, Some(&text), false, &qformer_core::Sequential)?);
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let a = agreement(&out.expect("ran at least once").output, &want);
        println!(
            "{:<6} {:>12} {:>12} {:>14.2} {:>12.7} {:>11.2e}",
            precision.name(),
            bytes.len(),
            model.arena_bytes(),
            median(&mut times),
            a.cosine,
            a.max_abs
        );
        last = Some(bytes);
    }
    // Many questions about one image (int8): its cross-attention keys and values once.
    let bytes = last.expect("three dtypes ran");
    let blob = BlobBytes::copy(&bytes);
    let model = Model::from_blob(blob.bytes())?.with_kernels(detect_kernels());
    let mut arena = qformer_std::runtime::Arena::new(model.arena_bytes());
    let mut cache = qformer_std::runtime::Arena::new(model.encoded_image_bytes());
    let seq = &qformer_core::Sequential;
    let t = Instant::now();
    let encoded = model.encode_image(&image, cache.bytes_mut(), arena.bytes_mut(), seq)?;
    let encode_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut out = vec![0f32; (c.num_queries * c.hidden) as usize];
    for p in &prompts[1..] {
        let mut ids = vec![0u32; c.max_text_tokens as usize];
        let n = model.tokenize(p, &mut ids)?.len;
        let t = Instant::now();
        let text = qformer_core::Text { ids: &ids[..n], mask: None };
        let none = &mut |_: usize, _: &[f32]| {};
        model.forward_with(
            qformer_core::Image::Encoded(&encoded),
            Some(text),
            arena.bytes_mut(),
            &mut out,
            None,
            seq,
            none,
        )?;
        let question_ms = t.elapsed().as_secs_f64() * 1e3;
        let want = reference::forward_text(&weights, &image, m, Some((&ids[..n], &vec![1; n]))).output;
        println!(
            "int8, image encoded once ({encode_ms:.2} ms, {}): {p:?} in {question_ms:.2} ms, cosine {:.7}",
            report::bytes(model.encoded_image_bytes()),
            agreement(&out, &want).cosine
        );
    }
    Ok(())
}
