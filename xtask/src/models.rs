//! The firmware examples' models, made by the project's own tools:
//!
//! * `firmware/models/mcu` (`forward` images): the int8 blob of `qformer synth --preset mcu`
//!   (groups of 32);
//! * `firmware/models/mcu-instruct` (`instruct` images): the same model with InstructBLIP's
//!   text parts (`--preset mcu-instruct`: the built-in vocabulary, instructions up to 16
//!   tokens), and a fixed instruction the firmware tokenizes on the device.
//!
//! Each directory holds `model.qfb`, `input.f32` (image features `[M, d_v] = [50, 192]`, raw
//! little-endian f32) and `expected.f32` (`qformer run` on the host: `qformer_output [16, 128]`
//! then `projected [16, 128]`, raw little-endian f32); `mcu-instruct` also `instruction.txt`
//! (given to `qformer run --prompt`) and `ids.u32` (the host's token ids of it, little-endian
//! u32). The firmware compares its ids and output with these bit for bit. Deterministic:
//! regenerating rewrites the same bytes.

use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use qformer_core::Model;
use qformer_std::runtime::BlobBytes;
use safetensors::{Dtype, SafeTensors};

use crate::util::{at, cmd, root, run};

/// One model directory under firmware/models.
struct McuModel {
    dir: &'static str,
    preset: &'static str,
    /// The instruction of the `instruct` images, if the model has text parts.
    instruction: Option<&'static str>,
    /// The flash the blob may take.
    budget: usize,
}

const MODELS: [McuModel; 2] = [
    McuModel { dir: "mcu", preset: "mcu", instruction: None, budget: 1024 * 1024 },
    // 16 tokens with [CLS] and [SEP], the preset's max_text_tokens: "parked" is not in the
    // vocabulary and becomes five WordPiece pieces (p ##a ##r ##k ##ed).
    McuModel {
        dir: "mcu-instruct",
        preset: "mcu-instruct",
        instruction: Some("What colour is the car parked in the picture?"),
        budget: 2 * 1024 * 1024,
    },
];

/// Regenerates firmware/models/*, or with `check` writes nothing and fails if the committed
/// files differ from what the tools produce now.
pub fn models(check: bool) -> Result<()> {
    // Both bins named: `--bin` applies to every `-p`.
    run(cmd("cargo", &root())
        .args(["build", "--quiet", "--release", "--locked", "-p", "qformer-std", "-p", "quantize"])
        .args(["--bin", "qformer", "--bin", "quantize"]))?;
    for m in &MODELS {
        model(m, check)?;
    }
    if check {
        println!("models --check: firmware/models/{{mcu,mcu-instruct}} are what the tools produce");
    }
    Ok(())
}

fn model(m: &McuModel, check: bool) -> Result<()> {
    let committed = at(&format!("firmware/models/{}", m.dir));
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let out = if check { tmp.path().join(m.dir) } else { committed.clone() };
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    println!("==> firmware/models/{} (qformer synth --preset {})", m.dir, m.preset);

    let bin = |name: &str| at(&format!("target/release/{name}")).to_string_lossy().into_owned();
    let ckpt = tmp.path().join("ckpt");
    // Two image channels 30x larger than the rest (real vision features have such outliers):
    // the int8 path keeps them in f32, so the firmware runs that code too.
    run(cmd(&bin("qformer"), &root()).arg("synth").arg(&ckpt).args([
        "--preset",
        m.preset,
        "--outliers",
        "17,150",
        "--seed",
        "11",
    ]))?;
    run(cmd(&bin("quantize"), &root())
        .arg(&ckpt)
        .arg("-o")
        .arg(out.join("model.qfb"))
        .args(["--dtype", "int8", "--quiet"]))?;
    let run_out = tmp.path().join("out.safetensors");
    let mut c = cmd(&bin("qformer"), &root());
    c.arg("run")
        .arg(out.join("model.qfb"))
        .arg("--input")
        .arg(ckpt.join("input.safetensors"))
        .arg("--output")
        .arg(&run_out)
        .args(["--threads", "1"]);
    if let Some(text) = m.instruction {
        c.args(["--prompt", text]);
    }
    run(&mut c)?;

    let mut files = vec!["model.qfb", "input.f32", "expected.f32"];
    write(&out.join("input.f32"), &f32_tensors(&ckpt.join("input.safetensors"), &["image_embeds"])?)?;
    write(&out.join("expected.f32"), &f32_tensors(&run_out, &["qformer_output", "projected"])?)?;
    if let Some(text) = m.instruction {
        // The ids the host's tokenizer (the core's, as `qformer run --prompt` uses it) gives.
        let blob = BlobBytes::open(&out.join("model.qfb"))?;
        let model = Model::from_blob(blob.bytes()).map_err(|e| anyhow!("{}: {e}", out.join("model.qfb").display()))?;
        let mut ids = vec![0u32; model.config().max_text_tokens as usize];
        let t = model.tokenize(text, &mut ids).map_err(|e| anyhow!("cannot tokenize {text:?}: {e}"))?;
        if t.truncated() {
            bail!("{text:?} is {} tokens, over the model's {}", t.truncated_from, ids.len());
        }
        let bytes: Vec<u8> = ids[..t.len].iter().flat_map(|i| i.to_le_bytes()).collect();
        write(&out.join("instruction.txt"), text.as_bytes())?;
        write(&out.join("ids.u32"), &bytes)?;
        files.extend(["instruction.txt", "ids.u32"]);
    }

    for f in &files {
        let bytes = fs::read(out.join(f)).with_context(|| format!("cannot read {}", out.join(f).display()))?;
        println!("{f:<16} {:>8} bytes  crc32 0x{:08x}", bytes.len(), crc32fast::hash(&bytes));
    }
    let blob = fs::metadata(out.join("model.qfb"))?.len() as usize;
    if blob > m.budget {
        bail!("firmware/models/{}/model.qfb is {blob} bytes, over its {}-byte flash budget", m.dir, m.budget);
    }
    if check {
        for f in &files {
            let (now, then) = (fs::read(out.join(f))?, fs::read(committed.join(f)).unwrap_or_default());
            if now != then {
                bail!(
                    "firmware/models/{}/{f} differs from what the tools produce now; rerun `cargo xtask bless` after an intended change",
                    m.dir
                );
            }
        }
    }
    Ok(())
}

/// The bytes of the F32 tensors `names` of the safetensors file `path`, one after the other.
fn f32_tensors(path: &Path, names: &[&str]) -> Result<Vec<u8>> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st =
        SafeTensors::deserialize(&bytes).with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let mut out = Vec::new();
    for name in names {
        let t = st.tensor(name).with_context(|| format!("no tensor {name} in {}", path.display()))?;
        if t.dtype() != Dtype::F32 {
            bail!("{name} in {} is {:?}, not F32", path.display(), t.dtype());
        }
        out.extend_from_slice(t.data());
    }
    Ok(out)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
