//! aarch64 NEON int8 GEMMs: `smull` (every aarch64 CPU), `sdot` (ARMv8.2 dotprod: Cortex-A55,
//! A76 / Raspberry Pi 5) and `smmla` (ARMv8.6 i8mm). Stable Rust has no `sdot`/`smmla`
//! intrinsics, so those two instructions are inline `asm!`.
//!
//! Tiles: `base` and `sdot` compute 1 row x 4 columns, `smmla` 2 rows x 4 columns; per group
//! they reduce the i32 partial sums to one exact dot per output, then apply
//! `acc += (sa * sw) * dot` lane-wise in f32 (no fused multiply-add), exactly the scalar
//! order. Ragged rows and columns go to [`scalar::gemm_q8_block`].

use core::arch::aarch64::*;
use core::arch::asm;

use super::{scalar, Q8Gemm, Shape};
use crate::kernels::QRows;

/// `smull`/`smlal` variant (every aarch64 CPU).
pub const BASE: Q8Gemm = Q8Gemm::new("neon_gemm_q8_smull_1x4", gemm_q8_base);
/// `sdot` variant.
#[cfg(target_feature = "dotprod")]
pub const SDOT: Q8Gemm = Q8Gemm::new("neon_gemm_q8_sdot_1x4", gemm_q8_sdot);
/// `smmla` variant.
#[cfg(target_feature = "i8mm")]
pub const I8MM: Q8Gemm = Q8Gemm::new("neon_gemm_q8_smmla_2x4", gemm_q8_i8mm);

/// The `sdot` variant on a CPU known at run time to have dotprod.
///
/// # Safety
/// The CPU running the returned kernel must implement FEAT_DotProd.
pub unsafe fn sdot_unchecked() -> Q8Gemm {
    Q8Gemm::new("neon_gemm_q8_sdot_1x4", gemm_q8_sdot)
}

/// The `smmla` variant on a CPU known at run time to have i8mm.
///
/// # Safety
/// The CPU running the returned kernel must implement FEAT_I8MM.
pub unsafe fn i8mm_unchecked() -> Q8Gemm {
    Q8Gemm::new("neon_gemm_q8_smmla_2x4", gemm_q8_i8mm)
}

/// Sums of four i32x4 vectors, lane k = horizontal sum of `v[k]`.
#[inline(always)]
fn reduce4(v: [int32x4_t; 4]) -> int32x4_t {
    // SAFETY: NEON is enabled for this module (cfg on `mod neon`).
    unsafe { vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3])) }
}

/// `acc + (sa * sw) * dots`, lane-wise, as the scalar kernel rounds it.
#[inline(always)]
fn combine(acc: float32x4_t, sa: f32, sw: [f32; 4], dots: int32x4_t) -> float32x4_t {
    // SAFETY: NEON is enabled for this module; `sw` is a 4-element array.
    unsafe {
        let scale = vmulq_f32(vdupq_n_f32(sa), vld1q_f32(sw.as_ptr()));
        vaddq_f32(acc, vmulq_f32(scale, vcvtq_f32_s32(dots)))
    }
}

/// Stores `acc + bias[j..j+4]` to `out[i * ldo + j..]`.
#[inline(always)]
fn store(out: &mut [f32], at: usize, acc: float32x4_t, bias: Option<&[f32]>, j: usize) {
    let mut v = [0f32; 4];
    // SAFETY: NEON is enabled; `v` holds 4 f32.
    unsafe { vst1q_f32(v.as_mut_ptr(), acc) };
    for (k, x) in v.iter().enumerate() {
        out[at + k] = x + bias.map_or(0.0, |b| b[j + k]);
    }
}

/// Shared driver of the 1x4 variants: `dot4(a, [w0..w3], len)` returns the four exact dots
/// of one group as i32x4 lanes.
#[inline(always)]
fn drive_1x4(
    a: &QRows<'_>,
    w: &QRows<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    s: Shape,
    dot4: impl Fn(&[i8], [&[i8]; 4]) -> int32x4_t,
) {
    let (stride, group) = (a.stride, a.group);
    let groups = stride / group;
    let n4 = s.n / 4 * 4;
    for i in 0..s.m {
        let ar = &a.values[i * stride..(i + 1) * stride];
        for j in (0..n4).step_by(4) {
            let wr: [&[i8]; 4] = core::array::from_fn(|c| &w.values[(j + c) * stride..(j + c + 1) * stride]);
            // SAFETY: NEON is enabled.
            let mut acc = unsafe { vdupq_n_f32(0.0) };
            for g in 0..groups {
                let r = g * group..(g + 1) * group;
                let dots = dot4(&ar[r.clone()], core::array::from_fn(|c| &wr[c][r.clone()]));
                let sw = core::array::from_fn(|c| w.scales[(j + c) * groups + g]);
                acc = combine(acc, a.scales[i * groups + g], sw, dots);
            }
            store(out, i * s.ldo + j, acc, bias, j);
        }
    }
    scalar::gemm_q8_block(a, w, bias, out, s, 0..s.m, n4..s.n);
}

fn gemm_q8_base(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    drive_1x4(a, w, bias, out, s, |ar, wr| {
        let sums: [int32x4_t; 4] = core::array::from_fn(|c| {
            // SAFETY: NEON is enabled; every load reads 16 bytes inside `ar`/`wr[c]`, whose
            // length is the group size, a multiple of 16. Two products of |a| <= 127 and
            // |w| <= 128 sum to at most 32512, inside i16.
            unsafe {
                let mut acc = vdupq_n_s32(0);
                for k in (0..ar.len()).step_by(16) {
                    let x = vld1q_s8(ar.as_ptr().add(k));
                    let y = vld1q_s8(wr[c].as_ptr().add(k));
                    let p = vmlal_high_s8(vmull_s8(vget_low_s8(x), vget_low_s8(y)), x, y);
                    acc = vpadalq_s16(acc, p);
                }
                acc
            }
        });
        reduce4(sums)
    })
}

/// `acc += sdot(x, y)` (four 4-way i8 dot products into i32 lanes).
#[inline(always)]
unsafe fn sdot(acc: int32x4_t, x: int8x16_t, y: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: the caller runs on a CPU with FEAT_DotProd (see `gemm_q8_sdot`); the
    // instruction only reads and writes these registers.
    unsafe {
        asm!(".arch_extension dotprod", "sdot {acc:v}.4s, {x:v}.16b, {y:v}.16b",
            acc = inout(vreg) acc, x = in(vreg) x, y = in(vreg) y, options(pure, nomem, nostack));
    }
    acc
}

fn gemm_q8_sdot(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    drive_1x4(a, w, bias, out, s, |ar, wr| {
        let sums: [int32x4_t; 4] = core::array::from_fn(|c| {
            // SAFETY: this function is only reachable through `SDOT` (dotprod enabled at
            // compile time) or `sdot_unchecked` (whose caller guarantees dotprod). Loads read
            // 16 bytes inside the group slices, whose length is a multiple of 16.
            unsafe {
                let mut acc = vdupq_n_s32(0);
                for k in (0..ar.len()).step_by(16) {
                    acc = sdot(acc, vld1q_s8(ar.as_ptr().add(k)), vld1q_s8(wr[c].as_ptr().add(k)));
                }
                acc
            }
        });
        reduce4(sums)
    })
}

/// `acc += smmla(x, y)`: x = [row0 k0..8 | row1 k0..8], y = [col0 k0..8 | col1 k0..8],
/// lanes [r0c0, r0c1, r1c0, r1c1].
#[inline(always)]
unsafe fn smmla(acc: int32x4_t, x: int8x16_t, y: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: the caller runs on a CPU with FEAT_I8MM (see `gemm_q8_i8mm`); register-only.
    unsafe {
        asm!(".arch_extension i8mm", "smmla {acc:v}.4s, {x:v}.16b, {y:v}.16b",
            acc = inout(vreg) acc, x = in(vreg) x, y = in(vreg) y, options(pure, nomem, nostack));
    }
    acc
}

fn gemm_q8_i8mm(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    let (stride, group) = (a.stride, a.group);
    let groups = stride / group;
    let (m2, n4) = (s.m / 2 * 2, s.n / 4 * 4);
    for i in (0..m2).step_by(2) {
        let a0 = &a.values[i * stride..(i + 1) * stride];
        let a1 = &a.values[(i + 1) * stride..(i + 2) * stride];
        for j in (0..n4).step_by(4) {
            let wr: [&[i8]; 4] = core::array::from_fn(|c| &w.values[(j + c) * stride..(j + c + 1) * stride]);
            // SAFETY: NEON is enabled.
            let (mut acc0, mut acc1) = unsafe { (vdupq_n_f32(0.0), vdupq_n_f32(0.0)) };
            for g in 0..groups {
                // SAFETY: reachable only through `I8MM` (i8mm enabled at compile time) or
                // `i8mm_unchecked` (caller guarantees i8mm). Each 8-byte load lies inside
                // the group `g * group .. (g + 1) * group` of a row slice of length `stride`.
                let (d0, d1) = unsafe {
                    let (mut c01, mut c23) = (vdupq_n_s32(0), vdupq_n_s32(0));
                    for k in (g * group..(g + 1) * group).step_by(8) {
                        let x = vcombine_s8(vld1_s8(a0.as_ptr().add(k)), vld1_s8(a1.as_ptr().add(k)));
                        let y01 = vcombine_s8(vld1_s8(wr[0].as_ptr().add(k)), vld1_s8(wr[1].as_ptr().add(k)));
                        let y23 = vcombine_s8(vld1_s8(wr[2].as_ptr().add(k)), vld1_s8(wr[3].as_ptr().add(k)));
                        c01 = smmla(c01, x, y01);
                        c23 = smmla(c23, x, y23);
                    }
                    // c01 = [r0c0, r0c1, r1c0, r1c1], c23 = [r0c2, r0c3, r1c2, r1c3].
                    let lo = vreinterpretq_s32_s64(vzip1q_s64(vreinterpretq_s64_s32(c01), vreinterpretq_s64_s32(c23)));
                    let hi = vreinterpretq_s32_s64(vzip2q_s64(vreinterpretq_s64_s32(c01), vreinterpretq_s64_s32(c23)));
                    (lo, hi)
                };
                let sw = core::array::from_fn(|c| w.scales[(j + c) * groups + g]);
                acc0 = combine(acc0, a.scales[i * groups + g], sw, d0);
                acc1 = combine(acc1, a.scales[(i + 1) * groups + g], sw, d1);
            }
            store(out, i * s.ldo + j, acc0, bias, j);
            store(out, (i + 1) * s.ldo + j, acc1, bias, j);
        }
    }
    scalar::gemm_q8_block(a, w, bias, out, s, 0..m2, n4..s.n);
    scalar::gemm_q8_block(a, w, bias, out, s, m2..s.m, 0..s.n);
}

/// The NEON float GEMM (f16 weights widened with `fcvtl`, base ARMv8).
pub const F_NEON: super::FGemm = super::FGemm::new("neon_gemm_f32_f16_2x4", fgemm_f32, fgemm_f16);

/// Loads 4 weights as f32.
trait LoadW: Copy {
    /// # Safety
    /// `p..p + 4` readable.
    unsafe fn load4(p: *const Self) -> float32x4_t;
}

impl LoadW for f32 {
    #[inline(always)]
    unsafe fn load4(p: *const f32) -> float32x4_t {
        // SAFETY: the caller guarantees 4 readable f32.
        unsafe { vld1q_f32(p) }
    }
}

impl LoadW for half::f16 {
    #[inline(always)]
    unsafe fn load4(p: *const half::f16) -> float32x4_t {
        // SAFETY: the caller guarantees 4 readable f16 (8 bytes); FCVTL is base AArch64 SIMD
        // and only touches registers.
        unsafe {
            let h = vld1_u16(p as *const u16);
            let out: float32x4_t;
            asm!("fcvtl {o:v}.4s, {h:v}.4h", o = out(vreg) out, h = in(vreg) h, options(pure, nomem, nostack));
            out
        }
    }
}

#[inline(always)]
fn fgemm<W: LoadW + Into<f32>>(a: &[f32], w: &[W], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    let Shape { m, n, k, ldo } = s;
    let k4 = k / 4 * 4;
    let (m2, n4) = (m / 2 * 2, n / 4 * 4);
    let tail = |i: usize, j: usize, acc: f32| -> f32 {
        let mut t = acc;
        for kk in k4..k {
            t += a[i * k + kk] * w[j * k + kk].into();
        }
        t + bias.map_or(0.0, |b| b[j])
    };
    for i in (0..m2).step_by(2) {
        for j in (0..n4).step_by(4) {
            // SAFETY: NEON is enabled; rows i, i+1 of `a` and j..j+4 of `w` hold k >= kk + 4
            // elements (bounds checked by `FGemm::run_*`).
            let acc = unsafe {
                let mut acc = [[vdupq_n_f32(0.0); 4]; 2];
                for kk in (0..k4).step_by(4) {
                    let x0 = vld1q_f32(a.as_ptr().add(i * k + kk));
                    let x1 = vld1q_f32(a.as_ptr().add((i + 1) * k + kk));
                    for c in 0..4 {
                        let y = W::load4(w.as_ptr().add((j + c) * k + kk));
                        acc[0][c] = vfmaq_f32(acc[0][c], x0, y);
                        acc[1][c] = vfmaq_f32(acc[1][c], x1, y);
                    }
                }
                acc
            };
            for r in 0..2 {
                for c in 0..4 {
                    // SAFETY: NEON is enabled.
                    out[(i + r) * ldo + j + c] = tail(i + r, j + c, unsafe { vaddvq_f32(acc[r][c]) });
                }
            }
        }
    }
    let block = |rows: core::ops::Range<usize>, cols: core::ops::Range<usize>, out: &mut [f32]| {
        for i in rows {
            for j in cols.clone() {
                // SAFETY: as above, one row and one column.
                let acc = unsafe {
                    let mut acc = vdupq_n_f32(0.0);
                    for kk in (0..k4).step_by(4) {
                        acc =
                            vfmaq_f32(acc, vld1q_f32(a.as_ptr().add(i * k + kk)), W::load4(w.as_ptr().add(j * k + kk)));
                    }
                    vaddvq_f32(acc)
                };
                out[i * ldo + j] = tail(i, j, acc);
            }
        }
    };
    block(0..m2, n4..n, out);
    block(m2..m, 0..n, out);
}

fn fgemm_f32(a: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    fgemm(a, w, bias, out, s)
}

fn fgemm_f16(a: &[f32], w: &[half::f16], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    fgemm(a, w, bias, out, s)
}
