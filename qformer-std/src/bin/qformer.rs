//! The `qformer` command line: run, verify, inspect and demo Q-Former blobs.
//!
//! Exit codes: 0 success; 1 error (bad file, bad input, failed check); 2 usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use qformer_core::{Model, Precision};
use qformer_std::checkpoint::{self, LoadOptions};
use qformer_std::files::{CreatedDir, Output};
use qformer_std::io::{encode_tensors, read_images, write_tensors, Images};
use qformer_std::metrics::{agreement, Agreement};
use qformer_std::runtime::{detect_kernels, run_batch, run_batch_with, BlobBytes, Threads};
use qformer_std::writer::{build_blob, BlobOptions};
use qformer_std::{reference, report, synth};

#[derive(Parser)]
#[command(name = "qformer", version, about = "Run, verify and inspect quantized Q-Former blobs (BLIP-2, MiniGPT-4)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a blob on image features and write the query outputs.
    Run {
        /// The blob (made by `quantize`).
        model: PathBuf,
        /// Image features: safetensors with `image_embeds` [M, d_v] or [B, M, d_v], or .npy.
        #[arg(long)]
        input: PathBuf,
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
        /// Image features, as for `run`.
        #[arg(long)]
        input: PathBuf,
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
        /// features; 815 KiB in int8).
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
    if !(-1.0..=1.0).contains(&v) {
        return Err(format!("{s} is not a cosine similarity (a number from -1 to 1)"));
    }
    Ok(v)
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Preset {
    Blip2,
    Demo,
    Mcu,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = qformer_std::files::remove_temporaries_on_signals().and_then(|()| match cli.command {
        Command::Run { model, input, output, threads, load } => run(&model, &input, &output, threads, load),
        Command::Bench { model, input, threads, warmup, iters, json, load } => {
            bench(&model, input.as_deref(), threads, warmup, iters, json, load)
        }
        Command::Verify { model, reference, config, input, min_cosine } => {
            verify(&model, &reference, config, &input, min_cosine)
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
    let c = model.config();
    if images.dim != c.encoder_hidden as usize {
        bail!("{}: image_embeds are {} wide, the model expects d_v = {}", path.display(), images.dim, c.encoder_hidden);
    }
    if images.tokens == 0 || images.tokens > c.max_image_tokens as usize {
        bail!("{}: {} image tokens, the blob accepts 1 to {}", path.display(), images.tokens, c.max_image_tokens);
    }
    Ok(())
}

fn run(model_path: &Path, input: &Path, output: &Path, threads: usize, load: Load) -> Result<()> {
    // Refused outputs and thread counts fail before any work.
    let out_file = Output::create(output, &[model_path, input])?;
    let pool = Threads::new(threads)?;
    let blob = load.open(model_path)?;
    let model = open_model(&blob, model_path)?;
    let images = read_images(input)?;
    check_input(&model, &images, input)?;
    let out = run_batch_with(&model, &images.data, images.batch, images.tokens, false, &pool)?;
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
    input: &Path,
    min_cosine: f64,
) -> Result<()> {
    let blob = BlobBytes::open(model_path)?;
    let model = open_model(&blob, model_path)?;
    let opts = LoadOptions { config, max_image_tokens: Some(model.config().max_image_tokens), progress: true };
    let weights = checkpoint::load(reference_path, &opts)?;
    if weights.config != *model.config() {
        bail!(
            "{} was not made from {}: configs differ\n  blob:\n{}\n  checkpoint:\n{}",
            model_path.display(),
            reference_path.display(),
            report::config(model.config()),
            report::config(&weights.config)
        );
    }
    let images = read_images(input)?;
    check_input(&model, &images, input)?;
    let (b, m, dv) = (images.batch, images.tokens, images.dim);
    let got = run_batch(&model, &images.data, b, m, true)?;
    let refs: Vec<reference::Output> =
        (0..b).map(|i| reference::forward(&weights, &images.data[i * m * dv..(i + 1) * m * dv], m)).collect();
    let cat =
        |f: &dyn Fn(&reference::Output) -> &[f32]| refs.iter().flat_map(|r| f(r).iter().copied()).collect::<Vec<f32>>();

    println!(
        "{} ({}) against the fp32 reference of {}, {b} image(s) of {m} tokens",
        model_path.display(),
        model.precision().name(),
        reference_path.display()
    );
    println!("{:<16} {:>12} {:>12} {:>12}", "", "cosine", "max abs", "rms");
    for (i, h) in got.hidden_states.iter().enumerate() {
        let want = cat(&|r| &r.hidden_states[i]);
        let name = if i == 0 { "input norm".to_string() } else { format!("layer {}", i - 1) };
        print_agreement(&name, &agreement(h, &want));
    }
    let out = agreement(&got.output, &cat(&|r| &r.output));
    print_agreement("qformer_output", &out);
    let mut worst = out.cosine;
    if let Some(p) = &got.projected {
        let a = agreement(p, &cat(&|r| r.projected.as_deref().unwrap_or(&[])));
        print_agreement("projected", &a);
        worst = worst.min(a.cosine);
    }
    if worst < min_cosine {
        bail!("cosine similarity {worst:.7} is below --min-cosine {min_cosine}");
    }
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

fn bench(
    model_path: &Path,
    input: Option<&Path>,
    threads: usize,
    warmup: usize,
    iters: usize,
    json: bool,
    load: Load,
) -> Result<()> {
    if iters == 0 {
        bail!("--iters must be at least 1");
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
    let run = || run_batch_with(&model, &images.data, images.batch, images.tokens, false, &pool);
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
    ms.sort_by(f64::total_cmp);
    let median = if iters % 2 == 1 { ms[iters / 2] } else { (ms[iters / 2 - 1] + ms[iters / 2]) / 2.0 };
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
    let names = ["config.json", "model.safetensors", "input.safetensors"];
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
                let _ = std::fs::remove_file(f);
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
    Ok(())
}
