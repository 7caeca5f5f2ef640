//! [`Model`]: a validated view of a blob, and the forward pass.

use half::f16;

use crate::blob::{self, DType, Header, Precision, Role, TensorEntry, ALIGN, HEADER_BYTES, MAGIC};
use crate::config::Config;
use crate::error::{Buffer, Error, TensorProblem};
use crate::kernels::gemm::Shape;
use crate::kernels::norm;
use crate::kernels::quant::{self, Strided};
use crate::kernels::{Kernels, QRows};
use crate::parallel::{rows_per_chunk, Executor, Sequential};
use crate::plan::{ArenaPlan, QSpan, Span, MAX_IMAGE_OUTLIERS};

/// int8 path: an image-feature channel whose largest magnitude over the image's tokens
/// exceeds this many times the mean of all channels' largest magnitudes is an outlier. Up
/// to [`MAX_IMAGE_OUTLIERS`] of them (the largest) are kept out of the int8 values and
/// multiplied in f32 (mixed-precision decomposition, as LLM.int8()), so that a few channels
/// 30x larger than the rest do not crush the int8 resolution of the others.
pub const OUTLIER_RATIO: f32 = 6.0;

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
                (Weights::I8(w), Input::Q(a)) => {
                    let groups = a.stride / a.group;
                    let a = QRows {
                        values: &a.values[r0 * a.stride..],
                        scales: &a.scales[r0 * groups..],
                        stride: a.stride,
                        group: a.group,
                    };
                    kernels.q8.run(&a, &w, Some(self.b), block, s)
                }
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
}

/// The image features as the cross-attention key/value projections read them.
#[derive(Clone, Copy)]
struct Image<'s> {
    input: Input<'s>,
    tokens: usize,
    /// int8: channels zeroed in the int8 values, ascending.
    outliers: &'s [u32],
    /// int8: their f32 values, `[tokens, outliers.len()]`.
    outlier_values: &'s [f32],
}

impl Linear<'_> {
    /// Adds the image's outlier channels' contribution (int8 weights dequantized, f32
    /// products) to `out`, in a fixed order so every target gets the same bits.
    fn add_outlier_columns(&self, image: &Image<'_>, out: &mut [f32], ldo: usize) {
        let Weights::I8(w) = self.w else { return };
        let groups = w.stride / w.group;
        let count = image.outliers.len();
        for (i, &c) in image.outliers.iter().enumerate() {
            let c = c as usize;
            for j in 0..self.n {
                let wjc = w.values[j * w.stride + c] as f32 * w.scales[j * groups + c / w.group];
                for t in 0..image.tokens {
                    out[t * ldo + j] += image.outlier_values[t * count + i] * wjc;
                }
            }
        }
    }
}

/// The outlier channels of `image` (`[m, dv]`): over [`OUTLIER_RATIO`] times the mean
/// channel maximum, at most [`MAX_IMAGE_OUTLIERS`] (the largest), ascending. `colmax` is
/// `dv` scratch.
fn image_outliers(image: &[f32], m: usize, dv: usize, colmax: &mut [f32]) -> heapless::Vec<u32, MAX_IMAGE_OUTLIERS> {
    colmax.fill(0.0);
    for row in image.chunks_exact(dv).take(m) {
        for (c, v) in colmax.iter_mut().zip(row) {
            *c = c.max(libm::fabsf(*v));
        }
    }
    let mean = colmax.iter().sum::<f32>() / dv as f32;
    let mut picked: heapless::Vec<u32, MAX_IMAGE_OUTLIERS> = heapless::Vec::new();
    for (c, &v) in colmax.iter().enumerate() {
        if v <= OUTLIER_RATIO * mean {
            continue;
        }
        if picked.is_full() {
            // Replace the smallest picked channel if this one is larger (ties: keep the
            // lower channel index).
            let (k, &small) = picked
                .iter()
                .enumerate()
                .min_by(|a, b| colmax[*a.1 as usize].total_cmp(&colmax[*b.1 as usize]))
                .expect("full, so not empty");
            if v > colmax[small as usize] {
                picked[k] = c as u32;
            }
        } else {
            // Cannot fail: not full.
            let _ = picked.push(c as u32);
        }
    }
    picked.sort_unstable();
    picked
}

/// Hands out the plan's spans of one buffer in increasing offset order as typed slices.
struct Carve<'a> {
    rest: &'a mut [u8],
    at: usize,
}

impl<'a> Carve<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Carve { rest: buf, at: 0 }
    }
    fn bytes(&mut self, s: Span) -> &'a mut [u8] {
        if s.bytes == 0 {
            return &mut [];
        }
        debug_assert!(s.offset >= self.at, "spans must be carved in order");
        let rest = core::mem::take(&mut self.rest);
        let (_, rest) = rest.split_at_mut(s.offset - self.at);
        let (mine, rest) = rest.split_at_mut(s.bytes);
        self.rest = rest;
        self.at = s.offset + s.bytes;
        mine
    }
    fn f32s(&mut self, s: Span) -> Result<&'a mut [f32], Error> {
        if s.bytes == 0 {
            return Ok(&mut []);
        }
        bytemuck::try_cast_slice_mut(self.bytes(s))
            .map_err(|_| Error::Misaligned { buffer: Buffer::Arena, align: ALIGN })
    }
    fn q(&mut self, s: QSpan) -> Result<(&'a mut [i8], &'a mut [f32]), Error> {
        let v = bytemuck::cast_slice_mut(self.bytes(s.values));
        Ok((v, self.f32s(s.scales)?))
    }
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

/// The two attention blocks of a layer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    SelfAttention,
    CrossAttention,
}

impl<'a> Model<'a> {
    /// Validates `blob` and wraps it. Checks, in this order: length, magic, version and
    /// declared size; the CRC-32; the header's fields and config; every tensor-table entry
    /// (role, layer, shape, dtype, bounds, alignment, group size); the blob's start address
    /// (16-byte aligned). Reads nothing out of bounds and never panics, whatever the bytes.
    pub fn from_blob(blob: &'a [u8]) -> Result<Model<'a>, Error> {
        if blob.len() < HEADER_BYTES {
            return Err(Error::Truncated { needed: HEADER_BYTES, available: blob.len() });
        }
        if blob[..8] != MAGIC {
            return Err(Error::BadMagic);
        }
        let word = |at: usize| u32::from_le_bytes([blob[at], blob[at + 1], blob[at + 2], blob[at + 3]]);
        let version = word(8);
        if version != blob::FORMAT_VERSION {
            return Err(Error::UnsupportedVersion { found: version, supported: blob::FORMAT_VERSION });
        }
        let declared = word(16) as usize;
        if declared > blob.len() {
            return Err(Error::Truncated { needed: declared, available: blob.len() });
        }
        if declared < blob.len() {
            return Err(Error::TrailingBytes { declared, available: blob.len() });
        }
        let computed = blob::checksum(blob);
        let stored = word(blob::CHECKSUM_OFFSET);
        if computed != stored {
            return Err(Error::ChecksumMismatch { stored, computed });
        }
        let header = Header::parse(blob)?;
        let config = header.config()?;
        let precision = header.precision();
        if !(blob.as_ptr() as usize).is_multiple_of(ALIGN) {
            return Err(Error::Misaligned { buffer: Buffer::Blob, align: ALIGN });
        }
        let matrix_dtype = match precision {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Int8 => DType::I8,
        };
        for index in 0..header.tensor_count {
            let at = HEADER_BYTES + index as usize * blob::ENTRY_BYTES;
            let e = TensorEntry::parse(blob, at)
                .ok_or(Error::Truncated { needed: at + blob::ENTRY_BYTES, available: blob.len() })?;
            blob::check_entry(&config, &header, index, &e)?;
            let role = Role::from_u16(e.role).ok_or(Error::BadHeader { field: "role", value: e.role as u32 })?;
            if role.is_matrix() && e.dtype != matrix_dtype as u8 {
                return Err(Error::Tensor { role, layer: e.layer, problem: TensorProblem::DType(e.dtype) });
            }
            if e.dtype == DType::I8 as u8 && e.group != header.group_size {
                return Err(Error::Tensor { role, layer: e.layer, problem: TensorProblem::Group(e.group) });
            }
        }
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
        let index = blob::index_of(&self.config, role, layer)?;
        TensorEntry::parse(self.blob, HEADER_BYTES + index as usize * blob::ENTRY_BYTES)
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

    /// Runs the Q-Former on one image's features `image` (`[m, d_v]`, row-major) and writes
    /// the query outputs `[N, d]` to `out` and, if given, the language projection
    /// `[N, d_llm]` to `projected`. `arena` must be 16-byte aligned and at least
    /// [`Model::arena_bytes`] long. Non-finite features are rejected with
    /// [`Error::NonFiniteInput`] before any work.
    pub fn forward(
        &self,
        image: &[f32],
        m: usize,
        arena: &mut [u8],
        out: &mut [f32],
        projected: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        self.forward_observed(image, m, arena, out, projected, &mut |_: usize, _: &[f32]| {})
    }

    /// [`Model::forward`], calling `observer` with the hidden state after each layer.
    pub fn forward_observed(
        &self,
        image: &[f32],
        m: usize,
        arena: &mut [u8],
        out: &mut [f32],
        projected: Option<&mut [f32]>,
        observer: &mut dyn LayerObserver,
    ) -> Result<(), Error> {
        self.forward_with(image, m, arena, out, projected, &Sequential, observer)
    }

    /// [`Model::forward_observed`] with the matrix products spread over `exec`'s threads.
    /// The output is identical for every executor.
    #[allow(clippy::too_many_arguments)] // the forward's buffers plus two hooks
    pub fn forward_with(
        &self,
        image: &[f32],
        m: usize,
        arena: &mut [u8],
        out: &mut [f32],
        projected: Option<&mut [f32]>,
        exec: &dyn Executor,
        observer: &mut dyn LayerObserver,
    ) -> Result<(), Error> {
        let c = &self.config;
        let (n, d, dv) = (c.num_queries as usize, c.hidden as usize, c.encoder_hidden as usize);
        let max_m = c.max_image_tokens as usize;
        if m == 0 || m > max_m {
            return Err(Error::ImageTokens { max: max_m, found: m });
        }
        if image.len() != m * dv {
            return Err(Error::BufferSize { buffer: Buffer::Image, expected: m * dv, found: image.len() });
        }
        if out.len() != n * d {
            return Err(Error::BufferSize { buffer: Buffer::Output, expected: n * d, found: out.len() });
        }
        if let Some(p) = &projected {
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

        let (top, region) = arena[..self.plan.total].split_at_mut(self.plan.region);
        let mut carve = Carve::new(top);
        let x = carve.f32s(self.plan.x)?;
        let (zv, zs) = carve.q(self.plan.image)?;
        let zo = carve.f32s(self.plan.image_outliers)?;
        let row = carve.f32s(self.plan.image_row)?;

        x.copy_from_slice(self.f32s(Role::QueryTokens, 0)?);
        norm::add_layernorm(
            x,
            None,
            self.f32s(Role::InputNormWeight, 0)?,
            self.f32s(Role::InputNormBias, 0)?,
            c.layer_norm_eps,
        );
        observer.layer(0, x);

        let group = self.header.group_size as usize;
        let outliers;
        let image_in = match self.precision {
            Precision::Int8 => {
                outliers = image_outliers(image, m, dv, row);
                let count = outliers.len();
                let stride = dv.div_ceil(group) * group;
                for (r, src) in image.chunks_exact(dv).enumerate() {
                    row.copy_from_slice(src);
                    for (i, &c) in outliers.iter().enumerate() {
                        zo[r * count + i] = row[c as usize];
                        row[c as usize] = 0.0;
                    }
                    let one = Strided { data: row, rows: 1, cols: dv, row_stride: dv, col_stride: 1 };
                    quant::quantize_rows(
                        self.kernels.quant,
                        one,
                        group,
                        &mut zv[r * stride..],
                        &mut zs[r * stride / group..],
                    );
                }
                let q = QRows { values: &zv[..m * stride], scales: &zs[..m * stride / group], stride, group };
                Image { input: Input::Q(q), tokens: m, outliers: &outliers, outlier_values: &zo[..m * count] }
            }
            _ => Image { input: Input::F32(image), tokens: m, outliers: &[], outlier_values: &[] },
        };

        for l in 0..c.num_layers {
            self.attention(exec, Block::SelfAttention, l, x, None, region)?;
            if c.has_cross(l) {
                self.attention(exec, Block::CrossAttention, l, x, Some(image_in), region)?;
            }
            self.feed_forward(exec, l, x, region)?;
            observer.layer(l as usize + 1, x);
        }
        out.copy_from_slice(x);
        if let Some(p) = projected {
            let proj = self.linear(Role::ProjWeight, Role::ProjBias, 0)?;
            let mut carve = Carve::new(region);
            let (xv, xs) = carve.q(self.plan.ffn.xq)?;
            let input = self.prepare(x, n, d, xv, xs);
            proj.apply(&self.kernels, exec, input, n, p, proj.n);
        }
        Ok(())
    }

    /// The input of a linear layer: `x` itself, or `x` quantized into `(qv, qs)` for int8.
    fn prepare<'s>(&self, x: &'s [f32], rows: usize, cols: usize, qv: &'s mut [i8], qs: &'s mut [f32]) -> Input<'s> {
        match self.precision {
            Precision::Int8 => {
                let src = Strided { data: x, rows, cols, row_stride: cols, col_stride: 1 };
                Input::Q(quant::quantize_rows(self.kernels.quant, src, self.header.group_size as usize, qv, qs))
            }
            _ => Input::F32(x),
        }
    }

    /// `x = LayerNorm(x + Attention(x, kv) W_o + b_o)`; `kv = None` is self-attention.
    fn attention(
        &self,
        exec: &dyn Executor,
        block: Block,
        l: u32,
        x: &mut [f32],
        kv: Option<Image<'_>>,
        region: &mut [u8],
    ) -> Result<(), Error> {
        let c = &self.config;
        let (n, d) = (c.num_queries as usize, c.hidden as usize);
        let heads = c.num_heads as usize;
        let dh = c.head_dim();
        let roles = if block == Block::SelfAttention { &blob::SELF_ROLES } else { &blob::CROSS_ROLES };
        let wq = self.linear(roles[0], roles[1], l)?;
        let wk = self.linear(roles[2], roles[3], l)?;
        let wv = self.linear(roles[4], roles[5], l)?;
        let wo = self.linear(roles[6], roles[7], l)?;
        let (gain, bias) = (self.f32s(roles[8], l)?, self.f32s(roles[9], l)?);
        let p = &self.plan.attention;
        let scale = 1.0 / libm::sqrtf(dh as f32);

        let mut carve = Carve::new(region);
        let q = carve.f32s(p.q)?;
        let kbuf = carve.f32s(p.k)?;
        let ctx = carve.f32s(p.ctx)?;
        let scores = carve.f32s(p.scores)?;

        match self.precision {
            Precision::Int8 => {
                let group = self.header.group_size as usize;
                let (xv, xs) = carve.q(p.xq)?;
                let (kv_v, kv_s) = carve.q(p.kq)?;
                let (vt_v, vt_s) = carve.q(p.vtq)?;
                let (hq_v, hq_s) = carve.q(p.head_qq)?;
                let (pq_v, pq_s) = carve.q(p.pq)?;
                let xin = quant::quantize_rows(
                    self.kernels.quant,
                    Strided { data: x, rows: n, cols: d, row_stride: d, col_stride: 1 },
                    group,
                    xv,
                    xs,
                );
                let image = kv.unwrap_or(Image { input: Input::Q(xin), tokens: n, outliers: &[], outlier_values: &[] });
                let (src, t) = (image.input, image.tokens);
                wq.apply(&self.kernels, exec, Input::Q(xin), n, q, d);
                // Keys: all heads quantized row-wise ([H, t, dh]); then values, through the
                // same f32 buffer, quantized transposed ([H, dh, t]) so p·v is a row product.
                let kq_stride = dh.div_ceil(group) * group;
                let vt_stride = t.div_ceil(group) * group;
                wk.apply(&self.kernels, exec, src, t, kbuf, d);
                wk.add_outlier_columns(&image, kbuf, d);
                for h in 0..heads {
                    let (ov, os) = (h * t * kq_stride, h * t * kq_stride / group);
                    let src = Strided { data: &kbuf[h * dh..], rows: t, cols: dh, row_stride: d, col_stride: 1 };
                    quant::quantize_rows(self.kernels.quant, src, group, &mut kv_v[ov..], &mut kv_s[os..]);
                }
                wv.apply(&self.kernels, exec, src, t, kbuf, d);
                wv.add_outlier_columns(&image, kbuf, d);
                for h in 0..heads {
                    let (ov, os) = (h * dh * vt_stride, h * dh * vt_stride / group);
                    let src = Strided { data: &kbuf[h * dh..], rows: dh, cols: t, row_stride: 1, col_stride: d };
                    quant::quantize_rows(self.kernels.quant, src, group, &mut vt_v[ov..], &mut vt_s[os..]);
                }
                for h in 0..heads {
                    let qh = quant::quantize_rows(
                        self.kernels.quant,
                        Strided { data: &q[h * dh..], rows: n, cols: dh, row_stride: d, col_stride: 1 },
                        group,
                        hq_v,
                        hq_s,
                    );
                    let kh = QRows {
                        values: &kv_v[h * t * kq_stride..(h + 1) * t * kq_stride],
                        scales: &kv_s[h * t * kq_stride / group..(h + 1) * t * kq_stride / group],
                        stride: kq_stride,
                        group,
                    };
                    self.kernels.q8.run(&qh, &kh, None, scores, Shape::new(n, t, dh));
                    norm::softmax_rows(&mut scores[..n * t], t, scale);
                    let ph = quant::quantize_rows(
                        self.kernels.quant,
                        Strided { data: scores, rows: n, cols: t, row_stride: t, col_stride: 1 },
                        group,
                        pq_v,
                        pq_s,
                    );
                    let vh = QRows {
                        values: &vt_v[h * dh * vt_stride..(h + 1) * dh * vt_stride],
                        scales: &vt_s[h * dh * vt_stride / group..(h + 1) * dh * vt_stride / group],
                        stride: vt_stride,
                        group,
                    };
                    self.kernels.q8.run(&ph, &vh, None, &mut ctx[h * dh..], Shape { m: n, n: dh, k: t, ldo: d });
                }
                // The quantized input is dead: the context reuses its buffers.
                let cin = quant::quantize_rows(
                    self.kernels.quant,
                    Strided { data: ctx, rows: n, cols: d, row_stride: d, col_stride: 1 },
                    group,
                    xv,
                    xs,
                );
                wo.apply(&self.kernels, exec, Input::Q(cin), n, q, d);
            }
            Precision::F32 | Precision::F16 => {
                let vbuf = carve.f32s(p.v)?;
                let head_q = carve.f32s(p.head_q)?;
                let head_k = carve.f32s(p.head_k)?;
                let head_vt = carve.f32s(p.head_vt)?;
                let (src, t) = match kv {
                    Some(image) => (image.input, image.tokens),
                    None => (Input::F32(x), n),
                };
                wq.apply(&self.kernels, exec, Input::F32(x), n, q, d);
                wk.apply(&self.kernels, exec, src, t, kbuf, d);
                wv.apply(&self.kernels, exec, src, t, vbuf, d);
                for h in 0..heads {
                    for r in 0..n {
                        head_q[r * dh..(r + 1) * dh].copy_from_slice(&q[r * d + h * dh..r * d + (h + 1) * dh]);
                    }
                    for r in 0..t {
                        head_k[r * dh..(r + 1) * dh].copy_from_slice(&kbuf[r * d + h * dh..r * d + (h + 1) * dh]);
                        for j in 0..dh {
                            head_vt[j * t + r] = vbuf[r * d + h * dh + j];
                        }
                    }
                    self.kernels.f.run_f32(head_q, head_k, None, scores, Shape::new(n, t, dh));
                    norm::softmax_rows(&mut scores[..n * t], t, scale);
                    self.kernels.f.run_f32(
                        scores,
                        head_vt,
                        None,
                        &mut ctx[h * dh..],
                        Shape { m: n, n: dh, k: t, ldo: d },
                    );
                }
                wo.apply(&self.kernels, exec, Input::F32(ctx), n, q, d);
            }
        }
        norm::add_layernorm(x, Some(q), gain, bias, c.layer_norm_eps);
        Ok(())
    }

    /// `x = LayerNorm(x + act(x W_1 + b_1) W_2 + b_2)`.
    fn feed_forward(&self, exec: &dyn Executor, l: u32, x: &mut [f32], region: &mut [u8]) -> Result<(), Error> {
        let c = &self.config;
        let (n, d, i) = (c.num_queries as usize, c.hidden as usize, c.intermediate as usize);
        let up = self.linear(Role::FfnUpWeight, Role::FfnUpBias, l)?;
        let down = self.linear(Role::FfnDownWeight, Role::FfnDownBias, l)?;
        let p = &self.plan.ffn;
        let mut carve = Carve::new(region);
        let h = carve.f32s(p.h)?;
        let out = carve.f32s(p.out)?;
        let (xv, xs) = carve.q(p.xq)?;
        let (hv, hs) = carve.q(p.hq)?;
        up.apply(&self.kernels, exec, self.prepare(x, n, d, xv, xs), n, h, i);
        norm::activate_slice(c.activation, h);
        down.apply(&self.kernels, exec, self.prepare(h, n, i, hv, hs), n, out, d);
        norm::add_layernorm(
            x,
            Some(out),
            self.f32s(Role::FfnNormWeight, l)?,
            self.f32s(Role::FfnNormBias, l)?,
            c.layer_norm_eps,
        );
        Ok(())
    }
}
