//! The int8 Q-Former on a Cortex-M55 with Helium: one forward pass over embedded image features.
//!
//! * The blob (`../models/mcu/model.qfb`) is embedded with `include_bytes!` in a 16-byte
//!   aligned `static` in the `.qfb` section, which `memory.x` puts in flash (the QSPI flash
//!   on the AN547): it is read in place, never copied to RAM.
//! * The arena is a `static` sized at compile time from that blob's header
//!   (`Header::parse` and `Header::arena_bytes` are `const fn`).
//! * The output (queries, then projection) is compared bit for bit with the host's
//!   (`expected.f32`, written by `qformer run`); a mismatch or an error exits non-zero
//!   (semihosting exit status under QEMU and probe-rs).
//! * Reports a CRC-32 of the output bytes, the forward's instruction count (QEMU,
//!   `-icount shift=0`) or cycle count (a board; SysTick on the core clock), and the peak
//!   stack (cortex-m-rt paints the stack at reset; the unpainted depth is measured after).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception, ExceptionFrame};
use qformer_core::{AlignedArena, Header, Model};

#[cfg(all(feature = "qemu", feature = "rtt"))]
compile_error!("choose one defmt transport: `qemu` (semihosting, the default) or `rtt` (--no-default-features)");
#[cfg(not(any(feature = "qemu", feature = "rtt")))]
compile_error!("choose a defmt transport: feature `qemu` (semihosting) or `rtt`");
#[cfg(feature = "rtt")]
use defmt_rtt as _;
#[cfg(feature = "qemu")]
use defmt_semihosting as _;

/// 16-byte alignment for the blob and the image features (`Model::from_blob` requires it for
/// the blob; the features are read as `f32`s in place).
#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

/// The blob's bytes at compile time, to size the arena (this copy is not in the image).
const MODEL_FILE: &[u8] = include_bytes!("../../../models/mcu/model.qfb");
/// The blob in flash.
#[link_section = ".qfb"]
static MODEL: Aligned<[u8; MODEL_FILE.len()]> = Aligned(*include_bytes!("../../../models/mcu/model.qfb"));

const HEADER: Header = match Header::parse(MODEL_FILE) {
    Ok(h) => h,
    Err(_) => panic!("models/mcu/model.qfb: not a valid qformer blob header"),
};
/// Arena bytes the forward pass needs, from the blob's header.
const ARENA_BYTES: usize = match HEADER.arena_bytes() {
    Ok(n) => n,
    Err(_) => panic!("models/mcu/model.qfb: cannot plan the arena"),
};
static mut ARENA: AlignedArena<ARENA_BYTES> = AlignedArena::new();

const QUERIES: usize = HEADER.num_queries as usize;
const HIDDEN: usize = HEADER.hidden as usize;
const PROJECTION: usize = HEADER.projection_dim as usize;
const OUT_FLOATS: usize = QUERIES * (HIDDEN + PROJECTION);
/// Query outputs `[N, d]`, then the projection `[N, d_llm]`.
static mut OUTPUT: [f32; OUT_FLOATS] = [0.0; OUT_FLOATS];

/// Image features `[M, d_v]`, raw little-endian f32, in flash.
static INPUT: Aligned<[u8; INPUT_BYTES]> = Aligned(*include_bytes!("../../../models/mcu/input.f32"));
const INPUT_BYTES: usize = include_bytes!("../../../models/mcu/input.f32").len();
const IMAGE_TOKENS: usize = INPUT_BYTES / 4 / HEADER.encoder_hidden as usize;
/// What `qformer run` wrote on the host for the same blob and features.
static EXPECTED: &[u8; OUT_FLOATS * 4] = include_bytes!("../../../models/mcu/expected.f32");

const _: () = assert!(
    INPUT_BYTES == IMAGE_TOKENS * HEADER.encoder_hidden as usize * 4
        && IMAGE_TOKENS >= 1
        && IMAGE_TOKENS <= HEADER.max_image_tokens as usize,
    "input.f32 is not [M, d_v] f32 for this blob"
);

#[entry]
fn main() -> ! {
    let mut p = cortex_m::Peripherals::take().expect("peripherals are taken once");
    p.SYST.set_clock_source(SystClkSource::Core);
    p.SYST.set_reload(RELOAD);
    p.SYST.clear_current();
    p.SYST.enable_interrupt();
    p.SYST.enable_counter();

    // SAFETY: `main` runs once and nothing else (no interrupt handler) touches ARENA or
    // OUTPUT, so these are the only references to them.
    let (arena, output) =
        unsafe { ((*core::ptr::addr_of_mut!(ARENA)).as_mut_slice(), &mut *core::ptr::addr_of_mut!(OUTPUT)) };
    let image: &[f32] = bytemuck::cast_slice(&INPUT.0);

    defmt::info!(
        "qformer on {=str}: blob {=usize} B at {=usize:#010x} (flash), arena {=usize} B at {=usize:#010x} (RAM)",
        cpu(),
        MODEL.0.len(),
        MODEL.0.as_ptr() as usize,
        arena.len(),
        arena.as_ptr() as usize
    );

    let t0 = ticks();
    let model = match Model::from_blob(&MODEL.0) {
        Ok(m) => m,
        Err(e) => fail_with("from_blob", e),
    };
    let t1 = ticks();
    let c = model.config();
    defmt::info!(
        "model: {=u32} layers, d {=u32}, {=u32} heads, ffn {=u32}, {=u32} queries, image {=usize} x {=u32}, projection {=u32}; int8 GEMM {=str}",
        c.num_layers,
        c.hidden,
        c.num_heads,
        c.intermediate,
        c.num_queries,
        IMAGE_TOKENS,
        c.encoder_hidden,
        c.projection_dim,
        model.kernels().q8.name()
    );
    let (queries, projected) = output.split_at_mut(QUERIES * HIDDEN);
    let t2 = ticks();
    let projected = if PROJECTION > 0 { Some(projected) } else { None };
    if let Err(e) = model.forward(image, arena, queries, projected) {
        fail_with("forward", e);
    }
    let t3 = ticks();
    let stack = stack_peak();

    let bytes: &[u8] = bytemuck::cast_slice(&output[..]);
    let crc = crc32fast::hash(bytes);
    let (mut mismatches, mut first) = (0usize, None);
    for (i, (got, want)) in output.iter().zip(EXPECTED.chunks_exact(4)).enumerate() {
        let want = f32::from_le_bytes([want[0], want[1], want[2], want[3]]);
        if got.to_bits() != want.to_bits() {
            mismatches += 1;
            first.get_or_insert((i, *got, want));
        }
    }
    defmt::info!("from_blob (CRC-32 of the blob, table checks): {=u64} {=str}", count(t1 - t0), UNIT);
    defmt::info!("forward: {=u64} {=str}", count(t3 - t2), UNIT);
    defmt::info!("output: {=usize} floats, crc32 {=u32:#010x}", output.len(), crc);
    defmt::info!("peak stack: {=usize} B of {=usize} B", stack, stack_size());
    let ok = match first {
        None => {
            defmt::info!("ok: {=usize} output bytes equal the host's bit for bit", bytes.len());
            true
        }
        Some((i, got, want)) => {
            defmt::error!(
                "FAIL: {=usize} of {=usize} output floats differ from the host's; first at {=usize}: {=f32} (bits {=u32:#010x}), host {=f32} (bits {=u32:#010x})",
                mismatches,
                output.len(),
                i,
                got,
                got.to_bits(),
                want,
                want.to_bits()
            );
            false
        }
    };
    // One line for scripts (tools/firmware.sh).
    defmt::info!(
        "summary: cpu={=str} ok={=bool} crc32={=u32:#010x} forward_{=str}={=u64} stack={=usize} arena={=usize}",
        cpu(),
        ok,
        crc,
        UNIT,
        count(t3 - t2),
        stack,
        ARENA_BYTES
    );
    exit(ok)
}

fn fail_with(what: &str, e: qformer_core::Error) -> ! {
    defmt::error!("FAIL: {=str}: {}", what, defmt::Display2Format(&e));
    exit(false)
}

/// Ends the run with the semihosting exit status (QEMU and `probe-rs run` pass it on).
fn exit(ok: bool) -> ! {
    use cortex_m_semihosting::debug;
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    defmt::error!("panic: {}", defmt::Display2Format(info));
    exit(false)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("HardFault at pc {=u32:#010x}", frame.pc());
    exit(false)
}

// ---- SysTick as a counter ----

static WRAPS: AtomicU32 = AtomicU32::new(0);
const RELOAD: u32 = 0x00ff_ffff;

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// SysTick ticks (core clock) since it was started, wraps included.
fn ticks() -> u64 {
    loop {
        let w = WRAPS.load(Ordering::Relaxed);
        let v = cortex_m::peripheral::SYST::get_current();
        if WRAPS.load(Ordering::Relaxed) == w {
            return w as u64 * (RELOAD as u64 + 1) + (RELOAD - v) as u64;
        }
    }
}

/// What [`count`] returns.
#[cfg(feature = "qemu")]
const UNIT: &str = "instructions";
#[cfg(feature = "rtt")]
const UNIT: &str = "cycles";

/// Instructions (QEMU with `-icount shift=0`: one instruction per nanosecond of virtual time,
/// and SysTick runs at the board's CPU clock, 32 MHz on MPS3 AN547) in `ticks`.
#[cfg(feature = "qemu")]
fn count(ticks: u64) -> u64 {
    ticks * 125 / 4
}
/// Core clock cycles in `ticks` (SysTick's clock source is the processor clock).
#[cfg(feature = "rtt")]
fn count(ticks: u64) -> u64 {
    ticks
}

// ---- Stack high-water mark ----

extern "C" {
    /// Lowest address of the stack (end of the statics), from cortex-m-rt's `link.x`.
    static _stack_end: u32;
    /// Highest address of the stack (its initial value), from cortex-m-rt's `link.x`.
    static _stack_start: u32;
}

fn stack_size() -> usize {
    (&raw const _stack_start) as usize - (&raw const _stack_end) as usize
}

/// Bytes of stack used so far: the reset handler painted `_stack_end.._stack_start` with
/// `STACK_PAINT_VALUE`; the deepest word no longer painted marks the peak.
fn stack_peak() -> usize {
    let (lo, hi) = ((&raw const _stack_end) as usize, (&raw const _stack_start) as usize);
    let mut at = lo;
    // SAFETY: `lo..hi` is the stack region of this program's RAM (linker symbols); every
    // address read is word-aligned and inside it. Words below the stack pointer belong to no
    // Rust object, and volatile reads of them have no effect.
    while at < hi && unsafe { core::ptr::read_volatile(at as *const u32) } == cortex_m_rt::STACK_PAINT_VALUE {
        at += 4;
    }
    hi - at
}

/// The Cortex-M core, from the CPUID part number.
fn cpu() -> &'static str {
    // SAFETY: CPUID (0xE000ED00) is a read-only System Control Block register present on
    // every Cortex-M; a volatile read of it has no side effect.
    let cpuid = unsafe { core::ptr::read_volatile(0xE000_ED00 as *const u32) };
    match (cpuid >> 4) & 0xfff {
        0xC24 => "Cortex-M4",
        0xC27 => "Cortex-M7",
        0xD22 => "Cortex-M55",
        0xD23 => "Cortex-M85",
        _ => "unknown Cortex-M",
    }
}
