//! Hugging Face BERT WordPiece tokenizer directories (InstructBLIP's `qformer_tokenizer/`) read
//! into the tables of the core's [`Vocab`](qformer_core::tokenizer::Vocab).
//!
//! Read as transformers' Python `BertTokenizer.from_pretrained` reads them:
//! * `vocab.txt`: one token per line (lines end at `\n`, `\r\n` or `\r`, Python's universal
//!   newlines), the line number is the id. Python would give an empty line an id and let a
//!   repeated token's later line win; both are refused here, naming the lines.
//! * `tokenizer_config.json` (optional): `tokenizer_class` must be a BERT one,
//!   `do_lower_case` (default true), `strip_accents` (default: `do_lower_case`),
//!   `truncation_side`, the special tokens, and `added_tokens_decoder`; `do_basic_tokenize`,
//!   `tokenize_chinese_chars` and `never_split` must keep their defaults.
//! * `special_tokens_map.json` (optional): special tokens, overriding the config's.
//! * `added_tokens.json` (optional): added tokens beyond `vocab.txt` (`{"[DEC]": 30522}`).
//!
//! Added tokens must continue the ids of `vocab.txt` (LAVIS's `[DEC]` is 30522 after the 30522
//! of `bert-base-uncased`); they are appended to [`TokenizerSpec::tokens`] and
//! [`TokenizerOptions::first_added`] is the first of them. Of `tokenizer.json` (the fast
//! tokenizer's file) only `added_tokens` beyond `vocab.txt` are read: transformers 5 writes
//! them nowhere else.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use qformer_core::tokenizer::TokenizerOptions;
use serde_json::Value;

use crate::files::read_bounded;

/// The files of a tokenizer directory this module may read.
pub const FILES: [&str; 5] =
    ["vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.json"];

/// Largest tokenizer file read (a BERT `vocab.txt` is 232 KB, a `tokenizer.json` 466 KB).
const MAX_FILE_BYTES: u64 = 64 << 20;

/// A BERT WordPiece tokenizer: its tokens in id order (added tokens last) and options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizerSpec {
    /// Every token, index = id: `vocab.txt`'s lines, then the added tokens.
    pub tokens: Vec<String>,
    /// What the tokenizer does, with the special tokens' ids.
    pub options: TokenizerOptions,
}

/// The tokenizer classes this reads (`tokenizer_config.json`'s `tokenizer_class`).
const BERT_CLASSES: &[&str] = &["BertTokenizer", "BertTokenizerFast", "BertTokenizerLegacy"];

/// The special tokens the core knows by role.
const ROLES: [(&str, &str); 5] = [
    ("cls_token", "[CLS]"),
    ("sep_token", "[SEP]"),
    ("unk_token", "[UNK]"),
    ("pad_token", "[PAD]"),
    ("mask_token", "[MASK]"),
];

/// Other special-token keys, whose tokens must be added tokens (kept whole by the core).
const OTHER_SPECIAL: [&str; 2] = ["bos_token", "eos_token"];

fn read_json(path: &Path) -> Result<Option<serde_json::Map<String, Value>>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_bounded(path, MAX_FILE_BYTES, "the tokenizer file limit")?;
    let value: Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", path.display()))?;
    match value {
        Value::Object(map) => Ok(Some(map)),
        _ => bail!("{} is not a JSON object", path.display()),
    }
}

/// A special token's text: a string, or an AddedToken object's `content`.
fn token_text(value: &Value, key: &str, path: &Path) -> Result<Option<String>> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Object(o) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => bail!("{}: {key} has no string \"content\"", path.display()),
        },
        _ => bail!("{}: {key} is neither a string nor a token object", path.display()),
    }
}

/// Refuses an added token whose lstrip/rstrip/single_word flags are set (the core does not
/// implement them).
fn check_flags(o: &serde_json::Map<String, Value>, what: &str, path: &Path) -> Result<()> {
    for flag in ["lstrip", "rstrip", "single_word"] {
        if o.get(flag).and_then(Value::as_bool) == Some(true) {
            bail!("{}: {what} has {flag} = true, which this tokenizer does not implement", path.display());
        }
    }
    Ok(())
}

fn read_vocab_txt(path: &Path) -> Result<Vec<String>> {
    let bytes = read_bounded(path, MAX_FILE_BYTES, "the tokenizer file limit").map_err(|e| {
        if path.exists() {
            e
        } else {
            anyhow!("{} is missing (a BERT WordPiece tokenizer directory has one)", path.display())
        }
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = e.as_bytes().iter().take(e.utf8_error().valid_up_to()).filter(|&&b| b == b'\n').count() + 1;
        anyhow!("{} is not valid UTF-8 (line {line})", path.display())
    })?;
    // Python's readlines() in text mode: lines end at \r\n, \r or \n; then rstrip("\n").
    let mut tokens = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let (line, next) = match rest.find(['\r', '\n']) {
            Some(i) => {
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                (&rest[..i], &rest[i + skip..])
            }
            None => (rest, ""),
        };
        tokens.push(line.to_owned());
        rest = next;
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            bail!("{} line {} is empty (an empty token cannot be stored)", path.display(), i + 1);
        }
        if let Some(first) = seen.insert(token, i) {
            bail!(
                "{} lines {} and {} are the same token {token:?} (BertTokenizer would silently give it the later id)",
                path.display(),
                first + 1,
                i + 1
            );
        }
    }
    if tokens.is_empty() {
        bail!("{} has no tokens", path.display());
    }
    if u32::try_from(tokens.len()).is_err() {
        bail!("{} has {} tokens, more than u32 ids", path.display(), tokens.len());
    }
    Ok(tokens)
}

impl TokenizerSpec {
    /// Reads the tokenizer directory `dir` (see the module docs).
    pub fn load(dir: &Path) -> Result<TokenizerSpec> {
        let vocab_path = dir.join("vocab.txt");
        let config_path = dir.join("tokenizer_config.json");
        let map_path = dir.join("special_tokens_map.json");
        let added_path = dir.join("added_tokens.json");
        let mut tokens = read_vocab_txt(&vocab_path)?;
        let base = tokens.len();
        let config = read_json(&config_path)?.unwrap_or_default();
        let special_map = read_json(&map_path)?.unwrap_or_default();

        if let Some(class) = config.get("tokenizer_class") {
            let class = class.as_str().unwrap_or("");
            if !BERT_CLASSES.contains(&class) {
                bail!(
                    "{}: tokenizer_class {class:?} is not a BERT WordPiece tokenizer (expected one of {BERT_CLASSES:?})",
                    config_path.display()
                );
            }
        }
        let flag = |key: &str, default: Option<bool>| -> Result<Option<bool>> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => bail!("{}: {key} is {other}, not a boolean", config_path.display()),
            }
        };
        let lowercase = flag("do_lower_case", Some(true))?.unwrap_or(true);
        let strip_accents = flag("strip_accents", None)?.unwrap_or(lowercase);
        for key in ["do_basic_tokenize", "tokenize_chinese_chars"] {
            if flag(key, Some(true))? == Some(false) {
                bail!("{}: {key} = false is not supported (only BERT's default, true)", config_path.display());
            }
        }
        match config.get("never_split") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(other) => bail!("{}: never_split = {other} is not supported (only none)", config_path.display()),
        }
        let truncate_left = match config.get("truncation_side") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) if s == "right" => false,
            Some(Value::String(s)) if s == "left" => true,
            Some(other) => {
                bail!("{}: truncation_side = {other} is neither \"left\" nor \"right\"", config_path.display())
            }
        };

        // Added tokens: id -> (text, where it was declared).
        let mut added: BTreeMap<u32, (String, String)> = BTreeMap::new();
        if let Some(decoder) = config.get("added_tokens_decoder") {
            let decoder = decoder
                .as_object()
                .ok_or_else(|| anyhow!("{}: added_tokens_decoder is not an object", config_path.display()))?;
            for (key, entry) in decoder {
                let id: u32 = key
                    .parse()
                    .map_err(|_| anyhow!("{}: added_tokens_decoder key {key:?} is not an id", config_path.display()))?;
                let what = format!("added_tokens_decoder[{key}]");
                let o =
                    entry.as_object().ok_or_else(|| anyhow!("{}: {what} is not an object", config_path.display()))?;
                check_flags(o, &what, &config_path)?;
                let text = token_text(entry, &what, &config_path)?
                    .ok_or_else(|| anyhow!("{}: {what} has no content", config_path.display()))?;
                added.insert(id, (text, format!("{} {what}", config_path.display())));
            }
        }
        // transformers 5 writes its added tokens only into tokenizer.json (`added_tokens`, a
        // list of AddedToken objects with their ids); the ones beyond vocab.txt count here.
        let fast_path = dir.join("tokenizer.json");
        if let Some(json) = read_json(&fast_path)? {
            if let Some(list) = json.get("added_tokens") {
                let list =
                    list.as_array().ok_or_else(|| anyhow!("{}: added_tokens is not a list", fast_path.display()))?;
                for (i, entry) in list.iter().enumerate() {
                    let what = format!("added_tokens[{i}]");
                    let o =
                        entry.as_object().ok_or_else(|| anyhow!("{}: {what} is not an object", fast_path.display()))?;
                    let id = o
                        .get("id")
                        .and_then(Value::as_u64)
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(|| anyhow!("{}: {what} has no u32 \"id\"", fast_path.display()))?;
                    if (id as usize) < base {
                        continue;
                    }
                    check_flags(o, &what, &fast_path)?;
                    let text = token_text(entry, &what, &fast_path)?
                        .ok_or_else(|| anyhow!("{}: {what} has no content", fast_path.display()))?;
                    match added.get(&id) {
                        Some((other, _)) if *other != text => bail!(
                            "{}: id {id} is {text:?}, but the tokenizer config says {other:?}",
                            fast_path.display()
                        ),
                        Some(_) => {}
                        None => {
                            added.insert(id, (text, format!("{} {what}", fast_path.display())));
                        }
                    }
                }
            }
        }
        if let Some(json) = read_json(&added_path)? {
            for (text, id) in json {
                let id = id
                    .as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| anyhow!("{}: the id of {text:?} is not a u32", added_path.display()))?;
                if let Some((other, _)) = added.get(&id) {
                    if *other != text {
                        bail!("{}: id {id} is {text:?}, but the tokenizer config says {other:?}", added_path.display());
                    }
                }
                added.insert(id, (text, added_path.display().to_string()));
            }
        }

        // Special tokens by role: special_tokens_map.json over tokenizer_config.json over defaults.
        let lookup_special = |key: &str| -> Result<Option<String>> {
            if let Some(v) = special_map.get(key) {
                return token_text(v, key, &map_path);
            }
            if let Some(v) = config.get(key) {
                return token_text(v, key, &config_path);
            }
            Ok(None)
        };

        let first_added = u32::try_from(base).unwrap_or(u32::MAX);
        let mut next = first_added;
        for (&id, (text, source)) in &added {
            let idx = id as usize;
            if idx < base {
                if tokens[idx] != *text {
                    bail!(
                        "{source}: added token {text:?} has id {id}, but vocab.txt line {} is {:?}",
                        idx + 1,
                        tokens[idx]
                    );
                }
                let role = ROLES.iter().any(|&(key, default)| {
                    lookup_special(key).ok().flatten().as_deref().unwrap_or(default) == text.as_str()
                });
                if !role {
                    bail!(
                        "{source}: {text:?} (id {id}) is marked as an added token inside vocab.txt, which only \
                         [CLS], [SEP], [UNK], [PAD] and [MASK] may be here"
                    );
                }
                continue;
            }
            if id != next {
                bail!("{source}: added token {text:?} has id {id}, but the next free id is {next} (ids must continue vocab.txt's)");
            }
            if tokens.iter().any(|t| t == text) {
                bail!("{source}: added token {text:?} (id {id}) is already a token");
            }
            tokens.push(text.clone());
            next += 1;
        }

        let id_of = |text: &str| tokens.iter().position(|t| t == text).and_then(|i| u32::try_from(i).ok());
        let mut ids = [0u32; 4];
        for (slot, &(key, default)) in ids.iter_mut().zip(ROLES.iter()) {
            let text = lookup_special(key)?.unwrap_or_else(|| default.to_owned());
            *slot = id_of(&text).ok_or_else(|| {
                anyhow!("{key} {text:?} is not in {} nor among the added tokens", vocab_path.display())
            })?;
        }
        let mask = lookup_special("mask_token")?.unwrap_or_else(|| "[MASK]".to_owned());
        if mask != "[MASK]" {
            bail!("mask_token {mask:?} is not supported (only \"[MASK]\", which the core finds by its text)");
        }
        if id_of("[MASK]").is_some_and(|id| id >= first_added) {
            bail!("[MASK] is an added token; only a [MASK] inside vocab.txt is supported");
        }
        let mut others: Vec<(String, String)> = Vec::new();
        for key in OTHER_SPECIAL {
            if let Some(text) = lookup_special(key)? {
                others.push((key.to_owned(), text));
            }
        }
        for key in ["additional_special_tokens", "extra_special_tokens"] {
            let list = special_map.get(key).or_else(|| config.get(key));
            match list {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for item in items {
                        if let Some(text) = token_text(item, key, &config_path)? {
                            others.push((key.to_owned(), text));
                        }
                    }
                }
                Some(Value::Object(o)) if o.is_empty() => {}
                Some(other) => bail!("{key} = {other} is not a list of tokens"),
            }
        }
        for (key, text) in others {
            match id_of(&text) {
                Some(id) if id >= first_added || ids.contains(&id) => {}
                Some(id) => bail!(
                    "{key} {text:?} is token {id} of vocab.txt; only added tokens (after vocab.txt) and \
                     [CLS] [SEP] [UNK] [PAD] [MASK] can be special"
                ),
                None => bail!("{key} {text:?} is not in vocab.txt nor among the added tokens"),
            }
        }

        let [cls, sep, unk, pad] = ids;
        let options = TokenizerOptions { lowercase, strip_accents, truncate_left, cls, sep, unk, pad, first_added };
        Ok(TokenizerSpec { tokens, options })
    }

    /// The core's vocabulary tables: every token's bytes concatenated, the V+1 offsets, and
    /// the ids sorted by their tokens' bytes (what [`Vocab::new`](qformer_core::tokenizer::Vocab::new)
    /// takes).
    pub fn tables(&self) -> (Vec<u8>, Vec<u32>, Vec<u32>) {
        let mut text = Vec::with_capacity(self.tokens.iter().map(String::len).sum());
        let mut offsets = Vec::with_capacity(self.tokens.len() + 1);
        offsets.push(0u32);
        for token in &self.tokens {
            text.extend_from_slice(token.as_bytes());
            // load() bounds the token count; a text beyond 4 GiB saturates and Vocab::new refuses it.
            offsets.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
        }
        let mut sorted: Vec<u32> = (0..self.tokens.len()).filter_map(|i| u32::try_from(i).ok()).collect();
        sorted.sort_by(|&a, &b| self.tokens[a as usize].as_bytes().cmp(self.tokens[b as usize].as_bytes()));
        (text, offsets, sorted)
    }
}

/// Reads a tokenizer directory: [`TokenizerSpec::load`].
pub fn load(dir: &Path) -> Result<TokenizerSpec> {
    TokenizerSpec::load(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n";

    fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(tmp.path().join(name), text).unwrap();
        }
        tmp
    }

    fn error(files: &[(&str, &str)]) -> String {
        let tmp = dir(files);
        format!("{:#}", TokenizerSpec::load(tmp.path()).expect_err("refused"))
    }

    #[test]
    fn plain_vocab_txt_gets_bert_defaults() {
        let tmp = dir(&[("vocab.txt", BASE)]);
        let spec = load(tmp.path()).unwrap();
        assert_eq!(spec.tokens, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello"]);
        let o = spec.options;
        assert_eq!((o.pad, o.unk, o.cls, o.sep, o.first_added), (0, 1, 2, 3, 6));
        assert!(o.lowercase && o.strip_accents && !o.truncate_left);
        let (text, offsets, sorted) = spec.tables();
        let vocab = qformer_core::tokenizer::Vocab::new(&text, &offsets, &sorted).unwrap();
        assert_eq!(vocab.id("hello"), Some(5));
        assert_eq!(vocab.token(4), Some("[MASK]"));
    }

    #[test]
    fn universal_newlines_and_no_final_newline() {
        let tmp = dir(&[("vocab.txt", "[PAD]\r\n[UNK]\r[CLS]\n[SEP]\r\nx")]);
        assert_eq!(load(tmp.path()).unwrap().tokens, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "x"]);
    }

    #[test]
    fn options_from_the_config() {
        let config = r#"{"tokenizer_class": "BertTokenizer", "do_lower_case": false, "truncation_side": "left",
            "strip_accents": true, "cls_token": {"content": "[CLS]"}}"#;
        let tmp = dir(&[("vocab.txt", BASE), ("tokenizer_config.json", config)]);
        let o = load(tmp.path()).unwrap().options;
        assert!(!o.lowercase && o.strip_accents && o.truncate_left);
        let tmp = dir(&[("vocab.txt", BASE), ("tokenizer_config.json", r#"{"do_lower_case": false}"#)]);
        let o = load(tmp.path()).unwrap().options;
        assert!(!o.lowercase && !o.strip_accents, "strip_accents follows do_lower_case when unset");
    }

    #[test]
    fn added_tokens_are_appended() {
        let config = r#"{"added_tokens_decoder": {"1": {"content": "[UNK]", "special": true},
            "6": {"content": "[DEC]", "special": true, "lstrip": false}}, "bos_token": "[DEC]"}"#;
        let tmp =
            dir(&[("vocab.txt", BASE), ("tokenizer_config.json", config), ("added_tokens.json", r#"{"[DEC]": 6}"#)]);
        let spec = load(tmp.path()).unwrap();
        assert_eq!(spec.tokens.last().map(String::as_str), Some("[DEC]"));
        assert_eq!(spec.options.first_added, 6);
    }

    #[test]
    fn refusals_name_the_file_and_problem() {
        let tmp = dir(&[]);
        let e = format!("{:#}", load(tmp.path()).unwrap_err());
        assert!(e.contains("vocab.txt is missing"), "{e}");
        let e = error(&[("vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[UNK]\n")]);
        assert!(e.contains("lines 2 and 5 are the same token \"[UNK]\""), "{e}");
        let e = error(&[("vocab.txt", "[PAD]\n\n[UNK]\n")]);
        assert!(e.contains("line 2 is empty"), "{e}");
        let e = error(&[("vocab.txt", "[PAD]\n[CLS]\n[SEP]\n")]);
        assert!(e.contains("unk_token \"[UNK]\" is not in"), "{e}");
        let e = error(&[("vocab.txt", BASE), ("tokenizer_config.json", r#"{"tokenizer_class": "GPT2Tokenizer"}"#)]);
        assert!(e.contains("tokenizer_config.json: tokenizer_class \"GPT2Tokenizer\" is not a BERT WordPiece"), "{e}");
        let e = error(&[("vocab.txt", BASE), ("tokenizer_config.json", r#"{"tokenize_chinese_chars": false}"#)]);
        assert!(e.contains("tokenize_chinese_chars = false is not supported"), "{e}");
        let e = error(&[("vocab.txt", BASE), ("added_tokens.json", r#"{"[DEC]": 9}"#)]);
        assert!(e.contains("added token \"[DEC]\" has id 9, but the next free id is 6"), "{e}");
        let lstrip = r#"{"added_tokens_decoder": {"4": {"content": "[MASK]", "lstrip": true}}}"#;
        let e = error(&[("vocab.txt", BASE), ("tokenizer_config.json", lstrip)]);
        assert!(e.contains("has lstrip = true"), "{e}");
        let inside = r#"{"added_tokens_decoder": {"5": {"content": "hello", "special": true}}}"#;
        let e = error(&[("vocab.txt", BASE), ("tokenizer_config.json", inside)]);
        assert!(e.contains("marked as an added token inside vocab.txt"), "{e}");
        let e = error(&[("vocab.txt", BASE), ("special_tokens_map.json", r#"{"bos_token": "[BOS]"}"#)]);
        assert!(e.contains("bos_token \"[BOS]\" is not in vocab.txt"), "{e}");
        let e = error(&[("vocab.txt", BASE), ("tokenizer_config.json", "{not json")]);
        assert!(e.contains("tokenizer_config.json is not valid JSON"), "{e}");
        let tmp = dir(&[]);
        std::fs::write(tmp.path().join("vocab.txt"), b"[PAD]\n\xff\n").unwrap();
        let e = format!("{:#}", load(tmp.path()).unwrap_err());
        assert!(e.contains("vocab.txt is not valid UTF-8 (line 2)"), "{e}");
    }
}
