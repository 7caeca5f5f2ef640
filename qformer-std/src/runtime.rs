//! Loading blobs and running batches through `qformer-core`.

use std::path::Path;

use std::io::{Read, Seek};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use qformer_core::blob::{FORMAT_VERSION, HEADER_BYTES, MAGIC};
use qformer_core::kernels::gemm::{FGemm, Q8Gemm};
use qformer_core::kernels::quant::Quantizer;
use qformer_core::kernels::Variant;
use qformer_core::Model;

use crate::files;

/// Compares a file's length with the size its blob header declares, reading only the first
/// 20 bytes, so that a large file that is not this blob is refused without reading it. The
/// errors are the core's (`Model::from_blob` checks the same, in the same order); a file too
/// short for a header is left to it.
fn check_declared_size(f: &mut std::fs::File, len: u64, path: &Path) -> Result<()> {
    if len < HEADER_BYTES as u64 {
        return Ok(());
    }
    let mut head = [0u8; 20];
    f.read_exact(&mut head).with_context(|| format!("cannot read {}", path.display()))?;
    f.rewind().with_context(|| format!("cannot read {}", path.display()))?;
    let word = |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let error = if head[..8] != MAGIC {
        qformer_core::Error::BadMagic
    } else if word(8) != FORMAT_VERSION {
        qformer_core::Error::UnsupportedVersion { found: word(8), supported: FORMAT_VERSION }
    } else if u64::from(word(16)) > len {
        qformer_core::Error::Truncated { needed: word(16) as usize, available: len as usize }
    } else if u64::from(word(16)) < len {
        qformer_core::Error::TrailingBytes { declared: word(16) as usize, available: len as usize }
    } else {
        return Ok(());
    };
    bail!("{}: {error}", path.display())
}

/// Blob bytes that start 16-byte aligned: read into memory (the default), or memory-mapped
/// from a file on request.
///
/// A read copy is what `Model::from_blob` validated, checksum included, and nothing can
/// change it under the forward. A mapping is what a blob larger than the available memory
/// needs, at a price: another process that rewrites the file changes what the forward reads
/// after validation (wrong output), and one that truncates it makes the next access to a
/// vanished page raise SIGBUS, which a portable program cannot catch. So mapping is opt-in
/// (`--mmap`), and only for regular files.
pub enum BlobBytes {
    /// A read-only file mapping.
    Mapped(Mmap),
    /// An aligned copy.
    Owned {
        /// Storage (16-byte aligned).
        buf: Vec<u128>,
        /// Bytes used.
        len: usize,
    },
}

/// Asks Linux to back `buf` with transparent huge pages where it may (`madvise` mode): a
/// large read then takes a few hundred page faults instead of one per 4 KiB. Only a hint;
/// nothing changes if it is refused.
fn advise_huge_pages(buf: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buf.as_mut_ptr() as usize;
        let (first, end) = (start.next_multiple_of(HUGE), start + buf.len());
        if end > first + HUGE {
            let len = (end - first) / HUGE * HUGE;
            // SAFETY: [first, first + len) lies inside `buf`, which this function borrows
            // mutably, and starts at a 2 MiB (so page) boundary; MADV_HUGEPAGE changes how
            // the pages are backed, never their contents.
            unsafe { libc::madvise(first as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// The blob format's size limit: offsets are `u32`.
const MAX_BLOB_BYTES: u64 = u32::MAX as u64;

impl BlobBytes {
    /// Reads the blob at `path` into aligned memory. Refuses what is not a regular file, a
    /// file over the format's 4 GiB or over the memory available, and a file whose length
    /// disagrees with the size its header declares (before reading the rest); a file that
    /// changes size while being read is an error.
    pub fn open(path: &Path) -> Result<BlobBytes> {
        let (mut f, len) = files::open_regular(path)?;
        check_declared_size(&mut f, len, path)?;
        files::check_size(path, len, MAX_BLOB_BYTES, "the blob format's limit")?;
        let len = len as usize;
        let mut buf = vec![0u128; len.div_ceil(16)];
        advise_huge_pages(bytemuck::cast_slice_mut(&mut buf));
        files::read_whole(&mut f, &mut bytemuck::cast_slice_mut::<u128, u8>(&mut buf)[..len], path)?;
        Ok(BlobBytes::Owned { buf, len })
    }

    /// Memory-maps the blob at `path` (a regular file; see the type's documentation for
    /// what a mapping cannot protect against).
    pub fn map(path: &Path) -> Result<BlobBytes> {
        let (mut f, len) = files::open_regular(path)?;
        check_declared_size(&mut f, len, path)?;
        if len == 0 {
            return Ok(BlobBytes::copy(&[]));
        }
        // SAFETY: a read-only mapping of a regular file, only ever read as plain bytes;
        // `Model::from_blob` validates every byte it later interprets, and its checksum
        // catches a file changed between mapping and validation. A change after validation
        // can give wrong numbers, not unsoundness; a truncation raises SIGBUS (documented).
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
    /// `n` threads in all, the caller's included; 0 means one per available core. More than
    /// [`Threads::max`] is refused: threads beyond the cores only compete for them.
    pub fn new(n: usize) -> Result<Threads> {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let n = if n == 0 { cores.min(MAX_THREADS) } else { n };
        if n > Threads::max() {
            bail!(
                "{n} threads asked for, at most {} allowed (4 per available core, {cores} cores here, and never more than {MAX_THREADS}); 0 means one per core",
                Threads::max()
            );
        }
        let pool = if n > 1 {
            // The pool error's text already carries its cause: no second context layer.
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n - 1)
                    .build()
                    .map_err(|e| anyhow::anyhow!("cannot start {} worker threads: {e}", n - 1))?,
            )
        } else {
            None
        };
        Ok(Threads { threads: n, pool })
    }
}

/// The absolute limit on [`Threads::new`], whatever the core count.
pub const MAX_THREADS: usize = 1024;

impl Threads {
    /// The most threads [`Threads::new`] accepts here: 4 per available core, at most
    /// [`MAX_THREADS`].
    pub fn max() -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        cores.saturating_mul(4).min(MAX_THREADS)
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
    run_batch_text(model, images, batch, m, None, capture_layers, exec)
}

/// InstructBLIP instructions for a batch: `rows` rows of `len` token ids with their
/// attention mask, one row per image, or one row for every image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instructions {
    /// `[rows, len]` token ids.
    pub ids: Vec<u32>,
    /// `[rows, len]`, 1 attended, 0 padding.
    pub mask: Vec<u8>,
    /// Tokens per row.
    pub len: usize,
    /// 1 (every image) or the batch size.
    pub rows: usize,
}

impl Instructions {
    /// One instruction for every image.
    pub fn one(ids: Vec<u32>) -> Instructions {
        let len = ids.len();
        Instructions { mask: vec![1; len], ids, len, rows: 1 }
    }

    /// The instruction of image `b`.
    pub fn text(&self, b: usize) -> qformer_core::Text<'_> {
        let r = if self.rows == 1 { 0 } else { b };
        let range = r * self.len..(r + 1) * self.len;
        qformer_core::Text { ids: &self.ids[range.clone()], mask: Some(&self.mask[range]) }
    }
}

/// [`run_batch_with`] with an instruction per image (InstructBLIP), or none.
pub fn run_batch_text(
    model: &Model<'_>,
    images: &[f32],
    batch: usize,
    m: usize,
    text: Option<&Instructions>,
    capture_layers: bool,
    exec: &dyn qformer_core::Executor,
) -> Result<BatchOutput> {
    let c = model.config();
    if let Some(t) = text {
        anyhow::ensure!(
            t.rows == 1 || t.rows == batch,
            "{} instructions given for {batch} images (give one per image, or one for all)",
            t.rows
        );
    }
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
            .forward_with(
                qformer_core::Image::Features(image),
                text.map(|t| t.text(b)),
                arena.bytes_mut(),
                o,
                proj,
                exec,
                &mut observer,
            )
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

/// Checks image features against the blob before a forward: their width is `d_v` and their
/// token count in 1 to the blob's maximum. `what` names them in the message (the input file's
/// path, or the argument).
pub fn check_images(model: &Model<'_>, images: &crate::io::Images, what: &str) -> Result<()> {
    let c = model.config();
    if images.dim != c.encoder_hidden as usize {
        bail!("{what}: image_embeds are {} wide, the model expects d_v = {}", images.dim, c.encoder_hidden);
    }
    if images.tokens == 0 || images.tokens > c.max_image_tokens as usize {
        bail!("{what}: {} image tokens, the blob accepts 1 to {}", images.tokens, c.max_image_tokens);
    }
    Ok(())
}

/// How the callers of [`resolve_instructions`] name the instruction's sources in its
/// messages (the command line's flags, or the Python arguments).
#[derive(Clone, Copy, Debug)]
pub struct Wording<'w> {
    /// The text instruction: `--prompt`.
    pub prompt: &'w str,
    /// Where an instruction could have been given: `--prompt, or qformer_input_ids in the input`.
    pub sources: &'w str,
}

impl Wording<'static> {
    /// The command line's.
    pub const CLI: Wording<'static> =
        Wording { prompt: "--prompt", sources: "--prompt, or qformer_input_ids in the input" };
}

/// The instruction of a run over `batch` images: `prompt` tokenized with the blob's own
/// vocabulary (truncated to `max_text_tokens`, with a note), or the given token ids, or none
/// (with a note for an InstructBLIP blob). An instruction for a blob without text parts, and a
/// number of instruction rows that is neither 1 nor `batch`, are refused. Returns the
/// instructions and the notes for the user. The caller refuses `prompt` and `ids` together
/// (in its own words).
pub fn resolve_instructions(
    model: &Model<'_>,
    prompt: Option<&str>,
    ids: Option<Instructions>,
    batch: usize,
    wording: Wording<'_>,
) -> Result<(Option<Instructions>, Vec<String>)> {
    let mut notes = Vec::new();
    let text = match (prompt, ids) {
        (Some(_), Some(_)) => bail!("{} and token ids both give an instruction: give one of them", wording.prompt),
        (Some(p), None) => {
            let mut ids = vec![0u32; model.config().max_text_tokens.max(2) as usize];
            let t = model.tokenize(p, &mut ids)?;
            if t.truncated_from > t.len {
                notes.push(format!(
                    "note: {} is {} tokens long, truncated to the blob's max_text_tokens = {}",
                    wording.prompt, t.truncated_from, t.len
                ));
            }
            ids.truncate(t.len);
            Some(Instructions::one(ids))
        }
        (None, t) => t,
    };
    match &text {
        Some(_) if !model.config().has_text() => bail!("{}", qformer_core::Error::NoText),
        Some(t) if t.rows != 1 && t.rows != batch => {
            bail!("{} instructions for {batch} images: give one per image, or one for all", t.rows)
        }
        None if model.config().has_text() => notes.push(format!(
            "note: no instruction given ({}): running the queries alone, as transformers' InstructBlipQFormerModel does without input_ids",
            wording.sources
        )),
        _ => {}
    }
    Ok((text, notes))
}
