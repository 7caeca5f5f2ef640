//! Unit tests of the tokenizer on a small hand-made vocabulary (the golden comparison with
//! transformers on bert-base-uncased's vocabulary is `tests/tokenizer.rs`).

use std::format;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use super::*;

/// Owned tables of a vocabulary given in id order.
struct Tables {
    text: Vec<u8>,
    offsets: Vec<u32>,
    sorted: Vec<u32>,
}

impl Tables {
    fn new(tokens: &[&str]) -> Self {
        let mut text = Vec::new();
        let mut offsets = vec![0u32];
        for t in tokens {
            text.extend_from_slice(t.as_bytes());
            offsets.push(text.len() as u32);
        }
        let mut sorted: Vec<u32> = (0..tokens.len() as u32).collect();
        sorted.sort_by_key(|&i| tokens[i as usize].as_bytes());
        Tables { text, offsets, sorted }
    }

    fn vocab(&self) -> Vocab<'_> {
        Vocab::new(&self.text, &self.offsets, &self.sorted).expect("valid tables")
    }
}

const TOKENS: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "un", "##aff", "##able", "a", "##a", ",", "!", "[",
    "]", "sep", "cafe", "##s", "σ", "ς", "图", "的", "[DEC]", "dec",
];
const PAD: u32 = 0;
const UNK: u32 = 1;
const CLS: u32 = 2;
const SEP: u32 = 3;
const MASK: u32 = 4;
const HELLO: u32 = 5;
const WORLD: u32 = 6;
const A: u32 = 10;
const HASH_A: u32 = 11;
const DEC: u32 = 23;

fn options(first_added: u32) -> TokenizerOptions {
    TokenizerOptions {
        lowercase: true,
        strip_accents: true,
        truncate_left: false,
        cls: CLS,
        sep: SEP,
        unk: UNK,
        pad: PAD,
        first_added,
    }
}

/// Ids of `text` with the first `TOKENS.len()` ids plain vocabulary (no added tokens).
fn ids_with(o: &TokenizerOptions, text: &str, max_len: usize) -> (Vec<u32>, Tokenized) {
    let t = Tables::new(TOKENS);
    let mut out = vec![u32::MAX; max_len];
    let got = tokenize(&t.vocab(), o, text, &mut out).expect("tokenizes");
    assert!(out[got.len..].iter().all(|&x| x == u32::MAX), "nothing written past len");
    out.truncate(got.len);
    (out, got)
}

fn ids(text: &str) -> Vec<u32> {
    ids_with(&options(TOKENS.len() as u32), text, 64).0
}

#[test]
fn vocab_lookups() {
    let t = Tables::new(TOKENS);
    let v = t.vocab();
    assert_eq!(v.len(), TOKENS.len());
    assert!(!v.is_empty());
    for (i, tok) in TOKENS.iter().enumerate() {
        assert_eq!(v.token(i as u32), Some(*tok));
        assert_eq!(v.id(tok), Some(i as u32));
    }
    assert_eq!(v.token(TOKENS.len() as u32), None);
    assert_eq!(v.token(u32::MAX), None);
    assert_eq!(v.id("hell"), None);
    assert_eq!(v.id("hello!"), None);
    assert_eq!(v.id(""), None);
    assert_eq!(v.find(b"##", b"aff"), Some(8));
    assert_eq!(v.find(b"#", b"#aff"), Some(8));
    assert_eq!(v.find(b"##aff", b""), Some(8));
    assert_eq!(v.find(b"##", b"af"), None);

    let empty = Vocab::new(&[], &[0], &[]).expect("an empty vocabulary is valid");
    assert!(empty.is_empty());
    assert_eq!(empty.id("a"), None);
}

#[test]
fn vocab_errors() {
    let t = Tables::new(&["b", "a", "c"]);
    assert_eq!(t.sorted, [1, 0, 2]);
    let new = |text: &[u8], offsets: &[u32], sorted: &[u32]| Vocab::new(text, offsets, sorted).err();
    assert_eq!(new(b"bac", &[], &[]), Some(VocabError::NoOffsets));
    assert_eq!(new(b"bac", &[1, 2, 3], &[0, 1]), Some(VocabError::FirstOffset(1)));
    assert_eq!(new(b"bac", &[0, 1, 2], &[1, 0]), Some(VocabError::LastOffset { last: 2, text_len: 3 }));
    assert_eq!(new(b"bac", &[0, 1, 1, 3], &[1, 0, 2]), Some(VocabError::EmptyToken(1)));
    assert_eq!(new(b"bac", &[0, 2, 1, 3], &[1, 0, 2]), Some(VocabError::EmptyToken(1)));
    assert_eq!(new(b"", &[0, 0], &[0]), Some(VocabError::EmptyToken(0)));
    assert_eq!(new(b"b\xffc", &[0, 1, 2, 3], &[1, 0, 2]), Some(VocabError::NotUtf8(1)));
    // "é" split inside its two bytes: each half is invalid.
    assert_eq!(new("é".as_bytes(), &[0, 1, 2], &[0, 1]), Some(VocabError::NotUtf8(0)));
    assert_eq!(new(b"bac", &[0, 1, 2, 3], &[1, 0]), Some(VocabError::SortedLength { sorted: 2, tokens: 3 }));
    assert_eq!(new(b"bac", &[0, 1, 2, 3], &[1, 0, 3]), Some(VocabError::SortedId { index: 2, id: 3 }));
    assert_eq!(new(b"bac", &[0, 1, 2, 3], &[0, 1, 2]), Some(VocabError::NotSorted(1)));
    assert_eq!(new(b"bac", &[0, 1, 2, 3], &[1, 1, 2]), Some(VocabError::NotSorted(1)));
    // A duplicate token cannot be strictly sorted.
    assert_eq!(new(b"aab", &[0, 1, 2, 3], &[0, 1, 2]), Some(VocabError::NotSorted(1)));
    assert!(new(&t.text, &t.offsets, &t.sorted).is_none());

    let msg = VocabError::NotUtf8(17).to_string();
    assert_eq!(msg, "token 17 is not valid UTF-8");
    assert_eq!(VocabError::NotSorted(5).to_string(), "sorted table is not strictly increasing at 5");
}

#[test]
fn empty_and_blank_text() {
    assert_eq!(ids(""), [CLS, SEP]);
    assert_eq!(ids("   \t\n\r \u{3000}\u{a0}\u{2028}"), [CLS, SEP]);
    assert_eq!(ids("\u{0}\u{fffd}\u{200b}\u{7f}"), [CLS, SEP]);
    assert_eq!(ids("\u{301}\u{302}"), [CLS, SEP], "lone accents are stripped to nothing");
}

#[test]
fn words_pieces_and_unknowns() {
    assert_eq!(ids("Hello WORLD"), [CLS, HELLO, WORLD, SEP]);
    assert_eq!(ids("unaffable"), [CLS, 7, 8, 9, SEP]);
    // No full match: one [UNK] for the word, nothing of its matched prefix.
    assert_eq!(ids("unaffablex"), [CLS, UNK, SEP]);
    assert_eq!(ids("xyz hello"), [CLS, UNK, HELLO, SEP]);
    assert_eq!(ids("hello,world!"), [CLS, HELLO, 12, WORLD, 13, SEP]);
    assert_eq!(ids("Cafés"), [CLS, 17, 18, SEP]);
    assert_eq!(ids("CAFE\u{301}S"), [CLS, 17, 18, SEP]);
    // Final sigma: Python's str.lower() context rule.
    assert_eq!(ids("Σ"), [CLS, 19, SEP]);
    assert_eq!(ids("AΣ"), [CLS, UNK, SEP]);
    // CJK ideographs are words of their own.
    assert_eq!(ids("图的图"), [CLS, 21, 22, 21, SEP]);
}

#[test]
fn word_length_limit() {
    let a100 = "a".repeat(100);
    let mut want = vec![CLS, A];
    want.extend(core::iter::repeat_n(HASH_A, 99));
    want.push(SEP);
    let (got, t) = ids_with(&options(TOKENS.len() as u32), &a100, 200);
    assert_eq!(got, want);
    assert_eq!(t, Tokenized { len: 102, truncated_from: 102 });
    assert!(!t.truncated());
    assert_eq!(ids(&"a".repeat(101)), [CLS, UNK, SEP]);
    assert_eq!(ids(&"a".repeat(5000)), [CLS, UNK, SEP]);
    // The limit counts characters (after normalization), not bytes.
    let wide = |text: &str| ids_with(&options(TOKENS.len() as u32), text, 200).0;
    assert_eq!(wide(&"á".repeat(100)).len(), 102);
    assert_eq!(ids(&"á".repeat(101)), [CLS, UNK, SEP]);
    // Punctuation ends a word.
    assert_eq!(wide(&format!("{a100},")).len(), 103);
}

#[test]
fn special_tokens_are_kept_whole() {
    assert_eq!(ids("hello[SEP]world"), [CLS, HELLO, SEP, WORLD, SEP]);
    assert_eq!(ids(" [MASK] "), [CLS, MASK, SEP]);
    assert_eq!(ids("[MASK][PAD][UNK][CLS]"), [CLS, MASK, PAD, UNK, CLS, SEP]);
    assert_eq!(ids("[sep]"), [CLS, 14, 16, 15, SEP]);
    // Equal to a special token only after _clean_text: kept whole by BasicTokenizer.
    assert_eq!(ids("[SE\u{0}P]"), [CLS, SEP, SEP]);
    // Not added: "[DEC]" is split like any text.
    assert_eq!(ids("[DEC]"), [CLS, 14, 24, 15, SEP]);
    // Added from DEC on: kept whole in the raw text, never a WordPiece piece.
    let o = options(DEC);
    assert_eq!(ids_with(&o, "a[DEC]b", 16).0, [CLS, A, DEC, UNK, SEP]);
    // Added and equal only after cleaning: WordPiece sees "[DEC]" and cannot spell it.
    assert_eq!(ids_with(&o, "[DE\u{0}C]", 16).0, [CLS, UNK, SEP]);
    // A vocabulary without [MASK] has no [MASK] special.
    let t = Tables::new(&["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[", "]", "mask"]);
    let mut out = [0u32; 8];
    let o = TokenizerOptions { first_added: 7, ..options(7) };
    let got = tokenize(&t.vocab(), &o, "[MASK]", &mut out).unwrap();
    assert_eq!(&out[..got.len], [CLS, 4, 6, 5, SEP]);
}

#[test]
fn truncation_both_sides() {
    let text = "hello world a hello world";
    let all = [CLS, HELLO, WORLD, A, HELLO, WORLD, SEP];
    assert_eq!(ids(text), all);
    let mut o = options(TOKENS.len() as u32);
    for k in 2..=9 {
        o.truncate_left = false;
        let (right, t) = ids_with(&o, text, k);
        o.truncate_left = true;
        let (left, tl) = ids_with(&o, text, k);
        let keep = (k - 2).min(5);
        let mut want_right = vec![CLS];
        want_right.extend_from_slice(&all[1..1 + keep]);
        want_right.push(SEP);
        let mut want_left = vec![CLS];
        want_left.extend_from_slice(&all[6 - keep..6]);
        want_left.push(SEP);
        assert_eq!(right, want_right, "right, {k}");
        assert_eq!(left, want_left, "left, {k}");
        assert_eq!(t.truncated_from, 7);
        assert_eq!(tl.truncated_from, 7);
        assert_eq!(t.truncated(), k < 7);
    }
}

#[test]
fn output_and_option_errors() {
    let t = Tables::new(TOKENS);
    let o = options(TOKENS.len() as u32);
    for n in 0..2 {
        let mut out = vec![0u32; n];
        assert_eq!(tokenize(&t.vocab(), &o, "hello", &mut out), Err(TokenizeError::OutputTooShort(n)));
    }
    let mut out = [0u32; 2];
    assert_eq!(tokenize(&t.vocab(), &o, "hello world", &mut out), Ok(Tokenized { len: 2, truncated_from: 4 }));
    assert_eq!(out, [CLS, SEP]);
    let bad = TokenizerOptions { unk: 99, ..o };
    let err = tokenize(&t.vocab(), &bad, "x", &mut out).unwrap_err();
    assert_eq!(err, TokenizeError::BadOption { option: "unk", id: 99, vocab_len: TOKENS.len() });
    assert!(err.to_string().contains("unk = 99"));
    let bad = TokenizerOptions { first_added: 99, ..o };
    assert!(tokenize(&t.vocab(), &bad, "x", &mut out).is_err());
}

#[test]
fn long_combining_runs_do_not_fail() {
    // Past the 32-character window: no panic, the base letter is kept.
    let text: String = core::iter::once('a').chain(core::iter::repeat_n('\u{301}', 1000)).collect();
    assert_eq!(ids(&text), [CLS, A, SEP]);
    let mut o = options(TOKENS.len() as u32);
    o.lowercase = false;
    o.strip_accents = false;
    let (got, _) = ids_with(&o, &text, 8);
    assert_eq!(got, [CLS, UNK, SEP]);
}

#[test]
fn nfc_composes_and_nfd_reorders() {
    // Cased, no stripping: NFC composes e + acute into é, which this vocabulary lacks; with
    // stripping, both spellings become "cafe".
    let mut o = options(TOKENS.len() as u32);
    assert_eq!(ids_with(&o, "cafe\u{301}", 8).0, [CLS, 17, SEP]);
    o.lowercase = false;
    o.strip_accents = false;
    assert_eq!(ids_with(&o, "cafe\u{301}", 8).0, ids_with(&o, "caf\u{e9}", 8).0);
    let mut out = ['\0'; 8];
    let mut n = 0;
    for c in Canon::new("q\u{307}\u{323}".chars(), false, true) {
        out[n] = c;
        n += 1;
    }
    assert_eq!(&out[..n], ['q', '\u{323}', '\u{307}'], "canonical order: ccc 220 before 230");
    let composed: String = Canon::new("\u{1100}\u{1161}\u{11a8}e\u{301}".chars(), true, true).collect();
    assert_eq!(composed, "\u{ac01}\u{e9}");
    let decomposed: String = Canon::new("\u{ac01}\u{1e69}".chars(), false, true).collect();
    assert_eq!(decomposed, "\u{1100}\u{1161}\u{11a8}s\u{323}\u{307}");
}

/// A deterministic generator of awkward strings (xorshift over a pool of hard characters).
fn awkward_strings() -> impl Iterator<Item = String> {
    const POOL: &str = "aAhelo  \t\n\0\u{fffd}\u{301}\u{323}\u{345}Σİßﬁ图的[]SEPMKDC,!#\u{200b}\u{2028}한\
        \u{1100}\u{1161}\u{11a8}😀\u{200d}\u{1f3fd}\u{3000}\u{7f}\u{1d165}\u{f900}\u{212a}ǅ'.ʰ";
    let pool: Vec<char> = POOL.chars().collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..3000).map(move |_| {
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let len = (next() % 40) as usize;
        (0..len)
            .map(|_| {
                let r = next();
                if r % 6 == 0 {
                    // Any scalar value.
                    char::from_u32(((r >> 8) % 0x11_0000) as u32).unwrap_or('\u{fffd}')
                } else {
                    pool[((r >> 8) % pool.len() as u64) as usize]
                }
            })
            .collect()
    })
}

#[test]
fn truncation_is_a_window_of_the_full_output() {
    let t = Tables::new(TOKENS);
    let v = t.vocab();
    for text in awkward_strings() {
        for (lowercase, strip_accents) in [(true, true), (false, false), (false, true)] {
            let o = TokenizerOptions { lowercase, strip_accents, ..options(DEC) };
            let mut full = vec![0u32; 4 * text.len() + 2];
            let f = tokenize(&v, &o, &text, &mut full).unwrap();
            assert!(!f.truncated());
            let full = &full[..f.len];
            assert_eq!((full[0], full[f.len - 1]), (CLS, SEP));
            assert!(full.iter().all(|&id| (id as usize) < TOKENS.len()));
            for k in [2, 3, 5, 8] {
                for left in [false, true] {
                    let o = TokenizerOptions { truncate_left: left, ..o };
                    let mut out = vec![u32::MAX; k];
                    let got = tokenize(&v, &o, &text, &mut out).unwrap();
                    assert_eq!(got.truncated_from, f.len, "{text:?}");
                    assert_eq!(got.len, f.len.min(k));
                    let inner = &out[1..got.len - 1];
                    let n = inner.len();
                    let want = if left { &full[f.len - 1 - n..f.len - 1] } else { &full[1..1 + n] };
                    assert_eq!(inner, want, "{text:?} k={k} left={left}");
                    assert_eq!((out[0], out[got.len - 1]), (CLS, SEP));
                }
            }
        }
    }
}

#[test]
fn unicode_tables_are_sorted() {
    assert!(CLASS.windows(2).all(|w| w[0] >> 8 < w[1] >> 8));
    assert!(CCC.windows(2).all(|w| w[0] >> 8 < w[1] >> 8));
    assert!(LOWER.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(DECOMP.windows(2).all(|w| decomp_entry(w[0]).0 < decomp_entry(w[1]).0));
    let pair = |i: u16| {
        let (_, a, b) = decomp_entry(DECOMP[i as usize]);
        (a, b)
    };
    assert!(COMPOSE.windows(2).all(|w| pair(w[0]) < pair(w[1])));
    assert_eq!(UNICODE_VERSION, "14.0.0");
}
