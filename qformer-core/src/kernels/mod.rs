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
///
/// # Contract of the activation operand
/// As the activation operand `a` of an int8 GEMM ([`gemm::Q8Gemm::run`], [`gemm::gemm_q8`]),
/// every value of the `m` rows used must be in `-127..=127`; the quantizers ([`quant`]) only
/// produce that range. Weights may use all of i8. Two kernels rely on it and give other bits
/// than scalar for an activation of -128 (their memory safety does not depend on it):
/// * `avx2_gemm_q8_1x8` (x86_64): `vpsignb` negates the activation where the weight is
///   negative, and -(-128) wraps to -128, so such a product gets the wrong sign;
/// * `neon_gemm_q8_smull_4x4` (aarch64): an i16 lane sums two products, and two
///   (-128) · (-128) make 32768, which wraps.
///
/// The other variants (scalar, `sdot`, `smmla`, AVX-512 VNNI with its exact `a + 128` shift,
/// Helium, DSP) are exact for -128 as well. Debug builds check the range in
/// [`gemm::Q8Gemm::run`] ([`QRows::rows_in_activation_range`]) and panic on -128; release
/// builds skip that pass over `a`.
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

    /// Whether there are at least `rows` rows and the first `rows` hold no -128, i.e. meet the
    /// activation contract (see the type docs).
    pub fn rows_in_activation_range(&self, rows: usize) -> bool {
        let len = rows.checked_mul(self.stride);
        len.and_then(|len| self.values.get(..len)).is_some_and(|v| !v.contains(&i8::MIN))
    }
}
