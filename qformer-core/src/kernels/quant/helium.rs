//! Cortex-M55/M85 Helium (MVE) group quantizer in `asm!` (stable Rust has no MVE intrinsics),
//! bit-exact with [`scalar::quantize_slice`].
//!
//! Two tail-predicated loops (`dlstp.32`/`letp`: the last iteration masks the lanes past the
//! end, so any length runs without a scalar tail):
//!
//! 1. `max|x|` on the integer side: `vbic.i32 #0x80000000` clears the sign bits and `vmax.u32`
//!    keeps the largest; for non-NaN floats the order of `|x|` is the order of its bits, and a
//!    result `>= 0x7f80_0000` means an infinity or a NaN is present. (The MVE float max would
//!    flush subnormals, see below, and ignore NaN.)
//! 2. `vmul.f32` by `127 / max|x|` (computed on the scalar FPU, as the scalar code does),
//!    `vcvta.s32.f32` (round to nearest, ties away from zero: `roundf`), and `vstrb.32`
//!    storing the low byte of each lane. No clamp is needed: `|x| <= max|x|` and
//!    `127 / max|x|` is rounded to nearest, so `|x * inv| <= 127 (1 + 2^-24)^2 < 127.5`.
//!
//! MVE float arithmetic flushes subnormal inputs and results to zero (QEMU executes it with the
//! "standard FPSCR value"), which the scalar FPU does not. That cannot change a result when
//! `max|x| >= 2^-100`: then `inv < 2^107`, a subnormal `x` gives `|x * inv| < 2^-19` (0 either
//! way), and a subnormal product rounds to 0 either way. Smaller maxima, infinities and NaN
//! take [`scalar::quantize_slice`], as the NEON variant does.

use core::arch::asm;

use super::{scalar, Quantizer};

/// The Helium variant. Compiled only with the cargo feature `helium` (the CPU implements MVE
/// with floating point: Cortex-M55, Cortex-M85).
pub const HELIUM: Quantizer = Quantizer::new("helium_quant_i8_vcvta", quantize_helium);

/// Bits of the smallest `max|x|` the vector path takes: 2^-100 (see the module docs).
const MIN_MAX_BITS: u32 = (127 - 100) << 23;
/// Bits of +infinity: a larger `|x|` pattern is a NaN.
const INF_BITS: u32 = 0x7f80_0000;

/// Largest `bits & 0x7fff_ffff` over `src`.
fn abs_max_bits(src: &[f32]) -> u32 {
    let mut mx = 0u32;
    if src.is_empty() {
        return 0;
    }
    // SAFETY: MVE is declared by the `helium` feature. The tail-predicated loop reads exactly
    // `src.len()` f32 from `src` (the last iteration masks the lanes past the end) and writes
    // only the declared registers; `lr` is the loop counter.
    unsafe {
        asm!(
            ".arch armv8.1-m.main",
            ".arch_extension mve.fp",
            "vmov.i32 q1, #0",
            "dlstp.32 lr, {n}",
            "2:",
            "vldrw.u32 q0, [{src}], #16",
            "vbic.i32 q0, #0x80000000",
            "vmax.u32 q1, q1, q0",
            "letp lr, 2b",
            "vmaxv.u32 {mx}, q1",
            src = inout(reg) src.as_ptr() => _,
            n = in(reg) src.len(),
            mx = inout(reg) mx,
            out("lr") _,
            out("s0") _, out("s1") _, out("s2") _, out("s3") _,
            out("s4") _, out("s5") _, out("s6") _, out("s7") _,
            options(nostack, readonly),
        );
    }
    mx
}

/// `out[i] = vcvta(src[i] * inv)` as int8, for `i < src.len()`.
///
/// # Safety
/// `out` holds at least `src.len()` values, and every `|src[i] * inv|` is below 127.5.
unsafe fn scale_round(src: &[f32], out: &mut [i8], inv: f32) {
    debug_assert!(out.len() >= src.len());
    if src.is_empty() {
        return;
    }
    // SAFETY: MVE is declared by the `helium` feature. The tail-predicated loop reads
    // `src.len()` f32 and writes `src.len()` bytes to `out`, which holds that many (caller);
    // it writes only the declared registers.
    unsafe {
        asm!(
            ".arch armv8.1-m.main",
            ".arch_extension mve.fp",
            "dlstp.32 lr, {n}",
            "2:",
            "vldrw.u32 q0, [{src}], #16",
            "vmul.f32 q0, q0, {inv}",
            "vcvta.s32.f32 q0, q0",
            "vstrb.32 q0, [{dst}], #4",
            "letp lr, 2b",
            src = inout(reg) src.as_ptr() => _,
            dst = inout(reg) out.as_mut_ptr() => _,
            n = in(reg) src.len(),
            inv = in(reg) inv.to_bits(),
            out("lr") _,
            out("s0") _, out("s1") _, out("s2") _, out("s3") _,
            options(nostack),
        );
    }
}

fn quantize_helium(src: &[f32], out: &mut [i8]) -> f32 {
    let bits = abs_max_bits(src);
    if bits == 0 {
        out.fill(0);
        return 0.0;
    }
    if !(MIN_MAX_BITS..INF_BITS).contains(&bits) {
        return scalar::quantize_slice(src, out);
    }
    let amax = f32::from_bits(bits);
    let inv = 127.0 / amax;
    let (body, pad) = out.split_at_mut(src.len());
    // SAFETY: `body` holds `src.len()` values; every value is finite with `|x| <= amax` and
    // `amax >= 2^-100`, so `|x * inv| < 127.5` (module docs).
    unsafe { scale_round(src, body, inv) };
    pad.fill(0);
    amax / 127.0
}
