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
//! The attention phase is planned for `kv = max(N, M)` key/value tokens, so it serves both
//! self- and cross-attention. Within a phase, a buffer whose lifetime ended is reused (the
//! output projection writes over `q`; the int8 context reuses the quantized input).
//! [`ArenaPlan::sum_of_buffers`] is what the same buffers would take without overlaying.

use crate::blob::{round_up, Precision, ALIGN};
use crate::config::Config;
use crate::error::Error;

/// Most image-feature channels the int8 path keeps in f32 (see [`crate::model`]).
pub const MAX_IMAGE_OUTLIERS: usize = 16;

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
    /// Queries `[N, d]`; after the heads, the output projection `[N, d]`.
    pub q: Span,
    /// Keys `[kv, d]` (f32 paths); the int8 path computes keys then values here.
    pub k: Span,
    /// Values `[kv, d]` (f32 paths only).
    pub v: Span,
    /// Context `[N, d]`.
    pub ctx: Span,
    /// Scores / probabilities of one head `[N, kv]`.
    pub scores: Span,
    /// f32 paths: one head's queries `[N, dh]`.
    pub head_q: Span,
    /// f32 paths: one head's keys `[kv, dh]`.
    pub head_k: Span,
    /// f32 paths: one head's values, transposed `[dh, kv]`.
    pub head_vt: Span,
    /// int8: quantized input of the projections `[N, stride(d)]`, then of the context.
    pub xq: QSpan,
    /// int8: all heads' quantized keys `[H, kv, stride(dh)]`.
    pub kq: QSpan,
    /// int8: all heads' quantized transposed values `[H, dh, stride(kv)]`.
    pub vtq: QSpan,
    /// int8: one head's quantized queries `[N, stride(dh)]`.
    pub head_qq: QSpan,
    /// int8: one head's quantized probabilities `[N, stride(kv)]`.
    pub pq: QSpan,
    /// Bytes of the phase.
    pub bytes: usize,
}

/// Buffers of the feed-forward phase (also used by the projection).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FfnPlan {
    /// Intermediate activations `[N, I]`.
    pub h: Span,
    /// Output `[N, d]`.
    pub out: Span,
    /// int8: quantized input `[N, stride(d)]`.
    pub xq: QSpan,
    /// int8: quantized intermediate `[N, stride(I)]`.
    pub hq: QSpan,
    /// Bytes of the phase.
    pub bytes: usize,
}

/// Offsets of every buffer of the forward pass. Built by a `const fn`, so a `static` arena
/// can be sized from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArenaPlan {
    /// Hidden state `[N, d]` f32.
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
        if int8 && (group == 0 || !group.is_multiple_of(16)) {
            return Err(Error::BadHeader { field: "group_size", value: group as u32 });
        }
        let n = config.num_queries as usize;
        let m = config.max_image_tokens as usize;
        let d = config.hidden as usize;
        let dv = config.encoder_hidden as usize;
        let hidden_ff = config.intermediate as usize;
        let heads = config.num_heads as usize;
        let dh = config.head_dim();
        let kv = if m > n { m } else { n };

        let mut top = Bump::new();
        let x = top.take(n * d, 4);
        let image = if int8 { top.take_q(m, dv, group) } else { QSpan::EMPTY };
        let image_outliers = if int8 { top.take(m * MAX_IMAGE_OUTLIERS, 4) } else { Span::EMPTY };
        let image_row = if int8 { top.take(dv, 4) } else { Span::EMPTY };
        let region = top.at;

        let mut a = Bump::new();
        let mut att = AttentionPlan {
            q: a.take(n * d, 4),
            k: a.take(kv * d, 4),
            v: Span::EMPTY,
            ctx: a.take(n * d, 4),
            scores: a.take(n * kv, 4),
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
        let mut sum = n * d * 4 * 2; // x and the attention output (which reuses q)
        if int8 {
            att.xq = a.take_q(n, d, group);
            att.kq = a.take_q(heads * kv, dh, group);
            att.vtq = a.take_q(heads * dh, kv, group);
            att.head_qq = a.take_q(n, dh, group);
            att.pq = a.take_q(n, kv, group);
            // Without planning: the f32 keys and values both, and separate buffers for the
            // quantized input and the quantized context.
            sum += kv * d * 4 + (att.xq.values.bytes + att.xq.scales.bytes);
        } else {
            att.v = a.take(kv * d, 4);
            att.head_q = a.take(n * dh, 4);
            att.head_k = a.take(kv * dh, 4);
            att.head_vt = a.take(dh * kv, 4);
        }
        att.bytes = a.at;
        sum += att.bytes;

        let mut f = Bump::new();
        let mut ffn = FfnPlan {
            h: f.take(n * hidden_ff, 4),
            out: f.take(n * d, 4),
            xq: QSpan::EMPTY,
            hq: QSpan::EMPTY,
            bytes: 0,
        };
        if int8 {
            ffn.xq = f.take_q(n, d, group);
            ffn.hq = f.take_q(n, hidden_ff, group);
        }
        ffn.bytes = f.at;
        sum += ffn.bytes + x.bytes + image.values.bytes + image.scales.bytes + image_outliers.bytes + image_row.bytes;

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
