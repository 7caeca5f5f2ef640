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

#[allow(unused_imports)] // only targets with run-time detected variants name features
use super::CpuFeature;
use super::{QRows, Variant};

// The named cfgs come from build.rs (see the `kernels` module docs).
#[cfg(qf_dsp)]
pub mod dsp;
#[cfg(qf_helium)]
pub mod helium;
#[cfg(qf_neon)]
pub mod neon;
pub mod scalar;
#[cfg(qf_x86)]
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

    /// Every int8 GEMM variant of this build, in increasing rank (see
    /// [`crate::kernels::Variant`]).
    pub const VARIANTS: &'static [Variant<Q8Gemm>] = &[
        Variant::always(Q8Gemm::SCALAR, 0),
        #[cfg(qf_dsp)]
        Variant::always(dsp::DSP, 10),
        #[cfg(qf_helium)]
        Variant::always(helium::HELIUM, 20),
        #[cfg(qf_neon)]
        Variant::always(neon::BASE, 10),
        // SAFETY: the entry hands out the kernel only where dotprod is enabled or detected.
        #[cfg(qf_neon)]
        unsafe {
            Variant::requiring(neon::sdot_unchecked(), 20, &[CpuFeature::DotProd])
        },
        // SAFETY: as above, for i8mm.
        #[cfg(qf_neon)]
        unsafe {
            Variant::requiring(neon::i8mm_unchecked(), 30, &[CpuFeature::I8mm])
        },
        // SAFETY: as above, for AVX2.
        #[cfg(qf_x86)]
        unsafe {
            Variant::requiring(x86::avx2_unchecked(), 10, &[CpuFeature::Avx2])
        },
        // SAFETY: as above, for the four AVX-512 features the kernel enables.
        #[cfg(qf_x86)]
        unsafe {
            Variant::requiring(
                x86::vnni_unchecked(),
                20,
                &[CpuFeature::Avx512f, CpuFeature::Avx512bw, CpuFeature::Avx512vl, CpuFeature::Avx512vnni],
            )
        },
    ];

    /// The highest-ranked variant whose CPU features are enabled at compile time (scalar when
    /// none is). The no_std core uses it; `qformer-std` may pick a better one at run time.
    pub const COMPILED: Q8Gemm = Q8Gemm::compiled_best(Q8Gemm::VARIANTS);

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

    /// Whether this is the variant called `name` (usable in `const` assertions).
    pub const fn is(&self, name: &str) -> bool {
        super::str_eq(self.name, name)
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

crate::kernels::variant_table!(Q8Gemm);

/// Every int8 GEMM variant usable at compile time, the scalar one first and
/// [`Q8Gemm::COMPILED`] last. Variants whose CPU features are only known at run time are in
/// [`Q8Gemm::VARIANTS`] (see `qformer_std::runtime::q8_variants`).
pub fn compiled_variants() -> &'static [Q8Gemm] {
    static LIST: [Q8Gemm; crate::kernels::count_compiled(Q8Gemm::VARIANTS)] =
        crate::kernels::compiled_list(Q8Gemm::VARIANTS);
    &LIST
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

    /// Every float GEMM variant of this build, in increasing rank.
    pub const VARIANTS: &'static [Variant<FGemm>] = &[
        Variant::always(FGemm::SCALAR, 0),
        #[cfg(all(qf_dsp, qf_fpu))]
        Variant::always(dsp::F_DSP, 10),
        #[cfg(qf_helium)]
        Variant::always(helium::F_HELIUM, 20),
        #[cfg(qf_neon)]
        Variant::always(neon::F_NEON, 10),
        // SAFETY: the entry hands out the kernel only where the three features are enabled
        // or detected.
        #[cfg(qf_x86)]
        unsafe {
            Variant::requiring(x86::f_avx2_unchecked(), 10, &[CpuFeature::Avx2, CpuFeature::Fma, CpuFeature::F16c])
        },
    ];

    /// The highest-ranked variant enabled at compile time.
    pub const COMPILED: FGemm = FGemm::compiled_best(FGemm::VARIANTS);

    #[allow(dead_code)] // only the SIMD modules build variants, and targets without one have none
    pub(crate) const fn new(name: &'static str, f32: F32Fn, f16: F16Fn) -> FGemm {
        FGemm { name, f32, f16 }
    }

    /// The variant's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Whether this is the variant called `name` (usable in `const` assertions).
    pub const fn is(&self, name: &str) -> bool {
        super::str_eq(self.name, name)
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

crate::kernels::variant_table!(FGemm);

/// Every float GEMM variant usable at compile time, the scalar one first and
/// [`FGemm::COMPILED`] last (run-time detected ones are in [`FGemm::VARIANTS`]).
pub fn compiled_f_variants() -> &'static [FGemm] {
    static LIST: [FGemm; crate::kernels::count_compiled(FGemm::VARIANTS)] =
        crate::kernels::compiled_list(FGemm::VARIANTS);
    &LIST
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
