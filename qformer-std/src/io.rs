//! Input features and outputs on disk.
//!
//! Inputs: a safetensors file with `image_embeds` of shape `[M, d_v]` or `[B, M, d_v]`
//! (f32, f16, bf16 or f64), or a `.npy` array of the same shapes (float32, float16 or float64).
//! Outputs: safetensors with `qformer_output` `[B, N, d]` and, for models with a language
//! projection, `projected` `[B, N, d_llm]`, both f32.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::checkpoint::to_f32;
use crate::runtime::Instructions;

/// A batch of image features.
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    /// `[batch, tokens, dim]` row-major.
    pub data: Vec<f32>,
    /// B.
    pub batch: usize,
    /// M.
    pub tokens: usize,
    /// d_v.
    pub dim: usize,
}

/// Image features of `shape` (`[M, d_v]` or `[B, M, d_v]`) from row-major `data`; `what` names
/// them in the messages.
pub fn images_from(shape: &[usize], data: Vec<f32>, what: &str) -> Result<Images> {
    let (batch, tokens, dim) = match shape {
        [m, dv] => (1, *m, *dv),
        [b, m, dv] => (*b, *m, *dv),
        _ => bail!("{what} has shape {shape:?}, expected [M, d_v] or [B, M, d_v]"),
    };
    if batch.checked_mul(tokens).and_then(|n| n.checked_mul(dim)) != Some(data.len()) {
        bail!("{what} has shape {shape:?} but {} values", data.len());
    }
    Ok(Images { data, batch, tokens, dim })
}

/// The shape and order of a `.npy` header, checked before `npyz` reads it: `npyz` multiplies
/// the dimensions without an overflow check and sizes its reads from them. Accepts what
/// NumPy writes — a dict of exactly `'descr'` (a string), `'fortran_order'` (`True` or
/// `False`) and `'shape'` (a tuple of decimal integers) — with at most as many values as
/// the file has bytes for.
fn npy_shape(bytes: &[u8]) -> Result<(Vec<usize>, bool)> {
    let (len, start): (usize, usize) = match bytes {
        [0x93, b'N', b'U', b'M', b'P', b'Y', 1, _, a, b, ..] => (u16::from_le_bytes([*a, *b]) as usize, 10),
        [0x93, b'N', b'U', b'M', b'P', b'Y', 2 | 3, _, a, b, c, d, ..] => {
            (u32::from_le_bytes([*a, *b, *c, *d]) as usize, 12)
        }
        _ => bail!("no .npy magic and version"),
    };
    let text = bytes.get(start..start.saturating_add(len)).ok_or_else(|| anyhow!("the header runs past the end"))?;
    let text = std::str::from_utf8(text).map_err(|_| anyhow!("the header is not UTF-8"))?;
    let body = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.trim_end().strip_suffix('}'))
        .ok_or_else(|| anyhow!("the header is not a dict"))?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let (key, after) = npy_string(rest).ok_or_else(|| anyhow!("bad key in the header"))?;
        rest = after.trim_start().strip_prefix(':').ok_or_else(|| anyhow!("no ':' after '{key}'"))?.trim_start();
        let slot_taken = match key {
            "descr" => {
                let (v, after) = npy_string(rest).ok_or_else(|| anyhow!("'descr' is not a plain string"))?;
                rest = after;
                descr.replace(v).is_some()
            }
            "fortran_order" => {
                let (v, after) = if let Some(a) = rest.strip_prefix("True") {
                    (true, a)
                } else if let Some(a) = rest.strip_prefix("False") {
                    (false, a)
                } else {
                    bail!("'fortran_order' is not True or False");
                };
                rest = after;
                fortran.replace(v).is_some()
            }
            "shape" => {
                let inner = rest.strip_prefix('(').ok_or_else(|| anyhow!("'shape' is not a tuple"))?;
                let end = inner.find(')').ok_or_else(|| anyhow!("'shape' is not a tuple"))?;
                let list = inner[..end].trim();
                let list = list.strip_suffix(',').unwrap_or(list);
                let dims =
                    if list.is_empty() { Vec::new() } else { list.split(',').map(npy_dim).collect::<Result<_>>()? };
                rest = &inner[end + 1..];
                shape.replace(dims).is_some()
            }
            other => bail!("unexpected key '{other}' in the header"),
        };
        if slot_taken {
            bail!("key '{key}' appears twice in the header");
        }
        rest = rest.trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None if rest.is_empty() => {}
            None => bail!("expected ',' after '{key}' in the header"),
        }
    }
    let (Some(_), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        bail!("the header lacks 'descr', 'fortran_order' or 'shape'");
    };
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if count.is_none_or(|n| n > bytes.len() - start - len) {
        bail!("shape {shape:?} needs more values than the file holds");
    }
    Ok((shape, fortran))
}

/// One dimension: a decimal integer as NumPy writes it (no sign, no leading zero).
fn npy_dim(d: &str) -> Result<usize> {
    let d = d.trim();
    if d.is_empty() || !d.bytes().all(|c| c.is_ascii_digit()) || (d.len() > 1 && d.starts_with('0')) {
        bail!("dimension {d:?} is not a decimal integer");
    }
    d.parse().map_err(|_| anyhow!("dimension {d} is too large"))
}

/// A Python string literal without escapes at the start of `s`, and what follows it.
fn npy_string(s: &str) -> Option<(&str, &str)> {
    let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let end = s[1..].find(quote)? + 1;
    let v = &s[1..end];
    (!v.contains('\\')).then_some((v, &s[end + 1..]))
}

/// `data` (`shape`, first index fastest) in C order (last index fastest).
fn fortran_to_c(data: &[f32], shape: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len());
    let mut index = vec![0usize; shape.len()];
    for _ in 0..data.len() {
        let (mut at, mut stride) = (0, 1);
        for (i, d) in index.iter().zip(shape) {
            at += i * stride;
            stride *= d;
        }
        out.push(data[at]);
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}

/// A `.npy` dtype in words, with NumPy's code: `int32 ('<i4')`.
fn npy_dtype_name(dtype: &npyz::DType) -> String {
    use npyz::TypeChar;
    let npyz::DType::Plain(t) = dtype else { return "a structured (record) dtype".to_string() };
    let bits = t.size_field().saturating_mul(8);
    let words = match t.type_char() {
        TypeChar::Bool => "bool".to_string(),
        TypeChar::Int => format!("int{bits}"),
        TypeChar::Uint => format!("uint{bits}"),
        TypeChar::Float => format!("float{bits}"),
        TypeChar::Complex => format!("complex{bits}"),
        TypeChar::TimeDelta => "timedelta64".to_string(),
        TypeChar::DateTime => "datetime64".to_string(),
        TypeChar::ByteStr => "bytes".to_string(),
        TypeChar::UnicodeStr => "str".to_string(),
        TypeChar::Object => "Python objects".to_string(),
        TypeChar::RawData => "raw bytes (void)".to_string(),
        _ => "an unknown type".to_string(),
    };
    format!("{words} ('{t}')")
}

/// Reads `image_embeds` from a safetensors file or a `.npy` file. The file must be a
/// regular file no larger than the memory available (a FIFO or `/dev/zero` is refused
/// before reading).
pub fn read_images(path: &Path) -> Result<Images> {
    let bytes = crate::files::read_bounded(path, u64::MAX, "any limit")?;
    if path.extension().is_some_and(|e| e == "npy") {
        let (shape, fortran) =
            npy_shape(&bytes).with_context(|| format!("{}: not a valid .npy file", path.display()))?;
        let npy =
            npyz::NpyFile::new(&bytes[..]).with_context(|| format!("{}: not a valid .npy file", path.display()))?;
        let float_bytes = match npy.dtype() {
            npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float => Some(t.size_field()),
            _ => None,
        };
        let data: Vec<f32> = match float_bytes {
            Some(4) => {
                npy.into_vec::<f32>().with_context(|| format!("{}: cannot read float32 data", path.display()))?
            }
            Some(8) => npy
                .into_vec::<f64>()
                .with_context(|| format!("{}: cannot read float64 data", path.display()))?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
            Some(2) => npy
                .into_vec::<half::f16>()
                .with_context(|| format!("{}: cannot read float16 data", path.display()))?
                .into_iter()
                .map(f32::from)
                .collect(),
            _ => bail!(
                "{}: dtype {} is not supported (float32, float16 or float64)",
                path.display(),
                npy_dtype_name(&npy.dtype())
            ),
        };
        // NumPy saves a transposed array as is, with `fortran_order: True`.
        let data = if fortran { fortran_to_c(&data, &shape) } else { data };
        return images_from(&shape, data, &path.display().to_string());
    }
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
    let v = st.tensor("image_embeds").map_err(|_| anyhow!("{}: no tensor named image_embeds", path.display()))?;
    let data = to_f32(v.data(), v.dtype()).with_context(|| format!("{}: image_embeds", path.display()))?;
    images_from(v.shape(), data, &format!("{}: image_embeds", path.display()))
}

/// Encodes named f32 tensors as safetensors bytes.
pub fn encode_tensors(tensors: &[(&str, Vec<usize>, &[f32])]) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data)).map(|v| (name.to_string(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("cannot encode outputs: {e}"))?;
    safetensors::serialize(views, None).map_err(|e| anyhow!("cannot encode outputs: {e}"))
}

/// Writes named f32 tensors as a safetensors file, atomically (see [`crate::files::Output`]).
pub fn write_tensors(path: &Path, tensors: &[(&str, Vec<usize>, &[f32])]) -> Result<()> {
    crate::write_atomic(path, &encode_tensors(tensors)?)
}

/// The InstructBLIP instructions an input file carries, as `InstructBlipProcessor` writes
/// them: `qformer_input_ids` `[B, T]` or `[T]` (I64 or I32) and, optionally,
/// `qformer_attention_mask` of the same shape (I64, I32, U8 or BOOL; 1 attended, 0 padding;
/// all ones when absent). `None` when the file has no `qformer_input_ids` (or is `.npy`).
pub fn read_instructions(path: &Path) -> Result<Option<Instructions>> {
    if path.extension().is_some_and(|e| e == "npy") {
        return Ok(None);
    }
    let bytes = crate::files::read_bounded(path, u64::MAX, "any limit")?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
    let Ok(ids) = st.tensor("qformer_input_ids") else {
        if st.tensor("qformer_attention_mask").is_ok() {
            bail!("{}: has qformer_attention_mask but no qformer_input_ids", path.display());
        }
        return Ok(None);
    };
    let what = |name: &str| format!("{}: {name}", path.display());
    // Shapes before dtypes, as the messages have always come.
    let (rows, len) = ids_rows(ids.shape(), &what)?;
    let ints = |v: &TensorView<'_>, name: &str| -> Result<Vec<i64>> {
        let b = v.data();
        Ok(match v.dtype() {
            Dtype::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
            Dtype::I32 => {
                b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64).collect()
            }
            Dtype::U8 | Dtype::BOOL if name == "qformer_attention_mask" => b.iter().map(|&x| x as i64).collect(),
            other => bail!("{} has dtype {other:?}, expected I64 or I32", what(name)),
        })
    };
    let raw = ints(&ids, "qformer_input_ids")?;
    let mask = match st.tensor("qformer_attention_mask") {
        Err(_) => None,
        Ok(m) => {
            check_mask_shape(m.shape(), rows, len, &what)?;
            Some((m.shape().to_vec(), m))
        }
    };
    let mask = match &mask {
        None => None,
        Some((shape, m)) => Some((shape.as_slice(), ints(m, "qformer_attention_mask")?)),
    };
    instructions_from(ids.shape(), &raw, mask.as_ref().map(|(s, v)| (*s, v.as_slice())), &what).map(Some)
}

/// InstructBLIP instructions from integer token ids `[B, T]` or `[T]` and an optional
/// attention mask of the same shape (1 attended, 0 padding; all ones when absent), checked as
/// [`read_instructions`] checks a file's: ids must be in `0..2^32`, mask values 0 or 1.
/// `what(name)` names a tensor in the messages.
pub fn instructions_from(
    ids_shape: &[usize],
    ids: &[i64],
    mask: Option<(&[usize], &[i64])>,
    what: &dyn Fn(&str) -> String,
) -> Result<Instructions> {
    let (rows, len) = ids_rows(ids_shape, what)?;
    if rows.checked_mul(len) != Some(ids.len()) {
        bail!("{} has shape {ids_shape:?} but {} values", what("qformer_input_ids"), ids.len());
    }
    let ids: Vec<u32> = ids
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            u32::try_from(v)
                .map_err(|_| anyhow!("{} value {v} at flat index {i} is not a token id", what("qformer_input_ids")))
        })
        .collect::<Result<_>>()?;
    let mask: Vec<u8> = match mask {
        None => vec![1; ids.len()],
        Some((shape, values)) => {
            check_mask_shape(shape, rows, len, what)?;
            if values.len() != ids.len() {
                bail!("{} has shape {shape:?} but {} values", what("qformer_attention_mask"), values.len());
            }
            values
                .iter()
                .enumerate()
                .map(|(i, &v)| match v {
                    0 | 1 => Ok(v as u8),
                    _ => bail!("{} value {v} at flat index {i} is not 0 or 1", what("qformer_attention_mask")),
                })
                .collect::<Result<_>>()?
        }
    };
    Ok(Instructions { ids, mask, len, rows })
}

/// Rows and length of `qformer_input_ids` of shape `[B, T]` or `[T]`.
fn ids_rows(shape: &[usize], what: &dyn Fn(&str) -> String) -> Result<(usize, usize)> {
    Ok(match shape {
        [t] => (1, *t),
        [b, t] => (*b, *t),
        s => bail!("{} has shape {s:?}, expected [B, T] or [T]", what("qformer_input_ids")),
    })
}

/// `qformer_attention_mask` has the ids' shape (`[T]` only for one row).
fn check_mask_shape(shape: &[usize], rows: usize, len: usize, what: &dyn Fn(&str) -> String) -> Result<()> {
    if shape != [rows, len] && shape != [len] || (shape == [len] && rows != 1) {
        bail!(
            "{} has shape {:?}, qformer_input_ids {:?}: they must match",
            what("qformer_attention_mask"),
            shape,
            [rows, len]
        );
    }
    Ok(())
}
