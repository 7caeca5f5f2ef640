//! Agreement between two outputs.

/// Cosine similarity, max abs error and RMS error of `got` against `want`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    /// Cosine similarity of the flattened tensors (1 for identical).
    pub cosine: f64,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// Root mean square of the differences.
    pub rms: f64,
}

/// Compares two equally long slices (accumulating in f64).
pub fn agreement(got: &[f32], want: &[f32]) -> Agreement {
    assert_eq!(got.len(), want.len(), "compared tensors differ in length");
    let (mut dot, mut ng, mut nw, mut max_abs, mut sq) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (g as f64, w as f64);
        dot += g * w;
        ng += g * g;
        nw += w * w;
        let e = (g - w).abs();
        max_abs = max_abs.max(if e.is_nan() { f64::INFINITY } else { e });
        sq += e * e;
    }
    let cosine = if ng == 0.0 && nw == 0.0 { 1.0 } else { dot / (ng.sqrt() * nw.sqrt()) };
    Agreement {
        cosine: if cosine.is_nan() { 0.0 } else { cosine },
        max_abs,
        rms: (sq / got.len().max(1) as f64).sqrt(),
    }
}
