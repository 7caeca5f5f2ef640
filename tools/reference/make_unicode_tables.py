#!/usr/bin/env python3
"""Writes qformer-core/src/tokenizer/tables.rs: the Unicode data the no_std BERT tokenizer needs,
taken from this Python's `unicodedata` and `str.lower()` -- the very functions transformers'
Python BertTokenizer calls -- so the Rust tokenizer follows the reference's Unicode version
(Python 3.11: Unicode 14.0.0) and not whichever version a Rust crate or `core` ships.

    python3 tools/reference/make_unicode_tables.py

Tables (all sorted, searched by binary search):
* CLASS: runs of code points with the same flag set (clean_text removal, clean_text whitespace,
  punctuation, category Mn, and the two properties str.lower()'s final-sigma rule reads: cased
  and case-ignorable, derived by probing str.lower() itself).
* LOWER: runs of str.lower()'s single-character mappings (start, count, stride, delta); the one
  multi-character mapping (U+0130) is asserted and handled in code.
* DECOMP: one-level canonical decompositions (cp, first, second-or-0, primary-composite bit),
  Hangul syllables excluded (algorithmic). COMPOSE: DECOMP indices sorted by (first, second).
* CCC: runs of canonical combining classes.
"""
import os
import sys
import unicodedata as ud

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "qformer-core", "src", "tokenizer", "tables.rs")

REMOVE, SPACE, PUNCT, MN, CASED, CASE_IGNORABLE = 1, 2, 4, 8, 16, 32
SBASE, SCOUNT = 0xAC00, 11172


def chars():
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        yield cp, chr(cp)


def is_control(ch):  # transformers.tokenization_python._is_control
    if ch in "\t\n\r":
        return False
    return ud.category(ch).startswith("C")


def is_whitespace(ch):  # transformers.tokenization_python._is_whitespace
    return ch in " \t\n\r" or ud.category(ch) == "Zs"


def is_punctuation(ch):  # transformers.tokenization_python._is_punctuation
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return ud.category(ch).startswith("P")


def flags(cp, ch):
    f = 0
    if cp == 0 or cp == 0xFFFD or is_control(ch):
        f |= REMOVE
    elif is_whitespace(ch):
        f |= SPACE
    if is_punctuation(ch):
        f |= PUNCT
    if ud.category(ch) == "Mn":
        f |= MN
    # CPython's final-sigma rule: a capital sigma lowercases to the final form when the first
    # non-case-ignorable character before it is cased and the first after it is not. Probe it.
    cased = (ch + "\u03a3").lower()[-1] == "\u03c2"
    ignorable_or_cased = ("A" + ch + "\u03a3").lower()[-1] == "\u03c2"
    if cased:
        f |= CASED
    elif ignorable_or_cased:
        f |= CASE_IGNORABLE
    return f


def runs(values):
    """[(start, value)] for each change of value over all code points (surrogates take the
    value of U+D7FF's run; they never occur in a Rust `char`)."""
    out = []
    prev = None
    for cp, v in values:
        if v != prev:
            out.append((cp, v))
            prev = v
    return out


def main():
    assert sys.version_info[:2] == (3, 11), "tables are generated with Python 3.11 (Unicode 14)"
    # Facts the Rust code relies on.
    after_clean_ws = [cp for cp, ch in chars() if ch.isspace() and not (flags(cp, ch) & (REMOVE | SPACE))]
    assert after_clean_ws == [0x2028, 0x2029], after_clean_ws
    multi = [(cp, ch.lower()) for cp, ch in chars() if len(ch.lower()) != 1]
    assert multi == [(0x130, "i\u0307")], multi
    for cp, ch in chars():
        for s in (ch.lower(), ud.normalize("NFD", ch), ud.normalize("NFC", ch)):
            assert ch.isspace() or not any(c.isspace() for c in s), hex(cp)

    class_runs = runs((cp, flags(cp, ch)) for cp, ch in chars())

    lower = []  # (start, count, stride, delta)
    maps = [(cp, ord(ch.lower())) for cp, ch in chars() if len(ch.lower()) == 1 and ch.lower() != ch]
    i = 0
    while i < len(maps):
        cp, to = maps[i]
        delta = to - cp
        stride, count = 1, 1
        if i + 1 < len(maps) and maps[i + 1][1] - maps[i + 1][0] == delta and maps[i + 1][0] - cp in (1, 2):
            stride = maps[i + 1][0] - cp
            while (
                i + count < len(maps)
                and maps[i + count][0] == cp + count * stride
                and maps[i + count][1] - maps[i + count][0] == delta
            ):
                count += 1
        lower.append((cp, count, stride, delta))
        i += count
    for cp, ch in chars():
        want = ch.lower()
        got = ch
        for s, n, st, d in lower:
            if s <= cp < s + n * st and (cp - s) % st == 0:
                got = chr(cp + d)
        if cp == 0x130:
            continue
        assert got == want, hex(cp)

    decomp = []  # (cp, a, b, primary)
    for cp, ch in chars():
        if SBASE <= cp < SBASE + SCOUNT:
            continue
        d = ud.decomposition(ch)
        if not d or d.startswith("<"):
            continue
        parts = [int(x, 16) for x in d.split()]
        assert 1 <= len(parts) <= 2, hex(cp)
        a = parts[0]
        b = parts[1] if len(parts) == 2 else 0
        primary = len(parts) == 2 and ud.normalize("NFC", chr(a) + chr(b)) == ch
        # The composer only composes onto starters and keeps the result a starter.
        assert not primary or (ud.combining(chr(a)) == 0 and ud.combining(ch) == 0), hex(cp)
        decomp.append((cp, a, b, primary))
        for x in (cp, a, b):
            assert x < (1 << 21)
    compose = sorted((i for i, e in enumerate(decomp) if e[3]), key=lambda i: (decomp[i][1], decomp[i][2]))
    assert len(decomp) < 65536

    ccc_runs = runs((cp, ud.combining(ch)) for cp, ch in chars())
    # Fast-path bounds (below them: combining class 0, no decomposition, no composition).
    first_ccc = min(cp for cp, ch in chars() if ud.combining(ch))
    first_decomp = min(e[0] for e in decomp)
    first_second = min(min(e[2] for e in decomp if e[3]), 0x1161)  # Hangul V/T are above
    latin1 = [flags(cp, chr(cp)) for cp in range(256)]

    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        w = f.write
        w("// @generated by tools/reference/make_unicode_tables.py from Python %s's unicodedata\n" % sys.version.split()[0])
        w("// (Unicode %s) and str.lower(); do not edit by hand.\n\n" % ud.unidata_version)
        w("//! Unicode data of the tokenizer, generated from the reference's own Python (see the module docs).\n\n")
        w('/// The Unicode version of these tables (Python\'s `unicodedata.unidata_version`).\n')
        w('pub(super) const UNICODE_VERSION: &str = "%s";\n\n' % ud.unidata_version)
        w("/// `clean_text` drops the character (U+0000, U+FFFD, category C* but tab/LF/CR).\n")
        w("pub(super) const REMOVE: u8 = %d;\n" % REMOVE)
        w("/// `clean_text` turns the character into a space (space, tab, LF, CR, category Zs).\n")
        w("pub(super) const SPACE: u8 = %d;\n" % SPACE)
        w("/// `_is_punctuation`: ASCII 33-47, 58-64, 91-96, 123-126 or category P*.\n")
        w("pub(super) const PUNCT: u8 = %d;\n" % PUNCT)
        w("/// Category Mn (what accent stripping drops after NFD).\n")
        w("pub(super) const MN: u8 = %d;\n" % MN)
        w("/// Cased and not case-ignorable (the final-sigma rule's `\\p{cased}`).\n")
        w("pub(super) const CASED: u8 = %d;\n" % CASED)
        w("/// Case-ignorable (skipped by the final-sigma rule's context scans).\n")
        w("pub(super) const CASE_IGNORABLE: u8 = %d;\n\n" % CASE_IGNORABLE)
        w("/// Below this code point every combining class is 0.\n")
        w("pub(super) const FIRST_NONZERO_CCC: u32 = 0x%x;\n" % first_ccc)
        w("/// Below this code point no character has a canonical decomposition.\n")
        w("pub(super) const FIRST_DECOMPOSABLE: u32 = 0x%x;\n" % first_decomp)
        w("/// Below this code point no character is the second of a composition.\n")
        w("pub(super) const FIRST_COMPOSING_SECOND: u32 = 0x%x;\n\n" % first_second)
        w("/// The flags of U+0000..U+00FF (the same as [`CLASS`] says).\n")
        w("pub(super) static LATIN1: [u8; 256] = [\n")
        for k in range(0, 256, 16):
            w("    " + " ".join("%d," % v for v in latin1[k : k + 16]) + "\n")
        w("];\n\n")
        w("/// Runs `start << 8 | flags`: the flags hold from `start` to the next run's start.\n")
        w("pub(super) static CLASS: [u32; %d] = [\n" % len(class_runs))
        for k in range(0, len(class_runs), 8):
            w("    " + " ".join("0x%08x," % (s << 8 | v) for s, v in class_runs[k : k + 8]) + "\n")
        w("];\n\n")
        w("/// Runs of `str.lower()`'s one-character mappings: `(start, count, stride, delta)`, mapping\n")
        w("/// `start + k * stride` (k < count) to itself plus `delta`. U+0130 (to `i` U+0307) is in code.\n")
        w("pub(super) static LOWER: [(u32, u16, u8, i32); %d] = [\n" % len(lower))
        for k in range(0, len(lower), 4):
            w("    " + " ".join("(0x%x, %d, %d, %d)," % e for e in lower[k : k + 4]) + "\n")
        w("];\n\n")
        w("/// One-level canonical decompositions, sorted by code point: bits 42..63 the code point,\n")
        w("/// 21..42 the first character, 0..21 the second (0: a singleton), bit 63 set when NFC\n")
        w("/// recomposes the pair into it (a primary composite). Hangul syllables are algorithmic.\n")
        w("pub(super) static DECOMP: [u64; %d] = [\n" % len(decomp))
        for k in range(0, len(decomp), 6):
            w(
                "    "
                + " ".join("0x%016x," % ((int(p) << 63) | (c << 42) | (a << 21) | b) for c, a, b, p in decomp[k : k + 6])
                + "\n"
            )
        w("];\n\n")
        w("/// Indices into [`DECOMP`] of the primary composites, sorted by (first, second).\n")
        w("pub(super) static COMPOSE: [u16; %d] = [\n" % len(compose))
        for k in range(0, len(compose), 12):
            w("    " + " ".join("%d," % i for i in compose[k : k + 12]) + "\n")
        w("];\n\n")
        w("/// Runs `start << 8 | canonical combining class`.\n")
        w("pub(super) static CCC: [u32; %d] = [\n" % len(ccc_runs))
        for k in range(0, len(ccc_runs), 8):
            w("    " + " ".join("0x%08x," % (s << 8 | v) for s, v in ccc_runs[k : k + 8]) + "\n")
        w("];\n")
    print("wrote %s: CLASS %d, LOWER %d, DECOMP %d, COMPOSE %d, CCC %d" % (OUT, len(class_runs), len(lower), len(decomp), len(compose), len(ccc_runs)))


if __name__ == "__main__":
    main()
