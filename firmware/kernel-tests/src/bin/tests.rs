//! Bare-metal tests of qformer-core's int8 kernels, run under QEMU (see tools/arm-tests.sh):
//!
//! 1. every compiled int8 GEMM variant against scalar over `Q8_SHAPES`, bit for bit;
//! 2. the committed tiny int8 model: `forward` with every variant, output bytes (queries,
//!    then projection) equal to `tests/fixtures/tiny_int8/output.f32`, written on the host.
//!
//! Prints one line per check and `kernel-tests: N passed, M failed`; exits non-zero on any
//! failure.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use kernel_tests::{cpu, exit, hprintln, Aligned};
use qformer_core::kernels::gemm::{self, Q8Gemm};
use qformer_core::kernels::testing::{q8_scratch_bytes, q8_sweep, Q8_SHAPES};
use qformer_core::kernels::Kernels;
use qformer_core::{AlignedArena, Model};

const SCRATCH_BYTES: usize = q8_scratch_bytes(&Q8_SHAPES) + 64;
static mut SCRATCH: Aligned<[u8; SCRATCH_BYTES]> = Aligned([0; SCRATCH_BYTES]);

const BLOB_BYTES: usize = include_bytes!("../../../../tests/fixtures/tiny_int8/model.qfb").len();
/// The blob stays in flash, 16-byte aligned as `Model::from_blob` requires.
static TINY_BLOB: Aligned<[u8; BLOB_BYTES]> = Aligned(*include_bytes!("../../../../tests/fixtures/tiny_int8/model.qfb"));
static TINY_INPUT: &[u8] = include_bytes!("../../../../tests/fixtures/tiny_int8/input.f32");
static TINY_OUTPUT: &[u8] = include_bytes!("../../../../tests/fixtures/tiny_int8/output.f32");

const ARENA_BYTES: usize = 64 * 1024;
static mut ARENA: AlignedArena<ARENA_BYTES> = AlignedArena::new();
const MAX_FLOATS: usize = 4096;
static mut IMAGE: [f32; MAX_FLOATS] = [0.0; MAX_FLOATS];
static mut OUT: [f32; MAX_FLOATS] = [0.0; MAX_FLOATS];

#[entry]
fn main() -> ! {
    hprintln!("kernel-tests on {} ({} int8 GEMM variants compiled)", cpu(), gemm::compiled_variants().len());
    // SAFETY: `main` runs once and is the only code touching these statics (no interrupts use
    // them), so the exclusive references are unique.
    let (scratch, arena, image, out) = unsafe {
        (
            &mut (&mut *core::ptr::addr_of_mut!(SCRATCH)).0[..],
            (*core::ptr::addr_of_mut!(ARENA)).as_mut_slice(),
            &mut *core::ptr::addr_of_mut!(IMAGE),
            &mut *core::ptr::addr_of_mut!(OUT),
        )
    };
    let (mut passed, mut failed) = (0u32, 0u32);
    let mut record = |ok: bool| if ok { passed += 1 } else { failed += 1 };

    for v in gemm::compiled_variants() {
        match q8_sweep(*v, &Q8_SHAPES, scratch) {
            Ok(n) => {
                hprintln!("ok: {}: {} shapes bit-exact with scalar", v.name(), n);
                record(true);
            }
            Err(m) => {
                hprintln!("FAIL: {}: {:?}", v.name(), m);
                record(false);
            }
        }
    }

    for v in gemm::compiled_variants() {
        let ok = tiny_model(*v, arena, image, out);
        record(ok);
    }

    hprintln!("kernel-tests: {} passed, {} failed", passed, failed);
    exit(failed == 0)
}

/// Runs the tiny int8 model with `q8` and compares the output bytes with the host's.
fn tiny_model(q8: Q8Gemm, arena: &mut [u8], image: &mut [f32], out: &mut [f32]) -> bool {
    let model = match Model::from_blob(&TINY_BLOB.0) {
        Ok(m) => {
            let kernels = Kernels { q8, ..*m.kernels() };
            m.with_kernels(kernels)
        }
        Err(e) => {
            hprintln!("FAIL: tiny model: from_blob: {}", e);
            return false;
        }
    };
    let c = *model.config();
    let (nq, hidden, proj) = (c.num_queries as usize, c.hidden as usize, c.projection_dim as usize);
    let floats = TINY_INPUT.len() / 4;
    if model.arena_bytes() > arena.len() || floats > image.len() || nq * (hidden + proj) > out.len() {
        hprintln!("FAIL: tiny model needs arena {} B, {} input and {} output floats", model.arena_bytes(), floats, nq * (hidden + proj));
        return false;
    }
    for (x, b) in image.iter_mut().zip(TINY_INPUT.chunks_exact(4)) {
        *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    let m = floats / c.encoder_hidden as usize;
    let (queries, rest) = out.split_at_mut(nq * hidden);
    let projected = &mut rest[..nq * proj];
    if let Err(e) = model.forward(&image[..floats], m, arena, queries, Some(projected)) {
        hprintln!("FAIL: tiny model with {}: forward: {}", q8.name(), e);
        return false;
    }
    let got = out[..nq * (hidden + proj)].iter().flat_map(|v| v.to_le_bytes());
    let mismatch = got.zip(TINY_OUTPUT.iter()).position(|(g, &w)| g != w);
    match (mismatch, nq * (hidden + proj) * 4 == TINY_OUTPUT.len()) {
        (None, true) => {
            hprintln!("ok: tiny int8 model with {}: {} output bytes equal the host's", q8.name(), TINY_OUTPUT.len());
            true
        }
        (Some(at), _) => {
            let i = at / 4;
            hprintln!("FAIL: tiny int8 model with {}: output float {} is {:e}, host has {:e}", q8.name(), i, out[i],
                f32::from_le_bytes([TINY_OUTPUT[4 * i], TINY_OUTPUT[4 * i + 1], TINY_OUTPUT[4 * i + 2], TINY_OUTPUT[4 * i + 3]]));
            false
        }
        (None, false) => {
            hprintln!("FAIL: tiny int8 model: {} output bytes, host file has {}", nq * (hidden + proj) * 4, TINY_OUTPUT.len());
            false
        }
    }
}
