//! `qformer-std`: everything around the no_std core that needs an operating system.
//!
//! * [`checkpoint`]: reads Hugging Face / LAVIS safetensors checkpoints (sharded or not,
//!   f32/f16/bf16) into [`weights::Weights`], touching only the Q-Former tensors.
//! * [`writer`]: turns [`weights::Weights`] into a blob (f32, fp16 or int8) and writes files
//!   atomically.
//! * [`reference`](mod@reference): an fp32 (f64-accumulating) forward written for clarity, independent of
//!   the core's kernels.
//! * [`runtime`]: loads blobs (memory-mapped) and runs batches through `qformer-core`.
//! * [`io`]: `image_embeds` inputs (safetensors or `.npy`) and `qformer_output` outputs.
//! * [`synth`]: deterministic synthetic models (the `demo`, BLIP-2-sized tests).
//! * [`metrics`]: cosine similarity and error statistics.

pub mod checkpoint;
pub mod io;
pub mod metrics;
pub mod reference;
pub mod report;
pub mod runtime;
pub mod synth;
pub mod weights;
pub mod writer;

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// a failure never leaves a partial file at `path`.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".qformer-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes).with_context(|| format!("cannot write {}", tmp.path().display()))?;
    tmp.as_file().sync_all().ok();
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
