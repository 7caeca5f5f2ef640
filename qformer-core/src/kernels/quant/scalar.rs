//! Portable scalar activation quantization: the reference for every SIMD variant.

use super::Strided;

/// Quantizes one group; `get(i)` reads its `i`-th logical value, `len` of `out.len()` are
/// logical, the rest padding. Returns the scale.
#[inline]
pub fn quantize_group(get: impl Fn(usize) -> f32, len: usize, out: &mut [i8]) -> f32 {
    let mut amax = 0f32;
    for i in 0..len {
        amax = amax.max(libm::fabsf(get(i)));
    }
    if amax == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let inv = 127.0 / amax;
    for (i, o) in out.iter_mut().enumerate() {
        *o = if i < len { libm::roundf(get(i) * inv).clamp(-127.0, 127.0) as i8 } else { 0 };
    }
    amax / 127.0
}

/// [`quantize_group`] of a contiguous slice (the scalar [`super::Quantizer`]).
pub fn quantize_slice(src: &[f32], out: &mut [i8]) -> f32 {
    quantize_group(|i| src[i], src.len(), out)
}

/// See [`super::quantize_rows`].
pub fn quantize_rows(src: Strided<'_>, group: usize, stride: usize, values: &mut [i8], scales: &mut [f32]) {
    let groups = stride / group;
    for r in 0..src.rows {
        for g in 0..groups {
            let c0 = g * group;
            let len = src.cols.saturating_sub(c0).min(group);
            let base = r * src.row_stride + c0 * src.col_stride;
            let out = &mut values[r * stride + c0..r * stride + c0 + group];
            scales[r * groups + g] = quantize_group(|i| src.data[base + i * src.col_stride], len, out);
        }
    }
}
