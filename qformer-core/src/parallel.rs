//! How the core spreads a matrix product over cores, without knowing about threads: the
//! caller passes an [`Executor`] (no_std default: [`Sequential`]; `qformer-std` provides a
//! thread pool). The core cuts each product's output into contiguous blocks of whole rows,
//! and every output value is computed by the same code whatever the cut, so the result is
//! identical for any number of threads.

/// Runs a closure on disjoint chunks of an output buffer, possibly on several threads.
pub trait Executor: Sync {
    /// Number of chunks worth making (1 = no parallelism).
    fn threads(&self) -> usize;

    /// Calls `task(index, chunk)` once for each `chunk` of `out.chunks_mut(chunk_len)`, in
    /// any order, on any thread, and returns when all calls have returned.
    fn for_each_chunk(&self, out: &mut [f32], chunk_len: usize, task: &(dyn Fn(usize, &mut [f32]) + Sync));
}

/// Runs everything on the calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sequential;

impl Executor for Sequential {
    fn threads(&self) -> usize {
        1
    }
    fn for_each_chunk(&self, out: &mut [f32], chunk_len: usize, task: &(dyn Fn(usize, &mut [f32]) + Sync)) {
        for (i, c) in out.chunks_mut(chunk_len.max(1)).enumerate() {
            task(i, c);
        }
    }
}

/// Rows a kernel tile covers at most (the 4-row int8 and float tiles): chunks are cut at
/// multiples of it, so no tile is split and only the last chunk has leftover rows.
pub const TILE_ROWS: usize = 4;

/// Rows per chunk when `rows` rows are spread over `threads`: a multiple of [`TILE_ROWS`],
/// at least one tile.
pub fn rows_per_chunk(rows: usize, threads: usize) -> usize {
    rows.div_ceil(threads.max(1)).div_ceil(TILE_ROWS).max(1) * TILE_ROWS
}
