//! Matrix products `out[m, n] = a[m, k] · w[n, k]ᵀ + bias[n]`, weights stored PyTorch-style
//! (`[out_features, in_features]`), all row-major and contiguous.
//!
//! * [`gemm_f32`]: f32 activations × f32 weights.
//! * [`FGemm::run_f16`]: f32 activations × fp16 weights, f32 accumulation.
//! * [`gemm_q8`]: int8 × int8 with group-wise scales on both sides: for every group of
//!   `group` columns the i8·i8 products are summed exactly in i32, then
//!   `acc += (sa * sw) * (dot as f32)` in group order, and `out = acc + bias`. Every variant
//!   performs exactly these f32 operations in this order, so the int8 result is bit-identical
//!   on every target and kernel.

use half::f16;

use super::QRows;

#[cfg(all(target_arch = "arm", target_feature = "dsp", not(feature = "helium")))]
pub mod dsp;
#[cfg(all(target_arch = "arm", feature = "helium"))]
pub mod helium;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub mod neon;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod x86;

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

/// Signature of an int8 GEMM variant (see [`gemm_q8`] for the contract).
pub type Q8Fn = fn(&QRows<'_>, &QRows<'_>, Option<&[f32]>, &mut [f32], Shape);

/// One implementation of the int8 GEMM: a name (`isa_op_types_tile`) and its function.
/// Every variant computes bit-for-bit what [`scalar::gemm_q8`] computes.
#[derive(Clone, Copy, Debug)]
pub struct Q8Gemm {
    name: &'static str,
    run: Q8Fn,
}

impl Q8Gemm {
    /// The portable reference.
    pub const SCALAR: Q8Gemm = Q8Gemm { name: scalar::NAME_Q8, run: scalar::gemm_q8 };

    /// The best variant whose CPU features are enabled at compile time: an ordered `cfg`
    /// chain ending in scalar. The no_std core uses it; `qformer-std` may pick a better one
    /// at run time.
    pub const COMPILED: Q8Gemm = compiled_q8();

    /// A variant from its parts. Only the ISA modules of this crate build variants, and only
    /// for functions that are safe to call on every CPU that can obtain the value.
    #[allow(dead_code)] // only the SIMD modules build variants, and targets without one have none
    pub(crate) const fn new(name: &'static str, run: Q8Fn) -> Q8Gemm {
        Q8Gemm { name, run }
    }

    /// The variant's name, e.g. `neon_gemm_q8_sdot_4x8`.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Runs the variant; see [`gemm_q8`]. Panics if the operands do not fit `s`, and in debug
    /// builds if an activation (a value of `a`) is -128, outside the [`QRows`] contract.
    pub fn run(&self, a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
        check_q8(a, w, bias, out, s);
        (self.run)(a, w, bias, out, s)
    }
}

/// Panics unless the operands fit the contract: kernels index within these bounds only. In
/// debug builds also checks the activations' range (the [`QRows`] contract: -127..=127; the
/// AVX2 and NEON `smull` kernels give other bits than scalar for -128).
fn check_q8(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &[f32], s: Shape) {
    assert!(q8_operands_fit(a, w, bias, out, s), "gemm_q8: operands do not fit {s:?}");
    debug_assert!(
        a.rows_in_activation_range(s.m),
        "gemm_q8: an activation is -128, outside the QRows contract's -127..=127"
    );
}

/// Whether the operands fit the contract of [`Q8Gemm::run`] for `s`: the bounds every int8
/// kernel indexes within (kernels `debug_assert!` it where they read unchecked).
pub(crate) fn q8_operands_fit(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &[f32], s: Shape) -> bool {
    a.group > 0
        && a.stride == w.stride
        && a.group == w.group
        && a.stride.is_multiple_of(a.group)
        && a.values.len() >= s.m * a.stride
        && w.values.len() >= s.n * w.stride
        && a.scales.len() >= s.m * (a.stride / a.group)
        && w.scales.len() >= s.n * (w.stride / w.group)
        && bias.is_none_or(|b| b.len() >= s.n)
        && s.ldo >= s.n
        && out.len() >= s.out_len()
}

const fn compiled_q8() -> Q8Gemm {
    #[cfg(all(target_arch = "aarch64", target_feature = "i8mm"))]
    return neon::I8MM;
    #[cfg(all(target_arch = "aarch64", target_feature = "dotprod", not(target_feature = "i8mm")))]
    return neon::SDOT;
    #[cfg(all(target_arch = "aarch64", target_feature = "neon", not(target_feature = "dotprod")))]
    return neon::BASE;
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    return x86::AVX2;
    #[cfg(all(target_arch = "arm", feature = "helium"))]
    return helium::HELIUM;
    #[cfg(all(target_arch = "arm", target_feature = "dsp", not(feature = "helium")))]
    return dsp::DSP;
    #[allow(unreachable_code)]
    Q8Gemm::SCALAR
}

/// Every variant compiled into this build, the scalar one first. Variants whose CPU
/// feature is only known at run time come from the `*_unchecked` constructors of the ISA
/// modules (see `qformer_std::runtime::q8_variants`).
pub fn compiled_variants() -> &'static [Q8Gemm] {
    &[
        Q8Gemm::SCALAR,
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        neon::BASE,
        #[cfg(all(target_arch = "aarch64", target_feature = "dotprod"))]
        neon::SDOT,
        #[cfg(all(target_arch = "aarch64", target_feature = "i8mm"))]
        neon::I8MM,
        #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
        x86::AVX2,
        #[cfg(all(target_arch = "arm", feature = "helium"))]
        helium::HELIUM,
        #[cfg(all(target_arch = "arm", target_feature = "dsp", not(feature = "helium")))]
        dsp::DSP,
    ]
}

/// Signature of an f32-weight GEMM variant.
pub type F32Fn = fn(&[f32], &[f32], Option<&[f32]>, &mut [f32], Shape);
/// Signature of an fp16-weight GEMM variant.
pub type F16Fn = fn(&[f32], &[f16], Option<&[f32]>, &mut [f32], Shape);

/// One implementation of the float GEMMs (f32 activations, f32 or fp16 weights, f32
/// accumulation). Float variants may sum in another order than scalar: they agree with it
/// within `|got - want| <= 4 k 2^-24 sum|a w| + 1e-30` ([`crate::kernels::testing::f_sweep`]).
#[derive(Clone, Copy, Debug)]
pub struct FGemm {
    name: &'static str,
    f32: F32Fn,
    f16: F16Fn,
}

impl FGemm {
    /// The portable reference.
    pub const SCALAR: FGemm = FGemm { name: "scalar_gemm_f32_f16", f32: scalar::gemm_f32, f16: scalar::gemm_f16 };

    /// The best variant enabled at compile time.
    pub const COMPILED: FGemm = compiled_f();

    #[allow(dead_code)] // only the SIMD modules build variants, and targets without one have none
    pub(crate) const fn new(name: &'static str, f32: F32Fn, f16: F16Fn) -> FGemm {
        FGemm { name, f32, f16 }
    }

    /// The variant's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// `out = a · wᵀ + bias` with f32 weights.
    pub fn run_f32(&self, a: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
        check_f(a.len(), w.len(), bias, out, s);
        (self.f32)(a, w, bias, out, s)
    }

    /// `out = a · wᵀ + bias` with fp16 weights.
    pub fn run_f16(&self, a: &[f32], w: &[f16], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
        check_f(a.len(), w.len(), bias, out, s);
        (self.f16)(a, w, bias, out, s)
    }
}

fn check_f(a: usize, w: usize, bias: Option<&[f32]>, out: &[f32], s: Shape) {
    assert!(f_operands_fit(a, w, bias, out, s), "float GEMM: operands do not fit {s:?}");
}

/// Whether `a` and `w` values, `bias` and `out` fit the float GEMMs' contract for `s` (kernels
/// `debug_assert!` it where they read unchecked).
pub(crate) fn f_operands_fit(a: usize, w: usize, bias: Option<&[f32]>, out: &[f32], s: Shape) -> bool {
    a >= s.m * s.k && w >= s.n * s.k && s.ldo >= s.n && out.len() >= s.out_len() && bias.is_none_or(|b| b.len() >= s.n)
}

const fn compiled_f() -> FGemm {
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    return neon::F_NEON;
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    return x86::F_AVX2;
    #[cfg(all(target_arch = "arm", feature = "helium"))]
    return helium::F_HELIUM;
    #[cfg(all(target_arch = "arm", target_feature = "dsp", target_feature = "fpregs", not(feature = "helium")))]
    return dsp::F_DSP;
    #[allow(unreachable_code)]
    FGemm::SCALAR
}

/// Every float variant compiled into this build, the scalar one first (variants whose CPU
/// features are only known at run time come from the `*_unchecked` constructors of the ISA
/// modules).
pub fn compiled_f_variants() -> &'static [FGemm] {
    &[
        FGemm::SCALAR,
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        neon::F_NEON,
        #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
        x86::F_AVX2,
        #[cfg(all(target_arch = "arm", feature = "helium"))]
        helium::F_HELIUM,
        #[cfg(all(target_arch = "arm", target_feature = "dsp", target_feature = "fpregs", not(feature = "helium")))]
        dsp::F_DSP,
    ]
}

/// f32 × f32 with the compiled-in best variant.
pub fn gemm_f32(a: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    FGemm::COMPILED.run_f32(a, w, bias, out, s)
}

/// int8 × int8 with group-wise scales; `a` has `s.m` rows, `w` has `s.n`, both the same
/// stride and group (`s.k` is ignored).
pub fn gemm_q8(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    Q8Gemm::COMPILED.run(a, w, bias, out, s)
}
