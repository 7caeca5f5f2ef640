//! The one alignment rule of blob and arena: every tensor, every arena buffer and both
//! buffers' start addresses are 16-byte aligned (one SIMD register; the widest aligned load
//! the kernels assume).

/// Alignment of every tensor's data, every arena buffer, and the blob's and arena's start.
pub const ALIGN: usize = 16;

/// Rounds `v` up to a multiple of `to` (any non-zero value).
pub const fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}
