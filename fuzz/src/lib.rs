//! Shared code of the fuzz targets: run a blob through `Model::from_blob` and, when it
//! validates, through the forward pass, checking the invariants the README promises
//! (no panic, errors instead; identical output for every executor and every int8 kernel).

use qformer_core::kernels::Kernels;
use qformer_core::{Config, Executor, Header, Image, Model, Precision, Sequential};
use qformer_std::runtime::{Arena, BlobBytes};

/// Largest arena the targets allocate for a forward (a valid blob may plan a huge arena
/// from a small file: `max_image_tokens` costs no weights).
pub const ARENA_LIMIT: usize = 64 << 20;

/// Largest forward (multiply-adds, see [`forward_work`]) the targets run, so a blob of
/// many tiny layers or many queries does not turn into a libFuzzer timeout.
pub const WORK_LIMIT: u64 = 10_000_000;

/// Image tokens the targets feed (at most).
pub const MAX_TOKENS: usize = 4;

/// An executor that cuts the products into chunks like a 3-thread pool but runs them on
/// the calling thread: exercises the row-block split deterministically.
pub struct Chunked;

impl Executor for Chunked {
    fn threads(&self) -> usize {
        3
    }
    fn for_each_chunk(&self, out: &mut [f32], chunk_len: usize, task: &(dyn Fn(usize, &mut [f32]) + Sync)) {
        // In reverse order, so no chunk can depend on another having run first.
        let chunks: Vec<&mut [f32]> = out.chunks_mut(chunk_len.max(1)).collect();
        for (i, c) in chunks.into_iter().enumerate().rev() {
            task(i, c);
        }
    }
}

/// An aligned copy of `bytes` (the core rejects a misaligned blob before reading tensors).
pub fn aligned(bytes: &[u8]) -> BlobBytes {
    BlobBytes::copy(bytes)
}

/// Rough multiply-adds of one forward with `m` image tokens.
pub fn forward_work(c: &Config, m: usize) -> u64 {
    let (n, d, i, dv, p) = (
        c.num_queries as u64,
        c.hidden as u64,
        c.intermediate as u64,
        c.encoder_hidden as u64,
        c.projection_dim as u64,
    );
    let m = m as u64;
    let layers = c.num_layers as u64;
    let cross = c.cross_layers_before(c.num_layers) as u64;
    let self_attn = 4 * n * d * d + 2 * n * n * d;
    let cross_attn = 2 * n * d * d + 2 * m * dv * d + 2 * n * m * d;
    let ffn = 2 * n * d * i;
    layers
        .saturating_mul(self_attn + ffn)
        .saturating_add(cross.saturating_mul(cross_attn))
        .saturating_add(n * d * p)
        .saturating_add(m * dv)
}

/// Deterministic image features `[m, dv]` in [-2, 2], channel 1 scaled by 40 (an outlier
/// channel, so the int8 path's mixed-precision decomposition runs).
pub fn image(m: usize, dv: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..m * dv)
        .map(|k| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0;
            if k % dv == 1 {
                v * 40.0
            } else {
                v
            }
        })
        .collect()
}

/// Whether two outputs are the same bits (any NaN equals any NaN).
pub fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

/// What [`exercise_blob`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `Model::from_blob` accepted the blob.
    pub loaded: bool,
    /// The forward ran (arena and work within the limits).
    pub ran: bool,
    /// The forward stopped with `Error::NonFiniteActivation` (weights that overflow f32 on
    /// this image): the one error a validated model with correct buffers may return. An
    /// `Ok` forward has only finite outputs (asserted).
    pub overflowed: bool,
}

/// `Header::parse` and `Model::from_blob` on `bytes` (copied 16-byte aligned); when the
/// blob validates, checks that the header agrees and runs [`exercise_model`]. Panics only
/// on a broken invariant.
pub fn exercise_blob(bytes: &[u8], seed: u64) -> Outcome {
    let header = Header::parse(bytes);
    if let Ok(h) = &header {
        let _ = h.arena_bytes();
        let _ = h.config();
    }
    let copy = aligned(bytes);
    let model = match Model::from_blob(copy.bytes()) {
        Ok(model) => model,
        Err(e) => {
            // Every error has a message.
            assert!(!e.to_string().is_empty());
            return Outcome::default();
        }
    };
    let h = header.expect("a blob Model::from_blob accepts has a valid header");
    assert_eq!(h.arena_bytes(), Ok(model.arena_bytes()), "header and model disagree on the arena");
    exercise_model(&model, seed)
}

/// Runs the forward of a validated model on a small deterministic image (if the arena and
/// the work are within [`ARENA_LIMIT`] and [`WORK_LIMIT`]): with the scalar kernels, with
/// the scalar kernels cut into row blocks (must be bit-identical) and, for int8, with the
/// GEMM and the quantizer detected on this CPU (must be bit-identical too). A validated
/// model with correctly sized buffers must not fail.
pub fn exercise_model(model: &Model<'_>, seed: u64) -> Outcome {
    let mut outcome = Outcome { loaded: true, ..Outcome::default() };
    let c = *model.config();
    let m = 1 + (seed as usize) % (c.max_image_tokens as usize).min(MAX_TOKENS);
    if model.arena_bytes() > ARENA_LIMIT || forward_work(&c, m) > WORK_LIMIT {
        return outcome;
    }
    let (n, d, dv, p) =
        (c.num_queries as usize, c.hidden as usize, c.encoder_hidden as usize, c.projection_dim as usize);
    let img = image(m, dv, seed);
    // InstructBLIP blobs get an instruction of seed-chosen ids, the last one masked.
    let ids: Vec<u32> = (0..(seed as usize % 5 + 1).min(c.max_text_tokens as usize))
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % c.vocab_size.max(1) as u64) as u32)
        .collect();
    let mask: Vec<u8> = (0..ids.len()).map(|i| u8::from(i + 1 < ids.len() || ids.len() == 1)).collect();
    let text = c.has_text().then_some(qformer_core::Text { ids: &ids, mask: Some(&mask) });
    let mut arena = Arena::new(model.arena_bytes());
    type Run = Result<(Vec<f32>, Vec<f32>), qformer_core::Error>;
    let run = |model: &Model<'_>, exec: &dyn Executor, arena: &mut Arena| -> Run {
        let mut out = vec![0f32; n * d];
        let mut proj = vec![0f32; n * p];
        let projected = if p > 0 { Some(&mut proj[..]) } else { None };
        let none = &mut |_: usize, _: &[f32]| {};
        match model.forward_with(Image::Features(&img), text, arena.bytes_mut(), &mut out, projected, exec, none) {
            Ok(()) => {
                assert!(
                    out.iter().chain(&proj).all(|v| v.is_finite()),
                    "a forward returned Ok with non-finite outputs"
                );
                Ok((out, proj))
            }
            Err(e @ qformer_core::Error::NonFiniteActivation { .. }) => Err(e),
            Err(e) => panic!("forward of a validated model with correct buffers failed: {e}"),
        }
    };
    let same = |a: &Run, b: &Run| match (a, b) {
        (Ok((o1, p1)), Ok((o2, p2))) => same_bits(o1, o2) && same_bits(p1, p2),
        (Err(e1), Err(e2)) => e1 == e2,
        _ => false,
    };
    let scalar = model.with_kernels(Kernels::SCALAR);
    let first = run(&scalar, &Sequential, &mut arena);
    outcome.ran = true;
    outcome.overflowed = first.is_err();
    // The arena is reused dirty: the output must not depend on what it held.
    let second = run(&scalar, &Chunked, &mut arena);
    assert!(same(&first, &second), "row-block split changed the output");
    // The image encoded once (the many-questions path) gives the same bits.
    if first.is_ok() && model.encoded_image_bytes() <= ARENA_LIMIT {
        let mut cache = Arena::new(model.encoded_image_bytes());
        if let Ok(encoded) = scalar.encode_image(&img, cache.bytes_mut(), arena.bytes_mut(), &Sequential) {
            let mut out = vec![0f32; n * d];
            let none = &mut |_: usize, _: &[f32]| {};
            let r = scalar.forward_with(Image::Encoded(&encoded), text, arena.bytes_mut(), &mut out, None, &Sequential, none);
            assert!(r.is_ok() && first.as_ref().is_ok_and(|(o, _)| same_bits(o, &out)), "the encoded image changed the output");
        }
    }
    if model.precision() == Precision::Int8 {
        let detected = model.with_kernels(qformer_std::runtime::detect_kernels());
        let third = run(&detected, &Sequential, &mut arena);
        assert!(
            same(&first, &third),
            "int8 kernels {} / {} differ from scalar",
            detected.kernels().q8.name(),
            detected.kernels().quant.name()
        );
    }
    outcome
}
