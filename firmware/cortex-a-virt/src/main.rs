//! qformer on bare-metal AArch64 (QEMU `virt`, Cortex-A53/A76/max): the dynamic variant.
//!
//! * The blob is not linked into the image: it is read at run time from RAM at `0x48000000`,
//!   where QEMU's loader device (or a board's boot loader) put it. Its size comes from its own
//!   header, and `Model::from_blob` validates it (CRC-32 included) in place.
//! * The arena comes from the heap (`embedded-alloc`), sized by `Model::arena_bytes()`.
//! * The int8 GEMM is chosen at run time from the ID registers: `sdot` when the CPU has
//!   FEAT_DotProd (Cortex-A76), `smmla` with FEAT_I8MM, base NEON otherwise (Cortex-A53).
//!
//! It runs the kernel sweeps against scalar, then the committed tiny int8 model, compares its
//! output bytes with the host's, and reports the checksum and the instructions the forward
//! took (PMU event 0x08, exact under `qemu-system-aarch64 -icount shift=0`). Exit status 0
//! only if everything matches.
#![no_std]
#![no_main]

extern crate alloc;

mod rt;

use alloc::vec;
use core::fmt::Write;

use qformer_core::kernels::gemm::{self, Q8Gemm};
use qformer_core::kernels::testing::{f_scratch_bytes, f_sweep, q8_scratch_bytes, q8_sweep, F_SHAPES, Q8_SHAPES};
use qformer_core::kernels::{quant, Kernels};
use qformer_core::{Header, Model};
use rt::{exit, instructions, Console};

#[global_allocator]
static HEAP: embedded_alloc::LlffHeap = embedded_alloc::LlffHeap::empty();

/// Where the boot loader (QEMU `-device loader`) placed the blob.
const BLOB_ADDR: usize = 0x4800_0000;
/// Where it placed the image features: `max_image_tokens x d_v` f32, little-endian.
const INPUT_ADDR: usize = 0x4600_0000;
/// Where it placed the host's output for them (`qformer_output` then `projected`, f32).
const EXPECTED_ADDR: usize = 0x4700_0000;

/// `len` bytes the boot loader placed at `addr`.
fn loaded(addr: usize, len: usize) -> &'static [u8] {
    // SAFETY: the loader wrote these regions before the CPU started; they lie in RAM below
    // the heap (link.ld) and nothing writes them afterwards.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
}

/// The int8 GEMM variants this CPU runs, from ID_AA64ISAR0/1_EL1.
fn q8_variants(out: &mut heapless_list::List) {
    out.push(Q8Gemm::SCALAR);
    out.push(gemm::neon::BASE);
    let (isar0, isar1) = rt::isar();
    if (isar0 >> 44) & 0xf >= 1 {
        // SAFETY: ID_AA64ISAR0_EL1.DP >= 1: the CPU implements FEAT_DotProd.
        out.push(unsafe { gemm::neon::sdot_unchecked() });
    }
    if (isar1 >> 52) & 0xf >= 1 {
        // SAFETY: ID_AA64ISAR1_EL1.I8MM >= 1: the CPU implements FEAT_I8MM.
        out.push(unsafe { gemm::neon::i8mm_unchecked() });
    }
}

/// A fixed list of variants (no allocation needed for four entries).
mod heapless_list {
    use qformer_core::kernels::gemm::Q8Gemm;
    pub struct List {
        pub items: [Option<Q8Gemm>; 4],
    }
    impl List {
        pub fn push(&mut self, q: Q8Gemm) {
            if let Some(slot) = self.items.iter_mut().find(|s| s.is_none()) {
                *slot = Some(q);
            }
        }
        pub fn iter(&self) -> impl Iterator<Item = Q8Gemm> + '_ {
            self.items.iter().flatten().copied()
        }
    }
}

#[no_mangle]
extern "C" fn main() -> ! {
    // SAFETY: called once, before any allocation; the region between the linker symbols is
    // RAM that nothing else uses (see link.ld).
    unsafe { HEAP.init(rt::heap_start(), rt::heap_size()) };
    let mut con = Console;
    let _ = writeln!(con, "qformer on bare-metal AArch64: {}", rt::cpu_name());
    let mut ok = true;

    let mut variants = heapless_list::List { items: [None; 4] };
    q8_variants(&mut variants);
    let mut scratch = vec![0u8; q8_scratch_bytes(&Q8_SHAPES).max(f_scratch_bytes(&F_SHAPES)) + 64];
    for v in variants.iter() {
        match q8_sweep(v, &Q8_SHAPES, &mut scratch) {
            Ok(n) => {
                let _ = writeln!(con, "ok: {}: {n} shapes bit-exact with scalar", v.name());
            }
            Err(m) => {
                ok = false;
                let _ = writeln!(con, "FAILED: {m:?}");
            }
        }
    }
    match f_sweep(gemm::FGemm::COMPILED, &F_SHAPES, &mut scratch) {
        Ok(n) => {
            let _ = writeln!(con, "ok: {}: {n} shapes within bound", gemm::FGemm::COMPILED.name());
        }
        Err(m) => {
            ok = false;
            let _ = writeln!(con, "FAILED: {m:?}");
        }
    }
    match qformer_core::kernels::testing::quant_sweep(quant::Quantizer::COMPILED, &mut scratch) {
        Ok(n) => {
            let _ = writeln!(con, "ok: {}: {n} groups bit-exact with scalar", quant::Quantizer::COMPILED.name());
        }
        Err(m) => {
            ok = false;
            let _ = writeln!(con, "FAILED: {m:?}");
        }
    }
    drop(scratch);
    if cfg!(feature = "bench") {
        bench_gemm(&variants, &mut con);
    }

    // The blob, in place where the loader put it. Its header says how long it is.
    let len = match Header::parse(loaded(BLOB_ADDR, qformer_core::blob::HEADER_BYTES)) {
        Ok(h) => h.total_bytes as usize,
        Err(e) => {
            let _ = writeln!(con, "FAILED: no blob at {BLOB_ADDR:#x}: {e}");
            exit(false)
        }
    };
    // `from_blob` checks the CRC over exactly the bytes the header declares.
    let blob = loaded(BLOB_ADDR, len);
    let model = match Model::from_blob(blob) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(con, "FAILED: blob at {BLOB_ADDR:#x}: {e}");
            exit(false)
        }
    };
    let c = *model.config();
    let m = c.max_image_tokens as usize;
    let input = loaded(INPUT_ADDR, 4 * m * c.encoder_hidden as usize);
    let image: alloc::vec::Vec<f32> =
        input.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let expected = loaded(EXPECTED_ADDR, 4 * (c.num_queries * (c.hidden + c.projection_dim)) as usize);
    // The dynamic variant: the arena is a heap allocation of exactly the planned size,
    // aligned to 16 bytes through its u128 element type.
    let mut arena = vec![0u128; model.arena_bytes().div_ceil(16)];
    let arena: &mut [u8] = bytemuck::cast_slice_mut(&mut arena);
    let _ = writeln!(con, "blob {len} bytes at {BLOB_ADDR:#x}, arena {} bytes on the heap", model.arena_bytes());
    rt::paint_stack();
    for q8 in variants.iter() {
        let model = model.with_kernels(Kernels { q8, ..Kernels::COMPILED });
        let mut out = vec![0f32; (c.num_queries * c.hidden) as usize];
        let mut proj = vec![0f32; (c.num_queries * c.projection_dim) as usize];
        let before = instructions();
        let r = model.forward(&image, arena, &mut out, Some(&mut proj));
        let spent = instructions() - before;
        if let Err(e) = r {
            ok = false;
            let _ = writeln!(con, "FAILED: forward with {}: {e}", q8.name());
            continue;
        }
        let mut crc = crc32fast::Hasher::new();
        let mut same = true;
        for (i, v) in out.iter().chain(proj.iter()).enumerate() {
            let b = v.to_le_bytes();
            crc.update(&b);
            same &= expected.get(4 * i..4 * i + 4) == Some(&b[..]);
        }
        same &= expected.len() == 4 * (out.len() + proj.len());
        ok &= same;
        let _ = writeln!(
            con,
            "{}: int8 model with {}: output crc32 {:#010x}, {} instructions, {} the host's bytes",
            if same { "ok" } else { "FAILED" },
            q8.name(),
            crc.finalize(),
            spent,
            if same { "equal to" } else { "DIFFERENT from" }
        );
    }
    let _ = writeln!(con, "peak stack of the forward passes: {} bytes", rt::stack_high_water());
    let _ = writeln!(con, "cortex-a-virt: {}", if ok { "all checks passed" } else { "FAILED" });
    exit(ok)
}

/// Instructions per multiply-accumulate of every int8 GEMM variant at BLIP-2's shapes.
fn bench_gemm(variants: &heapless_list::List, con: &mut Console) {
    use qformer_core::kernels::gemm::Shape;
    use qformer_core::kernels::QRows;
    for (name, m, n, k) in
        [("32x768x768", 32, 768, 768), ("32x3072x768", 32, 3072, 768), ("257x768x1408", 257, 768, 1408)]
    {
        let group = 32;
        let a = vec![3i8; m * k];
        let w: alloc::vec::Vec<i8> = (0..n * k).map(|i| (i % 251) as i8).collect();
        let sa = vec![0.01f32; m * k / group];
        let sw = vec![0.02f32; n * k / group];
        let mut out = vec![0f32; m * n];
        let qa = QRows { values: &a, scales: &sa, stride: k, group };
        let qw = QRows { values: &w, scales: &sw, stride: k, group };
        for v in variants.iter() {
            let before = instructions();
            v.run(&qa, &qw, None, &mut out, Shape::new(m, n, k));
            let spent = instructions() - before;
            let per_mac = spent as f64 / (m * n * k) as f64;
            let _ = writeln!(con, "bench {name:<13} {:<24} {spent:>12} instructions  {per_mac:.3} per MAC", v.name());
        }
    }
}
