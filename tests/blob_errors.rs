//! Every bad blob and bad input gets its own, exact error; nothing panics.

use qformer_core::blob::{self, HEADER_BYTES};
use qformer_core::error::{Buffer, TensorProblem};
use qformer_core::{Error, Model, Precision, Role};
use qformer_std::runtime::{Arena, BlobBytes};
use qformer_tests::{reseal, tiny_blob, TINY};

fn load(bytes: &[u8]) -> Result<(), Error> {
    let b = BlobBytes::copy(bytes);
    Model::from_blob(b.bytes()).map(|_| ())
}

fn set_u32(blob: &mut [u8], at: usize, v: u32) {
    blob[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

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
        ("newer version", Box::new(|b| set_u32(b, 8, 2)), Error::UnsupportedVersion { found: 2, supported: 1 }),
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
                set_u32(b, 36, 7);
                reseal(b)
            }),
            Error::BadHeader { field: "precision", value: 7 },
        ),
        (
            "reserved header word",
            Box::new(|b| {
                set_u32(b, 100, 1);
                reseal(b)
            }),
            Error::BadHeader { field: "reserved", value: 1 },
        ),
        (
            "heads do not divide hidden",
            Box::new(|b| {
                set_u32(b, 52, 5);
                reseal(b)
            }),
            Error::InvalidConfig { field: "num_heads", value: 5 },
        ),
        (
            "dimension product overflows",
            Box::new(|b| {
                set_u32(b, 72, 1 << 20);
                set_u32(b, 64, 1 << 20);
                reseal(b)
            }),
            Error::SizeOverflow,
        ),
        (
            "config disagrees with table (more layers)",
            Box::new(|b| {
                set_u32(b, 44, 3);
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
                set_u32(b, 68, 5);
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
                let e = HEADER_BYTES + 32 * 3; // layer 0 self-attention query weight
                set_u32(b, e + 16, 0x7fff_fff0);
                reseal(b)
            }),
            Error::Tensor { role: Role::SelfQueryWeight, layer: 0, problem: TensorProblem::Bounds },
        ),
        (
            "tensor misaligned",
            Box::new(|b| {
                let e = HEADER_BYTES + 32 * 3;
                let off = u32::from_le_bytes(b[e + 16..e + 20].try_into().unwrap());
                set_u32(b, e + 16, off + 4);
                reseal(b)
            }),
            Error::Tensor { role: Role::SelfQueryWeight, layer: 0, problem: TensorProblem::Bounds },
        ),
        (
            "tensors swapped",
            Box::new(|b| {
                let (x, y) = (HEADER_BYTES + 32 * 3, HEADER_BYTES + 32 * 5);
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
                b[HEADER_BYTES + 32 * 3 + 4] = 9;
                reseal(b)
            }),
            Error::Tensor { role: Role::SelfQueryWeight, layer: 0, problem: TensorProblem::DType(9) },
        ),
        (
            "wrong group",
            Box::new(|b| {
                set_u32(b, HEADER_BYTES + 32 * 3 + 28, 48);
                reseal(b)
            }),
            Error::Tensor {
                role: Role::SelfQueryWeight,
                layer: 0,
                problem: TensorProblem::ByteCount { expected: 32 * 48, found: 32 * 32 },
            },
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
        model.forward(&image, 9, small.bytes_mut(), &mut out, None).unwrap_err(),
        Error::ArenaTooSmall { needed: need, available: need - 1 }
    );
    assert_eq!(
        model.forward(&image[..dv * 10 - dv], 10, arena.bytes_mut(), &mut out, None).unwrap_err(),
        Error::ImageTokens { max: 9, found: 10 }
    );
    assert_eq!(
        model.forward(&image[..0], 0, arena.bytes_mut(), &mut out, None).unwrap_err(),
        Error::ImageTokens { max: 9, found: 0 }
    );
    assert_eq!(
        model.forward(&image[1..], 9, arena.bytes_mut(), &mut out, None).unwrap_err(),
        Error::BufferSize { buffer: Buffer::Image, expected: 9 * dv, found: 9 * dv - 1 }
    );
    assert_eq!(
        model.forward(&image, 9, arena.bytes_mut(), &mut out[1..], None).unwrap_err(),
        Error::BufferSize { buffer: Buffer::Output, expected: n * d, found: n * d - 1 }
    );
    assert_eq!(
        model.forward(&image, 9, arena.bytes_mut(), &mut out, Some(&mut proj[1..])).unwrap_err(),
        Error::BufferSize { buffer: Buffer::Projected, expected: n * p, found: n * p - 1 }
    );
    let mut nan = image.clone();
    nan[17] = f32::NAN;
    assert_eq!(
        model.forward(&nan, 9, arena.bytes_mut(), &mut out, None).unwrap_err(),
        Error::NonFiniteInput { index: 17 }
    );
    nan[17] = f32::INFINITY;
    nan[3] = f32::NEG_INFINITY;
    assert_eq!(
        model.forward(&nan, 9, arena.bytes_mut(), &mut out, None).unwrap_err(),
        Error::NonFiniteInput { index: 3 }
    );
    // A shorter image than the maximum is fine, with the projection.
    model.forward(&image[..5 * dv], 5, arena.bytes_mut(), &mut out, Some(&mut proj)).unwrap();
    assert!(out.iter().chain(&proj).all(|v| v.is_finite()));
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
