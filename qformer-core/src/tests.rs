//! Unit tests that run wherever the crate runs (host, and aarch64 under `qemu-aarch64` with
//! three CPU models): every int8 GEMM variant this CPU can run against scalar, and the
//! whole int8 model's output bytes against the committed host output.

use std::vec;
use std::vec::Vec;

use crate::kernels::gemm::{FGemm, Q8Gemm};
use crate::kernels::quant::Quantizer;
use crate::kernels::testing::{f_scratch_bytes, f_sweep, q8_scratch_bytes, q8_sweep, F_SHAPES, Q8_SHAPES};
use crate::kernels::{Kernels, Variant};

/// The entries of a variant table this CPU runs (compiled in or detected), scalar first.
fn usable<K: Copy>(table: &[Variant<K>]) -> Vec<K> {
    table.iter().filter_map(Variant::detected).collect()
}

fn q8_variants() -> Vec<Q8Gemm> {
    usable(Q8Gemm::VARIANTS)
}

#[test]
fn variant_lists_are_ranked_scalar_first_best_last_and_without_repeats() {
    fn check<K: Copy>(table: &[Variant<K>], name: fn(&K) -> &'static str, compiled: &[K], best: K, detected: K) {
        let ranks: Vec<u8> = table.iter().map(Variant::rank).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "ranks {ranks:?}");
        let names: Vec<&str> = table.iter().filter_map(|v| v.detected()).map(|k| name(&k)).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a variant is listed twice: {names:?}");
        let listed: Vec<&str> = compiled.iter().map(name).collect();
        let want: Vec<&str> = table.iter().filter_map(|v| v.compiled()).map(|k| name(&k)).collect();
        assert_eq!(listed, want);
        assert_eq!(listed.last().copied(), Some(name(&best)), "COMPILED is the last compiled variant");
        assert_eq!(names.last().copied(), Some(name(&detected)), "detected() is the last usable variant");
        assert!(listed.iter().all(|n| names.contains(n)), "every compiled variant is usable");
        std::println!("usable: {names:?}");
    }
    let k = Kernels::detected();
    check(Q8Gemm::VARIANTS, |k| k.name(), crate::kernels::gemm::compiled_variants(), Q8Gemm::COMPILED, k.q8);
    check(FGemm::VARIANTS, |k| k.name(), crate::kernels::gemm::compiled_f_variants(), FGemm::COMPILED, k.f);
    let quants = crate::kernels::quant::compiled_variants();
    check(Quantizer::VARIANTS, |k| k.name(), quants, Quantizer::COMPILED, k.quant);
    assert!(Q8Gemm::SCALAR.is("scalar_gemm_q8") && !Q8Gemm::SCALAR.is("scalar_gemm_q"));
    // This CPU's SIMD kernels are in the lists: a table entry left out would go untested.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        assert!(q8_variants().iter().any(|v| v.is("avx2_gemm_q8_1x8")));
        assert!(usable(Quantizer::VARIANTS).iter().any(|v| v.is("avx2_quant_i8")));
    }
    #[cfg(target_arch = "aarch64")]
    {
        assert!(q8_variants().iter().any(|v| v.is("neon_gemm_q8_smull_4x4")));
        if std::arch::is_aarch64_feature_detected!("i8mm") {
            assert!(q8_variants().iter().any(|v| v.is("neon_gemm_q8_smmla_4x8")));
        }
    }
}

#[test]
fn every_float_variant_is_within_the_bound_of_scalar() {
    let mut scratch = vec![0u8; f_scratch_bytes(&F_SHAPES) + 64];
    for v in usable(FGemm::VARIANTS) {
        let n = f_sweep(v, &F_SHAPES, &mut scratch).unwrap_or_else(|m| panic!("{m:?}"));
        std::println!("{}: {n} shapes within bound (f32 and fp16 weights)", v.name());
    }
}

#[test]
fn every_quantizer_matches_scalar_bit_for_bit() {
    let mut scratch = vec![0u8; 6 * 3072 + 128];
    for q in usable(Quantizer::VARIANTS) {
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
}

/// Products large enough for the kernels' blocking (the AVX-512 VNNI 16x8 kernel packs a panel
/// of 16 rows once for a block of 8 column tiles): several row panels with an overlapping
/// last one, several column blocks with a partial last block and ragged columns, group 64,
/// and the longest rows the packed panel takes (4096 bytes) next to the first it does not.
#[test]
fn q8_variants_match_scalar_on_blocked_products() {
    let shapes = [
        (33, 137, 1408, 32),
        (16, 64, 32, 32),
        (47, 72, 4096, 32),
        (17, 9, 4096 + 32, 32),
        (31, 65, 768, 64),
        (257, 24, 96, 32),
    ];
    let mut scratch = vec![0u8; q8_scratch_bytes(&shapes) + 64];
    for v in &q8_variants() {
        let n = q8_sweep(*v, &shapes, &mut scratch).unwrap_or_else(|m| panic!("{}: {m:?}", v.name()));
        std::println!("{}: {n} blocked shapes bit-exact", v.name());
    }
}

/// Rows longer than some kernels' fixed-size buffers take (e.g. more than 4096 bytes for the
/// AVX-512 VNNI 16x8 kernel's packed panel) must give the same bits through their fallback.
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
        let model = model.with_kernels(Kernels { q8, quant: Kernels::detected().quant, ..Kernels::COMPILED });
        let mut out = vec![0f32; (c.num_queries * c.hidden) as usize];
        let mut proj = vec![0f32; (c.num_queries * c.projection_dim) as usize];
        model.forward(&image, arena, &mut out, Some(&mut proj)).expect("forward");
        let bytes: Vec<u8> = out.iter().chain(&proj).flat_map(|v| v.to_le_bytes()).collect();
        assert!(bytes == TINY_OUTPUT, "{}: int8 output differs from the host's", q8.name());
    }
}

/// The named configs are valid, and InstructBLIP's arena is what its plan says.
#[test]
fn named_configs_validate() {
    for c in [crate::Config::BLIP2, crate::Config::INSTRUCTBLIP] {
        c.validate().expect("valid");
    }
    assert!(crate::Config::INSTRUCTBLIP.has_text() && !crate::Config::BLIP2.has_text());
}
