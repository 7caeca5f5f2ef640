//! Puts the memory map of the target's QEMU machine where cortex-m-rt's `link.x` looks for
//! `memory.x`: AN547 for thumbv8m.main (Cortex-M55), AN386/AN500 for thumbv7em (Cortex-M4/M7).
use std::{env, fs, path::PathBuf};

fn main() {
    let target = env::var("TARGET").unwrap_or_default();
    let machine = if target.starts_with("thumbv8m.main") { "an547" } else { "an386" };
    let src = PathBuf::from(format!("memory/{machine}.x"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    fs::copy(&src, out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory");
    println!("cargo:rerun-if-changed=build.rs");
}
