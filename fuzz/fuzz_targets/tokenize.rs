//! `qformer_core::tokenizer::tokenize` on arbitrary text with bert-base-uncased's vocabulary
//! (the tokenizer fixture, with LAVIS's `[DEC]` added): it must return, never panic; every id
//! must be in the vocabulary, `[CLS]` first and `[SEP]` last; and a truncated output must be
//! the window of the untruncated one its side keeps (the first pieces, or with
//! `truncate_left` the last ones). `Vocab::new` on the fuzzed bytes as tables must return.
//!
//! Input: byte 0 is flags — bit 0 lowercase, bit 1 strip accents, bits 2-7 the truncated
//! output's length minus 2 (0..=63). The rest is the text (invalid UTF-8 replaced by U+FFFD).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qformer_core::tokenizer::{tokenize, TokenizerOptions, Vocab};
use qformer_std::vocab::TokenizerSpec;

const VOCAB: &str = include_str!("../../tests/fixtures/tokenizer/vocab.txt");

/// The fixture's tables plus `[DEC]`, built once.
fn tables() -> &'static (TokenizerSpec, (Vec<u8>, Vec<u32>, Vec<u32>)) {
    static T: OnceLock<(TokenizerSpec, (Vec<u8>, Vec<u32>, Vec<u32>))> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().expect("scratch directory");
        std::fs::write(dir.path().join("vocab.txt"), VOCAB).expect("write vocab.txt");
        std::fs::write(dir.path().join("added_tokens.json"), r#"{"[DEC]": 30522}"#).expect("write added_tokens.json");
        let spec = TokenizerSpec::load(dir.path()).expect("fixture vocabulary");
        let tables = spec.tables();
        (spec, tables)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    static VOCAB_TABLES: OnceLock<Vocab<'static>> = OnceLock::new();
    let (spec, (text, offsets, sorted)) = tables();
    let vocab = *VOCAB_TABLES.get_or_init(|| Vocab::new(text, offsets, sorted).expect("fixture tables"));
    let input = String::from_utf8_lossy(rest);
    let base = TokenizerOptions { lowercase: flags & 1 != 0, strip_accents: flags & 2 != 0, ..spec.options };
    let mut full = vec![0u32; input.chars().count() * 3 + 2];
    let f = tokenize(&vocab, &base, &input, &mut full).expect("a large enough output");
    assert!(!f.truncated());
    let full = &full[..f.len];
    assert_eq!((full[0], full[f.len - 1]), (base.cls, base.sep));
    assert!(full.iter().all(|&id| (id as usize) < vocab.len()));
    let k = usize::from(flags >> 2) + 2;
    for truncate_left in [false, true] {
        let o = TokenizerOptions { truncate_left, ..base };
        let mut out = vec![u32::MAX; k];
        let got = tokenize(&vocab, &o, &input, &mut out).expect("k >= 2");
        assert_eq!(got.truncated_from, f.len);
        assert_eq!(got.len, f.len.min(k));
        let n = got.len - 2;
        let want = if truncate_left { &full[f.len - 1 - n..f.len - 1] } else { &full[1..1 + n] };
        assert_eq!(&out[1..got.len - 1], want);
        assert_eq!((out[0], out[got.len - 1]), (o.cls, o.sep));
    }

    // The same bytes as vocabulary tables: text, then u32 offsets and ids from the second half.
    let (a, b) = rest.split_at(rest.len() / 2);
    let words: Vec<u32> = b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    // 2V+1 words: V+1 offsets, then V ids.
    let (offs, ids) = words.split_at(words.len().div_ceil(2));
    if let Ok(v) = Vocab::new(a, offs, ids) {
        let mut out = [0u32; 8];
        for id in 0..v.len() as u32 {
            let t = v.token(id).expect("every id has a token");
            assert_eq!(v.id(t), Some(id));
        }
        let o = TokenizerOptions { cls: 0, sep: 0, unk: 0, pad: 0, first_added: v.len() as u32, ..base };
        let _ = tokenize(&v, &o, &input, &mut out);
    }
});
