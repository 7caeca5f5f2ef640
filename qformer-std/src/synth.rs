//! Deterministic synthetic models and inputs, generated here so no download is needed.
//!
//! The generator is a fixed SplitMix64 stream with Box-Muller normals, owned by this crate
//! so that a given seed yields the same weights with every dependency version.

use qformer_core::blob::{self, Role};
use qformer_core::{Activation, Config};

use crate::vocab::TokenizerSpec;
use crate::weights::{holds_values, Tensor, VocabTables, Weights};
use qformer_core::tokenizer::TokenizerOptions;

/// SplitMix64 with Box-Muller normals.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// How to draw a synthetic model's weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spec {
    /// The shapes.
    pub config: Config,
    /// Std of linear weights and query tokens.
    pub weight_std: f32,
    /// Std of linear and LayerNorm biases.
    pub bias_std: f32,
    /// LayerNorm gains are `1 + gain_std * normal`.
    pub gain_std: f32,
    /// Seed.
    pub seed: u64,
}

/// The model `qformer demo` runs: 4 layers, 256 wide, 8 heads, 1024 feed-forward,
/// cross-attention every 2nd layer, 32 queries, 65 x 384 image features, projection to 512.
pub const DEMO: Config = Config {
    num_layers: 4,
    hidden: 256,
    num_heads: 8,
    intermediate: 1024,
    cross_attention_frequency: 2,
    encoder_hidden: 384,
    num_queries: 32,
    max_image_tokens: 65,
    projection_dim: 512,
    activation: Activation::Gelu,
    layer_norm_eps: 1e-12,
    max_text_tokens: 0,
    vocab_size: 0,
    vocab_bytes: 0,
};

/// The `firmware/` examples' model (`qformer synth --preset mcu`), sized for a
/// microcontroller: 4 layers, 128 wide, 4 heads (of 32), 256 feed-forward, cross-attention
/// every 2nd layer, 16 queries, 50 x 192 image features (a 7 x 7 patch grid plus CLS from a
/// DeiT-Tiny-sized encoder), projection to 128. In int8 (groups of 32) the blob is 815 KiB
/// and the arena 87 KiB, so blob, code and data fit 1 MiB of flash and 256 KiB of RAM.
pub const MCU: Config = Config {
    num_layers: 4,
    hidden: 128,
    num_heads: 4,
    intermediate: 256,
    cross_attention_frequency: 2,
    encoder_hidden: 192,
    num_queries: 16,
    max_image_tokens: 50,
    projection_dim: 128,
    activation: Activation::Gelu,
    layer_norm_eps: 1e-12,
    max_text_tokens: 0,
    vocab_size: 0,
    vocab_bytes: 0,
};

/// The synthetic models' vocabulary: BERT's special tokens, then letters, digits and
/// punctuation with their `##` continuations, then common words of visual questions; an
/// uncased BERT WordPiece vocabulary in miniature, so the tokenizer gives a realistic mix of
/// whole words, pieces and `[UNK]`. A model with more rows pads it with unused tokens.
pub const WORDS: &str = "[PAD] [UNK] [CLS] [SEP] [MASK] \
    a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9 . , ? ! ' \" - : ; ( ) / \
    ##a ##b ##c ##d ##e ##f ##g ##h ##i ##j ##k ##l ##m ##n ##o ##p ##q ##r ##s ##t ##u ##v ##w ##x ##y ##z \
    ##0 ##1 ##2 ##3 ##4 ##5 ##6 ##7 ##8 ##9 ##s ##ed ##ing ##er ##ly \
    the of and to in is on it that this with for are what where how many which who why does do there \
    picture image photo scene describe detail details color colour colours red blue green yellow black white \
    car cars bus dog dogs cat person people man woman child sky water tree trees road street building \
    room table chair window door sign text left right front back behind near next top bottom \
    large small big little one two three number count shape kind type doing holding wearing \
    answer question short sentence briefly please can you tell me about be";

/// The tokens of [`WORDS`] padded to `rows` (unused tokens no text tokenizes to: `[` is split
/// off as punctuation before WordPiece looks words up), as the blob stores them.
pub fn vocab(rows: usize) -> VocabTables {
    let mut tokens: Vec<String> = Vec::new();
    for w in WORDS.split_whitespace() {
        if !tokens.iter().any(|t| t == w) {
            tokens.push(w.to_string());
        }
    }
    let first_added = rows.max(tokens.len()) as u32;
    for i in tokens.len()..rows {
        tokens.push(format!("[unused{i}]"));
    }
    let options = TokenizerOptions {
        lowercase: true,
        strip_accents: true,
        truncate_left: false,
        cls: 2,
        sep: 3,
        unk: 1,
        pad: 0,
        first_added,
    };
    let (text, offsets, sorted) = TokenizerSpec { tokens, options }.tables();
    VocabTables { text, offsets, sorted, options }
}

/// Tokens of [`WORDS`] (the vocabulary of the small synthetic InstructBLIP models).
pub fn word_count() -> u32 {
    (vocab(0).offsets.len() - 1) as u32
}

/// The demo's model with InstructBLIP's text parts: instructions up to 32 tokens over
/// [`WORDS`].
pub fn demo_instruct() -> Config {
    with_text(DEMO, 32, word_count())
}

/// The firmware examples' model with InstructBLIP's text parts: instructions up to 16 tokens
/// over [`WORDS`].
pub fn mcu_instruct() -> Config {
    with_text(MCU, 16, word_count())
}

/// InstructBLIP's Q-Former at full size ([`Config::INSTRUCTBLIP`]: BLIP-2's, the BERT-sized
/// vocabulary of 30,523 rows, instructions up to 128 tokens, projection to 4096).
pub fn instructblip() -> Config {
    with_text(Config::INSTRUCTBLIP, 128, Config::INSTRUCTBLIP.vocab_size)
}

/// `config` with InstructBLIP's text parts: instructions up to `max_text_tokens`, a
/// vocabulary of `vocab_size` rows ([`vocab`]).
pub fn with_text(config: Config, max_text_tokens: u32, vocab_size: u32) -> Config {
    let bytes = vocab(vocab_size as usize).text.len() as u32;
    Config { max_text_tokens, vocab_size, vocab_bytes: bytes, ..config }
}

impl Spec {
    /// Hugging Face's initialisation (`initializer_range` 0.02): weights N(0, 0.02), biases
    /// 0, LayerNorm gains 1.
    pub fn hf_init(config: Config, seed: u64) -> Spec {
        Spec { config, weight_std: 0.02, bias_std: 0.0, gain_std: 0.0, seed }
    }
    /// Weights large enough that attention is far from uniform, with randomised LayerNorm
    /// gains and biases (the demo's model).
    pub fn textured(config: Config, seed: u64) -> Spec {
        Spec { config, weight_std: 1.0 / (config.hidden as f32).sqrt() * 1.5, bias_std: 0.05, gain_std: 0.2, seed }
    }

    /// Draws the weights.
    pub fn build(&self) -> Weights {
        let c = self.config;
        let mut rng = Rng::new(self.seed);
        let tensors = (0..blob::tensor_count(&c))
            .map(|i| {
                let (role, layer) = blob::slot(&c, i).expect("index below tensor_count");
                let [r, cols] = role.shape(&c);
                let (rows, cols) = (r as usize, cols as usize);
                let is_gain = matches!(
                    role,
                    Role::InputNormWeight
                        | Role::SelfNormWeight
                        | Role::CrossNormWeight
                        | Role::FfnNormWeight
                        | Role::TextNormWeight
                );
                let values = if holds_values(role) { rows * cols } else { 0 };
                let data = (0..values)
                    .map(|_| {
                        let z = rng.normal() as f32;
                        if is_gain {
                            1.0 + self.gain_std * z
                        } else if role.is_matrix() {
                            self.weight_std * z
                        } else if role == Role::QueryTokens {
                            z
                        } else {
                            self.bias_std * z
                        }
                    })
                    .collect();
                Tensor { role, layer, rows, cols, data }
            })
            .collect();
        let vocab = c.has_text().then(|| vocab(c.vocab_size as usize));
        Weights::new(c, tensors, vocab).expect("synthetic weights follow the canonical layout")
    }
}

/// `batch` images of `m` tokens of width `dim`, N(0, 1), with the listed channels scaled
/// by `outlier_scale` (real vision features have such outlier channels).
pub fn images(seed: u64, batch: usize, m: usize, dim: usize, outliers: &[usize], outlier_scale: f32) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut v: Vec<f32> = (0..batch * m * dim).map(|_| rng.normal() as f32).collect();
    for (i, x) in v.iter_mut().enumerate() {
        if outliers.contains(&(i % dim)) {
            *x *= outlier_scale;
        }
    }
    v
}
