//! [`Model`]: a validated view of a blob, and the forward pass.

use half::f16;

use crate::blob::{self, DType, Header, Role, TensorEntry, ALIGN};
use crate::config::{Config, Precision};
use crate::error::{Buffer, Error, TensorProblem};
use crate::image::{ImageScratch, QImage};
use crate::kernels::gemm::Shape;
use crate::kernels::norm;
use crate::kernels::quant::{self, Strided};
use crate::kernels::{Kernels, QRows};
use crate::parallel::{rows_per_chunk, Executor, Sequential};
use crate::plan::{ArenaPlan, QBuf};

/// Receives the hidden state after the input LayerNorm (`index` 0) and after each layer
/// (`index` = layer + 1), as `[N, d]` — the same indexing as Hugging Face's
/// `hidden_states`.
pub trait LayerObserver {
    /// Called once per index.
    fn layer(&mut self, index: usize, hidden: &[f32]);
}

impl<F: FnMut(usize, &[f32])> LayerObserver for F {
    fn layer(&mut self, index: usize, hidden: &[f32]) {
        self(index, hidden)
    }
}

/// Stored weights of one linear layer.
#[derive(Clone, Copy, Debug)]
enum Weights<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    I8(QRows<'a>),
}

/// One linear layer `y = x Wᵀ + b`, `W` of shape `[n, k]`.
#[derive(Clone, Copy, Debug)]
struct Linear<'a> {
    w: Weights<'a>,
    b: &'a [f32],
    n: usize,
    k: usize,
}

/// The input of a linear layer in the form its weights need.
#[derive(Clone, Copy)]
enum Input<'s> {
    F32(&'s [f32]),
    Q(QRows<'s>),
}

impl Linear<'_> {
    /// `out[r * ldo + j] = (input · Wᵀ)[r, j] + b[j]` for `rows` rows, spread over the
    /// executor's threads in blocks of whole rows.
    fn apply(
        &self,
        kernels: &Kernels,
        exec: &dyn Executor,
        input: Input<'_>,
        rows: usize,
        out: &mut [f32],
        ldo: usize,
    ) {
        let chunk = rows_per_chunk(rows, exec.threads());
        let out = &mut out[..(rows.max(1) - 1) * ldo + if rows == 0 { 0 } else { self.n }];
        let task = |i: usize, block: &mut [f32]| {
            let r0 = i * chunk;
            let m = chunk.min(rows - r0);
            let s = Shape { m, n: self.n, k: self.k, ldo };
            match (self.w, input) {
                (Weights::F32(w), Input::F32(a)) => kernels.f.run_f32(&a[r0 * self.k..], w, Some(self.b), block, s),
                (Weights::F16(w), Input::F32(a)) => kernels.f.run_f16(&a[r0 * self.k..], w, Some(self.b), block, s),
                (Weights::I8(w), Input::Q(a)) => kernels.q8.run(&a.rows(r0..r0 + m), &w, Some(self.b), block, s),
                // The model validates at load that every matrix has its precision's dtype,
                // and the forward quantizes exactly the inputs of int8 layers.
                _ => debug_assert!(false, "weight dtype and input form disagree"),
            }
        };
        if rows <= chunk {
            task(0, out);
        } else {
            exec.for_each_chunk(out, chunk * ldo, &task);
        }
    }

    /// The int8 weights, if these are.
    fn int8(&self) -> Option<&QRows<'_>> {
        match &self.w {
            Weights::I8(w) => Some(w),
            _ => None,
        }
    }

    /// The layer restricted to the outputs `range` (rows of `W`). Every int8 kernel computes
    /// each output on its own, so these outputs get the same bits as in the whole layer.
    fn outputs(&self, range: core::ops::Range<usize>) -> Self {
        let (k, n) = (self.k, range.len());
        let w = match self.w {
            Weights::F32(w) => Weights::F32(&w[range.start * k..range.end * k]),
            Weights::F16(w) => Weights::F16(&w[range.start * k..range.end * k]),
            Weights::I8(w) => Weights::I8(w.rows(range.clone())),
        };
        Linear { w, b: &self.b[range], n, k }
    }
}

/// The four projections and the LayerNorm of one attention block.
struct AttentionWeights<'a> {
    q: Linear<'a>,
    k: Linear<'a>,
    v: Linear<'a>,
    o: Linear<'a>,
    gain: &'a [f32],
    bias: &'a [f32],
}

/// The image features as the forward's precision reads them: as given (f32, fp16), or
/// quantized once with their outlier channels apart (int8).
enum Features<'s> {
    F32(&'s [f32]),
    Int8(QImage<'s>),
}

/// The two attention blocks of a layer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    SelfAttention,
    CrossAttention,
}

/// A Q-Former whose weights are read in place from a validated blob.
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    blob: &'a [u8],
    header: Header,
    config: Config,
    precision: Precision,
    plan: ArenaPlan,
    kernels: Kernels,
}

impl<'a> Model<'a> {
    /// Validates `blob` ([`blob::validate`]: identity, integrity, header, table, contents)
    /// and wraps it. Reads nothing out of bounds and never panics, whatever the bytes.
    pub fn from_blob(blob: &'a [u8]) -> Result<Model<'a>, Error> {
        let header = blob::validate(blob)?;
        let config = header.config()?;
        let precision = header.precision();
        let plan = ArenaPlan::new(&config, precision, header.group_size as usize)?;
        Ok(Model { blob, header, config, precision, plan, kernels: Kernels::COMPILED })
    }

    /// The same model running with `kernels` (e.g. variants detected at run time). Every
    /// variant gives bit-identical int8 results.
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// The kernels this model runs with.
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// The model config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The forward path of this blob.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The arena plan.
    pub fn plan(&self) -> &ArenaPlan {
        &self.plan
    }

    /// Exact arena bytes [`Model::forward`] needs.
    pub fn arena_bytes(&self) -> usize {
        self.plan.total
    }

    /// The table entry of `role` in `layer`.
    pub fn entry(&self, role: Role, layer: u16) -> Option<TensorEntry> {
        TensorEntry::at_index(self.blob, blob::index_of(&self.config, role, layer)?)
    }

    fn bytes(&self, offset: u32, len: usize) -> &'a [u8] {
        // In bounds: checked for every entry by `from_blob`.
        &self.blob[offset as usize..offset as usize + len]
    }

    /// An f32 tensor.
    fn f32s(&self, role: Role, layer: u32) -> Result<&'a [f32], Error> {
        let e = self.entry(role, layer as u16).ok_or(Error::InvalidConfig { field: "layer", value: layer })?;
        bytemuck::try_cast_slice(self.bytes(e.offset, e.bytes as usize))
            .map_err(|_| Error::Misaligned { buffer: Buffer::Blob, align: ALIGN })
    }

    fn linear(&self, weight: Role, bias: Role, layer: u32) -> Result<Linear<'a>, Error> {
        let e = self.entry(weight, layer as u16).ok_or(Error::InvalidConfig { field: "layer", value: layer })?;
        let raw = self.bytes(e.offset, e.bytes as usize);
        let misaligned = |_| Error::Misaligned { buffer: Buffer::Blob, align: ALIGN };
        let w = match DType::from_u8(e.dtype) {
            Some(DType::F32) => Weights::F32(bytemuck::try_cast_slice(raw).map_err(misaligned)?),
            Some(DType::F16) => Weights::F16(bytemuck::try_cast_slice(raw).map_err(misaligned)?),
            Some(DType::I8) => {
                let shape = [e.rows, e.cols];
                let sb = blob::scale_bytes(shape, e.group).ok_or(Error::SizeOverflow)?;
                Weights::I8(QRows {
                    values: bytemuck::cast_slice(raw),
                    scales: bytemuck::try_cast_slice(self.bytes(e.scales_offset, sb)).map_err(misaligned)?,
                    stride: e.stride(),
                    group: e.group as usize,
                })
            }
            None => {
                return Err(Error::Tensor { role: weight, layer: layer as u16, problem: TensorProblem::DType(e.dtype) })
            }
        };
        Ok(Linear { w, b: self.f32s(bias, layer)?, n: e.rows as usize, k: e.cols as usize })
    }

    /// The four projections and the LayerNorm of layer `l`'s `block`.
    fn attention_weights(&self, block: Block, l: u32) -> Result<AttentionWeights<'a>, Error> {
        let r = if block == Block::SelfAttention { &blob::SELF_ROLES } else { &blob::CROSS_ROLES };
        Ok(AttentionWeights {
            q: self.linear(r[0], r[1], l)?,
            k: self.linear(r[2], r[3], l)?,
            v: self.linear(r[4], r[5], l)?,
            o: self.linear(r[6], r[7], l)?,
            gain: self.f32s(r[8], l)?,
            bias: self.f32s(r[9], l)?,
        })
    }

    /// Runs the Q-Former on one image's features `image` (`[M, d_v]`, row-major, `M` from
    /// its length) and writes the query outputs `[N, d]` to `out` and, if given, the
    /// language projection `[N, d_llm]` to `projected`. `arena` must be 16-byte aligned and
    /// at least [`Model::arena_bytes`] long. Non-finite features are rejected with
    /// [`Error::NonFiniteInput`] before any work; a hidden state that overflows to NaN or
    /// infinity (features too large for f32) stops the forward with
    /// [`Error::NonFiniteActivation`].
    pub fn forward(
        &self,
        image: &[f32],
        arena: &mut [u8],
        out: &mut [f32],
        projected: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        self.forward_observed(image, arena, out, projected, &mut |_: usize, _: &[f32]| {})
    }

    /// [`Model::forward`], calling `observer` with the hidden state after each layer.
    pub fn forward_observed(
        &self,
        image: &[f32],
        arena: &mut [u8],
        out: &mut [f32],
        projected: Option<&mut [f32]>,
        observer: &mut dyn LayerObserver,
    ) -> Result<(), Error> {
        self.forward_with(image, arena, out, projected, &Sequential, observer)
    }

    /// Checks the forward's buffers; returns the image's token count.
    fn check_buffers(
        &self,
        image: &[f32],
        arena: &[u8],
        out: &[f32],
        projected: Option<&[f32]>,
    ) -> Result<usize, Error> {
        let c = &self.config;
        let (n, d, dv) = (c.num_queries as usize, c.hidden as usize, c.encoder_hidden as usize);
        if !image.len().is_multiple_of(dv) {
            return Err(Error::ImageShape { width: dv, len: image.len() });
        }
        let (m, max_m) = (image.len() / dv, c.max_image_tokens as usize);
        if m == 0 || m > max_m {
            return Err(Error::ImageTokens { max: max_m, found: m });
        }
        if out.len() != n * d {
            return Err(Error::BufferSize { buffer: Buffer::Output, expected: n * d, found: out.len() });
        }
        if let Some(p) = projected {
            if c.projection_dim == 0 {
                return Err(Error::NoProjection);
            }
            let want = n * c.projection_dim as usize;
            if p.len() != want {
                return Err(Error::BufferSize { buffer: Buffer::Projected, expected: want, found: p.len() });
            }
        }
        if arena.len() < self.plan.total {
            return Err(Error::ArenaTooSmall { needed: self.plan.total, available: arena.len() });
        }
        if !(arena.as_ptr() as usize).is_multiple_of(ALIGN) {
            return Err(Error::Misaligned { buffer: Buffer::Arena, align: ALIGN });
        }
        if let Some(index) = image.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteInput { index });
        }
        Ok(m)
    }

    /// [`Model::forward_observed`] with the matrix products spread over `exec`'s threads.
    /// The output is identical for every executor.
    pub fn forward_with(
        &self,
        image: &[f32],
        arena: &mut [u8],
        out: &mut [f32],
        projected: Option<&mut [f32]>,
        exec: &dyn Executor,
        observer: &mut dyn LayerObserver,
    ) -> Result<(), Error> {
        let c = &self.config;
        self.check_buffers(image, arena, out, projected.as_deref())?;
        let whole = self.plan.carve(arena)?;
        let (x, region) = (whole.x, whole.region);

        x.copy_from_slice(self.f32s(Role::QueryTokens, 0)?);
        let (gain, bias) = (self.f32s(Role::InputNormWeight, 0)?, self.f32s(Role::InputNormBias, 0)?);
        norm::add_layernorm(x, None, gain, bias, c.layer_norm_eps);
        finite(x, 0)?;
        observer.layer(0, x);

        let features = match self.precision {
            Precision::Int8 => {
                let scratch = ImageScratch {
                    values: whole.image.values,
                    scales: whole.image.scales,
                    outliers: whole.image_outliers,
                    row: whole.image_row,
                };
                let dv = c.encoder_hidden as usize;
                Features::Int8(QImage::quantize(self.kernels.quant, image, dv, self.group(), scratch))
            }
            Precision::F32 | Precision::F16 => Features::F32(image),
        };

        for l in 0..c.num_layers {
            self.attention(exec, Block::SelfAttention, l, x, &features, region)?;
            if c.has_cross(l) {
                self.attention(exec, Block::CrossAttention, l, x, &features, region)?;
            }
            self.feed_forward(exec, l, x, region)?;
            finite(x, l as usize + 1)?;
            observer.layer(l as usize + 1, x);
        }
        if let Some(p) = projected {
            let proj = self.linear(Role::ProjWeight, Role::ProjBias, 0)?;
            let (n, d) = (c.num_queries as usize, c.hidden as usize);
            match self.precision {
                Precision::Int8 => {
                    let mut b = self.plan.ffn.int8(region)?;
                    let input = self.quantize(rows_of(x, n, d), &mut b.q);
                    proj.apply(&self.kernels, exec, Input::Q(input), n, p, proj.n);
                }
                Precision::F32 | Precision::F16 => proj.apply(&self.kernels, exec, Input::F32(x), n, p, proj.n),
            }
            finite(p, c.num_layers as usize + 1)?;
        }
        out.copy_from_slice(x);
        Ok(())
    }

    /// The int8 group size of activations.
    fn group(&self) -> usize {
        self.header.group_size as usize
    }

    /// Quantizes `src` into `buf` with the model's quantizer and group size.
    fn quantize<'s>(&self, src: Strided<'_>, buf: &'s mut QBuf<'_>) -> QRows<'s> {
        quant::quantize_rows(self.kernels.quant, src, self.group(), buf.values, buf.scales)
    }

    /// `x = LayerNorm(x + Attention(x, kv) W_o + b_o)`, where the keys and values come from
    /// `x` (self-attention) or from the image `features` (cross-attention).
    fn attention(
        &self,
        exec: &dyn Executor,
        block: Block,
        l: u32,
        x: &mut [f32],
        features: &Features<'_>,
        region: &mut [u8],
    ) -> Result<(), Error> {
        let w = self.attention_weights(block, l)?;
        let cross = block == Block::CrossAttention;
        let projected = match features {
            Features::Int8(image) => self.attention_int8(exec, &w, x, cross.then_some(image), region)?,
            Features::F32(image) => self.attention_float(exec, &w, x, cross.then_some(*image), region)?,
        };
        norm::add_layernorm(x, Some(projected), w.gain, w.bias, self.config.layer_norm_eps);
        Ok(())
    }

    /// The int8 attention: projections on int8 inputs, per head int8 `q kᵀ`, f32 softmax,
    /// int8 `p v`. Each head's keys and values are projected and quantized just before the
    /// head uses them. Returns the output projection `[N, d]`.
    fn attention_int8<'r>(
        &self,
        exec: &dyn Executor,
        w: &AttentionWeights<'_>,
        x: &[f32],
        image: Option<&QImage<'_>>,
        region: &'r mut [u8],
    ) -> Result<&'r [f32], Error> {
        let c = &self.config;
        let (n, d, heads, dh) = (c.num_queries as usize, c.hidden as usize, c.num_heads as usize, c.head_dim());
        let scale = 1.0 / libm::sqrtf(dh as f32);
        let mut b = self.plan.attention.int8(region)?;
        let xin = self.quantize(rows_of(x, n, d), &mut b.xq);
        let (src, t) = match image {
            Some(image) => (image.rows, image.tokens),
            None => (xin, n),
        };
        w.q.apply(&self.kernels, exec, Input::Q(xin), n, b.q, d);
        for h in 0..heads {
            let outputs = h * dh..(h + 1) * dh;
            // The head's keys `[t, dh]`, quantized row-wise; then its values through the same
            // f32 buffer, quantized transposed (`[dh, t]`) so that p·v is a row product.
            let project = |proj: &Linear<'_>, out: &mut [f32]| {
                let proj = proj.outputs(outputs.clone());
                proj.apply(&self.kernels, exec, Input::Q(src), t, out, dh);
                if let (Some(image), Some(q)) = (image, proj.int8()) {
                    image.add_outlier_products(q, dh, out, dh);
                }
            };
            project(&w.k, b.k);
            let kh = self.quantize(rows_of(&b.k[..t * dh], t, dh), &mut b.kq);
            project(&w.v, b.k);
            let transposed = Strided { data: b.k, rows: dh, cols: t, row_stride: 1, col_stride: dh };
            let vh = self.quantize(transposed, &mut b.vtq);
            let q = Strided { data: &b.q[h * dh..], rows: n, cols: dh, row_stride: d, col_stride: 1 };
            let qh = self.quantize(q, &mut b.head_qq);
            self.kernels.q8.run(&qh, &kh, None, b.scores, Shape::new(n, t, dh));
            norm::softmax_rows(&mut b.scores[..n * t], t, scale);
            let ph = self.quantize(rows_of(b.scores, n, t), &mut b.pq);
            let s = Shape { m: n, n: dh, k: t, ldo: d };
            self.kernels.q8.run(&ph, &vh, None, &mut b.ctx[h * dh..], s);
        }
        // The quantized input is dead: the context reuses its buffers.
        let context = self.quantize(rows_of(b.ctx, n, d), &mut b.xq);
        w.o.apply(&self.kernels, exec, Input::Q(context), n, b.q, d);
        Ok(b.q)
    }

    /// The f32 / fp16-weight attention: f32 projections, per head f32 `q kᵀ`, softmax and
    /// `p v`. Returns the output projection `[N, d]`.
    fn attention_float<'r>(
        &self,
        exec: &dyn Executor,
        w: &AttentionWeights<'_>,
        x: &[f32],
        image: Option<&[f32]>,
        region: &'r mut [u8],
    ) -> Result<&'r [f32], Error> {
        let c = &self.config;
        let (n, d, heads, dh) = (c.num_queries as usize, c.hidden as usize, c.num_heads as usize, c.head_dim());
        let scale = 1.0 / libm::sqrtf(dh as f32);
        let b = self.plan.attention.float(region)?;
        let src = image.unwrap_or(x);
        let t = src.len() / if image.is_some() { c.encoder_hidden as usize } else { d };
        w.q.apply(&self.kernels, exec, Input::F32(x), n, b.q, d);
        w.k.apply(&self.kernels, exec, Input::F32(src), t, b.k, d);
        w.v.apply(&self.kernels, exec, Input::F32(src), t, b.v, d);
        for h in 0..heads {
            for r in 0..n {
                b.head_q[r * dh..(r + 1) * dh].copy_from_slice(&b.q[r * d + h * dh..r * d + (h + 1) * dh]);
            }
            for r in 0..t {
                b.head_k[r * dh..(r + 1) * dh].copy_from_slice(&b.k[r * d + h * dh..r * d + (h + 1) * dh]);
                for j in 0..dh {
                    b.head_vt[j * t + r] = b.v[r * d + h * dh + j];
                }
            }
            self.kernels.f.run_f32(b.head_q, b.head_k, None, b.scores, Shape::new(n, t, dh));
            norm::softmax_rows(&mut b.scores[..n * t], t, scale);
            let s = Shape { m: n, n: dh, k: t, ldo: d };
            self.kernels.f.run_f32(b.scores, b.head_vt, None, &mut b.ctx[h * dh..], s);
        }
        w.o.apply(&self.kernels, exec, Input::F32(b.ctx), n, b.q, d);
        Ok(b.q)
    }

    /// `x = LayerNorm(x + act(x W_1 + b_1) W_2 + b_2)`.
    fn feed_forward(&self, exec: &dyn Executor, l: u32, x: &mut [f32], region: &mut [u8]) -> Result<(), Error> {
        let c = &self.config;
        let (n, d, i) = (c.num_queries as usize, c.hidden as usize, c.intermediate as usize);
        let up = self.linear(Role::FfnUpWeight, Role::FfnUpBias, l)?;
        let down = self.linear(Role::FfnDownWeight, Role::FfnDownBias, l)?;
        let k = &self.kernels;
        let out: &[f32] = match self.precision {
            Precision::Int8 => {
                let b = self.plan.ffn.int8(region)?;
                let mut q = b.q;
                let input = self.quantize(rows_of(x, n, d), &mut q);
                up.apply(k, exec, Input::Q(input), n, b.h, i);
                norm::activate_slice(c.activation, &mut b.h[..n * i]);
                let hidden = self.quantize(rows_of(b.h, n, i), &mut q);
                // The intermediate is quantized: the output goes where it was.
                let out = &mut b.h[..n * d];
                down.apply(k, exec, Input::Q(hidden), n, out, d);
                out
            }
            Precision::F32 | Precision::F16 => {
                let b = self.plan.ffn.float(region)?;
                up.apply(k, exec, Input::F32(x), n, b.h, i);
                norm::activate_slice(c.activation, b.h);
                down.apply(k, exec, Input::F32(b.h), n, b.out, d);
                b.out
            }
        };
        let (gain, bias) = (self.f32s(Role::FfnNormWeight, l)?, self.f32s(Role::FfnNormBias, l)?);
        norm::add_layernorm(x, Some(out), gain, bias, c.layer_norm_eps);
        Ok(())
    }
}

/// `data` read as `rows` contiguous rows of `cols` values.
fn rows_of(data: &[f32], rows: usize, cols: usize) -> Strided<'_> {
    Strided { data, rows, cols, row_stride: cols, col_stride: 1 }
}

/// [`Error::NonFiniteActivation`] unless every value of `v` is finite.
fn finite(v: &[f32], step: usize) -> Result<(), Error> {
    match v.iter().all(|x| x.is_finite()) {
        true => Ok(()),
        false => Err(Error::NonFiniteActivation { layer: step }),
    }
}
