//! The int8 Q-Former on a Cortex-M4/M7: one forward pass over embedded image features.
//!
//! * The blob (`../models/mcu/model.qfb`) is embedded with `include_bytes!` in a 16-byte
//!   aligned `static` in the `.qfb` section, which `memory.x` puts in flash: it is read in
//!   place, never copied to RAM.
//! * The arena is a `static` sized at compile time from that blob's header
//!   (`Header::parse` and `Header::arena_bytes` are `const fn`).
//! * `qformer_board::example::run` checks that the compiled kernels are the DSP ones, runs the
//!   forward, compares the output (queries, then projection) bit for bit with the host's
//!   (`expected.f32`, written by `qformer run`) and reports a CRC-32 of it, the forward's
//!   instruction count (QEMU, `-icount shift=0`) or cycle count (a board; SysTick on the core
//!   clock) and the peak stack. A mismatch or an error exits non-zero (semihosting exit
//!   status under QEMU and probe-rs).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use qformer_board::example::{self, arena_bytes, header, image_tokens, output_floats, Example};
use qformer_board::{exit, Aligned, Counter};
use qformer_core::{AlignedArena, Header};

/// The blob's bytes at compile time, to size the arena (this copy is not in the image).
const MODEL_FILE: &[u8] = include_bytes!("../../../models/mcu/model.qfb");
/// The blob in flash.
#[link_section = ".qfb"]
static MODEL: Aligned<[u8; MODEL_FILE.len()]> = Aligned(*include_bytes!("../../../models/mcu/model.qfb"));
const HEADER: Header = header(MODEL_FILE);

static mut ARENA: AlignedArena<{ arena_bytes(&HEADER) }> = AlignedArena::new();
static mut OUTPUT: [f32; output_floats(&HEADER)] = [0.0; output_floats(&HEADER)];

/// Image features `[M, d_v]`, raw little-endian f32, in flash.
static INPUT: Aligned<[u8; INPUT_BYTES]> = Aligned(*include_bytes!("../../../models/mcu/input.f32"));
const INPUT_BYTES: usize = include_bytes!("../../../models/mcu/input.f32").len();
/// What `qformer run` wrote on the host for the same blob and features.
static EXPECTED: &[u8; output_floats(&HEADER) * 4] = include_bytes!("../../../models/mcu/expected.f32");

#[entry]
fn main() -> ! {
    let p = cortex_m::Peripherals::take().expect("peripherals are taken once");
    let counter = Counter::start(p.SYST);
    // SAFETY: `main` runs once and nothing else (no interrupt handler) touches ARENA or
    // OUTPUT, so these are the only references to them.
    let (arena, output) =
        unsafe { ((*core::ptr::addr_of_mut!(ARENA)).as_mut_slice(), &mut *core::ptr::addr_of_mut!(OUTPUT)) };
    let ex = Example {
        blob: &MODEL.0,
        image: &INPUT.0,
        image_tokens: image_tokens(&HEADER, INPUT_BYTES),
        expected: EXPECTED,
        arena,
        output,
        instruction: None,
        isa: "dsp",
    };
    exit(example::run(ex, &counter))
}
