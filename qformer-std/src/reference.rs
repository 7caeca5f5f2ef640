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
/// (`[q.w, q.b, k.w, k.b, v.w, v.b, o.w, o.b, ...]`); returns the output projection. Keys
/// whose `attend` is false get no weight (transformers adds the dtype's minimum to their
/// scores).
fn attention(x: &Mat, source: &Mat, attend: &[bool], w: &Weights, roles: &[Role; 10], layer: u16) -> Mat {
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
            let max = (0..source.rows).filter(|&j| attend[j]).map(|j| scores[j]).fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().zip(attend).map(|(s, &a)| if a { (s - max).exp() } else { 0.0 }).collect();
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
    forward_text(w, image, m, None)
}

/// The feed-forward block of `roles` (`[up.w, up.b, down.w, down.b, norm.w, norm.b]`).
fn feed_forward(x: &Mat, w: &Weights, roles: &[Role; 6], layer: u16) -> Mat {
    let mut h = linear(x, w, roles[0], roles[1], layer);
    h.v.iter_mut().for_each(|v| *v = activate(w.config.activation, *v));
    let f = linear(&h, w, roles[2], roles[3], layer);
    add_norm(x, &f, w, roles[4], roles[5], layer)
}

/// Rows `range` of `x`.
fn rows(x: &Mat, range: std::ops::Range<usize>) -> Mat {
    Mat { rows: range.len(), cols: x.cols, v: x.v[range.start * x.cols..range.end * x.cols].to_vec() }
}

/// Rows of `a` then rows of `b`.
fn stack(a: &Mat, b: &Mat) -> Mat {
    Mat { rows: a.rows + b.rows, cols: a.cols, v: a.v.iter().chain(&b.v).copied().collect() }
}

/// Runs the reference on one image's features `[m, d_v]` with an InstructBLIP instruction
/// `(ids, mask)` (as transformers' `InstructBlipQFormerModel`: word plus position embeddings
/// after the queries, one LayerNorm over all, self-attention over every position with the
/// padding keys masked, cross-attention and the query feed-forward for the queries, the text
/// feed-forward for the instruction), or without one.
pub fn forward_text(w: &Weights, image: &[f32], m: usize, text: Option<(&[u32], &[u8])>) -> Output {
    let c = &w.config;
    let (n, d) = (c.num_queries as usize, c.hidden as usize);
    let z = Mat::from_f32(m, c.encoder_hidden as usize, image);
    let mut input = Mat::from_f32(n, d, &w.get(Role::QueryTokens, 0).data);
    let mut attend = vec![true; n];
    if let Some((ids, mask)) = text {
        let (words, positions) = (&w.get(Role::WordEmbeddings, 0).data, &w.get(Role::PositionEmbeddings, 0).data);
        let mut t = Mat { rows: ids.len(), cols: d, v: vec![0.0; ids.len() * d] };
        for (p, &id) in ids.iter().enumerate() {
            for j in 0..d {
                t.v[p * d + j] = words[id as usize * d + j] as f64 + positions[p * d + j] as f64;
            }
        }
        input = stack(&input, &t);
        attend.extend(mask.iter().map(|&v| v != 0));
    }
    let zero = Mat { rows: input.rows, cols: d, v: vec![0.0; input.v.len()] };
    let mut x = add_norm(&input, &zero, w, Role::InputNormWeight, Role::InputNormBias, 0);
    let mut hidden_states = vec![rows(&x, 0..n).to_f32()];
    let all = vec![true; m];
    for l in 0..c.num_layers as u16 {
        let a = attention(&x, &x, &attend, w, &qformer_core::blob::SELF_ROLES, l);
        x = add_norm(&x, &a, w, Role::SelfNormWeight, Role::SelfNormBias, l);
        let mut q = rows(&x, 0..n);
        let instruction = rows(&x, n..x.rows);
        if c.has_cross(l as u32) {
            let a = attention(&q, &z, &all, w, &qformer_core::blob::CROSS_ROLES, l);
            q = add_norm(&q, &a, w, Role::CrossNormWeight, Role::CrossNormBias, l);
        }
        q = feed_forward(&q, w, &qformer_core::blob::FFN_ROLES, l);
        x = if instruction.rows > 0 {
            stack(&q, &feed_forward(&instruction, w, &qformer_core::blob::TEXT_FFN_ROLES, l))
        } else {
            q
        };
        hidden_states.push(rows(&x, 0..n).to_f32());
    }
    let x = rows(&x, 0..n);
    let projected = (c.projection_dim > 0).then(|| linear(&x, w, Role::ProjWeight, Role::ProjBias, 0).to_f32());
    Output { hidden_states, output: x.to_f32(), projected }
}
