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
    assert!(
        err <= tol,
        "{what}: max abs error {err:.3e} > {tol:.0e} at flat index {at} (got {}, want {})",
        got[at],
        want[at]
    );
}

/// A tiny config for format and error tests: 2 layers, d 32, 4 heads, projection 24.
pub const TINY: qformer_core::Config = qformer_core::Config {
    num_layers: 2,
    hidden: 32,
    num_heads: 4,
    intermediate: 64,
    cross_attention_frequency: 2,
    encoder_hidden: 48,
    num_queries: 4,
    max_image_tokens: 9,
    projection_dim: 24,
    activation: qformer_core::Activation::Gelu,
    layer_norm_eps: 1e-12,
    max_text_tokens: 0,
    vocab_size: 0,
    vocab_bytes: 0,
};

/// A valid blob of a tiny synthetic model.
pub fn tiny_blob(precision: qformer_core::Precision) -> Vec<u8> {
    let w = qformer_std::synth::Spec::textured(TINY, 5).build();
    qformer_std::writer::build_blob(&w, qformer_std::writer::BlobOptions::new(precision), || {}).expect("tiny blob")
}

/// Rewrites the checksum of a (modified) blob so it passes the CRC check.
pub fn reseal(blob: &mut [u8]) {
    let crc = qformer_core::blob::checksum(blob);
    blob[qformer_core::blob::CHECKSUM_OFFSET..qformer_core::blob::CHECKSUM_OFFSET + 4]
        .copy_from_slice(&crc.to_le_bytes());
}

/// Copies a fixture case (and its subdirectories, e.g. `qformer_tokenizer/`) into a fresh
/// temporary directory (for tests that damage it).
pub fn copy_case(case: &str) -> tempfile::TempDir {
    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        for entry in std::fs::read_dir(from).expect("fixture dir") {
            let p = entry.expect("dir entry").path();
            let dst = to.join(p.file_name().expect("file name"));
            if p.is_dir() {
                std::fs::create_dir(&dst).expect("create dir");
                copy_dir(&p, &dst);
            } else {
                std::fs::copy(&p, dst).expect("copy fixture");
            }
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&fixture(case), dir.path());
    dir
}

/// Rewrites the safetensors file at `path`, letting `edit` change the list of
/// `(name, dtype, shape, bytes)`.
pub fn rewrite_safetensors(
    path: &std::path::Path,
    edit: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let bytes = std::fs::read(path).expect("read safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut list: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    edit(&mut list);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = list
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("view")))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).expect("serialize")).expect("write safetensors");
}

/// A `.npy` file (format 1.0) with the given header fields and raw data.
pub fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let order = if fortran { "True" } else { "False" };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// The InstructBLIP fixture cases made by `tools/reference/make_instructblip.py`.
pub const INSTRUCT_CASES: [&str; 4] =
    ["instructblip_hf", "instructblip_hf_sharded", "instructblip_hf_bf16", "instructblip_lavis"];

impl Golden {
    /// Integer tensor `name` (I64 or I32) with its shape, if present.
    pub fn ints(&self, name: &str) -> Option<(Vec<usize>, Vec<i64>)> {
        let st = SafeTensors::deserialize(&self.bytes).expect("valid golden file");
        let v = st.tensor(name).ok()?;
        let data = match v.dtype() {
            safetensors::Dtype::I64 => {
                v.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
            }
            safetensors::Dtype::I32 => {
                v.data().chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64).collect()
            }
            other => panic!("{name} has dtype {other:?}, not an integer"),
        };
        Some((v.shape().to_vec(), data))
    }

    /// The instructions stored as `{prefix}qformer_input_ids` / `{prefix}qformer_attention_mask`.
    pub fn instructions(&self, prefix: &str) -> Option<qformer_std::runtime::Instructions> {
        let (shape, ids) = self.ints(&format!("{prefix}qformer_input_ids"))?;
        let (_, mask) = self.ints(&format!("{prefix}qformer_attention_mask"))?;
        Some(qformer_std::runtime::Instructions {
            ids: ids.iter().map(|&v| v as u32).collect(),
            mask: mask.iter().map(|&v| v as u8).collect(),
            len: shape[1],
            rows: shape[0],
        })
    }
}
