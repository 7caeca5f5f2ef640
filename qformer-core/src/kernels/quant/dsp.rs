//! Cortex-M4/M7 (Armv7E-M, FPv4-SP or FPv5) group quantizer in `asm!`, bit-exact with
//! [`scalar::quantize_slice`]. Runs on the M4's FPv4, which has no `vcvta` (round half away
//! is FPv5/Armv8 only), so the rounding is done exactly with a fixed-point conversion and
//! the DSP extension:
//!
//! 1. `max|x|` on the integer side, 4 values per `ldm`: `cmp m, x, lsl #1` / `it lo` /
//!    `lsllo m, x, #1` keeps the largest `|x|` bit pattern shifted left by one (the shift drops
//!    the sign). For non-NaN floats the order of `|x|` is the order of its bits; a maximum
//!    `>= 0x7f80_0000` means an infinity or a NaN, which go to the scalar code, as does a
//!    maximum so small that `127 / max|x|` overflows.
//! 2. Per 4 values: `vldmia`, 4 `vmul.f32` by `127 / max|x|` (the scalar code's f32 products),
//!    4 `vcvt.s32.f32 #1`, i.e. `q = trunc(2v)` exactly (fixed point with one fraction bit,
//!    always rounding toward zero). `round_half_away(v)` is `(q + 1) >> 1` for `q >= 0` and
//!    `q >> 1` (arithmetic) for `q < 0`. Two values per register as i16 lanes (`pkhbt`), the
//!    `+1` for non-negative lanes from `bic k, 0x00010001, x, lsr #15`, and `shadd16` does
//!    the add and the lane-wise arithmetic halving; `uxtb16` + `orr ..., lsl #8` pack the 4
//!    bytes into one (unaligned) `str`. No clamp is needed: `|v| <= 127 (1 + 2^-24)^2`.
//!
//! The scalar FPU is IEEE here (FPSCR.FZ = 0, the reset value on Cortex-M), exactly what the
//! scalar code runs on; the last `len % 4` values take the scalar expression.

use core::arch::asm;

use super::{scalar, Quantizer};
use crate::kernels::gemm::dsp::{dsp_begin, dsp_end};

/// The DSP variant (thumbv7em with the FPU: Cortex-M4F, Cortex-M7).
pub const DSP: Quantizer = Quantizer::new("dsp_quant_i8_vcvt_shadd16", quantize_dsp);

/// Bits of +infinity: a larger `|x|` pattern is a NaN.
const INF_BITS: u32 = 0x7f80_0000;

/// Largest `bits & 0x7fff_ffff` over `src`.
fn abs_max_bits(src: &[f32]) -> u32 {
    let n4 = src.len() / 4;
    let mut m2 = 0u32; // maximum shifted left by one
    if n4 > 0 {
        // SAFETY: reads `4 * n4 <= src.len()` f32 from `src` (word aligned, as `ldm` needs),
        // writes only the declared registers and the flags.
        unsafe {
            asm!(
                "2:",
                "ldm {src}!, {{r0, r1, r2, r3}}",
                "cmp {m}, r0, lsl #1",
                "it lo",
                "lsllo {m}, r0, #1",
                "cmp {m}, r1, lsl #1",
                "it lo",
                "lsllo {m}, r1, #1",
                "cmp {m}, r2, lsl #1",
                "it lo",
                "lsllo {m}, r2, #1",
                "cmp {m}, r3, lsl #1",
                "it lo",
                "lsllo {m}, r3, #1",
                "subs {n}, #1",
                "bne 2b",
                src = inout(reg) src.as_ptr() => _,
                n = inout(reg) n4 => _,
                m = inout(reg) m2,
                out("r0") _, out("r1") _, out("r2") _, out("r3") _,
                options(nostack, readonly),
            );
        }
    }
    for x in &src[4 * n4..] {
        m2 = m2.max(x.to_bits() << 1);
    }
    m2 >> 1
}

/// `out[i] = round_half_away(src[i] * inv)` as int8 for the first `4 * (src.len() / 4)` values.
///
/// # Safety
/// `out` holds at least `src.len()` values, and every `|src[i] * inv|` is below 127.5.
unsafe fn scale_round(src: &[f32], out: &mut [i8], inv: f32) {
    debug_assert!(out.len() >= src.len());
    let n4 = src.len() / 4;
    if n4 == 0 {
        return;
    }
    // SAFETY: reads `4 * n4` f32 from `src` (word aligned, as `vldmia` needs) and writes
    // `4 * n4` bytes to `out` (unaligned `str` is allowed on Armv7E-M), within both slices;
    // `shadd16`, `pkhbt`, `uxtb16` are DSP instructions (this module is compiled only with
    // `dsp`); only the declared registers and the flags are written.
    unsafe {
        asm!(
            // DSP instructions where LLVM's target lacks them (see `gemm::dsp`).
            dsp_begin!(),
            "vmov s8, {inv}",
            "2:",
            "vldmia {src}!, {{s0-s3}}",
            "vmul.f32 s0, s0, s8",
            "vmul.f32 s1, s1, s8",
            "vmul.f32 s2, s2, s8",
            "vmul.f32 s3, s3, s8",
            "vcvt.s32.f32 s0, s0, #1",
            "vcvt.s32.f32 s1, s1, #1",
            "vcvt.s32.f32 s2, s2, #1",
            "vcvt.s32.f32 s3, s3, #1",
            "vmov r0, r1, s0, s1",
            "vmov r2, r3, s2, s3",
            // [q0 | q2] and [q1 | q3] as i16 lanes.
            "pkhbt r0, r0, r2, lsl #16",
            "pkhbt r1, r1, r3, lsl #16",
            // 1 in the lanes that are >= 0.
            "bic r2, {k}, r0, lsr #15",
            "bic r3, {k}, r1, lsr #15",
            "shadd16 r0, r0, r2",
            "shadd16 r1, r1, r3",
            // Bytes [r0, r1, r2, r3] of the output word.
            "uxtb16 r0, r0",
            "uxtb16 r1, r1",
            "orr r0, r0, r1, lsl #8",
            "str r0, [{dst}], #4",
            "subs {n}, #1",
            "bne 2b",
            dsp_end!(),
            src = inout(reg) src.as_ptr() => _,
            dst = inout(reg) out.as_mut_ptr() => _,
            n = inout(reg) n4 => _,
            inv = in(reg) inv.to_bits(),
            k = in(reg) 0x0001_0001u32,
            out("r0") _, out("r1") _, out("r2") _, out("r3") _,
            out("s0") _, out("s1") _, out("s2") _, out("s3") _, out("s8") _,
            options(nostack),
        );
    }
}

fn quantize_dsp(src: &[f32], out: &mut [i8]) -> f32 {
    let bits = abs_max_bits(src);
    if bits == 0 {
        out.fill(0);
        return 0.0;
    }
    let amax = f32::from_bits(bits);
    let inv = 127.0 / amax;
    if bits >= INF_BITS || !inv.is_finite() {
        return scalar::quantize_slice(src, out);
    }
    let (body, pad) = out.split_at_mut(src.len());
    // SAFETY: `body` holds `src.len()` values; every value is finite with `|x| <= amax`, so
    // `|x * inv| < 127.5` (module docs).
    unsafe { scale_round(src, body, inv) };
    let n4 = src.len() / 4 * 4;
    for (o, &x) in body[n4..].iter_mut().zip(&src[n4..]) {
        *o = libm::roundf(x * inv).clamp(-127.0, 127.0) as i8;
    }
    pad.fill(0);
    amax / 127.0
}
