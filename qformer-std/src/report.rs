//! Human-readable summaries shared by `qformer` and `quantize`.

use std::fmt::Write;

use qformer_core::{Config, Model};

use crate::writer::bytes_per_dtype;

/// Formats a byte count as `1234567 (1.18 MiB)`.
pub fn bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{n} ({:.2} MiB)", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{n} ({:.1} KiB)", n as f64 / 1024.0)
    } else {
        format!("{n}")
    }
}

/// One line per config field.
pub fn config(c: &Config) -> String {
    let cross: Vec<String> = (0..c.num_layers).filter(|&l| c.has_cross(l)).map(|l| l.to_string()).collect();
    let mut s = String::new();
    let _ = writeln!(s, "  layers                 {}", c.num_layers);
    let _ = writeln!(s, "  hidden / heads         {} / {} (head size {})", c.hidden, c.num_heads, c.head_dim());
    let _ = writeln!(s, "  intermediate           {} ({})", c.intermediate, c.activation.name());
    let _ = writeln!(s, "  cross-attention        every {} (layers {})", c.cross_attention_frequency, cross.join(", "));
    let _ = writeln!(s, "  queries                {}", c.num_queries);
    let _ = writeln!(s, "  image features         up to {} x {}", c.max_image_tokens, c.encoder_hidden);
    let proj = if c.projection_dim > 0 { c.projection_dim.to_string() } else { "none".into() };
    let _ = writeln!(s, "  language projection    {proj}");
    let _ = write!(s, "  layer_norm_eps         {:e}", c.layer_norm_eps);
    if c.has_text() {
        let _ = write!(
            s,
            "\n  instruction            up to {} tokens (InstructBLIP: word and position embeddings, text feed-forward)\n  vocabulary             {} tokens ({} bytes)",
            c.max_text_tokens, c.vocab_size, c.vocab_bytes
        );
    }
    s
}

/// Blob size, bytes per dtype, arena plan.
pub fn model(m: &Model<'_>, blob: &[u8]) -> String {
    let mut s = String::new();
    let h = m.header();
    let _ = writeln!(
        s,
        "format version {}, precision {}{}",
        h.version,
        m.precision().name(),
        if h.group_size > 0 { format!(", int8 group {}", h.group_size) } else { String::new() }
    );
    let _ = writeln!(s, "config:\n{}", config(m.config()));
    if m.config().has_text() {
        let t = h.tokenizer_options();
        let token = |id: u32| m.vocab().and_then(|v| v.token(id)).unwrap_or("?").to_string();
        let _ = writeln!(
            s,
            "tokenizer                BERT WordPiece, {}lower-case, {}accents stripped, truncates on the {}; [CLS] {} = {}, [SEP] {} = {}, [UNK] {} = {}, [PAD] {} = {}",
            if t.lowercase { "" } else { "not " },
            if t.strip_accents { "" } else { "not " },
            if t.truncate_left { "left" } else { "right" },
            t.cls,
            token(t.cls),
            t.sep,
            token(t.sep),
            t.unk,
            token(t.unk),
            t.pad,
            token(t.pad)
        );
        let _ = writeln!(
            s,
            "encoded image            {} (cross-attention keys and values of one image, for many questions)",
            bytes(m.encoded_image_bytes())
        );
    }
    let _ = writeln!(s, "tensors                  {}", h.tensor_count);
    for (name, n) in bytes_per_dtype(blob) {
        let _ = writeln!(s, "  {name:<22} {}", bytes(n));
    }
    let _ = writeln!(s, "blob bytes               {}", bytes(blob.len()));
    let p = m.plan();
    let _ = writeln!(
        s,
        "arena bytes              {} (peak of the lifetime plan; {} if no buffer were shared)",
        bytes(p.total),
        bytes(p.sum_of_buffers)
    );
    let _ = write!(
        s,
        "  persistent {} + max(attention phase {}, feed-forward phase {})",
        bytes(p.region),
        bytes(p.attention.bytes),
        bytes(p.ffn.bytes)
    );
    s
}
