//! Writes blobs: the one writer of the format `qformer_core::blob` reads.

use anyhow::{bail, Result};
use half::f16;
use qformer_core::blob::{self, round_up, DType, Header, TensorEntry, Transform, ALIGN, ENTRY_BYTES, HEADER_BYTES};
use qformer_core::kernels::quant::{quantize_rows, Quantizer, Strided};
use qformer_core::Precision;

use crate::weights::{hf_name, Weights};

/// How to store the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobOptions {
    /// Forward path and matrix storage.
    pub precision: Precision,
    /// int8 group size along the input channels ([`qformer_core::valid_group`]); ignored
    /// otherwise.
    pub group: u32,
}

/// The default int8 group size (see README "Choosing the int8 scheme").
pub const DEFAULT_GROUP: u32 = 32;

impl BlobOptions {
    /// Options for `precision` with the default group size.
    pub fn new(precision: Precision) -> Self {
        BlobOptions { precision, group: DEFAULT_GROUP }
    }
}

/// Quantizes a `[rows, cols]` matrix to int8 with one scale per `group` columns of a row,
/// exactly as the runtime quantizes activations (the scalar quantizer, the reference every
/// SIMD one matches bit for bit). Returns `(values [rows, stride], scales)`.
pub fn quantize_matrix(data: &[f32], rows: usize, cols: usize, group: usize) -> (Vec<i8>, Vec<f32>) {
    let stride = round_up(cols, group);
    let mut values = vec![0i8; rows * stride];
    let mut scales = vec![0f32; rows * (stride / group)];
    let src = Strided { data, rows, cols, row_stride: cols, col_stride: 1 };
    quantize_rows(Quantizer::SCALAR, src, group, &mut values, &mut scales);
    (values, scales)
}

/// Where every tensor of `w` goes in its blob: the tensor table (offsets included) and the
/// blob's size, computed from the shapes alone. The one definition of the writer's layout:
/// tensors in table order, an i8 tensor's values then its scales, each range starting at a
/// multiple of [`ALIGN`]. Errors if the blob would exceed the format's 4 GiB.
pub fn layout(w: &Weights, opts: BlobOptions) -> Result<(Vec<TensorEntry>, usize)> {
    let group = if opts.precision == Precision::Int8 { opts.group } else { 0 };
    let too_large = || anyhow::anyhow!("the blob would exceed 4 GiB, the format's limit");
    let mut at = round_up(HEADER_BYTES + ENTRY_BYTES * w.tensors.len(), ALIGN);
    let mut take = |bytes: usize| -> Result<u32> {
        let start = at;
        at = start.checked_add(bytes).map(|end| round_up(end, ALIGN)).ok_or_else(too_large)?;
        u32::try_from(start).map_err(|_| too_large())
    };
    let mut entries = Vec::with_capacity(w.tensors.len());
    for t in &w.tensors {
        let dtype = t.role.dtype(opts.precision);
        let shape = [t.rows as u32, t.cols as u32];
        let bytes = blob::data_bytes(shape, dtype, group).ok_or_else(too_large)?;
        let offset = take(bytes)?;
        let (scales_offset, group) = match dtype {
            DType::I8 => (take(blob::scale_bytes(shape, group).ok_or_else(too_large)?)?, group),
            _ => (0, 0),
        };
        let bytes = u32::try_from(bytes).map_err(|_| too_large())?;
        entries.push(TensorEntry {
            role: t.role as u16,
            layer: t.layer,
            dtype: dtype as u8,
            transform: Transform::None as u8,
            reserved: [0; 2],
            rows: shape[0],
            cols: shape[1],
            offset,
            bytes,
            scales_offset,
            group,
        });
    }
    u32::try_from(at).map_err(|_| too_large())?;
    Ok((entries, at))
}

/// Encodes `w` as a blob. `progress` is called once per tensor written.
pub fn build_blob(w: &Weights, opts: BlobOptions, mut progress: impl FnMut()) -> Result<Vec<u8>> {
    let int8 = opts.precision == Precision::Int8;
    if int8 && !qformer_core::valid_group(opts.group) {
        bail!(
            "int8 group size must be a positive multiple of 16 of at most {}, got {}",
            qformer_core::config::MAX_DIM,
            opts.group
        );
    }
    let (entries, total) = layout(w, opts)?;
    let mut header = Header::new(&w.config, opts.precision, if int8 { opts.group } else { 0 });
    header.tensor_count = entries.len() as u32;
    header.data_offset = round_up(HEADER_BYTES + ENTRY_BYTES * entries.len(), ALIGN) as u32;
    header.total_bytes = total as u32;
    if let Some(v) = &w.vocab {
        header.set_tokenizer_options(&v.options);
    }

    let mut out = vec![0u8; total];
    for (i, (t, e)) in w.tensors.iter().zip(&entries).enumerate() {
        let data = &mut out[e.offset as usize..e.offset as usize + e.bytes as usize];
        match DType::from_u8(e.dtype) {
            Some(DType::F32) => data.copy_from_slice(bytemuck::cast_slice(&t.data)),
            Some(DType::F16) => {
                if let Some(i) = t.data.iter().position(|v| !f16::from_f32(*v).is_finite()) {
                    bail!(
                        "{}: value {i} ({}) is beyond fp16's range (largest 65504): store this model as int8 or f32",
                        hf_name(t.role, t.layer),
                        t.data[i]
                    );
                }
                for (d, v) in data.chunks_exact_mut(2).zip(&t.data) {
                    d.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
                }
            }
            Some(DType::I8) => {
                let (values, scales) = quantize_matrix(&t.data, t.rows, t.cols, e.group as usize);
                data.copy_from_slice(bytemuck::cast_slice(&values));
                let at = e.scales_offset as usize;
                out[at..at + 4 * scales.len()].copy_from_slice(bytemuck::cast_slice(&scales));
            }
            Some(DType::U8 | DType::U32) => match &w.vocab {
                Some(v) => data.copy_from_slice(v.bytes(t.role)),
                None => bail!("{}: the weights carry no vocabulary", hf_name(t.role, t.layer)),
            },
            None => bail!("{}: unknown dtype in the layout", hf_name(t.role, t.layer)),
        }
        let at = HEADER_BYTES + i * ENTRY_BYTES;
        out[at..at + ENTRY_BYTES].copy_from_slice(&e.to_bytes());
        progress();
    }
    out[..HEADER_BYTES].copy_from_slice(&header.to_bytes());
    header.checksum = blob::checksum(&out);
    out[..HEADER_BYTES].copy_from_slice(&header.to_bytes());
    Ok(out)
}

/// Bytes per storage type in a blob: `(dtype name, bytes)`, for summaries.
pub fn bytes_per_dtype(blob_bytes: &[u8]) -> Vec<(&'static str, usize)> {
    let mut totals: Vec<(&'static str, usize)> = Vec::new();
    let Ok(h) = Header::parse(blob_bytes) else { return totals };
    for i in 0..h.tensor_count as usize {
        let Some(e) = TensorEntry::parse(blob_bytes, HEADER_BYTES + i * ENTRY_BYTES) else { continue };
        let Some(d) = DType::from_u8(e.dtype) else { continue };
        let mut add = |name: &'static str, n: usize| match totals.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v += n,
            None => totals.push((name, n)),
        };
        add(d.name(), e.bytes as usize);
        if d == DType::I8 {
            add("i8 scales (f32)", blob::scale_bytes([e.rows, e.cols], e.group).unwrap_or(0));
        }
    }
    totals
}
