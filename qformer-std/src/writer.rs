//! Writes blobs: the one writer of the format `qformer_core::blob` reads.

use anyhow::{bail, Result};
use half::f16;
use qformer_core::blob::{self, round_up, DType, Header, TensorEntry, ALIGN, ENTRY_BYTES, HEADER_BYTES};
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

/// Encodes `w` as a blob. `progress` is called once per tensor written.
pub fn build_blob(w: &Weights, opts: BlobOptions, mut progress: impl FnMut()) -> Result<Vec<u8>> {
    let c = &w.config;
    let int8 = opts.precision == Precision::Int8;
    if int8 && !qformer_core::valid_group(opts.group) {
        bail!(
            "int8 group size must be a positive multiple of 16 of at most {}, got {}",
            qformer_core::config::MAX_DIM,
            opts.group
        );
    }
    let group = if int8 { opts.group } else { 0 };
    let mut header = Header::new(c, opts.precision, group);
    let count = w.tensors.len();
    header.tensor_count = count as u32;
    header.data_offset = round_up(HEADER_BYTES + ENTRY_BYTES * count, ALIGN) as u32;

    let mut out = vec![0u8; header.data_offset as usize];
    let mut entries = Vec::with_capacity(count);
    let pad = |out: &mut Vec<u8>| out.resize(round_up(out.len(), ALIGN), 0);
    for t in &w.tensors {
        let dtype = if t.role.is_matrix() { DType::of_matrices(opts.precision) } else { DType::F32 };
        pad(&mut out);
        let offset = out.len();
        let mut scales_offset = 0;
        match dtype {
            DType::F32 => out.extend(t.data.iter().flat_map(|v| v.to_le_bytes())),
            DType::F16 => out.extend(t.data.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes())),
            DType::I8 => {
                let (values, scales) = quantize_matrix(&t.data, t.rows, t.cols, group as usize);
                out.extend(values.iter().map(|v| *v as u8));
                pad(&mut out);
                scales_offset = out.len();
                out.extend(scales.iter().flat_map(|v| v.to_le_bytes()));
            }
        }
        let bytes = blob::data_bytes([t.rows as u32, t.cols as u32], dtype, group)
            .ok_or_else(|| anyhow::anyhow!("{} is too large", hf_name(t.role, t.layer)))?;
        entries.push(TensorEntry {
            role: t.role as u16,
            layer: t.layer,
            dtype: dtype as u8,
            reserved: [0; 3],
            rows: t.rows as u32,
            cols: t.cols as u32,
            offset: offset as u32,
            bytes: bytes as u32,
            scales_offset: scales_offset as u32,
            group: if dtype == DType::I8 { group } else { 0 },
        });
        if out.len() > u32::MAX as usize {
            bail!("the blob would exceed 4 GiB, the format's limit");
        }
        progress();
    }
    pad(&mut out);
    header.total_bytes = out.len() as u32;
    for (i, e) in entries.iter().enumerate() {
        let at = HEADER_BYTES + i * ENTRY_BYTES;
        out[at..at + ENTRY_BYTES].copy_from_slice(&e.to_bytes());
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
