//! `qformer_std::checkpoint::load` on a fuzzed `model.safetensors` and `config.json`, and
//! `qformer_std::io::read_images` on the same bytes as `.safetensors` and as `.npy`: each
//! must return Ok or Err, never panic. A checkpoint that loads is written as a blob, which
//! must validate, and run.
//!
//! Input: byte 0 is flags — bit 0 use the `hf_relu_f1` fixture's config.json (else the
//! config is the next u16 LE length of bytes), bit 1 pass the config path explicitly, bit 2
//! write no config.json, bits 3-4 the blob precision (0 int8, 1 fp16, 2 f32, 3 int8), bit 5
//! name the `.safetensors` file instead of the directory.
//! The rest is the safetensors file.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qformer_core::{Model, Precision};
use qformer_std::checkpoint::{self, LoadOptions};
use qformer_std::writer::{build_blob, BlobOptions};

const FIXTURE_CONFIG: &[u8] = include_bytes!("../../tests/fixtures/hf_relu_f1/config.json");

/// A scratch directory for the whole run (in memory when /dev/shm exists).
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let b = tempfile::Builder::new().prefix("qformer-fuzz-").tempdir_in(if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        });
        b.expect("scratch directory")
    })
    .path()
}

fn write(path: &PathBuf, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write scratch file");
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let config: &[u8] = if flags & 1 != 0 {
        FIXTURE_CONFIG
    } else {
        if rest.len() < 2 {
            return;
        }
        let len = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let c = &rest[2..2 + len];
        rest = &rest[2 + len..];
        c
    };
    let st = rest;
    let dir = scratch();

    // Inputs: the same bytes as both formats read_images accepts.
    for name in ["images.safetensors", "images.npy"] {
        let p = dir.join(name);
        write(&p, st);
        if let Ok(images) = qformer_std::io::read_images(&p) {
            let _ = images.batch.checked_mul(images.tokens).and_then(|x| x.checked_mul(images.dim));
        }
    }

    let model_path = dir.join("model.safetensors");
    let config_path = dir.join("config.json");
    write(&model_path, st);
    if flags & 4 != 0 {
        let _ = std::fs::remove_file(&config_path);
    } else {
        write(&config_path, config);
    }
    let opts = LoadOptions { config: (flags & 2 != 0).then(|| config_path.clone()), ..LoadOptions::default() };
    let path = if flags & 32 != 0 { model_path.as_path() } else { dir };
    let Ok(weights) = checkpoint::load(path, &opts) else { return };

    let precision = match (flags >> 3) & 3 {
        1 => Precision::F16,
        2 => Precision::F32,
        _ => Precision::Int8,
    };
    let Ok(blob) = build_blob(&weights, BlobOptions::new(precision), || {}) else { return };
    let copy = qformer_fuzz::aligned(&blob);
    let model = match Model::from_blob(copy.bytes()) {
        Ok(m) => m,
        Err(e) => panic!("the writer's blob of a loaded checkpoint does not validate: {e}"),
    };
    qformer_fuzz::exercise_model(&model, data.len() as u64);
});
