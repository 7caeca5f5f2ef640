//! Matrix products `out[m, n] = a[m, k] · w[n, k]ᵀ + bias[n]`, weights stored PyTorch-style
//! (`[out_features, in_features]`), all row-major and contiguous.
//!
//! * [`gemm_f32`]: f32 activations × f32 weights.
//! * [`gemm_f16`]: f32 activations × fp16 weights, f32 accumulation.
//! * [`gemm_q8`]: int8 × int8 with group-wise scales on both sides: for every group of
//!   `group` columns the i8·i8 products are summed exactly in i32, then
//!   `acc += (sa * sw) * (dot as f32)` in group order, and `out = acc + bias`. Every variant
//!   performs exactly these f32 operations in this order, so the int8 result is bit-identical
//!   on every target and kernel.

use half::f16;

use super::QRows;

pub mod scalar;

/// Sizes of one product: `out` has `m` rows of `ldo >= n` values, of which the first `n` are
/// written; `k` is the reduction length (for int8 it is implied by the operands' stride).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Rows of `a` and `out`.
    pub m: usize,
    /// Rows of `w`, columns written in `out`.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Distance between rows of `out`.
    pub ldo: usize,
}

impl Shape {
    /// A product written to a contiguous `[m, n]` output.
    pub const fn new(m: usize, n: usize, k: usize) -> Shape {
        Shape { m, n, k, ldo: n }
    }
    fn out_len(&self) -> usize {
        if self.m == 0 {
            0
        } else {
            (self.m - 1) * self.ldo + self.n
        }
    }
}

/// Name of the int8 GEMM variant this build runs.
pub const Q8_KERNEL: &str = scalar::NAME_Q8;

/// f32 × f32.
pub fn gemm_f32(a: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    debug_assert!(a.len() >= s.m * s.k && w.len() >= s.n * s.k && out.len() >= s.out_len());
    scalar::gemm_f32(a, w, bias, out, s)
}

/// f32 × fp16.
pub fn gemm_f16(a: &[f32], w: &[f16], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    debug_assert!(a.len() >= s.m * s.k && w.len() >= s.n * s.k && out.len() >= s.out_len());
    scalar::gemm_f16(a, w, bias, out, s)
}

/// int8 × int8 with group-wise scales; `a` has `s.m` rows, `w` has `s.n`, both the same
/// stride and group (`s.k` is ignored).
pub fn gemm_q8(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    debug_assert!(a.stride == w.stride && a.group == w.group && a.stride % a.group == 0);
    debug_assert!(a.values.len() >= s.m * a.stride && w.values.len() >= s.n * w.stride);
    debug_assert!(out.len() >= s.out_len());
    scalar::gemm_q8(a, w, bias, out, s)
}
