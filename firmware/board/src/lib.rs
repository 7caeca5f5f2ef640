//! Board support shared by the Cortex-M images of `firmware/`: what every board needs and is
//! not the model.
//!
//! * [`Counter`]: SysTick on the core clock, wraps counted by its interrupt; [`qemu_instructions`]
//!   turns ticks into instructions under QEMU's `-icount shift=0`.
//! * [`exit`]: the semihosting exit status (QEMU and `probe-rs run` pass it on); [`cpu`]: the
//!   core, from CPUID.
//! * [`wrong_kernels`]: the compiled kernels that are not the ones meant for this core, so an
//!   image built without its instruction set fails instead of running scalar code unnoticed.
//! * [`Aligned`]: 16-byte aligned statics (blobs, features, scratch).
//! * With feature `qemu` or `rtt`: [`example`], the examples' forward-and-compare routine, with
//!   the defmt transport, a defmt panic handler and a HardFault handler, and the stack
//!   high-water mark (cortex-m-rt's `paint-stack`).
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;
use qformer_core::kernels::Kernels;

#[cfg(feature = "forward")]
pub mod example;

#[cfg(all(feature = "qemu", feature = "rtt"))]
compile_error!("choose one defmt transport: `qemu` (semihosting) or `rtt`");
#[cfg(all(feature = "forward", not(any(feature = "qemu", feature = "rtt"))))]
compile_error!("feature `forward` needs a defmt transport: `qemu` (semihosting) or `rtt`");

/// 16-byte aligned storage for `static`s: `Model::from_blob` requires it of the blob, and the
/// image features are read as `f32`s in place.
#[repr(C, align(16))]
pub struct Aligned<T: ?Sized>(pub T);

/// Ends the run with the semihosting exit status: 0 when `ok`, 1 otherwise (`SYS_EXIT` with
/// `ApplicationExit` or `RunTimeErrorUnknown`).
pub fn exit(ok: bool) -> ! {
    use cortex_m_semihosting::debug;
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    loop {
        cortex_m::asm::wfi();
    }
}

/// The Cortex-M core this image runs on, from the CPUID part number.
pub fn cpu() -> &'static str {
    // SAFETY: CPUID (0xE000ED00) is a read-only System Control Block register present on
    // every Cortex-M; a volatile read of it has no side effect.
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

// ---- Kernel check ----

/// A compiled kernel that is not the one meant for the image's core.
#[derive(Clone, Copy, Debug)]
pub struct WrongKernel {
    /// Which family: "int8 GEMM", "activation quantizer" or "float GEMM".
    pub family: &'static str,
    /// The name of the kernel compiled in (`Kernels::COMPILED`).
    pub compiled: &'static str,
    /// The instruction set the image is meant for: the prefix of the expected kernel names.
    pub isa: &'static str,
}

impl fmt::Display for WrongKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the compiled {} is {}, not a {}_* kernel: this build does not enable the core's {} instructions",
            self.family, self.compiled, self.isa, self.isa
        )
    }
}

/// The kernels of `kernels` whose names do not start with `isa` and `_` (`"helium"` for
/// Cortex-M55/M85, `"dsp"` for Cortex-M4/M7): the int8 GEMM, the activation quantizer and the
/// float GEMM, in that order.
pub fn wrong_kernels(kernels: &Kernels, isa: &'static str) -> impl Iterator<Item = WrongKernel> {
    [("int8 GEMM", kernels.q8.name()), ("activation quantizer", kernels.quant.name()), ("float GEMM", kernels.f.name())]
        .into_iter()
        .filter(move |(_, name)| !(name.starts_with(isa) && name.as_bytes().get(isa.len()) == Some(&b'_')))
        .map(move |(family, compiled)| WrongKernel { family, compiled, isa })
}

// ---- SysTick as a counter ----

static WRAPS: AtomicU32 = AtomicU32::new(0);
const RELOAD: u32 = 0x00ff_ffff;

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// SysTick on the core clock, counting up from [`Counter::start`] with its wraps (one
/// interrupt per 2^24 ticks).
pub struct Counter {
    _syst: SYST,
}

impl Counter {
    /// Starts SysTick (core clock, full reload, wrap interrupt on); owns it from then on.
    pub fn start(mut syst: SYST) -> Counter {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        Counter { _syst: syst }
    }

    /// Ticks since [`Counter::start`], wraps included.
    pub fn ticks(&self) -> u64 {
        loop {
            let w = WRAPS.load(Ordering::Relaxed);
            let v = SYST::get_current();
            if WRAPS.load(Ordering::Relaxed) == w {
                return w as u64 * (RELOAD as u64 + 1) + (RELOAD - v) as u64;
            }
        }
    }
}

/// Instructions in `ticks` under QEMU with `-icount shift=0` (one instruction per nanosecond
/// of virtual time): SysTick runs at the machine's CPU clock, 32 MHz on the MPS3 AN547
/// (Cortex-M55, 31.25 instructions per tick), 25 MHz on the MPS2 AN386/AN500 (Cortex-M4/M7,
/// 40 per tick).
pub fn qemu_instructions(ticks: u64) -> u64 {
    match cpu() {
        "Cortex-M55" => ticks * 125 / 4,
        _ => ticks * 40,
    }
}
