//! aarch64 NEON group quantizer, bit-exact with the scalar one: `fcvtas` rounds half away
//! from zero exactly as `roundf`.

use core::arch::aarch64::*;

use super::{scalar, Quantizer};

/// The NEON variant.
pub const NEON: Quantizer = Quantizer::new("neon_quant_i8", quantize_neon);

fn quantize_neon(src: &[f32], out: &mut [i8]) -> f32 {
    if src.len() % 8 != 0 || out.len() != src.len() {
        return scalar::quantize_slice(src, out);
    }
    // SAFETY: NEON is enabled for this module; loads and stores cover whole 4- and 8-element
    // steps inside `src` and `out`, whose lengths are equal multiples of 8.
    unsafe {
        let mut vmax = vdupq_n_f32(0.0);
        let mut finite = vdupq_n_u32(u32::MAX);
        for c in src.chunks_exact(4) {
            let a = vabsq_f32(vld1q_f32(c.as_ptr()));
            vmax = vmaxq_f32(vmax, a);
            finite = vandq_u32(finite, vcltq_f32(a, vdupq_n_f32(f32::INFINITY)));
        }
        let amax = vmaxvq_f32(vmax);
        // Non-finite values (fmax would propagate NaN, the conversion saturates infinities)
        // or a maximum so small that 127 / max overflows: the scalar code's answer.
        if vminvq_u32(finite) == 0 || !(127.0 / amax).is_finite() {
            return scalar::quantize_slice(src, out);
        }
        let inv = vdupq_n_f32(127.0 / amax);
        for (c, o) in src.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
            let lo = vcvtaq_s32_f32(vmulq_f32(vld1q_f32(c.as_ptr()), inv));
            let hi = vcvtaq_s32_f32(vmulq_f32(vld1q_f32(c.as_ptr().add(4)), inv));
            let lim = vdupq_n_s32(127);
            let lo = vmaxq_s32(vminq_s32(lo, lim), vnegq_s32(lim));
            let hi = vmaxq_s32(vminq_s32(hi, lim), vnegq_s32(lim));
            let q16 = vcombine_s16(vmovn_s32(lo), vmovn_s32(hi));
            vst1_s8(o.as_mut_ptr(), vmovn_s16(q16));
        }
        amax / 127.0
    }
}
