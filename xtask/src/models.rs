//! firmware/models/mcu from the project's own tools:
//!
//! * `model.qfb`: int8 blob of `qformer synth --preset mcu` (groups of 32);
//! * `input.f32`: image features `[M, d_v] = [50, 192]`, raw little-endian f32;
//! * `expected.f32`: `qformer run` on the host: `qformer_output [16, 128]` then
//!   `projected [16, 128]`, raw little-endian f32.
//!
//! The firmware compares its output with `expected.f32` bit for bit. Deterministic:
//! regenerating rewrites the same bytes.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};

use crate::util::{at, cmd, root, run};

const FILES: [&str; 3] = ["model.qfb", "input.f32", "expected.f32"];
/// The examples' flash budget for the blob.
const FLASH_BUDGET: usize = 1024 * 1024;

/// Regenerates firmware/models/mcu, or with `check` writes nothing and fails if the committed
/// files differ from what the tools produce now.
pub fn models(check: bool) -> Result<()> {
    let committed = at("firmware/models/mcu");
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let out = if check { tmp.path().join("mcu") } else { committed.clone() };
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    // Both bins named: `--bin` applies to every `-p`.
    run(cmd("cargo", &root())
        .args(["build", "--quiet", "--release", "--locked", "-p", "qformer-std", "-p", "quantize"])
        .args(["--bin", "qformer", "--bin", "quantize"]))?;
    let bin = |name: &str| at(&format!("target/release/{name}"));
    let ckpt = tmp.path().join("ckpt");
    // Two image channels 30x larger than the rest (real vision features have such outliers):
    // the int8 path keeps them in f32, so the firmware runs that code too.
    run(cmd(&bin("qformer").to_string_lossy(), &root()).arg("synth").arg(&ckpt).args([
        "--preset",
        "mcu",
        "--outliers",
        "17,150",
        "--seed",
        "11",
    ]))?;
    run(cmd(&bin("quantize").to_string_lossy(), &root())
        .arg(&ckpt)
        .arg("-o")
        .arg(out.join("model.qfb"))
        .args(["--dtype", "int8", "--quiet"]))?;
    let run_out = tmp.path().join("out.safetensors");
    run(cmd(&bin("qformer").to_string_lossy(), &root())
        .arg("run")
        .arg(out.join("model.qfb"))
        .arg("--input")
        .arg(ckpt.join("input.safetensors"))
        .arg("--output")
        .arg(&run_out)
        .args(["--threads", "1"]))?;

    let input = f32_tensors(&ckpt.join("input.safetensors"), &["image_embeds"])?;
    write(&out.join("input.f32"), &input)?;
    let expected = f32_tensors(&run_out, &["qformer_output", "projected"])?;
    write(&out.join("expected.f32"), &expected)?;

    for f in FILES {
        let bytes = fs::read(out.join(f)).with_context(|| format!("cannot read {}", out.join(f).display()))?;
        println!("{f:<14} {:>8} bytes  crc32 0x{:08x}", bytes.len(), crc32fast::hash(&bytes));
    }
    let blob = fs::metadata(out.join("model.qfb"))?.len() as usize;
    if blob > FLASH_BUDGET {
        bail!("model.qfb is {blob} bytes, over the {FLASH_BUDGET}-byte flash budget");
    }
    if check {
        for f in FILES {
            let (now, then) = (fs::read(out.join(f))?, fs::read(committed.join(f)).unwrap_or_default());
            if now != then {
                bail!(
                    "firmware/models/mcu/{f} differs from what the tools produce now; rerun `cargo xtask bless` after an intended change"
                );
            }
        }
        println!("models --check: firmware/models/mcu is what the tools produce");
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
