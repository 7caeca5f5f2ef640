//! aarch64 NEON int8 GEMMs: `smull` (every aarch64 CPU), `sdot` (ARMv8.2 dotprod: Cortex-A55,
//! A76 / Raspberry Pi 5) and `smmla` (ARMv8.6 i8mm). Stable Rust has no `sdot`/`smmla`
//! intrinsics, so those two instructions are inline `asm!`.
//!
//! Tiles: `smull` 4 rows x 4 columns, reducing the i32 partial sums to one exact dot per
//! output at the end of each group; `sdot` 4 rows x 8 columns with the activation rows
//! transposed into 4-byte chunks and `sdot` by element, and `smmla` 4 x 8 as 2 x 2 blocks,
//! so their lanes are already whole dots. All then apply `acc += (sa * sw) * dot` lane-wise in f32 (no fused multiply-add),
//! exactly the scalar order. Ragged rows and columns go to [`scalar::gemm_q8_block`], groups
//! that are not a multiple of 16 bytes to [`scalar::gemm_q8`].

use core::arch::aarch64::*;
use core::arch::asm;

use super::{scalar, Q8Gemm, Shape};
use crate::kernels::QRows;

/// `smull`/`smlal` variant (every aarch64 CPU).
pub const BASE: Q8Gemm = Q8Gemm::new("neon_gemm_q8_smull_4x4", gemm_q8_base);
/// `sdot` variant.
#[cfg(qf_sdot)]
pub const SDOT: Q8Gemm = Q8Gemm::new("neon_gemm_q8_sdot_4x8", gemm_q8_sdot);
/// `smmla` variant.
#[cfg(qf_i8mm)]
pub const I8MM: Q8Gemm = Q8Gemm::new("neon_gemm_q8_smmla_4x8", gemm_q8_i8mm);

/// The `sdot` variant on a CPU known at run time to have dotprod.
///
/// # Safety
/// The CPU running the returned kernel must implement FEAT_DotProd.
pub const unsafe fn sdot_unchecked() -> Q8Gemm {
    Q8Gemm::new("neon_gemm_q8_sdot_4x8", gemm_q8_sdot)
}

/// The `smmla` variant on a CPU known at run time to have i8mm.
///
/// # Safety
/// The CPU running the returned kernel must implement FEAT_I8MM.
pub const unsafe fn i8mm_unchecked() -> Q8Gemm {
    Q8Gemm::new("neon_gemm_q8_smmla_4x8", gemm_q8_i8mm)
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

/// The exact dots of one group for a 4x4 tile (rows i.., columns j..), lane c of entry r
/// = column j + c of row i + r: `smull`/`smlal2` products of 16 bytes into i16 lanes (two
/// products of |a| <= 127 and |w| <= 128 sum to at most 32512, inside i16: this is why the
/// activations must be in -127..=127, the [`QRows`] contract), pairwise added into i32 with
/// `sadalp`, reduced per output at the end of the group.
///
/// # Safety
/// Rows `i..i + 4` of `a` and `j..j + 4` of `w` must hold `stride` values, and `group` must be
/// a multiple of 16 dividing `stride` with `g < stride / group` (checked by `Q8Gemm::run` for
/// the tiles `gemm_q8_base` visits).
#[inline(always)]
unsafe fn smull_dots_4x4(a: &QRows<'_>, w: &QRows<'_>, (i, j, g): (usize, usize, usize)) -> [int32x4_t; 4] {
    let (stride, group) = (a.stride, a.group);
    debug_assert!(a.values.len() >= (i + 4) * stride && w.values.len() >= (j + 4) * stride);
    debug_assert!(group.is_multiple_of(16) && (g + 1) * group <= stride);
    // SAFETY: per the contract, every 16-byte load lies inside group g of one of those rows
    // (group is a multiple of 16); smull/smlal/sadalp are base NEON, enabled for this module.
    unsafe {
        let ap = a.values.as_ptr().add(i * stride + g * group);
        let wp = w.values.as_ptr().add(j * stride + g * group);
        let mut acc = [[vdupq_n_s32(0); 4]; 4];
        for k in (0..group).step_by(16) {
            let x: [int8x16_t; 4] = core::array::from_fn(|r| vld1q_s8(ap.add(r * stride + k)));
            let y: [int8x16_t; 4] = core::array::from_fn(|c| vld1q_s8(wp.add(c * stride + k)));
            for r in 0..4 {
                for c in 0..4 {
                    let p = vmlal_high_s8(vmull_s8(vget_low_s8(x[r]), vget_low_s8(y[c])), x[r], y[c]);
                    acc[r][c] = vpadalq_s16(acc[r][c], p);
                }
            }
        }
        core::array::from_fn(|r| reduce4(acc[r]))
    }
}

/// 4x4 tiles of [`smull_dots_4x4`], then the ragged rows and columns in scalar.
fn gemm_q8_base(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    let (stride, group) = (a.stride, a.group);
    if !group.is_multiple_of(16) {
        // The tiles load 16 bytes per step of a group (blobs always have such groups).
        return scalar::gemm_q8(a, w, bias, out, s);
    }
    let groups = stride / group;
    let (m4, n4) = (s.m / 4 * 4, s.n / 4 * 4);
    for i in (0..m4).step_by(4) {
        for j in (0..n4).step_by(4) {
            // SAFETY: NEON is enabled.
            let mut acc = unsafe { [vdupq_n_f32(0.0); 4] };
            let (asp, wsp) = (&a.scales[i * groups..(i + 4) * groups], &w.scales[j * groups..(j + 4) * groups]);
            for g in 0..groups {
                // SAFETY: i + 4 <= m and j + 4 <= n, whose rows `Q8Gemm::run` checked.
                let dots = unsafe { smull_dots_4x4(a, w, (i, j, g)) };
                // SAFETY: `g < groups` and `c, r < 4`, inside the two slices just taken.
                let sw = core::array::from_fn(|c| unsafe { *wsp.get_unchecked(c * groups + g) });
                for (r, accr) in acc.iter_mut().enumerate() {
                    // SAFETY: as above.
                    *accr = combine(*accr, unsafe { *asp.get_unchecked(r * groups + g) }, sw, dots[r]);
                }
            }
            for (r, accr) in acc.iter().enumerate() {
                store(out, (i + r) * s.ldo + j, *accr, bias, j);
            }
        }
    }
    scalar::gemm_q8_block(a, w, bias, out, s, 0..m4, n4..s.n);
    scalar::gemm_q8_block(a, w, bias, out, s, m4..s.m, 0..s.n);
}

/// Four `sdot`s by element: `acc[r] += at[q][r] · w[q]` for the four 4-byte chunks `q` of
/// `w`, i.e. lane `r` of `acc` gains row `r`'s dot with the 16 bytes of `w` when `at[q]` holds
/// chunk `q` of four rows (see [`transpose4`]).
///
/// # Safety
/// The CPU implements FEAT_DotProd (`sdot` is an undefined instruction otherwise). The block only
/// touches registers, so there is no memory precondition to `debug_assert!` (and the no_std
/// core cannot detect CPU features).
#[inline(always)]
unsafe fn sdot_by_chunk(acc: int32x4_t, at: &[int8x16_t; 4], w: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: the caller runs on a CPU with FEAT_DotProd (see `gemm_q8_sdot`); the
    // instructions only read and write these registers.
    unsafe {
        asm!(".arch_extension dotprod",
            "sdot {acc:v}.4s, {a0:v}.16b, {w:v}.4b[0]",
            "sdot {acc:v}.4s, {a1:v}.16b, {w:v}.4b[1]",
            "sdot {acc:v}.4s, {a2:v}.16b, {w:v}.4b[2]",
            "sdot {acc:v}.4s, {a3:v}.16b, {w:v}.4b[3]",
            acc = inout(vreg) acc, a0 = in(vreg) at[0], a1 = in(vreg) at[1], a2 = in(vreg) at[2],
            a3 = in(vreg) at[3], w = in(vreg) w, options(pure, nomem, nostack));
    }
    acc
}

/// 4x4 transpose of 32-bit chunks: `out[q]` = chunk `q` (bytes `4q..4q + 4`) of rows 0..4.
#[inline(always)]
fn transpose4(r: [int8x16_t; 4]) -> [int8x16_t; 4] {
    // SAFETY: NEON is enabled for this module; register-only permutes.
    unsafe {
        let r: [int32x4_t; 4] = core::array::from_fn(|i| vreinterpretq_s32_s8(r[i]));
        let t0 = vreinterpretq_s64_s32(vtrn1q_s32(r[0], r[1])); // r0c0 r1c0 r0c2 r1c2
        let t1 = vreinterpretq_s64_s32(vtrn2q_s32(r[0], r[1])); // r0c1 r1c1 r0c3 r1c3
        let t2 = vreinterpretq_s64_s32(vtrn1q_s32(r[2], r[3]));
        let t3 = vreinterpretq_s64_s32(vtrn2q_s32(r[2], r[3]));
        [
            vreinterpretq_s8_s64(vtrn1q_s64(t0, t2)),
            vreinterpretq_s8_s64(vtrn1q_s64(t1, t3)),
            vreinterpretq_s8_s64(vtrn2q_s64(t0, t2)),
            vreinterpretq_s8_s64(vtrn2q_s64(t1, t3)),
        ]
    }
}

/// Columns per `sdot` tile.
const SDOT_COLS: usize = 8;

/// 4 rows x 8 columns per tile, accumulators lane = row: the four activation rows are
/// transposed into 4-byte chunks once per 16 bytes of `k`, and each weight column's 16 bytes
/// go straight into `sdot` by element, so a group ends with exact per-output dots in lanes
/// and needs no horizontal reduction.
fn gemm_q8_sdot(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    let (stride, group) = (a.stride, a.group);
    if !group.is_multiple_of(16) {
        // The tiles load 16 bytes per step of a group (blobs always have such groups).
        return scalar::gemm_q8(a, w, bias, out, s);
    }
    let groups = stride / group;
    let (m4, nt) = (s.m / 4 * 4, s.n / SDOT_COLS * SDOT_COLS);
    for i in (0..m4).step_by(4) {
        for j in (0..nt).step_by(SDOT_COLS) {
            // SAFETY: this function is only reachable through `SDOT` (dotprod enabled at
            // compile time) or `sdot_unchecked` (whose caller guarantees dotprod). Rows
            // i..i+4 of `a` and j..j+8 of `w` hold `stride` bytes and `groups` scales each
            // (`Q8Gemm::run` checked `m * stride`, `n * stride` values and `m * groups`,
            // `n * groups` scales), and every 16-byte load
            // starts at `g * group + k` with `k + 16 <= group` (group is a multiple of 16).
            let facc = unsafe {
                let ap = a.values.as_ptr().add(i * stride);
                let wp = w.values.as_ptr().add(j * stride);
                let (asp, wsp) = (a.scales.as_ptr().add(i * groups), w.scales.as_ptr().add(j * groups));
                let mut facc = [vdupq_n_f32(0.0); SDOT_COLS];
                for g in 0..groups {
                    let mut acc = [vdupq_n_s32(0); SDOT_COLS];
                    for k in (g * group..(g + 1) * group).step_by(16) {
                        let at = transpose4(core::array::from_fn(|r| vld1q_s8(ap.add(r * stride + k))));
                        for (c, accc) in acc.iter_mut().enumerate() {
                            *accc = sdot_by_chunk(*accc, &at, vld1q_s8(wp.add(c * stride + k)));
                        }
                    }
                    // Scales (r, g) of rows i.. and (c, g) of columns j..: in bounds as above.
                    let sa: [f32; 4] = core::array::from_fn(|r| *asp.add(r * groups + g));
                    let sa = vld1q_f32(sa.as_ptr());
                    for (c, f) in facc.iter_mut().enumerate() {
                        // (sa * sw) * dot, then the add: the scalar kernel's rounding order.
                        let scale = vmulq_n_f32(sa, *wsp.add(c * groups + g));
                        *f = vaddq_f32(*f, vmulq_f32(scale, vcvtq_f32_s32(acc[c])));
                    }
                }
                facc
            };
            for (c, f) in facc.iter().enumerate() {
                let mut v = [0f32; 4];
                // SAFETY: NEON is enabled; `v` holds 4 f32.
                unsafe { vst1q_f32(v.as_mut_ptr(), *f) };
                let b = bias.map_or(0.0, |b| b[j + c]);
                for (r, x) in v.iter().enumerate() {
                    out[(i + r) * s.ldo + j + c] = x + b;
                }
            }
        }
    }
    scalar::gemm_q8_block(a, w, bias, out, s, 0..m4, nt..s.n);
    scalar::gemm_q8_block(a, w, bias, out, s, m4..s.m, 0..s.n);
}

/// `acc += smmla(x, y)`: x = [row0 k0..8 | row1 k0..8], y = [col0 k0..8 | col1 k0..8],
/// lanes [r0c0, r0c1, r1c0, r1c1].
///
/// # Safety
/// The CPU implements FEAT_I8MM (`smmla` is an undefined instruction otherwise). The block only
/// touches registers, so there is no memory precondition to `debug_assert!` (and the no_std
/// core cannot detect CPU features).
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

/// Columns per `smmla` tile.
const SMMLA_COLS: usize = 8;

/// 4 rows x 8 columns per tile as 2 x 4 blocks of 2 x 2 outputs: `smmla` multiplies two rows'
/// 8 bytes by two columns' 8 bytes into one block's four exact dots, so a group needs no
/// horizontal reduction. The f32 accumulators keep the block layout; per group each block
/// gets `(sa * sw) * dot` with the scales laid out the same way, and the blocks are taken
/// apart only at the store.
fn gemm_q8_i8mm(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    let (stride, group) = (a.stride, a.group);
    if !group.is_multiple_of(16) {
        // The tiles load 16 bytes per step of a group (blobs always have such groups).
        return scalar::gemm_q8(a, w, bias, out, s);
    }
    let groups = stride / group;
    let (m4, nt) = (s.m / 4 * 4, s.n / SMMLA_COLS * SMMLA_COLS);
    let pair = |x: int8x16_t, y: int8x16_t| {
        // SAFETY: NEON is enabled for this module; register-only permutes.
        unsafe {
            let (x, y) = (vreinterpretq_s64_s8(x), vreinterpretq_s64_s8(y));
            (vreinterpretq_s8_s64(vzip1q_s64(x, y)), vreinterpretq_s8_s64(vzip2q_s64(x, y)))
        }
    };
    for i in (0..m4).step_by(4) {
        for j in (0..nt).step_by(SMMLA_COLS) {
            // SAFETY: reachable only through `I8MM` (i8mm enabled at compile time) or
            // `i8mm_unchecked` (caller guarantees i8mm). Rows i..i+4 of `a` and j..j+8 of `w`
            // hold `stride` values and `groups` scales each (`Q8Gemm::run` checked `m * stride`,
            // `n * stride` values and `m * groups`, `n * groups` scales); every 16-byte load
            // starts at `g * group + k` with `k + 16 <= group` (group is a multiple of 16).
            let facc = unsafe {
                let ap = a.values.as_ptr().add(i * stride);
                let wp = w.values.as_ptr().add(j * stride);
                let (asp, wsp) = (a.scales.as_ptr().add(i * groups), w.scales.as_ptr().add(j * groups));
                // facc[p][q]: rows 2p, 2p+1 x columns 2q, 2q+1, lanes [r0c0, r0c1, r1c0, r1c1].
                let mut facc = [[vdupq_n_f32(0.0); SMMLA_COLS / 2]; 2];
                for g in 0..groups {
                    let mut acc = [[vdupq_n_s32(0); SMMLA_COLS / 2]; 2];
                    for k in (g * group..(g + 1) * group).step_by(16) {
                        let x: [int8x16_t; 4] = core::array::from_fn(|r| vld1q_s8(ap.add(r * stride + k)));
                        let xs = [pair(x[0], x[1]), pair(x[2], x[3])];
                        for q in 0..SMMLA_COLS / 2 {
                            let (yl, yh) =
                                pair(vld1q_s8(wp.add(2 * q * stride + k)), vld1q_s8(wp.add((2 * q + 1) * stride + k)));
                            for (p, (xl, xh)) in xs.iter().enumerate() {
                                acc[p][q] = smmla(smmla(acc[p][q], *xl, yl), *xh, yh);
                            }
                        }
                    }
                    let sa: [[f32; 4]; 2] = core::array::from_fn(|p| {
                        let (r0, r1) = (*asp.add(2 * p * groups + g), *asp.add((2 * p + 1) * groups + g));
                        [r0, r0, r1, r1]
                    });
                    for q in 0..SMMLA_COLS / 2 {
                        let (c0, c1) = (*wsp.add(2 * q * groups + g), *wsp.add((2 * q + 1) * groups + g));
                        let sw = vld1q_f32([c0, c1, c0, c1].as_ptr());
                        for p in 0..2 {
                            // (sa * sw) * dot, then the add: the scalar kernel's rounding order.
                            let scale = vmulq_f32(vld1q_f32(sa[p].as_ptr()), sw);
                            facc[p][q] = vaddq_f32(facc[p][q], vmulq_f32(scale, vcvtq_f32_s32(acc[p][q])));
                        }
                    }
                }
                facc
            };
            for (p, row) in facc.iter().enumerate() {
                for (q, block) in row.iter().enumerate() {
                    let mut v = [0f32; 4];
                    // SAFETY: NEON is enabled; `v` holds 4 f32.
                    unsafe { vst1q_f32(v.as_mut_ptr(), *block) };
                    for (l, x) in v.iter().enumerate() {
                        let (r, c) = (i + 2 * p + l / 2, j + 2 * q + l % 2);
                        out[r * s.ldo + c] = x + bias.map_or(0.0, |b| b[c]);
                    }
                }
            }
        }
    }
    scalar::gemm_q8_block(a, w, bias, out, s, 0..m4, nt..s.n);
    scalar::gemm_q8_block(a, w, bias, out, s, m4..s.m, 0..s.n);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{f16_convert_sweep, f16_sweep, q8_agrees_on_minus_128, F16Widen, F16_SCRATCH_BYTES};

    /// Groups that are not a multiple of 16 (which `Q8Gemm::run` accepts; blobs do not have
    /// them) take the scalar kernel: the tiles would load past a group, and past the last row.
    #[test]
    fn neon_q8_variants_match_scalar_on_groups_of_8_and_24() {
        use crate::kernels::testing::{q8_scratch_bytes, q8_sweep};
        let shapes = [(4, 8, 8, 8), (5, 9, 48, 24), (8, 8, 24, 8)];
        let mut scratch = std::vec![0u8; q8_scratch_bytes(&shapes) + 64];
        let mut variants = std::vec![BASE];
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            // SAFETY: dotprod was just detected.
            variants.push(unsafe { sdot_unchecked() });
        }
        if std::arch::is_aarch64_feature_detected!("i8mm") {
            // SAFETY: i8mm was just detected.
            variants.push(unsafe { i8mm_unchecked() });
        }
        for v in variants {
            q8_sweep(v, &shapes, &mut scratch).unwrap_or_else(|m| panic!("{m:?}"));
        }
    }

    /// The `smull` kernel relies on the activation contract of [`QRows`] (-127..=127), the
    /// `sdot` and `smmla` kernels do not.
    #[test]
    fn only_the_smull_kernel_needs_activations_above_minus_128() {
        assert!(!q8_agrees_on_minus_128(gemm_q8_base), "smull now agrees with scalar on -128: relax the contract");
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            assert!(q8_agrees_on_minus_128(gemm_q8_sdot));
        }
        if std::arch::is_aarch64_feature_detected!("i8mm") {
            assert!(q8_agrees_on_minus_128(gemm_q8_i8mm));
        }
    }

    /// The float GEMM's fp16 load ([`LoadW::load4`], `fcvtl`) over a slice.
    fn load4_slice(src: &[half::f16], dst: &mut [f32]) {
        assert!(src.len().is_multiple_of(4) && dst.len() >= src.len());
        for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(4)) {
            // SAFETY: NEON is enabled for this module; `s` holds 4 f16 and `d` 4 f32.
            unsafe { vst1q_f32(d.as_mut_ptr(), <half::f16 as LoadW>::load4(s.as_ptr())) }
        }
    }

    /// `fcvtl` as the NEON float GEMM widens fp16 weights, over all 65,536 bit patterns: the
    /// load itself bit for bit (signed zeros and NaN payloads included), then the whole fp16
    /// GEMM with one weight per output (payloads must survive its arithmetic too: FPCR.DN is
    /// clear on Linux).
    #[test]
    fn fcvtl_matches_half_on_every_f16() {
        let step = F16Widen { name: "fcvtl (LoadW::load4)", convert: load4_slice, nan_payload: true };
        let r = f16_convert_sweep(step).unwrap_or_else(|m| panic!("{m:?}"));
        assert_eq!((r.patterns, r.compared, r.nan_exact), (65536, 2 * 65536, 2 * 2046));
        std::println!("fcvtl load: {r:?}");
        let mut scratch = std::vec![0u8; F16_SCRATCH_BYTES];
        let r = f16_sweep(F_NEON, &mut scratch).unwrap_or_else(|m| panic!("{m:?}"));
        assert_eq!((r.compared, r.nan_default), (4 * 65536, 0));
        std::println!("{}: {r:?}", F_NEON.name());
    }
}
