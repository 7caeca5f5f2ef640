//! The arena plan: where every activation lives, from buffer lifetimes.
//!
//! The forward pass has three phases per layer (self-attention, cross-attention,
//! feed-forward) plus the projection. Two buffers live through the whole pass: the hidden
//! state `x` and, for int8, the image features quantized once per image (every
//! cross-attention layer reads them). Everything else lives inside one phase, so the phases
//! share one region whose size is the largest phase:
//!
//! ```text
//! arena = [ x | image, its outlier columns, a row (int8) | region = max(attention, feed-forward) ]
//! ```
//!
//! The hidden state has S = N + T_max positions: the queries and, for InstructBLIP, the
//! instruction (T_max = 0 otherwise). The attention phase is planned for S query rows and
//! `kv = max(S, M)` key/value tokens, so it serves both self- and cross-attention (which
//! only the N queries take part in). The feed-forward runs on at most N rows at a time (the
//! instruction's rows in blocks of N), so its phase does not grow with T_max. Within a phase, a buffer whose lifetime ended is reused (the
//! output projection writes over `q`; the int8 context reuses the quantized input). The int8
//! path projects, quantizes and uses the keys and values one head at a time, so it never holds
//! more than one head's `[kv, dh]` of them in f32.
//! [`ArenaPlan::sum_of_buffers`] is what the same buffers would take without overlaying.
//!
//! This file is the one place that knows which buffers share memory: the forward gets its
//! buffers as typed per-phase structs (`ArenaPlan::carve`, `AttentionPlan::int8`/`float`,
//! `FfnPlan::int8`/`float`, crate-private), carved here in the plan's own order.

use crate::align::{round_up, ALIGN};
use crate::config::{valid_group, Config, Precision};
use crate::error::{Buffer, Error};
use crate::image::MAX_IMAGE_OUTLIERS;

/// A byte range of the arena (offset from the start of the arena, or of the phase region
/// for phase buffers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Start, a multiple of 16.
    pub offset: usize,
    /// Length in bytes.
    pub bytes: usize,
}

impl Span {
    /// No bytes.
    pub const EMPTY: Span = Span { offset: 0, bytes: 0 };
}

/// A row-quantized int8 matrix's two buffers: values and scales.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QSpan {
    /// `rows * stride` i8.
    pub values: Span,
    /// `rows * stride / group` f32.
    pub scales: Span,
}

impl QSpan {
    /// No bytes.
    pub const EMPTY: QSpan = QSpan { values: Span::EMPTY, scales: Span::EMPTY };
}

/// Buffers of the attention phase (self or cross).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttentionPlan {
    /// Queries `[S, d]`; after the heads, the output projection `[S, d]`.
    pub q: Span,
    /// Keys `[kv, d]` (f32 paths); int8: one head's keys, then its values, `[kv, dh]`.
    pub k: Span,
    /// Values `[kv, d]` (f32 paths only).
    pub v: Span,
    /// Context `[S, d]`.
    pub ctx: Span,
    /// Scores / probabilities of one head `[S, kv]`.
    pub scores: Span,
    /// f32 paths: one head's queries `[S, dh]`.
    pub head_q: Span,
    /// f32 paths: one head's keys `[kv, dh]`.
    pub head_k: Span,
    /// f32 paths: one head's values, transposed `[dh, kv]`.
    pub head_vt: Span,
    /// int8: quantized input of the projections `[S, stride(d)]`, then of the context.
    pub xq: QSpan,
    /// int8: one head's quantized keys `[kv, stride(dh)]`.
    pub kq: QSpan,
    /// int8: one head's quantized transposed values `[dh, stride(kv)]`.
    pub vtq: QSpan,
    /// int8: one head's quantized queries `[S, stride(dh)]`.
    pub head_qq: QSpan,
    /// int8: one head's quantized probabilities `[S, stride(kv)]`.
    pub pq: QSpan,
    /// Bytes of the phase.
    pub bytes: usize,
}

/// Buffers of the feed-forward phase (also used by the projection).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FfnPlan {
    /// Intermediate activations `[N, I]`; int8: `[N, max(I, d)]`, the output `[N, d]` written
    /// over its start once the intermediate is quantized.
    pub h: Span,
    /// f32 paths: output `[N, d]`.
    pub out: Span,
    /// int8: the quantized input `[N, stride(d)]`, then the quantized intermediate
    /// `[N, stride(I)]` (the projection's quantized input too).
    pub q: QSpan,
    /// Bytes of the phase.
    pub bytes: usize,
}

/// Offsets of every buffer of the forward pass. Built by a `const fn`, so a `static` arena
/// can be sized from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArenaPlan {
    /// Hidden state `[S, d]` f32 (S = N + T_max).
    pub x: Span,
    /// int8: the image features quantized once per image `[M, stride(d_v)]`.
    pub image: QSpan,
    /// int8: the image's outlier channels kept in f32, `[M, MAX_IMAGE_OUTLIERS]`.
    pub image_outliers: Span,
    /// int8: one image row, or the per-channel maxima, `[d_v]` f32.
    pub image_row: Span,
    /// Start of the phase region.
    pub region: usize,
    /// Attention phase (offsets relative to `region`).
    pub attention: AttentionPlan,
    /// Feed-forward phase (offsets relative to `region`).
    pub ffn: FfnPlan,
    /// Total bytes: the arena size.
    pub total: usize,
    /// What the same buffers take if none shares memory (for reporting).
    pub sum_of_buffers: usize,
}

/// A bump allocator over byte offsets, usable in `const fn`.
#[derive(Clone, Copy)]
struct Bump {
    at: usize,
    overflow: bool,
}

impl Bump {
    const fn new() -> Self {
        Bump { at: 0, overflow: false }
    }
    const fn take(&mut self, count: usize, elem: usize) -> Span {
        let bytes = match count.checked_mul(elem) {
            Some(b) => b,
            None => {
                self.overflow = true;
                0
            }
        };
        let offset = self.at;
        let padded = match bytes.checked_add(ALIGN - 1) {
            Some(b) => b / ALIGN * ALIGN,
            None => {
                self.overflow = true;
                0
            }
        };
        match offset.checked_add(padded) {
            Some(end) => self.at = end,
            None => self.overflow = true,
        }
        Span { offset, bytes }
    }
    /// `rows` rows of `cols` values quantized in groups of `group`.
    const fn take_q(&mut self, rows: usize, cols: usize, group: usize) -> QSpan {
        let stride = round_up(cols, group);
        // `take` multiplies with overflow checks.
        let values = self.take(rows, stride);
        let scales = self.take(rows, 4 * (stride / group));
        QSpan { values, scales }
    }
}

impl ArenaPlan {
    /// Plans the arena for `config` running at `precision`; `group` is the int8 activation
    /// group size (ignored otherwise).
    pub const fn new(config: &Config, precision: Precision, group: usize) -> Result<ArenaPlan, Error> {
        if let Err(e) = config.validate() {
            return Err(e);
        }
        let int8 = matches!(precision, Precision::Int8);
        if int8 && (group > u32::MAX as usize || !valid_group(group as u32)) {
            return Err(Error::BadHeader { field: "group_size", value: group as u32 });
        }
        let n = config.num_queries as usize;
        let m = config.max_image_tokens as usize;
        let d = config.hidden as usize;
        let dv = config.encoder_hidden as usize;
        let hidden_ff = config.intermediate as usize;
        let dh = config.head_dim();
        // Positions of the hidden state: the queries and (InstructBLIP) the instruction.
        let s = config.max_tokens();
        let kv = if m > s { m } else { s };

        let mut top = Bump::new();
        let x = top.take(s * d, 4);
        let image = if int8 { top.take_q(m, dv, group) } else { QSpan::EMPTY };
        let image_outliers = if int8 { top.take(m * MAX_IMAGE_OUTLIERS, 4) } else { Span::EMPTY };
        let image_row = if int8 { top.take(dv, 4) } else { Span::EMPTY };
        let region = top.at;

        let mut a = Bump::new();
        let mut att = AttentionPlan {
            q: a.take(s * d, 4),
            k: a.take(kv * if int8 { dh } else { d }, 4),
            v: Span::EMPTY,
            ctx: a.take(s * d, 4),
            scores: a.take(s * kv, 4),
            head_q: Span::EMPTY,
            head_k: Span::EMPTY,
            head_vt: Span::EMPTY,
            xq: QSpan::EMPTY,
            kq: QSpan::EMPTY,
            vtq: QSpan::EMPTY,
            head_qq: QSpan::EMPTY,
            pq: QSpan::EMPTY,
            bytes: 0,
        };
        // Buffers whose lifetime overlaps another's as they would be allocated without the
        // plan: q, k, v, ctx, scores, the per-head buffers and the output projection.
        let mut sum = s * d * 4 * 2; // x and the attention output (which reuses q)
        if int8 {
            att.xq = a.take_q(s, d, group);
            att.kq = a.take_q(kv, dh, group);
            att.vtq = a.take_q(dh, kv, group);
            att.head_qq = a.take_q(s, dh, group);
            att.pq = a.take_q(s, kv, group);
            // Without planning: the f32 keys and values both, and separate buffers for the
            // quantized input and the quantized context.
            sum += kv * d * 4 + (att.xq.values.bytes + att.xq.scales.bytes);
        } else {
            att.v = a.take(kv * d, 4);
            att.head_q = a.take(s * dh, 4);
            att.head_k = a.take(kv * dh, 4);
            att.head_vt = a.take(dh * kv, 4);
        }
        att.bytes = a.at;
        sum += att.bytes;

        let mut f = Bump::new();
        let ffn_width = if int8 && d > hidden_ff { d } else { hidden_ff };
        let mut ffn = FfnPlan { h: f.take(n * ffn_width, 4), out: Span::EMPTY, q: QSpan::EMPTY, bytes: 0 };
        // Without planning: the intermediate, the output, and (int8) the quantized input and
        // intermediate, each its own buffer.
        sum += n * (hidden_ff + d) * 4;
        if int8 {
            let wide = if d > hidden_ff { d } else { hidden_ff };
            ffn.q = f.take_q(n, wide, group);
            let (xq, hq) = (Bump::new().take_q(n, d, group), Bump::new().take_q(n, hidden_ff, group));
            sum += xq.values.bytes + xq.scales.bytes + hq.values.bytes + hq.scales.bytes;
        } else {
            ffn.out = f.take(n * d, 4);
        }
        ffn.bytes = f.at;
        sum += x.bytes + image.values.bytes + image.scales.bytes + image_outliers.bytes + image_row.bytes;

        let phase = if att.bytes > ffn.bytes { att.bytes } else { ffn.bytes };
        if top.overflow || a.overflow || f.overflow {
            return Err(Error::SizeOverflow);
        }
        let total = match region.checked_add(phase) {
            Some(t) => t,
            None => return Err(Error::SizeOverflow),
        };
        Ok(ArenaPlan { x, image, image_outliers, image_row, region, attention: att, ffn, total, sum_of_buffers: sum })
    }
}

/// The buffers that live through the whole forward, and the region the phases share.
pub(crate) struct Whole<'a> {
    /// Hidden state `[S, d]`.
    pub x: &'a mut [f32],
    /// int8: the quantized image features.
    pub image: QBuf<'a>,
    /// int8: the image's outlier channels in f32, `[M, MAX_IMAGE_OUTLIERS]`.
    pub image_outliers: &'a mut [f32],
    /// int8: one image row, or the per-channel maxima.
    pub image_row: &'a mut [f32],
    /// The phase region, for [`AttentionPlan`] and [`FfnPlan`] to carve.
    pub region: &'a mut [u8],
}

/// The int8 attention phase's buffers. `q` holds the queries, then the output projection;
/// `k` the keys, then the values (each quantized per head before the next is computed);
/// `xq` the quantized input, then the quantized context.
pub(crate) struct Int8Attention<'a> {
    pub q: &'a mut [f32],
    pub k: &'a mut [f32],
    pub ctx: &'a mut [f32],
    pub scores: &'a mut [f32],
    pub xq: QBuf<'a>,
    pub kq: QBuf<'a>,
    pub vtq: QBuf<'a>,
    pub head_qq: QBuf<'a>,
    pub pq: QBuf<'a>,
}

/// The f32/fp16 attention phase's buffers. `q` holds the queries, then the output
/// projection.
pub(crate) struct FloatAttention<'a> {
    pub q: &'a mut [f32],
    pub k: &'a mut [f32],
    pub ctx: &'a mut [f32],
    pub scores: &'a mut [f32],
    pub v: &'a mut [f32],
    pub head_q: &'a mut [f32],
    pub head_k: &'a mut [f32],
    pub head_vt: &'a mut [f32],
}

/// The int8 feed-forward phase's buffers: `q` holds the quantized input, then the quantized
/// intermediate; `h` the intermediate, then the output at its start. The projection uses
/// `q` for its quantized input.
pub(crate) struct Int8Ffn<'a> {
    pub h: &'a mut [f32],
    pub q: QBuf<'a>,
}

/// The f32/fp16 feed-forward phase's buffers.
pub(crate) struct FloatFfn<'a> {
    pub h: &'a mut [f32],
    pub out: &'a mut [f32],
}

impl ArenaPlan {
    /// Cuts `arena` (16-byte aligned, at least [`ArenaPlan::total`] bytes: the forward checks
    /// both first) into the whole-forward buffers and the phase region.
    pub(crate) fn carve<'a>(&self, arena: &'a mut [u8]) -> Result<Whole<'a>, Error> {
        let (top, region) = arena[..self.total].split_at_mut(self.region);
        let mut c = Carve::new(top);
        Ok(Whole {
            x: c.f32s(self.x)?,
            image: c.q(self.image)?,
            image_outliers: c.f32s(self.image_outliers)?,
            image_row: c.f32s(self.image_row)?,
            region,
        })
    }
}

impl AttentionPlan {
    /// The int8 phase's buffers in `region`.
    pub(crate) fn int8<'a>(&self, region: &'a mut [u8]) -> Result<Int8Attention<'a>, Error> {
        let mut c = Carve::new(region);
        Ok(Int8Attention {
            q: c.f32s(self.q)?,
            k: c.f32s(self.k)?,
            ctx: c.f32s(self.ctx)?,
            scores: c.f32s(self.scores)?,
            xq: c.q(self.xq)?,
            kq: c.q(self.kq)?,
            vtq: c.q(self.vtq)?,
            head_qq: c.q(self.head_qq)?,
            pq: c.q(self.pq)?,
        })
    }

    /// The f32/fp16 phase's buffers in `region`.
    pub(crate) fn float<'a>(&self, region: &'a mut [u8]) -> Result<FloatAttention<'a>, Error> {
        let mut c = Carve::new(region);
        Ok(FloatAttention {
            q: c.f32s(self.q)?,
            k: c.f32s(self.k)?,
            ctx: c.f32s(self.ctx)?,
            scores: c.f32s(self.scores)?,
            v: c.f32s(self.v)?,
            head_q: c.f32s(self.head_q)?,
            head_k: c.f32s(self.head_k)?,
            head_vt: c.f32s(self.head_vt)?,
        })
    }
}

impl FfnPlan {
    /// The int8 phase's buffers in `region`.
    pub(crate) fn int8<'a>(&self, region: &'a mut [u8]) -> Result<Int8Ffn<'a>, Error> {
        let mut c = Carve::new(region);
        Ok(Int8Ffn { h: c.f32s(self.h)?, q: c.q(self.q)? })
    }

    /// The f32/fp16 phase's buffers in `region`.
    pub(crate) fn float<'a>(&self, region: &'a mut [u8]) -> Result<FloatFfn<'a>, Error> {
        let mut c = Carve::new(region);
        Ok(FloatFfn { h: c.f32s(self.h)?, out: c.f32s(self.out)? })
    }
}

/// A row-quantized int8 matrix's buffers, to be filled by the quantizer. The plan sizes them
/// for the most rows and columns a phase needs; a use with fewer columns has a shorter stride
/// (`round_up(cols, group)`), which the quantizer derives.
pub(crate) struct QBuf<'a> {
    /// Values.
    pub values: &'a mut [i8],
    /// Scales.
    pub scales: &'a mut [f32],
}

/// Hands out the spans of one buffer as typed slices; spans must come in increasing offset
/// order (the order the plan declares them in: the carving functions above).
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
    fn q(&mut self, s: QSpan) -> Result<QBuf<'a>, Error> {
        let values = bytemuck::cast_slice_mut(self.bytes(s.values));
        Ok(QBuf { values, scales: self.f32s(s.scales)? })
    }
}

/// Where an encoded image lives ([`crate::Model::encode_image`]): the cross-attention keys
/// and values of every layer with cross-attention, projected once so that several
/// instructions can be answered against one image. Blocks follow one another, one per head
/// (int8: its keys `[M, stride(dh)]` and transposed values `[dh, stride(M)]`, quantized as
/// the forward quantizes them) or one per layer (f32 paths: keys and values `[M, d]`), for
/// M = `max_image_tokens`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachePlan {
    /// int8: a head's quantized keys (offsets within its block).
    pub kq: QSpan,
    /// int8: a head's quantized transposed values.
    pub vtq: QSpan,
    /// f32 paths: a layer's keys `[M, d]` (offsets within its block).
    pub k: Span,
    /// f32 paths: a layer's values `[M, d]`.
    pub v: Span,
    /// Bytes of one block.
    pub block: usize,
    /// Blocks per layer with cross-attention: H (int8) or 1.
    pub blocks_per_layer: usize,
    /// Total bytes.
    pub total: usize,
}

impl CachePlan {
    /// Plans the encoded image of `config` at `precision` (int8 with group `group`).
    pub const fn new(config: &Config, precision: Precision, group: usize) -> Result<CachePlan, Error> {
        if let Err(e) = ArenaPlan::new(config, precision, group) {
            return Err(e);
        }
        let (m, d, dh) = (config.max_image_tokens as usize, config.hidden as usize, config.head_dim());
        let layers = config.cross_layers_before(config.num_layers) as usize;
        let mut b = Bump::new();
        let mut plan = CachePlan::EMPTY;
        if matches!(precision, Precision::Int8) {
            plan.kq = b.take_q(m, dh, group);
            plan.vtq = b.take_q(dh, m, group);
            plan.blocks_per_layer = config.num_heads as usize;
        } else {
            plan.k = b.take(m * d, 4);
            plan.v = b.take(m * d, 4);
            plan.blocks_per_layer = 1;
        }
        plan.block = b.at;
        let total = match b.at.checked_mul(layers) {
            Some(t) => t.checked_mul(plan.blocks_per_layer),
            None => None,
        };
        match total {
            Some(t) if !b.overflow => {
                plan.total = t;
                Ok(plan)
            }
            _ => Err(Error::SizeOverflow),
        }
    }

    const EMPTY: CachePlan = CachePlan {
        kq: QSpan::EMPTY,
        vtq: QSpan::EMPTY,
        k: Span::EMPTY,
        v: Span::EMPTY,
        block: 0,
        blocks_per_layer: 0,
        total: 0,
    };

    /// The bytes of block `index` (`cross_layer * blocks_per_layer + head`).
    fn block_range(&self, index: usize) -> core::ops::Range<usize> {
        index * self.block..(index + 1) * self.block
    }

    /// int8: block `index`'s buffers, to be filled.
    pub(crate) fn int8_mut<'a>(&self, cache: &'a mut [u8], index: usize) -> Result<(QBuf<'a>, QBuf<'a>), Error> {
        let mut c = Carve::new(&mut cache[self.block_range(index)]);
        Ok((c.q(self.kq)?, c.q(self.vtq)?))
    }

    /// f32 paths: block `index`'s keys and values, to be filled.
    pub(crate) fn float_mut<'a>(
        &self,
        cache: &'a mut [u8],
        index: usize,
    ) -> Result<(&'a mut [f32], &'a mut [f32]), Error> {
        let mut c = Carve::new(&mut cache[self.block_range(index)]);
        Ok((c.f32s(self.k)?, c.f32s(self.v)?))
    }

    /// int8: block `index`'s keys and transposed values as written, `(values, scales)` each.
    pub(crate) fn int8<'a>(&self, cache: &'a [u8], index: usize) -> Result<[Quantized<'a>; 2], Error> {
        let block = &cache[self.block_range(index)];
        let q = |s: QSpan| -> Result<Quantized<'a>, Error> {
            let values = bytemuck::cast_slice(&block[s.values.offset..s.values.offset + s.values.bytes]);
            Ok((values, f32s(&block[s.scales.offset..s.scales.offset + s.scales.bytes])?))
        };
        Ok([q(self.kq)?, q(self.vtq)?])
    }

    /// f32 paths: block `index`'s keys and values.
    pub(crate) fn float<'a>(&self, cache: &'a [u8], index: usize) -> Result<[&'a [f32]; 2], Error> {
        let block = &cache[self.block_range(index)];
        Ok([
            f32s(&block[self.k.offset..self.k.offset + self.k.bytes])?,
            f32s(&block[self.v.offset..self.v.offset + self.v.bytes])?,
        ])
    }
}

/// A quantized matrix as stored: values and scales.
pub(crate) type Quantized<'a> = (&'a [i8], &'a [f32]);

/// `bytes` (16-byte aligned: checked by the caller for the whole buffer) as f32s.
fn f32s(bytes: &[u8]) -> Result<&[f32], Error> {
    bytemuck::try_cast_slice(bytes).map_err(|_| Error::Misaligned { buffer: Buffer::Arena, align: ALIGN })
}

/// Exact arena bytes for `config` at `precision` (int8 with activation group `group`).
pub const fn arena_bytes(config: &Config, precision: Precision, group: usize) -> Result<usize, Error> {
    match ArenaPlan::new(config, precision, group) {
        Ok(p) => Ok(p.total),
        Err(e) => Err(e),
    }
}

/// A 16-byte aligned byte array for a `static` arena:
///
/// ```
/// use qformer_core::AlignedArena;
/// static mut ARENA: AlignedArena<4096> = AlignedArena::new();
/// ```
#[repr(C, align(16))]
pub struct AlignedArena<const N: usize>(pub [u8; N]);

impl<const N: usize> AlignedArena<N> {
    /// A zeroed arena (`const`, so it can initialise a `static`).
    pub const fn new() -> Self {
        AlignedArena([0; N])
    }
    /// The bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl<const N: usize> Default for AlignedArena<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    /// The carving functions take each phase's spans in the plan's order and within the
    /// phase's bytes, for every precision (a wrong order would panic here).
    #[test]
    fn every_phase_carves_for_every_precision() {
        let small =
            Config { num_layers: 2, hidden: 64, intermediate: 96, encoder_hidden: 80, num_heads: 4, ..Config::BLIP2 };
        for config in [Config::BLIP2, small] {
            for precision in Precision::ALL {
                let group = if *precision == Precision::Int8 { 32 } else { 0 };
                let plan = ArenaPlan::new(&config, *precision, group).expect("plans");
                let mut arena = vec![0u128; plan.total.div_ceil(16)];
                let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut arena);
                let whole = plan.carve(bytes).expect("whole");
                assert_eq!(whole.x.len(), (config.num_queries * config.hidden) as usize);
                let (n, d, i) = (config.num_queries as usize, config.hidden as usize, config.intermediate as usize);
                match precision {
                    Precision::Int8 => {
                        assert_eq!(plan.attention.int8(whole.region).expect("int8 attention").q.len(), n * d);
                        assert_eq!(plan.ffn.int8(whole.region).expect("int8 ffn").h.len(), n * i);
                    }
                    _ => {
                        assert_eq!(plan.attention.float(whole.region).expect("float attention").q.len(), n * d);
                        assert_eq!(plan.ffn.float(whole.region).expect("float ffn").h.len(), n * i);
                    }
                }
            }
        }
    }
}
