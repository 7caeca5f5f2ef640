//! The C API of `qformer-core`: `libqformer.a` (every target) and `libqformer.so` (Linux), with
//! the header `include/qformer.h` that `cargo xtask c-api` generates from this file with
//! cbindgen (and fails on when the committed one differs).
//!
//! The same source builds for bare metal (`thumbv7em-none-eabihf`, `thumbv8m.main-none-eabihf`
//! with the `helium` feature, `aarch64-unknown-none`: `no_std`, no allocation, a
//! `#[panic_handler]` that calls `qf_panic_handler`) and for Linux (x86_64, aarch64: std, every
//! call behind `catch_unwind`, kernels detected at run time). Nothing here keeps global state:
//! the model lives in the caller's `qf_model`, the scratch in the caller's arena.
//!
//! Every pointer is checked before it is used: NULL is [`QF_ERR_NULL`], a pointer not aligned
//! for its type is [`QF_ERR_MISALIGNED`] (the blob and the arena need 16 bytes, which the core
//! checks), output buffers that overlap another buffer are [`QF_ERR_OVERLAP`], and a length is
//! checked against the model before a slice of it is made. What a C caller can still get wrong
//! (a pointer to less memory than its length says, a blob freed while the model is in use) is
//! in each function's `# Safety` section and the header.
#![cfg_attr(target_os = "none", no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
// The C names (qf_model, qf_status, ...) are the API.
#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_void, CStr};
use core::mem::{align_of, size_of};

use qformer_core::{EncodedImage, Error, Header, Image, Model, Sequential, Text};

mod status;
pub use status::*;

// ---- Caller-provided storage ----

/// Bytes of a `qf_model`: enough for the model on every target (asserted at compile time).
pub const QF_MODEL_BYTES: usize = 1024;

/// Bytes of a `qf_encoded_image`.
pub const QF_ENCODED_IMAGE_BYTES: usize = 64;

/// `uint64_t` words of a `qf_model`.
pub const QF_MODEL_WORDS: usize = QF_MODEL_BYTES / 8;

/// `uint64_t` words of a `qf_encoded_image`.
pub const QF_ENCODED_IMAGE_WORDS: usize = QF_ENCODED_IMAGE_BYTES / 8;

/// Alignment in bytes the blob, the arena and an encoded image's buffer must have.
pub const QF_ALIGN: usize = 16;

/// Bytes of each name in `qf_kernels`, the terminating NUL included.
pub const QF_KERNEL_NAME_BYTES: usize = 48;

/// A model: declare one (static, global or on the stack; no allocation is needed) and fill it
/// with `qf_model_init`. Its contents are private. It holds a pointer to the blob, not a copy:
/// the blob must stay valid and unchanged as long as the model is used. A `qf_model` may be
/// copied with `memcpy` or assignment once initialized; the copy uses the same blob.
#[repr(C)]
pub struct qf_model {
    /// Private: the model and a tag `qf_model_init` writes. Alignment 8.
    pub opaque: [u64; QF_MODEL_WORDS],
}

/// An image's cross-attention keys and values, made once by `qf_encode_image` for several
/// instructions (`qf_forward_encoded`). Its contents are private; it points into the caller's
/// cache buffer, which must stay valid and unchanged as long as the encoded image is used.
#[repr(C)]
pub struct qf_encoded_image {
    /// Private: the encoded image and a tag. Alignment 8.
    pub opaque: [u64; QF_ENCODED_IMAGE_WORDS],
}

/// What `qf_model_init` keeps in a `qf_model`.
#[repr(C)]
struct ModelSlot {
    tag: u64,
    model: Model<'static>,
}

/// What `qf_encode_image` keeps in a `qf_encoded_image`.
#[repr(C)]
struct EncodedSlot {
    tag: u64,
    /// The cache buffer the encoded image reads (for the overlap check of a forward).
    cache: usize,
    cache_len: usize,
    encoded: EncodedImage<'static>,
}

/// Written last by `qf_model_init` ("QFMODEL1"); zero while (and after a failed) init.
const MODEL_TAG: u64 = u64::from_le_bytes(*b"QFMODEL1");
/// Written last by `qf_encode_image` ("QFENCIM1").
const ENCODED_TAG: u64 = u64::from_le_bytes(*b"QFENCIM1");

const _: () = assert!(size_of::<ModelSlot>() <= size_of::<qf_model>());
const _: () = assert!(align_of::<ModelSlot>() <= align_of::<qf_model>());
const _: () = assert!(size_of::<EncodedSlot>() <= size_of::<qf_encoded_image>());
const _: () = assert!(align_of::<EncodedSlot>() <= align_of::<qf_encoded_image>());

// ---- Plain data the API returns ----

/// The model's config (`qf_model_config`), as the blob's header states it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct qf_config {
    /// Q-Former layers L.
    pub num_layers: u32,
    /// Hidden width d.
    pub hidden: u32,
    /// Attention heads.
    pub num_heads: u32,
    /// Feed-forward width.
    pub intermediate: u32,
    /// Cross-attention in every layer whose index is a multiple of this.
    pub cross_attention_frequency: u32,
    /// Image feature width d_v.
    pub encoder_hidden: u32,
    /// Learned queries N.
    pub num_queries: u32,
    /// Most image tokens M the arena is planned for.
    pub max_image_tokens: u32,
    /// Language projection width d_llm (0: none).
    pub projection_dim: u32,
    /// Feed-forward activation: `QF_ACTIVATION_GELU`, `QF_ACTIVATION_GELU_TANH` or `QF_ACTIVATION_RELU`.
    pub activation: u32,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f32,
    /// Longest instruction in tokens (InstructBLIP; 0: the blob has no text parts).
    pub max_text_tokens: u32,
    /// Vocabulary size (0 without text parts).
    pub vocab_size: u32,
    /// Bytes of the vocabulary's tokens (0 without text parts).
    pub vocab_bytes: u32,
    /// Weight storage: `QF_PRECISION_F32`, `QF_PRECISION_FP16` or `QF_PRECISION_INT8`.
    pub precision: u32,
    /// int8 group size (values per scale).
    pub group_size: u32,
}

/// `qf_config.activation`: exact GELU (BLIP-2's).
pub const QF_ACTIVATION_GELU: u32 = 0;
/// `qf_config.activation`: tanh-approximated GELU.
pub const QF_ACTIVATION_GELU_TANH: u32 = 1;
/// `qf_config.activation`: ReLU.
pub const QF_ACTIVATION_RELU: u32 = 2;
/// `qf_config.precision`: f32 weights.
pub const QF_PRECISION_F32: u32 = 0;
/// `qf_config.precision`: fp16 weights.
pub const QF_PRECISION_FP16: u32 = 1;
/// `qf_config.precision`: int8 weights with group-wise scales.
pub const QF_PRECISION_INT8: u32 = 2;

/// The names of the kernels a model runs with (`qf_model_kernels`), NUL-terminated, e.g.
/// `dsp_gemm_q8_smlad_4x1` on a Cortex-M4, `helium_gemm_q8_vmladav_2x4` on a Cortex-M55.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct qf_kernels {
    /// The int8 GEMM.
    pub q8: [c_char; QF_KERNEL_NAME_BYTES],
    /// The f32/fp16 GEMM.
    pub f: [c_char; QF_KERNEL_NAME_BYTES],
    /// The activation quantizer.
    pub quant: [c_char; QF_KERNEL_NAME_BYTES],
}

/// Sizes read from a blob's header alone (`qf_header_sizes`): no checksum, no table, so it
/// is cheap and needs no alignment; a host tool can turn them into `#define`s for a static
/// arena (see `examples/tools/qf_sizes.c`). `qf_model_init` still validates the whole blob.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct qf_sizes {
    /// Bytes the header declares for the whole blob.
    pub blob_bytes: usize,
    /// Arena bytes a forward needs (= `qf_model_arena_bytes`).
    pub arena_bytes: usize,
    /// Image feature width d_v (= `qf_model_image_width`).
    pub image_width: usize,
    /// Most image tokens M.
    pub max_image_tokens: usize,
    /// Floats of the query output, N * d (= `qf_model_output_len`).
    pub output_len: usize,
    /// Floats of the projection, N * d_llm, 0 without one (= `qf_model_projected_len`).
    pub projected_len: usize,
    /// Longest instruction in tokens, 0 without text parts.
    pub max_text_tokens: usize,
}

/// What `qf_tokenize` wrote.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct qf_tokenized {
    /// Ids written, `[CLS]` and `[SEP]` included.
    pub len: usize,
    /// Ids before truncation (`len` unless the text was truncated to fit).
    pub truncated_from: usize,
}

// ---- Guards and checks ----

/// Runs `f`, turning a panic into [`QF_ERR_PANIC`] (hosted targets). No input should panic;
/// this keeps a bug from unwinding into C, which is undefined behaviour.
#[cfg(not(target_os = "none"))]
fn guard(f: impl FnOnce() -> qf_status) -> qf_status {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(QF_ERR_PANIC)
}

/// Runs `f` (bare metal: a panic goes to the panic handler, which never returns).
#[cfg(target_os = "none")]
fn guard(f: impl FnOnce() -> qf_status) -> qf_status {
    f()
}

/// [`guard`] for the functions that return a value: `fallback` on a panic.
#[cfg(not(target_os = "none"))]
fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// [`guard`] for the functions that return a value.
#[cfg(target_os = "none")]
fn guard_value<T>(_fallback: T, f: impl FnOnce() -> T) -> T {
    f()
}

/// `Err(QF_ERR_NULL)` for NULL, `Err(QF_ERR_MISALIGNED)` when `p` is not aligned for `T`.
fn check_ptr<T>(p: *const T) -> Result<(), qf_status> {
    if p.is_null() {
        Err(QF_ERR_NULL)
    } else if !(p as usize).is_multiple_of(align_of::<T>()) {
        Err(QF_ERR_MISALIGNED)
    } else {
        Ok(())
    }
}

/// The model in `model`'s storage, when `qf_model_init` filled it.
///
/// # Safety
/// `model` is NULL or points to `QF_MODEL_BYTES` readable bytes (a `qf_model`); if it holds
/// the tag, `qf_model_init` wrote the model after it and its blob is still valid.
unsafe fn model_ref<'m>(model: *const qf_model) -> Result<&'m Model<'static>, qf_status> {
    check_ptr(model)?;
    let slot = model.cast::<ModelSlot>();
    // SAFETY: `model` is non-null and aligned for `qf_model`, whose alignment (8) is at least
    // `ModelSlot`'s (asserted above), and points to a `qf_model` (the caller's contract), so
    // reading its first 8 bytes is in bounds. Volatile: the caller's storage may never have
    // been written by Rust (a C variable), and the tag is what tells.
    let tag = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*slot).tag)) };
    if tag != MODEL_TAG {
        return Err(QF_ERR_NOT_INITIALIZED);
    }
    // SAFETY: the tag is written only after a complete `ModelSlot` (`qf_model_init`), so
    // the model field is initialized; it is never written through a shared reference.
    Ok(unsafe { &(*slot).model })
}

/// A `[T]` of `len` elements at `p`, which must be non-null and aligned.
///
/// # Safety
/// `p` points to `len` readable `T`s that nothing writes for `'a`.
unsafe fn slice<'a, T>(p: *const T, len: usize) -> Result<&'a [T], qf_status> {
    check_ptr(p)?;
    if len.checked_mul(size_of::<T>()).is_none_or(|b| b > isize::MAX as usize) {
        return Err(QF_ERR_BUFFER_SIZE);
    }
    // SAFETY: non-null, aligned (checked), `len * size_of::<T>()` fits `isize` (checked), and
    // the memory is readable and not written for `'a` (the caller's contract).
    Ok(unsafe { core::slice::from_raw_parts(p, len) })
}

/// A `&mut [T]` of `len` elements at `p`, which must be non-null and aligned.
///
/// # Safety
/// `p` points to `len` writable `T`s that nothing else reads or writes for `'a`.
unsafe fn slice_mut<'a, T>(p: *mut T, len: usize) -> Result<&'a mut [T], qf_status> {
    check_ptr(p)?;
    if len.checked_mul(size_of::<T>()).is_none_or(|b| b > isize::MAX as usize) {
        return Err(QF_ERR_BUFFER_SIZE);
    }
    // SAFETY: as in `slice`; exclusive for `'a` by the caller's contract and [`no_overlap`].
    Ok(unsafe { core::slice::from_raw_parts_mut(p, len) })
}

/// A buffer's address range, for [`no_overlap`].
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    bytes: usize,
    written: bool,
}

impl Span {
    fn of<T>(p: *const T, len: usize, written: bool) -> Span {
        Span { start: p as usize, bytes: len.saturating_mul(size_of::<T>()), written }
    }
}

/// `Err(QF_ERR_OVERLAP)` when a buffer the call writes overlaps any other buffer of the call.
fn no_overlap(spans: &[Span]) -> Result<(), qf_status> {
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            let meet = a.bytes > 0
                && b.bytes > 0
                && a.start < b.start.saturating_add(b.bytes)
                && b.start < a.start.saturating_add(a.bytes);
            if meet && (a.written || b.written) {
                return Err(QF_ERR_OVERLAP);
            }
        }
    }
    Ok(())
}

/// `Ok(())` as `QF_OK`, an error as its status.
fn done(r: Result<(), qf_status>) -> qf_status {
    match r {
        Ok(()) => QF_OK,
        Err(s) => s,
    }
}

/// A core error as a status.
fn core_err(e: Error) -> qf_status {
    status_of(&e)
}

// ---- The model ----

/// Validates the blob (`blob_len` bytes at `blob`, 16-byte aligned: the whole `.qfb` file,
/// e.g. in flash) and fills `model`. It checks the CRC-32 of the whole blob and every tensor,
/// so it reads every byte once (3.7 M instructions for the 814 KiB MCU model on a Cortex-M55).
/// The model points into the blob: keep the blob valid and unchanged as long as `model` is
/// used. On failure `model` is left not initialized (every other call on it returns
/// `QF_ERR_NOT_INITIALIZED` or 0).
///
/// # Safety
/// `model` is NULL or points to a writable `qf_model`; `blob` is NULL or points to `blob_len`
/// readable bytes that stay valid and unchanged as long as `model` (or a copy) is used.
#[no_mangle]
pub unsafe extern "C" fn qf_model_init(model: *mut qf_model, blob: *const c_void, blob_len: usize) -> qf_status {
    guard(|| {
        done((|| {
            check_ptr(model)?;
            let slot = model.cast::<ModelSlot>();
            // SAFETY: `model` is non-null, aligned (checked) and writable (the contract): the
            // tag goes to zero first, so a model that fails to load reads as not initialized.
            unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).tag), 0) };
            if blob.is_null() {
                return Err(QF_ERR_NULL);
            }
            // Any alignment here: `Model::from_blob` reports a blob that is not 16-byte aligned.
            // SAFETY: `blob` is non-null and `blob_len` bytes are readable and unchanged for as
            // long as the model is used (the contract), which `'static` stands for here.
            let bytes: &'static [u8] = unsafe { slice(blob.cast::<u8>(), blob_len)? };
            let m = Model::from_blob(bytes).map_err(core_err)?;
            let m = with_best_kernels(m);
            // SAFETY: `slot` is valid for writes of a `ModelSlot` (it fits a `qf_model`, asserted
            // at compile time); the model is written before the tag that marks it.
            unsafe {
                core::ptr::write(core::ptr::addr_of_mut!((*slot).model), m);
                core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).tag), MODEL_TAG);
            }
            Ok(())
        })())
    })
}

/// Hosted targets: the best kernels this CPU runs (bit-identical int8 output for every one).
#[cfg(not(target_os = "none"))]
fn with_best_kernels(m: Model<'static>) -> Model<'static> {
    m.with_kernels(qformer_core::kernels::Kernels::detected())
}

/// Bare metal: the kernels compiled for the target (`Kernels::COMPILED`, what `from_blob` set).
#[cfg(target_os = "none")]
fn with_best_kernels(m: Model<'static>) -> Model<'static> {
    m
}

/// Reads `f` of an initialized model, 0 for anything else.
///
/// # Safety
/// As for [`model_ref`].
unsafe fn model_value(model: *const qf_model, f: impl FnOnce(&Model<'static>) -> usize) -> usize {
    guard_value(0, || {
        // SAFETY: forwarded from the caller.
        match unsafe { model_ref(model) } {
            Ok(m) => f(m),
            Err(_) => 0,
        }
    })
}

/// Exact bytes of the arena `qf_forward` needs (0 if `model` is not initialized).
///
/// # Safety
/// `model` is NULL or points to a `qf_model`.
#[no_mangle]
pub unsafe extern "C" fn qf_model_arena_bytes(model: *const qf_model) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe { model_value(model, |m| m.arena_bytes()) }
}

/// Floats per image token, d_v (0 if `model` is not initialized).
///
/// # Safety
/// `model` is NULL or points to a `qf_model`.
#[no_mangle]
pub unsafe extern "C" fn qf_model_image_width(model: *const qf_model) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe { model_value(model, |m| m.config().encoder_hidden as usize) }
}

/// Most image tokens M a forward accepts (0 if `model` is not initialized).
///
/// # Safety
/// `model` is NULL or points to a `qf_model`.
#[no_mangle]
pub unsafe extern "C" fn qf_model_max_image_tokens(model: *const qf_model) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe { model_value(model, |m| m.config().max_image_tokens as usize) }
}

/// Floats of the query output, N * d (0 if `model` is not initialized).
///
/// # Safety
/// `model` is NULL or points to a `qf_model`.
#[no_mangle]
pub unsafe extern "C" fn qf_model_output_len(model: *const qf_model) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe { model_value(model, |m| m.config().num_queries as usize * m.config().hidden as usize) }
}

/// Floats of the language projection, N * d_llm (0 without a projection, or if `model` is not
/// initialized).
///
/// # Safety
/// `model` is NULL or points to a `qf_model`.
#[no_mangle]
pub unsafe extern "C" fn qf_model_projected_len(model: *const qf_model) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe { model_value(model, |m| m.config().num_queries as usize * m.config().projection_dim as usize) }
}

/// Longest instruction in tokens (InstructBLIP), 0 for a blob without text parts (BLIP-2,
/// MiniGPT-4) or if `model` is not initialized.
///
/// # Safety
/// `model` is NULL or points to a `qf_model`.
#[no_mangle]
pub unsafe extern "C" fn qf_model_max_text_tokens(model: *const qf_model) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe { model_value(model, |m| m.config().max_text_tokens as usize) }
}

/// Bytes of the cache buffer `qf_encode_image` writes (0 if `model` is not initialized).
///
/// # Safety
/// `model` is NULL or points to a `qf_model`.
#[no_mangle]
pub unsafe extern "C" fn qf_model_encoded_image_bytes(model: *const qf_model) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe { model_value(model, |m| m.encoded_image_bytes()) }
}

/// The config of `model` into `*config`.
///
/// # Safety
/// `model` is NULL or points to a `qf_model`; `config` is NULL or points to a writable
/// `qf_config`.
#[no_mangle]
pub unsafe extern "C" fn qf_model_config(model: *const qf_model, config: *mut qf_config) -> qf_status {
    guard(|| {
        done((|| {
            // SAFETY: forwarded from the caller.
            let m = unsafe { model_ref(model)? };
            check_ptr(config)?;
            let c = m.config();
            let value = qf_config {
                num_layers: c.num_layers,
                hidden: c.hidden,
                num_heads: c.num_heads,
                intermediate: c.intermediate,
                cross_attention_frequency: c.cross_attention_frequency,
                encoder_hidden: c.encoder_hidden,
                num_queries: c.num_queries,
                max_image_tokens: c.max_image_tokens,
                projection_dim: c.projection_dim,
                activation: c.activation as u32,
                layer_norm_eps: c.layer_norm_eps,
                max_text_tokens: c.max_text_tokens,
                vocab_size: c.vocab_size,
                vocab_bytes: c.vocab_bytes,
                precision: m.precision() as u32,
                group_size: m.header().group_size,
            };
            // SAFETY: non-null, aligned (checked) and writable (the contract).
            unsafe { config.write(value) };
            Ok(())
        })())
    })
}

/// `name` as a NUL-terminated C string in `N` bytes (cut at `N - 1` bytes).
fn c_name<const N: usize>(name: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    for (o, &b) in out.iter_mut().zip(name.as_bytes().iter().take(N - 1)) {
        *o = b as c_char;
    }
    out
}

/// The names of the kernels `model` runs with into `*kernels`: on bare metal those compiled
/// for the target (`dsp_*` on a Cortex-M4/M7, `helium_*` on a Cortex-M55 built with the
/// `helium` feature), on Linux the best this CPU runs (detected by `qf_model_init`).
///
/// # Safety
/// `model` is NULL or points to a `qf_model`; `kernels` is NULL or points to a writable
/// `qf_kernels`.
#[no_mangle]
pub unsafe extern "C" fn qf_model_kernels(model: *const qf_model, kernels: *mut qf_kernels) -> qf_status {
    guard(|| {
        done((|| {
            // SAFETY: forwarded from the caller.
            let m = unsafe { model_ref(model)? };
            check_ptr(kernels)?;
            let k = m.kernels();
            let value = qf_kernels { q8: c_name(k.q8.name()), f: c_name(k.f.name()), quant: c_name(k.quant.name()) };
            // SAFETY: non-null, aligned (checked) and writable (the contract).
            unsafe { kernels.write(value) };
            Ok(())
        })())
    })
}

/// The sizes a blob's header states, without validating the blob (no checksum, no table;
/// any alignment): for a build step that sizes a static arena, or to check a flash region
/// before `qf_model_init`. `blob_len` may be just the header's 128 bytes.
///
/// # Safety
/// `blob` is NULL or points to `blob_len` readable bytes; `sizes` is NULL or points to a
/// writable `qf_sizes`.
#[no_mangle]
pub unsafe extern "C" fn qf_header_sizes(blob: *const c_void, blob_len: usize, sizes: *mut qf_sizes) -> qf_status {
    guard(|| {
        done((|| {
            check_ptr(sizes)?;
            if blob.is_null() {
                return Err(QF_ERR_NULL);
            }
            // SAFETY: non-null; `blob_len` readable bytes (the contract).
            let bytes = unsafe { slice(blob.cast::<u8>(), blob_len)? };
            let h = Header::parse(bytes).map_err(core_err)?;
            let c = h.config().map_err(core_err)?;
            let value = qf_sizes {
                blob_bytes: h.total_bytes as usize,
                arena_bytes: h.arena_bytes().map_err(core_err)?,
                image_width: c.encoder_hidden as usize,
                max_image_tokens: c.max_image_tokens as usize,
                output_len: c.num_queries as usize * c.hidden as usize,
                projected_len: c.num_queries as usize * c.projection_dim as usize,
                max_text_tokens: c.max_text_tokens as usize,
            };
            // SAFETY: non-null, aligned (checked) and writable (the contract).
            unsafe { sizes.write(value) };
            Ok(())
        })())
    })
}

// ---- Forward ----

/// The instruction arguments of the forwards: ids and an optional mask.
#[derive(Clone, Copy)]
struct TextArgs {
    ids: *const u32,
    len: usize,
    mask: *const u8,
}

/// The caller's output buffers and arena.
#[derive(Clone, Copy)]
struct Outputs {
    arena: *mut c_void,
    arena_len: usize,
    out: *mut f32,
    out_len: usize,
    projected: *mut f32,
    projected_len: usize,
}

/// The image of a forward: features, or an encoded image with its cache buffer's span.
#[derive(Clone, Copy)]
enum ImageArg<'e> {
    Features(*const f32, usize),
    Encoded(&'e EncodedSlot),
}

/// Checks every pointer and length against `m`, then runs the forward.
///
/// # Safety
/// Each pointer of `image`, `text` and `outputs` is NULL or points to as many elements as its
/// length says (the arena: `arena_len` bytes), readable (inputs) or writable (outputs and
/// arena), and nothing else uses them during the call.
unsafe fn forward_checked(
    m: &Model<'static>,
    image: ImageArg<'_>,
    text: Option<TextArgs>,
    o: Outputs,
) -> Result<(), qf_status> {
    let c = m.config();
    let mut spans = [Span { start: 0, bytes: 0, written: false }; 7];
    let image_slice = match image {
        ImageArg::Features(p, tokens) => {
            let max = c.max_image_tokens as usize;
            if tokens == 0 || tokens > max {
                return Err(core_err(Error::ImageTokens { max, found: tokens }));
            }
            let len = tokens * c.encoder_hidden as usize;
            spans[0] = Span::of(p, len, false);
            // SAFETY: `len` floats at `p`, read only (the contract).
            Some(unsafe { slice(p, len)? })
        }
        ImageArg::Encoded(_) => None,
    };
    let text = match text {
        None => None,
        Some(t) => {
            if c.max_text_tokens == 0 {
                return Err(core_err(Error::NoText));
            }
            let max = c.max_text_tokens as usize;
            if t.len > max {
                return Err(core_err(Error::TextTokens { max, found: t.len }));
            }
            spans[1] = Span::of(t.ids, t.len, false);
            // SAFETY: `t.len` ids at `t.ids`, read only (the contract).
            let ids = unsafe { slice(t.ids, t.len)? };
            let mask = if t.mask.is_null() {
                None
            } else {
                spans[2] = Span::of(t.mask, t.len, false);
                // SAFETY: as many mask bytes as ids (the contract).
                Some(unsafe { slice(t.mask, t.len)? })
            };
            Some(Text { ids, mask })
        }
    };
    let n = c.num_queries as usize;
    let want_out = n * c.hidden as usize;
    if o.out_len != want_out {
        check_ptr(o.out)?;
        return Err(core_err(Error::BufferSize {
            buffer: qformer_core::error::Buffer::Output,
            expected: want_out,
            found: o.out_len,
        }));
    }
    spans[3] = Span::of(o.out, o.out_len, true);
    let projected_len = if o.projected.is_null() {
        0
    } else {
        if c.projection_dim == 0 {
            return Err(core_err(Error::NoProjection));
        }
        let want = n * c.projection_dim as usize;
        if o.projected_len != want {
            check_ptr(o.projected)?;
            return Err(core_err(Error::BufferSize {
                buffer: qformer_core::error::Buffer::Projected,
                expected: want,
                found: o.projected_len,
            }));
        }
        spans[4] = Span::of(o.projected, want, true);
        want
    };
    // The arena as long as the plan needs (a shorter one is the core's ArenaTooSmall).
    let arena_len = o.arena_len.min(m.arena_bytes());
    spans[5] = Span::of(o.arena.cast::<u8>(), arena_len, true);
    if let ImageArg::Encoded(e) = image {
        spans[6] = Span { start: e.cache, bytes: e.cache_len, written: false };
    }
    if o.arena.is_null() {
        return Err(QF_ERR_NULL);
    }
    no_overlap(&spans)?;
    // SAFETY: `arena_len <= o.arena_len` writable bytes, not overlapping any other buffer of
    // the call (checked), used by nothing else during it (the contract).
    let arena = unsafe { slice_mut(o.arena.cast::<u8>(), arena_len)? };
    // SAFETY: `want_out` writable floats, not overlapping (checked).
    let out = unsafe { slice_mut(o.out, want_out)? };
    let projected = if o.projected.is_null() {
        None
    } else {
        // SAFETY: `projected_len` writable floats, not overlapping (checked).
        Some(unsafe { slice_mut(o.projected, projected_len)? })
    };
    let image = match (image, image_slice) {
        (_, Some(f)) => Image::Features(f),
        (ImageArg::Encoded(e), None) => Image::Encoded(&e.encoded),
        (ImageArg::Features(..), None) => unreachable!("features were sliced above"),
    };
    m.forward_with(image, text, arena, out, projected, &Sequential, &mut |_: usize, _: &[f32]| {}).map_err(core_err)
}

/// Runs the Q-Former on one image without an instruction: `image` holds `tokens` x d_v
/// floats (row-major, `qf_model_image_width` per token, 4-byte aligned, finite), `arena`
/// `arena_len` bytes of scratch (16-byte aligned, at least `qf_model_arena_bytes`; its
/// contents need no initialization and mean nothing afterwards), `out` exactly
/// `qf_model_output_len` floats (`[N, d]`), `projected` NULL or exactly
/// `qf_model_projected_len` floats (`[N, d_llm]`; `projected_len` is ignored when it is NULL).
/// No buffer may overlap another. On an InstructBLIP blob this is the queries alone
/// (transformers' `InstructBlipQFormerModel` without `input_ids`). On an error the outputs
/// are unspecified.
///
/// # Safety
/// `model` is NULL or points to a `qf_model`; every other pointer is NULL or points to as
/// many elements as its length says (`arena`: `arena_len` bytes), readable (`image`) or
/// writable (`arena`, `out`, `projected`), and no other thread uses the arena or the outputs
/// during the call.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qf_forward(
    model: *const qf_model,
    image: *const f32,
    tokens: usize,
    arena: *mut c_void,
    arena_len: usize,
    out: *mut f32,
    out_len: usize,
    projected: *mut f32,
    projected_len: usize,
) -> qf_status {
    guard(|| {
        done((|| {
            // SAFETY: forwarded from the caller.
            let m = unsafe { model_ref(model)? };
            let outputs = Outputs { arena, arena_len, out, out_len, projected, projected_len };
            // SAFETY: forwarded from the caller.
            unsafe { forward_checked(m, ImageArg::Features(image, tokens), None, outputs) }
        })())
    })
}

/// `qf_forward` with an InstructBLIP instruction: `ids` holds `ids_len` token ids (4-byte
/// aligned; `[CLS] ... [SEP]` as `qf_tokenize` or transformers' `InstructBlipProcessor` give
/// them, at most `qf_model_max_text_tokens`), `mask` is NULL (every id attended) or `ids_len`
/// bytes of 1 (attended) and 0 (padding). `QF_ERR_NO_TEXT` for a blob without text parts.
///
/// # Safety
/// As for `qf_forward`; `ids` points to `ids_len` readable `uint32_t`, `mask` is NULL or
/// points to `ids_len` readable bytes.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qf_forward_text(
    model: *const qf_model,
    image: *const f32,
    tokens: usize,
    ids: *const u32,
    ids_len: usize,
    mask: *const u8,
    arena: *mut c_void,
    arena_len: usize,
    out: *mut f32,
    out_len: usize,
    projected: *mut f32,
    projected_len: usize,
) -> qf_status {
    guard(|| {
        done((|| {
            // SAFETY: forwarded from the caller.
            let m = unsafe { model_ref(model)? };
            let outputs = Outputs { arena, arena_len, out, out_len, projected, projected_len };
            let text = TextArgs { ids, len: ids_len, mask };
            // SAFETY: forwarded from the caller.
            unsafe { forward_checked(m, ImageArg::Features(image, tokens), Some(text), outputs) }
        })())
    })
}

/// Tokenizes the instruction `text` (`text_len` bytes of UTF-8, no NUL needed) with the blob's
/// own vocabulary, as transformers' `BertTokenizer` does: `[CLS] ... [SEP]` into `ids`
/// (`ids_cap` ids, 4-byte aligned), truncated to fit on the side the blob's tokenizer
/// truncates; `*result` (may be NULL) gets the count written and the count before
/// truncation. `QF_ERR_NO_TEXT` for a blob without text parts, `QF_ERR_UTF8` for text that
/// is not UTF-8.
///
/// # Safety
/// `model` is NULL or points to a `qf_model`; `text` is NULL or points to `text_len` readable
/// bytes; `ids` is NULL or points to `ids_cap` writable `uint32_t`; `result` is NULL or points
/// to a writable `qf_tokenized`.
#[no_mangle]
pub unsafe extern "C" fn qf_tokenize(
    model: *const qf_model,
    text: *const c_char,
    text_len: usize,
    ids: *mut u32,
    ids_cap: usize,
    result: *mut qf_tokenized,
) -> qf_status {
    guard(|| {
        done((|| {
            // SAFETY: forwarded from the caller.
            let m = unsafe { model_ref(model)? };
            if !result.is_null() {
                check_ptr(result)?;
            }
            // SAFETY: `text_len` readable bytes (the contract).
            let bytes = unsafe { slice(text.cast::<u8>(), text_len)? };
            let s = core::str::from_utf8(bytes).map_err(|_| QF_ERR_UTF8)?;
            no_overlap(&[Span::of(bytes.as_ptr(), bytes.len(), false), Span::of(ids, ids_cap, true)])?;
            // SAFETY: `ids_cap` writable ids, not overlapping the text (checked).
            let out = unsafe { slice_mut(ids, ids_cap)? };
            let t = m.tokenize(s, out).map_err(core_err)?;
            if !result.is_null() {
                // SAFETY: non-null, aligned (checked) and writable (the contract).
                unsafe { result.write(qf_tokenized { len: t.len, truncated_from: t.truncated_from }) };
            }
            Ok(())
        })())
    })
}

/// Projects the cross-attention keys and values of one image (`tokens` x d_v floats at
/// `image`) once into `cache` (`cache_len` bytes, 16-byte aligned, at least
/// `qf_model_encoded_image_bytes`), and fills `*encoded`, for several instructions about the
/// same image (`qf_forward_encoded`: bit-identical to `qf_forward_text` on the features).
/// `arena` is scratch as for `qf_forward`. `encoded` points into `cache`: keep the cache valid
/// and unchanged as long as `encoded` is used.
///
/// # Safety
/// `model` is NULL or points to a `qf_model`; `image` to `tokens * qf_model_image_width`
/// readable floats; `cache` to `cache_len` writable bytes that stay valid and unchanged as
/// long as `encoded` is used; `arena` to `arena_len` writable bytes; `encoded` is NULL or
/// points to a writable `qf_encoded_image`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qf_encode_image(
    model: *const qf_model,
    image: *const f32,
    tokens: usize,
    cache: *mut c_void,
    cache_len: usize,
    arena: *mut c_void,
    arena_len: usize,
    encoded: *mut qf_encoded_image,
) -> qf_status {
    guard(|| {
        done((|| {
            // SAFETY: forwarded from the caller.
            let m = unsafe { model_ref(model)? };
            check_ptr(encoded)?;
            let slot = encoded.cast::<EncodedSlot>();
            // SAFETY: non-null, aligned (checked), writable (the contract): not encoded until
            // the tag is written last.
            unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).tag), 0) };
            let c = m.config();
            let max = c.max_image_tokens as usize;
            if tokens == 0 || tokens > max {
                return Err(core_err(Error::ImageTokens { max, found: tokens }));
            }
            let len = tokens * c.encoder_hidden as usize;
            if image.is_null() || cache.is_null() || arena.is_null() {
                return Err(QF_ERR_NULL);
            }
            let cache_len = cache_len.min(m.encoded_image_bytes());
            let arena_len = arena_len.min(m.arena_bytes());
            no_overlap(&[
                Span::of(image, len, false),
                Span::of(cache.cast::<u8>(), cache_len, true),
                Span::of(arena.cast::<u8>(), arena_len, true),
                Span::of(encoded, 1, true),
            ])?;
            // SAFETY: `len` readable floats (the contract).
            let features = unsafe { slice(image, len)? };
            // SAFETY: writable, not overlapping (checked), valid as long as `encoded` is used
            // (the contract), which `'static` stands for.
            let cache: &'static mut [u8] = unsafe { slice_mut(cache.cast::<u8>(), cache_len)? };
            let cache_at = cache.as_ptr() as usize;
            // SAFETY: `arena_len` writable bytes, not overlapping (checked).
            let arena = unsafe { slice_mut(arena.cast::<u8>(), arena_len)? };
            let e = m.encode_image(features, cache, arena, &Sequential).map_err(core_err)?;
            // SAFETY: `slot` is valid for writes of an `EncodedSlot` (it fits, asserted at
            // compile time); the tag that marks it is written after it.
            unsafe {
                core::ptr::write(core::ptr::addr_of_mut!((*slot).cache), cache_at);
                core::ptr::write(core::ptr::addr_of_mut!((*slot).cache_len), cache_len);
                core::ptr::write(core::ptr::addr_of_mut!((*slot).encoded), e);
                core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).tag), ENCODED_TAG);
            }
            Ok(())
        })())
    })
}

/// `qf_forward_text` on an image encoded by `qf_encode_image`: the same output bytes, without
/// projecting the image's keys and values again. `ids` may be NULL with `ids_len` 0 for no
/// instruction (the queries alone). `QF_ERR_FOREIGN_IMAGE` if another model encoded it.
///
/// # Safety
/// As for `qf_forward_text`; `encoded` is NULL or points to a `qf_encoded_image` whose cache
/// buffer is still valid and unchanged.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qf_forward_encoded(
    model: *const qf_model,
    encoded: *const qf_encoded_image,
    ids: *const u32,
    ids_len: usize,
    mask: *const u8,
    arena: *mut c_void,
    arena_len: usize,
    out: *mut f32,
    out_len: usize,
    projected: *mut f32,
    projected_len: usize,
) -> qf_status {
    guard(|| {
        done((|| {
            // SAFETY: forwarded from the caller.
            let m = unsafe { model_ref(model)? };
            check_ptr(encoded)?;
            let slot = encoded.cast::<EncodedSlot>();
            // SAFETY: non-null, aligned (checked), a `qf_encoded_image` (the contract).
            let tag = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*slot).tag)) };
            if tag != ENCODED_TAG {
                return Err(QF_ERR_NOT_INITIALIZED);
            }
            // SAFETY: the tag is written after a complete `EncodedSlot` (`qf_encode_image`).
            let e = unsafe { &*slot };
            let text = if ids.is_null() && ids_len == 0 { None } else { Some(TextArgs { ids, len: ids_len, mask }) };
            let outputs = Outputs { arena, arena_len, out, out_len, projected, projected_len };
            // SAFETY: forwarded from the caller.
            unsafe { forward_checked(m, ImageArg::Encoded(e), text, outputs) }
        })())
    })
}

// ---- Strings ----

/// A short English description of `status` (a static NUL-terminated string; never NULL:
/// `"unknown status"` for a value this library does not define).
#[no_mangle]
pub extern "C" fn qf_status_str(status: qf_status) -> *const c_char {
    status::describe(status).as_ptr()
}

/// The library's version, e.g. `"0.1.0"` (static, NUL-terminated).
#[no_mangle]
pub extern "C" fn qf_version() -> *const c_char {
    const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(s) => s,
        Err(_) => c"?",
    };
    VERSION.as_ptr()
}

// ---- Bare metal: the panic handler ----

#[cfg(all(target_os = "none", feature = "panic-handler"))]
mod panic {
    extern "C" {
        /// The firmware's panic hook (header: `qf_panic_handler`); weak default below.
        fn qf_panic_handler() -> !;
    }

    /// No input panics (every problem is a status); a panic would be a bug in the library. It
    /// cannot unwind into C (the bare-metal targets abort on panic): it calls
    /// `qf_panic_handler`, which the firmware may define (log, reset); the library's weak
    /// default executes a permanently undefined instruction, which faults (HardFault on
    /// Cortex-M, a synchronous exception on AArch64).
    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        // SAFETY: `qf_panic_handler` takes nothing and never returns (its contract in the
        // header); the weak default below is such a function.
        unsafe { qf_panic_handler() }
    }

    #[cfg(target_arch = "arm")]
    core::arch::global_asm!(
        ".section .text.qf_panic_handler,\"ax\",%progbits",
        ".weak qf_panic_handler",
        ".type qf_panic_handler,%function",
        ".thumb_func",
        "qf_panic_handler:",
        "1:",
        "udf #0",
        "b 1b",
        ".size qf_panic_handler, . - qf_panic_handler",
    );

    #[cfg(target_arch = "aarch64")]
    core::arch::global_asm!(
        ".section .text.qf_panic_handler,\"ax\",%progbits",
        ".weak qf_panic_handler",
        ".type qf_panic_handler,%function",
        "qf_panic_handler:",
        "1:",
        "udf #0",
        "b 1b",
        ".size qf_panic_handler, . - qf_panic_handler",
    );
}

#[cfg(test)]
mod tests;
