//! Unit tests that run wherever the crate runs (host, and aarch64 under `qemu-aarch64` with
//! three CPU models): every int8 GEMM variant this CPU can run against scalar, and the
//! whole int8 model's output bytes against the committed host output.

use std::vec;
use std::vec::Vec;

use crate::kernels::gemm::{self, FGemm, Q8Gemm};
use crate::kernels::testing::{f_scratch_bytes, f_sweep, q8_scratch_bytes, q8_sweep, F_SHAPES, Q8_SHAPES};
use crate::kernels::Kernels;

/// Variants compiled in plus those this CPU supports at run time.
fn q8_variants() -> Vec<Q8Gemm> {
    let mut v: Vec<Q8Gemm> = gemm::compiled_variants().to_vec();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected.
        v.push(unsafe { gemm::x86::avx2_unchecked() });
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vnni")
    {
        // SAFETY: the four features were just detected.
        v.push(unsafe { gemm::x86::vnni_unchecked() });
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            // SAFETY: dotprod was just detected.
            v.push(unsafe { gemm::neon::sdot_unchecked() });
        }
        if std::arch::is_aarch64_feature_detected!("i8mm") {
            // SAFETY: i8mm was just detected.
            v.push(unsafe { gemm::neon::i8mm_unchecked() });
        }
    }
    v
}

/// Float variants compiled in plus those this CPU supports at run time.
fn f_variants() -> Vec<FGemm> {
    let mut v = vec![FGemm::SCALAR, FGemm::COMPILED];
    #[cfg(target_arch = "x86_64")]
    if ["avx2", "fma", "f16c"].iter().all(|f| match *f {
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        _ => std::arch::is_x86_feature_detected!("f16c"),
    }) {
        // SAFETY: AVX2, FMA and F16C were just detected.
        v.push(unsafe { gemm::x86::f_avx2_unchecked() });
    }
    v.dedup_by_key(|k| k.name());
    v
}

#[test]
fn every_float_variant_is_within_the_bound_of_scalar() {
    let mut scratch = vec![0u8; f_scratch_bytes(&F_SHAPES) + 64];
    for v in f_variants() {
        let n = f_sweep(v, &F_SHAPES, &mut scratch).unwrap_or_else(|m| panic!("{m:?}"));
        std::println!("{}: {n} shapes within bound (f32 and fp16 weights)", v.name());
    }
}

#[test]
fn every_quantizer_matches_scalar_bit_for_bit() {
    use crate::kernels::quant::Quantizer;
    let mut v = vec![Quantizer::SCALAR, Quantizer::COMPILED];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected.
        v.push(unsafe { crate::kernels::quant::x86::avx2_unchecked() });
    }
    v.dedup_by_key(|q| q.name());
    let mut scratch = vec![0u8; 6 * 3072 + 128];
    for q in v {
        let n = crate::kernels::testing::quant_sweep(q, &mut scratch).unwrap_or_else(|m| panic!("{m:?}"));
        std::println!("{}: {n} groups bit-exact", q.name());
    }
}

#[test]
fn every_q8_variant_matches_scalar_bit_for_bit() {
    let mut scratch = vec![0u8; q8_scratch_bytes(&Q8_SHAPES) + 64];
    let variants = q8_variants();
    for v in &variants {
        let n = q8_sweep(*v, &Q8_SHAPES, &mut scratch).unwrap_or_else(|m| panic!("{m:?}"));
        std::println!("{}: {n} shapes bit-exact", v.name());
    }
    #[cfg(target_arch = "x86_64")]
    assert!(variants.len() >= 2 || !std::arch::is_x86_feature_detected!("avx2"));
}

/// Rows longer than some kernels' fixed-size buffers take (e.g. more than 256 groups for
/// the AVX-512 VNNI 16x8 kernel's column sums) must give the same bits through their fallback.
#[test]
fn q8_variants_match_scalar_on_very_long_rows() {
    let shapes = [(9, 9, 257 * 32, 32), (8, 8, 8 * 1024 + 16, 16)];
    let mut scratch = vec![0u8; q8_scratch_bytes(&shapes) + 64];
    for v in &q8_variants() {
        q8_sweep(*v, &shapes, &mut scratch).unwrap_or_else(|m| panic!("{}: {m:?}", v.name()));
    }
}

const TINY_BLOB: &[u8] = include_bytes!("../../tests/fixtures/tiny_int8/model.qfb");
const TINY_INPUT: &[u8] = include_bytes!("../../tests/fixtures/tiny_int8/input.f32");
const TINY_OUTPUT: &[u8] = include_bytes!("../../tests/fixtures/tiny_int8/output.f32");

#[test]
fn int8_model_output_bytes_equal_the_host_reference_with_every_kernel() {
    let blob: Vec<u128> = TINY_BLOB
        .chunks(16)
        .map(|c| {
            let mut b = [0u8; 16];
            b[..c.len()].copy_from_slice(c);
            u128::from_le_bytes(b)
        })
        .collect();
    let blob = &bytemuck::cast_slice::<u128, u8>(&blob)[..TINY_BLOB.len()];
    let model = crate::Model::from_blob(blob).expect("committed tiny blob");
    let c = *model.config();
    let image: Vec<f32> = TINY_INPUT.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let mut arena = vec![0u128; model.arena_bytes() / 16 + 1];
    let arena = bytemuck::cast_slice_mut::<u128, u8>(&mut arena);
    for q8 in q8_variants() {
        #[allow(unused_mut)] // only x86_64 swaps the quantizer
        let mut kernels = Kernels { q8, ..Kernels::COMPILED };
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected.
            kernels.quant = unsafe { crate::kernels::quant::x86::avx2_unchecked() };
        }
        let model = model.with_kernels(kernels);
        let mut out = vec![0f32; (c.num_queries * c.hidden) as usize];
        let mut proj = vec![0f32; (c.num_queries * c.projection_dim) as usize];
        model.forward(&image, arena, &mut out, Some(&mut proj)).expect("forward");
        let bytes: Vec<u8> = out.iter().chain(&proj).flat_map(|v| v.to_le_bytes()).collect();
        assert!(bytes == TINY_OUTPUT, "{}: int8 output differs from the host's", q8.name());
    }
}
