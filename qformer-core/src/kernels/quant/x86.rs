//! x86_64 AVX2 group quantizer, bit-exact with the scalar one: the same `max|x|`, the same
//! f32 products `x * (127 / max|x|)`, and round-half-away-from-zero done exactly as
//! `t = trunc(v); t + sign(v) if |v - t| >= 0.5` (`v - t` is exact for |v| < 2^23).

use core::arch::x86_64::*;

use super::{scalar, Quantizer};

/// The AVX2 variant, when enabled at compile time.
#[cfg(qf_avx2)]
pub const AVX2: Quantizer = Quantizer::new(NAME, quantize_avx2);

const NAME: &str = "avx2_quant_i8";

/// The AVX2 variant on a CPU known at run time to have AVX2.
///
/// # Safety
/// The CPU running the returned quantizer must support AVX2.
pub const unsafe fn avx2_unchecked() -> Quantizer {
    Quantizer::new(NAME, quantize_avx2)
}

fn quantize_avx2(src: &[f32], out: &mut [i8]) -> f32 {
    if !src.len().is_multiple_of(8) || out.len() != src.len() {
        return scalar::quantize_slice(src, out);
    }
    // SAFETY: reachable only through `AVX2` or `avx2_unchecked` (AVX2 guaranteed); the
    // kernel reads `src` and writes `out` in whole 8-element steps within their lengths.
    unsafe { kernel(src, out) }
}

/// The AVX2 group quantizer for `src.len()` a multiple of 8 (whole 8-lane steps only), the
/// scalar one's bits; non-finite inputs and maxima too small for `127 / max` go to scalar.
///
/// # Safety
/// The CPU supports AVX2, `src.len()` is a multiple of 8 and `out.len() == src.len()` (the
/// 8-lane loads and stores go through `chunks_exact`, so a violation of the lengths loses
/// values rather than memory safety; only AVX2 is needed for soundness).
#[target_feature(enable = "avx2")]
unsafe fn kernel(src: &[f32], out: &mut [i8]) -> f32 {
    debug_assert!(src.len().is_multiple_of(8) && out.len() == src.len());
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let inf = _mm256_set1_ps(f32::INFINITY);
    let mut vmax = _mm256_setzero_ps();
    let mut special = _mm256_setzero_ps();
    for c in src.chunks_exact(8) {
        // SAFETY: `c` holds 8 f32.
        let a = _mm256_and_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, abs_mask);
        vmax = _mm256_max_ps(vmax, a);
        // NaN or infinity: not (|x| < inf).
        special = _mm256_or_ps(special, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ));
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), vmax) };
    let amax = lanes.iter().fold(0f32, |m, &x| m.max(x));
    // Non-finite values, or a maximum so small that 127 / max overflows: the scalar code's
    // answer (the vector conversion would turn infinities and NaN into i32::MIN).
    if _mm256_movemask_ps(special) != 0 || !(127.0 / amax).is_finite() {
        return scalar::quantize_slice(src, out);
    }
    let inv = _mm256_set1_ps(127.0 / amax);
    let half = _mm256_set1_ps(0.5);
    let one = _mm256_set1_ps(1.0);
    let sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
    for (c, o) in src.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
        // SAFETY: `c` holds 8 f32.
        let v = _mm256_mul_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, inv);
        let t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        let frac = _mm256_and_ps(_mm256_sub_ps(v, t), abs_mask);
        let bump = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ), _mm256_or_ps(one, _mm256_and_ps(v, sign_mask)));
        let r = _mm256_cvtps_epi32(_mm256_add_ps(t, bump));
        let mut q = [0i32; 8];
        // SAFETY: `q` holds 8 i32.
        unsafe { _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, r) };
        for (d, x) in o.iter_mut().zip(q) {
            *d = x.clamp(-127, 127) as i8;
        }
    }
    amax / 127.0
}
