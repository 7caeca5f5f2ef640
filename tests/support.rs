//! Shared helpers of the integration tests: fixture paths and golden tensors.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use qformer_std::checkpoint::{self, LoadOptions};
use qformer_std::weights::Weights;
use safetensors::SafeTensors;

/// The fixture cases made by `tools/reference/make_fixtures.py`.
pub const CASES: [&str; 5] = ["hf_sharded_gelu_f2_proj", "hf_relu_f1", "hf_tanh_f3_proj", "lavis_gelu_f2", "hf_bf16"];

/// `tests/fixtures/<case>`.
pub fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(case)
}

/// Load options for a case (the LAVIS case carries a bare Q-Former config).
pub fn load_options(case: &str) -> LoadOptions {
    let dir = fixture(case);
    let config = dir.join("qformer_config.json");
    LoadOptions { config: config.is_file().then_some(config), ..LoadOptions::default() }
}

/// The case's Q-Former weights.
pub fn weights(case: &str) -> Weights {
    checkpoint::load(&fixture(case), &load_options(case)).unwrap_or_else(|e| panic!("{case}: {e:#}"))
}

/// The golden tensors of a case (`io.safetensors`).
pub struct Golden {
    bytes: Vec<u8>,
}

impl Golden {
    /// Reads `tests/fixtures/<case>/io.safetensors`.
    pub fn open(case: &str) -> Golden {
        let path = fixture(case).join("io.safetensors");
        Golden { bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) }
    }
    /// Tensor `name` as f32 with its shape, if present.
    pub fn get(&self, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        let st = SafeTensors::deserialize(&self.bytes).expect("valid golden file");
        let v = st.tensor(name).ok()?;
        let data = qformer_std::checkpoint::to_f32(v.data(), v.dtype()).expect("f32 golden");
        Some((v.shape().to_vec(), data))
    }
    /// Tensor `name`; error if absent.
    pub fn need(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        self.get(name).ok_or_else(|| anyhow!("golden tensor {name} missing"))
    }
}

/// Where and by how much `got` differs most from `want`: `(max abs error, flat index)`.
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> (f32, usize) {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).enumerate().fold((0f32, 0), |(m, at), (i, (g, w))| {
        let e = (g - w).abs();
        if e > m || e.is_nan() {
            (if e.is_nan() { f32::INFINITY } else { e }, i)
        } else {
            (m, at)
        }
    })
}

/// Asserts `got` is within `tol` of `want` everywhere, naming where and by how much not.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let (err, at) = max_abs_diff(got, want);
    assert!(err <= tol, "{what}: max abs error {err:.3e} > {tol:.0e} at flat index {at} (got {}, want {})", got[at], want[at]);
}
