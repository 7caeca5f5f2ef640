//! Portable scalar activation quantization: the reference for every SIMD variant.

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
