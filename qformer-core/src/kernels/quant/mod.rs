//! Dynamic int8 quantization of activations: symmetric, one scale per group of `group`
//! consecutive values of a row, `scale = max|x| / 127`, `q = round_half_away(x * (127 /
//! max|x|))` (0 and scale 0 for an all-zero group). Padding columns are written as 0.

use super::QRows;

pub mod scalar;

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

/// Quantizes `src` into `values` (`rows * stride`, `stride = round_up(cols, group)`) and
/// `scales` (`rows * stride / group`); returns the view.
pub fn quantize_rows<'a>(src: Strided<'_>, group: usize, values: &'a mut [i8], scales: &'a mut [f32]) -> QRows<'a> {
    let stride = src.cols.div_ceil(group) * group;
    debug_assert!(values.len() >= src.rows * stride && scales.len() >= src.rows * stride / group);
    scalar::quantize_rows(src, group, stride, values, scales);
    QRows { values: &values[..src.rows * stride], scales: &scales[..src.rows * stride / group], stride, group }
}
