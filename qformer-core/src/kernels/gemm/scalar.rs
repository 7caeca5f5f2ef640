//! Portable scalar GEMMs: the reference for every SIMD variant.

use half::f16;

use super::Shape;
use crate::kernels::QRows;

/// Name of [`gemm_q8`].
pub const NAME_Q8: &str = "scalar_gemm_q8";

/// Dot product with four independent accumulators (summed as `(s0 + s1) + (s2 + s3)`).
#[inline]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut s = [0f32; 4];
    let chunks = a.len() / 4;
    for c in 0..chunks {
        for l in 0..4 {
            s[l] += a[4 * c + l] * b[4 * c + l];
        }
    }
    for i in 4 * chunks..a.len() {
        s[0] += a[i] * b[i];
    }
    (s[0] + s[1]) + (s[2] + s[3])
}

/// See [`super::gemm_f32`].
pub fn gemm_f32(a: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    let Shape { m, n, k, ldo } = s;
    for i in 0..m {
        let row = &a[i * k..i * k + k];
        let o = &mut out[i * ldo..i * ldo + n];
        for (j, oj) in o.iter_mut().enumerate() {
            let b = bias.map_or(0.0, |b| b[j]);
            *oj = dot_f32(row, &w[j * k..j * k + k]) + b;
        }
    }
}

/// See [`super::FGemm::run_f16`]. Converts 64 weights at a time to f32, then uses the f32 dot.
pub fn gemm_f16(a: &[f32], w: &[f16], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    let Shape { m, n, k, ldo } = s;
    const CHUNK: usize = 64;
    let mut buf = [0f32; CHUNK];
    for j in 0..n {
        let wj = &w[j * k..j * k + k];
        let b = bias.map_or(0.0, |b| b[j]);
        for i in 0..m {
            let row = &a[i * k..i * k + k];
            let mut acc = 0f32;
            for (c, wc) in wj.chunks(CHUNK).enumerate() {
                let dst = &mut buf[..wc.len()];
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(wc, dst);
                acc += dot_f32(&row[c * CHUNK..c * CHUNK + wc.len()], dst);
            }
            out[i * ldo + j] = acc + b;
        }
    }
}

/// Exact i32 dot product of two int8 slices.
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// See [`super::gemm_q8`].
pub fn gemm_q8(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    gemm_q8_block(a, w, bias, out, s, 0..s.m, 0..s.n);
}

/// [`gemm_q8`] on the output block `rows x cols`: the reference, and the ragged-tail helper
/// of every SIMD variant (which compute whole tiles and leave the rest to this).
pub fn gemm_q8_block(
    a: &QRows<'_>,
    w: &QRows<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    s: Shape,
    rows: core::ops::Range<usize>,
    cols: core::ops::Range<usize>,
) {
    let (stride, group) = (a.stride, a.group);
    let groups = stride / group;
    for i in rows {
        let ar = &a.values[i * stride..(i + 1) * stride];
        let asc = &a.scales[i * groups..(i + 1) * groups];
        for j in cols.clone() {
            let wr = &w.values[j * stride..(j + 1) * stride];
            let wsc = &w.scales[j * groups..(j + 1) * groups];
            let mut acc = 0f32;
            for g in 0..groups {
                let d = dot_i8(&ar[g * group..(g + 1) * group], &wr[g * group..(g + 1) * group]);
                acc += (asc[g] * wsc[g]) * d as f32;
            }
            out[i * s.ldo + j] = acc + bias.map_or(0.0, |b| b[j]);
        }
    }
}
