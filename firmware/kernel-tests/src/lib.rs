//! Support shared by the bare-metal test images: a panic handler that reports over
//! semihosting, and the instruction set each image is meant for. Exit, CPU name, SysTick
//! counter and the kernel check come from the boards' `qformer-board`.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

use core::fmt::Write as _;

pub use cortex_m_semihosting::hprintln;
pub use qformer_board::{cpu, exit, wrong_kernels, Aligned, Counter};

/// The instruction set this image's compiled kernels must use, as their names start:
/// `helium` for the Cortex-M55 image (feature `helium`), `dsp` for the Cortex-M4/M7 one.
pub const ISA: &str = if cfg!(feature = "helium") { "helium" } else { "dsp" };

/// Prints a `FAIL:` line for each compiled kernel that is not an [`ISA`] one (a build that
/// does not enable the core's instructions); true when there is none.
pub fn kernels_are_native() -> bool {
    let mut ok = true;
    for w in wrong_kernels(&qformer_core::kernels::Kernels::COMPILED, ISA) {
        hprintln!("FAIL: {}", w);
        ok = false;
    }
    if ok {
        let k = qformer_core::kernels::Kernels::COMPILED;
        hprintln!("ok: compiled kernels {}, {}, {} are the {} ones", k.q8.name(), k.quant.name(), k.f.name(), ISA);
    }
    ok
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if let Ok(mut out) = cortex_m_semihosting::hio::hstderr() {
        let _ = writeln!(out, "PANIC: {info}");
    }
    exit(false)
}
