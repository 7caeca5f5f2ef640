//! The status table, and the Rust side of the boundary on the host (the C tests in
//! `examples/linux/test_errors.c` drive the same calls from C).

use super::*;
use qformer_core::blob::Role;
use qformer_core::error::{Buffer, TensorProblem};
use qformer_core::tokenizer::{TokenizeError, VocabError};

/// One value of every core error variant.
fn every_error() -> [Error; 25] {
    [
        Error::Truncated { needed: 1, available: 0 },
        Error::TrailingBytes { declared: 1, available: 2 },
        Error::BadMagic,
        Error::UnsupportedVersion { found: 1, supported: 2 },
        Error::BadHeader { field: "x", value: 1 },
        Error::ChecksumMismatch { stored: 1, computed: 2 },
        Error::Misaligned { buffer: Buffer::Arena, align: 16 },
        Error::InvalidConfig { field: "hidden", value: 0 },
        Error::SizeOverflow,
        Error::TensorCount { expected: 1, found: 2 },
        Error::Tensor { role: Role::QueryTokens, layer: 0, problem: TensorProblem::Reserved },
        Error::ArenaTooSmall { needed: 2, available: 1 },
        Error::BufferSize { buffer: Buffer::Output, expected: 2, found: 1 },
        Error::ImageTokens { max: 1, found: 2 },
        Error::NonFiniteInput { index: 0 },
        Error::NoProjection,
        Error::ImageShape { width: 2, len: 3 },
        Error::NonFiniteActivation { layer: 1 },
        Error::NoText,
        Error::TextTokens { max: 1, found: 2 },
        Error::TokenId { index: 0, id: 9, vocab: 1 },
        Error::Mask { index: 0, value: 2 },
        Error::Vocab(VocabError::NoOffsets),
        Error::ForeignImage,
        Error::Tokenize(TokenizeError::OutputTooShort(1)),
    ]
}

#[test]
fn every_core_error_has_its_own_status() {
    let codes: Vec<qf_status> = every_error().iter().map(status_of).collect();
    for (i, c) in codes.iter().enumerate() {
        assert_ne!(*c, QF_ERR_UNKNOWN, "{:?} has no status of its own", every_error()[i]);
        assert!(!codes[..i].contains(c), "{:?} shares status {c}", every_error()[i]);
        assert!(*c > 0);
    }
}

#[test]
fn every_status_is_described_once() {
    for (i, (s, d)) in STATUSES.iter().enumerate() {
        assert!(!d.to_bytes().is_empty());
        assert!(STATUSES[..i].iter().all(|(o, _)| o != s), "status {s} twice");
        // SAFETY: qf_status_str returns a static NUL-terminated string.
        let got = unsafe { CStr::from_ptr(qf_status_str(*s)) };
        assert_eq!(got, *d);
    }
    for e in every_error() {
        assert!(STATUSES.iter().any(|(s, _)| *s == status_of(&e)), "{e:?}: status not described");
    }
    // SAFETY: as above.
    assert_eq!(unsafe { CStr::from_ptr(qf_status_str(-5)) }, c"unknown status");
}

/// The MCU model, aligned.
fn mcu_blob() -> Vec<u128> {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../firmware/models/mcu/model.qfb")).unwrap();
    let mut v = vec![0u128; bytes.len().div_ceil(16)];
    bytemuck_copy(&mut v, &bytes);
    v
}

fn bytemuck_copy(dst: &mut [u128], src: &[u8]) {
    // SAFETY: `dst` has at least `src.len()` bytes (div_ceil above) and does not overlap `src`.
    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), src.len()) };
}

#[test]
fn forward_through_the_c_api_matches_the_core() {
    let blob = mcu_blob();
    let len = std::fs::metadata(concat!(env!("CARGO_MANIFEST_DIR"), "/../firmware/models/mcu/model.qfb")).unwrap().len()
        as usize;
    let mut m = qf_model { opaque: [0; QF_MODEL_WORDS] };
    // SAFETY: `blob` holds `len` bytes and outlives `m`.
    assert_eq!(unsafe { qf_model_init(&mut m, blob.as_ptr().cast(), len) }, QF_OK);
    // SAFETY: `m` is initialized.
    let (arena_len, width, out_len, proj_len) = unsafe {
        (qf_model_arena_bytes(&m), qf_model_image_width(&m), qf_model_output_len(&m), qf_model_projected_len(&m))
    };
    let input = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../firmware/models/mcu/input.f32")).unwrap();
    let image: Vec<f32> = input.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let tokens = image.len() / width;
    let mut arena = vec![0u128; arena_len.div_ceil(16)];
    let mut out = vec![0f32; out_len];
    let mut proj = vec![0f32; proj_len];
    // SAFETY: every buffer has the length given.
    let s = unsafe {
        qf_forward(
            &m,
            image.as_ptr(),
            tokens,
            arena.as_mut_ptr().cast(),
            arena_len,
            out.as_mut_ptr(),
            out_len,
            proj.as_mut_ptr(),
            proj_len,
        )
    };
    assert_eq!(s, QF_OK);
    let expected = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../firmware/models/mcu/expected.f32")).unwrap();
    let got: Vec<u8> = out.iter().chain(&proj).flat_map(|v| v.to_le_bytes()).collect();
    assert!(got == expected, "the output differs from firmware/models/mcu/expected.f32");
    // The output buffer overlapping the arena is a status.
    // SAFETY: the pointers are valid for the lengths given (the overlap is what is tested).
    let s = unsafe {
        qf_forward(
            &m,
            image.as_ptr(),
            tokens,
            arena.as_mut_ptr().cast(),
            arena_len,
            arena.as_mut_ptr().cast(),
            out_len,
            core::ptr::null_mut(),
            0,
        )
    };
    assert_eq!(s, QF_ERR_OVERLAP);
}
