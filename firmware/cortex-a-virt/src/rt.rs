//! The little runtime a bare-metal AArch64 image needs: reset code (stack, FP/SIMD, MMU
//! with an identity map, .bss), semihosting console and exit, the PMU instruction counter,
//! CPU identification, the heap region, a critical section for the allocator, and the panic
//! handler.

use core::arch::{asm, global_asm};
use core::fmt;

// Reset: park secondary cores, set the stack, enable FP/SIMD before any compiler-generated
// FP code, turn on the MMU with a 1 GiB-block identity map (device memory below 1 GiB,
// normal cacheable RAM above; with the MMU off every access is Device memory and an
// unaligned load faults), zero .bss, call main.
global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    mrs     x0, mpidr_el1
    and     x0, x0, #0xff
    cbnz    x0, 9f
    ldr     x0, =__stack_top
    mov     sp, x0
    mov     x0, #(3 << 20)
    msr     cpacr_el1, x0
    isb
    ldr     x0, =__ttb0
    mov     x1, #0x401                  // block 0: 0x00000000, AF, AttrIndx 0 (device)
    str     x1, [x0]
    ldr     x1, =0x40000705             // block 1: 0x40000000, AF, inner shareable, AttrIndx 1 (normal)
    str     x1, [x0, #8]
    ldr     x1, =0x80000705             // block 2: 0x80000000 (more RAM with -m > 1G)
    str     x1, [x0, #16]
    msr     ttbr0_el1, x0
    ldr     x1, =0xff00                 // MAIR: attr0 device nGnRnE, attr1 normal write-back
    msr     mair_el1, x1
    ldr     x1, =0x200803519            // TCR: T0SZ 25, WB WA walks, inner shareable, EPD1, IPS 40 bits
    msr     tcr_el1, x1
    isb
    tlbi    vmalle1
    dsb     sy
    isb
    mrs     x1, sctlr_el1
    orr     x1, x1, #1                  // M: MMU on
    orr     x1, x1, #(1 << 2)           // C: data cache
    orr     x1, x1, #(1 << 12)          // I: instruction cache
    bic     x1, x1, #2                  // A: no alignment checks
    msr     sctlr_el1, x1
    isb
    ldr     x0, =__bss_start
    ldr     x1, =__bss_end
1:  cmp     x0, x1
    b.hs    2f
    str     xzr, [x0], #8
    b       1b
2:  bl      main
9:  wfe
    b       9b
"#
);

/// One semihosting call (`HLT #0xF000`).
fn semihost(op: u64, arg: usize) -> u64 {
    let ret: u64;
    // SAFETY: the semihosting trap only reads the parameter block `arg` points to (which the
    // callers keep alive across the call) and returns a value in x0.
    unsafe { asm!("hlt #0xf000", inout("x0") op => ret, in("x1") arg, options(nostack)) };
    ret
}

/// Semihosting console (SYS_WRITE0).
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut buf = [0u8; 129];
        for chunk in s.as_bytes().chunks(128) {
            buf[..chunk.len()].copy_from_slice(chunk);
            buf[chunk.len()] = 0;
            semihost(0x04, buf.as_ptr() as usize);
        }
        Ok(())
    }
}

/// Ends the run: SYS_EXIT with ADP_Stopped_ApplicationExit and status 0 or 1.
pub fn exit(ok: bool) -> ! {
    let block: [u64; 2] = [0x20026, if ok { 0 } else { 1 }];
    semihost(0x18, block.as_ptr() as usize);
    loop {
        // SAFETY: waiting for an event has no effect on memory.
        unsafe { asm!("wfe", options(nomem, nostack)) };
    }
}

/// Instructions executed so far: the 64-bit PMU cycle counter, which QEMU advances by one
/// per instruction under `-icount shift=0` (on hardware it counts cycles).
pub fn instructions() -> u64 {
    static mut STARTED: bool = false;
    // SAFETY: single core, no interrupts: nothing else touches STARTED; the PMU registers are
    // accessible at EL1 and configuring them has no effect on memory.
    unsafe {
        if !STARTED {
            asm!(
                "msr pmcntenset_el0, {en}",
                "mrs {t}, pmcr_el0",
                "orr {t}, {t}, {bits}", // E, C (reset cycle counter), LC (64-bit)
                "msr pmcr_el0, {t}",
                "isb",
                en = in(reg) 1u64 << 31, bits = in(reg) 1u64 | 4 | 64, t = out(reg) _, options(nostack)
            );
            STARTED = true;
        }
        let v: u64;
        asm!("isb", "mrs {v}, pmccntr_el0", v = out(reg) v, options(nostack));
        v
    }
}

/// ID_AA64ISAR0_EL1 and ID_AA64ISAR1_EL1.
pub fn isar() -> (u64, u64) {
    let (a, b): (u64, u64);
    // SAFETY: reading ID registers at EL1 has no side effect.
    unsafe {
        asm!("mrs {a}, id_aa64isar0_el1", "mrs {b}, id_aa64isar1_el1", a = out(reg) a, b = out(reg) b, options(nomem, nostack))
    };
    (a, b)
}

/// The core's name from MIDR_EL1.
pub fn cpu_name() -> &'static str {
    let midr: u64;
    // SAFETY: reading MIDR_EL1 has no side effect.
    unsafe { asm!("mrs {m}, midr_el1", m = out(reg) midr, options(nomem, nostack)) };
    match (midr >> 4) & 0xfff {
        0xd03 => "Cortex-A53",
        0xd04 => "Cortex-A35",
        0xd05 => "Cortex-A55",
        0xd08 => "Cortex-A72",
        0xd0b => "Cortex-A76",
        0xd0c => "Neoverse-N1",
        0xd49 => "Neoverse-N2",
        0x000 => "QEMU max",
        _ => "other Arm core",
    }
}

extern "C" {
    static __heap_start: u8;
    static __heap_end: u8;
    static __stack_bottom: u8;
    static __stack_top: u8;
}

const PAINT: u64 = 0x5a5a_5a5a_5a5a_5a5a;

/// Fills the unused part of the stack (from its bottom up to 256 bytes below the current
/// stack pointer) with a pattern, for [`stack_high_water`].
pub fn paint_stack() {
    let bottom = &raw const __stack_bottom as usize;
    let sp: usize;
    // SAFETY: reading the stack pointer has no side effect.
    unsafe { asm!("mov {s}, sp", s = out(reg) sp, options(nomem, nostack)) };
    let mut p = bottom;
    while p + 8 <= sp - 256 {
        // SAFETY: [bottom, sp - 256) is the unused part of this image's stack (link.ld): no
        // live data is there, and it is 8-byte aligned RAM.
        unsafe { core::ptr::write_volatile(p as *mut u64, PAINT) };
        p += 8;
    }
}

/// Bytes of stack used since [`paint_stack`]: from the top down to the lowest overwritten word.
pub fn stack_high_water() -> usize {
    let (bottom, top) = (&raw const __stack_bottom as usize, &raw const __stack_top as usize);
    let mut p = bottom;
    // SAFETY: reads within the stack region, 8-byte aligned.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u64) } == PAINT {
        p += 8;
    }
    top - p
}

/// Start of the heap region (link.ld).
pub fn heap_start() -> usize {
    // Taking the address of an extern static is safe; it is never read.
    &raw const __heap_start as usize
}

/// Size of the heap region.
pub fn heap_size() -> usize {
    &raw const __heap_end as usize - heap_start()
}

struct SingleCore;
critical_section::set_impl!(SingleCore);

// SAFETY: the image runs on one core with interrupts masked (they are never unmasked), so a
// critical section needs no action to be exclusive.
unsafe impl critical_section::Impl for SingleCore {
    unsafe fn acquire() -> critical_section::RawRestoreState {}
    unsafe fn release(_: critical_section::RawRestoreState) {}
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = fmt::Write::write_fmt(&mut Console, format_args!("PANIC: {info}\n"));
    exit(false)
}
