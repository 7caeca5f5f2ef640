//! Loading blobs and running batches through `qformer-core`.

use std::path::Path;

use anyhow::{Context, Result};
use memmap2::Mmap;
use qformer_core::kernels::gemm::{FGemm, Q8Gemm};
use qformer_core::kernels::quant::Quantizer;
use qformer_core::kernels::Variant;
use qformer_core::Model;

/// Blob bytes that start 16-byte aligned: memory-mapped from a file (page aligned), or an
/// owned copy in a `u128` buffer.
pub enum BlobBytes {
    /// A read-only file mapping: a blob larger than RAM still opens at once.
    Mapped(Mmap),
    /// An aligned copy.
    Owned {
        /// Storage (16-byte aligned).
        buf: Vec<u128>,
        /// Bytes used.
        len: usize,
    },
}

impl BlobBytes {
    /// Memory-maps `path`.
    pub fn open(path: &Path) -> Result<BlobBytes> {
        let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let len = f.metadata().with_context(|| format!("cannot stat {}", path.display()))?.len();
        if len == 0 {
            return Ok(BlobBytes::copy(&[]));
        }
        // SAFETY: read-only mapping, only read as plain bytes; `Model::from_blob` validates
        // every byte it later interprets, and the checksum catches a file changed between
        // mapping and validation.
        let map = unsafe { Mmap::map(&f) }.with_context(|| format!("cannot map {}", path.display()))?;
        Ok(BlobBytes::Mapped(map))
    }

    /// An aligned copy of `bytes`.
    pub fn copy(bytes: &[u8]) -> BlobBytes {
        let mut buf = vec![0u128; bytes.len().div_ceil(16)];
        bytemuck::cast_slice_mut::<u128, u8>(&mut buf)[..bytes.len()].copy_from_slice(bytes);
        BlobBytes::Owned { buf, len: bytes.len() }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            BlobBytes::Mapped(m) => m,
            BlobBytes::Owned { buf, len } => &bytemuck::cast_slice::<u128, u8>(buf)[..*len],
        }
    }
}

/// A heap arena, 16-byte aligned.
pub struct Arena {
    buf: Vec<u128>,
    len: usize,
}

impl Arena {
    /// `bytes` zeroed bytes.
    pub fn new(bytes: usize) -> Arena {
        Arena { buf: vec![0; bytes.div_ceil(16)], len: bytes }
    }
    /// The bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<u128, u8>(&mut self.buf)[..self.len]
    }
}

/// Outputs of a batch.
#[derive(Clone, Debug, Default)]
pub struct BatchOutput {
    /// `[B, N, d]`.
    pub output: Vec<f32>,
    /// `[B, N, d_llm]`, when requested and the model has a projection.
    pub projected: Option<Vec<f32>>,
    /// With `capture_layers`: `L + 1` entries of `[B, N, d]` (after the input LayerNorm and
    /// after each layer).
    pub hidden_states: Vec<Vec<f32>>,
}

/// Worker threads for [`Model::forward_with`]: the matrix products are cut into blocks of
/// rows, one per thread; the calling thread computes the first block itself and `n - 1` pool
/// threads the others, so no more threads run than were asked for (a caller blocked while
/// idle pool threads spin would compete with them for the cores). Output is identical for
/// any thread count.
pub struct Threads {
    threads: usize,
    /// `threads - 1` workers; none for one thread.
    pool: Option<rayon::ThreadPool>,
}

impl Threads {
    /// `n` threads in all, the caller's included; 0 means one per available core.
    pub fn new(n: usize) -> Result<Threads> {
        let n = if n == 0 { std::thread::available_parallelism().map_or(1, |c| c.get()) } else { n };
        let pool = if n > 1 {
            Some(rayon::ThreadPoolBuilder::new().num_threads(n - 1).build().context("cannot start worker threads")?)
        } else {
            None
        };
        Ok(Threads { threads: n, pool })
    }
}

impl qformer_core::Executor for Threads {
    fn threads(&self) -> usize {
        self.threads
    }
    fn for_each_chunk(&self, out: &mut [f32], chunk_len: usize, task: &(dyn Fn(usize, &mut [f32]) + Sync)) {
        let mut chunks = out.chunks_mut(chunk_len.max(1)).enumerate();
        let Some((first, head)) = chunks.next() else { return };
        match &self.pool {
            Some(pool) => pool.in_place_scope(|s| {
                for (i, c) in chunks {
                    s.spawn(move |_| task(i, c));
                }
                task(first, head);
            }),
            None => {
                task(first, head);
                chunks.for_each(|(i, c)| task(i, c));
            }
        }
    }
}

/// Runs `batch` images of `m` tokens (`images` is `[batch, m, d_v]`) one after the other
/// through one arena, single-threaded, with the kernels the model carries (see
/// [`detect_kernels`]).
pub fn run_batch(
    model: &Model<'_>,
    images: &[f32],
    batch: usize,
    m: usize,
    capture_layers: bool,
) -> Result<BatchOutput> {
    run_batch_with(model, images, batch, m, capture_layers, &qformer_core::Sequential)
}

/// [`run_batch`] with the products spread over `exec` (e.g. [`Threads`]).
pub fn run_batch_with(
    model: &Model<'_>,
    images: &[f32],
    batch: usize,
    m: usize,
    capture_layers: bool,
    exec: &dyn qformer_core::Executor,
) -> Result<BatchOutput> {
    let c = model.config();
    let (n, d, dv, p) =
        (c.num_queries as usize, c.hidden as usize, c.encoder_hidden as usize, c.projection_dim as usize);
    anyhow::ensure!(
        images.len() == batch * m * dv,
        "image_embeds has {} values, expected {batch} x {m} x {dv}",
        images.len()
    );
    let mut arena = Arena::new(model.arena_bytes());
    let mut out = BatchOutput {
        output: vec![0.0; batch * n * d],
        projected: (p > 0).then(|| vec![0.0; batch * n * p]),
        hidden_states: if capture_layers {
            vec![vec![0.0; batch * n * d]; c.num_layers as usize + 1]
        } else {
            Vec::new()
        },
    };
    for b in 0..batch {
        let image = &images[b * m * dv..(b + 1) * m * dv];
        let o = &mut out.output[b * n * d..(b + 1) * n * d];
        let proj = out.projected.as_mut().map(|v| &mut v[b * n * p..(b + 1) * n * p]);
        let hs = &mut out.hidden_states;
        let mut observer = |i: usize, h: &[f32]| {
            if let Some(dst) = hs.get_mut(i) {
                dst[b * n * d..(b + 1) * n * d].copy_from_slice(h);
            }
        };
        model
            .forward_with(image, m, arena.bytes_mut(), o, proj, exec, &mut observer)
            .with_context(|| format!("image {b} of the batch"))?;
    }
    Ok(out)
}

/// The best kernels for this CPU, detected at run time (the no_std core alone can only use
/// what is enabled at compile time): the highest-ranked usable entry of each family's variant
/// table.
pub fn detect_kernels() -> qformer_core::kernels::Kernels {
    qformer_core::kernels::Kernels::detected()
}

/// The entries of a variant table this CPU runs (compiled in, or their CPU features detected),
/// in increasing rank: scalar first, the one [`detect_kernels`] picks last.
fn usable<K: Copy>(table: &[Variant<K>]) -> Vec<K> {
    table.iter().filter_map(Variant::detected).collect()
}

/// Every int8 GEMM variant this CPU can run, scalar first (for benchmarks and reports).
pub fn q8_variants() -> Vec<Q8Gemm> {
    usable(Q8Gemm::VARIANTS)
}

/// Every activation quantizer this CPU can run, scalar first (for benchmarks and reports).
pub fn quant_variants() -> Vec<Quantizer> {
    usable(Quantizer::VARIANTS)
}

/// Every float GEMM this CPU can run, scalar first (for benchmarks and reports).
pub fn f_variants() -> Vec<FGemm> {
    usable(FGemm::VARIANTS)
}
