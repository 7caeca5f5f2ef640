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
