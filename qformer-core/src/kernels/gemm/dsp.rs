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
//! Every block using a DSP instruction is wrapped in `dsp_begin!` and `dsp_end!`: on
//! thumbv8m.main the DSP extension is optional, LLVM's target lacks it (the `dsp` cargo feature
//! declares the CPU has it) and its assembler knows no `.arch_extension dsp`, so the block
//! switches the assembler to Armv7E-M (whose instructions are all it uses) and back; on
//! thumbv7em, where DSP is part of the architecture, both are empty.
//!
//! Per group the 4 dots are combined on the scalar FPU exactly as [`scalar::gemm_q8_block`]
//! does (`acc += (sa * sw) * dot`, then `acc + bias`); between chunks the partial `acc` waits
//! in `out`. A last block of fewer than 4 rows repeats its last row (computed, not written).
//! Groups that are not a multiple of 16 or longer than a chunk go to [`scalar::gemm_q8`].
//!
//! With the FPU (cfg `qf_fpu`, a hard-float target: FPv4-SP on Cortex-M4F, FPv5 on Cortex-M7) the
//! module also has the float GEMM `F_DSP`, a register-blocked scalar-FPU kernel: a tile of
//! 4 rows of `a` x 2 rows of `w` keeps its 8 accumulators in s0-s7 and, per 4 columns of `k`,
//! loads 4 x 4 activations (s8-s23) and 2 x 4 weights (s24-s31) with 6 `vldmia` and issues
//! 32 `vfma.f32`: 40 instructions with the loop for 32 MACs. fp16 weights are widened once per
//! 2 columns and chunk of `K_CHUNK` columns of `k` into a 2 KiB stack buffer (`ldr`, `vmov`,
//! then `vcvtb`/`vcvtt.f32.f16`, exact) that every row block reuses; between chunks the partial
//! sums wait in `out`. Columns of `k` past the last multiple of 4 are added in plain Rust; a
//! last block of fewer than 4 rows (2 columns) repeats its last row (column), computed but not
//! written.

use core::arch::asm;

#[cfg(qf_fpu)]
use super::FGemm;
use super::{scalar, Q8Gemm, Shape};
use crate::kernels::QRows;

/// The DSP variant (cfg `qf_dsp`: thumbv7em, thumbv8m.main with the `dsp` feature).
pub const DSP: Q8Gemm = Q8Gemm::new("dsp_gemm_q8_smlad_4x1", gemm_q8_dsp);

/// Assembler directives opening an `asm!` block with DSP instructions (see the module docs);
/// the block's FPU instructions, if any, are FPv4-SP ones.
#[cfg(qf_v8m_dsp)]
macro_rules! dsp_begin {
    () => {
        ".arch armv7e-m\n.fpu fpv4-sp-d16"
    };
}
#[cfg(not(qf_v8m_dsp))]
macro_rules! dsp_begin {
    () => {
        ""
    };
}
/// Directives closing a block opened with `dsp_begin!`: back to the target's architecture
/// and FPU (which also keeps the object's build attributes those of the target).
#[cfg(all(qf_v8m_dsp, qf_fpu))]
macro_rules! dsp_end {
    () => {
        ".arch armv8-m.main\n.fpu fpv5-sp-d16"
    };
}
#[cfg(all(qf_v8m_dsp, not(qf_fpu)))]
macro_rules! dsp_end {
    () => {
        ".arch armv8-m.main\n.fpu softvfp"
    };
}
#[cfg(not(qf_v8m_dsp))]
macro_rules! dsp_end {
    () => {
        ""
    };
}
#[cfg(qf_fpu)] // for `quant::dsp`, compiled only with the FPU
pub(crate) use {dsp_begin, dsp_end};

/// Columns of `k` widened per chunk: the stack buffer holds 4 rows x `K_CHUNK` i16.
const K_CHUNK: usize = 256;

/// `[x0 x2]` as two sign-extended i16 (`sxtb16`).
#[inline(always)]
fn sxtb16(x: u32) -> u32 {
    let r: u32;
    // SAFETY: a register-only DSP instruction (this module is compiled only with `dsp`).
    unsafe {
        asm!(
            dsp_begin!(),
            "sxtb16 {r}, {x}",
            dsp_end!(),
            r = lateout(reg) r,
            x = in(reg) x,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
    r
}

/// `[x1 x3]` as two sign-extended i16 (`sxtb16 ..., ror #8`).
#[inline(always)]
fn sxtb16_ror8(x: u32) -> u32 {
    let r: u32;
    // SAFETY: a register-only DSP instruction.
    unsafe {
        asm!(
            dsp_begin!(),
            "sxtb16 {r}, {x}, ror #8",
            dsp_end!(),
            r = lateout(reg) r,
            x = in(reg) x,
            options(pure, nomem, nostack, preserves_flags),
        )
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
            dsp_begin!(),
            "2:",
            substep_4x1!(),
            substep_4x1!(),
            substep_4x1!(),
            substep_4x1!(),
            "subs {n}, #1",
            "bne 2b",
            dsp_end!(),
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

/// The float GEMM variant (f32 or fp16 weights, f32 accumulation): compiled for thumbv7em with
/// the FPU (Cortex-M4F, Cortex-M7).
#[cfg(qf_fpu)]
pub const F_DSP: FGemm = FGemm::new("dsp_gemm_f32_f16_4x2_vfma", fgemm_f32_dsp, fgemm_f16_dsp);

/// 4 x 2 tile over `4 * n4` columns of `k`: `acc[2 r + c] += sum a[r][kk] * w[c][kk]`, fused.
///
/// # Safety
/// `n4 >= 1`; every `a[r]` and `w[c]` points to `4 * n4` readable, word-aligned f32.
#[cfg(qf_fpu)]
#[inline(always)]
unsafe fn tile_4x2(a: [*const f32; 4], w: [*const f32; 2], n4: usize, acc: &mut [f32; 8]) {
    debug_assert!(n4 >= 1);
    // SAFETY: the caller guarantees `4 * n4` readable f32 behind each pointer (`vldmia` reads
    // 4 per iteration, `n4` iterations); `acc` is 8 writable f32; VFMA is in FPv4 and FPv5.
    // Only the declared registers and the flags are written (s16-s31 are callee-saved:
    // declaring them makes the compiler save them).
    unsafe {
        asm!(
            "vldmia {acc}, {{s0-s7}}",
            "2:",
            "vldmia {a0}!, {{s8-s11}}",
            "vldmia {a1}!, {{s12-s15}}",
            "vldmia {a2}!, {{s16-s19}}",
            "vldmia {a3}!, {{s20-s23}}",
            "vldmia {w0}!, {{s24-s27}}",
            "vldmia {w1}!, {{s28-s31}}",
            "vfma.f32 s0, s8, s24",
            "vfma.f32 s1, s8, s28",
            "vfma.f32 s2, s12, s24",
            "vfma.f32 s3, s12, s28",
            "vfma.f32 s4, s16, s24",
            "vfma.f32 s5, s16, s28",
            "vfma.f32 s6, s20, s24",
            "vfma.f32 s7, s20, s28",
            "vfma.f32 s0, s9, s25",
            "vfma.f32 s1, s9, s29",
            "vfma.f32 s2, s13, s25",
            "vfma.f32 s3, s13, s29",
            "vfma.f32 s4, s17, s25",
            "vfma.f32 s5, s17, s29",
            "vfma.f32 s6, s21, s25",
            "vfma.f32 s7, s21, s29",
            "vfma.f32 s0, s10, s26",
            "vfma.f32 s1, s10, s30",
            "vfma.f32 s2, s14, s26",
            "vfma.f32 s3, s14, s30",
            "vfma.f32 s4, s18, s26",
            "vfma.f32 s5, s18, s30",
            "vfma.f32 s6, s22, s26",
            "vfma.f32 s7, s22, s30",
            "vfma.f32 s0, s11, s27",
            "vfma.f32 s1, s11, s31",
            "vfma.f32 s2, s15, s27",
            "vfma.f32 s3, s15, s31",
            "vfma.f32 s4, s19, s27",
            "vfma.f32 s5, s19, s31",
            "vfma.f32 s6, s23, s27",
            "vfma.f32 s7, s23, s31",
            "subs {n}, #1",
            "bne 2b",
            "vstmia {acc}, {{s0-s7}}",
            a0 = inout(reg) a[0] => _,
            a1 = inout(reg) a[1] => _,
            a2 = inout(reg) a[2] => _,
            a3 = inout(reg) a[3] => _,
            w0 = inout(reg) w[0] => _,
            w1 = inout(reg) w[1] => _,
            n = inout(reg) n4 => _,
            acc = in(reg) acc.as_mut_ptr(),
            out("s0") _, out("s1") _, out("s2") _, out("s3") _, out("s4") _, out("s5") _,
            out("s6") _, out("s7") _, out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            out("s12") _, out("s13") _, out("s14") _, out("s15") _, out("s16") _,
            out("s17") _, out("s18") _, out("s19") _, out("s20") _, out("s21") _,
            out("s22") _, out("s23") _, out("s24") _, out("s25") _, out("s26") _,
            out("s27") _, out("s28") _, out("s29") _, out("s30") _, out("s31") _,
            options(nostack),
        );
    }
}

/// Adds to `acc` the products of rows `rows` of `a` (columns `k0..k0 + kc`) with the two weight
/// runs `w` (`kc` values each): [`tile_4x2`] for whole steps of 4, plain Rust for the rest.
#[cfg(qf_fpu)]
fn block_4x2(a: &[f32], k: usize, rows: [usize; 4], k0: usize, w: [&[f32]; 2], acc: &mut [f32; 8]) {
    let kc = w[0].len();
    assert!(w[1].len() == kc);
    let ar: [&[f32]; 4] = core::array::from_fn(|r| &a[rows[r] * k + k0..rows[r] * k + k0 + kc]);
    let n4 = kc / 4;
    if n4 > 0 {
        // SAFETY: every slice above holds `kc >= 4 * n4` f32 (f32 slices are word aligned).
        unsafe { tile_4x2(ar.map(|r| r.as_ptr()), w.map(|c| c.as_ptr()), n4, acc) };
    }
    for kk in 4 * n4..kc {
        for (r, row) in ar.iter().enumerate() {
            for (c, col) in w.iter().enumerate() {
                acc[2 * r + c] += row[kk] * col[kk];
            }
        }
    }
}

/// Rows of the 4-row block at `i` (a short last block repeats its last row) and how many are
/// real.
#[cfg(qf_fpu)]
fn rows4(i: usize, m: usize) -> ([usize; 4], usize) {
    (core::array::from_fn(|r| (i + r).min(m - 1)), (m - i).min(4))
}

/// `out = bias` (what every variant computes for `k = 0`).
#[cfg(qf_fpu)]
fn bias_only(bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    for i in 0..s.m {
        for j in 0..s.n {
            out[i * s.ldo + j] = 0.0 + bias.map_or(0.0, |b| b[j]);
        }
    }
}

#[cfg(qf_fpu)]
fn fgemm_f32_dsp(a: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    let Shape { m, n, k, ldo } = s;
    if k == 0 {
        return bias_only(bias, out, s);
    }
    for i in (0..m).step_by(4) {
        let (rows, live) = rows4(i, m);
        for j in (0..n).step_by(2) {
            let cols = [j, (j + 1).min(n - 1)];
            let mut acc = [0f32; 8];
            block_4x2(a, k, rows, 0, cols.map(|c| &w[c * k..(c + 1) * k]), &mut acc);
            for (r, &row) in rows.iter().enumerate().take(live) {
                for (c, &col) in cols.iter().enumerate().take(n - j) {
                    out[row * ldo + col] = acc[2 * r + c] + bias.map_or(0.0, |b| b[col]);
                }
            }
        }
    }
}

/// Widens `src` (fp16) into `dst[..src.len()]`: `vcvtb`/`vcvtt.f32.f16`, 4 values per step
/// (exact, as `half`'s conversion is; swept over every bit pattern by the bare-metal tests
/// through [`crate::kernels::testing::f16_widening_steps`]). Panics if `dst` is shorter.
#[cfg(qf_fpu)]
pub(crate) fn widen_f16(src: &[half::f16], dst: &mut [f32]) {
    let dst = &mut dst[..src.len()];
    let n4 = src.len() / 4;
    if n4 > 0 {
        // SAFETY: reads `4 * n4` f16 (8 bytes per step with two `ldr`, which allow any
        // alignment on Armv7E-M) and writes `4 * n4` f32 to `dst` (word aligned, as `vstmia`
        // needs), both within the slices; only the declared registers and the flags are
        // written.
        unsafe {
            asm!(
                "2:",
                "ldr r0, [{s}], #4",
                "ldr r1, [{s}], #4",
                "vmov s0, s1, r0, r1",
                "vcvtb.f32.f16 s2, s0",
                "vcvtt.f32.f16 s3, s0",
                "vcvtb.f32.f16 s4, s1",
                "vcvtt.f32.f16 s5, s1",
                "vstmia {d}!, {{s2-s5}}",
                "subs {n}, #1",
                "bne 2b",
                s = inout(reg) src.as_ptr() => _,
                d = inout(reg) dst.as_mut_ptr() => _,
                n = inout(reg) n4 => _,
                out("r0") _, out("r1") _,
                out("s0") _, out("s1") _, out("s2") _, out("s3") _, out("s4") _, out("s5") _,
                options(nostack),
            );
        }
    }
    for (d, h) in dst[4 * n4..].iter_mut().zip(&src[4 * n4..]) {
        *d = h.to_f32();
    }
}

#[cfg(qf_fpu)]
fn fgemm_f16_dsp(a: &[f32], w: &[half::f16], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    let Shape { m, n, k, ldo } = s;
    if k == 0 {
        return bias_only(bias, out, s);
    }
    let mut buf = [[0f32; K_CHUNK]; 2];
    for j in (0..n).step_by(2) {
        let cols = [j, (j + 1).min(n - 1)];
        for k0 in (0..k).step_by(K_CHUNK) {
            let kc = K_CHUNK.min(k - k0);
            let last = k0 + kc == k;
            for (b, &c) in buf.iter_mut().zip(&cols) {
                widen_f16(&w[c * k + k0..c * k + k0 + kc], b);
            }
            for i in (0..m).step_by(4) {
                let (rows, live) = rows4(i, m);
                let at = |r: usize, c: usize| rows[r] * ldo + cols[c];
                let mut acc: [f32; 8] =
                    if k0 == 0 { [0.0; 8] } else { core::array::from_fn(|x| out[at(x / 2, x % 2)]) };
                block_4x2(a, k, rows, k0, [&buf[0][..kc], &buf[1][..kc]], &mut acc);
                for r in 0..live {
                    for c in 0..(n - j).min(2) {
                        let x = acc[2 * r + c];
                        out[at(r, c)] = if last { x + bias.map_or(0.0, |b| b[cols[c]]) } else { x };
                    }
                }
            }
        }
    }
}
