//! Compute kernels, one module per family, one file per instruction set.
//!
//! Every family has a portable `scalar.rs` that is always compiled: it is the reference the
//! SIMD variants are tested against. The safe entry points in each family's `mod.rs` pick a
//! variant at compile time; run-time CPU detection is opt-in (the `std-detect` feature, which
//! `qformer-std` enables).
//!
//! * [`gemm`]: `out = a · wᵀ + bias` for f32, f16 and int8 (group-wise scales) weights.
//! * [`quant`]: dynamic int8 quantization of activation rows.
//! * [`norm`]: LayerNorm, softmax and activations (f32, scalar on every target so the int8
//!   forward is bit-identical everywhere).
//!
//! # Variant tables
//! Each family has one table of [`Variant`]s ([`gemm::Q8Gemm::VARIANTS`],
//! [`gemm::FGemm::VARIANTS`], [`quant::Quantizer::VARIANTS`]), in increasing rank (a higher
//! rank is faster; ranks are asserted strictly increasing and names unique at compile time).
//! An entry is in the table when its module is compiled (a named cfg, below); it is usable
//!
//! * at compile time when every [`CpuFeature`] it requires is enabled for the whole build
//!   ([`Variant::compiled`]): `COMPILED` is the highest-ranked such entry and
//!   `compiled_variants()` lists them all, scalar first;
//! * at run time when the CPU has them ([`Variant::detected`] with `std-detect`, or
//!   [`Variant::available_with`] for a caller with its own detection, e.g. ID registers).
//!
//! # Named cfgs
//! `build.rs` derives the cfgs the modules and entries are gated on from the target and the
//! cargo features only, so every toolchain (stable rustup included) compiles the same kernels:
//!
//! | cfg | set when | compiles |
//! |---|---|---|
//! | `qf_x86` | `target_arch = "x86_64"` | AVX2, AVX-512 VNNI kernels (run-time detected unless enabled) |
//! | `qf_avx2`, `qf_avx2_fma_f16c` | target features `avx2` (and `fma`, `f16c`) | the compile-time `AVX2`, `F_AVX2` constants |
//! | `qf_neon` | `target_arch = "aarch64"` with `neon` | NEON kernels; sdot and smmla run-time detected unless enabled |
//! | `qf_sdot`, `qf_i8mm` | target features `dotprod`, `i8mm` | the compile-time `SDOT`, `I8MM` constants |
//! | `qf_dsp` | `thumbv7em-*` (Armv7E-M always has DSP), or `thumbv8m.main-*` with the cargo feature `dsp` | SIMD32 `asm!` int8 GEMM |
//! | `qf_fpu` | 32-bit Arm with the hard-float ABI (`*-eabihf`) | with `qf_dsp`: the FPU float GEMM and quantizer |
//! | `qf_helium` | `thumbv8m.main-*` with the cargo feature `helium` | Helium (MVE) kernels, ranked above DSP |
//!
//! A firmware image can check its kernels at compile time, e.g.
//! `const _: () = assert!(Kernels::COMPILED.q8.is("dsp_gemm_q8_smlad_4x1"));`.

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

    /// The best variants of each table this CPU runs, detected at run time.
    #[cfg(any(test, feature = "std-detect"))]
    pub fn detected() -> Kernels {
        Kernels {
            q8: best(gemm::Q8Gemm::VARIANTS.iter().filter_map(Variant::detected), gemm::Q8Gemm::COMPILED),
            f: best(gemm::FGemm::VARIANTS.iter().filter_map(Variant::detected), gemm::FGemm::COMPILED),
            quant: best(quant::Quantizer::VARIANTS.iter().filter_map(Variant::detected), quant::Quantizer::COMPILED),
        }
    }
}

/// The last (highest-ranked) of `usable`, else `fallback`.
#[cfg(any(test, feature = "std-detect"))]
fn best<K>(usable: impl Iterator<Item = K>, fallback: K) -> K {
    usable.last().unwrap_or(fallback)
}

/// A CPU feature a kernel variant needs beyond what its module's cfg guarantees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CpuFeature {
    /// x86-64 AVX2.
    Avx2,
    /// x86-64 FMA3.
    Fma,
    /// x86-64 F16C (half-precision conversions).
    F16c,
    /// x86-64 AVX-512 Foundation.
    Avx512f,
    /// x86-64 AVX-512 byte and word instructions.
    Avx512bw,
    /// x86-64 AVX-512 vector-length extensions.
    Avx512vl,
    /// x86-64 AVX-512 VNNI.
    Avx512vnni,
    /// AArch64 FEAT_DotProd (`sdot`).
    DotProd,
    /// AArch64 FEAT_I8MM (`smmla`).
    I8mm,
}

impl CpuFeature {
    /// The feature's name as `target_feature` and the std detection macros spell it.
    pub const fn name(self) -> &'static str {
        match self {
            CpuFeature::Avx2 => "avx2",
            CpuFeature::Fma => "fma",
            CpuFeature::F16c => "f16c",
            CpuFeature::Avx512f => "avx512f",
            CpuFeature::Avx512bw => "avx512bw",
            CpuFeature::Avx512vl => "avx512vl",
            CpuFeature::Avx512vnni => "avx512vnni",
            CpuFeature::DotProd => "dotprod",
            CpuFeature::I8mm => "i8mm",
        }
    }

    /// Whether the feature is enabled for the whole build (so every CPU that runs this binary
    /// has it). These are stable target features, reported alike by every toolchain.
    pub const fn enabled(self) -> bool {
        match self {
            CpuFeature::Avx2 => cfg!(all(target_arch = "x86_64", target_feature = "avx2")),
            CpuFeature::Fma => cfg!(all(target_arch = "x86_64", target_feature = "fma")),
            CpuFeature::F16c => cfg!(all(target_arch = "x86_64", target_feature = "f16c")),
            CpuFeature::Avx512f => cfg!(all(target_arch = "x86_64", target_feature = "avx512f")),
            CpuFeature::Avx512bw => cfg!(all(target_arch = "x86_64", target_feature = "avx512bw")),
            CpuFeature::Avx512vl => cfg!(all(target_arch = "x86_64", target_feature = "avx512vl")),
            CpuFeature::Avx512vnni => cfg!(all(target_arch = "x86_64", target_feature = "avx512vnni")),
            CpuFeature::DotProd => cfg!(all(target_arch = "aarch64", target_feature = "dotprod")),
            CpuFeature::I8mm => cfg!(all(target_arch = "aarch64", target_feature = "i8mm")),
        }
    }

    /// Whether the CPU running this code has the feature (std's run-time detection; features
    /// of another architecture are never present). The one detection function of the crate:
    /// `qformer-std` and this crate's tests both go through it.
    #[cfg(any(test, feature = "std-detect"))]
    pub fn detected(self) -> bool {
        #[cfg(target_arch = "aarch64")]
        use std::arch::is_aarch64_feature_detected as arm64;
        #[cfg(target_arch = "x86_64")]
        use std::arch::is_x86_feature_detected as x86;
        match self {
            #[cfg(target_arch = "x86_64")]
            CpuFeature::Avx2 => x86!("avx2"),
            #[cfg(target_arch = "x86_64")]
            CpuFeature::Fma => x86!("fma"),
            #[cfg(target_arch = "x86_64")]
            CpuFeature::F16c => x86!("f16c"),
            #[cfg(target_arch = "x86_64")]
            CpuFeature::Avx512f => x86!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            CpuFeature::Avx512bw => x86!("avx512bw"),
            #[cfg(target_arch = "x86_64")]
            CpuFeature::Avx512vl => x86!("avx512vl"),
            #[cfg(target_arch = "x86_64")]
            CpuFeature::Avx512vnni => x86!("avx512vnni"),
            #[cfg(target_arch = "aarch64")]
            CpuFeature::DotProd => arm64!("dotprod"),
            #[cfg(target_arch = "aarch64")]
            CpuFeature::I8mm => arm64!("i8mm"),
            #[allow(unreachable_patterns)] // on x86_64 and aarch64 only the other arch's features
            _ => false,
        }
    }
}

/// One entry of a kernel family's variant table: the kernel, its rank (higher is faster) and
/// the CPU features it requires beyond its module's compile-time cfg. The kernel is handed out
/// only when those features are known to be present.
#[derive(Clone, Copy, Debug)]
pub struct Variant<K: 'static> {
    kernel: K,
    rank: u8,
    requires: &'static [CpuFeature],
}

impl<K: Copy> Variant<K> {
    /// A variant every CPU that can run this build supports (its module's cfg is all it needs).
    pub(crate) const fn always(kernel: K, rank: u8) -> Variant<K> {
        Variant { kernel, rank, requires: &[] }
    }

    /// A variant that needs `requires`.
    ///
    /// # Safety
    /// `kernel` must be safe to run on every CPU that has all of `requires`.
    #[allow(dead_code)] // targets without run-time detected variants have none
    pub(crate) const unsafe fn requiring(kernel: K, rank: u8, requires: &'static [CpuFeature]) -> Variant<K> {
        Variant { kernel, rank, requires }
    }

    /// The rank: within a table, a higher rank is faster.
    pub const fn rank(&self) -> u8 {
        self.rank
    }

    /// The CPU features the variant needs (empty: none beyond its module's cfg).
    pub const fn requires(&self) -> &'static [CpuFeature] {
        self.requires
    }

    /// Whether every required feature is enabled at compile time.
    pub const fn is_compiled(&self) -> bool {
        let mut i = 0;
        while i < self.requires.len() {
            if !self.requires[i].enabled() {
                return false;
            }
            i += 1;
        }
        true
    }

    /// The kernel, if the build enables every feature it requires.
    pub const fn compiled(&self) -> Option<K> {
        if self.is_compiled() {
            Some(self.kernel)
        } else {
            None
        }
    }

    /// The kernel, if every required feature is enabled at compile time or `has` it.
    ///
    /// # Safety
    /// `has` must return `true` only for features the CPU running the kernel implements.
    pub unsafe fn available_with(&self, has: impl Fn(CpuFeature) -> bool) -> Option<K> {
        (self.is_compiled() || self.requires.iter().all(|&f| has(f))).then_some(self.kernel)
    }

    /// The kernel, if this CPU has every feature it requires (detected at run time).
    #[cfg(any(test, feature = "std-detect"))]
    pub fn detected(&self) -> Option<K> {
        // SAFETY: `CpuFeature::detected` is std's run-time detection of this CPU.
        unsafe { self.available_with(CpuFeature::detected) }
    }
}

/// Number of entries of `table` usable at compile time.
pub(crate) const fn count_compiled<K: Copy>(table: &[Variant<K>]) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < table.len() {
        if table[i].is_compiled() {
            n += 1;
        }
        i += 1;
    }
    n
}

/// The `N` entries of `table` usable at compile time, in table (rank) order. `table[0]` must
/// be usable (it is the scalar variant), and `N` is [`count_compiled`].
pub(crate) const fn compiled_list<K: Copy, const N: usize>(table: &[Variant<K>]) -> [K; N] {
    assert!(table[0].is_compiled() && N == count_compiled(table));
    let mut out = [table[0].kernel; N];
    let (mut i, mut n) = (0, 0);
    while i < table.len() {
        if table[i].is_compiled() {
            out[n] = table[i].kernel;
            n += 1;
        }
        i += 1;
    }
    out
}

/// Byte-wise string equality usable in `const` items (e.g. a firmware image asserting the
/// kernel it was built with).
pub const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Implements the table helpers of a kernel family `$K` (a type with `const fn name`):
/// `compiled_best`, which also asserts at compile time that ranks strictly increase and names
/// are unique, so "best" is the last usable entry and no kernel can be listed twice.
macro_rules! variant_table {
    ($K:ty) => {
        impl $K {
            /// The highest-ranked entry of `table` usable at compile time, after checking
            /// that ranks strictly increase and names are unique.
            const fn compiled_best(table: &[$crate::kernels::Variant<$K>]) -> $K {
                let mut i = 0;
                let mut best = table[0].compiled();
                assert!(best.is_some(), "the first entry of a variant table is the scalar one");
                while i < table.len() {
                    let mut j = 0;
                    while j < i {
                        assert!(table[j].rank() < table[i].rank(), "variant ranks must strictly increase");
                        assert!(
                            !$crate::kernels::str_eq(table[j].kernel.name(), table[i].kernel.name()),
                            "variant names must be unique"
                        );
                        j += 1;
                    }
                    if let Some(k) = table[i].compiled() {
                        best = Some(k);
                    }
                    i += 1;
                }
                match best {
                    Some(k) => k,
                    None => table[0].kernel,
                }
            }
        }
    };
}
pub(crate) use variant_table;

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
