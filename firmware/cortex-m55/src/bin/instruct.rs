//! InstructBLIP's int8 Q-Former on a Cortex-M55 with Helium: a fixed instruction about embedded image
//! features, tokenized on the device.
//!
//! The same program as `forward.rs` with the model of `../models/mcu-instruct` (the MCU model
//! with InstructBLIP's text parts: word and position embeddings, the text-side feed-forward,
//! the vocabulary). `qformer_board::example::run` tokenizes `instruction.txt` with the blob's
//! own vocabulary (`Model::tokenize`, the `no_std` WordPiece tokenizer), checks the ids
//! against the host's (`ids.u32`), runs `Model::forward_text` and compares the output bit for
//! bit with what `qformer run --prompt` wrote on the host (`expected.f32`). The arena is
//! sized at compile time from the blob's header, text tokens included.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use qformer_board::example::{
    self, arena_bytes, header, image_tokens, output_floats, text_tokens, Example, Instruction,
};
use qformer_board::{exit, Aligned, Counter};
use qformer_core::{AlignedArena, Header};

/// The blob's bytes at compile time, to size the arena (this copy is not in the image).
const MODEL_FILE: &[u8] = include_bytes!("../../../models/mcu-instruct/model.qfb");
/// The blob in flash.
#[link_section = ".qfb"]
static MODEL: Aligned<[u8; MODEL_FILE.len()]> = Aligned(*include_bytes!("../../../models/mcu-instruct/model.qfb"));
const HEADER: Header = header(MODEL_FILE);

static mut ARENA: AlignedArena<{ arena_bytes(&HEADER) }> = AlignedArena::new();
static mut OUTPUT: [f32; output_floats(&HEADER)] = [0.0; output_floats(&HEADER)];
static mut IDS: [u32; text_tokens(&HEADER)] = [0; text_tokens(&HEADER)];

/// Image features `[M, d_v]`, raw little-endian f32, in flash.
static INPUT: Aligned<[u8; INPUT_BYTES]> = Aligned(*include_bytes!("../../../models/mcu-instruct/input.f32"));
const INPUT_BYTES: usize = include_bytes!("../../../models/mcu-instruct/input.f32").len();
/// What `qformer run --prompt` wrote on the host for the same blob, features and instruction.
static EXPECTED: &[u8; output_floats(&HEADER) * 4] = include_bytes!("../../../models/mcu-instruct/expected.f32");
/// The instruction, tokenized on the device with the blob's vocabulary.
const INSTRUCTION: &str = include_str!("../../../models/mcu-instruct/instruction.txt");
/// The host's token ids of it (little-endian u32).
static EXPECTED_IDS: &[u8] = include_bytes!("../../../models/mcu-instruct/ids.u32");

#[entry]
fn main() -> ! {
    let p = cortex_m::Peripherals::take().expect("peripherals are taken once");
    let counter = Counter::start(p.SYST);
    // SAFETY: `main` runs once and nothing else (no interrupt handler) touches ARENA, OUTPUT
    // or IDS, so these are the only references to them.
    let (arena, output, ids) = unsafe {
        (
            (*core::ptr::addr_of_mut!(ARENA)).as_mut_slice(),
            &mut *core::ptr::addr_of_mut!(OUTPUT),
            &mut *core::ptr::addr_of_mut!(IDS),
        )
    };
    let ex = Example {
        blob: &MODEL.0,
        image: &INPUT.0,
        image_tokens: image_tokens(&HEADER, INPUT_BYTES),
        expected: EXPECTED,
        arena,
        output,
        instruction: Some(Instruction { text: INSTRUCTION, expected_ids: EXPECTED_IDS, ids }),
        isa: "helium",
    };
    exit(example::run(ex, &counter))
}
