#!/usr/bin/env python3
"""Golden token ids for the no_std tokenizer (qformer-core/src/tokenizer.rs), from Hugging Face
transformers' Python BertTokenizer (transformers 5: `BertTokenizerLegacy`; 4.x: `BertTokenizer`).

    python3 tools/reference/make_tokenizer_golden.py [VOCAB_TXT]

VOCAB_TXT defaults to tests/fixtures/tokenizer/vocab.txt (bert-base-uncased's vocabulary, see
the README there). Writes tests/fixtures/tokenizer/golden.json:
* "cases": hard strings in three modes (uncased: do_lower_case=True, strip_accents=None;
  cased: do_lower_case=False; cased_strip: do_lower_case=False, strip_accents=True), untruncated
  and with several max_length / truncation_side values. "ids" is the Python tokenizer's output;
  "fast_ids" is added where the Rust-backed (fast) BertTokenizer disagrees (for the record: the
  Rust runtime follows the Python one).
* "sweep": every code point alone (surrogates excluded), in the uncased and cased modes, as
  runs [first code point, count, ids] of code points with equal ids.
* "added": the LAVIS InstructBLIP set-up, a "[DEC]" bos token added as a special token (id
  30522) and truncation_side="left", with strings containing it; its save_pretrained() JSON
  files go to tests/fixtures/tokenizer/lavis/ (without vocab.txt, the same file).
The output is deterministic (no randomness; same library versions give identical files).
"""
import json
import os
import random
import shutil
import sys
import tempfile
import unicodedata

import transformers
from transformers import BertTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tokenizer")

LONG_WORD_100 = "a" * 100
LONG_WORD_101 = "a" * 101
STRINGS = [
    "",
    " ",
    "   \t\n  ",
    "What is in the image?",
    "Describe the image in detail.",
    "hello world",
    "Hello, World!!!",
    "...,,,;;;:::!!!???",
    "(a)[b]{c}<d>",
    "#$%&'*+-/=@\\^_`|~",
    "don't stop-believing; it's 50/50",
    "Café déjà vu",
    "naïve résumé Ångström",
    "e\u0301 (decomposed e + acute)",
    "a\u0300\u0301\u0302\u0303\u0304 stacked marks",
    "\u0301\u0302 leading marks",
    "s\u0323\u0307 q\u0307\u0323 reorder",
    "图片里有什么？",
    "这是一只猫。This is a cat.",
    "東京タワーの写真です",
    "ひらがな カタカナ ｶﾀｶﾅ",
    "안녕하세요 세계",
    "\u1100\u1161\u11a8 jamo",
    "emoji 😀😃🎉",
    "family 👨‍👩‍👧‍👦 zwj",
    "thumbs 👍🏽👍🏿 skin",
    "flag 🇩🇪🇯🇵",
    "control\x01\x02\x7fchars\x1b[0m",
    "nul\x00inside",
    "replacement \ufffd char",
    "non\u00a0breaking\u00a0space",
    "ideographic\u3000space",
    "zero\u200bwidth\u200bspace",
    "bom\ufeffinside",
    "line\u2028separator\u2029para",
    "tabs\tand\nnewlines\r\nCRLF",
    "ΟΔΟΣ ΟΔΟΣ. Σ ΑΣ'Β ΑΣ.Β Α'Σ ΣΑ",
    "ὈΔΥΣΣΕΎΣ final sigma",
    "İstanbul ıi İİ",
    "Straße STRASSE ß ẞ",
    "ﬁnance ﬂow ﬀ",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "Kelvin \u212a Ohm \u2126 Angstrom \u212b",
    "[UN\u212a] kelvin unk",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "Ελληνικά κείμενα",
    "Привет, мир!",
    "3.14 1,000,000 -42 +7 1e-9",
    "https://example.com/path?query=1&x=y#frag",
    "user@example.com",
    "hello[SEP]world",
    " [MASK] ",
    "[MASK][MASK]",
    "[sep] [Sep] [SEP",
    "x[CLS]y[PAD]z[UNK]",
    "[SE\x00P] after cleaning",
    "[SEP\u200b] zwsp",
    "[unused0] [unused993]",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "xqzvbnm qwrtpsdf zzzzzzzzzz",
    LONG_WORD_100,
    LONG_WORD_101,
    "x " + LONG_WORD_101 + " y",
    "é" * 101,
    "🎉" * 60,
    "a" * 99 + "é",
    "\u00e9" + "\u0301" * 40,
    "a" + "\u0316\u0301" * 20,
    "ǅungla ǈ ǋ",
    "ﾟﾞ halfwidth marks",
    "\U00020000\U0002a700 cjk ext",
    "\uf900\ufa0e compat ideographs",
    "Ⅻ ① ㈱ ㎏",
    "ʰello ʰΣ",
    "ＡＢＣＤΣ",
    "\u0130\u0307 dot",
    "A\u030a vs \u00c5 vs \u212b",
    "\u1e9e\u00df",
    "one two three four five six seven eight nine ten",
]

# Seeded random mixtures of hard characters: combining marks in every order, sigma contexts,
# Hangul jamo, CJK, specials' pieces, controls, separators, and code points drawn from the
# whole range.
POOL = (
    "aAeEiIsSzZ  \t\n.,'!#[]SEPCLUNKMADkK\u00e9\u0301\u0323\u0307\u0345\u0308\u0327\U0001d165\U0001d16d"
    "\u03a3\u03c3\u03b1\u0391\u0130\u0131\u00df\ufb01\u56fe\u7247\uf900\u1100\u1161\u11a8\uac00"
    "\u0000\ufffd\u200b\u200d\u2028\u3000\u00a0\u007f\u212a\u01c5\u02b0\u00b7\u2019\u0f73\u0f71\u0f72"
)


def random_strings(n, seed=1234):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randrange(1, 24)):
            if rng.random() < 0.15:
                cp = rng.randrange(0x110000)
                if 0xD800 <= cp <= 0xDFFF:
                    cp = 0x41
                chars.append(chr(cp))
            else:
                chars.append(rng.choice(POOL))
        out.append("".join(chars))
    return out


STRINGS += random_strings(200)

TRUNCATION = [
    ("one two three four five six seven eight nine ten", [2, 3, 4, 7, 12, 13]),
    ("Describe the image in detail, with every object.", [2, 5, 8]),
    ("图片里有什么？ 😀 naïve", [3, 6, 9]),
    ("hello[SEP]world [MASK] x", [3, 4, 5]),
]

MODES = {
    "uncased": dict(do_lower_case=True, strip_accents=None),
    "cased": dict(do_lower_case=False, strip_accents=None),
    "cased_strip": dict(do_lower_case=False, strip_accents=True),
}


def runs(results):
    out = []
    for cp, ids in results:
        if out and out[-1][2] == ids and out[-1][0] + out[-1][1] == cp:
            out[-1][1] += 1
        else:
            out.append([cp, 1, ids])
    return out


def main():
    vocab = sys.argv[1] if len(sys.argv) > 1 else os.path.join(FIXTURES, "vocab.txt")
    vocab_dir = os.path.dirname(os.path.abspath(vocab))
    cases = []
    for mode, kw in MODES.items():
        slow = BertTokenizerLegacy(vocab, **kw)
        fast = BertTokenizer(vocab=BertTokenizerLegacy(vocab).vocab, **kw)
        for text in STRINGS:
            ids = slow(text)["input_ids"]
            case = {"mode": mode, "text": text, "ids": ids}
            fids = fast(text)["input_ids"]
            if fids != ids:
                case["fast_ids"] = fids
            cases.append(case)
        for side in ("right", "left"):
            slow.truncation_side = side
            fast.truncation_side = side
            for text, lengths in TRUNCATION:
                for k in lengths:
                    ids = slow(text, truncation=True, max_length=k)["input_ids"]
                    assert len(ids) <= k
                    case = {"mode": mode, "text": text, "max_length": k, "side": side, "ids": ids}
                    fids = fast(text, truncation=True, max_length=k)["input_ids"]
                    if fids != ids:
                        case["fast_ids"] = fids
                    cases.append(case)

    sweep = {}
    for mode in ("uncased", "cased"):
        slow = BertTokenizerLegacy(vocab, **MODES[mode])
        results = []
        for cp in range(0x110000):
            if 0xD800 <= cp <= 0xDFFF:
                continue
            results.append((cp, slow(chr(cp), add_special_tokens=False)["input_ids"]))
        sweep[mode] = runs(results)

    # LAVIS InstructBLIP: BertTokenizer.from_pretrained("bert-base-uncased", truncation_side="left")
    # then add_special_tokens({"bos_token": "[DEC]"}).
    lavis = BertTokenizerLegacy(vocab, truncation_side="left")
    lavis.add_special_tokens({"bos_token": "[DEC]"})
    dec = lavis.convert_tokens_to_ids("[DEC]")
    added = {"token": "[DEC]", "id": dec, "cases": []}
    for text in ["[DEC] what is this?", "a[DEC]b", "[dec] [DEC", "[DE\x00C] cleaned", "[DEC][SEP][DEC]"]:
        added["cases"].append({"text": text, "ids": lavis(text)["input_ids"]})
    for k in (3, 5):
        text = "[DEC] describe the image [DEC] now"
        added["cases"].append(
            {"text": text, "max_length": k, "side": "left", "ids": lavis(text, truncation=True, max_length=k)["input_ids"]}
        )

    # Its saved directory minus vocab.txt (the test puts the shared vocab.txt beside it).
    lavis_dir = os.path.join(FIXTURES, "lavis")
    os.makedirs(lavis_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        lavis.save_pretrained(tmp)
        for name in sorted(os.listdir(tmp)):
            if name.endswith(".json"):
                shutil.copyfile(os.path.join(tmp, name), os.path.join(lavis_dir, name))

    doc = {
        "generator": "tools/reference/make_tokenizer_golden.py",
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "unicode": unicodedata.unidata_version,
        "vocab": os.path.relpath(os.path.abspath(vocab), FIXTURES) if vocab_dir == FIXTURES else os.path.basename(vocab),
        "cases": cases,
        "added": added,
        "sweep": sweep,
    }
    os.makedirs(FIXTURES, exist_ok=True)
    path = os.path.join(FIXTURES, "golden.json")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(doc, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    diff = sum(1 for c in cases if "fast_ids" in c)
    print(f"wrote {path}: {len(cases)} cases ({diff} where the fast tokenizer differs), "
          f"sweep runs {', '.join(f'{m} {len(r)}' for m, r in sweep.items())}, added {len(added['cases'])}")


if __name__ == "__main__":
    main()
