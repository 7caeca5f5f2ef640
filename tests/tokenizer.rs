//! The no_std tokenizer against transformers' Python `BertTokenizer`, bit for bit: the golden
//! ids of `tests/fixtures/tokenizer/golden.json` (made by
//! `tools/reference/make_tokenizer_golden.py` on bert-base-uncased's `vocab.txt`), through
//! `qformer_std::vocab` (the directory reader) and `qformer_core::tokenizer` (the tokenizer).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use qformer_core::tokenizer::{tokenize, TokenizerOptions, Vocab};
use qformer_std::vocab::{self, TokenizerSpec};
use serde_json::Value;

fn dir() -> PathBuf {
    qformer_tests::fixture("tokenizer")
}

fn golden() -> Value {
    let text = std::fs::read_to_string(dir().join("golden.json")).expect("tests/fixtures/tokenizer/golden.json");
    serde_json::from_str(&text).expect("golden.json is JSON")
}

fn spec() -> TokenizerSpec {
    vocab::load(&dir()).expect("the fixture tokenizer directory loads")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("ids array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// Options of a golden case's mode.
fn mode_options(base: &TokenizerOptions, mode: &str) -> TokenizerOptions {
    let (lowercase, strip_accents) = match mode {
        "uncased" => (true, true),
        "cased" => (false, false),
        "cased_strip" => (false, true),
        other => panic!("unknown mode {other}"),
    };
    TokenizerOptions { lowercase, strip_accents, ..*base }
}

/// Tokenizes into a buffer of `max_len` ids (or a generous one), returning the ids.
fn run(vocab: &Vocab<'_>, options: &TokenizerOptions, text: &str, max_len: Option<usize>) -> Result<Vec<u32>> {
    let mut out = vec![0u32; max_len.unwrap_or(text.chars().count() * 3 + 2)];
    let got = tokenize(vocab, options, text, &mut out).map_err(|e| anyhow!("{e}"))?;
    out.truncate(got.len);
    Ok(out)
}

/// Where two id lists first differ, with the tokens around it.
fn describe(vocab: &Vocab<'_>, got: &[u32], want: &[u32]) -> String {
    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    let show = |ids: &[u32]| {
        let mut s = String::new();
        for &id in ids.iter().skip(at.saturating_sub(2)).take(6) {
            let _ = write!(s, "{id}:{:?} ", vocab.token(id).unwrap_or("?"));
        }
        s
    };
    format!("first difference at {at} (lengths {} vs {}): got {} want {}", got.len(), want.len(), show(got), show(want))
}

#[test]
fn fixture_vocab_is_bert_base_uncased() {
    let spec = spec();
    assert_eq!(spec.tokens.len(), 30522);
    let o = spec.options;
    assert_eq!((o.pad, o.unk, o.cls, o.sep), (0, 100, 101, 102));
    assert_eq!(spec.tokens[103], "[MASK]");
    assert!(o.lowercase && o.strip_accents && !o.truncate_left);
    assert_eq!(o.first_added, 30522);
}

#[test]
fn golden_cases_match_transformers() -> Result<()> {
    let spec = spec();
    let (text, offsets, sorted) = spec.tables();
    let vocab = Vocab::new(&text, &offsets, &sorted).map_err(|e| anyhow!("{e}"))?;
    let golden = golden();
    let cases = golden["cases"].as_array().context("cases")?;
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let mut options = mode_options(&spec.options, case["mode"].as_str().context("mode")?);
        options.truncate_left = case["side"].as_str() == Some("left");
        let input = case["text"].as_str().context("text")?;
        let max_len = case["max_length"].as_u64().map(|k| k as usize);
        let want = ids(&case["ids"]);
        let got = run(&vocab, &options, input, max_len)?;
        if got != want {
            failures.push(format!(
                "case {i} ({} {:?} max_length {max_len:?} {}): {}",
                case["mode"],
                input,
                case["side"],
                describe(&vocab, &got, &want)
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
    Ok(())
}

#[test]
fn every_code_point_alone_matches_transformers() -> Result<()> {
    let spec = spec();
    let (text, offsets, sorted) = spec.tables();
    let vocab = Vocab::new(&text, &offsets, &sorted).map_err(|e| anyhow!("{e}"))?;
    let golden = golden();
    let mut checked = 0usize;
    for (mode, runs) in golden["sweep"].as_object().context("sweep")? {
        let options = mode_options(&spec.options, mode);
        let mut failures = Vec::new();
        let mut next = 0u32;
        for run in runs.as_array().context("runs")? {
            let first = run[0].as_u64().context("first")? as u32;
            let count = run[1].as_u64().context("count")? as u32;
            let want = ids(&run[2]);
            assert!(first >= next, "runs are ordered");
            for cp in first..first + count {
                let c = char::from_u32(cp).context("a scalar value")?;
                let mut buf = [0u8; 4];
                let got = run_pieces(&vocab, &options, c.encode_utf8(&mut buf));
                if got != want && failures.len() < 20 {
                    failures.push(format!("U+{cp:04X} {c:?}: got {got:?} want {want:?}"));
                }
                checked += 1;
            }
            next = first + count;
        }
        assert!(failures.is_empty(), "{mode}: code points differ:\n{}", failures.join("\n"));
    }
    // Every scalar value, in each of the two modes.
    assert_eq!(checked, 2 * (0x110000 - 0x800));
    Ok(())
}

/// The pieces of `text` without `[CLS]` and `[SEP]`.
fn run_pieces(vocab: &Vocab<'_>, options: &TokenizerOptions, text: &str) -> Vec<u32> {
    let mut out = [0u32; 16];
    let got = tokenize(vocab, options, text, &mut out).expect("tokenizes");
    out[1..got.len - 1].to_vec()
}

#[test]
fn lavis_dec_token_matches_transformers() -> Result<()> {
    // The LAVIS Q-Former tokenizer as transformers saves it, with the shared vocab.txt.
    let tmp = tempfile::tempdir()?;
    for entry in std::fs::read_dir(dir().join("lavis"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name()))?;
    }
    std::fs::copy(dir().join("vocab.txt"), tmp.path().join("vocab.txt"))?;
    let spec = vocab::load(tmp.path())?;
    let golden = golden();
    let added = &golden["added"];
    assert_eq!(spec.tokens.len(), 30523);
    assert_eq!(spec.tokens[30522], added["token"].as_str().unwrap());
    assert_eq!(spec.options.first_added, 30522);
    assert!(spec.options.truncate_left, "the saved config says truncation_side = left");
    let (text, offsets, sorted) = spec.tables();
    let vocab = Vocab::new(&text, &offsets, &sorted).map_err(|e| anyhow!("{e}"))?;
    for case in added["cases"].as_array().context("cases")? {
        let input = case["text"].as_str().context("text")?;
        let max_len = case["max_length"].as_u64().map(|k| k as usize);
        let got = run(&vocab, &spec.options, input, max_len)?;
        let want = ids(&case["ids"]);
        assert_eq!(got, want, "{input:?}: {}", describe(&vocab, &got, &want));
    }
    Ok(())
}
