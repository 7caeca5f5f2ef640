//! Model hyper-parameters, as stored in the blob header.

use crate::error::Error;

code_enum! {
    /// Feed-forward activation of the Q-Former (`hidden_act` in the Hugging Face config).
    /// [`Activation::name`] is the Hugging Face name.
    pub enum Activation: u32, from_u32 {
        /// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))` (`gelu`, BLIP-2's default).
        Gelu = 0 => "gelu",
        /// Tanh approximation of GELU (`gelu_pytorch_tanh`, `gelu_new`).
        GeluTanh = 1 => "gelu_pytorch_tanh",
        /// `max(x, 0)`.
        Relu = 2 => "relu",
    }
}

code_enum! {
    /// Which forward path a blob runs: the storage of its matrices and the arithmetic of its
    /// attention. Chosen by `quantize --dtype`; [`Precision::name`] is the `--dtype` name.
    pub enum Precision: u32, from_u32 {
        /// f32 weights, f32 arithmetic.
        F32 = 0 => "f32",
        /// fp16 weights, f32 accumulation, f32 LayerNorm/softmax.
        F16 = 1 => "fp16",
        /// int8 weights with group-wise scales, dynamically quantized int8 activations, int8
        /// attention products; LayerNorm, softmax and activation in f32.
        Int8 = 2 => "int8",
    }
}

/// The int8 group-size rule, the one definition the reader, the arena plan and the writer
/// share: a non-zero multiple of 16 (the kernels' tile of bytes) no larger than [`MAX_DIM`].
pub const fn valid_group(group: u32) -> bool {
    group != 0 && group.is_multiple_of(16) && group <= MAX_DIM
}

/// Q-Former hyper-parameters (see `shared/notes/qformer.md` for their meaning).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// L, number of Q-Former layers.
    pub num_layers: u32,
    /// d, width of the query tokens.
    pub hidden: u32,
    /// H, attention heads; `hidden % num_heads == 0`.
    pub num_heads: u32,
    /// Width of the feed-forward layer.
    pub intermediate: u32,
    /// f: layer `l` has cross-attention when `l % f == 0`.
    pub cross_attention_frequency: u32,
    /// d_v, width of the image features.
    pub encoder_hidden: u32,
    /// N, number of learned query tokens.
    pub num_queries: u32,
    /// Largest number M of image tokens the arena is planned for.
    pub max_image_tokens: u32,
    /// Output width of the language projection, 0 when the model has none.
    pub projection_dim: u32,
    /// Feed-forward activation.
    pub activation: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f32,
    /// InstructBLIP: the most instruction tokens T_max (the `[CLS] ... [SEP]` ids) a forward
    /// accepts, the rows of the stored position embeddings and what the arena is planned for.
    /// 0: the blob has no text parts (BLIP-2, MiniGPT-4), and then so are the next two.
    pub max_text_tokens: u32,
    /// InstructBLIP: V, the vocabulary size (rows of the word embeddings); 0 without text.
    pub vocab_size: u32,
    /// InstructBLIP: bytes of the vocabulary's tokens, concatenated; 0 without text.
    pub vocab_bytes: u32,
}

/// Largest value any single dimension may take; keeps every product in `u32`/`usize` range
/// on 32-bit targets when combined with [`Config::validate`]'s product checks.
pub const MAX_DIM: u32 = 1 << 20;

impl Config {
    /// BLIP-2's Q-Former (`Salesforce/blip2-opt-2.7b`): 12 layers, 768 wide, 12 heads, 3072
    /// feed-forward, cross-attention every 2nd layer, 32 queries, 257 x 1408 image features,
    /// projection to OPT-2.7b's 2560.
    pub const BLIP2: Config = Config {
        num_layers: 12,
        hidden: 768,
        num_heads: 12,
        intermediate: 3072,
        cross_attention_frequency: 2,
        encoder_hidden: 1408,
        num_queries: 32,
        max_image_tokens: 257,
        projection_dim: 2560,
        activation: Activation::Gelu,
        layer_norm_eps: 1e-12,
        max_text_tokens: 0,
        vocab_size: 0,
        vocab_bytes: 0,
    };

    /// InstructBLIP's Q-Former (`Salesforce/instructblip-vicuna-7b`): BLIP-2's, with the
    /// BERT-base uncased vocabulary plus `[DEC]` (30,523 tokens of 200,991 bytes),
    /// instructions up to 128 tokens (LAVIS's `max_txt_len`) and a projection to Vicuna-7B's
    /// 4096.
    pub const INSTRUCTBLIP: Config =
        Config { projection_dim: 4096, max_text_tokens: 128, vocab_size: 30523, vocab_bytes: 200_991, ..Config::BLIP2 };

    /// Whether the blob carries InstructBLIP's text parts (embeddings, text feed-forward,
    /// vocabulary).
    pub const fn has_text(&self) -> bool {
        self.max_text_tokens > 0
    }

    /// Rows the self-attention and the hidden state are planned for: N + T_max.
    pub const fn max_tokens(&self) -> usize {
        self.num_queries as usize + self.max_text_tokens as usize
    }

    /// Size of one attention head.
    pub const fn head_dim(&self) -> usize {
        (self.hidden / self.num_heads) as usize
    }

    /// Whether layer `l` has cross-attention.
    pub const fn has_cross(&self, layer: u32) -> bool {
        layer.is_multiple_of(self.cross_attention_frequency)
    }

    /// Number of layers with cross-attention among layers `0..layer`.
    pub const fn cross_layers_before(&self, layer: u32) -> u32 {
        layer.div_ceil(self.cross_attention_frequency)
    }

    /// Checks that every field is in range and that the sizes the runtime derives from them
    /// cannot overflow. `const` so firmware can validate an embedded header at compile time.
    pub const fn validate(&self) -> Result<(), Error> {
        let dims: [(&'static str, u32); 8] = [
            ("num_layers", self.num_layers),
            ("hidden", self.hidden),
            ("num_heads", self.num_heads),
            ("intermediate", self.intermediate),
            ("cross_attention_frequency", self.cross_attention_frequency),
            ("encoder_hidden", self.encoder_hidden),
            ("num_queries", self.num_queries),
            ("max_image_tokens", self.max_image_tokens),
        ];
        let mut i = 0;
        while i < dims.len() {
            let (field, value) = dims[i];
            if value == 0 || value > MAX_DIM {
                return Err(Error::InvalidConfig { field, value });
            }
            i += 1;
        }
        if self.projection_dim > MAX_DIM {
            return Err(Error::InvalidConfig { field: "projection_dim", value: self.projection_dim });
        }
        if self.num_layers > u16::MAX as u32 - 1 {
            return Err(Error::InvalidConfig { field: "num_layers", value: self.num_layers });
        }
        if !self.hidden.is_multiple_of(self.num_heads) {
            return Err(Error::InvalidConfig { field: "num_heads", value: self.num_heads });
        }
        let text = [self.max_text_tokens, self.vocab_size, self.vocab_bytes];
        let (fields, mut k) = (["max_text_tokens", "vocab_size", "vocab_bytes"], 0);
        while k < text.len() {
            // All three zero (no text parts), or all non-zero and in range.
            let zero = text[k] == 0;
            if (zero != (self.max_text_tokens == 0)) || text[k] > MAX_DIM * 16 || (k < 2 && text[k] > MAX_DIM) {
                return Err(Error::InvalidConfig { field: fields[k], value: text[k] });
            }
            k += 1;
        }
        // Three tokens at least: [CLS], [SEP], [UNK] (and [PAD], which may be one of them
        // in a crafted vocabulary but is its own in BERT's), each at least one byte.
        if self.has_text() && (self.vocab_size < 3 || self.vocab_bytes < self.vocab_size) {
            return Err(Error::InvalidConfig { field: "vocab_size", value: self.vocab_size });
        }
        let eps = self.layer_norm_eps;
        // `!(eps > 0)` also rejects NaN.
        if !(eps > 0.0 && eps < 1.0) {
            return Err(Error::InvalidConfig { field: "layer_norm_eps", value: eps.to_bits() });
        }
        // Every matrix the runtime touches must have a byte size that fits in usize and u32.
        let big = [
            (self.max_image_tokens as u64) * (self.encoder_hidden as u64),
            (self.max_image_tokens as u64) * (self.hidden as u64),
            (self.intermediate as u64) * (self.hidden as u64),
            (self.hidden as u64) * (self.encoder_hidden as u64),
            (self.projection_dim as u64) * (self.hidden as u64),
            (self.num_queries as u64) * (self.max_image_tokens as u64),
            (self.num_queries as u64) * (self.intermediate as u64),
            (self.vocab_size as u64 + 1) * (self.hidden as u64),
            (self.max_tokens() as u64) * (self.hidden as u64),
            (self.max_tokens() as u64) * (self.max_tokens() as u64 + self.max_image_tokens as u64),
            self.vocab_bytes as u64,
        ];
        let mut j = 0;
        while j < big.len() {
            if big[j] * 4 > (u32::MAX as u64) / 4 || big[j] * 4 > (usize::MAX as u64) / 4 {
                return Err(Error::SizeOverflow);
            }
            j += 1;
        }
        Ok(())
    }
}
