//! The examples' program: one forward pass of an embedded int8 model, compared bit for bit
//! with the host's output, logged over defmt. With an [`Instruction`] (the `instruct` images,
//! InstructBLIP's text parts in the blob) the device first tokenizes the instruction with the
//! blob's own vocabulary, compares the ids with the host's, and runs the instruction-aware
//! forward.
//!
//! A board's `main` declares the statics (the blob in a `.qfb` flash section, the image
//! features, the expected output, an arena and an output buffer sized at compile time with
//! [`header`], [`arena_bytes`], [`output_floats`] and [`image_tokens`]; for an instruction
//! also an id buffer of [`text_tokens`]) and calls [`run`].
//! Also here: the defmt transport (`qemu`: semihosting; `rtt`: probe-rs), the panic and
//! HardFault handlers (both log and exit with status 1), and the stack high-water mark.

use cortex_m_rt::{exception, ExceptionFrame};
use qformer_core::kernels::Kernels;
use qformer_core::{Header, Model, Text};

use crate::{cpu, exit, wrong_kernels, Counter};

#[cfg(feature = "rtt")]
use defmt_rtt as _;
#[cfg(feature = "qemu")]
use defmt_semihosting as _;

/// The header of the blob `bytes`, at compile time (fails the build if it is not one).
pub const fn header(bytes: &[u8]) -> Header {
    match Header::parse(bytes) {
        Ok(h) => h,
        Err(_) => panic!("the embedded model is not a valid qformer blob header"),
    }
}

/// Arena bytes a forward of the blob with header `h` needs (fails the build if none fits).
pub const fn arena_bytes(h: &Header) -> usize {
    match h.arena_bytes() {
        Ok(n) => n,
        Err(_) => panic!("the embedded model's arena cannot be planned"),
    }
}

/// Output floats of one forward: the query outputs `[N, d]`, then the projection `[N, d_llm]`.
pub const fn output_floats(h: &Header) -> usize {
    h.num_queries as usize * (h.hidden as usize + h.projection_dim as usize)
}

/// The longest instruction the blob with header `h` takes, in token ids (`[CLS]` and `[SEP]`
/// included); 0 for a blob without text parts.
pub const fn text_tokens(h: &Header) -> usize {
    h.max_text_tokens as usize
}

/// Image tokens `M` in `input_bytes` of `[M, d_v]` f32 features (fails the build unless the
/// bytes are such an array with `1 <= M <= max_image_tokens`).
pub const fn image_tokens(h: &Header, input_bytes: usize) -> usize {
    let row = h.encoder_hidden as usize * 4;
    let m = match input_bytes.checked_div(row) {
        Some(m) => m,
        None => 0,
    };
    assert!(
        row != 0 && input_bytes == m * row && m >= 1 && m <= h.max_image_tokens as usize,
        "the embedded image features are not [M, d_v] f32 for this blob"
    );
    m
}

/// What [`run`] works on.
pub struct Example<'a> {
    /// The blob, 16-byte aligned, read in place.
    pub blob: &'a [u8],
    /// Image features `[image_tokens, d_v]`, little-endian f32, 16-byte aligned.
    pub image: &'a [u8],
    /// Rows of `image`.
    pub image_tokens: usize,
    /// The host's output for them (`qformer run`): queries then projection, little-endian f32.
    pub expected: &'a [u8],
    /// The forward's arena.
    pub arena: &'a mut [u8],
    /// Room for [`output_floats`] floats.
    pub output: &'a mut [f32],
    /// The instruction set the image is meant for, as its kernels' names start: `"helium"`
    /// (Cortex-M55) or `"dsp"` (Cortex-M4/M7). Any other compiled kernel fails the run.
    pub isa: &'static str,
    /// An instruction to answer (InstructBLIP blobs), or `None`: the image alone.
    pub instruction: Option<Instruction<'a>>,
}

/// The instruction of an `instruct` image.
pub struct Instruction<'a> {
    /// The text, tokenized on the device.
    pub text: &'a str,
    /// The host's token ids of `text` (`Model::tokenize`, as `qformer run --prompt` uses it),
    /// little-endian u32.
    pub expected_ids: &'a [u8],
    /// Room for [`text_tokens`] ids.
    pub ids: &'a mut [u32],
}

/// Runs the example: checks the compiled kernels, loads the model, (with an instruction:
/// tokenizes it and compares the ids with the host's,) runs one forward, compares the output
/// with the host's bit for bit, logs counts, CRC-32 and peak stack, and ends with one
/// `summary:` line (which `cargo xtask firmware` reads). True when everything holds.
#[inline(always)]
pub fn run(ex: Example<'_>, counter: &Counter) -> bool {
    defmt::info!(
        "qformer on {=str}: blob {=usize} B at {=usize:#010x} (flash), arena {=usize} B at {=usize:#010x} (RAM)",
        cpu(),
        ex.blob.len(),
        ex.blob.as_ptr() as usize,
        ex.arena.len(),
        ex.arena.as_ptr() as usize
    );
    let mut kernels_ok = true;
    for w in wrong_kernels(&Kernels::COMPILED, ex.isa) {
        defmt::error!("FAIL: {}", defmt::Display2Format(&w));
        kernels_ok = false;
    }
    let Ok(image) = bytemuck::try_cast_slice::<u8, f32>(ex.image) else {
        defmt::error!("FAIL: the image features are not 4-byte aligned f32s");
        return false;
    };

    let t0 = counter.ticks();
    let model = match Model::from_blob(ex.blob) {
        Ok(m) => m,
        Err(e) => return fail_with("from_blob", e),
    };
    let t1 = counter.ticks();
    let c = *model.config();
    defmt::info!(
        "model: {=u32} layers, d {=u32}, {=u32} heads, ffn {=u32}, {=u32} queries, image {=usize} x {=u32}, projection {=u32}; int8 GEMM {=str}",
        c.num_layers,
        c.hidden,
        c.num_heads,
        c.intermediate,
        c.num_queries,
        ex.image_tokens,
        c.encoder_hidden,
        c.projection_dim,
        model.kernels().q8.name()
    );
    let (queries, hidden, projection) = (c.num_queries as usize, c.hidden as usize, c.projection_dim as usize);
    let floats = queries * (hidden + projection);
    if ex.output.len() != floats || ex.expected.len() != 4 * floats {
        defmt::error!(
            "FAIL: the model gives {=usize} output floats; the buffer has {=usize}, the host's file {=usize} bytes",
            floats,
            ex.output.len(),
            ex.expected.len()
        );
        return false;
    }
    let output = ex.output;
    let (q_out, p_out) = output.split_at_mut(queries * hidden);
    let p_out = if projection > 0 { Some(p_out) } else { None };
    let mut ids_ok = true;
    // (tokenize, forward) ticks; tokenize 0 without an instruction.
    let (tokenize, forward) = match ex.instruction {
        None => {
            let start = counter.ticks();
            if let Err(e) = model.forward(image, ex.arena, q_out, p_out) {
                return fail_with("forward", e);
            }
            (0, counter.ticks() - start)
        }
        Some(ins) => {
            let start = counter.ticks();
            let tokens = match model.tokenize(ins.text, ins.ids) {
                Ok(tokens) => tokens,
                Err(e) => return fail_with("tokenize", e),
            };
            let tokenize = counter.ticks() - start;
            let ids = &ins.ids[..tokens.len];
            defmt::info!(
                "instruction {=str:?}: {=usize} token ids (max {=usize}{=str}) in {=u64} {=str}: {=[?]}",
                ins.text,
                tokens.len,
                ins.ids.len(),
                if tokens.truncated() { ", truncated" } else { "" },
                count(tokenize),
                UNIT,
                ids
            );
            let host = ins.expected_ids.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            if ins.expected_ids.len() != 4 * ids.len() || !host.eq(ids.iter().copied()) {
                defmt::error!(
                    "FAIL: the device's token ids differ from the host's ({=usize} bytes of ids.u32)",
                    ins.expected_ids.len()
                );
                ids_ok = false;
            }
            let start = counter.ticks();
            if let Err(e) = model.forward_text(image, Text { ids, mask: None }, ex.arena, q_out, p_out) {
                return fail_with("forward_text", e);
            }
            (tokenize, counter.ticks() - start)
        }
    };
    let stack = stack_peak();

    let bytes: &[u8] = bytemuck::cast_slice(&output[..]);
    let crc = crc32fast::hash(bytes);
    let (mut mismatches, mut first) = (0usize, None);
    for (i, (got, want)) in output.iter().zip(ex.expected.chunks_exact(4)).enumerate() {
        let want = f32::from_le_bytes([want[0], want[1], want[2], want[3]]);
        if got.to_bits() != want.to_bits() {
            mismatches += 1;
            first.get_or_insert((i, *got, want));
        }
    }
    defmt::info!("from_blob (CRC-32 of the blob, table checks): {=u64} {=str}", count(t1 - t0), UNIT);
    defmt::info!("forward: {=u64} {=str}", count(forward), UNIT);
    defmt::info!("output: {=usize} floats, crc32 {=u32:#010x}", output.len(), crc);
    defmt::info!("peak stack: {=usize} B of {=usize} B", stack, stack_size());
    let same = match first {
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
    let ok = same && kernels_ok && ids_ok;
    // One line for scripts (`cargo xtask firmware`).
    defmt::info!(
        "summary: cpu={=str} ok={=bool} crc32={=u32:#010x} forward_{=str}={=u64} tokenize_{=str}={=u64} stack={=usize} arena={=usize}",
        cpu(),
        ok,
        crc,
        UNIT,
        count(forward),
        UNIT,
        count(tokenize),
        stack,
        ex.arena.len()
    );
    ok
}

fn fail_with(what: &str, e: qformer_core::Error) -> bool {
    defmt::error!("FAIL: {=str}: {}", what, defmt::Display2Format(&e));
    false
}

/// What [`count`] returns.
#[cfg(feature = "qemu")]
const UNIT: &str = "instructions";
#[cfg(feature = "rtt")]
const UNIT: &str = "cycles";

/// Instructions in `ticks` (QEMU, `-icount shift=0`).
#[cfg(feature = "qemu")]
fn count(ticks: u64) -> u64 {
    crate::qemu_instructions(ticks)
}
/// Core clock cycles in `ticks` (SysTick's clock source is the processor clock).
#[cfg(feature = "rtt")]
fn count(ticks: u64) -> u64 {
    ticks
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    defmt::error!("panic: {}", defmt::Display2Format(info));
    exit(false)
}

/// Reports a HardFault and exits with failure.
///
/// # Safety
///
/// Called only by the hardware through cortex-m-rt's vector table (cortex-m-rt requires the
/// handler to be declared `unsafe`), with `frame` the stacked exception frame; it never
/// returns.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("HardFault at pc {=u32:#010x}", frame.pc());
    exit(false)
}

// ---- Stack high-water mark ----

extern "C" {
    /// Lowest address of the stack (end of the statics), from cortex-m-rt's `link.x`.
    static _stack_end: u32;
    /// Highest address of the stack (its initial value), from cortex-m-rt's `link.x`.
    static _stack_start: u32;
}

/// Bytes of stack between `_stack_end` and `_stack_start`.
pub fn stack_size() -> usize {
    (&raw const _stack_start) as usize - (&raw const _stack_end) as usize
}

/// Bytes of stack used so far: the reset handler painted `_stack_end.._stack_start` with
/// `STACK_PAINT_VALUE` (feature `paint-stack`); the deepest word no longer painted marks the peak.
pub fn stack_peak() -> usize {
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
