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

use crate::config::{Activation, Config};
use crate::error::{Error, TensorProblem};

/// The 8 magic bytes that start every blob.
pub const MAGIC: [u8; 8] = *b"QFMRBLOB";
/// The format version this build writes and reads. Any change to the layout bumps it; a
/// reader rejects every version it was not built for.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the [`Header`] in bytes.
pub const HEADER_BYTES: usize = 128;
/// Size of one [`TensorEntry`] in bytes.
pub const ENTRY_BYTES: usize = 32;
/// Alignment of every tensor's data and of the blob's start address.
pub const ALIGN: usize = 16;
/// Byte offset of [`Header::checksum`] (the only bytes the checksum does not cover).
pub const CHECKSUM_OFFSET: usize = 20;

/// Storage type of one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DType {
    /// IEEE binary32.
    F32 = 0,
    /// IEEE binary16 (weights only); products accumulate in f32.
    F16 = 1,
    /// Symmetric int8 with one f32 scale per group of `group` consecutive input channels of
    /// each row (weights only). Code 3 is reserved for int4.
    I8 = 2,
}

impl DType {
    /// Decodes a table byte.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::F32),
            1 => Some(Self::F16),
            2 => Some(Self::I8),
            _ => None,
        }
    }
    /// Short lower-case name (`f32`, `f16`, `i8`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::I8 => "i8",
        }
    }
}

/// Which forward path a blob runs: the storage of its matrices and the arithmetic of its
/// attention. Chosen by `quantize --dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Precision {
    /// f32 weights, f32 arithmetic.
    F32 = 0,
    /// fp16 weights, f32 accumulation, f32 LayerNorm/softmax.
    F16 = 1,
    /// int8 weights with group-wise scales, dynamically quantized int8 activations, int8
    /// attention products; LayerNorm, softmax and activation in f32.
    Int8 = 2,
}

impl Precision {
    /// Decodes the header field.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::F32),
            1 => Some(Self::F16),
            2 => Some(Self::Int8),
            _ => None,
        }
    }
    /// Name as accepted by `quantize --dtype`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "fp16",
            Self::Int8 => "int8",
        }
    }
}

/// The fixed 128-byte blob header. Its in-memory layout is its on-disk layout on the
/// little-endian targets this crate supports; [`Header::to_bytes`] and [`Header::parse`]
/// are the one encoder and decoder.
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
    /// Zero in this version.
    pub reserved: [u32; 10],
}

const _: () = assert!(core::mem::size_of::<Header>() == HEADER_BYTES);
const _: () = assert!(core::mem::offset_of!(Header, checksum) == CHECKSUM_OFFSET);

const fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
const fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Rounds `v` up to a multiple of `to` (a power of two or any non-zero value).
pub const fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

impl Header {
    /// A header for `config` with every layout field (counts, offsets, sizes, checksum) zero;
    /// the writer fills them in.
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
            reserved: [0; 10],
        }
    }

    /// Parses and checks the header at the start of `bytes`: length, magic, version, fixed
    /// fields and the config. It does not verify the checksum or the tensor table (that is
    /// [`crate::Model::from_blob`]'s job). `const`, so firmware can size its arena from the
    /// blob it embeds:
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
        if bytes.len() < HEADER_BYTES {
            return Err(Error::Truncated { needed: HEADER_BYTES, available: bytes.len() });
        }
        let mut magic = [0u8; 8];
        let mut i = 0;
        while i < 8 {
            magic[i] = bytes[i];
            if magic[i] != MAGIC[i] {
                return Err(Error::BadMagic);
            }
            i += 1;
        }
        let mut reserved = [0u32; 10];
        let mut r = 0;
        while r < reserved.len() {
            reserved[r] = rd32(bytes, 88 + 4 * r);
            r += 1;
        }
        let h = Header {
            magic,
            version: rd32(bytes, 8),
            header_bytes: rd32(bytes, 12),
            total_bytes: rd32(bytes, 16),
            checksum: rd32(bytes, 20),
            tensor_count: rd32(bytes, 24),
            table_offset: rd32(bytes, 28),
            data_offset: rd32(bytes, 32),
            precision: rd32(bytes, 36),
            group_size: rd32(bytes, 40),
            num_layers: rd32(bytes, 44),
            hidden: rd32(bytes, 48),
            num_heads: rd32(bytes, 52),
            intermediate: rd32(bytes, 56),
            cross_attention_frequency: rd32(bytes, 60),
            encoder_hidden: rd32(bytes, 64),
            num_queries: rd32(bytes, 68),
            max_image_tokens: rd32(bytes, 72),
            projection_dim: rd32(bytes, 76),
            activation: rd32(bytes, 80),
            layer_norm_eps_bits: rd32(bytes, 84),
            reserved,
        };
        if h.version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion { found: h.version, supported: FORMAT_VERSION });
        }
        if h.header_bytes != HEADER_BYTES as u32 {
            return Err(Error::BadHeader { field: "header_bytes", value: h.header_bytes });
        }
        if h.table_offset != HEADER_BYTES as u32 {
            return Err(Error::BadHeader { field: "table_offset", value: h.table_offset });
        }
        let mut k = 0;
        while k < h.reserved.len() {
            if h.reserved[k] != 0 {
                return Err(Error::BadHeader { field: "reserved", value: h.reserved[k] });
            }
            k += 1;
        }
        let precision = match Precision::from_u32(h.precision) {
            Some(p) => p,
            None => return Err(Error::BadHeader { field: "precision", value: h.precision }),
        };
        match precision {
            Precision::Int8 => {
                if h.group_size == 0 || !h.group_size.is_multiple_of(16) || h.group_size > crate::config::MAX_DIM {
                    return Err(Error::BadHeader { field: "group_size", value: h.group_size });
                }
            }
            _ => {
                if h.group_size != 0 {
                    return Err(Error::BadHeader { field: "group_size", value: h.group_size });
                }
            }
        }
        let config = match h.config() {
            Ok(c) => c,
            Err(e) => return Err(e),
        };
        if let Err(e) = config.validate() {
            return Err(e);
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
        })
    }

    /// The forward path.
    pub const fn precision(&self) -> Precision {
        match Precision::from_u32(self.precision) {
            Some(p) => p,
            None => Precision::F32,
        }
    }

    /// Exact arena size in bytes for a blob with this header; see [`crate::plan`].
    pub const fn arena_bytes(&self) -> Result<usize, Error> {
        match self.config() {
            Ok(c) => match crate::plan::ArenaPlan::new(&c, self.precision(), self.group_size as usize) {
                Ok(p) => Ok(p.total),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Little-endian encoding.
    pub fn to_bytes(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[..8].copy_from_slice(&self.magic);
        let words = [
            self.version,
            self.header_bytes,
            self.total_bytes,
            self.checksum,
            self.tensor_count,
            self.table_offset,
            self.data_offset,
            self.precision,
            self.group_size,
            self.num_layers,
            self.hidden,
            self.num_heads,
            self.intermediate,
            self.cross_attention_frequency,
            self.encoder_hidden,
            self.num_queries,
            self.max_image_tokens,
            self.projection_dim,
            self.activation,
            self.layer_norm_eps_bits,
        ];
        for (i, w) in words.iter().chain(self.reserved.iter()).enumerate() {
            out[8 + 4 * i..12 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

/// One 32-byte entry of the tensor table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct TensorEntry {
    /// [`Role`] code.
    pub role: u16,
    /// Layer index, 0 for tensors outside the layers.
    pub layer: u16,
    /// [`DType`] code.
    pub dtype: u8,
    /// Zero.
    pub reserved: [u8; 3],
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
    /// i8 only: group size along the columns, a non-zero multiple of 16.
    pub group: u32,
}

const _: () = assert!(core::mem::size_of::<TensorEntry>() == ENTRY_BYTES);

impl TensorEntry {
    /// Decodes the entry at `bytes[at..at + 32]`; `None` if out of range.
    pub fn parse(bytes: &[u8], at: usize) -> Option<TensorEntry> {
        let b = bytes.get(at..at.checked_add(ENTRY_BYTES)?)?;
        Some(TensorEntry {
            role: rd16(b, 0),
            layer: rd16(b, 2),
            dtype: b[4],
            reserved: [b[5], b[6], b[7]],
            rows: rd32(b, 8),
            cols: rd32(b, 12),
            offset: rd32(b, 16),
            bytes: rd32(b, 20),
            scales_offset: rd32(b, 24),
            group: rd32(b, 28),
        })
    }

    /// Little-endian encoding.
    pub fn to_bytes(&self) -> [u8; ENTRY_BYTES] {
        let mut o = [0u8; ENTRY_BYTES];
        o[0..2].copy_from_slice(&self.role.to_le_bytes());
        o[2..4].copy_from_slice(&self.layer.to_le_bytes());
        o[4] = self.dtype;
        o[5..8].copy_from_slice(&self.reserved);
        for (i, w) in [self.rows, self.cols, self.offset, self.bytes, self.scales_offset, self.group].iter().enumerate()
        {
            o[8 + 4 * i..12 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        o
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

/// What a tensor is. The codes are part of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
#[allow(missing_docs)] // the names say it; `write_name` gives the Hugging Face key
pub enum Role {
    QueryTokens = 0,
    InputNormWeight = 1,
    InputNormBias = 2,
    SelfQueryWeight = 10,
    SelfQueryBias = 11,
    SelfKeyWeight = 12,
    SelfKeyBias = 13,
    SelfValueWeight = 14,
    SelfValueBias = 15,
    SelfOutWeight = 16,
    SelfOutBias = 17,
    SelfNormWeight = 18,
    SelfNormBias = 19,
    CrossQueryWeight = 20,
    CrossQueryBias = 21,
    CrossKeyWeight = 22,
    CrossKeyBias = 23,
    CrossValueWeight = 24,
    CrossValueBias = 25,
    CrossOutWeight = 26,
    CrossOutBias = 27,
    CrossNormWeight = 28,
    CrossNormBias = 29,
    FfnUpWeight = 30,
    FfnUpBias = 31,
    FfnDownWeight = 32,
    FfnDownBias = 33,
    FfnNormWeight = 34,
    FfnNormBias = 35,
    ProjWeight = 40,
    ProjBias = 41,
}

const GLOBAL_ROLES: [Role; 3] = [Role::QueryTokens, Role::InputNormWeight, Role::InputNormBias];
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
const PROJ_ROLES: [Role; 2] = [Role::ProjWeight, Role::ProjBias];

impl Role {
    /// Decodes a table code.
    pub const fn from_u16(v: u16) -> Option<Role> {
        let all = [GLOBAL_ROLES.as_slice(), &SELF_ROLES, &CROSS_ROLES, &FFN_ROLES, &PROJ_ROLES];
        let mut i = 0;
        while i < all.len() {
            let mut j = 0;
            while j < all[i].len() {
                if all[i][j] as u16 == v {
                    return Some(all[i][j]);
                }
                j += 1;
            }
            i += 1;
        }
        None
    }

    /// Whether the tensor lives inside a layer.
    pub const fn in_layer(self) -> bool {
        !matches!(
            self,
            Role::QueryTokens | Role::InputNormWeight | Role::InputNormBias | Role::ProjWeight | Role::ProjBias
        )
    }

    /// Whether this is the weight matrix of a linear layer (the tensors that may be f16 or i8).
    pub const fn is_matrix(self) -> bool {
        matches!(
            self,
            Role::SelfQueryWeight
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
            Role::FfnUpWeight => [i, d],
            Role::FfnUpBias => [1, i],
            Role::FfnDownWeight => [d, i],
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

/// Table index of the first tensor of layer `l` (or of the projection, for `l == num_layers`).
const fn layer_base(c: &Config, l: u32) -> u32 {
    GLOBAL_ROLES.len() as u32
        + l * (SELF_ROLES.len() + FFN_ROLES.len()) as u32
        + c.cross_layers_before(l) * CROSS_ROLES.len() as u32
}

/// The tensor at table index `index` in the canonical order: query tokens, input LayerNorm,
/// then per layer self-attention, cross-attention (layers with `l % f == 0`) and
/// feed-forward, then the projection. `None` past the end.
pub fn slot(c: &Config, index: u32) -> Option<(Role, u16)> {
    if index < GLOBAL_ROLES.len() as u32 {
        return Some((GLOBAL_ROLES[index as usize], 0));
    }
    if index >= tensor_count(c) {
        return None;
    }
    // Layers are few (<= 65534); a linear scan keeps this obviously right.
    for l in 0..c.num_layers {
        let base = layer_base(c, l);
        let next = layer_base(c, l + 1);
        if index >= base && index < next {
            let mut k = (index - base) as usize;
            if k < SELF_ROLES.len() {
                return Some((SELF_ROLES[k], l as u16));
            }
            k -= SELF_ROLES.len();
            if c.has_cross(l) {
                if k < CROSS_ROLES.len() {
                    return Some((CROSS_ROLES[k], l as u16));
                }
                k -= CROSS_ROLES.len();
            }
            return Some((FFN_ROLES[k], l as u16));
        }
    }
    let k = (index - layer_base(c, c.num_layers)) as usize;
    Some((PROJ_ROLES[k], 0))
}

/// Table index of `role` in `layer`, or `None` if the config has no such tensor (e.g. a
/// cross-attention tensor of a layer without cross-attention).
pub fn index_of(c: &Config, role: Role, layer: u16) -> Option<u32> {
    let pos = |list: &[Role]| list.iter().position(|&r| r == role).map(|p| p as u32);
    if let Some(p) = pos(&GLOBAL_ROLES) {
        return Some(p);
    }
    if let Some(p) = pos(&PROJ_ROLES) {
        return (c.projection_dim > 0).then(|| layer_base(c, c.num_layers) + p);
    }
    let l = layer as u32;
    if l >= c.num_layers {
        return None;
    }
    let base = layer_base(c, l);
    let cross = if c.has_cross(l) { CROSS_ROLES.len() as u32 } else { 0 };
    if let Some(p) = pos(&SELF_ROLES) {
        return Some(base + p);
    }
    if let Some(p) = pos(&CROSS_ROLES) {
        return c.has_cross(l).then(|| base + SELF_ROLES.len() as u32 + p);
    }
    pos(&FFN_ROLES).map(|p| base + SELF_ROLES.len() as u32 + cross + p)
}

/// Data bytes of a tensor of `shape` stored as `dtype` (`group` for i8); `None` on overflow.
pub fn data_bytes(shape: [u32; 2], dtype: DType, group: u32) -> Option<usize> {
    let rows = shape[0] as usize;
    let cols = shape[1] as usize;
    match dtype {
        DType::F32 => rows.checked_mul(cols)?.checked_mul(4),
        DType::F16 => rows.checked_mul(cols)?.checked_mul(2),
        DType::I8 => rows.checked_mul(round_up(cols, group as usize)),
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

/// Checks one table entry against the canonical layout and the blob's bounds.
pub(crate) fn check_entry(c: &Config, header: &Header, index: u32, e: &TensorEntry) -> Result<(), Error> {
    let (role, layer) =
        slot(c, index).ok_or(Error::TensorCount { expected: tensor_count(c), found: header.tensor_count })?;
    let fail = |problem| Err(Error::Tensor { role, layer, problem });
    if e.role != role as u16 || e.layer != layer {
        return fail(TensorProblem::Unexpected { role: e.role, layer: e.layer });
    }
    if e.reserved != [0; 3] {
        return fail(TensorProblem::Reserved);
    }
    let expected = role.shape(c);
    if [e.rows, e.cols] != expected {
        return fail(TensorProblem::Shape { expected, found: [e.rows, e.cols] });
    }
    let dtype = match DType::from_u8(e.dtype) {
        Some(d) if d == DType::F32 || role.is_matrix() => d,
        _ => return fail(TensorProblem::DType(e.dtype)),
    };
    if dtype == DType::I8 {
        if e.group == 0 || !e.group.is_multiple_of(16) || e.group > crate::config::MAX_DIM {
            return fail(TensorProblem::Group(e.group));
        }
    } else if e.group != 0 || e.scales_offset != 0 {
        return fail(TensorProblem::Reserved);
    }
    let want = data_bytes(expected, dtype, e.group).ok_or(Error::SizeOverflow)?;
    if e.bytes as usize != want {
        return fail(TensorProblem::ByteCount { expected: want as u32, found: e.bytes });
    }
    let in_data = |offset: u32, len: usize| {
        let start = offset as usize;
        start.is_multiple_of(ALIGN)
            && start >= header.data_offset as usize
            && start.checked_add(len).is_some_and(|end| end <= header.total_bytes as usize)
    };
    if !in_data(e.offset, want) {
        return fail(TensorProblem::Bounds);
    }
    if dtype == DType::I8 {
        let sb = scale_bytes(expected, e.group).ok_or(Error::SizeOverflow)?;
        if !in_data(e.scales_offset, sb) {
            return fail(TensorProblem::Bounds);
        }
    }
    Ok(())
}
