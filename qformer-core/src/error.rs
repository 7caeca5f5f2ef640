//! The one error type of the core. Every input path returns it instead of panicking.

use core::fmt;

use crate::blob::{DType, Role};

/// Which caller-provided buffer an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffer {
    /// The weight blob.
    Blob,
    /// The scratch arena.
    Arena,
    /// The image features.
    Image,
    /// The `qformer_output` buffer.
    Output,
    /// The `projected` buffer.
    Projected,
    /// The instruction's attention mask.
    Mask,
    /// The buffer of an encoded image.
    ImageCache,
}

impl Buffer {
    const fn name(self) -> &'static str {
        match self {
            Buffer::Blob => "blob",
            Buffer::Arena => "arena",
            Buffer::Image => "image features",
            Buffer::Output => "output buffer",
            Buffer::Projected => "projection output buffer",
            Buffer::Mask => "attention mask",
            Buffer::ImageCache => "encoded image buffer",
        }
    }
}

/// What is wrong with one entry of the tensor table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorProblem {
    /// The entry names another tensor than the canonical layout puts at this index.
    Unexpected {
        /// Role the table holds.
        role: u16,
        /// Layer the table holds.
        layer: u16,
    },
    /// The shape disagrees with the header's config.
    Shape {
        /// `[rows, cols]` the config implies.
        expected: [u32; 2],
        /// `[rows, cols]` in the table.
        found: [u32; 2],
    },
    /// The dtype code is unknown, or not allowed for this tensor.
    DType(u8),
    /// The data (or scales) lie outside the blob, overlap the header or table, or are not
    /// aligned to 16 bytes.
    Bounds,
    /// The byte count disagrees with shape and dtype.
    ByteCount {
        /// Bytes implied by shape and dtype.
        expected: u32,
        /// Bytes in the table.
        found: u32,
    },
    /// The int8 group size is zero, not a multiple of 16, or differs from the one its
    /// consumer needs.
    Group(u32),
    /// Reserved bytes are not zero.
    Reserved,
    /// The data (or scales) start before the previous tensor's end: tensors are laid out in
    /// table order without overlapping.
    Overlap,
    /// An f32 or f16 value is NaN or infinite (flat index of the first).
    NonFinite(u32),
    /// An int8 value is -128 (flat index of the first); the format's int8 is -127..=127.
    Int8Range(u32),
    /// An int8 scale is negative, NaN or infinite (index of the first).
    Scale(u32),
    /// The weights fold in an input transform (a rotation of the int8 scheme) this reader
    /// does not implement.
    Transform(u8),
}

/// Everything that can go wrong in the core.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The blob is shorter than its header, or than the size its header declares.
    Truncated {
        /// Bytes required.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The blob is longer than its header declares (e.g. a flash region with trailing bytes
    /// passed whole is fine only if trimmed to `Header::total_bytes`).
    TrailingBytes {
        /// Bytes the header declares.
        declared: usize,
        /// Bytes present.
        available: usize,
    },
    /// The first 8 bytes are not `QFMRBLOB`: this is not a qformer blob.
    BadMagic,
    /// The blob was written for another format version.
    UnsupportedVersion {
        /// Version in the blob.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// A header field that must hold a fixed value does not (header size, table offset,
    /// reserved bytes, dtype codes).
    BadHeader {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// The CRC-32 over the blob disagrees with the stored one: the blob is corrupted.
    ChecksumMismatch {
        /// Checksum stored in the header.
        stored: u32,
        /// Checksum of the bytes present.
        computed: u32,
    },
    /// A buffer does not start at the required alignment.
    Misaligned {
        /// Which buffer.
        buffer: Buffer,
        /// Required alignment in bytes.
        align: usize,
    },
    /// A config field is out of range (zero, too large, or inconsistent, e.g. `hidden` not a
    /// multiple of `num_heads`).
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Its value (an `f32` field, i.e. `layer_norm_eps`, holds its bits; `Display` shows
        /// the number).
        value: u32,
    },
    /// A size derived from the config does not fit in memory addresses.
    SizeOverflow,
    /// The tensor table has another number of entries than the config implies.
    TensorCount {
        /// Entries the config implies.
        expected: u32,
        /// Entries in the header.
        found: u32,
    },
    /// One tensor-table entry is inconsistent.
    Tensor {
        /// The tensor the canonical layout expects at this index.
        role: Role,
        /// Its layer (0 for tensors outside the layers).
        layer: u16,
        /// What is wrong.
        problem: TensorProblem,
    },
    /// The arena is smaller than the plan needs.
    ArenaTooSmall {
        /// Bytes needed ([`crate::Model::arena_bytes`]).
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// A caller buffer has the wrong length.
    BufferSize {
        /// Which buffer.
        buffer: Buffer,
        /// Elements expected.
        expected: usize,
        /// Elements given.
        found: usize,
    },
    /// More image tokens than the arena was planned for, or none.
    ImageTokens {
        /// Largest M this blob was planned for.
        max: usize,
        /// M given.
        found: usize,
    },
    /// The image features contain NaN or infinity (the forward is not run).
    NonFiniteInput {
        /// Flat index of the first non-finite value.
        index: usize,
    },
    /// The model has no language projection but a projection output was requested.
    NoProjection,
    /// The image features' length is not a whole number of tokens of `d_v` values.
    ImageShape {
        /// d_v, values per token.
        width: usize,
        /// Values given.
        len: usize,
    },
    /// The hidden state became NaN or infinite (the inputs are too large for f32 arithmetic,
    /// e.g. features near `f32::MAX`); the outputs are not valid.
    NonFiniteActivation {
        /// Layer after which it happened (1-based, as [`crate::LayerObserver`] counts; 0 is
        /// the input LayerNorm, `num_layers + 1` the language projection).
        layer: usize,
    },
    /// An instruction was given to a blob without text parts (BLIP-2, MiniGPT-4).
    NoText,
    /// The instruction has more tokens than the blob's `max_text_tokens`.
    TextTokens {
        /// T_max of the blob.
        max: usize,
        /// Tokens given.
        found: usize,
    },
    /// A token id is not below the vocabulary size.
    TokenId {
        /// Position in the instruction.
        index: usize,
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: u32,
    },
    /// The attention mask has a value other than 0 and 1 (a length other than the ids' is
    /// [`Error::BufferSize`]).
    Mask {
        /// Position of the bad value.
        index: usize,
        /// The value.
        value: u32,
    },
    /// The vocabulary's tables are inconsistent (the blob's `vocab.*` tensors).
    Vocab(crate::tokenizer::VocabError),
    /// An encoded image was made by another model than the one it is given to.
    ForeignImage,
    /// The instruction cannot be tokenized into the buffer given.
    Tokenize(crate::tokenizer::TokenizeError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Truncated { needed, available } => write!(
                f,
                "blob is truncated: {needed} bytes needed, {available} present"
            ),
            Error::TrailingBytes { declared, available } => write!(
                f,
                "blob has trailing bytes: header declares {declared} bytes, {available} given"
            ),
            Error::BadMagic => f.write_str("not a qformer blob (magic is not \"QFMRBLOB\")"),
            Error::UnsupportedVersion { found, supported } => write!(
                f,
                "blob format version {found} is not supported (this build reads version {supported}); re-run quantize with a matching tool version"
            ),
            Error::BadHeader { field, value } => {
                write!(f, "blob header field `{field}` has an invalid value {value}")
            }
            Error::ChecksumMismatch { stored, computed } => write!(
                f,
                "blob checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the blob is corrupted"
            ),
            Error::Misaligned { buffer, align } => {
                write!(f, "{} must start at a {align}-byte aligned address", buffer.name())
            }
            Error::InvalidConfig { field: "layer_norm_eps", value } => write!(
                f,
                "invalid model config: `layer_norm_eps` = {:e} (must be in (0, 1))",
                f32::from_bits(value)
            ),
            Error::InvalidConfig { field, value } => {
                write!(f, "invalid model config: `{field}` = {value}")
            }
            Error::SizeOverflow => f.write_str("model dimensions are too large: a buffer size overflows"),
            Error::TensorCount { expected, found } => write!(
                f,
                "tensor table has {found} entries, the config implies {expected}"
            ),
            Error::Tensor { role, layer, problem } => {
                f.write_str("tensor `")?;
                role.write_name(f, layer)?;
                f.write_str("`: ")?;
                match problem {
                    TensorProblem::Unexpected { role: r, layer: l } => match Role::from_u16(r) {
                        Some(found) => {
                            f.write_str("table holds `")?;
                            found.write_name(f, l)?;
                            f.write_str("` at its place")
                        }
                        None => write!(f, "table holds unknown role {r} (layer {l}) at its place"),
                    },
                    TensorProblem::Shape { expected, found } => write!(
                        f,
                        "shape [{}, {}] does not match the config's [{}, {}]",
                        found[0], found[1], expected[0], expected[1]
                    ),
                    TensorProblem::DType(code) => match DType::from_u8(code) {
                        Some(d) => write!(f, "dtype {} is not allowed here", d.name()),
                        None => write!(f, "unknown dtype code {code}"),
                    },
                    TensorProblem::Bounds => f.write_str(
                        "data lies outside the blob's data section or is not 16-byte aligned",
                    ),
                    TensorProblem::ByteCount { expected, found } => write!(
                        f,
                        "{found} data bytes, shape and dtype imply {expected}"
                    ),
                    TensorProblem::Group(g) => write!(
                        f,
                        "int8 group size {g} is invalid (must be a non-zero multiple of 16 and equal to the header's group_size)"
                    ),
                    TensorProblem::Reserved => f.write_str("reserved bytes are not zero"),
                    TensorProblem::Overlap => f.write_str(
                        "data overlaps the previous tensor's (tensors must be laid out in table order)",
                    ),
                    TensorProblem::NonFinite(i) => write!(f, "value {i} is NaN or infinite"),
                    TensorProblem::Int8Range(i) => write!(f, "int8 value {i} is -128 (the format's int8 is -127..=127)"),
                    TensorProblem::Scale(i) => write!(f, "int8 scale {i} is negative, NaN or infinite"),
                    TensorProblem::Transform(code) => write!(
                        f,
                        "its weights fold in input transform code {code}, which this reader does not implement (a newer qformer wrote it)"
                    ),
                }
            }
            Error::ArenaTooSmall { needed, available } => write!(
                f,
                "arena too small: {needed} bytes needed, {available} given"
            ),
            Error::BufferSize { buffer, expected, found } => write!(
                f,
                "{} has {found} elements, {expected} expected",
                buffer.name()
            ),
            Error::ImageTokens { max, found } => write!(
                f,
                "{found} image tokens given; this blob accepts 1 to {max} (its max_image_tokens)"
            ),
            Error::NonFiniteInput { index } => write!(
                f,
                "image features contain NaN or infinity (first at flat index {index})"
            ),
            Error::NoProjection => f.write_str("the model has no language projection"),
            Error::ImageShape { width, len } => write!(
                f,
                "image features have {len} values, not a whole number of tokens of d_v = {width}"
            ),
            Error::NonFiniteActivation { layer } => write!(
                f,
                "the hidden state became NaN or infinite at step {layer} of the forward (input LayerNorm = 0, layers 1.., projection last): the inputs are too large for f32 arithmetic"
            ),
            Error::NoText => f.write_str(
                "this blob has no text parts (a BLIP-2 / MiniGPT-4 Q-Former): it takes no instruction; quantize an InstructBLIP checkpoint to use one",
            ),
            Error::TextTokens { max, found } => write!(
                f,
                "the instruction has {found} tokens; this blob accepts at most {max} (its max_text_tokens, [CLS] and [SEP] included)"
            ),
            Error::TokenId { index, id, vocab } => write!(
                f,
                "token id {id} at position {index} is not in the vocabulary (size {vocab})"
            ),
            Error::Mask { index, value } => write!(
                f,
                "attention mask value {value} at position {index} is not 0 or 1"
            ),
            Error::Vocab(e) => write!(f, "the blob's vocabulary is inconsistent: {e}"),
            Error::ForeignImage => f.write_str("the encoded image was made by another model"),
            Error::Tokenize(e) => write!(f, "cannot tokenize the instruction: {e}"),
        }
    }
}

impl core::error::Error for Error {}
