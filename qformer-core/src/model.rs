//! [`Model`]: a validated view of a blob, and the forward pass.

use half::f16;

use crate::align::round_up;
use crate::blob::{self, DType, Header, Role, TensorEntry, ALIGN};
use crate::config::{Config, Precision};
use crate::error::{Buffer, Error, TensorProblem};
use crate::image::{ImageScratch, QImage};
use crate::kernels::gemm::Shape;
use crate::kernels::norm;
use crate::kernels::quant::{self, Strided};
use crate::kernels::{Kernels, QRows};
use crate::parallel::{rows_per_chunk, Executor, Sequential};
use crate::plan::{ArenaPlan, CachePlan, QBuf};
use crate::tokenizer::{self, Tokenized, Vocab};

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

/// An embedding table `[rows, cols]` in its storage.
struct Table<'a> {
    w: Weights<'a>,
    cols: usize,
}

impl Table<'_> {
    /// `out = row r`, dequantized.
    fn row(&self, r: usize, out: &mut [f32]) {
        out.fill(0.0);
        self.add_row(r, out);
    }

    /// `out += row r`, dequantized (an int8 value `q` in group `g` is `q * scales[g]`).
    fn add_row(&self, r: usize, out: &mut [f32]) {
        let k = self.cols;
        match self.w {
            Weights::F32(w) => out.iter_mut().zip(&w[r * k..(r + 1) * k]).for_each(|(o, v)| *o += v),
            Weights::F16(w) => out.iter_mut().zip(&w[r * k..(r + 1) * k]).for_each(|(o, v)| *o += v.to_f32()),
            Weights::I8(q) => {
                let row = q.rows(r..r + 1);
                for (c, o) in out.iter_mut().enumerate() {
                    *o += row.values[c] as f32 * row.scales[c / row.group];
                }
            }
        }
    }
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

/// The image features as the forward's precision reads them: as given (f32, fp16; with
/// their token count), or quantized once with their outlier channels apart (int8).
enum Features<'s> {
    F32(&'s [f32], usize),
    Int8(QImage<'s>),
}

/// An InstructBLIP instruction: token ids as the blob's tokenizer (or transformers'
/// `InstructBlipProcessor`, as `qformer_input_ids`) gives them, `[CLS] ... [SEP]`, and an
/// optional attention mask (`qformer_attention_mask`: 1 attended, 0 padding) of the same
/// length. Position `p` of the ids gets position embedding `p`, masked or not.
#[derive(Clone, Copy, Debug)]
pub struct Text<'t> {
    /// Token ids, each below the vocabulary size; at most `max_text_tokens`.
    pub ids: &'t [u32],
    /// 1 for the ids to attend, 0 for padding; `None`: all attended.
    pub mask: Option<&'t [u8]>,
}

/// The image a forward reads: its features, or their cross-attention projections made once
/// by [`Model::encode_image`].
#[derive(Clone, Copy, Debug)]
pub enum Image<'s> {
    /// `[M, d_v]` features, row-major.
    Features(&'s [f32]),
    /// An encoded image of this model.
    Encoded(&'s EncodedImage<'s>),
}

/// An image's cross-attention keys and values, projected once by [`Model::encode_image`]
/// into a caller's buffer.
#[derive(Clone, Copy, Debug)]
pub struct EncodedImage<'c> {
    bytes: &'c [u8],
    tokens: usize,
    /// The blob's checksum: which model made it.
    checksum: u32,
}

impl EncodedImage<'_> {
    /// Image tokens M.
    pub fn tokens(&self) -> usize {
        self.tokens
    }
}

/// Where an attention block's keys and values come from.
#[derive(Clone, Copy)]
enum KvSource<'s> {
    /// The block's own input (self-attention).
    Own,
    /// int8: the quantized image features.
    Image(&'s QImage<'s>),
    /// f32 paths: the image features and their token count.
    Float(&'s [f32], usize),
    /// An encoded image, with the index of the layer among those with cross-attention.
    Encoded(&'s EncodedImage<'s>, usize),
}

impl<'s> KvSource<'s> {
    fn from_features(f: &'s Features<'s>) -> Self {
        match f {
            Features::Int8(q) => KvSource::Image(q),
            Features::F32(f, t) => KvSource::Float(f, *t),
        }
    }
}

/// What the int8 key and value projections of a head read: the block's quantized input
/// (with its row count), or the quantized image features (with their outlier channels).
#[derive(Clone, Copy)]
enum Int8Source<'s> {
    Input(QRows<'s>, usize),
    Image(&'s QImage<'s>),
}

/// Where the int8 attention gets each head's quantized keys and values.
#[derive(Clone, Copy)]
enum HeadKv<'s> {
    /// Projected and quantized just before the head uses them.
    Project(Int8Source<'s>),
    /// Read from an encoded image, with the layer's index among those with cross-attention.
    Encoded(&'s EncodedImage<'s>, usize),
}

/// The image as a forward holds it.
enum KvImage<'s> {
    Features(Features<'s>),
    Encoded(&'s EncodedImage<'s>),
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
    cache: CachePlan,
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
        let cache = CachePlan::new(&config, precision, header.group_size as usize)?;
        Ok(Model { blob, header, config, precision, plan, cache, kernels: Kernels::COMPILED })
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

    /// The vocabulary of a blob with text parts (InstructBLIP).
    pub fn vocab(&self) -> Option<Vocab<'a>> {
        // Validated by `from_blob`.
        self.config.has_text().then(|| blob::vocab(self.blob, &self.config).ok()).flatten()
    }

    /// Tokenizes an instruction with the blob's own vocabulary and tokenizer options, as
    /// transformers' `BertTokenizer` does (`[CLS] ... [SEP]`, truncated to `out.len()` ids
    /// on the side the tokenizer truncates). [`Error::NoText`] for a blob without text parts.
    pub fn tokenize(&self, text: &str, out: &mut [u32]) -> Result<Tokenized, Error> {
        let vocab = self.vocab().ok_or(Error::NoText)?;
        tokenizer::tokenize(&vocab, &self.header.tokenizer_options(), text, out).map_err(Error::Tokenize)
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

    /// The stored matrix of `role` in `layer` (a linear layer's weights or an embedding
    /// table) with its `[rows, cols]`.
    fn linear_weights(&self, role: Role, layer: u32) -> Result<(Weights<'a>, usize, usize), Error> {
        let e = self.entry(role, layer as u16).ok_or(Error::InvalidConfig { field: "layer", value: layer })?;
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
            _ => return Err(Error::Tensor { role, layer: layer as u16, problem: TensorProblem::DType(e.dtype) }),
        };
        Ok((w, e.rows as usize, e.cols as usize))
    }

    fn linear(&self, weight: Role, bias: Role, layer: u32) -> Result<Linear<'a>, Error> {
        let (w, n, k) = self.linear_weights(weight, layer)?;
        Ok(Linear { w, b: self.f32s(bias, layer)?, n, k })
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
    /// its length) without an instruction and writes the query outputs `[N, d]` to `out` and,
    /// if given, the language projection `[N, d_llm]` to `projected`. `arena` must be 16-byte
    /// aligned and at least [`Model::arena_bytes`] long. Non-finite features are rejected
    /// with [`Error::NonFiniteInput`] before any work; a hidden state that overflows to NaN
    /// or infinity (features too large for f32) stops the forward with
    /// [`Error::NonFiniteActivation`]. On an InstructBLIP blob this is what transformers'
    /// `InstructBlipQFormerModel` computes without `input_ids`: the queries alone.
    pub fn forward(
        &self,
        image: &[f32],
        arena: &mut [u8],
        out: &mut [f32],
        projected: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        self.forward_with(
            Image::Features(image),
            None,
            arena,
            out,
            projected,
            &Sequential,
            &mut |_: usize, _: &[f32]| {},
        )
    }

    /// [`Model::forward`] with an instruction (InstructBLIP): `text`'s tokens join the
    /// queries in every self-attention, and the query outputs depend on them.
    pub fn forward_text(
        &self,
        image: &[f32],
        text: Text<'_>,
        arena: &mut [u8],
        out: &mut [f32],
        projected: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        let exec = &Sequential;
        self.forward_with(
            Image::Features(image),
            Some(text),
            arena,
            out,
            projected,
            exec,
            &mut |_: usize, _: &[f32]| {},
        )
    }

    /// [`Model::forward`], calling `observer` with the queries' hidden state after each layer.
    pub fn forward_observed(
        &self,
        image: &[f32],
        arena: &mut [u8],
        out: &mut [f32],
        projected: Option<&mut [f32]>,
        observer: &mut dyn LayerObserver,
    ) -> Result<(), Error> {
        self.forward_with(Image::Features(image), None, arena, out, projected, &Sequential, observer)
    }

    /// Bytes of the buffer [`Model::encode_image`] writes: every cross-attention layer's keys
    /// and values for `max_image_tokens` tokens (int8: quantized per head).
    pub fn encoded_image_bytes(&self) -> usize {
        self.cache.total
    }

    /// Projects the cross-attention keys and values of `image` (`[M, d_v]`) once, into
    /// `cache` (16-byte aligned, at least [`Model::encoded_image_bytes`] long), so that
    /// several instructions can be answered against one image with [`Model::forward_with`]
    /// and [`Image::Encoded`], each paying only for the rest of the forward. The outputs are
    /// bit-identical to those of a forward on the features. `arena` is scratch, as for a
    /// forward.
    pub fn encode_image<'c>(
        &self,
        image: &[f32],
        cache: &'c mut [u8],
        arena: &mut [u8],
        exec: &dyn Executor,
    ) -> Result<EncodedImage<'c>, Error> {
        let c = &self.config;
        let tokens = self.check_image(image)?;
        self.check_arena(arena)?;
        if cache.len() < self.cache.total {
            return Err(Error::BufferSize {
                buffer: Buffer::ImageCache,
                expected: self.cache.total,
                found: cache.len(),
            });
        }
        if !(cache.as_ptr() as usize).is_multiple_of(ALIGN) {
            return Err(Error::Misaligned { buffer: Buffer::ImageCache, align: ALIGN });
        }
        let whole = self.plan.carve(arena)?;
        let scratch = ImageScratch {
            values: whole.image.values,
            scales: whole.image.scales,
            outliers: whole.image_outliers,
            row: whole.image_row,
        };
        let features = self.features(image, scratch);
        let d = c.hidden as usize;
        let mut index = 0;
        for l in (0..c.num_layers).filter(|&l| c.has_cross(l)) {
            let w = self.attention_weights(Block::CrossAttention, l)?;
            match &features {
                Features::Int8(q) => {
                    let b = self.plan.attention.int8(whole.region)?;
                    for h in 0..c.num_heads as usize {
                        let (mut kq, mut vtq) = self.cache.int8_mut(cache, index)?;
                        self.project_head(exec, &w, h, Int8Source::Image(q), b.k, &mut kq, &mut vtq);
                        index += 1;
                    }
                }
                Features::F32(f, _) => {
                    let (k, v) = self.cache.float_mut(cache, index)?;
                    w.k.apply(&self.kernels, exec, Input::F32(f), tokens, k, d);
                    w.v.apply(&self.kernels, exec, Input::F32(f), tokens, v, d);
                    index += 1;
                }
            }
        }
        Ok(EncodedImage { bytes: cache, tokens, checksum: self.header.checksum })
    }

    /// Checks the image features; returns their token count.
    fn check_image(&self, image: &[f32]) -> Result<usize, Error> {
        let c = &self.config;
        let dv = c.encoder_hidden as usize;
        if !image.len().is_multiple_of(dv) {
            return Err(Error::ImageShape { width: dv, len: image.len() });
        }
        let (m, max_m) = (image.len() / dv, c.max_image_tokens as usize);
        if m == 0 || m > max_m {
            return Err(Error::ImageTokens { max: max_m, found: m });
        }
        if let Some(index) = image.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteInput { index });
        }
        Ok(m)
    }

    fn check_arena(&self, arena: &[u8]) -> Result<(), Error> {
        if arena.len() < self.plan.total {
            return Err(Error::ArenaTooSmall { needed: self.plan.total, available: arena.len() });
        }
        if !(arena.as_ptr() as usize).is_multiple_of(ALIGN) {
            return Err(Error::Misaligned { buffer: Buffer::Arena, align: ALIGN });
        }
        Ok(())
    }

    /// Checks the output buffers.
    fn check_outputs(&self, out: &[f32], projected: Option<&[f32]>) -> Result<(), Error> {
        let c = &self.config;
        let (n, d) = (c.num_queries as usize, c.hidden as usize);
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
        Ok(())
    }

    /// Checks an instruction; returns how many of its tokens are attended (mask 1).
    fn check_text(&self, text: &Text<'_>) -> Result<usize, Error> {
        let c = &self.config;
        if !c.has_text() {
            return Err(Error::NoText);
        }
        let max = c.max_text_tokens as usize;
        if text.ids.len() > max {
            return Err(Error::TextTokens { max, found: text.ids.len() });
        }
        if let Some((index, &id)) = text.ids.iter().enumerate().find(|(_, &id)| id >= c.vocab_size) {
            return Err(Error::TokenId { index, id, vocab: c.vocab_size });
        }
        match text.mask {
            None => Ok(text.ids.len()),
            Some(mask) => {
                if mask.len() != text.ids.len() {
                    return Err(Error::BufferSize {
                        buffer: Buffer::Mask,
                        expected: text.ids.len(),
                        found: mask.len(),
                    });
                }
                if let Some((index, &v)) = mask.iter().enumerate().find(|(_, &v)| v > 1) {
                    return Err(Error::Mask { index, value: v as u32 });
                }
                Ok(mask.iter().filter(|&&v| v == 1).count())
            }
        }
    }

    /// [`Model::forward_observed`] with an image given as features or encoded, an optional
    /// instruction, and the matrix products spread over `exec`'s threads. The output is
    /// identical for every executor, and for an image given either way.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with(
        &self,
        image: Image<'_>,
        text: Option<Text<'_>>,
        arena: &mut [u8],
        out: &mut [f32],
        projected: Option<&mut [f32]>,
        exec: &dyn Executor,
        observer: &mut dyn LayerObserver,
    ) -> Result<(), Error> {
        let c = &self.config;
        if let Image::Features(f) = image {
            self.check_image(f)?;
        }
        if let Image::Encoded(e) = image {
            if e.checksum != self.header.checksum || e.bytes.len() < self.cache.total {
                return Err(Error::ForeignImage);
            }
        }
        self.check_outputs(out, projected.as_deref())?;
        let attended = match &text {
            Some(t) => self.check_text(t)?,
            None => 0,
        };
        self.check_arena(arena)?;
        let (n, d) = (c.num_queries as usize, c.hidden as usize);
        let s = n + attended;
        let whole = self.plan.carve(arena)?;
        let (x, region) = (&mut whole.x[..s * d], whole.region);
        self.embed(text.as_ref(), x)?;
        finite(x, 0)?;
        observer.layer(0, &x[..n * d]);

        let features = match image {
            Image::Features(f) => {
                let scratch = ImageScratch {
                    values: whole.image.values,
                    scales: whole.image.scales,
                    outliers: whole.image_outliers,
                    row: whole.image_row,
                };
                KvImage::Features(self.features(f, scratch))
            }
            Image::Encoded(e) => KvImage::Encoded(e),
        };
        let mut cross_index = 0;
        for l in 0..c.num_layers {
            self.attention(exec, Block::SelfAttention, l, x, KvSource::Own, region)?;
            if c.has_cross(l) {
                let kv = match &features {
                    KvImage::Features(f) => KvSource::from_features(f),
                    KvImage::Encoded(e) => KvSource::Encoded(e, cross_index),
                };
                self.attention(exec, Block::CrossAttention, l, &mut x[..n * d], kv, region)?;
                cross_index += 1;
            }
            let (queries, instruction) = x.split_at_mut(n * d);
            self.feed_forward(exec, &blob::FFN_ROLES, l, queries, region)?;
            for rows in instruction.chunks_mut(n * d) {
                self.feed_forward(exec, &blob::TEXT_FFN_ROLES, l, rows, region)?;
            }
            finite(x, l as usize + 1)?;
            observer.layer(l as usize + 1, &x[..n * d]);
        }
        if let Some(p) = projected {
            let proj = self.linear(Role::ProjWeight, Role::ProjBias, 0)?;
            let queries = &x[..n * d];
            match self.precision {
                Precision::Int8 => {
                    let mut b = self.plan.ffn.int8(region)?;
                    let input = self.quantize(rows_of(queries, n, d), &mut b.q);
                    proj.apply(&self.kernels, exec, Input::Q(input), n, p, proj.n);
                }
                Precision::F32 | Precision::F16 => proj.apply(&self.kernels, exec, Input::F32(queries), n, p, proj.n),
            }
            finite(p, c.num_layers as usize + 1)?;
        }
        out.copy_from_slice(&x[..n * d]);
        Ok(())
    }

    /// The input of layer 0: `LN_in(concat(queries, word[id] + position[p]))` over the
    /// queries and the instruction's attended tokens (`p` its position in the instruction).
    /// A masked token is attended by no position, so leaving it out changes no output.
    fn embed(&self, text: Option<&Text<'_>>, x: &mut [f32]) -> Result<(), Error> {
        let c = &self.config;
        let (n, d) = (c.num_queries as usize, c.hidden as usize);
        let (queries, instruction) = x.split_at_mut(n * d);
        queries.copy_from_slice(self.f32s(Role::QueryTokens, 0)?);
        if let Some(t) = text {
            let words = self.table(Role::WordEmbeddings)?;
            let positions = self.table(Role::PositionEmbeddings)?;
            let attended = (0..t.ids.len()).filter(|&p| t.mask.is_none_or(|m| m[p] == 1));
            for (row, p) in instruction.chunks_exact_mut(d).zip(attended) {
                words.row(t.ids[p] as usize, row);
                positions.add_row(p, row);
            }
        }
        let (gain, bias) = (self.f32s(Role::InputNormWeight, 0)?, self.f32s(Role::InputNormBias, 0)?);
        norm::add_layernorm(x, None, gain, bias, c.layer_norm_eps);
        Ok(())
    }

    /// An embedding table (word or position embeddings), in the precision's storage.
    fn table(&self, role: Role) -> Result<Table<'a>, Error> {
        let (w, _, cols) = self.linear_weights(role, 0)?;
        Ok(Table { w, cols })
    }

    /// The image features in the form the forward's precision reads them.
    fn features<'s>(&self, image: &'s [f32], scratch: ImageScratch<'s>) -> Features<'s> {
        let dv = self.config.encoder_hidden as usize;
        match self.precision {
            Precision::Int8 => Features::Int8(QImage::quantize(self.kernels.quant, image, dv, self.group(), scratch)),
            Precision::F32 | Precision::F16 => Features::F32(image, image.len() / dv),
        }
    }

    /// The int8 group size of activations.
    fn group(&self) -> usize {
        self.header.group_size as usize
    }

    /// Quantizes `src` into `buf` with the model's quantizer and group size.
    fn quantize<'s>(&self, src: Strided<'_>, buf: &'s mut QBuf<'_>) -> QRows<'s> {
        quant::quantize_rows(self.kernels.quant, src, self.group(), buf.values, buf.scales)
    }

    /// `x = LayerNorm(x + Attention(x, kv) W_o + b_o)` over the rows of `x`, where the keys
    /// and values come from `x` (self-attention) or from the image (cross-attention).
    fn attention(
        &self,
        exec: &dyn Executor,
        block: Block,
        l: u32,
        x: &mut [f32],
        kv: KvSource<'_>,
        region: &mut [u8],
    ) -> Result<(), Error> {
        let w = self.attention_weights(block, l)?;
        let projected = match self.precision {
            Precision::Int8 => self.attention_int8(exec, &w, x, kv, region)?,
            Precision::F32 | Precision::F16 => self.attention_float(exec, &w, x, kv, region)?,
        };
        norm::add_layernorm(x, Some(projected), w.gain, w.bias, self.config.layer_norm_eps);
        Ok(())
    }

    /// Head `h`'s keys `[t, dh]`, quantized row-wise into `kq`, and values, quantized
    /// transposed (`[dh, t]`, so that p·v is a row product) into `vtq`, both projected from
    /// `src` through the f32 buffer `tmp`. Returns `(keys, values)`.
    #[allow(clippy::too_many_arguments)]
    fn project_head<'q>(
        &self,
        exec: &dyn Executor,
        w: &AttentionWeights<'_>,
        h: usize,
        src: Int8Source<'_>,
        tmp: &mut [f32],
        kq: &'q mut QBuf<'_>,
        vtq: &'q mut QBuf<'_>,
    ) -> (QRows<'q>, QRows<'q>) {
        let dh = self.config.head_dim();
        let (rows, t, image) = match src {
            Int8Source::Image(image) => (image.rows, image.tokens, Some(image)),
            Int8Source::Input(rows, t) => (rows, t, None),
        };
        let outputs = h * dh..(h + 1) * dh;
        let project = |proj: &Linear<'_>, out: &mut [f32]| {
            let proj = proj.outputs(outputs.clone());
            proj.apply(&self.kernels, exec, Input::Q(rows), t, out, dh);
            if let (Some(image), Some(q)) = (image, proj.int8()) {
                image.add_outlier_products(q, dh, out, dh);
            }
        };
        project(&w.k, tmp);
        let kh = self.quantize(rows_of(&tmp[..t * dh], t, dh), kq);
        project(&w.v, tmp);
        let transposed = Strided { data: tmp, rows: dh, cols: t, row_stride: 1, col_stride: dh };
        let vh = self.quantize(transposed, vtq);
        (kh, vh)
    }

    /// The int8 attention: projections on int8 inputs, per head int8 `q kᵀ`, f32 softmax,
    /// int8 `p v`. Each head's keys and values are projected and quantized just before the
    /// head uses them (or read from an encoded image). Returns the output projection.
    fn attention_int8<'r>(
        &self,
        exec: &dyn Executor,
        w: &AttentionWeights<'_>,
        x: &[f32],
        kv: KvSource<'_>,
        region: &'r mut [u8],
    ) -> Result<&'r [f32], Error> {
        let c = &self.config;
        let (d, heads, dh) = (c.hidden as usize, c.num_heads as usize, c.head_dim());
        let n = x.len() / d;
        let scale = 1.0 / libm::sqrtf(dh as f32);
        let mut b = self.plan.attention.int8(region)?;
        let xin = self.quantize(rows_of(x, n, d), &mut b.xq);
        // The keys and values: projected per head from the input or the image, or read from
        // an encoded image.
        let (source, t) = match kv {
            KvSource::Image(image) => (HeadKv::Project(Int8Source::Image(image)), image.tokens),
            KvSource::Encoded(e, layer) => (HeadKv::Encoded(e, layer), e.tokens),
            // `Float` is the f32 paths' (`Model::attention` never passes it here).
            KvSource::Own | KvSource::Float(..) => (HeadKv::Project(Int8Source::Input(xin, n)), n),
        };
        w.q.apply(&self.kernels, exec, Input::Q(xin), n, b.q, d);
        for h in 0..heads {
            let (kh, vh) = match source {
                HeadKv::Project(src) => self.project_head(exec, w, h, src, b.k, &mut b.kq, &mut b.vtq),
                HeadKv::Encoded(e, layer) => {
                    let [(kv_, ks), (vv, vs)] = self.cache.int8(e.bytes, layer * heads + h)?;
                    let g = self.group();
                    let k = QRows { values: kv_, scales: ks, stride: round_up(dh, g), group: g };
                    let v = QRows { values: vv, scales: vs, stride: round_up(t, g), group: g };
                    (k.rows(0..t), v.rows(0..dh))
                }
            };
            let q = Strided { data: &b.q[h * dh..], rows: n, cols: dh, row_stride: d, col_stride: 1 };
            let qh = self.quantize(q, &mut b.head_qq);
            self.kernels.q8.run(&qh, &kh, None, b.scores, Shape::new(n, t, dh));
            norm::softmax_rows(&mut b.scores[..n * t], t, scale);
            let ph = self.quantize(rows_of(b.scores, n, t), &mut b.pq);
            let s = Shape { m: n, n: dh, k: t, ldo: d };
            self.kernels.q8.run(&ph, &vh, None, &mut b.ctx[h * dh..], s);
        }
        // The quantized input is dead: the context reuses its buffers.
        let context = self.quantize(rows_of(&b.ctx[..n * d], n, d), &mut b.xq);
        w.o.apply(&self.kernels, exec, Input::Q(context), n, b.q, d);
        Ok(&b.q[..n * d])
    }

    /// The f32 / fp16-weight attention: f32 projections, per head f32 `q kᵀ`, softmax and
    /// `p v`. Returns the output projection.
    fn attention_float<'r>(
        &self,
        exec: &dyn Executor,
        w: &AttentionWeights<'_>,
        x: &[f32],
        kv: KvSource<'_>,
        region: &'r mut [u8],
    ) -> Result<&'r [f32], Error> {
        let c = &self.config;
        let (d, heads, dh) = (c.hidden as usize, c.num_heads as usize, c.head_dim());
        let n = x.len() / d;
        let scale = 1.0 / libm::sqrtf(dh as f32);
        let b = self.plan.attention.float(region)?;
        w.q.apply(&self.kernels, exec, Input::F32(x), n, b.q, d);
        let (keys, values, t): (&[f32], &[f32], usize) = match kv {
            KvSource::Encoded(e, layer) => {
                let [k, v] = self.cache.float(e.bytes, layer)?;
                (k, v, e.tokens)
            }
            _ => {
                let (src, t) = match kv {
                    KvSource::Float(f, t) => (f, t),
                    _ => (x, n),
                };
                w.k.apply(&self.kernels, exec, Input::F32(src), t, b.k, d);
                w.v.apply(&self.kernels, exec, Input::F32(src), t, b.v, d);
                (&*b.k, &*b.v, t)
            }
        };
        for h in 0..heads {
            for r in 0..n {
                b.head_q[r * dh..(r + 1) * dh].copy_from_slice(&b.q[r * d + h * dh..r * d + (h + 1) * dh]);
            }
            for r in 0..t {
                b.head_k[r * dh..(r + 1) * dh].copy_from_slice(&keys[r * d + h * dh..r * d + (h + 1) * dh]);
                for j in 0..dh {
                    b.head_vt[j * t + r] = values[r * d + h * dh + j];
                }
            }
            self.kernels.f.run_f32(b.head_q, b.head_k, None, b.scores, Shape::new(n, t, dh));
            norm::softmax_rows(&mut b.scores[..n * t], t, scale);
            let s = Shape { m: n, n: dh, k: t, ldo: d };
            self.kernels.f.run_f32(b.scores, b.head_vt, None, &mut b.ctx[h * dh..], s);
        }
        w.o.apply(&self.kernels, exec, Input::F32(&b.ctx[..n * d]), n, b.q, d);
        Ok(&b.q[..n * d])
    }

    /// `x = LayerNorm(x + act(x W_1 + b_1) W_2 + b_2)` over the rows of `x` (at most N), with
    /// the feed-forward `roles` (the queries' or the instruction's).
    fn feed_forward(
        &self,
        exec: &dyn Executor,
        roles: &[Role; 6],
        l: u32,
        x: &mut [f32],
        region: &mut [u8],
    ) -> Result<(), Error> {
        let c = &self.config;
        let (d, i) = (c.hidden as usize, c.intermediate as usize);
        let n = x.len() / d;
        let up = self.linear(roles[0], roles[1], l)?;
        let down = self.linear(roles[2], roles[3], l)?;
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
                norm::activate_slice(c.activation, &mut b.h[..n * i]);
                down.apply(k, exec, Input::F32(&b.h[..n * i]), n, b.out, d);
                &b.out[..n * d]
            }
        };
        let (gain, bias) = (self.f32s(roles[4], l)?, self.f32s(roles[5], l)?);
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
