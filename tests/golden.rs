//! End-to-end checks against the Hugging Face golden data in `tests/fixtures`.

use qformer_core::{Model, Precision};
use qformer_std::metrics::agreement;
use qformer_std::runtime::{run_batch, BlobBytes};
use qformer_std::writer::{build_blob, BlobOptions};
use qformer_std::{reference, weights::Weights};
use qformer_tests::{assert_close, weights, Golden, CASES};

/// Images of a case: `(data, batch, tokens)`.
fn images(g: &Golden) -> (Vec<f32>, usize, usize) {
    let (shape, data) = g.need("image_embeds").unwrap();
    (data, shape[0], shape[1])
}

#[test]
fn reference_matches_hugging_face() {
    for case in CASES {
        let w = weights(case);
        let g = Golden::open(case);
        let (imgs, batch, m) = images(&g);
        let dv = w.config.encoder_hidden as usize;
        let nd = (w.config.num_queries * w.config.hidden) as usize;
        for b in 0..batch {
            let out = reference::forward(&w, &imgs[b * m * dv..(b + 1) * m * dv], m);
            let (_, want) = g.need("qformer_output").unwrap();
            assert_close(&format!("{case} image {b} qformer_output"), &out.output, &want[b * nd..(b + 1) * nd], 1e-4);
            for (i, h) in out.hidden_states.iter().enumerate() {
                let (_, want) = g.need(&format!("hidden_states.{i}")).unwrap();
                assert_close(&format!("{case} image {b} hidden_states.{i}"), h, &want[b * nd..(b + 1) * nd], 1e-4);
            }
            match (out.projected, g.get("projected")) {
                (Some(p), Some((_, want))) => {
                    let np = p.len();
                    assert_close(&format!("{case} image {b} projected"), &p, &want[b * np..(b + 1) * np], 1e-4)
                }
                (None, None) => {}
                (p, w) => {
                    panic!("{case}: projection present in reference: {}, in golden: {}", p.is_some(), w.is_some())
                }
            }
        }
    }
}

fn run_blob(w: &Weights, opts: BlobOptions, imgs: &[f32], batch: usize, m: usize) -> qformer_std::runtime::BatchOutput {
    let bytes = build_blob(w, opts, || {}).unwrap();
    let blob = BlobBytes::copy(&bytes);
    let model = Model::from_blob(blob.bytes()).unwrap();
    run_batch(&model, imgs, batch, m, true).map_err(|e| format!("{e:#}")).unwrap()
}

#[test]
fn f32_blob_matches_hugging_face() {
    for case in CASES {
        let w = weights(case);
        let g = Golden::open(case);
        let (imgs, batch, m) = images(&g);
        let out = run_blob(&w, BlobOptions::new(Precision::F32), &imgs, batch, m);
        assert_close(&format!("{case} qformer_output"), &out.output, &g.need("qformer_output").unwrap().1, 1e-4);
        for (i, h) in out.hidden_states.iter().enumerate() {
            assert_close(
                &format!("{case} hidden_states.{i}"),
                h,
                &g.need(&format!("hidden_states.{i}")).unwrap().1,
                1e-4,
            );
        }
        if let Some((_, want)) = g.get("projected") {
            assert_close(&format!("{case} projected"), out.projected.as_ref().unwrap(), &want, 1e-4);
        }
    }
}

#[test]
fn fp16_blob_agrees_with_hugging_face() {
    for case in CASES {
        let w = weights(case);
        let g = Golden::open(case);
        let (imgs, batch, m) = images(&g);
        let want = g.need("qformer_output").unwrap().1;
        let out = run_blob(&w, BlobOptions::new(Precision::F16), &imgs, batch, m);
        let a = agreement(&out.output, &want);
        assert!(a.cosine >= 0.99999, "{case} fp16: cosine {} < 0.99999", a.cosine);
    }
}
