//! Probe for `cargo xtask stable-view`: the names of the kernels qformer-core selects at compile
//! time ([`Kernels::COMPILED`]), written into this crate's object file as the string
//! `qformer-kernels q8=NAME f=NAME quant=NAME;` (static `QFORMER_KERNELS`), so a script can
//! read the choice of a cross build without running it. It uses only the
//! kernels' `name()`, so it also reads builds of older trees.
#![no_std]

use qformer_core::kernels::Kernels;

/// Bytes of the record (names are at most 40 bytes each).
const LEN: usize = 192;

/// Appends `s` to `out` at `at`, returning the new end (stops at the end of `out`).
const fn put(mut out: [u8; LEN], at: usize, s: &str) -> ([u8; LEN], usize) {
    let s = s.as_bytes();
    let mut i = 0;
    while i < s.len() && at + i < LEN {
        out[at + i] = s[i];
        i += 1;
    }
    (out, at + i)
}

const fn record() -> [u8; LEN] {
    let k = Kernels::COMPILED;
    let (out, at) = put([0; LEN], 0, "qformer-kernels q8=");
    let (out, at) = put(out, at, k.q8.name());
    let (out, at) = put(out, at, " f=");
    let (out, at) = put(out, at, k.f.name());
    let (out, at) = put(out, at, " quant=");
    let (out, at) = put(out, at, k.quant.name());
    put(out, at, ";").0
}

/// The record; `#[no_mangle]` keeps it in the object file.
#[no_mangle]
pub static QFORMER_KERNELS: [u8; LEN] = record();
