//! A Q-Former's tensors in memory, f32, in the blob's canonical order.

use anyhow::{bail, Result};
use qformer_core::blob::{self, Role};
use qformer_core::Config;

/// One tensor: `[rows, cols]` row-major f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// What it is.
    pub role: Role,
    /// Its layer (0 outside the layers).
    pub layer: u16,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// `rows * cols` values.
    pub data: Vec<f32>,
}

/// Config plus every tensor, `tensors[i]` being table slot `i` ([`blob::slot`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    /// The config.
    pub config: Config,
    /// The tensors in canonical order.
    pub tensors: Vec<Tensor>,
}

/// The Hugging Face key of `role` in `layer`, as a `String`.
pub fn hf_name(role: Role, layer: u16) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = role.write_name(&mut s, layer);
    s
}

impl Weights {
    /// Checks that `tensors` follow the canonical order with the config's shapes.
    pub fn new(config: Config, tensors: Vec<Tensor>) -> Result<Weights> {
        config.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        let count = blob::tensor_count(&config) as usize;
        if tensors.len() != count {
            bail!("{} tensors given, the config implies {count}", tensors.len());
        }
        for (i, t) in tensors.iter().enumerate() {
            let (role, layer) = blob::slot(&config, i as u32).expect("index below tensor_count");
            let [r, c] = role.shape(&config);
            if t.role != role || t.layer != layer {
                bail!("tensor {i} is {} but should be {}", hf_name(t.role, t.layer), hf_name(role, layer));
            }
            if (t.rows, t.cols) != (r as usize, c as usize) || t.data.len() != t.rows * t.cols {
                bail!("{} has shape [{}, {}] ({} values), expected [{r}, {c}]", hf_name(role, layer), t.rows, t.cols, t.data.len());
            }
        }
        Ok(Weights { config, tensors })
    }

    /// The tensor of `role` in `layer`.
    ///
    /// # Panics
    /// If the config has no such tensor (a programming error: callers ask for tensors the
    /// config implies).
    pub fn get(&self, role: Role, layer: u16) -> &Tensor {
        let i = blob::index_of(&self.config, role, layer)
            .unwrap_or_else(|| panic!("config has no tensor {}", hf_name(role, layer)));
        &self.tensors[i as usize]
    }

    /// Number of parameters.
    pub fn parameters(&self) -> usize {
        self.tensors.iter().map(|t| t.data.len()).sum()
    }
}
