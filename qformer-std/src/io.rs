//! Input features and outputs on disk.
//!
//! Inputs: a safetensors file with `image_embeds` of shape `[M, d_v]` or `[B, M, d_v]`
//! (f32, f16, bf16 or f64), or a `.npy` array of the same shapes (f32 or f64).
//! Outputs: safetensors with `qformer_output` `[B, N, d]` and, for models with a language
//! projection, `projected` `[B, N, d_llm]`, both f32.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::checkpoint::to_f32;

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

fn images_from(shape: &[usize], data: Vec<f32>, what: &str) -> Result<Images> {
    let (batch, tokens, dim) = match shape {
        [m, dv] => (1, *m, *dv),
        [b, m, dv] => (*b, *m, *dv),
        _ => bail!("{what} has shape {shape:?}, expected [M, d_v] or [B, M, d_v]"),
    };
    Ok(Images { data, batch, tokens, dim })
}

/// Reads `image_embeds` from a safetensors file or a `.npy` file.
pub fn read_images(path: &Path) -> Result<Images> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "npy") {
        let npy =
            npyz::NpyFile::new(&bytes[..]).with_context(|| format!("{}: not a valid .npy file", path.display()))?;
        let shape: Vec<usize> = npy.shape().iter().map(|&s| s as usize).collect();
        let data: Vec<f32> = match npy.dtype() {
            npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 4 => {
                npy.into_vec::<f32>().with_context(|| format!("{}: cannot read f32 data", path.display()))?
            }
            npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 8 => npy
                .into_vec::<f64>()
                .with_context(|| format!("{}: cannot read f64 data", path.display()))?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
            other => bail!("{}: dtype {other:?} is not supported (f32 or f64)", path.display()),
        };
        return images_from(&shape, data, &path.display().to_string());
    }
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
    let v = st.tensor("image_embeds").map_err(|_| anyhow!("{}: no tensor named image_embeds", path.display()))?;
    let data = to_f32(v.data(), v.dtype()).with_context(|| format!("{}: image_embeds", path.display()))?;
    images_from(v.shape(), data, &format!("{}: image_embeds", path.display()))
}

/// Writes named f32 tensors as a safetensors file, atomically.
pub fn write_tensors(path: &Path, tensors: &[(&str, Vec<usize>, &[f32])]) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data)).map(|v| (name.to_string(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("cannot encode outputs: {e}"))?;
    let bytes = safetensors::serialize(views, None).map_err(|e| anyhow!("cannot encode outputs: {e}"))?;
    crate::write_atomic(path, &bytes)
}
