//! The int8 forward is deterministic: the committed tiny blob, input and output in
//! `tests/fixtures/tiny_int8` are what the current writer and runtime produce on this host,
//! with every kernel variant. `qformer-core`'s own tests compare other targets (aarch64
//! under QEMU, the bare-metal firmware) against the same output bytes.
//!
//! Regenerate after an intended change with `QFORMER_BLESS=1 cargo test -p qformer-tests
//! --test determinism`.

use qformer_core::kernels::{gemm::Q8Gemm, Kernels};
use qformer_core::{Model, Precision};
use qformer_std::runtime::{detect_kernels, run_batch, BlobBytes};
use qformer_tests::{fixture, tiny_blob, TINY};

fn check_or_bless(name: &str, bytes: &[u8]) {
    let path = fixture("tiny_int8").join(name);
    if std::env::var_os("QFORMER_BLESS").is_some() {
        std::fs::write(&path, bytes).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(committed == bytes, "{} differs from what this build produces", path.display());
}

#[test]
fn tiny_int8_blob_input_and_output_are_reproduced() {
    let blob = tiny_blob(Precision::Int8);
    check_or_bless("model.qfb", &blob);
    let m = TINY.max_image_tokens as usize;
    let image = qformer_std::synth::images(99, 1, m, TINY.encoder_hidden as usize, &[7], 30.0);
    check_or_bless("input.f32", &image.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    let b = BlobBytes::copy(&blob);
    let mut outputs = Vec::new();
    for kernels in [Kernels { q8: Q8Gemm::SCALAR, ..Kernels::SCALAR }, Kernels::COMPILED, detect_kernels()] {
        let model = Model::from_blob(b.bytes()).unwrap().with_kernels(kernels);
        let out = run_batch(&model, &image, 1, m, false).unwrap();
        let bytes: Vec<u8> =
            out.output.iter().chain(out.projected.as_ref().unwrap()).flat_map(|v| v.to_le_bytes()).collect();
        outputs.push((kernels.q8.name(), bytes));
    }
    for (name, bytes) in &outputs {
        assert!(*bytes == outputs[0].1, "{name} differs from scalar");
    }
    check_or_bless("output.f32", &outputs[0].1);
}

#[test]
fn output_is_identical_for_any_thread_count() {
    use qformer_std::runtime::{run_batch_with, Threads};
    let w = qformer_std::synth::Spec::textured(qformer_std::synth::DEMO, 3).build();
    let (m, dv) =
        (qformer_std::synth::DEMO.max_image_tokens as usize, qformer_std::synth::DEMO.encoder_hidden as usize);
    let images = qformer_std::synth::images(5, 2, m, dv, &[1], 30.0);
    for precision in [Precision::F32, Precision::F16, Precision::Int8] {
        let blob =
            qformer_std::writer::build_blob(&w, qformer_std::writer::BlobOptions::new(precision), || {}).unwrap();
        let b = BlobBytes::copy(&blob);
        let model = Model::from_blob(b.bytes()).unwrap().with_kernels(detect_kernels());
        let one = run_batch(&model, &images, 2, m, false).unwrap();
        for threads in [2, 3, 4] {
            let pool = Threads::new(threads).unwrap();
            let many = run_batch_with(&model, &images, 2, m, false, &pool).unwrap();
            let same = one.output.iter().zip(&many.output).all(|(a, b)| a.to_bits() == b.to_bits())
                && one
                    .projected
                    .as_ref()
                    .unwrap()
                    .iter()
                    .zip(many.projected.as_ref().unwrap())
                    .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{} with {threads} threads differs from 1 thread", precision.name());
        }
    }
}
