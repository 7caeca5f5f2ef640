//! The image features on the int8 path: the outlier-channel policy and the quantization
//! done once per image (every cross-attention layer reads the result).
//!
//! A few image-feature channels can be far larger than the rest (vision transformers have
//! them). Quantized with the others, they would crush the int8 resolution of their group, so
//! up to [`MAX_IMAGE_OUTLIERS`] of them are kept out of the int8 values and multiplied in f32
//! (mixed-precision decomposition, as LLM.int8()).

use crate::kernels::quant::{self, Quantizer, Strided};
use crate::kernels::QRows;

/// A channel whose largest magnitude over the image's tokens exceeds this many times the
/// mean of all channels' largest magnitudes is an outlier.
pub const OUTLIER_RATIO: f32 = 6.0;

/// Most outlier channels kept in f32 (the largest, when there are more).
pub const MAX_IMAGE_OUTLIERS: usize = 16;

/// The image features quantized for the cross-attention key/value projections.
pub(crate) struct QImage<'s> {
    /// `[tokens, stride(d_v)]` with the outlier channels zeroed.
    pub rows: QRows<'s>,
    /// Tokens.
    pub tokens: usize,
    /// Outlier channels, ascending.
    pub channels: heapless::Vec<u32, MAX_IMAGE_OUTLIERS>,
    /// Their f32 values, `[tokens, channels.len()]`.
    pub values: &'s [f32],
}

/// Buffers [`QImage::quantize`] writes (from the arena plan).
pub(crate) struct ImageScratch<'s> {
    /// `[tokens, stride(d_v)]` values.
    pub values: &'s mut [i8],
    /// Their scales.
    pub scales: &'s mut [f32],
    /// `[tokens, MAX_IMAGE_OUTLIERS]` outlier values.
    pub outliers: &'s mut [f32],
    /// `d_v` floats of scratch.
    pub row: &'s mut [f32],
}

impl<'s> QImage<'s> {
    /// Picks the outlier channels of `image` (`[tokens, dv]`), then quantizes each token's
    /// features with those channels zeroed, in groups of `group`.
    pub fn quantize(quantizer: Quantizer, image: &[f32], dv: usize, group: usize, b: ImageScratch<'s>) -> Self {
        let tokens = image.len() / dv;
        let channels = outlier_channels(image, dv, b.row);
        let count = channels.len();
        let stride = dv.div_ceil(group) * group;
        for (r, src) in image.chunks_exact(dv).enumerate() {
            b.row.copy_from_slice(src);
            for (i, &c) in channels.iter().enumerate() {
                b.outliers[r * count + i] = b.row[c as usize];
                b.row[c as usize] = 0.0;
            }
            let one = Strided { data: b.row, rows: 1, cols: dv, row_stride: dv, col_stride: 1 };
            quant::quantize_rows(
                quantizer,
                one,
                group,
                &mut b.values[r * stride..],
                &mut b.scales[r * stride / group..],
            );
        }
        let rows =
            QRows { values: &b.values[..tokens * stride], scales: &b.scales[..tokens * stride / group], stride, group };
        QImage { rows, tokens, channels, values: &b.outliers[..tokens * count] }
    }

    /// Adds the outlier channels' contribution to a key or value projection `out` (`[tokens,
    /// ldo]`, of `n` columns) whose int8 weights are `w` (`[n, stride(d_v)]`): the weights
    /// dequantized, the products in f32, in a fixed order so every target gets the same bits.
    pub fn add_outlier_products(&self, w: &QRows<'_>, n: usize, out: &mut [f32], ldo: usize) {
        let groups = w.stride / w.group;
        let count = self.channels.len();
        for (i, &c) in self.channels.iter().enumerate() {
            let c = c as usize;
            for j in 0..n {
                let wjc = w.values[j * w.stride + c] as f32 * w.scales[j * groups + c / w.group];
                for t in 0..self.tokens {
                    out[t * ldo + j] += self.values[t * count + i] * wjc;
                }
            }
        }
    }
}

/// The outlier channels of `image` (`[tokens, dv]`): over [`OUTLIER_RATIO`] times the mean
/// channel maximum, at most [`MAX_IMAGE_OUTLIERS`] (the largest), ascending. `colmax` is `dv`
/// scratch.
fn outlier_channels(image: &[f32], dv: usize, colmax: &mut [f32]) -> heapless::Vec<u32, MAX_IMAGE_OUTLIERS> {
    colmax.fill(0.0);
    for row in image.chunks_exact(dv) {
        for (c, v) in colmax.iter_mut().zip(row) {
            *c = c.max(libm::fabsf(*v));
        }
    }
    let mean = colmax.iter().sum::<f32>() / dv as f32;
    let mut picked: heapless::Vec<u32, MAX_IMAGE_OUTLIERS> = heapless::Vec::new();
    for (c, &v) in colmax.iter().enumerate() {
        if v <= OUTLIER_RATIO * mean {
            continue;
        }
        if picked.is_full() {
            // Replace the smallest picked channel if this one is larger (ties: keep the
            // lower channel index).
            let Some((k, &small)) =
                picked.iter().enumerate().min_by(|a, b| colmax[*a.1 as usize].total_cmp(&colmax[*b.1 as usize]))
            else {
                continue;
            };
            if v > colmax[small as usize] {
                picked[k] = c as u32;
            }
        } else {
            // Cannot fail: not full.
            let _ = picked.push(c as u32);
        }
    }
    picked.sort_unstable();
    picked
}
