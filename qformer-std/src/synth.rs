//! Deterministic synthetic models and inputs, generated here so no download is needed.
//!
//! The generator is a fixed SplitMix64 stream with Box-Muller normals, owned by this crate
//! so that a given seed yields the same weights with every dependency version.

use qformer_core::blob::{self, Role};
use qformer_core::{Activation, Config};

use crate::weights::{Tensor, Weights};

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
                    Role::InputNormWeight | Role::SelfNormWeight | Role::CrossNormWeight | Role::FfnNormWeight
                );
                let data = (0..rows * cols)
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
        Weights::new(c, tensors, None).expect("synthetic weights follow the canonical layout")
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
