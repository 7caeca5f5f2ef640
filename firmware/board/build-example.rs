//! The build script of the example boards (their Cargo.toml says
//! `build = "../board/build-example.rs"`): puts the board's `memory.x` where cortex-m-rt's
//! `link.x` looks for it and links with `link.x` (vector table, sections) and `defmt.x` (the
//! defmt symbol table that decoders read from the ELF). Cargo runs it in the board's folder.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=../board/build-example.rs");
    // No page alignment of sections: keeps the flash image compact.
    println!("cargo:rustc-link-arg-bins=--nmagic");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
}
