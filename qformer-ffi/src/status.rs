//! The status codes: one per `qformer_core::Error` variant, plus the C boundary's own (NULL,
//! misalignment, overlap, a model not initialized, text that is not UTF-8, a caught panic).

use core::ffi::CStr;

use qformer_core::Error;

/// What every fallible call returns: `QF_OK` (0) or one of the `QF_ERR_*` codes below (all
/// positive). `qf_status_str` describes each.
pub type qf_status = i32;

/// Success.
pub const QF_OK: qf_status = 0;
/// A pointer argument that must not be NULL is NULL.
pub const QF_ERR_NULL: qf_status = 1;
/// A pointer is not aligned for its type: the blob, the arena and an encoded image's cache
/// need 16 bytes, float and `uint32_t` buffers 4, `qf_model` and the other structs 8.
pub const QF_ERR_MISALIGNED: qf_status = 2;
/// A buffer the call writes overlaps another buffer of the call.
pub const QF_ERR_OVERLAP: qf_status = 3;
/// The `qf_model` (or `qf_encoded_image`) was not filled by a successful `qf_model_init`
/// (`qf_encode_image`).
pub const QF_ERR_NOT_INITIALIZED: qf_status = 4;
/// The instruction text is not valid UTF-8.
pub const QF_ERR_UTF8: qf_status = 5;
/// The library panicked (a bug; Linux only, where the panic is caught at the boundary; bare
/// metal calls `qf_panic_handler` instead). The outputs are unspecified.
pub const QF_ERR_PANIC: qf_status = 6;
/// The core returned an error this version of the C API does not know (a newer core).
pub const QF_ERR_UNKNOWN: qf_status = 7;
/// The blob is shorter than its header, or than the size its header declares.
pub const QF_ERR_TRUNCATED: qf_status = 10;
/// The blob is longer than its header declares (pass exactly the blob, not a whole flash region).
pub const QF_ERR_TRAILING_BYTES: qf_status = 11;
/// Not a qformer blob (the first 8 bytes are not `QFMRBLOB`).
pub const QF_ERR_BAD_MAGIC: qf_status = 12;
/// The blob was written for another format version (re-run quantize).
pub const QF_ERR_UNSUPPORTED_VERSION: qf_status = 13;
/// A header field that must hold a fixed value does not.
pub const QF_ERR_BAD_HEADER: qf_status = 14;
/// The CRC-32 over the blob disagrees with the stored one: the blob is corrupted.
pub const QF_ERR_CHECKSUM: qf_status = 15;
/// A config field of the header is out of range.
pub const QF_ERR_INVALID_CONFIG: qf_status = 16;
/// A size derived from the config does not fit in memory addresses.
pub const QF_ERR_SIZE_OVERFLOW: qf_status = 17;
/// The tensor table has another number of entries than the config implies.
pub const QF_ERR_TENSOR_COUNT: qf_status = 18;
/// A tensor-table entry or a tensor's contents are inconsistent (shape, dtype, bounds, a NaN
/// weight, an int8 value of -128, a bad scale, ...).
pub const QF_ERR_TENSOR: qf_status = 19;
/// The blob's vocabulary tables are inconsistent (InstructBLIP).
pub const QF_ERR_VOCAB: qf_status = 20;
/// The arena is shorter than `qf_model_arena_bytes`.
pub const QF_ERR_ARENA_TOO_SMALL: qf_status = 30;
/// A buffer has the wrong length (`out_len`, `projected_len`, a cache shorter than
/// `qf_model_encoded_image_bytes`, a length whose bytes exceed the address space).
pub const QF_ERR_BUFFER_SIZE: qf_status = 31;
/// `tokens` is 0 or more than `qf_model_max_image_tokens`.
pub const QF_ERR_IMAGE_TOKENS: qf_status = 32;
/// The image features contain NaN or infinity (the forward is not run).
pub const QF_ERR_NON_FINITE_INPUT: qf_status = 33;
/// A projection output was given to a model without a language projection.
pub const QF_ERR_NO_PROJECTION: qf_status = 34;
/// The image features are not a whole number of tokens of d_v floats.
pub const QF_ERR_IMAGE_SHAPE: qf_status = 35;
/// The hidden state overflowed to NaN or infinity (features too large for f32 arithmetic);
/// the outputs are not valid.
pub const QF_ERR_NON_FINITE_ACTIVATION: qf_status = 36;
/// An instruction was given to a blob without text parts (BLIP-2, MiniGPT-4).
pub const QF_ERR_NO_TEXT: qf_status = 37;
/// The instruction has more ids than `qf_model_max_text_tokens`.
pub const QF_ERR_TEXT_TOKENS: qf_status = 38;
/// A token id is not below the vocabulary size.
pub const QF_ERR_TOKEN_ID: qf_status = 39;
/// An attention mask value is neither 0 nor 1.
pub const QF_ERR_MASK: qf_status = 40;
/// The encoded image was made by another model.
pub const QF_ERR_FOREIGN_IMAGE: qf_status = 41;
/// The instruction cannot be tokenized into the ids given (fewer than 2, for `[CLS]` and `[SEP]`).
pub const QF_ERR_TOKENIZE: qf_status = 42;

/// The status of a core error: a distinct code per variant.
pub(crate) fn status_of(e: &Error) -> qf_status {
    match e {
        Error::Truncated { .. } => QF_ERR_TRUNCATED,
        Error::TrailingBytes { .. } => QF_ERR_TRAILING_BYTES,
        Error::BadMagic => QF_ERR_BAD_MAGIC,
        Error::UnsupportedVersion { .. } => QF_ERR_UNSUPPORTED_VERSION,
        Error::BadHeader { .. } => QF_ERR_BAD_HEADER,
        Error::ChecksumMismatch { .. } => QF_ERR_CHECKSUM,
        Error::Misaligned { .. } => QF_ERR_MISALIGNED,
        Error::InvalidConfig { .. } => QF_ERR_INVALID_CONFIG,
        Error::SizeOverflow => QF_ERR_SIZE_OVERFLOW,
        Error::TensorCount { .. } => QF_ERR_TENSOR_COUNT,
        Error::Tensor { .. } => QF_ERR_TENSOR,
        Error::ArenaTooSmall { .. } => QF_ERR_ARENA_TOO_SMALL,
        Error::BufferSize { .. } => QF_ERR_BUFFER_SIZE,
        Error::ImageTokens { .. } => QF_ERR_IMAGE_TOKENS,
        Error::NonFiniteInput { .. } => QF_ERR_NON_FINITE_INPUT,
        Error::NoProjection => QF_ERR_NO_PROJECTION,
        Error::ImageShape { .. } => QF_ERR_IMAGE_SHAPE,
        Error::NonFiniteActivation { .. } => QF_ERR_NON_FINITE_ACTIVATION,
        Error::NoText => QF_ERR_NO_TEXT,
        Error::TextTokens { .. } => QF_ERR_TEXT_TOKENS,
        Error::TokenId { .. } => QF_ERR_TOKEN_ID,
        Error::Mask { .. } => QF_ERR_MASK,
        Error::Vocab(_) => QF_ERR_VOCAB,
        Error::ForeignImage => QF_ERR_FOREIGN_IMAGE,
        Error::Tokenize(_) => QF_ERR_TOKENIZE,
        // `Error` is non_exhaustive: a variant added to the core after this table.
        _ => QF_ERR_UNKNOWN,
    }
}

/// Every status with its description, in code order.
pub(crate) const STATUSES: &[(qf_status, &CStr)] = &[
    (QF_OK, c"ok"),
    (QF_ERR_NULL, c"a pointer argument is NULL"),
    (QF_ERR_MISALIGNED, c"a pointer is misaligned (blob, arena and cache: 16 bytes; float and id buffers: 4)"),
    (QF_ERR_OVERLAP, c"an output buffer or the arena overlaps another buffer of the call"),
    (
        QF_ERR_NOT_INITIALIZED,
        c"the model (or encoded image) was not initialized by a successful qf_model_init (qf_encode_image)",
    ),
    (QF_ERR_UTF8, c"the instruction is not valid UTF-8"),
    (QF_ERR_PANIC, c"internal error: the library panicked (a bug; please report it)"),
    (QF_ERR_UNKNOWN, c"an error this version of the C API does not know"),
    (QF_ERR_TRUNCATED, c"blob is truncated"),
    (QF_ERR_TRAILING_BYTES, c"blob is longer than its header declares"),
    (QF_ERR_BAD_MAGIC, c"not a qformer blob (magic is not \"QFMRBLOB\")"),
    (QF_ERR_UNSUPPORTED_VERSION, c"blob format version is not supported (re-run quantize)"),
    (QF_ERR_BAD_HEADER, c"blob header field has an invalid value"),
    (QF_ERR_CHECKSUM, c"blob checksum mismatch: the blob is corrupted"),
    (QF_ERR_INVALID_CONFIG, c"invalid model config in the blob header"),
    (QF_ERR_SIZE_OVERFLOW, c"model dimensions are too large: a buffer size overflows"),
    (QF_ERR_TENSOR_COUNT, c"tensor table has another number of entries than the config implies"),
    (QF_ERR_TENSOR, c"a tensor of the blob is inconsistent (entry or contents)"),
    (QF_ERR_VOCAB, c"the blob's vocabulary is inconsistent"),
    (QF_ERR_ARENA_TOO_SMALL, c"arena too small (see qf_model_arena_bytes)"),
    (QF_ERR_BUFFER_SIZE, c"a buffer has the wrong length"),
    (QF_ERR_IMAGE_TOKENS, c"image token count is 0 or above the blob's max_image_tokens"),
    (QF_ERR_NON_FINITE_INPUT, c"image features contain NaN or infinity"),
    (QF_ERR_NO_PROJECTION, c"the model has no language projection"),
    (QF_ERR_IMAGE_SHAPE, c"image features are not a whole number of d_v-wide tokens"),
    (QF_ERR_NON_FINITE_ACTIVATION, c"the hidden state became NaN or infinite: the inputs are too large for f32"),
    (QF_ERR_NO_TEXT, c"this blob has no text parts (BLIP-2 / MiniGPT-4): it takes no instruction"),
    (QF_ERR_TEXT_TOKENS, c"the instruction has more tokens than the blob's max_text_tokens"),
    (QF_ERR_TOKEN_ID, c"a token id is not in the vocabulary"),
    (QF_ERR_MASK, c"an attention mask value is not 0 or 1"),
    (QF_ERR_FOREIGN_IMAGE, c"the encoded image was made by another model"),
    (QF_ERR_TOKENIZE, c"cannot tokenize the instruction into the ids given"),
];

/// The description of `status`.
pub(crate) fn describe(status: qf_status) -> &'static CStr {
    STATUSES.iter().find(|(s, _)| *s == status).map_or(c"unknown status", |(_, d)| d)
}
