//! Dynamic int8 quantization of activations: symmetric, one scale per group of `group`
//! consecutive values of a row, `scale = max|x| / 127`, `q = round_half_away(x * (127 /
//! max|x|))` (0 and scale 0 for an all-zero group). Padding columns are written as 0.

#[allow(unused_imports)] // only targets with run-time detected variants name features
use super::CpuFeature;
use super::{QRows, Variant};

// The named cfgs come from build.rs (see the `kernels` module docs).
#[cfg(all(qf_dsp, qf_fpu))]
pub mod dsp;
#[cfg(qf_helium)]
pub mod helium;
#[cfg(qf_neon)]
pub mod neon;
pub mod scalar;
#[cfg(qf_x86)]
pub mod x86;

/// Signature of a group quantizer: quantizes `src` (at most `out.len()` values, contiguous)
/// into `out`, zero-filling the rest, and returns the scale.
pub type GroupFn = fn(&[f32], &mut [i8]) -> f32;

/// One implementation of the group quantizer. Every variant gives bit-for-bit what
/// [`scalar::quantize_group`] gives (it is part of the int8 path's determinism).
#[derive(Clone, Copy, Debug)]
pub struct Quantizer {
    name: &'static str,
    run: GroupFn,
}

impl Quantizer {
    /// The portable reference.
    pub const SCALAR: Quantizer = Quantizer { name: "scalar_quant_i8", run: scalar::quantize_slice };
    /// Every quantizer of this build, in increasing rank.
    pub const VARIANTS: &'static [Variant<Quantizer>] = &[
        Variant::always(Quantizer::SCALAR, 0),
        #[cfg(all(qf_dsp, qf_fpu))]
        Variant::always(dsp::DSP, 10),
        #[cfg(qf_helium)]
        Variant::always(helium::HELIUM, 20),
        #[cfg(qf_neon)]
        Variant::always(neon::NEON, 10),
        // SAFETY: the entry hands out the kernel only where AVX2 is enabled or detected.
        #[cfg(qf_x86)]
        unsafe {
            Variant::requiring(x86::avx2_unchecked(), 10, &[CpuFeature::Avx2])
        },
    ];

    /// The highest-ranked variant enabled at compile time.
    pub const COMPILED: Quantizer = Quantizer::compiled_best(Quantizer::VARIANTS);

    #[allow(dead_code)] // only the SIMD modules build variants, and targets without one have none
    pub(crate) const fn new(name: &'static str, run: GroupFn) -> Quantizer {
        Quantizer { name, run }
    }

    /// The variant's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Whether this is the variant called `name` (usable in `const` assertions).
    pub const fn is(&self, name: &str) -> bool {
        super::str_eq(self.name, name)
    }

    /// Quantizes one contiguous group; see [`GroupFn`].
    pub fn group(&self, src: &[f32], out: &mut [i8]) -> f32 {
        assert!(src.len() <= out.len());
        (self.run)(src, out)
    }
}

crate::kernels::variant_table!(Quantizer);

/// Every quantizer usable at compile time, the scalar one first and [`Quantizer::COMPILED`]
/// last (run-time detected ones are in [`Quantizer::VARIANTS`]).
pub fn compiled_variants() -> &'static [Quantizer] {
    static LIST: [Quantizer; crate::kernels::count_compiled(Quantizer::VARIANTS)] =
        crate::kernels::compiled_list(Quantizer::VARIANTS);
    &LIST
}

/// A strided f32 source matrix: element `(r, c)` is `data[r * row_stride + c * col_stride]`.
/// `col_stride = 1` reads rows, `row_stride = 1` reads a transpose.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    /// The values.
    pub data: &'a [f32],
    /// Rows to quantize.
    pub rows: usize,
    /// Logical columns.
    pub cols: usize,
    /// Distance between rows.
    pub row_stride: usize,
    /// Distance between columns.
    pub col_stride: usize,
}

/// Longest group [`quantize_rows`] gathers from a strided source onto the stack so that it
/// goes through the given quantizer; longer strided groups take the scalar code.
const GATHER: usize = 128;

/// Quantizes `src` into `values` (`rows * stride`, `stride = round_up(cols, group)`) and
/// `scales` (`rows * stride / group`); returns the view.
///
/// Every group goes through `quantizer`: row-contiguous sources (`col_stride == 1`) in place,
/// strided ones (a transpose) gathered first (groups up to 128 values; longer ones take the
/// scalar code, which gives the same bits).
pub fn quantize_rows<'a>(
    quantizer: Quantizer,
    src: Strided<'_>,
    group: usize,
    values: &'a mut [i8],
    scales: &'a mut [f32],
) -> QRows<'a> {
    let stride = src.cols.div_ceil(group) * group;
    let groups = stride / group;
    assert!(values.len() >= src.rows * stride && scales.len() >= src.rows * groups);
    let mut buf = [0f32; GATHER];
    for r in 0..src.rows {
        for g in 0..groups {
            let c0 = g * group;
            let len = src.cols.saturating_sub(c0).min(group);
            let at = r * src.row_stride + c0 * src.col_stride;
            let out = &mut values[r * stride + c0..r * stride + c0 + group];
            scales[r * groups + g] = if src.col_stride == 1 {
                quantizer.group(&src.data[at..at + len], out)
            } else if len <= GATHER {
                for (i, b) in buf[..len].iter_mut().enumerate() {
                    *b = src.data[at + i * src.col_stride];
                }
                quantizer.group(&buf[..len], out)
            } else {
                scalar::quantize_group(|i| src.data[at + i * src.col_stride], len, out)
            };
        }
    }
    QRows { values: &values[..src.rows * stride], scales: &scales[..src.rows * groups], stride, group }
}
