//! The fp32 reference: the Q-Former's math written for clarity, in f64, straight from the
//! checkpoint's tensors. It shares no kernel with `qformer-core`; it is what `verify`
//! compares blobs against, and it is tested against Hugging Face's outputs.

use qformer_core::blob::Role;
use qformer_core::Activation;

use crate::weights::Weights;

/// Outputs of one image.
#[derive(Clone, Debug)]
pub struct Output {
    /// Hidden state after the input LayerNorm and after each layer, `L + 1` entries of
    /// `[N, d]`.
    pub hidden_states: Vec<Vec<f32>>,
    /// Final query outputs `[N, d]`.
    pub output: Vec<f32>,
    /// Language projection `[N, d_llm]`, when the model has one.
    pub projected: Option<Vec<f32>>,
}

/// A row-major matrix.
struct Mat {
    rows: usize,
    cols: usize,
    v: Vec<f64>,
}

impl Mat {
    fn from_f32(rows: usize, cols: usize, v: &[f32]) -> Mat {
        Mat { rows, cols, v: v.iter().map(|&x| x as f64).collect() }
    }
    fn at(&self, r: usize, c: usize) -> f64 {
        self.v[r * self.cols + c]
    }
    fn to_f32(&self) -> Vec<f32> {
        self.v.iter().map(|&x| x as f32).collect()
    }
}

/// `x Wᵀ + b` with `W` stored `[out, in]`.
fn linear(x: &Mat, w: &Weights, weight: Role, bias: Role, layer: u16) -> Mat {
    let (wt, bt) = (w.get(weight, layer), w.get(bias, layer));
    let mut out = Mat { rows: x.rows, cols: wt.rows, v: vec![0.0; x.rows * wt.rows] };
    for i in 0..x.rows {
        for j in 0..wt.rows {
            let mut s = bt.data[j] as f64;
            for k in 0..x.cols {
                s += x.at(i, k) * wt.data[j * wt.cols + k] as f64;
            }
            out.v[i * out.cols + j] = s;
        }
    }
    out
}

/// `LayerNorm(x + residual)` with the stored gain and bias.
fn add_norm(x: &Mat, residual: &Mat, w: &Weights, gain: Role, bias: Role, layer: u16) -> Mat {
    let (g, b) = (&w.get(gain, layer).data, &w.get(bias, layer).data);
    let eps = w.config.layer_norm_eps as f64;
    let mut out = Mat { rows: x.rows, cols: x.cols, v: vec![0.0; x.v.len()] };
    for r in 0..x.rows {
        let row: Vec<f64> = (0..x.cols).map(|c| x.at(r, c) + residual.at(r, c)).collect();
        let mean = row.iter().sum::<f64>() / x.cols as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / x.cols as f64;
        for c in 0..x.cols {
            out.v[r * x.cols + c] = (row[c] - mean) / (var + eps).sqrt() * g[c] as f64 + b[c] as f64;
        }
    }
    out
}

/// Multi-head attention of queries `x` over `source`, with the four projections of `roles`
/// (`[q.w, q.b, k.w, k.b, v.w, v.b, o.w, o.b, ...]`); returns the output projection.
fn attention(x: &Mat, source: &Mat, w: &Weights, roles: &[Role; 10], layer: u16) -> Mat {
    let q = linear(x, w, roles[0], roles[1], layer);
    let k = linear(source, w, roles[2], roles[3], layer);
    let v = linear(source, w, roles[4], roles[5], layer);
    let heads = w.config.num_heads as usize;
    let dh = w.config.head_dim();
    let mut ctx = Mat { rows: x.rows, cols: q.cols, v: vec![0.0; x.rows * q.cols] };
    for h in 0..heads {
        for i in 0..x.rows {
            let scores: Vec<f64> = (0..source.rows)
                .map(|j| (0..dh).map(|c| q.at(i, h * dh + c) * k.at(j, h * dh + c)).sum::<f64>() / (dh as f64).sqrt())
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for c in 0..dh {
                ctx.v[i * ctx.cols + h * dh + c] = (0..source.rows).map(|j| e[j] / sum * v.at(j, h * dh + c)).sum();
            }
        }
    }
    linear(&ctx, w, roles[6], roles[7], layer)
}

fn activate(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        Activation::GeluTanh => {
            0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::Relu => x.max(0.0),
    }
}

/// Runs the reference on one image's features `[m, d_v]`.
pub fn forward(w: &Weights, image: &[f32], m: usize) -> Output {
    let c = &w.config;
    let (n, d) = (c.num_queries as usize, c.hidden as usize);
    let z = Mat::from_f32(m, c.encoder_hidden as usize, image);
    let queries = Mat::from_f32(n, d, &w.get(Role::QueryTokens, 0).data);
    let zero = Mat { rows: n, cols: d, v: vec![0.0; n * d] };
    let mut x = add_norm(&queries, &zero, w, Role::InputNormWeight, Role::InputNormBias, 0);
    let mut hidden_states = vec![x.to_f32()];
    for l in 0..c.num_layers as u16 {
        let a = attention(&x, &x, w, &qformer_core::blob::SELF_ROLES, l);
        x = add_norm(&x, &a, w, Role::SelfNormWeight, Role::SelfNormBias, l);
        if c.has_cross(l as u32) {
            let a = attention(&x, &z, w, &qformer_core::blob::CROSS_ROLES, l);
            x = add_norm(&x, &a, w, Role::CrossNormWeight, Role::CrossNormBias, l);
        }
        let mut h = linear(&x, w, Role::FfnUpWeight, Role::FfnUpBias, l);
        h.v.iter_mut().for_each(|v| *v = activate(c.activation, *v));
        let f = linear(&h, w, Role::FfnDownWeight, Role::FfnDownBias, l);
        x = add_norm(&x, &f, w, Role::FfnNormWeight, Role::FfnNormBias, l);
        hidden_states.push(x.to_f32());
    }
    let projected = (c.projection_dim > 0).then(|| linear(&x, w, Role::ProjWeight, Role::ProjBias, 0).to_f32());
    Output { hidden_states, output: x.to_f32(), projected }
}
