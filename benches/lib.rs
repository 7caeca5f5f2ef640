//! Benchmark helpers: deterministic operands at BLIP-2's shapes.

use qformer_core::kernels::quant::{quantize_rows, Strided};

/// BLIP-2's int8 GEMM shapes `(name, m, n, k)`: a 768 -> 768 projection of the 32 queries,
/// the 768 -> 3072 feed-forward of the queries, and the 1408 -> 768 key/value projection of
/// the 257 image tokens.
pub const BLIP2_SHAPES: [(&str, usize, usize, usize); 3] =
    [("32x768x768", 32, 768, 768), ("32x3072x768", 32, 3072, 768), ("257x768x1408", 257, 768, 1408)];

/// A row-quantized matrix owned in memory.
pub struct OwnedQ {
    /// Values.
    pub values: Vec<i8>,
    /// Scales.
    pub scales: Vec<f32>,
    /// Row stride.
    pub stride: usize,
    /// Group.
    pub group: usize,
}

impl OwnedQ {
    /// `rows x cols` pseudo-random values quantized in groups of `group`.
    pub fn random(rows: usize, cols: usize, group: usize, seed: u64) -> OwnedQ {
        let f = random_f32(rows * cols, seed);
        let stride = cols.div_ceil(group) * group;
        let mut values = vec![0i8; rows * stride];
        let mut scales = vec![0f32; rows * stride / group];
        quantize_rows(
            qformer_core::kernels::quant::Quantizer::SCALAR,
            Strided { data: &f, rows, cols, row_stride: cols, col_stride: 1 },
            group,
            &mut values,
            &mut scales,
        );
        OwnedQ { values, scales, stride, group }
    }
    /// The view the kernels take.
    pub fn view(&self) -> qformer_core::kernels::QRows<'_> {
        qformer_core::kernels::QRows {
            values: &self.values,
            scales: &self.scales,
            stride: self.stride,
            group: self.group,
        }
    }
}

/// `len` values in [-1, 1).
pub fn random_f32(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = qformer_std::synth::Rng::new(seed);
    (0..len).map(|_| (rng.uniform() * 2.0 - 1.0) as f32).collect()
}
