//! `qformer-std`: everything around the no_std core that needs an operating system.
//!
//! * [`checkpoint`]: reads Hugging Face / LAVIS safetensors checkpoints (sharded or not,
//!   f32/f16/bf16) into [`weights::Weights`], touching only the Q-Former tensors.
//! * [`writer`]: turns [`weights::Weights`] into a blob (f32, fp16 or int8).
//! * [`reference`](mod@reference): an fp32 (f64-accumulating) forward written for clarity, independent of
//!   the core's kernels.
//! * [`runtime`]: loads blobs (read into memory, or memory-mapped on request) and runs
//!   batches through `qformer-core`.
//! * [`files`]: inputs refused unless regular and of bounded size; outputs written through a
//!   temporary file (links followed, devices written in place, inputs never overwritten).
//! * [`io`]: `image_embeds` inputs (safetensors or `.npy`) and `qformer_output` outputs.
//! * [`synth`]: deterministic synthetic models (the `demo`, BLIP-2-sized tests).
//! * [`metrics`]: cosine similarity and error statistics.
//! * [`quantize`](mod@quantize): a checkpoint to a checked blob on disk (the `quantize`
//!   command and the Python module's `qformer.quantize`).
//! * [`verify`]: a blob against the fp32 reference, layer by layer (`qformer verify`,
//!   `qformer.verify`).
//! * [`vocab`]: Hugging Face BERT tokenizer directories read into the core tokenizer's tables.

pub mod checkpoint;
pub mod files;
pub mod io;
pub mod metrics;
pub mod quantize;
pub mod reference;
pub mod report;
pub mod runtime;
pub mod synth;
pub mod verify;
pub mod vocab;
pub mod weights;
pub mod writer;

pub use files::write_atomic;
