//! Bare-metal tests of qformer-core's int8 kernels, run under QEMU (`cargo xtask arm-tests`):
//!
//! 0. the compiled kernels are the ones for the core (Helium on the M55 image, DSP on M4/M7);
//! 1. every compiled int8 GEMM variant against scalar over `Q8_SHAPES`, bit for bit, and over
//!    `EXTRA_SHAPES` (group sizes the Helium and DSP kernels treat specially: 48, 128, 256,
//!    512, with 2 x 4 / 4 x 1 tile edges);
//! 2. every variant against scalar with scales whose products are subnormal (the Helium
//!    kernel must leave its MVE float combine, which flushes subnormals, for the scalar FPU);
//! 3. every compiled activation quantizer against scalar (`quant_sweep`: random, all-zero,
//!    .5-tie, tiny-maximum, infinity and NaN groups), bit for bit, and every compiled float
//!    GEMM against scalar over `F_SHAPES` with f32 and fp16 weights (`f_sweep`), within its
//!    stated bound;
//! 4. the committed tiny int8 model: `forward` with every variant, output bytes (queries,
//!    then projection) equal to `tests/fixtures/tiny_int8/output.f32`, written on the host;
//! 5. every f16 bit pattern (65,536) through every compiled float GEMM's fp16 path
//!    (`f16_sweep`: one weight per output) and through the fp16 widening steps the kernels run
//!    on their own (`f16_convert_sweep`: the DSP kernel's `vcvtb`/`vcvtt`), against
//!    `half::f16::to_f32`.
//!
//! Prints one line per check and `kernel-tests: N passed, M failed`; exits non-zero on any
//! failure.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use kernel_tests::{cpu, exit, hprintln, kernels_are_native, Aligned};
use qformer_core::kernels::gemm::{self, Q8Gemm};
use qformer_core::kernels::quant;
use qformer_core::kernels::testing::{
    f_scratch_bytes, f_sweep, q8_scratch_bytes, q8_sweep, quant_sweep, F16_SCRATCH_BYTES, F_SHAPES, Q8_SHAPES,
    QUANT_LENGTHS,
};
use qformer_core::kernels::Kernels;
use qformer_core::{AlignedArena, Model};

/// `(m, n, stride, group)`, as `Q8_SHAPES`.
const EXTRA_SHAPES: [(usize, usize, usize, usize); 7] = [
    (4, 8, 256, 128),
    (3, 9, 384, 128),
    (2, 4, 96, 48),
    (5, 7, 144, 48),
    (4, 5, 512, 256),
    (2, 4, 1024, 512),
    (6, 12, 768, 64),
];
const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}
/// What `quant_sweep` needs: `4 * len + 2 * len + 64` bytes for its longest group.
const QUANT_SCRATCH_BYTES: usize = 6 * QUANT_LENGTHS[QUANT_LENGTHS.len() - 1] + 64;
const SCRATCH_BYTES: usize = max(
    max(q8_scratch_bytes(&Q8_SHAPES), q8_scratch_bytes(&EXTRA_SHAPES)),
    max(max(f_scratch_bytes(&F_SHAPES), QUANT_SCRATCH_BYTES), F16_SCRATCH_BYTES),
) + 64;
static mut SCRATCH: Aligned<[u8; SCRATCH_BYTES]> = Aligned([0; SCRATCH_BYTES]);

const BLOB_BYTES: usize = include_bytes!("../../../../tests/fixtures/tiny_int8/model.qfb").len();
/// The blob stays in flash, 16-byte aligned as `Model::from_blob` requires.
static TINY_BLOB: Aligned<[u8; BLOB_BYTES]> =
    Aligned(*include_bytes!("../../../../tests/fixtures/tiny_int8/model.qfb"));
static TINY_INPUT: &[u8] = include_bytes!("../../../../tests/fixtures/tiny_int8/input.f32");
static TINY_OUTPUT: &[u8] = include_bytes!("../../../../tests/fixtures/tiny_int8/output.f32");

const ARENA_BYTES: usize = 64 * 1024;
static mut ARENA: AlignedArena<ARENA_BYTES> = AlignedArena::new();
const MAX_FLOATS: usize = 4096;
static mut IMAGE: [f32; MAX_FLOATS] = [0.0; MAX_FLOATS];
static mut OUT: [f32; MAX_FLOATS] = [0.0; MAX_FLOATS];

#[entry]
fn main() -> ! {
    hprintln!(
        "kernel-tests on {} ({} int8 GEMM, {} float GEMM, {} quantizer variants compiled)",
        cpu(),
        gemm::compiled_variants().len(),
        gemm::compiled_f_variants().len(),
        quant::compiled_variants().len()
    );
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
    record(kernels_are_native());

    for v in gemm::compiled_variants() {
        for (set, shapes) in [("Q8_SHAPES", &Q8_SHAPES[..]), ("EXTRA_SHAPES", &EXTRA_SHAPES[..])] {
            match q8_sweep(*v, shapes, scratch) {
                Ok(n) => {
                    hprintln!("ok: {}: {} {} bit-exact with scalar", v.name(), n, set);
                    record(true);
                }
                Err(m) => {
                    hprintln!("FAIL: {}: {:?}", v.name(), m);
                    record(false);
                }
            }
        }
        record(subnormal_scales(*v, scratch));
    }

    for v in quant::compiled_variants() {
        match quant_sweep(*v, scratch) {
            Ok(n) => {
                hprintln!("ok: {}: {} quantizer groups bit-exact with scalar", v.name(), n);
                record(true);
            }
            Err(m) => {
                hprintln!("FAIL: {}: {:?}", v.name(), m);
                record(false);
            }
        }
    }

    for v in gemm::compiled_f_variants() {
        match f_sweep(*v, &F_SHAPES, scratch) {
            Ok(n) => {
                hprintln!("ok: {}: {} F_SHAPES within the bound of scalar (f32 and fp16 weights)", v.name(), n);
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

    f16_conversions(scratch, &mut record);

    hprintln!("kernel-tests: {} passed, {} failed", passed, failed);
    exit(failed == 0)
}

/// Every f16 bit pattern through every compiled float GEMM's fp16 path and through the
/// widening steps the kernels run on their own (see `qformer_core::kernels::testing`).
fn f16_conversions(scratch: &mut [u8], record: &mut impl FnMut(bool)) {
    use qformer_core::kernels::testing::{f16_convert_sweep, f16_sweep, f16_widening_steps, F16Report};
    let show = |what: &str, r: Result<F16Report, _>| match r {
        Ok(F16Report { patterns, compared, nan_exact, nan_default }) => {
            hprintln!(
                "ok: {}: {} f16 patterns, {} conversions equal to half's (NaN: {} exact, {} default NaN)",
                what,
                patterns,
                compared,
                nan_exact,
                nan_default
            );
            true
        }
        Err(m) => {
            hprintln!("FAIL: {}: {:?}", what, m);
            false
        }
    };
    for v in gemm::compiled_f_variants() {
        record(show(v.name(), f16_sweep(*v, scratch)));
    }
    for step in f16_widening_steps() {
        record(show(step.name, f16_convert_sweep(*step)));
    }
}

/// `variant` against scalar where `sa * sw` is subnormal for some groups (1e-20 x 1e-20),
/// some scales are subnormal themselves and some biases too: bit for bit.
fn subnormal_scales(variant: Q8Gemm, scratch: &mut [u8]) -> bool {
    use qformer_core::kernels::gemm::Shape;
    use qformer_core::kernels::QRows;
    const M: usize = 4;
    const N: usize = 8;
    const K: usize = 128;
    const G: usize = 32;
    let (values, rest) = scratch.split_at_mut((M + N) * K);
    let mut x = 0x9e37_79b9u32;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for v in values.iter_mut() {
        *v = (next() % 255) as u8;
    }
    let values: &[i8] = bytemuck_cast(values);
    let (av, wv) = values.split_at(M * K);
    let mut scales = [0f32; (M + N) * (K / G) + N + 2 * M * N];
    let (sc, rest_f) = scales.split_at_mut((M + N) * (K / G));
    for (i, v) in sc.iter_mut().enumerate() {
        *v = match i % 5 {
            0 => 1e-20,
            1 => 1e-39, // subnormal
            2 => 0.0,
            3 => 3e-21,
            _ => 0.25,
        };
    }
    let (asc, wsc) = sc.split_at((M * K) / G);
    let (bias, outs) = rest_f.split_at_mut(N);
    for (j, b) in bias.iter_mut().enumerate() {
        *b = if j % 2 == 0 { 1e-40 } else { -0.0 };
    }
    let (got, want) = outs.split_at_mut(M * N);
    let a = QRows { values: av, scales: asc, stride: K, group: G };
    let w = QRows { values: wv, scales: wsc, stride: K, group: G };
    let s = Shape::new(M, N, K);
    variant.run(&a, &w, Some(bias), got, s);
    Q8Gemm::SCALAR.run(&a, &w, Some(bias), want, s);
    let _ = rest;
    match got.iter().zip(want.iter()).position(|(g, w)| g.to_bits() != w.to_bits()) {
        None => {
            hprintln!("ok: {}: subnormal scale products bit-exact with scalar", variant.name());
            true
        }
        Some(i) => {
            hprintln!("FAIL: {}: subnormal scales: output {} is {:e}, scalar {:e}", variant.name(), i, got[i], want[i]);
            false
        }
    }
}

fn bytemuck_cast(b: &[u8]) -> &[i8] {
    // SAFETY: u8 and i8 have the same size, alignment and validity.
    unsafe { core::slice::from_raw_parts(b.as_ptr() as *const i8, b.len()) }
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
        hprintln!(
            "FAIL: tiny model needs arena {} B, {} input and {} output floats",
            model.arena_bytes(),
            floats,
            nq * (hidden + proj)
        );
        return false;
    }
    for (x, b) in image.iter_mut().zip(TINY_INPUT.chunks_exact(4)) {
        *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    let (queries, rest) = out.split_at_mut(nq * hidden);
    let projected = &mut rest[..nq * proj];
    if let Err(e) = model.forward(&image[..floats], arena, queries, Some(projected)) {
        hprintln!("FAIL: tiny model with {}: forward: {}", q8.name(), e);
        return false;
    }
    let got = out[..nq * (hidden + proj)].iter().flat_map(|v| v.to_le_bytes());
    let mismatch = got.zip(TINY_OUTPUT.iter()).position(|(g, &w)| g != w);
    match (mismatch, nq * (hidden + proj) * 4 == TINY_OUTPUT.len()) {
        (None, true) => {
            hprintln!(
                "ok: tiny int8 model with {} ({}, {}): {} output bytes equal the host's",
                q8.name(),
                model.kernels().quant.name(),
                model.kernels().f.name(),
                TINY_OUTPUT.len()
            );
            true
        }
        (Some(at), _) => {
            let i = at / 4;
            hprintln!(
                "FAIL: tiny int8 model with {}: output float {} is {:e}, host has {:e}",
                q8.name(),
                i,
                out[i],
                f32::from_le_bytes([
                    TINY_OUTPUT[4 * i],
                    TINY_OUTPUT[4 * i + 1],
                    TINY_OUTPUT[4 * i + 2],
                    TINY_OUTPUT[4 * i + 3]
                ])
            );
            false
        }
        (None, false) => {
            hprintln!(
                "FAIL: tiny int8 model: {} output bytes, host file has {}",
                nq * (hidden + proj) * 4,
                TINY_OUTPUT.len()
            );
            false
        }
    }
}
