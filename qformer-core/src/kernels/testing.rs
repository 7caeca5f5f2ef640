//! Sweeps that compare every kernel variant with its scalar twin over many shapes: the one
//! test body shared by the host tests (`cargo test`, also under `qemu-aarch64`) and the
//! bare-metal harness (`firmware/kernel-tests`, under `qemu-system-arm`). no_std, no alloc:
//! the caller lends the scratch memory.

use super::gemm::{Q8Gemm, Shape};
use super::QRows;

/// `(m, n, stride, group)` shapes of the int8 GEMM sweep: empty, single, odd, tile and
/// tile + 1 sizes for every variant's tiles (1x4, 2x4, 1x8, Helium/DSP tiles), group sizes
/// 16/32/64, and BLIP-2's reduction lengths 768, 1408 and 3072.
pub const Q8_SHAPES: [(usize, usize, usize, usize); 21] = [
    (0, 0, 32, 32),
    (0, 5, 32, 32),
    (3, 0, 32, 32),
    (1, 1, 16, 16),
    (1, 1, 32, 32),
    (2, 4, 32, 32),
    (3, 5, 48, 16),
    (4, 8, 64, 32),
    (5, 9, 96, 32),
    (3, 17, 128, 64),
    (1, 33, 32, 32),
    (7, 3, 160, 32),
    (2, 9, 768, 32),
    (3, 5, 1408, 32),
    (2, 4, 3072, 32),
    (9, 13, 64, 16),
    // Whole tiles (up to 16 rows and 8 columns) plus ragged edges, also at BLIP-2's long
    // reductions.
    (5, 17, 768, 32),
    (4, 9, 3072, 32),
    (9, 17, 96, 32),
    (17, 9, 768, 64),
    (33, 17, 64, 32),
];

/// Scratch bytes [`q8_sweep`] needs for `shapes`.
pub const fn q8_scratch_bytes(shapes: &[(usize, usize, usize, usize)]) -> usize {
    let mut max = 0;
    let mut i = 0;
    while i < shapes.len() {
        let (m, n, stride, group) = shapes[i];
        // a, w values; a, w scales; bias; two outputs with ldo = n + 3; 16-byte padding each.
        let bytes = m * stride + n * stride + 4 * (m + n) * (stride / group) + 4 * n + 2 * 4 * m * (n + 3) + 7 * 16;
        if bytes > max {
            max = bytes;
        }
        i += 1;
    }
    max
}

/// The first difference between a variant and scalar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Variant name.
    pub variant: &'static str,
    /// `(m, n, stride, group)`.
    pub shape: (usize, usize, usize, usize),
    /// Output row and column.
    pub at: (usize, usize),
    /// Bits of the variant's value.
    pub got: u32,
    /// Bits of the scalar value.
    pub want: u32,
}

/// xorshift32: deterministic test data on every target (also the firmware benches').
pub struct Rng(pub u32);

impl Rng {
    /// The next value.
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
    fn i8_in(&mut self, lo: i32, hi: i32) -> i8 {
        (lo + (self.next_u32() % (hi - lo + 1) as u32) as i32) as i8
    }
    /// Uniform in [0, 1), 24 bits.
    pub fn unit(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }
    /// A positive scale in [1e-3, 1 + 1e-3).
    pub fn scale(&mut self) -> f32 {
        self.unit() + 1e-3
    }
}

fn take<'a>(rest: &mut &'a mut [u8], bytes: usize) -> &'a mut [u8] {
    let pad = rest.as_ptr().align_offset(16).min(rest.len());
    let r = core::mem::take(rest);
    let (_, r) = r.split_at_mut(pad);
    let (mine, r) = r.split_at_mut(bytes);
    *rest = r;
    mine
}

/// Runs `variant` and [`Q8Gemm::SCALAR`] on every shape with random operands (activations
/// in -127..=127, weights over all of i8 with -128 and 127 present, biases on odd shapes, an
/// output row stride wider than `n`) and compares the f32 outputs bit for bit. Returns the
/// number of shapes checked. Panics if `scratch` is smaller than [`q8_scratch_bytes`].
pub fn q8_sweep(
    variant: Q8Gemm,
    shapes: &[(usize, usize, usize, usize)],
    scratch: &mut [u8],
) -> Result<usize, Mismatch> {
    let mut rng = Rng(0x1234_5678);
    for (case, &(m, n, stride, group)) in shapes.iter().enumerate() {
        let groups = stride / group;
        let ldo = n + 3;
        let mut rest: &mut [u8] = scratch;
        let av: &mut [i8] = bytemuck::cast_slice_mut(take(&mut rest, m * stride));
        let wv: &mut [i8] = bytemuck::cast_slice_mut(take(&mut rest, n * stride));
        let asc: &mut [f32] = bytemuck::cast_slice_mut(take(&mut rest, 4 * m * groups));
        let wsc: &mut [f32] = bytemuck::cast_slice_mut(take(&mut rest, 4 * n * groups));
        let bias: &mut [f32] = bytemuck::cast_slice_mut(take(&mut rest, 4 * n));
        let got: &mut [f32] = bytemuck::cast_slice_mut(take(&mut rest, 4 * m * ldo));
        let want: &mut [f32] = bytemuck::cast_slice_mut(take(&mut rest, 4 * m * ldo));
        av.iter_mut().for_each(|v| *v = rng.i8_in(-127, 127));
        wv.iter_mut().for_each(|v| *v = rng.i8_in(-128, 127));
        if let Some(v) = av.first_mut() {
            *v = -127;
        }
        if wv.len() >= 2 {
            wv[0] = -128;
            wv[1] = 127;
        }
        asc.iter_mut().for_each(|v| *v = rng.scale());
        wsc.iter_mut().for_each(|v| *v = rng.scale());
        bias.iter_mut().for_each(|v| *v = rng.scale() - 0.5);
        got.fill(f32::from_bits(0x7fc0_dead));
        want.fill(f32::from_bits(0x7fc0_dead));
        let a = QRows { values: av, scales: asc, stride, group };
        let w = QRows { values: wv, scales: wsc, stride, group };
        let b = if case % 2 == 1 { Some(&*bias) } else { None };
        let s = Shape { m, n, k: stride, ldo };
        variant.run(&a, &w, b, got, s);
        Q8Gemm::SCALAR.run(&a, &w, b, want, s);
        for (idx, (g, w)) in got.iter().zip(want.iter()).enumerate() {
            if g.to_bits() != w.to_bits() {
                return Err(Mismatch {
                    variant: variant.name(),
                    shape: (m, n, stride, group),
                    at: (idx / ldo, idx % ldo),
                    got: g.to_bits(),
                    want: w.to_bits(),
                });
            }
        }
    }
    Ok(shapes.len())
}

/// `(m, n, k)` shapes of the float GEMM sweep.
pub const F_SHAPES: [(usize, usize, usize); 12] = [
    (0, 0, 8),
    (0, 3, 8),
    (1, 1, 1),
    (1, 1, 8),
    (2, 4, 16),
    (3, 5, 7),
    (4, 8, 33),
    (5, 9, 64),
    (2, 9, 768),
    (3, 5, 1408),
    (2, 4, 3072),
    (7, 3, 65),
];

/// Scratch bytes [`f_sweep`] needs for `shapes`.
pub const fn f_scratch_bytes(shapes: &[(usize, usize, usize)]) -> usize {
    let mut max = 0;
    let mut i = 0;
    while i < shapes.len() {
        let (m, n, k) = shapes[i];
        let bytes = 4 * (m * k + n * k + n + 2 * m * (n + 3)) + 2 * n * k + 7 * 16;
        if bytes > max {
            max = bytes;
        }
        i += 1;
    }
    max
}

/// The first disagreement of a float variant with scalar beyond the bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FMismatch {
    /// Variant name.
    pub variant: &'static str,
    /// `(m, n, k)`.
    pub shape: (usize, usize, usize),
    /// Whether the weights were fp16.
    pub f16: bool,
    /// Variant's value.
    pub got: f32,
    /// Scalar value.
    pub want: f32,
    /// Allowed difference.
    pub bound: f32,
}

/// Runs `variant` and [`FGemm::SCALAR`](super::gemm::FGemm::SCALAR) on every shape, with f32
/// and with fp16 weights, and checks `|got - want| <= 4 k 2^-24 sum|a w| + 1e-30` for
/// every output (both round sums of the same products, in different orders).
pub fn f_sweep(
    variant: super::gemm::FGemm,
    shapes: &[(usize, usize, usize)],
    scratch: &mut [u8],
) -> Result<usize, FMismatch> {
    let mut rng = Rng(0x0bad_5eed);
    for (case, &(m, n, k)) in shapes.iter().enumerate() {
        let ldo = n + 3;
        let mut rest: &mut [u8] = scratch;
        let a: &mut [f32] = bytemuck::cast_slice_mut(take(&mut rest, 4 * m * k));
        let w: &mut [f32] = bytemuck::cast_slice_mut(take(&mut rest, 4 * n * k));
        let wh: &mut [half::f16] = bytemuck::cast_slice_mut(take(&mut rest, 2 * n * k));
        let bias: &mut [f32] = bytemuck::cast_slice_mut(take(&mut rest, 4 * n));
        let got: &mut [f32] = bytemuck::cast_slice_mut(take(&mut rest, 4 * m * ldo));
        let want: &mut [f32] = bytemuck::cast_slice_mut(take(&mut rest, 4 * m * ldo));
        a.iter_mut().for_each(|v| *v = rng.scale() * 4.0 - 2.0);
        w.iter_mut().for_each(|v| *v = rng.scale() * 0.2 - 0.1);
        for (h, v) in wh.iter_mut().zip(w.iter_mut()) {
            *h = half::f16::from_f32(*v);
            *v = h.to_f32();
        }
        bias.iter_mut().for_each(|v| *v = rng.scale() - 0.5);
        let b = if case % 2 == 1 { Some(&*bias) } else { None };
        let s = Shape { m, n, k, ldo };
        for f16 in [false, true] {
            if f16 {
                variant.run_f16(a, wh, b, got, s);
                super::gemm::FGemm::SCALAR.run_f16(a, wh, b, want, s);
            } else {
                variant.run_f32(a, w, b, got, s);
                super::gemm::FGemm::SCALAR.run_f32(a, w, b, want, s);
            }
            for i in 0..m {
                for j in 0..n {
                    let mag: f32 = (0..k).map(|kk| libm::fabsf(a[i * k + kk] * w[j * k + kk])).sum();
                    let bound = 4.0 * k as f32 * libm::ldexpf(1.0, -24) * mag + 1e-30;
                    let (g, wv) = (got[i * ldo + j], want[i * ldo + j]);
                    let within = libm::fabsf(g - wv).partial_cmp(&bound).is_some_and(|o| o.is_le());
                    if !within {
                        return Err(FMismatch {
                            variant: variant.name(),
                            shape: (m, n, k),
                            f16,
                            got: g,
                            want: wv,
                            bound,
                        });
                    }
                }
            }
        }
    }
    Ok(shapes.len())
}

/// Group lengths of the quantizer sweep (the last group of a row may be shorter).
pub const QUANT_LENGTHS: [usize; 9] = [0, 1, 7, 8, 16, 24, 32, 64, 3072];

/// The first difference between a quantizer variant and scalar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantMismatch {
    /// Variant name.
    pub variant: &'static str,
    /// Group length.
    pub len: usize,
    /// Index of the differing value (`usize::MAX` for the scale).
    pub at: usize,
}

/// Compares `variant` with [`Quantizer::SCALAR`](super::quant::Quantizer::SCALAR) on random
/// groups, all-zero groups, groups whose scaled values fall exactly on .5 ties or one ulp to
/// either side of them, groups so small that `127 / max` overflows, groups with a small
/// maximum (about 2^-99) holding subnormals, and groups holding an infinity or a NaN.
/// `scratch` must hold `4 * 3072 + 2 * 3072 + 64` bytes.
pub fn quant_sweep(variant: super::quant::Quantizer, scratch: &mut [u8]) -> Result<usize, QuantMismatch> {
    let mut rng = Rng(0xfeed_beef);
    let mut cases = 0;
    for &len in &QUANT_LENGTHS {
        for kind in 0..8 {
            let mut rest: &mut [u8] = scratch;
            let src: &mut [f32] = bytemuck::cast_slice_mut(take(&mut rest, 4 * len));
            let got: &mut [i8] = bytemuck::cast_slice_mut(take(&mut rest, len));
            let want: &mut [i8] = bytemuck::cast_slice_mut(take(&mut rest, len));
            for (i, v) in src.iter_mut().enumerate() {
                *v = match kind {
                    0 => (rng.scale() - 0.5) * 7.0,
                    1 => 0.0,
                    // max|x| = 127 makes the scaled value x itself: exact .5 ties.
                    2 => ((i % 255) as f32 - 127.0) + if i % 3 == 0 { 0.5 } else { -0.5 },
                    // So small that 127 / max|x| overflows (subnormals included).
                    3 => (rng.scale() - 0.5) * 1e-37,
                    // An infinity, and a NaN, among ordinary values.
                    4 if i == len / 2 => f32::INFINITY,
                    5 if i == len / 3 => f32::NAN,
                    // With max|x| = 127 (below): one ulp either side of the .5 ties in
                    // [-126.5, 126.5], 0.49999997 included.
                    6 => {
                        let tie = ((i / 2 % 254) as f32 - 127.0) + 0.5;
                        let b = tie.to_bits();
                        f32::from_bits(if i % 2 == 0 { b + 1 } else { b - 1 })
                    }
                    // A maximum near 2^-99, subnormals among the values.
                    7 if i % 3 == 1 => f32::from_bits(rng.next_u32() & 0x807f_ffff),
                    7 => (rng.scale() - 0.5) * libm::ldexpf(1.0, -98),
                    _ => (rng.scale() - 0.5) * 7.0,
                };
            }
            if (kind == 2 || kind == 6) && len > 0 {
                src[0] = 127.0;
            }
            let sg = variant.group(src, got);
            let sw = super::quant::Quantizer::SCALAR.group(src, want);
            if sg.to_bits() != sw.to_bits() {
                return Err(QuantMismatch { variant: variant.name(), len, at: usize::MAX });
            }
            if let Some(at) = got.iter().zip(want.iter()).position(|(a, b)| a != b) {
                return Err(QuantMismatch { variant: variant.name(), len, at });
            }
            cases += 1;
        }
    }
    Ok(cases)
}

/// Weight rows per [`f16_sweep`] product (one bit pattern each).
const F16_ROWS: usize = 256;
/// Reduction length of the [`f16_sweep`] products: a whole vector step of every float kernel
/// (4 for NEON, Helium and DSP, 8 for AVX2), so no weight goes through a scalar tail.
const F16_K: usize = 8;

/// Scratch bytes [`f16_sweep`] needs.
pub const F16_SCRATCH_BYTES: usize = 2 * F16_ROWS * F16_K + 4 * (2 * F16_K + 2 * F16_ROWS) + 3 * 16;

/// What an exhaustive f16 sweep compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct F16Report {
    /// Bit patterns (all 65,536).
    pub patterns: usize,
    /// Converted values compared (every pattern in an even and in an odd lane; twice as many
    /// for [`f16_sweep`], whose products have two rows).
    pub compared: usize,
    /// NaN results carrying the converted NaN's exact bits (payload kept).
    pub nan_exact: usize,
    /// NaN results that were the default NaN `0x7fc0_0000` instead (payload replaced, as MVE
    /// does: in its arithmetic for [`f16_sweep`], already in `vcvtb` for [`f16_convert_sweep`]).
    pub nan_default: usize,
}

/// The first f16 pattern whose conversion broke the sweep's rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct F16Mismatch {
    /// Variant or conversion name.
    pub variant: &'static str,
    /// The f16 bits.
    pub bits: u16,
    /// Its lane (index of `k`, or of the converted slice).
    pub lane: usize,
    /// Bits of the result.
    pub got: u32,
    /// Bits of `half::f16::to_f32`.
    pub want: u32,
}

/// Every f16 bit pattern through `variant`'s fp16 GEMM, each as the only weight of its output:
/// products of 2 rows of ones (`a`, `m = 2`, `k = 8`) with 256 weight rows that hold one
/// pattern each, at lane `(row + pass) % 8`, zeros elsewhere, in two passes (so every pattern
/// is converted once in an even and once in an odd lane: `vcvtb` and `vcvtt` on the DSP
/// kernel). Each output is then `0 + 1·h + 1·0 + ...`, which is the converted weight exactly,
/// so it is compared with `half::f16::to_f32(h)` bit for bit, with two rules the arithmetic
/// imposes: a zero of either sign gives `+0.0` (the sum starts at +0), and a NaN must give a
/// NaN whose bits are either the converted NaN's ([`F16Report::nan_exact`]) or the default
/// NaN `0x7fc0_0000` ([`F16Report::nan_default`], FPUs that replace NaN operands). Panics if
/// `scratch` is smaller than [`F16_SCRATCH_BYTES`].
pub fn f16_sweep(variant: super::gemm::FGemm, scratch: &mut [u8]) -> Result<F16Report, F16Mismatch> {
    const M: usize = 2;
    let mut rest: &mut [u8] = scratch;
    let w: &mut [half::f16] = bytemuck::cast_slice_mut(take(&mut rest, 2 * F16_ROWS * F16_K));
    let a: &mut [f32] = bytemuck::cast_slice_mut(take(&mut rest, 4 * M * F16_K));
    let out: &mut [f32] = bytemuck::cast_slice_mut(take(&mut rest, 4 * M * F16_ROWS));
    a.fill(1.0);
    let mut report = F16Report { patterns: 1 << 16, compared: 0, nan_exact: 0, nan_default: 0 };
    for pass in 0..2 {
        for base in (0..1usize << 16).step_by(F16_ROWS) {
            w.fill(half::f16::ZERO);
            for (j, row) in w.chunks_exact_mut(F16_K).enumerate() {
                row[(j + pass) % F16_K] = half::f16::from_bits((base + j) as u16);
            }
            out.fill(f32::from_bits(0x7fc0_dead));
            variant.run_f16(a, w, None, out, Shape::new(M, F16_ROWS, F16_K));
            for (idx, &got) in out.iter().enumerate() {
                let j = idx % F16_ROWS;
                let bits = (base + j) as u16;
                let want = half::f16::from_bits(bits).to_f32();
                let ok = if want.is_nan() {
                    if got.to_bits() == want.to_bits() {
                        report.nan_exact += 1;
                        true
                    } else {
                        report.nan_default += 1;
                        got.to_bits() == 0x7fc0_0000
                    }
                } else if want == 0.0 {
                    got.to_bits() == 0
                } else {
                    got.to_bits() == want.to_bits()
                };
                if !ok {
                    let (got, want) = (got.to_bits(), want.to_bits());
                    return Err(F16Mismatch { variant: variant.name(), bits, lane: (j + pass) % F16_K, got, want });
                }
                report.compared += 1;
            }
        }
    }
    Ok(report)
}

/// A kernel's fp16 -> f32 widening step, for [`f16_convert_sweep`].
#[derive(Clone, Copy, Debug)]
pub struct F16Widen {
    /// Kernel and instructions.
    pub name: &'static str,
    /// Writes `dst[i] = src[i]` as f32 for `i < src.len()`.
    pub convert: fn(&[half::f16], &mut [f32]),
    /// Whether NaNs keep their payload (quiet bit set, as `half` does); if not, each NaN must
    /// become the default NaN `0x7fc0_0000` (FPSCR.DN behaviour).
    pub nan_payload: bool,
}

/// Every f16 bit pattern through `step.convert`, in 256-value slices and two passes (each
/// pattern once at an even and once at an odd index), against `half::f16::to_f32` bit for bit,
/// signed zeros included. NaNs: with `step.nan_payload`, bit for bit too (`half` and the
/// conversions that keep payloads both quiet a signaling NaN by setting bit 22 and keep the 10
/// payload bits); without, the default NaN `0x7fc0_0000`.
pub fn f16_convert_sweep(step: F16Widen) -> Result<F16Report, F16Mismatch> {
    const N: usize = 256;
    let mut src = [half::f16::ZERO; N];
    let mut dst = [0f32; N];
    let mut report = F16Report { patterns: 1 << 16, compared: 0, nan_exact: 0, nan_default: 0 };
    for pass in 0..2 {
        for base in (0..1usize << 16).step_by(N) {
            // Pattern `base + j` at index `(j + pass) % N`.
            for (i, s) in src.iter_mut().enumerate() {
                *s = half::f16::from_bits((base + (i + N - pass) % N) as u16);
            }
            dst.fill(f32::from_bits(0x7fc0_dead));
            (step.convert)(&src, &mut dst);
            for (lane, (h, got)) in src.iter().zip(&dst).enumerate() {
                let want = h.to_f32();
                let expect = if want.is_nan() && !step.nan_payload { 0x7fc0_0000 } else { want.to_bits() };
                if got.to_bits() != expect {
                    let (got, want) = (got.to_bits(), want.to_bits());
                    return Err(F16Mismatch { variant: step.name, bits: h.to_bits(), lane, got, want });
                }
                if want.is_nan() {
                    if got.to_bits() == want.to_bits() {
                        report.nan_exact += 1;
                    } else {
                        report.nan_default += 1;
                    }
                }
                report.compared += 1;
            }
        }
    }
    Ok(report)
}

/// Runs the int8 GEMM function `run` and [`scalar::gemm_q8`](super::gemm::scalar::gemm_q8)
/// on 16 x 8 and 5 x 8 products (stride 64, group 32) whose activations are all -128, outside the
/// [`QRows`] contract, and whose weight rows are all -128 (even rows) or cycle through -128,
/// -1, 0, 1, 127 (odd rows); returns whether the outputs agree bit for bit. It takes a
/// variant's function itself, not a [`Q8Gemm`], to get past [`Q8Gemm::run`]'s debug check of
/// that contract: the ISA modules' tests use it to show which kernels rely on the contract.
pub fn q8_agrees_on_minus_128(run: super::gemm::Q8Fn) -> bool {
    const M: usize = 16;
    const N: usize = 8;
    const K: usize = 64;
    const G: usize = 32;
    let av = [i8::MIN; M * K];
    let mut wv = [0i8; N * K];
    for (i, v) in wv.iter_mut().enumerate() {
        *v = if (i / K).is_multiple_of(2) { -128 } else { [-128, -1, 0, 1, 127][i % 5] };
    }
    let (asc, wsc) = ([0.5f32; M * K / G], [0.25f32; N * K / G]);
    let a = QRows { values: &av, scales: &asc, stride: K, group: G };
    let w = QRows { values: &wv, scales: &wsc, stride: K, group: G };
    [M, 5].iter().all(|&m| {
        let (mut got, mut want) = ([0f32; M * N], [0f32; M * N]);
        run(&a, &w, None, &mut got, Shape::new(m, N, K));
        super::gemm::scalar::gemm_q8(&a, &w, None, &mut want, Shape::new(m, N, K));
        got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits())
    })
}

/// The fp16 widening steps of the compiled float GEMMs that can run alone, for
/// [`f16_convert_sweep`]: the DSP kernel's `vcvtb`/`vcvtt` loop (which the kernel runs on its
/// own, before the products; FPv4/FPv5 with FPSCR.DN clear keep NaN payloads), and the Helium
/// tile's fp16 load (`vldrh.u32` + `vcvtb`, the same `asm!` text outside the tile, which feeds
/// it straight into `vfma`; MVE gives the default NaN, as QEMU's mps3-an547 shows). NEON
/// (`fcvtl`) and AVX2 (`vcvtph2ps`) convert inside their loads; their modules' unit tests sweep
/// those loads.
pub fn f16_widening_steps() -> &'static [F16Widen] {
    &[
        #[cfg(all(qf_dsp, qf_fpu))]
        F16Widen {
            name: "dsp_widen_f16 (vcvtb/vcvtt.f32.f16)",
            convert: super::gemm::dsp::widen_f16,
            nan_payload: true,
        },
        #[cfg(qf_helium)]
        F16Widen {
            name: "helium_widen_f16 (vldrh.u32 + vcvtb.f32.f16)",
            convert: super::gemm::helium::widen_f16,
            nan_payload: false,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::FGemm;
    use std::vec;

    /// The identity setup of [`f16_sweep`] holds for the reference itself, whose conversion is
    /// `half`'s: every pattern, both rows, both passes.
    #[test]
    fn scalar_fp16_gemm_passes_the_exhaustive_f16_sweep() {
        let mut scratch = vec![0u8; F16_SCRATCH_BYTES];
        let r = f16_sweep(FGemm::SCALAR, &mut scratch).unwrap_or_else(|m| panic!("{m:?}"));
        assert_eq!((r.patterns, r.compared, r.nan_default), (65536, 4 * 65536, 0));
        // 2 * 1023 NaN patterns (exponent all ones, non-zero mantissa, both signs).
        assert_eq!(r.nan_exact, 4 * 2046);
    }

    /// The sweep catches a conversion that loses a NaN's payload or a zero's sign.
    #[test]
    fn f16_convert_sweep_rejects_a_wrong_conversion() {
        fn canonical_nan(src: &[half::f16], dst: &mut [f32]) {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = if s.is_nan() { f32::NAN } else { s.to_f32() };
            }
        }
        let step = F16Widen { name: "canonical_nan", convert: canonical_nan, nan_payload: true };
        let m = f16_convert_sweep(step).expect_err("payloads are lost");
        assert_eq!(m.bits, 0x7c01);
        fn positive_zero(src: &[half::f16], dst: &mut [f32]) {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s.to_f32() + 0.0;
            }
        }
        let step = F16Widen { name: "positive_zero", convert: positive_zero, nan_payload: true };
        assert_eq!(f16_convert_sweep(step).map_err(|m| m.bits), Err(0x8000));
        // Without payloads every NaN must be the (positive) default NaN.
        let step = F16Widen { name: "canonical_nan", convert: canonical_nan, nan_payload: false };
        let r = f16_convert_sweep(step).expect("default NaNs accepted");
        assert_eq!((r.nan_exact, r.nan_default), (2, 2 * 2045)); // 0x7e00 is the default NaN
    }

    /// The activation contract of [`QRows`] is what [`QRows::rows_in_activation_range`] checks.
    #[test]
    fn activation_range_check_finds_minus_128() {
        let mut values = [0i8; 64];
        values[..32].iter_mut().enumerate().for_each(|(i, v)| *v = if i % 2 == 0 { 127 } else { -127 });
        let scales = [1.0f32; 2];
        let a = QRows { values: &values, scales: &scales, stride: 32, group: 32 };
        assert!(a.rows_in_activation_range(2) && !a.rows_in_activation_range(3));
        values[40] = -128;
        let a = QRows { values: &values, scales: &scales, stride: 32, group: 32 };
        assert!(a.rows_in_activation_range(1) && !a.rows_in_activation_range(2));
        std::println!("debug assertions: {}", cfg!(debug_assertions));
    }

    /// A caller passing -128 through the public API is caught in debug builds (CI runs this
    /// one in a debug `cargo test`, which `cargo xtask test` runs; `--release` builds skip the check).
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "outside the QRows contract")]
    fn gemm_q8_rejects_activation_minus_128_in_debug_builds() {
        let mut values = [1i8; 32];
        values[5] = -128;
        let weights = [-1i8; 32];
        let a = QRows { values: &values, scales: &[1.0], stride: 32, group: 32 };
        let w = QRows { values: &weights, scales: &[1.0], stride: 32, group: 32 };
        let mut out = [0f32; 1];
        crate::kernels::gemm::gemm_q8(&a, &w, None, &mut out, Shape::new(1, 1, 32));
    }
}
