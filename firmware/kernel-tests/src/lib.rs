//! Support shared by the bare-metal images: semihosting exit, a panic handler that reports
//! over semihosting, CPU identification, and 16-byte aligned statics.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

use core::fmt::Write as _;

pub use cortex_m_semihosting::hprintln;

/// Ends the QEMU run: exit status 0 when `ok`, 1 otherwise (semihosting `SYS_EXIT` with
/// `ApplicationExit` or `RunTimeErrorUnknown`).
pub fn exit(ok: bool) -> ! {
    use cortex_m_semihosting::debug;
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    #[allow(clippy::empty_loop)]
    loop {}
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if let Ok(mut out) = cortex_m_semihosting::hio::hstderr() {
        let _ = writeln!(out, "PANIC: {info}");
    }
    exit(false)
}

/// The Cortex-M core this image runs on, from the CPUID register's part number.
pub fn cpu() -> &'static str {
    // SAFETY: CPUID (0xE000ED00) is a read-only System Control Block register present on
    // every Cortex-M; a volatile read has no side effect.
    let cpuid = unsafe { core::ptr::read_volatile(0xE000_ED00 as *const u32) };
    match (cpuid >> 4) & 0xfff {
        0xC24 => "Cortex-M4",
        0xC27 => "Cortex-M7",
        0xD21 => "Cortex-M33",
        0xD22 => "Cortex-M55",
        0xD23 => "Cortex-M85",
        _ => "unknown Cortex-M",
    }
}

/// 16-byte aligned storage for `static`s (model blobs, scratch, arenas).
#[repr(C, align(16))]
pub struct Aligned<T: ?Sized>(pub T);
