//! The blob format: one definition shared by the writer (`qformer-std`) and the reader.
//!
//! Layout (all little-endian; the byte-level spec is `docs/FORMAT.md`):
//!
//! | bytes | content |
//! |---|---|
//! | `0..128` | [`Header`] |
//! | `128..128 + 32 * tensor_count` | tensor table, one [`TensorEntry`] per tensor, in canonical order ([`slot`]) |
//! | `data_offset..total_bytes` | tensor data; every tensor and every scale array starts 16-byte aligned |
//!
//! The CRC-32 (IEEE, as zlib) in [`Header::checksum`] covers every byte of the blob except the
//! four bytes of the checksum field itself.

use crate::config::{valid_group, Activation, Config, Precision};
use crate::error::{Error, TensorProblem};
use crate::tokenizer::{TokenizerOptions, Vocab, VocabError};

pub use crate::align::{round_up, ALIGN};

/// The 8 magic bytes that start every blob.
pub const MAGIC: [u8; 8] = *b"QFMRBLOB";
/// The format version this build writes and reads. Any change to the layout bumps it; a
/// reader rejects every version it was not built for.
pub const FORMAT_VERSION: u32 = 2;
/// Size of the [`Header`] in bytes.
pub const HEADER_BYTES: usize = core::mem::size_of::<Header>();
/// Size of one [`TensorEntry`] in bytes.
pub const ENTRY_BYTES: usize = core::mem::size_of::<TensorEntry>();
/// Byte offset of [`Header::checksum`] (the only bytes the checksum does not cover).
pub const CHECKSUM_OFFSET: usize = core::mem::offset_of!(Header, checksum);

code_enum! {
    /// Storage type of one tensor.
    pub enum DType: u8, from_u8 {
        /// IEEE binary32.
        F32 = 0 => "f32",
        /// IEEE binary16 (weights only); products accumulate in f32.
        F16 = 1 => "f16",
        /// Symmetric int8 (values -127..=127) with one f32 scale per group of `group`
        /// consecutive input channels of each row (weights only). Code 3 is reserved for int4.
        I8 = 2 => "i8",
        /// Bytes (the vocabulary's UTF-8 tokens).
        U8 = 4 => "u8",
        /// Little-endian `u32` (the vocabulary's offset and order tables).
        U32 = 5 => "u32",
    }
}

code_enum! {
    /// A transform of a matrix's input that the stored weights already fold in (`W Hᵀ`), so
    /// the forward applies it to the layer's input at run time. The field exists for the int8
    /// scheme with rotated inputs; this reader implements none and refuses any other code
    /// with [`TensorProblem::Transform`], naming the tensor.
    pub enum Transform: u8, from_u8 {
        /// The weights are the checkpoint's.
        None = 0 => "none",
    }
}

impl DType {
    /// The storage of every linear layer's weight matrix in a blob of `precision` (all
    /// other tensors are f32).
    pub const fn of_matrices(precision: Precision) -> DType {
        match precision {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Int8 => DType::I8,
        }
    }
}

/// The fixed 128-byte blob header. Its in-memory layout is its on-disk layout on the
/// little-endian targets this crate supports, so the field order of this struct is the one
/// definition of every offset: [`Header::read`] and [`Header::to_bytes`] copy it whole, and
/// `core::mem::offset_of!(Header, field)` gives a field's offset (`docs/FORMAT.md` lists them).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// [`HEADER_BYTES`].
    pub header_bytes: u32,
    /// Size of the whole blob in bytes.
    pub total_bytes: u32,
    /// CRC-32 of every byte but these four.
    pub checksum: u32,
    /// Entries in the tensor table.
    pub tensor_count: u32,
    /// Offset of the tensor table (= [`HEADER_BYTES`]).
    pub table_offset: u32,
    /// Offset of the data section: the end of the table rounded up to [`ALIGN`].
    pub data_offset: u32,
    /// Forward path ([`Precision`] code).
    pub precision: u32,
    /// int8 group size for activations quantized outside a linear layer (attention
    /// operands, image features); 0 unless `precision` is int8.
    pub group_size: u32,
    /// [`Config::num_layers`].
    pub num_layers: u32,
    /// [`Config::hidden`].
    pub hidden: u32,
    /// [`Config::num_heads`].
    pub num_heads: u32,
    /// [`Config::intermediate`].
    pub intermediate: u32,
    /// [`Config::cross_attention_frequency`].
    pub cross_attention_frequency: u32,
    /// [`Config::encoder_hidden`].
    pub encoder_hidden: u32,
    /// [`Config::num_queries`].
    pub num_queries: u32,
    /// [`Config::max_image_tokens`].
    pub max_image_tokens: u32,
    /// [`Config::projection_dim`].
    pub projection_dim: u32,
    /// [`Activation`] code.
    pub activation: u32,
    /// [`Config::layer_norm_eps`] as `f32` bits.
    pub layer_norm_eps_bits: u32,
    /// [`Config::max_text_tokens`] (InstructBLIP; 0 without text parts).
    pub max_text_tokens: u32,
    /// [`Config::vocab_size`].
    pub vocab_size: u32,
    /// [`Config::vocab_bytes`].
    pub vocab_bytes: u32,
    /// Tokenizer behaviour: [`TEXT_LOWERCASE`], [`TEXT_STRIP_ACCENTS`], [`TEXT_TRUNCATE_LEFT`];
    /// other bits zero, and all zero without text parts.
    pub text_flags: u32,
    /// Id of `[CLS]` (0 without text parts; otherwise below `vocab_size`, as the next three).
    pub cls_id: u32,
    /// Id of `[SEP]`.
    pub sep_id: u32,
    /// Id of `[UNK]`.
    pub unk_id: u32,
    /// Id of `[PAD]`.
    pub pad_id: u32,
    /// The first added token's id (tokens kept whole, outside WordPiece: LAVIS's `[DEC]`);
    /// `vocab_size` when there are none (0 without text parts).
    pub first_added_id: u32,
    /// Zero in this version.
    pub reserved: u32,
}

/// [`Header::text_flags`]: the tokenizer lower-cases (BERT uncased's `do_lower_case`).
pub const TEXT_LOWERCASE: u32 = 1;
/// [`Header::text_flags`]: the tokenizer strips accents (NFD, then drops combining marks).
pub const TEXT_STRIP_ACCENTS: u32 = 2;
/// [`Header::text_flags`]: an over-long instruction loses its first pieces, not its last
/// (`truncation_side = "left"`, as LAVIS's InstructBLIP Q-Former tokenizer).
pub const TEXT_TRUNCATE_LEFT: u32 = 4;
const TEXT_FLAGS: u32 = TEXT_LOWERCASE | TEXT_STRIP_ACCENTS | TEXT_TRUNCATE_LEFT;

// The header is 8 magic bytes and 30 `u32`s: 128 bytes, no padding.
const _: () = assert!(core::mem::size_of::<Header>() == 128);
const _: () = assert!(core::mem::size_of::<Header>() == 8 + 4 * 30);
const _: () = assert!(core::mem::offset_of!(Header, max_text_tokens) == 88);
const _: () = assert!(CHECKSUM_OFFSET == 20);

// SAFETY: `Header` is `repr(C)` of `[u8; 8]`, `u32`s and `[u32; 10]` with no padding (the
// size asserts above), so every bit pattern is a valid value and zero is valid.
unsafe impl bytemuck::Zeroable for Header {}
// SAFETY: as above; it is also `Copy` and `'static`.
unsafe impl bytemuck::Pod for Header {}

impl Header {
    /// A header for `config` with every layout field (counts, offsets, sizes, checksum) and
    /// the tokenizer fields zero; the writer fills them in.
    pub const fn new(config: &Config, precision: Precision, group_size: u32) -> Header {
        Header {
            magic: MAGIC,
            version: FORMAT_VERSION,
            header_bytes: HEADER_BYTES as u32,
            total_bytes: 0,
            checksum: 0,
            tensor_count: 0,
            table_offset: HEADER_BYTES as u32,
            data_offset: 0,
            precision: precision as u32,
            group_size,
            num_layers: config.num_layers,
            hidden: config.hidden,
            num_heads: config.num_heads,
            intermediate: config.intermediate,
            cross_attention_frequency: config.cross_attention_frequency,
            encoder_hidden: config.encoder_hidden,
            num_queries: config.num_queries,
            max_image_tokens: config.max_image_tokens,
            projection_dim: config.projection_dim,
            activation: config.activation as u32,
            layer_norm_eps_bits: config.layer_norm_eps.to_bits(),
            max_text_tokens: config.max_text_tokens,
            vocab_size: config.vocab_size,
            vocab_bytes: config.vocab_bytes,
            text_flags: 0,
            cls_id: 0,
            sep_id: 0,
            unk_id: 0,
            pad_id: 0,
            first_added_id: 0,
            reserved: 0,
        }
    }

    /// The header bytes at the start of `bytes`, unchecked but for the length.
    pub const fn read(bytes: &[u8]) -> Result<Header, Error> {
        if bytes.len() < HEADER_BYTES {
            return Err(Error::Truncated { needed: HEADER_BYTES, available: bytes.len() });
        }
        // SAFETY: `bytes` has at least `size_of::<Header>()` bytes (checked above);
        // `read_unaligned` needs no alignment; every bit pattern is a valid `Header` (see the
        // `Pod` impl); the target is little-endian (lib.rs), so memory order is file order.
        Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Header>()) })
    }

    /// Parses and checks the header at the start of `bytes`: length, magic, version, fixed
    /// fields and the config. It does not verify the checksum or the tensor table (that is
    /// [`validate`]'s job). `const`, so firmware can size its arena from the blob it embeds:
    ///
    /// ```
    /// # use qformer_core::{Header, arena_bytes};
    /// # const BLOB: &[u8] = &[];
    /// const ARENA: usize = match Header::parse(BLOB) {
    ///     Ok(h) => match h.arena_bytes() { Ok(n) => n, Err(_) => 0 },
    ///     Err(_) => 0,
    /// };
    /// ```
    pub const fn parse(bytes: &[u8]) -> Result<Header, Error> {
        let h = match Header::read(bytes) {
            Ok(h) => h,
            Err(e) => return Err(e),
        };
        if let Err(e) = h.check_identity() {
            return Err(e);
        }
        if h.header_bytes != HEADER_BYTES as u32 {
            return Err(Error::BadHeader { field: "header_bytes", value: h.header_bytes });
        }
        if h.table_offset != HEADER_BYTES as u32 {
            return Err(Error::BadHeader { field: "table_offset", value: h.table_offset });
        }
        if h.reserved != 0 {
            return Err(Error::BadHeader { field: "reserved", value: h.reserved });
        }
        let precision = match Precision::from_u32(h.precision) {
            Some(p) => p,
            None => return Err(Error::BadHeader { field: "precision", value: h.precision }),
        };
        let group_ok = match precision {
            Precision::Int8 => valid_group(h.group_size),
            _ => h.group_size == 0,
        };
        if !group_ok {
            return Err(Error::BadHeader { field: "group_size", value: h.group_size });
        }
        let config = match h.config() {
            Ok(c) => c,
            Err(e) => return Err(e),
        };
        if let Err(e) = config.validate() {
            return Err(e);
        }
        let tokenizer = [("cls_id", h.cls_id), ("sep_id", h.sep_id), ("unk_id", h.unk_id), ("pad_id", h.pad_id)];
        let mut t = 0;
        while t < tokenizer.len() {
            let (field, id) = tokenizer[t];
            if if config.has_text() { id >= config.vocab_size } else { id != 0 } {
                return Err(Error::BadHeader { field, value: id });
            }
            t += 1;
        }
        if if config.has_text() { h.first_added_id > config.vocab_size } else { h.first_added_id != 0 } {
            return Err(Error::BadHeader { field: "first_added_id", value: h.first_added_id });
        }
        if h.text_flags & !TEXT_FLAGS != 0 || (!config.has_text() && h.text_flags != 0) {
            return Err(Error::BadHeader { field: "text_flags", value: h.text_flags });
        }
        let expected = tensor_count(&config);
        if h.tensor_count != expected {
            return Err(Error::TensorCount { expected, found: h.tensor_count });
        }
        let table_end = HEADER_BYTES + ENTRY_BYTES * expected as usize;
        if h.data_offset as usize != round_up(table_end, ALIGN) {
            return Err(Error::BadHeader { field: "data_offset", value: h.data_offset });
        }
        if h.total_bytes < h.data_offset {
            return Err(Error::BadHeader { field: "total_bytes", value: h.total_bytes });
        }
        Ok(h)
    }

    /// Magic and version: whether these bytes are a blob this build reads at all.
    const fn check_identity(&self) -> Result<(), Error> {
        let mut i = 0;
        while i < MAGIC.len() {
            if self.magic[i] != MAGIC[i] {
                return Err(Error::BadMagic);
            }
            i += 1;
        }
        if self.version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion { found: self.version, supported: FORMAT_VERSION });
        }
        Ok(())
    }

    /// The model config stored in the header (not yet validated).
    pub const fn config(&self) -> Result<Config, Error> {
        let activation = match Activation::from_u32(self.activation) {
            Some(a) => a,
            None => return Err(Error::InvalidConfig { field: "activation", value: self.activation }),
        };
        Ok(Config {
            num_layers: self.num_layers,
            hidden: self.hidden,
            num_heads: self.num_heads,
            intermediate: self.intermediate,
            cross_attention_frequency: self.cross_attention_frequency,
            encoder_hidden: self.encoder_hidden,
            num_queries: self.num_queries,
            max_image_tokens: self.max_image_tokens,
            projection_dim: self.projection_dim,
            activation,
            layer_norm_eps: f32::from_bits(self.layer_norm_eps_bits),
            max_text_tokens: self.max_text_tokens,
            vocab_size: self.vocab_size,
            vocab_bytes: self.vocab_bytes,
        })
    }

    /// The forward path.
    pub const fn precision(&self) -> Precision {
        match Precision::from_u32(self.precision) {
            Some(p) => p,
            None => Precision::F32,
        }
    }

    /// What the blob's tokenizer does (meaningful only with text parts).
    pub const fn tokenizer_options(&self) -> TokenizerOptions {
        TokenizerOptions {
            lowercase: self.text_flags & TEXT_LOWERCASE != 0,
            strip_accents: self.text_flags & TEXT_STRIP_ACCENTS != 0,
            truncate_left: self.text_flags & TEXT_TRUNCATE_LEFT != 0,
            cls: self.cls_id,
            sep: self.sep_id,
            unk: self.unk_id,
            pad: self.pad_id,
            first_added: self.first_added_id,
        }
    }

    /// Sets the tokenizer fields from `options` (the writer's side of
    /// [`Header::tokenizer_options`]).
    pub const fn set_tokenizer_options(&mut self, options: &TokenizerOptions) {
        self.text_flags = if options.lowercase { TEXT_LOWERCASE } else { 0 }
            | if options.strip_accents { TEXT_STRIP_ACCENTS } else { 0 }
            | if options.truncate_left { TEXT_TRUNCATE_LEFT } else { 0 };
        self.cls_id = options.cls;
        self.sep_id = options.sep;
        self.unk_id = options.unk;
        self.pad_id = options.pad;
        self.first_added_id = options.first_added;
    }

    /// Exact arena size in bytes for a blob with this header; see [`crate::plan`].
    pub const fn arena_bytes(&self) -> Result<usize, Error> {
        match self.config() {
            Ok(c) => crate::plan::arena_bytes(&c, self.precision(), self.group_size as usize),
            Err(e) => Err(e),
        }
    }

    /// Little-endian encoding (the struct's bytes; see the type's docs).
    pub fn to_bytes(&self) -> [u8; HEADER_BYTES] {
        bytemuck::cast(*self)
    }
}

/// One 32-byte entry of the tensor table. Like [`Header`], its field order is its byte layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct TensorEntry {
    /// [`Role`] code.
    pub role: u16,
    /// Layer index, 0 for tensors outside the layers.
    pub layer: u16,
    /// [`DType`] code.
    pub dtype: u8,
    /// [`Transform`] code folded into a matrix's weights (0 for every other tensor).
    pub transform: u8,
    /// Zero.
    pub reserved: [u8; 2],
    /// Rows (output features of a linear layer; 1 for vectors).
    pub rows: u32,
    /// Columns (input features of a linear layer; length of a vector).
    pub cols: u32,
    /// Offset of the data from the start of the blob, a multiple of [`ALIGN`].
    pub offset: u32,
    /// Data bytes: `rows * cols * 4` (f32), `rows * cols * 2` (f16), `rows * stride` (i8,
    /// `stride = round_up(cols, group)`, padding zero).
    pub bytes: u32,
    /// i8 only: offset of the `rows * stride / group` f32 scales, a multiple of [`ALIGN`].
    pub scales_offset: u32,
    /// i8 only: group size along the columns ([`valid_group`]).
    pub group: u32,
}

// Two u16, four bytes, six u32: 32 bytes, no padding.
const _: () = assert!(core::mem::size_of::<TensorEntry>() == 32);
const _: () = assert!(core::mem::size_of::<TensorEntry>() == 2 * 2 + 4 + 6 * 4);

// SAFETY: `repr(C)` of integers and byte arrays without padding (asserts above): every bit
// pattern is valid, zero included.
unsafe impl bytemuck::Zeroable for TensorEntry {}
// SAFETY: as above; `Copy` and `'static`.
unsafe impl bytemuck::Pod for TensorEntry {}

impl TensorEntry {
    /// Decodes the entry at `bytes[at..at + 32]`; `None` if out of range.
    pub fn parse(bytes: &[u8], at: usize) -> Option<TensorEntry> {
        let b = bytes.get(at..at.checked_add(ENTRY_BYTES)?)?;
        Some(bytemuck::pod_read_unaligned(b))
    }

    /// The entry of table index `index` in `blob`; `None` past the end of `blob`.
    pub fn at_index(blob: &[u8], index: u32) -> Option<TensorEntry> {
        TensorEntry::parse(blob, HEADER_BYTES.checked_add((index as usize).checked_mul(ENTRY_BYTES)?)?)
    }

    /// Little-endian encoding (the struct's bytes).
    pub fn to_bytes(&self) -> [u8; ENTRY_BYTES] {
        bytemuck::cast(*self)
    }

    /// i8 row stride: `cols` rounded up to the group size.
    pub const fn stride(&self) -> usize {
        if self.group == 0 {
            self.cols as usize
        } else {
            round_up(self.cols as usize, self.group as usize)
        }
    }
}

code_enum! {
    /// What a tensor is. The codes are part of the format; [`Role::name`] is a short name,
    /// [`Role::write_name`] the Hugging Face checkpoint key.
    #[allow(missing_docs)] // the names say it
    pub enum Role: u16, from_u16 {
        QueryTokens = 0 => "query_tokens",
        InputNormWeight = 1 => "input_norm.weight",
        InputNormBias = 2 => "input_norm.bias",
        WordEmbeddings = 3 => "word_embeddings",
        PositionEmbeddings = 4 => "position_embeddings",
        VocabText = 5 => "vocab.text",
        VocabOffsets = 6 => "vocab.offsets",
        VocabSorted = 7 => "vocab.sorted",
        SelfQueryWeight = 10 => "self.query.weight",
        SelfQueryBias = 11 => "self.query.bias",
        SelfKeyWeight = 12 => "self.key.weight",
        SelfKeyBias = 13 => "self.key.bias",
        SelfValueWeight = 14 => "self.value.weight",
        SelfValueBias = 15 => "self.value.bias",
        SelfOutWeight = 16 => "self.out.weight",
        SelfOutBias = 17 => "self.out.bias",
        SelfNormWeight = 18 => "self.norm.weight",
        SelfNormBias = 19 => "self.norm.bias",
        CrossQueryWeight = 20 => "cross.query.weight",
        CrossQueryBias = 21 => "cross.query.bias",
        CrossKeyWeight = 22 => "cross.key.weight",
        CrossKeyBias = 23 => "cross.key.bias",
        CrossValueWeight = 24 => "cross.value.weight",
        CrossValueBias = 25 => "cross.value.bias",
        CrossOutWeight = 26 => "cross.out.weight",
        CrossOutBias = 27 => "cross.out.bias",
        CrossNormWeight = 28 => "cross.norm.weight",
        CrossNormBias = 29 => "cross.norm.bias",
        FfnUpWeight = 30 => "ffn.up.weight",
        FfnUpBias = 31 => "ffn.up.bias",
        FfnDownWeight = 32 => "ffn.down.weight",
        FfnDownBias = 33 => "ffn.down.bias",
        FfnNormWeight = 34 => "ffn.norm.weight",
        FfnNormBias = 35 => "ffn.norm.bias",
        ProjWeight = 40 => "proj.weight",
        ProjBias = 41 => "proj.bias",
        TextUpWeight = 50 => "text_ffn.up.weight",
        TextUpBias = 51 => "text_ffn.up.bias",
        TextDownWeight = 52 => "text_ffn.down.weight",
        TextDownBias = 53 => "text_ffn.down.bias",
        TextNormWeight = 54 => "text_ffn.norm.weight",
        TextNormBias = 55 => "text_ffn.norm.bias",
    }
}

const GLOBAL_ROLES: [Role; 3] = [Role::QueryTokens, Role::InputNormWeight, Role::InputNormBias];
/// InstructBLIP's text tensors outside the layers, after [`GLOBAL_ROLES`], in table order.
const TEXT_ROLES: [Role; 5] =
    [Role::WordEmbeddings, Role::PositionEmbeddings, Role::VocabText, Role::VocabOffsets, Role::VocabSorted];
/// Self-attention tensors of a layer, in table order.
pub const SELF_ROLES: [Role; 10] = [
    Role::SelfQueryWeight,
    Role::SelfQueryBias,
    Role::SelfKeyWeight,
    Role::SelfKeyBias,
    Role::SelfValueWeight,
    Role::SelfValueBias,
    Role::SelfOutWeight,
    Role::SelfOutBias,
    Role::SelfNormWeight,
    Role::SelfNormBias,
];
/// Cross-attention tensors of a layer, in table order.
pub const CROSS_ROLES: [Role; 10] = [
    Role::CrossQueryWeight,
    Role::CrossQueryBias,
    Role::CrossKeyWeight,
    Role::CrossKeyBias,
    Role::CrossValueWeight,
    Role::CrossValueBias,
    Role::CrossOutWeight,
    Role::CrossOutBias,
    Role::CrossNormWeight,
    Role::CrossNormBias,
];
/// Feed-forward tensors of a layer, in table order.
pub const FFN_ROLES: [Role; 6] = [
    Role::FfnUpWeight,
    Role::FfnUpBias,
    Role::FfnDownWeight,
    Role::FfnDownBias,
    Role::FfnNormWeight,
    Role::FfnNormBias,
];
/// InstructBLIP's text-side feed-forward of a layer (after [`FFN_ROLES`]), in table order.
pub const TEXT_FFN_ROLES: [Role; 6] = [
    Role::TextUpWeight,
    Role::TextUpBias,
    Role::TextDownWeight,
    Role::TextDownBias,
    Role::TextNormWeight,
    Role::TextNormBias,
];
const PROJ_ROLES: [Role; 2] = [Role::ProjWeight, Role::ProjBias];

impl Role {
    /// Whether the tensor lives inside a layer.
    pub const fn in_layer(self) -> bool {
        !matches!(
            self,
            Role::QueryTokens
                | Role::InputNormWeight
                | Role::InputNormBias
                | Role::WordEmbeddings
                | Role::PositionEmbeddings
                | Role::VocabText
                | Role::VocabOffsets
                | Role::VocabSorted
                | Role::ProjWeight
                | Role::ProjBias
        )
    }

    /// Whether the tensor is stored in the precision's matrix dtype ([`DType::of_matrices`]):
    /// the weight matrix of a linear layer, or an embedding table (rows looked up and
    /// dequantized). Every other tensor is f32, but for the vocabulary's tables.
    pub const fn is_matrix(self) -> bool {
        matches!(
            self,
            Role::WordEmbeddings
                | Role::PositionEmbeddings
                | Role::TextUpWeight
                | Role::TextDownWeight
                | Role::SelfQueryWeight
                | Role::SelfKeyWeight
                | Role::SelfValueWeight
                | Role::SelfOutWeight
                | Role::CrossQueryWeight
                | Role::CrossKeyWeight
                | Role::CrossValueWeight
                | Role::CrossOutWeight
                | Role::FfnUpWeight
                | Role::FfnDownWeight
                | Role::ProjWeight
        )
    }

    /// The storage of this tensor in a blob of `precision`.
    pub const fn dtype(self, precision: Precision) -> DType {
        match self {
            Role::VocabText => DType::U8,
            Role::VocabOffsets | Role::VocabSorted => DType::U32,
            _ if self.is_matrix() => DType::of_matrices(precision),
            _ => DType::F32,
        }
    }

    /// `[rows, cols]` of this tensor under `c`.
    pub const fn shape(self, c: &Config) -> [u32; 2] {
        let (d, i, v) = (c.hidden, c.intermediate, c.encoder_hidden);
        match self {
            Role::QueryTokens => [c.num_queries, d],
            Role::CrossKeyWeight | Role::CrossValueWeight => [d, v],
            Role::SelfQueryWeight
            | Role::SelfKeyWeight
            | Role::SelfValueWeight
            | Role::SelfOutWeight
            | Role::CrossQueryWeight
            | Role::CrossOutWeight => [d, d],
            Role::FfnUpWeight | Role::TextUpWeight => [i, d],
            Role::FfnUpBias | Role::TextUpBias => [1, i],
            Role::FfnDownWeight | Role::TextDownWeight => [d, i],
            Role::WordEmbeddings => [c.vocab_size, d],
            Role::PositionEmbeddings => [c.max_text_tokens, d],
            Role::VocabText => [1, c.vocab_bytes],
            Role::VocabOffsets => [1, c.vocab_size + 1],
            Role::VocabSorted => [1, c.vocab_size],
            Role::ProjWeight => [c.projection_dim, d],
            Role::ProjBias => [1, c.projection_dim],
            _ => [1, d],
        }
    }

    /// The Hugging Face (`Blip2ForConditionalGeneration`) checkpoint key of this tensor, e.g.
    /// `qformer.encoder.layer.3.crossattention.attention.key.weight`.
    pub fn write_name(self, f: &mut dyn core::fmt::Write, layer: u16) -> core::fmt::Result {
        let (block, param) = match self {
            Role::QueryTokens => return f.write_str("query_tokens"),
            Role::InputNormWeight => return f.write_str("qformer.layernorm.weight"),
            Role::InputNormBias => return f.write_str("qformer.layernorm.bias"),
            Role::ProjWeight => return f.write_str("language_projection.weight"),
            Role::ProjBias => return f.write_str("language_projection.bias"),
            Role::WordEmbeddings => return f.write_str("qformer.embeddings.word_embeddings.weight"),
            Role::PositionEmbeddings => return f.write_str("qformer.embeddings.position_embeddings.weight"),
            Role::VocabText => return f.write_str("qformer_tokenizer vocabulary (token bytes)"),
            Role::VocabOffsets => return f.write_str("qformer_tokenizer vocabulary (token offsets)"),
            Role::VocabSorted => return f.write_str("qformer_tokenizer vocabulary (sorted order)"),
            Role::TextUpWeight => ("intermediate", "dense.weight"),
            Role::TextUpBias => ("intermediate", "dense.bias"),
            Role::TextDownWeight => ("output", "dense.weight"),
            Role::TextDownBias => ("output", "dense.bias"),
            Role::TextNormWeight => ("output", "LayerNorm.weight"),
            Role::TextNormBias => ("output", "LayerNorm.bias"),
            Role::SelfQueryWeight => ("attention", "attention.query.weight"),
            Role::SelfQueryBias => ("attention", "attention.query.bias"),
            Role::SelfKeyWeight => ("attention", "attention.key.weight"),
            Role::SelfKeyBias => ("attention", "attention.key.bias"),
            Role::SelfValueWeight => ("attention", "attention.value.weight"),
            Role::SelfValueBias => ("attention", "attention.value.bias"),
            Role::SelfOutWeight => ("attention", "output.dense.weight"),
            Role::SelfOutBias => ("attention", "output.dense.bias"),
            Role::SelfNormWeight => ("attention", "output.LayerNorm.weight"),
            Role::SelfNormBias => ("attention", "output.LayerNorm.bias"),
            Role::CrossQueryWeight => ("crossattention", "attention.query.weight"),
            Role::CrossQueryBias => ("crossattention", "attention.query.bias"),
            Role::CrossKeyWeight => ("crossattention", "attention.key.weight"),
            Role::CrossKeyBias => ("crossattention", "attention.key.bias"),
            Role::CrossValueWeight => ("crossattention", "attention.value.weight"),
            Role::CrossValueBias => ("crossattention", "attention.value.bias"),
            Role::CrossOutWeight => ("crossattention", "output.dense.weight"),
            Role::CrossOutBias => ("crossattention", "output.dense.bias"),
            Role::CrossNormWeight => ("crossattention", "output.LayerNorm.weight"),
            Role::CrossNormBias => ("crossattention", "output.LayerNorm.bias"),
            Role::FfnUpWeight => ("intermediate_query", "dense.weight"),
            Role::FfnUpBias => ("intermediate_query", "dense.bias"),
            Role::FfnDownWeight => ("output_query", "dense.weight"),
            Role::FfnDownBias => ("output_query", "dense.bias"),
            Role::FfnNormWeight => ("output_query", "LayerNorm.weight"),
            Role::FfnNormBias => ("output_query", "LayerNorm.bias"),
        };
        write!(f, "qformer.encoder.layer.{layer}.{block}.{param}")
    }
}

/// Number of tensors a blob for `c` holds.
pub const fn tensor_count(c: &Config) -> u32 {
    layer_base(c, c.num_layers) + if c.projection_dim > 0 { 2 } else { 0 }
}

/// Tensors outside the layers before layer 0: the query tokens and input LayerNorm, then
/// (with text parts) the embeddings and the vocabulary.
const fn globals(c: &Config) -> u32 {
    (GLOBAL_ROLES.len() + if c.has_text() { TEXT_ROLES.len() } else { 0 }) as u32
}

/// Tensors of every layer but its cross-attention: self-attention, feed-forward and (with
/// text parts) the text feed-forward.
const fn per_layer(c: &Config) -> u32 {
    (SELF_ROLES.len() + FFN_ROLES.len() + if c.has_text() { TEXT_FFN_ROLES.len() } else { 0 }) as u32
}

/// Table index of the first tensor of layer `l` (or of the projection, for `l == num_layers`).
const fn layer_base(c: &Config, l: u32) -> u32 {
    globals(c) + l * per_layer(c) + c.cross_layers_before(l) * CROSS_ROLES.len() as u32
}

/// The tensors of layer `l` in table order: self-attention, cross-attention (when the layer
/// has it), feed-forward, text feed-forward (with text parts).
fn layer_roles(c: &Config, l: u32) -> impl Iterator<Item = Role> {
    let cross: &[Role] = if c.has_cross(l) { &CROSS_ROLES } else { &[] };
    let text: &[Role] = if c.has_text() { &TEXT_FFN_ROLES } else { &[] };
    SELF_ROLES.iter().chain(cross).chain(FFN_ROLES.iter()).chain(text).copied()
}

/// The tensors outside the layers before layer 0, in table order.
fn global_roles(c: &Config) -> impl Iterator<Item = Role> {
    let text: &[Role] = if c.has_text() { &TEXT_ROLES } else { &[] };
    GLOBAL_ROLES.iter().chain(text).copied()
}

/// The tensor at table index `index` in the canonical order: query tokens, input LayerNorm,
/// (text parts: word and position embeddings, vocabulary), then per layer self-attention,
/// cross-attention (layers with `l % f == 0`), feed-forward and (text parts) text
/// feed-forward, then the projection. `None` past the end.
pub fn slot(c: &Config, index: u32) -> Option<(Role, u16)> {
    if index >= tensor_count(c) {
        return None;
    }
    if index < globals(c) {
        return global_roles(c).nth(index as usize).map(|r| (r, 0));
    }
    // Layers are few (<= 65534); a linear scan keeps this obviously right.
    for l in 0..c.num_layers {
        if index < layer_base(c, l + 1) {
            return layer_roles(c, l).nth((index - layer_base(c, l)) as usize).map(|r| (r, l as u16));
        }
    }
    let k = (index - layer_base(c, c.num_layers)) as usize;
    Some((PROJ_ROLES[k], 0))
}

/// Table index of `role` in `layer`, or `None` if the config has no such tensor (e.g. a
/// cross-attention tensor of a layer without cross-attention, or a text tensor of a blob
/// without text parts).
pub fn index_of(c: &Config, role: Role, layer: u16) -> Option<u32> {
    if let Some(p) = global_roles(c).position(|r| r == role) {
        return Some(p as u32);
    }
    if let Some(p) = PROJ_ROLES.iter().position(|&r| r == role) {
        return (c.projection_dim > 0).then(|| layer_base(c, c.num_layers) + p as u32);
    }
    let l = layer as u32;
    if l >= c.num_layers || !role.in_layer() {
        return None;
    }
    layer_roles(c, l).position(|r| r == role).map(|p| layer_base(c, l) + p as u32)
}

/// Data bytes of a tensor of `shape` stored as `dtype` (`group` for i8); `None` on overflow.
pub fn data_bytes(shape: [u32; 2], dtype: DType, group: u32) -> Option<usize> {
    let rows = shape[0] as usize;
    let cols = shape[1] as usize;
    match dtype {
        DType::F32 => rows.checked_mul(cols)?.checked_mul(4),
        DType::F16 => rows.checked_mul(cols)?.checked_mul(2),
        DType::I8 => rows.checked_mul(round_up(cols, group as usize)),
        DType::U8 => rows.checked_mul(cols),
        DType::U32 => rows.checked_mul(cols)?.checked_mul(4),
    }
}

/// Bytes of the f32 scales of an i8 tensor.
pub fn scale_bytes(shape: [u32; 2], group: u32) -> Option<usize> {
    let per_row = round_up(shape[1] as usize, group as usize) / group as usize;
    (shape[0] as usize).checked_mul(per_row)?.checked_mul(4)
}

/// CRC-32 of `blob` with the checksum field skipped.
pub fn checksum(blob: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&blob[..CHECKSUM_OFFSET.min(blob.len())]);
    if blob.len() > CHECKSUM_OFFSET + 4 {
        h.update(&blob[CHECKSUM_OFFSET + 4..]);
    }
    h.finalize()
}

/// Validates a whole blob: everything a forward relies on. Checks, in this order:
///
/// 1. identity: length >= header, magic, version (so a blob of another version is named as
///    such before anything else is read);
/// 2. integrity: declared size against the bytes given, then the CRC-32;
/// 3. the header's fixed fields and config ([`Header::parse`]);
/// 4. the blob's start address (16-byte aligned);
/// 5. every table entry: role and layer at its index, reserved bytes, shape, dtype (the
///    precision's for matrices, f32 otherwise), group (the header's), byte count, bounds
///    and alignment, and that the tensors are laid out in table order without overlapping;
/// 6. contents: f32 and f16 values finite, int8 values in -127..=127 (what every int8
///    kernel assumes), int8 scales finite and not negative. A CRC proves the bytes are the
///    ones written, not that they make sense (a blob can be edited and re-sealed).
///
/// Reads nothing out of bounds and never panics, whatever the bytes. Returns the header.
pub fn validate(blob: &[u8]) -> Result<Header, Error> {
    let raw = Header::read(blob)?;
    raw.check_identity()?;
    let declared = raw.total_bytes as usize;
    if declared > blob.len() {
        return Err(Error::Truncated { needed: declared, available: blob.len() });
    }
    if declared < blob.len() {
        return Err(Error::TrailingBytes { declared, available: blob.len() });
    }
    let computed = checksum(blob);
    if computed != raw.checksum {
        return Err(Error::ChecksumMismatch { stored: raw.checksum, computed });
    }
    let header = Header::parse(blob)?;
    let config = header.config()?;
    if !(blob.as_ptr() as usize).is_multiple_of(ALIGN) {
        return Err(Error::Misaligned { buffer: crate::error::Buffer::Blob, align: ALIGN });
    }
    let mut end_of_previous = header.data_offset as usize;
    for index in 0..header.tensor_count {
        let e = TensorEntry::at_index(blob, index).ok_or(Error::Truncated {
            needed: HEADER_BYTES + (index as usize + 1) * ENTRY_BYTES,
            available: blob.len(),
        })?;
        let (role, layer) =
            slot(&config, index).ok_or(Error::TensorCount { expected: tensor_count(&config), found: index })?;
        let fail = |problem| Err(Error::Tensor { role, layer, problem });
        let t = match check_entry(&config, &header, role, layer, &e, end_of_previous) {
            Ok(t) => t,
            Err(problem) => return fail(problem),
        };
        if let Err(problem) = check_contents(blob, &e, t.dtype) {
            return fail(problem);
        }
        end_of_previous = t.end;
    }
    if config.has_text() {
        vocab(blob, &config).map_err(Error::Vocab)?;
    }
    Ok(header)
}

/// The vocabulary of a blob whose entries [`validate`] has checked up to the contents of
/// the vocabulary tables (which this checks, through [`Vocab::new`]).
pub(crate) fn vocab<'a>(blob: &'a [u8], c: &Config) -> Result<Vocab<'a>, VocabError> {
    let table = |role: Role| -> &'a [u8] {
        index_of(c, role, 0)
            .and_then(|i| TensorEntry::at_index(blob, i))
            .and_then(|e| blob.get(e.offset as usize..e.offset as usize + e.bytes as usize))
            .unwrap_or(&[])
    };
    let words = |role| bytemuck::try_cast_slice::<u8, u32>(table(role)).unwrap_or(&[]);
    Vocab::new(table(Role::VocabText), words(Role::VocabOffsets), words(Role::VocabSorted))
}

/// What [`check_entry`] learned about a valid entry.
struct Checked {
    dtype: DType,
    /// End of the entry's data (and scales, for i8).
    end: usize,
}

/// One table entry against the canonical layout, the header and the blob's bounds.
/// `after` is where the previous tensor's bytes end.
fn check_entry(
    c: &Config,
    header: &Header,
    role: Role,
    layer: u16,
    e: &TensorEntry,
    after: usize,
) -> Result<Checked, TensorProblem> {
    if e.role != role as u16 || e.layer != layer {
        return Err(TensorProblem::Unexpected { role: e.role, layer: e.layer });
    }
    let expected = role.shape(c);
    if [e.rows, e.cols] != expected {
        return Err(TensorProblem::Shape { expected, found: [e.rows, e.cols] });
    }
    let dtype = match DType::from_u8(e.dtype) {
        Some(d) if d == role.dtype(header.precision()) => d,
        _ => return Err(TensorProblem::DType(e.dtype)),
    };
    if e.reserved != [0; 2] {
        return Err(TensorProblem::Reserved);
    }
    if e.transform != Transform::None as u8 {
        return Err(TensorProblem::Transform(e.transform));
    }
    if dtype == DType::I8 {
        if !valid_group(e.group) || e.group != header.group_size {
            return Err(TensorProblem::Group(e.group));
        }
    } else if e.group != 0 || e.scales_offset != 0 {
        return Err(TensorProblem::Reserved);
    }
    let want = data_bytes(expected, dtype, e.group).ok_or(TensorProblem::Bounds)?;
    if e.bytes as usize != want {
        return Err(TensorProblem::ByteCount { expected: want as u32, found: e.bytes });
    }
    // Every range starts aligned, after what came before it, and ends inside the blob.
    let place = |offset: u32, len: usize, after: usize| -> Result<usize, TensorProblem> {
        let start = offset as usize;
        let end = start.checked_add(len).ok_or(TensorProblem::Bounds)?;
        if !start.is_multiple_of(ALIGN) || start < header.data_offset as usize || end > header.total_bytes as usize {
            return Err(TensorProblem::Bounds);
        }
        if start < after {
            return Err(TensorProblem::Overlap);
        }
        Ok(end)
    };
    let mut end = place(e.offset, want, after)?;
    if dtype == DType::I8 {
        let sb = scale_bytes(expected, e.group).ok_or(TensorProblem::Bounds)?;
        end = place(e.scales_offset, sb, end)?;
    }
    Ok(Checked { dtype, end })
}

/// The values of an entry whose ranges [`check_entry`] accepted (in a blob whose start
/// [`validate`] found aligned, so every range is aligned for its element type).
fn check_contents(blob: &[u8], e: &TensorEntry, dtype: DType) -> Result<(), TensorProblem> {
    let data = &blob[e.offset as usize..e.offset as usize + e.bytes as usize];
    match dtype {
        // NaN or infinite: all exponent bits set.
        DType::F32 => first_bad(data, |v: u32| v & 0x7f80_0000 == 0x7f80_0000)
            .map_or(Ok(()), |i| Err(TensorProblem::NonFinite(i))),
        DType::F16 => {
            first_bad(data, |v: u16| v & 0x7c00 == 0x7c00).map_or(Ok(()), |i| Err(TensorProblem::NonFinite(i)))
        }
        DType::I8 => {
            if let Some(i) = first_bad(data, |v: u8| v == 0x80) {
                return Err(TensorProblem::Int8Range(i));
            }
            let sb = scale_bytes([e.rows, e.cols], e.group).unwrap_or(0);
            let scales = &blob[e.scales_offset as usize..e.scales_offset as usize + sb];
            // Negative (sign bit), NaN or infinite (all exponent bits); -0.0 is fine.
            let bad = |v: u32| v & 0x7f80_0000 == 0x7f80_0000 || (v >> 31 == 1 && v != 0x8000_0000);
            first_bad(scales, bad).map_or(Ok(()), |i| Err(TensorProblem::Scale(i)))
        }
        // The vocabulary's tables are checked together, by `Vocab::new`, once all three
        // entries are known to lie in the blob.
        DType::U8 | DType::U32 => Ok(()),
    }
}

/// Index of the first element of `data` (read as little-endian `T`s) for which `bad` holds.
/// A branch-free pass over the whole slice first (it vectorizes: a BLIP-2 int8 blob is 115
/// MB), the search only when something was found.
fn first_bad<T: bytemuck::Pod + Copy>(data: &[u8], bad: impl Fn(T) -> bool) -> Option<u32> {
    let read = |c: &[u8]| bytemuck::pod_read_unaligned::<T>(c);
    let any = match bytemuck::try_cast_slice::<u8, T>(data) {
        Ok(values) => values.iter().fold(false, |acc, &v| acc | bad(v)),
        Err(_) => data.chunks_exact(core::mem::size_of::<T>()).fold(false, |acc, c| acc | bad(read(c))),
    };
    if !any {
        return None;
    }
    data.chunks_exact(core::mem::size_of::<T>()).position(|c| bad(read(c))).map(|i| i as u32)
}
