//! Cortex-M55/M85 Helium (MVE) int8 GEMM in `asm!` (stable Rust has no MVE intrinsics).
//!
//! `vldrb.8` loads 16 int8 values, `vmladav.s8`/`vmladava.s8` add the 16 products exactly to
//! a general-purpose register (|sum| <= 128 * 127 * 16 per instruction, far inside i32). The
//! main tile is 2 rows x 4 columns: per 16 bytes of a group, 6 loads feed 8 `vmladav` (128
//! MACs); the 8 dots live in the 8 even general-purpose registers `vmladav` can write
//! (r0, r2, r4, r6, r8, r10, r12, lr), the 6 streams in r1, r3, r5, r7, r9, r11. One `asm!`
//! block runs every group of a tile, so no register is spilled inside the loop.
//!
//! Per group the tile applies `acc += (sa * sw) * dot` with MVE float vectors (4 columns a
//! row): the dots go to lanes with `vmov.32 q[c], rx`, `vcvt.f32.s32` converts them
//! exactly (|dot| < 2^24 for group <= 128), the column scales come from one `vldrw` gather.
//! MVE float arithmetic flushes subnormals (QEMU models it with the "standard FPSCR value"),
//! which the scalar FPU does not; so the vector combine only runs when every scale involved is
//! 0 or has a magnitude in [2^-40, 2^40): then every product, term and partial sum is 0 or a
//! multiple of 2^-103 (never subnormal) and finite, and the vector result equals the scalar
//! one bit for bit. Otherwise, and for group sizes other than 16, 32, 64 and 128 (the unrolled
//! tiles), the kernel computes 1 x 4 dots with `vmladav` per group and combines them on the
//! scalar FPU. Odd last rows take that path too; ragged columns go to
//! [`scalar::gemm_q8_block`]. `acc + bias` always runs on the scalar FPU.
//!
//! The float GEMM [`F_HELIUM`] vectorizes over `k`: a tile of 2 rows of `a` x 2 rows of `w`
//! keeps 4 vector accumulators (q0-q3) and, per 4 columns of `k`, loads 2 activation and 2
//! weight vectors and issues 4 `vfma.f32` (16 MACs; 2 x 4 would need 8 accumulators, and MVE
//! has 8 Q registers in all). fp16 weights come in with the widening `vldrh.u32` and
//! `vcvtb.f32.f16` (exact, signed zeros and half-precision subnormals included; NaNs become
//! the default NaN, as MVE arithmetic would make them anyway; all 65,536 patterns are swept by
//! the bare-metal tests through the GEMM and through `widen_f16`, the same load alone). The `k`
//! loop is tail-predicated (`dlstp.32`/`letp`), so any `k` runs without a scalar tail. At the
//! end each accumulator's 4 lanes are summed on the scalar FPU (the Q registers alias
//! s0-s15). MVE float arithmetic flushes subnormal products and sums to zero, an absolute
//! error below 2^-126 per operation, inside the float GEMMs' stated bound. A last block of one
//! row (column) repeats it, computed but not written.

use core::arch::asm;

use super::{scalar, FGemm, Q8Gemm, Shape};
use crate::kernels::QRows;

/// The Helium variant. Compiled only with the cargo feature `helium`, which declares that the
/// CPU implements MVE with floating point (Cortex-M55, Cortex-M85); on a CPU without MVE its
/// instructions raise a UsageFault.
pub const HELIUM: Q8Gemm = Q8Gemm::new(NAME, gemm_q8_helium);

const NAME: &str = "helium_gemm_q8_vmladav_2x4";

/// Operands of one 2 x 4 tile, read by the tile `asm!` at fixed offsets (noted per field).
#[repr(C, align(16))]
struct Tile {
    /// 0: addresses of the 4 columns' scale rows, minus 4 (the gather pre-increments).
    sw: [usize; 4],
    /// 16: addresses of the 2 rows' scale rows, minus 4, as lanes [row 0, row 0, row 1, row 1].
    sa: [usize; 4],
    /// 32: rows `i`, `i + 1` of `a`.
    a: [*const i8; 2],
    /// 40: rows `j..j + 4` of `w`.
    w: [*const i8; 4],
    /// 56: end of row `i` of `a` (the loop ends when the row-0 stream reaches it).
    a_end: *const i8,
    /// 60: the 4 biases of the columns (zeros without bias: the scalar kernel adds 0.0 too).
    bias: *const f32,
    /// 64: where the 4 outputs of row `i`, then of row `i + 1`, go.
    out: [*mut f32; 2],
}

const _: () = assert!(core::mem::size_of::<Tile>() == 80 && core::mem::align_of::<Tile>() == 16);
const _: () = assert!(core::mem::size_of::<usize>() == 4);

static ZEROS: [f32; 4] = [0.0; 4];

/// One 16-byte step of the 2 x 4 tile: `$op` is `vmladav` (first step of a group: starts the
/// dots) or `vmladava` (adds to them).
macro_rules! step_2x4 {
    ($op:literal) => {
        concat!(
            "vldrb.8 q0, [r1], #16\n",
            "vldrb.8 q1, [r3], #16\n",
            "vldrb.8 q2, [r5], #16\n",
            $op,
            ".s8 r0, q0, q2\n",
            $op,
            ".s8 r2, q1, q2\n",
            "vldrb.8 q2, [r7], #16\n",
            $op,
            ".s8 r4, q0, q2\n",
            $op,
            ".s8 r6, q1, q2\n",
            "vldrb.8 q2, [r9], #16\n",
            $op,
            ".s8 r8, q0, q2\n",
            $op,
            ".s8 r10, q1, q2\n",
            "vldrb.8 q2, [r11], #16\n",
            $op,
            ".s8 r12, q0, q2\n",
            $op,
            ".s8 lr, q1, q2\n",
        )
    };
}

/// A 2 x 4 tile over every group, the group being `$steps` x 16 bytes (unrolled).
macro_rules! tile_2x4 {
    ($name:ident, $($steps:expr),+) => {
        /// Runs every group of one 2 x 4 tile (see the module docs).
        ///
        /// # Safety
        /// The CPU implements MVE with floating point. `t.a`, `t.w` point to rows of at least
        /// `t.a_end - t.a[0]` bytes, a non-zero multiple of the unrolled group size; `t.sa`
        /// and `t.sw` lanes (plus 4) point to one f32 scale per group; `t.bias` to 4 readable
        /// f32 and `t.out` to 4 writable f32 each, not overlapping anything else read.
        unsafe fn $name(t: &Tile) {
            debug_assert!(t.a_end as usize > t.a[0] as usize);
            // SAFETY: the caller guarantees MVE and the bounds above; the loads read inside
            // the rows, scale rows and biases, the stores write the 8 outputs. r6 and r7 (reserved by
            // LLVM) are saved and restored inside the block; every other register it writes
            // is declared; the stack is back to its entry value at the end.
            unsafe {
                asm!(
                    ".arch armv8.1-m.main",
                    ".arch_extension mve.fp",
                    "push {{r6, r7}}",
                    "sub sp, #8",
                    "ldr r1, [r0, #56]",
                    "strd r1, r0, [sp]",
                    "vldrw.u32 q5, [r0]",
                    "vldrw.u32 q3, [r0, #16]",
                    "vmov.i32 q6, #0",
                    "vmov.i32 q7, #0",
                    "ldrd r1, r3, [r0, #32]",
                    "ldrd r5, r7, [r0, #40]",
                    "ldrd r9, r11, [r0, #48]",
                    "2:",
                    $($steps,)+
                    // Dots to float lanes: row 0 in q0, row 1 in q1, lane c = column c.
                    // (Single-lane moves: the two-lane `vmov q[2], q[0], rx, ry` is
                    // assembled by LLVM and executed by QEMU with opposite lane orders.)
                    "vmov.32 q0[0], r0",
                    "vmov.32 q0[1], r4",
                    "vmov.32 q0[2], r8",
                    "vmov.32 q0[3], r12",
                    "vmov.32 q1[0], r2",
                    "vmov.32 q1[1], r6",
                    "vmov.32 q1[2], r10",
                    "vmov.32 q1[3], lr",
                    "vcvt.f32.s32 q0, q0",
                    "vcvt.f32.s32 q1, q1",
                    // Column scales of this group (gather), row scales to r4 and r6.
                    "vldrw.u32 q2, [q5, #4]!",
                    "vldrw.u32 q4, [q3, #4]!",
                    "vmov.32 r4, q4[0]",
                    "vmov.32 r6, q4[2]",
                    // acc += (sa * sw) * dot, row by row.
                    "vmul.f32 q4, q2, r4",
                    "vmul.f32 q4, q4, q0",
                    "vadd.f32 q7, q7, q4",
                    "vmul.f32 q4, q2, r6",
                    "vmul.f32 q4, q4, q1",
                    "vadd.f32 q6, q6, q4",
                    "ldr r0, [sp]",
                    "cmp r1, r0",
                    "bne 2b",
                    // out = acc + bias on the scalar FPU (q7 = s28..s31, q6 = s24..s27).
                    "ldr r0, [sp, #4]",
                    "ldr r1, [r0, #60]",
                    "vldmia r1, {{s0-s3}}",
                    "vadd.f32 s28, s28, s0",
                    "vadd.f32 s29, s29, s1",
                    "vadd.f32 s30, s30, s2",
                    "vadd.f32 s31, s31, s3",
                    "vadd.f32 s24, s24, s0",
                    "vadd.f32 s25, s25, s1",
                    "vadd.f32 s26, s26, s2",
                    "vadd.f32 s27, s27, s3",
                    "ldrd r2, r3, [r0, #64]",
                    "vstmia r2, {{s28-s31}}",
                    "vstmia r3, {{s24-s27}}",
                    "add sp, #8",
                    "pop {{r6, r7}}",
                    inout("r0") t as *const Tile => _,
                    out("r1") _, out("r2") _, out("r3") _, out("r4") _, out("r5") _,
                    out("r8") _, out("r9") _, out("r10") _, out("r11") _, out("r12") _, out("lr") _,
                    out("s0") _, out("s1") _, out("s2") _, out("s3") _, out("s4") _, out("s5") _,
                    out("s6") _, out("s7") _, out("s8") _, out("s9") _, out("s10") _, out("s11") _,
                    out("s12") _, out("s13") _, out("s14") _, out("s15") _, out("s16") _,
                    out("s17") _, out("s18") _, out("s19") _, out("s20") _, out("s21") _,
                    out("s22") _, out("s23") _, out("s24") _, out("s25") _, out("s26") _,
                    out("s27") _, out("s28") _, out("s29") _, out("s30") _, out("s31") _,
                );
            }
        }
    };
}

tile_2x4!(tile_g16, step_2x4!("vmladav"));
tile_2x4!(tile_g32, step_2x4!("vmladav"), step_2x4!("vmladava"));
tile_2x4!(tile_g64, step_2x4!("vmladav"), step_2x4!("vmladava"), step_2x4!("vmladava"), step_2x4!("vmladava"));
tile_2x4!(
    tile_g128,
    step_2x4!("vmladav"),
    step_2x4!("vmladava"),
    step_2x4!("vmladava"),
    step_2x4!("vmladava"),
    step_2x4!("vmladava"),
    step_2x4!("vmladava"),
    step_2x4!("vmladava"),
    step_2x4!("vmladava")
);

/// Exact dots of one group of row `a` with 4 weight rows; advances every pointer by
/// `16 * steps` bytes.
///
/// # Safety
/// The CPU implements MVE; `steps >= 1` and each pointer has `16 * steps` readable bytes.
#[inline(always)]
unsafe fn dots_1x4(a: &mut *const i8, w: &mut [*const i8; 4], steps: usize) -> [i32; 4] {
    debug_assert!(steps >= 1);
    let (d0, d1, d2, d3): (i32, i32, i32, i32);
    // SAFETY: the caller guarantees MVE and `16 * steps` readable bytes behind each pointer;
    // the block reads only those and writes only its declared registers.
    unsafe {
        asm!(
            ".arch armv8.1-m.main",
            ".arch_extension mve.fp",
            "vldrb.8 q0, [{a}], #16",
            "vldrb.8 q1, [{w0}], #16",
            "vmladav.s8 r0, q0, q1",
            "vldrb.8 q1, [{w1}], #16",
            "vmladav.s8 r2, q0, q1",
            "vldrb.8 q1, [{w2}], #16",
            "vmladav.s8 r4, q0, q1",
            "vldrb.8 q1, [{w3}], #16",
            "vmladav.s8 r8, q0, q1",
            "subs {n}, #1",
            "beq 3f",
            "2:",
            "vldrb.8 q0, [{a}], #16",
            "vldrb.8 q1, [{w0}], #16",
            "vmladava.s8 r0, q0, q1",
            "vldrb.8 q1, [{w1}], #16",
            "vmladava.s8 r2, q0, q1",
            "vldrb.8 q1, [{w2}], #16",
            "vmladava.s8 r4, q0, q1",
            "vldrb.8 q1, [{w3}], #16",
            "vmladava.s8 r8, q0, q1",
            "subs {n}, #1",
            "bne 2b",
            "3:",
            a = inout(reg) *a,
            w0 = inout(reg) w[0],
            w1 = inout(reg) w[1],
            w2 = inout(reg) w[2],
            w3 = inout(reg) w[3],
            n = inout(reg) steps => _,
            out("r0") d0, out("r2") d1, out("r4") d2, out("r8") d3,
            out("s0") _, out("s1") _, out("s2") _, out("s3") _,
            out("s4") _, out("s5") _, out("s6") _, out("s7") _,
            options(nostack, readonly),
        );
    }
    [d0, d1, d2, d3]
}

/// `acc + (sa * sw) * (d as f32)` on the scalar FPU (IEEE, subnormals kept), each operation
/// rounded in the scalar kernel's order.
#[inline(always)]
fn combine(acc: f32, sa: f32, sw: f32, d: i32) -> f32 {
    let bits: u32;
    // SAFETY: scalar FPU arithmetic on registers only (the FPU is enabled on every target
    // with the hard-float ABI this module is built for). rustc lets float operands into
    // `asm!` only with its `vfp2` feature, which thumbv8m.main does not report, hence the bits
    // in general-purpose registers.
    unsafe {
        asm!(
            "vmov s0, {acc}",
            "vmov s1, {sa}",
            "vmov s2, {sw}",
            "vmov s3, {d}",
            "vcvt.f32.s32 s3, s3",
            "vmul.f32 s1, s1, s2",
            "vmul.f32 s3, s1, s3",
            "vadd.f32 s0, s0, s3",
            "vmov {acc}, s0",
            acc = inout(reg) acc.to_bits() => bits,
            sa = in(reg) sa.to_bits(),
            sw = in(reg) sw.to_bits(),
            d = in(reg) d,
            out("s0") _, out("s1") _, out("s2") _, out("s3") _,
            options(pure, nomem, nostack),
        );
    }
    f32::from_bits(bits)
}

/// `x + y` on the scalar FPU (never an MVE lane, which would flush subnormals).
#[inline(always)]
fn add(x: f32, y: f32) -> f32 {
    let bits: u32;
    // SAFETY: scalar FPU arithmetic on registers only (see `combine`).
    unsafe {
        asm!(
            "vmov s0, {x}",
            "vmov s1, {y}",
            "vadd.f32 s0, s0, s1",
            "vmov {x}, s0",
            x = inout(reg) x.to_bits() => bits,
            y = in(reg) y.to_bits(),
            out("s0") _, out("s1") _,
            options(pure, nomem, nostack),
        );
    }
    f32::from_bits(bits)
}

/// Whether every scale is 0 or has a magnitude in [2^-40, 2^40) (finite, not subnormal): the
/// condition under which the MVE float combine equals the scalar one (see the module docs).
fn scales_fit_vector_combine(scales: &[f32]) -> bool {
    const LO: u32 = (127 - 40) << 23;
    const HI: u32 = (127 + 40) << 23;
    scales.iter().fold(true, |ok, s| {
        let m = s.to_bits() & 0x7fff_ffff;
        ok & ((m == 0) | ((LO..HI).contains(&m)))
    })
}

fn gemm_q8_helium(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    let (stride, group) = (a.stride, a.group);
    if !group.is_multiple_of(16) || stride == 0 {
        return scalar::gemm_q8(a, w, bias, out, s);
    }
    let groups = stride / group;
    let n4 = s.n / 4 * 4;
    let tile: Option<unsafe fn(&Tile)> = match group {
        16 => Some(tile_g16),
        32 => Some(tile_g32),
        64 => Some(tile_g64),
        128 => Some(tile_g128),
        _ => None,
    };
    let tile = tile.filter(|_| {
        scales_fit_vector_combine(&a.scales[..s.m * groups]) && scales_fit_vector_combine(&w.scales[..n4 * groups])
    });
    let m2 = if tile.is_some() { s.m / 2 * 2 } else { 0 };
    let bias_at = |j: usize| bias.map_or(0.0, |b| b[j]);

    if let Some(tile) = tile {
        let out_base = out.as_mut_ptr();
        for i in (0..m2).step_by(2) {
            let a0 = &a.values[i * stride..(i + 1) * stride];
            let a1 = &a.values[(i + 1) * stride..(i + 2) * stride];
            let sa0 = a.scales[i * groups..(i + 1) * groups].as_ptr() as usize - 4;
            let sa1 = a.scales[(i + 1) * groups..(i + 2) * groups].as_ptr() as usize - 4;
            for j in (0..n4).step_by(4) {
                let wr: [&[i8]; 4] = core::array::from_fn(|c| &w.values[(j + c) * stride..(j + c + 1) * stride]);
                let sw: [usize; 4] =
                    core::array::from_fn(|c| w.scales[(j + c) * groups..(j + c + 1) * groups].as_ptr() as usize - 4);
                let o = [i * s.ldo + j, (i + 1) * s.ldo + j];
                assert!(o[1] + 4 <= out.len());
                let t = Tile {
                    sw,
                    sa: [sa0, sa0, sa1, sa1],
                    a: [a0.as_ptr(), a1.as_ptr()],
                    w: core::array::from_fn(|c| wr[c].as_ptr()),
                    a_end: a0.as_ptr_range().end,
                    bias: bias.map_or(ZEROS.as_ptr(), |b| b[j..j + 4].as_ptr()),
                    // SAFETY: `o[r] + 4 <= out.len()` (asserted above), so both pointers and
                    // the 4 values after each lie inside `out`.
                    out: unsafe { [out_base.add(o[0]), out_base.add(o[1])] },
                };
                // SAFETY: MVE is declared by the `helium` feature. The rows are `stride`
                // bytes (sliced above), `stride` is a non-zero multiple of the unrolled group
                // size; the scale rows hold `groups` values each, the bias slice 4 values (both
                // sliced above); the two output runs are inside `out` (asserted above), apart
                // (`ldo >= n >= 4`), and `out` is not read by the tile.
                unsafe { tile(&t) };
            }
        }
    }

    // Rows not covered by 2 x 4 tiles: 1 x 4 dots per group, scalar-FPU combine.
    let steps = group / 16;
    for i in m2..s.m {
        let ar = &a.values[i * stride..(i + 1) * stride];
        let sa = &a.scales[i * groups..(i + 1) * groups];
        for j in (0..n4).step_by(4) {
            let mut ap = ar.as_ptr();
            let mut wp: [*const i8; 4] =
                core::array::from_fn(|c| w.values[(j + c) * stride..(j + c + 1) * stride].as_ptr());
            let mut acc = [0f32; 4];
            for (g, &sag) in sa.iter().enumerate() {
                // SAFETY: MVE is declared by the `helium` feature; `group` is a non-zero
                // multiple of 16 (checked by `Q8Gemm::run`), and each pointer has
                // `stride - g * group >= group` bytes left in its row.
                let d = unsafe { dots_1x4(&mut ap, &mut wp, steps) };
                for (c, (x, &dc)) in acc.iter_mut().zip(&d).enumerate() {
                    *x = combine(*x, sag, w.scales[(j + c) * groups + g], dc);
                }
            }
            for (c, &x) in acc.iter().enumerate() {
                out[i * s.ldo + j + c] = add(x, bias_at(j + c));
            }
        }
    }
    scalar::gemm_q8_block(a, w, bias, out, s, 0..s.m, n4..s.n);
}

/// The Helium float GEMM (f32 or fp16 weights, f32 accumulation). Compiled only with the cargo
/// feature `helium`, like [`HELIUM`].
pub const F_HELIUM: FGemm = FGemm::new("helium_gemm_f32_f16_2x2_vfma", fgemm_f32_helium, fgemm_f16_helium);

/// The fp16 weight load of [`ftile_f16`] as `asm!` text: 4 fp16 at the pointer operand `$p`
/// (post-incremented by 8 bytes) widened with `vldrh.u32` into the 32-bit lanes of `$q` and
/// converted there with `vcvtb.f32.f16`. [`widen_f16`] runs the same text alone.
macro_rules! widen_f16_x4 {
    ($q:literal, $p:literal) => {
        concat!("vldrh.u32 ", $q, ", [{", $p, "}], #8\n", "vcvtb.f32.f16 ", $q, ", ", $q, "\n")
    };
}

/// Converts `src` into `dst[..src.len()]` with the fp16 load of the float tile
/// (`widen_f16_x4!`: `vldrh.u32` + `vcvtb.f32.f16`), 4 values per step, the rest with
/// `half`. Not used by the GEMM, whose tile feeds the converted lanes straight into `vfma`
/// (MVE arithmetic replaces NaN payloads and cannot show a zero's sign): it lets the
/// bare-metal tests compare the conversion itself with `half` bit for bit
/// ([`crate::kernels::testing::f16_widening_steps`]). Panics if `dst` is shorter than `src`.
pub(crate) fn widen_f16(src: &[half::f16], dst: &mut [f32]) {
    let dst = &mut dst[..src.len()];
    let n4 = src.len() / 4;
    for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(4)) {
        // SAFETY: MVE is declared by the `helium` feature; reads the 4 f16 of `s` and writes
        // the 4 f32 of `d` (`vstrw.32` needs word alignment, which an f32 slice has); writes
        // only the declared registers.
        unsafe {
            asm!(
                ".arch armv8.1-m.main",
                ".arch_extension mve.fp",
                widen_f16_x4!("q0", "s"),
                "vstrw.32 q0, [{d}]",
                s = inout(reg) s.as_ptr() => _,
                d = in(reg) d.as_mut_ptr(),
                out("s0") _, out("s1") _, out("s2") _, out("s3") _,
                options(nostack),
            );
        }
    }
    for (d, h) in dst[4 * n4..].iter_mut().zip(&src[4 * n4..]) {
        *d = h.to_f32();
    }
}

/// One 2 x 2 float tile over `k` (see the module docs); `$w0`, `$w1` are the instructions
/// that load 4 weights of column 0, 1 as f32 into q6, q7.
macro_rules! ftile_2x2 {
    ($name:ident, $wty:ty, $($wload:expr),+) => {
        /// The 4 dots `[a0 . w0, a0 . w1, a1 . w0, a1 . w1]` over `k` values.
        ///
        /// # Safety
        /// The CPU implements MVE with floating point; `k >= 1` and each pointer has `k`
        /// readable values.
        unsafe fn $name(a: [*const f32; 2], w: [*const $wty; 2], k: usize) -> [f32; 4] {
            debug_assert!(k >= 1);
            let (d0, d1, d2, d3): (u32, u32, u32, u32);
            // SAFETY: the caller guarantees MVE and `k` values behind each pointer; the
            // tail-predicated loop reads exactly `k` per pointer (lanes past the end are
            // masked: no access). Only the declared registers are written; the loop ends
            // with LTPSIZE back at 4 (unpredicated), and the sums use the scalar FPU.
            unsafe {
                asm!(
                    ".arch armv8.1-m.main",
                    ".arch_extension mve.fp",
                    "vmov.i32 q0, #0",
                    "vmov.i32 q1, #0",
                    "vmov.i32 q2, #0",
                    "vmov.i32 q3, #0",
                    "dlstp.32 lr, {k}",
                    "2:",
                    "vldrw.u32 q4, [{a0}], #16",
                    "vldrw.u32 q5, [{a1}], #16",
                    $($wload,)+
                    "vfma.f32 q0, q4, q6",
                    "vfma.f32 q1, q4, q7",
                    "vfma.f32 q2, q5, q6",
                    "vfma.f32 q3, q5, q7",
                    "letp lr, 2b",
                    // Lane sums (s0+s1)+(s2+s3) of q0..q3 on the scalar FPU.
                    "vadd.f32 s0, s0, s1",
                    "vadd.f32 s2, s2, s3",
                    "vadd.f32 s0, s0, s2",
                    "vadd.f32 s4, s4, s5",
                    "vadd.f32 s6, s6, s7",
                    "vadd.f32 s4, s4, s6",
                    "vadd.f32 s8, s8, s9",
                    "vadd.f32 s10, s10, s11",
                    "vadd.f32 s8, s8, s10",
                    "vadd.f32 s12, s12, s13",
                    "vadd.f32 s14, s14, s15",
                    "vadd.f32 s12, s12, s14",
                    "vmov {a0}, s0",
                    "vmov {a1}, s4",
                    "vmov {w0}, s8",
                    "vmov {w1}, s12",
                    a0 = inout(reg) a[0] => d0,
                    a1 = inout(reg) a[1] => d1,
                    w0 = inout(reg) w[0] => d2,
                    w1 = inout(reg) w[1] => d3,
                    k = in(reg) k,
                    out("lr") _,
                    out("s0") _, out("s1") _, out("s2") _, out("s3") _, out("s4") _, out("s5") _,
                    out("s6") _, out("s7") _, out("s8") _, out("s9") _, out("s10") _, out("s11") _,
                    out("s12") _, out("s13") _, out("s14") _, out("s15") _, out("s16") _,
                    out("s17") _, out("s18") _, out("s19") _, out("s20") _, out("s21") _,
                    out("s22") _, out("s23") _, out("s24") _, out("s25") _, out("s26") _,
                    out("s27") _, out("s28") _, out("s29") _, out("s30") _, out("s31") _,
                    options(nostack, readonly),
                );
            }
            [f32::from_bits(d0), f32::from_bits(d1), f32::from_bits(d2), f32::from_bits(d3)]
        }
    };
}

ftile_2x2!(ftile_f32, f32, "vldrw.u32 q6, [{w0}], #16", "vldrw.u32 q7, [{w1}], #16");
ftile_2x2!(ftile_f16, half::f16, widen_f16_x4!("q6", "w0"), widen_f16_x4!("q7", "w1"));

/// Drives the 2 x 2 tiles over the output; `tile` is [`ftile_f32`] or [`ftile_f16`].
#[inline(always)]
fn fgemm_helium<W>(
    a: &[f32],
    w: &[W],
    bias: Option<&[f32]>,
    out: &mut [f32],
    s: Shape,
    tile: unsafe fn([*const f32; 2], [*const W; 2], usize) -> [f32; 4],
) {
    let Shape { m, n, k, ldo } = s;
    let b = |j: usize| bias.map_or(0.0, |b| b[j]);
    for i in (0..m).step_by(2) {
        let rows = [i, (i + 1).min(m - 1)];
        let ar = rows.map(|r| &a[r * k..(r + 1) * k]);
        for j in (0..n).step_by(2) {
            let cols = [j, (j + 1).min(n - 1)];
            let wr = cols.map(|c| &w[c * k..(c + 1) * k]);
            let d = if k == 0 {
                [0.0; 4]
            } else {
                // SAFETY: MVE is declared by the `helium` feature; the 4 slices hold `k >= 1`
                // values each.
                unsafe { tile(ar.map(|r| r.as_ptr()), wr.map(|c| c.as_ptr()), k) }
            };
            for r in 0..(m - i).min(2) {
                for c in 0..(n - j).min(2) {
                    out[rows[r] * ldo + cols[c]] = d[2 * r + c] + b(cols[c]);
                }
            }
        }
    }
}

fn fgemm_f32_helium(a: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    fgemm_helium(a, w, bias, out, s, ftile_f32)
}

fn fgemm_f16_helium(a: &[f32], w: &[half::f16], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    fgemm_helium(a, w, bias, out, s, ftile_f16)
}
