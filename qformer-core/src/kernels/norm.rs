//! LayerNorm, softmax and activations in f32. Scalar on every target, using `libm` for
//! `exp`, `erf`, `tanh` and `sqrt` (correctly rounded or within 1 ulp, and identical on every
//! target), so the int8 forward's output bytes do not depend on the machine.

use crate::config::Activation;

/// `row = LayerNorm(row + delta) * gain + bias` for each row of width `gain.len()`.
pub fn add_layernorm(rows: &mut [f32], delta: Option<&[f32]>, gain: &[f32], bias: &[f32], eps: f32) {
    let w = gain.len();
    for (r, row) in rows.chunks_exact_mut(w).enumerate() {
        if let Some(d) = delta {
            for (x, dx) in row.iter_mut().zip(&d[r * w..(r + 1) * w]) {
                *x += *dx;
            }
        }
        let mean = row.iter().sum::<f32>() / w as f32;
        let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / w as f32;
        let inv = 1.0 / libm::sqrtf(var + eps);
        for ((x, g), b) in row.iter_mut().zip(gain).zip(bias) {
            *x = (*x - mean) * inv * g + b;
        }
    }
}

/// Row-wise `softmax(scale * row)` in place.
pub fn softmax_rows(rows: &mut [f32], width: usize, scale: f32) {
    for row in rows.chunks_exact_mut(width) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0f32;
        for x in row.iter_mut() {
            *x = libm::expf((*x - max) * scale);
            sum += *x;
        }
        let inv = 1.0 / sum;
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

/// The activation of one value.
#[inline]
pub fn activate(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Gelu => 0.5 * x * (1.0 + libm::erff(x * core::f32::consts::FRAC_1_SQRT_2)),
        Activation::GeluTanh => {
            const C: f32 = 0.797_884_6; // sqrt(2 / pi)
            0.5 * x * (1.0 + libm::tanhf(C * (x + 0.044_715 * x * x * x)))
        }
        Activation::Relu => x.max(0.0),
    }
}

/// Applies `act` in place.
pub fn activate_slice(act: Activation, xs: &mut [f32]) {
    for x in xs {
        *x = activate(act, *x);
    }
}
