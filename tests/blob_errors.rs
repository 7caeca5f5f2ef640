//! Every bad blob and bad input gets its own, exact error; nothing panics.

use std::mem::offset_of;

use qformer_core::blob::{self, HEADER_BYTES};
use qformer_core::error::{Buffer, TensorProblem};
use qformer_core::{Error, Header, Model, Precision, Role, TensorEntry};
use qformer_std::runtime::{Arena, BlobBytes};
use qformer_tests::{reseal, tiny_blob, TINY};

fn load(bytes: &[u8]) -> Result<(), Error> {
    let b = BlobBytes::copy(bytes);
    Model::from_blob(b.bytes()).map(|_| ())
}

fn set_u32(blob: &mut [u8], at: usize, v: u32) {
    blob[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Byte offset of header field `$f`.
macro_rules! header {
    ($f:ident) => {
        offset_of!(Header, $f)
    };
}

/// Byte offset of field `$f` of table entry `$i`.
macro_rules! entry {
    ($i:expr, $f:ident) => {
        HEADER_BYTES + $i * blob::ENTRY_BYTES + offset_of!(TensorEntry, $f)
    };
}

/// Entry `i` of the table.
fn entry_of(b: &[u8], i: usize) -> TensorEntry {
    TensorEntry::at_index(b, i as u32).expect("entry in range")
}

/// Sets value `k` of f32 tensor `i`.
fn set_f32(b: &mut [u8], i: usize, k: usize, v: f32) {
    let at = entry_of(b, i).offset as usize + 4 * k;
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Table index of layer 0's self-attention query weight.
const SELF_QUERY_0: usize = 3;

#[test]
fn valid_blobs_load() {
    for p in [Precision::F32, Precision::F16, Precision::Int8] {
        load(&tiny_blob(p)).unwrap();
    }
}

#[test]
fn each_bad_blob_has_its_error() {
    let good = tiny_blob(Precision::Int8);
    let n = good.len();
    type Case = (&'static str, Box<dyn Fn(&mut Vec<u8>)>, Error);
    let cases: Vec<Case> = vec![
        ("empty", Box::new(|b| b.clear()), Error::Truncated { needed: HEADER_BYTES, available: 0 }),
        ("half a header", Box::new(|b| b.truncate(60)), Error::Truncated { needed: HEADER_BYTES, available: 60 }),
        ("last byte missing", Box::new(|b| b.truncate(b.len() - 1)), Error::Truncated { needed: n, available: n - 1 }),
        (
            "trailing bytes",
            Box::new(|b| b.extend_from_slice(&[0; 16])),
            Error::TrailingBytes { declared: n, available: n + 16 },
        ),
        ("wrong magic", Box::new(|b| b[0] = b'X'), Error::BadMagic),
        (
            "newer version",
            Box::new(|b| set_u32(b, header!(version), 3)),
            Error::UnsupportedVersion { found: 3, supported: 2 },
        ),
        (
            "version 1 blob (before the text parts and the transform field)",
            Box::new(|b| set_u32(b, header!(version), 1)),
            Error::UnsupportedVersion { found: 1, supported: 2 },
        ),
        (
            "flipped data bit",
            Box::new(|b| {
                let last = b.len() - 5;
                b[last] ^= 0x10
            }),
            Error::ChecksumMismatch { stored: 0, computed: 0 },
        ),
        (
            "unknown precision",
            Box::new(|b| {
                set_u32(b, header!(precision), 7);
                reseal(b)
            }),
            Error::BadHeader { field: "precision", value: 7 },
        ),
        (
            "reserved header word",
            Box::new(|b| {
                set_u32(b, header!(reserved), 1);
                reseal(b)
            }),
            Error::BadHeader { field: "reserved", value: 1 },
        ),
        (
            "tokenizer flags in a blob without text parts",
            Box::new(|b| {
                set_u32(b, header!(text_flags), 1);
                reseal(b)
            }),
            Error::BadHeader { field: "text_flags", value: 1 },
        ),
        (
            "a [SEP] id in a blob without text parts",
            Box::new(|b| {
                set_u32(b, header!(sep_id), 102);
                reseal(b)
            }),
            Error::BadHeader { field: "sep_id", value: 102 },
        ),
        (
            "text parts half declared (T_max without a vocabulary)",
            Box::new(|b| {
                set_u32(b, header!(max_text_tokens), 8);
                reseal(b)
            }),
            Error::InvalidConfig { field: "vocab_size", value: 0 },
        ),
        (
            "an input transform this reader does not implement (a rotated int8 layer)",
            Box::new(|b| {
                b[entry!(SELF_QUERY_0, transform)] = 1;
                reseal(b)
            }),
            Error::Tensor { role: Role::SelfQueryWeight, layer: 0, problem: TensorProblem::Transform(1) },
        ),
        (
            "heads do not divide hidden",
            Box::new(|b| {
                set_u32(b, header!(num_heads), 5);
                reseal(b)
            }),
            Error::InvalidConfig { field: "num_heads", value: 5 },
        ),
        (
            "dimension product overflows",
            Box::new(|b| {
                set_u32(b, header!(max_image_tokens), 1 << 20);
                set_u32(b, header!(encoder_hidden), 1 << 20);
                reseal(b)
            }),
            Error::SizeOverflow,
        ),
        (
            "config disagrees with table (more layers)",
            Box::new(|b| {
                set_u32(b, header!(num_layers), 3);
                reseal(b)
            }),
            Error::TensorCount {
                expected: blob::tensor_count(&qformer_core::Config { num_layers: 3, ..TINY }),
                found: blob::tensor_count(&TINY),
            },
        ),
        (
            "config disagrees with table (queries)",
            Box::new(|b| {
                set_u32(b, header!(num_queries), 5);
                reseal(b)
            }),
            Error::Tensor {
                role: Role::QueryTokens,
                layer: 0,
                problem: TensorProblem::Shape { expected: [5, 32], found: [4, 32] },
            },
        ),
        (
            "tensor out of bounds",
            Box::new(|b| {
                set_u32(b, entry!(SELF_QUERY_0, offset), 0x7fff_fff0);
                reseal(b)
            }),
            Error::Tensor { role: Role::SelfQueryWeight, layer: 0, problem: TensorProblem::Bounds },
        ),
        (
            "tensor misaligned",
            Box::new(|b| {
                let off = entry_of(b, SELF_QUERY_0).offset;
                set_u32(b, entry!(SELF_QUERY_0, offset), off + 4);
                reseal(b)
            }),
            Error::Tensor { role: Role::SelfQueryWeight, layer: 0, problem: TensorProblem::Bounds },
        ),
        (
            "tensors overlap (a re-sealed table pointing two tensors at the same bytes)",
            Box::new(|b| {
                let prev = entry_of(b, SELF_QUERY_0 - 1).offset;
                set_u32(b, entry!(SELF_QUERY_0, offset), prev);
                reseal(b)
            }),
            Error::Tensor { role: Role::SelfQueryWeight, layer: 0, problem: TensorProblem::Overlap },
        ),
        (
            "tensors swapped",
            Box::new(|b| {
                let (x, y) = (entry!(SELF_QUERY_0, role), entry!(SELF_QUERY_0 + 2, role));
                let ex: Vec<u8> = b[x..x + 32].to_vec();
                b.copy_within(y..y + 32, x);
                b[y..y + 32].copy_from_slice(&ex);
                reseal(b)
            }),
            Error::Tensor {
                role: Role::SelfQueryWeight,
                layer: 0,
                problem: TensorProblem::Unexpected { role: Role::SelfKeyWeight as u16, layer: 0 },
            },
        ),
        (
            "unknown dtype",
            Box::new(|b| {
                b[entry!(SELF_QUERY_0, dtype)] = 9;
                reseal(b)
            }),
            Error::Tensor { role: Role::SelfQueryWeight, layer: 0, problem: TensorProblem::DType(9) },
        ),
        (
            "matrix dtype changed from i8 to f32 (names the dtype, not the scales fields)",
            Box::new(|b| {
                b[entry!(SELF_QUERY_0, dtype)] = 0;
                reseal(b)
            }),
            Error::Tensor { role: Role::SelfQueryWeight, layer: 0, problem: TensorProblem::DType(0) },
        ),
        (
            "wrong group",
            Box::new(|b| {
                set_u32(b, entry!(SELF_QUERY_0, group), 48);
                reseal(b)
            }),
            Error::Tensor { role: Role::SelfQueryWeight, layer: 0, problem: TensorProblem::Group(48) },
        ),
        (
            "NaN query token",
            Box::new(|b| {
                set_f32(b, 0, 5, f32::NAN);
                reseal(b)
            }),
            Error::Tensor { role: Role::QueryTokens, layer: 0, problem: TensorProblem::NonFinite(5) },
        ),
        (
            "infinite bias",
            Box::new(|b| {
                set_f32(b, SELF_QUERY_0 + 1, 2, f32::NEG_INFINITY);
                reseal(b)
            }),
            Error::Tensor { role: Role::SelfQueryBias, layer: 0, problem: TensorProblem::NonFinite(2) },
        ),
        (
            "NaN int8 scale",
            Box::new(|b| {
                let at = entry_of(b, SELF_QUERY_0).scales_offset as usize + 4 * 3;
                b[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
                reseal(b)
            }),
            Error::Tensor { role: Role::SelfQueryWeight, layer: 0, problem: TensorProblem::Scale(3) },
        ),
        (
            "negative int8 scale",
            Box::new(|b| {
                let at = entry_of(b, SELF_QUERY_0).scales_offset as usize;
                b[at..at + 4].copy_from_slice(&(-0.5f32).to_le_bytes());
                reseal(b)
            }),
            Error::Tensor { role: Role::SelfQueryWeight, layer: 0, problem: TensorProblem::Scale(0) },
        ),
        (
            "int8 value -128",
            Box::new(|b| {
                let at = entry_of(b, SELF_QUERY_0).offset as usize + 7;
                b[at] = 0x80;
                reseal(b)
            }),
            Error::Tensor { role: Role::SelfQueryWeight, layer: 0, problem: TensorProblem::Int8Range(7) },
        ),
    ];
    for (what, mutate, want) in cases {
        let mut b = good.clone();
        mutate(&mut b);
        let got = load(&b).expect_err(what);
        match (got, want) {
            (Error::ChecksumMismatch { .. }, Error::ChecksumMismatch { .. }) => {}
            (got, want) => assert_eq!(got, want, "{what}: {got}"),
        }
        assert!(!got.to_string().is_empty());
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    let good = tiny_blob(Precision::F16);
    let mut b = good.clone();
    for byte in 0..good.len() {
        let bit = byte % 8;
        b[byte] ^= 1 << bit;
        assert!(load(&b).is_err(), "flip of bit {bit} in byte {byte} not detected");
        b[byte] ^= 1 << bit;
    }
}

#[test]
fn misaligned_blob_is_rejected() {
    let good = tiny_blob(Precision::F32);
    let mut buf = vec![0u128; good.len() / 16 + 2];
    let bytes = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut buf)[4..4 + good.len()];
    bytes.copy_from_slice(&good);
    assert_eq!(Model::from_blob(bytes).unwrap_err(), Error::Misaligned { buffer: Buffer::Blob, align: 16 });
}

#[test]
fn bad_run_inputs_are_rejected_before_work() {
    let bytes = tiny_blob(Precision::Int8);
    let b = BlobBytes::copy(&bytes);
    let model = Model::from_blob(b.bytes()).unwrap();
    let (n, d, dv, p) = (4, 32, 48, 24);
    let image = vec![0.5f32; 9 * dv];
    let mut out = vec![0f32; n * d];
    let mut proj = vec![0f32; n * p];
    let mut arena = Arena::new(model.arena_bytes());
    let mut small = Arena::new(model.arena_bytes() - 1);
    let need = model.arena_bytes();
    assert_eq!(
        model.forward(&image, small.bytes_mut(), &mut out, None).unwrap_err(),
        Error::ArenaTooSmall { needed: need, available: need - 1 }
    );
    assert_eq!(
        model.forward(&vec![0.5f32; 10 * dv], arena.bytes_mut(), &mut out, None).unwrap_err(),
        Error::ImageTokens { max: 9, found: 10 }
    );
    assert_eq!(
        model.forward(&image[..0], arena.bytes_mut(), &mut out, None).unwrap_err(),
        Error::ImageTokens { max: 9, found: 0 }
    );
    assert_eq!(
        model.forward(&image[1..], arena.bytes_mut(), &mut out, None).unwrap_err(),
        Error::ImageShape { width: dv, len: 9 * dv - 1 }
    );
    assert_eq!(
        model.forward(&image, arena.bytes_mut(), &mut out[1..], None).unwrap_err(),
        Error::BufferSize { buffer: Buffer::Output, expected: n * d, found: n * d - 1 }
    );
    assert_eq!(
        model.forward(&image, arena.bytes_mut(), &mut out, Some(&mut proj[1..])).unwrap_err(),
        Error::BufferSize { buffer: Buffer::Projected, expected: n * p, found: n * p - 1 }
    );
    let mut nan = image.clone();
    nan[17] = f32::NAN;
    assert_eq!(
        model.forward(&nan, arena.bytes_mut(), &mut out, None).unwrap_err(),
        Error::NonFiniteInput { index: 17 }
    );
    nan[17] = f32::INFINITY;
    nan[3] = f32::NEG_INFINITY;
    assert_eq!(model.forward(&nan, arena.bytes_mut(), &mut out, None).unwrap_err(), Error::NonFiniteInput { index: 3 });
    // A shorter image than the maximum is fine, with the projection.
    model.forward(&image[..5 * dv], arena.bytes_mut(), &mut out, Some(&mut proj)).unwrap();
    assert!(out.iter().chain(&proj).all(|v| v.is_finite()));
    // Finite features too large for f32 arithmetic overflow inside the f32 and fp16
    // forwards: an error naming where, never NaN returned as a result. The int8 path divides
    // by the scale before multiplying, so on this model it stays finite (and LayerNorm
    // brings it back to size): then every output value must be finite.
    for p in [Precision::F32, Precision::F16, Precision::Int8] {
        let bytes = tiny_blob(p);
        let b = BlobBytes::copy(&bytes);
        let model = Model::from_blob(b.bytes()).unwrap();
        let huge = vec![3e38f32; 9 * dv];
        let mut arena = Arena::new(model.arena_bytes());
        match model.forward(&huge, arena.bytes_mut(), &mut out, Some(&mut proj)) {
            Err(Error::NonFiniteActivation { layer }) => assert!(layer >= 1 && p != Precision::Int8, "{p:?}: {layer}"),
            Err(e) => panic!("{p:?}: unexpected error {e}"),
            Ok(()) => {
                assert_eq!(p, Precision::Int8, "f32 arithmetic overflows on 3e38 features");
                assert!(out.iter().chain(&proj).all(|v| v.is_finite()), "{p:?}: non-finite output returned as Ok");
            }
        }
    }
}

#[test]
fn header_parses_in_const_context() {
    const CFG: qformer_core::Config = TINY;
    const BYTES: usize = match qformer_core::arena_bytes(&CFG, Precision::Int8, 32) {
        Ok(n) => n,
        Err(_) => panic!("tiny config plans"),
    };
    let blob = tiny_blob(Precision::Int8);
    let h = qformer_core::Header::parse(&blob).unwrap();
    assert_eq!(h.arena_bytes().unwrap(), BYTES);
    let b = BlobBytes::copy(&blob);
    assert_eq!(Model::from_blob(b.bytes()).unwrap().arena_bytes(), BYTES);
}
