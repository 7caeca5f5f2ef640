//! `verify`: a blob against the fp32 reference computed from the checkpoint it was made from,
//! layer by layer. The `qformer verify` command line and the Python module both call these.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use qformer_core::Model;

use crate::checkpoint::{self, LoadOptions};
use crate::io::Images;
use crate::metrics::{agreement, Agreement};
use crate::runtime::{run_batch_text, Instructions};
use crate::weights::Weights;
use crate::{reference, report};

/// One row of the per-layer table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// `input norm`, `layer 0` ... `layer L-1`, `qformer_output`, `projected`.
    pub name: String,
    /// The blob's values against the reference's.
    pub agreement: Agreement,
}

/// Reads the fp32 weights of `reference_path` for comparison with `model` (the blob at
/// `model_path`): planned for the blob's image tokens and instruction length, and refused
/// when its config or vocabulary is not the blob's.
pub fn load_reference(
    model: &Model<'_>,
    model_path: &Path,
    reference_path: &Path,
    config: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
    progress: bool,
) -> Result<Weights> {
    let c = model.config();
    let opts = LoadOptions {
        config,
        max_image_tokens: Some(c.max_image_tokens),
        progress,
        tokenizer,
        max_text_tokens: c.has_text().then_some(c.max_text_tokens),
    };
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
    if !same_vocab(model, &weights) {
        bail!("{} was not made from {}: their vocabularies differ", model_path.display(), reference_path.display());
    }
    Ok(weights)
}

/// Whether the blob's vocabulary and tokenizer are the ones `weights` carry.
fn same_vocab(model: &Model<'_>, weights: &Weights) -> bool {
    match (model.vocab(), &weights.vocab) {
        (None, None) => true,
        (Some(v), Some(w)) => {
            let tokens = qformer_core::tokenizer::Vocab::new(&w.text, &w.offsets, &w.sorted);
            model.header().tokenizer_options() == w.options
                && tokens.is_ok_and(|t| t.len() == v.len() && (0..v.len() as u32).all(|i| t.token(i) == v.token(i)))
        }
        _ => false,
    }
}

/// Runs `images` (checked with [`crate::runtime::check_images`]) and their instructions
/// through the blob, one thread, and through the reference; the agreement after the input
/// LayerNorm, after every layer, of `qformer_output` and, with a projection, of `projected`.
pub fn compare(model: &Model<'_>, weights: &Weights, images: &Images, text: Option<&Instructions>) -> Result<Vec<Row>> {
    let (b, m, dv) = (images.batch, images.tokens, images.dim);
    let got = run_batch_text(model, &images.data, b, m, text, true, &qformer_core::Sequential)?;
    let refs: Vec<reference::Output> = (0..b)
        .map(|i| {
            let t = text.map(|t| t.text(i));
            let t = t.as_ref().map(|t| (t.ids, t.mask.unwrap_or(&[])));
            reference::forward_text(weights, &images.data[i * m * dv..(i + 1) * m * dv], m, t)
        })
        .collect();
    let cat =
        |f: &dyn Fn(&reference::Output) -> &[f32]| refs.iter().flat_map(|r| f(r).iter().copied()).collect::<Vec<f32>>();
    let mut rows = Vec::new();
    for (i, h) in got.hidden_states.iter().enumerate() {
        let want = cat(&|r| &r.hidden_states[i]);
        let name = if i == 0 { "input norm".to_string() } else { format!("layer {}", i - 1) };
        rows.push(Row { name, agreement: agreement(h, &want) });
    }
    rows.push(Row { name: "qformer_output".into(), agreement: agreement(&got.output, &cat(&|r| &r.output)) });
    if let Some(p) = &got.projected {
        let a = agreement(p, &cat(&|r| r.projected.as_deref().unwrap_or(&[])));
        rows.push(Row { name: "projected".into(), agreement: a });
    }
    Ok(rows)
}

/// The lowest cosine of the outputs (`qformer_output` and `projected`), the one checked.
pub fn worst_cosine(rows: &[Row]) -> f64 {
    rows.iter()
        .filter(|r| r.name == "qformer_output" || r.name == "projected")
        .map(|r| r.agreement.cosine)
        .fold(f64::INFINITY, f64::min)
}

/// Fails when [`worst_cosine`] is below `min_cosine`, with the command line's message.
pub fn check(rows: &[Row], min_cosine: f64) -> Result<()> {
    let worst = worst_cosine(rows);
    if worst < min_cosine {
        bail!("cosine similarity {worst:.7} is below --min-cosine {min_cosine}");
    }
    Ok(())
}

/// `--min-cosine`: a finite number in [-1, 1] (NaN would make every comparison pass), with
/// the command line's message.
pub fn check_min_cosine(v: f64, written: &str) -> Result<(), String> {
    if !(-1.0..=1.0).contains(&v) {
        return Err(format!("{written} is not a cosine similarity (a number from -1 to 1)"));
    }
    Ok(())
}
