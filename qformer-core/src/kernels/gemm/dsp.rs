//! Cortex-M4/M7 (Armv7E-M DSP extension) int8 GEMM with `smlad`: two 16 x 16-bit products
//! added to an i32 per instruction. The ARM SIMD32 intrinsics are unstable, so `sxtb16` and
//! `smlad` are one-instruction `asm!` blocks.
//!
//! As in CMSIS-NN, a word of 4 int8 values `[x0 x1 x2 x3]` is widened by `sxtb16` into
//! `[x0 x2]` and by `sxtb16 ..., ror #8` into `[x1 x3]` (two i16 each); `smlad` of the matching
//! halves of two operands adds `x0*y0 + x2*y2`, then `x1*y1 + x3*y3`. The tile is 4 rows x 1
//! column. The activations of the 4 rows are widened once per chunk of `K_CHUNK` columns into
//! a 2 KiB stack buffer, interleaved so that one `ldm` loads the widened words of 2 rows; every
//! column reuses it. Per 4 columns of `k` the tile then runs 1 unaligned `ldr` and 2 `sxtb16`
//! for the weights, 2 `ldm` for the activations and 8 `smlad`: 13 instructions for 16 MACs.
//! The dot loop of one group is one `asm!` block (LLVM spills when each instruction is its
//! own block).
//!
//! Per group the 4 dots are combined on the scalar FPU exactly as [`scalar::gemm_q8_block`]
//! does (`acc += (sa * sw) * dot`, then `acc + bias`); between chunks the partial `acc` waits
//! in `out`. A last block of fewer than 4 rows repeats its last row (computed, not written).
//! Groups that are not a multiple of 16 or longer than a chunk go to [`scalar::gemm_q8`].

use core::arch::asm;

use super::{scalar, Q8Gemm, Shape};
use crate::kernels::QRows;

/// The DSP variant (`target_feature = "dsp"`: thumbv7em, thumbv8m.main with DSP).
pub const DSP: Q8Gemm = Q8Gemm::new("dsp_gemm_q8_smlad_4x1", gemm_q8_dsp);

/// Columns of `k` widened per chunk: the stack buffer holds 4 rows x `K_CHUNK` i16.
const K_CHUNK: usize = 256;

/// `[x0 x2]` as two sign-extended i16 (`sxtb16`).
#[inline(always)]
fn sxtb16(x: u32) -> u32 {
    let r: u32;
    // SAFETY: a register-only DSP instruction (this module is compiled only with `dsp`).
    unsafe {
        asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `[x1 x3]` as two sign-extended i16 (`sxtb16 ..., ror #8`).
#[inline(always)]
fn sxtb16_ror8(x: u32) -> u32 {
    let r: u32;
    // SAFETY: a register-only DSP instruction.
    unsafe {
        asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// A little-endian word of 4 int8 at any alignment: one `ldr` (Armv7E-M loads unaligned
/// words in hardware).
#[inline(always)]
fn word(b: &[i8], at: usize) -> u32 {
    let b = &b[at..at + 4];
    // SAFETY: `b` has 4 readable bytes; `read_unaligned` has no alignment requirement.
    unsafe { core::ptr::read_unaligned(b.as_ptr() as *const u32) }
}

/// Widens 4 rows of `len` int8 (a multiple of 4) into `dst`: per 4 columns, the 8 words
/// `[r0 even, r0 odd, r1 even, r1 odd, r2 even, r2 odd, r3 even, r3 odd]`.
fn widen4(rows: [&[i8]; 4], len: usize, dst: &mut [u32]) {
    for (q, d) in dst[..2 * len].chunks_exact_mut(8).enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let x = word(row, 4 * q);
            d[2 * r] = sxtb16(x);
            d[2 * r + 1] = sxtb16_ror8(x);
        }
    }
}

/// One substep of [`dots_4x1`]: 4 columns of `k` (`$w`: weight pointer, `$x`: widened
/// activations).
macro_rules! substep_4x1 {
    () => {
        concat!(
            "ldr {y}, [{w}], #4\n",
            "sxtb16 {yo}, {y}, ror #8\n",
            "sxtb16 {y}, {y}\n",
            "ldm {x}!, {{r8, r9, r10, r11}}\n",
            "smlad {d0}, r8, {y}, {d0}\n",
            "smlad {d0}, r9, {yo}, {d0}\n",
            "smlad {d1}, r10, {y}, {d1}\n",
            "smlad {d1}, r11, {yo}, {d1}\n",
            "ldm {x}!, {{r8, r9, r10, r11}}\n",
            "smlad {d2}, r8, {y}, {d2}\n",
            "smlad {d2}, r9, {yo}, {d2}\n",
            "smlad {d3}, r10, {y}, {d3}\n",
            "smlad {d3}, r11, {yo}, {d3}\n",
        )
    };
}

/// Exact dots of one group for 4 widened rows and 1 weight row, 16 columns per iteration.
/// Advances `x` by `2 * len` words and `w` by `len` bytes.
///
/// # Safety
/// `len` is a non-zero multiple of 16; `x` has `2 * len` readable words, `w` `len` bytes.
#[inline(always)]
unsafe fn dots_4x1(x: &mut *const u32, w: &mut *const i8, len: usize) -> [i32; 4] {
    debug_assert!(len >= 16 && len.is_multiple_of(16));
    let (mut d0, mut d1, mut d2, mut d3) = (0i32, 0i32, 0i32, 0i32);
    // SAFETY: the caller guarantees the bounds; the block reads only those, writes only its
    // declared registers; `smlad` cannot overflow (|dot| <= len * 128 * 127 < 2^31).
    unsafe {
        asm!(
            "2:",
            substep_4x1!(),
            substep_4x1!(),
            substep_4x1!(),
            substep_4x1!(),
            "subs {n}, #1",
            "bne 2b",
            x = inout(reg) *x,
            w = inout(reg) *w,
            n = inout(reg) len / 16 => _,
            y = out(reg) _,
            yo = out(reg) _,
            d0 = inout(reg) d0,
            d1 = inout(reg) d1,
            d2 = inout(reg) d2,
            d3 = inout(reg) d3,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nostack, readonly),
        );
    }
    [d0, d1, d2, d3]
}

fn gemm_q8_dsp(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    let (stride, group) = (a.stride, a.group);
    if !group.is_multiple_of(16) || group > K_CHUNK || stride == 0 {
        return scalar::gemm_q8(a, w, bias, out, s);
    }
    let groups = stride / group;
    let chunk = K_CHUNK / group * group;
    let mut buf = [0u32; 2 * K_CHUNK];
    for i in (0..s.m).step_by(4) {
        // Rows of the tile; a short last block repeats its last row (written once).
        let rows: [usize; 4] = core::array::from_fn(|r| (i + r).min(s.m - 1));
        let ar: [&[i8]; 4] = core::array::from_fn(|r| &a.values[rows[r] * stride..(rows[r] + 1) * stride]);
        let sa: [&[f32]; 4] = core::array::from_fn(|r| &a.scales[rows[r] * groups..(rows[r] + 1) * groups]);
        let live = (s.m - i).min(4);
        for k0 in (0..stride).step_by(chunk) {
            let kc = chunk.min(stride - k0);
            let last = k0 + kc == stride;
            widen4(core::array::from_fn(|r| &ar[r][k0..k0 + kc]), kc, &mut buf);
            for j in 0..s.n {
                let wr = &w.values[j * stride + k0..j * stride + k0 + kc];
                let sw = &w.scales[j * groups..(j + 1) * groups];
                let o: [usize; 4] = core::array::from_fn(|r| rows[r] * s.ldo + j);
                let mut acc = if k0 == 0 { [0f32; 4] } else { core::array::from_fn(|r| out[o[r]]) };
                let (mut xp, mut wp) = (buf.as_ptr(), wr.as_ptr());
                for g in k0 / group..(k0 + kc) / group {
                    // SAFETY: `buf` holds `2 * kc` widened words of this chunk and `wr` its
                    // `kc` bytes; the pointers advance by one group (`2 * group` words,
                    // `group` bytes) per call, `kc / group` calls in all; `group` is a
                    // non-zero multiple of 16.
                    let d = unsafe { dots_4x1(&mut xp, &mut wp, group) };
                    for ((x, sar), &dr) in acc.iter_mut().zip(&sa).zip(&d) {
                        *x += (sar[g] * sw[g]) * dr as f32;
                    }
                }
                if last {
                    let b = bias.map_or(0.0, |b| b[j]);
                    acc.iter_mut().for_each(|v| *v += b);
                }
                for (&at, &x) in o.iter().zip(&acc).take(live) {
                    out[at] = x;
                }
            }
        }
    }
}
