//! Compute kernels, one module per family, one file per instruction set.
//!
//! Every family has a portable `scalar.rs` that is always compiled: it is the reference the
//! SIMD variants are tested against. The safe entry points in each family's `mod.rs` pick a
//! variant at compile time (an ordered `cfg` chain ending in scalar); run-time CPU detection
//! belongs to `qformer-std`.
//!
//! * [`gemm`]: `out = a · wᵀ + bias` for f32, f16 and int8 (group-wise scales) weights.
//! * [`quant`]: dynamic int8 quantization of activation rows.
//! * [`norm`]: LayerNorm, softmax and activations (f32, scalar on every target so the int8
//!   forward is bit-identical everywhere).

pub mod gemm;
pub mod norm;
pub mod quant;
pub mod testing;

/// The kernel variants a [`crate::Model`] runs with. [`Kernels::COMPILED`] holds the best
/// variants enabled at compile time; `qformer-std` builds better ones after detecting the CPU.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    /// The int8 GEMM.
    pub q8: gemm::Q8Gemm,
    /// The f32/fp16 GEMM.
    pub f: gemm::FGemm,
    /// The activation quantizer.
    pub quant: quant::Quantizer,
}

impl Kernels {
    /// Portable scalar kernels only.
    pub const SCALAR: Kernels =
        Kernels { q8: gemm::Q8Gemm::SCALAR, f: gemm::FGemm::SCALAR, quant: quant::Quantizer::SCALAR };
    /// The best variants whose CPU features are enabled at compile time.
    pub const COMPILED: Kernels =
        Kernels { q8: gemm::Q8Gemm::COMPILED, f: gemm::FGemm::COMPILED, quant: quant::Quantizer::COMPILED };
}

/// A row-quantized int8 matrix: `rows` rows of `stride` values (columns beyond the logical
/// width are zero), with one f32 scale per `group` consecutive values of a row.
#[derive(Clone, Copy, Debug)]
pub struct QRows<'a> {
    /// `rows * stride` values.
    pub values: &'a [i8],
    /// `rows * stride / group` scales; value `q` at column `c` of row `r` stands for
    /// `q * scales[r * stride / group + c / group]`.
    pub scales: &'a [f32],
    /// Values per row, a multiple of `group`.
    pub stride: usize,
    /// Values per scale.
    pub group: usize,
}

impl<'a> QRows<'a> {
    /// Number of rows.
    pub fn row_count(&self) -> usize {
        self.values.len().checked_div(self.stride).unwrap_or(0)
    }

    /// Rows `range` of the matrix (panics if they are not all there).
    pub fn rows(&self, range: core::ops::Range<usize>) -> QRows<'a> {
        let groups = self.stride / self.group;
        QRows {
            values: &self.values[range.start * self.stride..range.end * self.stride],
            scales: &self.scales[range.start * groups..range.end * groups],
            stride: self.stride,
            group: self.group,
        }
    }
}
