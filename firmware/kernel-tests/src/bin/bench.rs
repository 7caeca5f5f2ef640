//! Instruction counts of the int8 GEMM, the float GEMM (f32 and fp16 weights) and the
//! activation quantizer at BLIP-2 shapes, scalar vs the SIMD variant, under
//! `qemu-system-arm -icount shift=0` (`cargo xtask bench`). QEMU counts instructions, not
//! cycles: with `shift=0` virtual time advances 1 ns per instruction, and SysTick runs on the
//! CPU clock (32 MHz on mps3-an547 = 31.25 instructions per tick, 25 MHz on mps2-an386/an500 =
//! 40), counted across wraps by its interrupt. The counter is first checked on an `asm!` loop
//! of known length. Operands live in the board's large RAM, outside the linker's map.
#![no_std]
#![no_main]

use core::arch::asm;
use core::fmt::Write;

use cortex_m_rt::entry;
use kernel_tests::{cpu, exit, hprintln, kernels_are_native, Counter};
use qformer_board::qemu_instructions;
use qformer_core::kernels::gemm::{self, FGemm, Q8Gemm, Shape};
use qformer_core::kernels::quant::{self, Quantizer, Strided};
use qformer_core::kernels::testing::Rng;
use qformer_core::kernels::QRows;

/// Instructions between two [`Counter::ticks`] readings.
fn instructions(t0: u64, t1: u64) -> u64 {
    qemu_instructions(t1 - t0)
}

/// `2 * n` instructions (`subs` + `bne` per iteration).
fn known_loop(n: u32) {
    // SAFETY: a register-only countdown loop.
    unsafe { asm!("2:", "subs {n}, #1", "bne 2b", n = inout(reg) n => _, options(nomem, nostack)) };
}

/// The board's large RAM, unused by the linker map: (base, bytes).
fn big_ram() -> (usize, usize) {
    match cpu() {
        "Cortex-M55" => (0x2100_0000, 4 << 20), // mps3-an547 SRAM
        "Cortex-M7" => (0x6000_0000, 16 << 20), // mps2-an500 PSRAM
        _ => (0x2100_0000, 16 << 20),           // mps2-an386 PSRAM
    }
}

/// `count` values of `T` from the front of `rest`, 16-byte aligned.
fn carve<'a, T: bytemuck::Pod>(rest: &mut &'a mut [u8], count: usize) -> &'a mut [T] {
    let pad = rest.as_ptr().align_offset(16);
    let r = core::mem::take(rest);
    let (_, r) = r.split_at_mut(pad);
    let (mine, r) = r.split_at_mut(count * core::mem::size_of::<T>());
    *rest = r;
    bytemuck::cast_slice_mut(mine)
}

/// Prints the column heads of a table: `label` heads the second column, `per` the cost one.
fn header(label: &str, per: &str) {
    hprintln!("{:>16} {:>7} {:>30} {:>12} {:>12} {:>8}", "shape", label, "variant", "instructions", per, "vs scalar");
}

/// Prints one row: `instr` instructions for `work` units, and the ratio to `first` (the
/// scalar row's count).
fn row(shape: &str, label: &dyn core::fmt::Display, name: &str, instr: u64, work: u64, first: u64) {
    let per_milli = instr * 1000 / work;
    let ratio_tenths = first * 10 / instr.max(1);
    hprintln!(
        "{:>16} {:>7} {:>30} {:>12} {:>8}.{:03} {:>6}.{}x",
        shape,
        label,
        name,
        instr,
        per_milli / 1000,
        per_milli % 1000,
        ratio_tenths / 10,
        ratio_tenths % 10
    );
}

/// `dims` joined with `x`, e.g. `32x768x768`.
fn shape(dims: &[usize]) -> heapless::String<32> {
    let mut s = heapless::String::new();
    for (i, d) in dims.iter().enumerate() {
        let _ = write!(s, "{}{d}", if i == 0 { "" } else { "x" });
    }
    s
}

#[entry]
fn main() -> ! {
    let p = cortex_m::Peripherals::take().expect("peripherals");
    let counter = Counter::start(p.SYST);
    let ticks = || counter.ticks();

    hprintln!("arm-bench on {}: instructions counted by SysTick under -icount shift=0", cpu());
    let mut ok = kernels_are_native();
    for n in [1_000_000u32, 50_000_000, 250_000_000] {
        let t0 = ticks();
        known_loop(n);
        let got = instructions(t0, ticks());
        let want = 2 * n as u64;
        let err = got.abs_diff(want);
        hprintln!("counter check: loop of {} instructions measured {} ({:+})", want, got, got as i64 - want as i64);
        // A tick is 31.25 or 40 instructions, plus the reads around the loop.
        ok &= err <= 200;
    }
    if !ok {
        hprintln!("FAIL: the SysTick instruction counter is off");
        exit(false);
    }

    let (base, bytes) = big_ram();
    // SAFETY: the board's large RAM region is outside the linker's memory map (memory.x), so
    // nothing else uses it; this is the only reference to it.
    let ram = unsafe { core::slice::from_raw_parts_mut(base as *mut u8, bytes) };
    let simd = *gemm::compiled_variants().last().expect("variants");
    // (m, n, k, group); shapes reduced to fit the RAM are marked in the output.
    let shapes: [(usize, usize, usize, usize); 4] =
        [(32, 768, 768, 32), (32, 3072, 768, 32), (257, 768, 1408, 32), (32, 768, 768, 128)];
    header("group", "instr/MAC");
    for (m, n, k, group) in shapes {
        let mut rest: &mut [u8] = &mut ram[..];
        let need = m * k + n * k + 4 * (m + n) * (k / group) + 4 * n + 4 * m * n + 6 * 16;
        if need > bytes {
            hprintln!("{}x{}x{} does not fit in {} bytes", m, n, k, bytes);
            continue;
        }
        let av: &mut [i8] = carve(&mut rest, m * k);
        let wv: &mut [i8] = carve(&mut rest, n * k);
        let asc: &mut [f32] = carve(&mut rest, m * (k / group));
        let wsc: &mut [f32] = carve(&mut rest, n * (k / group));
        let bias: &mut [f32] = carve(&mut rest, n);
        let out: &mut [f32] = carve(&mut rest, m * n);
        let mut rng = Rng(0x2545_f491);
        av.iter_mut().for_each(|v| *v = ((rng.next_u32() % 255) as i32 - 127) as i8);
        wv.iter_mut().for_each(|v| *v = rng.next_u32() as i8);
        asc.iter_mut().chain(wsc.iter_mut()).for_each(|v| *v = rng.scale());
        bias.iter_mut().for_each(|v| *v = rng.unit() - 0.5);
        let a = QRows { values: av, scales: asc, stride: k, group };
        let w = QRows { values: wv, scales: wsc, stride: k, group };
        let s = Shape::new(m, n, k);
        let macs = (m * n * k) as u64;
        let mut first = 0u64;
        let mut check = 0u32;
        for v in [Q8Gemm::SCALAR, simd] {
            let t0 = ticks();
            v.run(&a, &w, Some(bias), out, s);
            let instr = instructions(t0, ticks());
            let sum = out.iter().fold(0u32, |h, x| h.rotate_left(5) ^ x.to_bits());
            if first == 0 {
                first = instr;
                check = sum;
            } else if sum != check {
                hprintln!("FAIL: {} output differs from scalar", v.name());
                ok = false;
            }
            row(&shape(&[m, n, k]), &group, v.name(), instr, macs, first);
        }
    }
    ok &= float_gemm(ram, &counter);
    ok &= quantizer(ram, &counter);
    exit(ok)
}

/// Float GEMM, f32 and fp16 weights, scalar vs the last compiled variant (outputs differ
/// within the float bound, so only the instruction counts are shown; `f_sweep` in the tests
/// checks the values).
fn float_gemm(ram: &mut [u8], counter: &Counter) -> bool {
    let ticks = || counter.ticks();
    let simd = *gemm::compiled_f_variants().last().expect("variants");
    let (m, n, k) = (32usize, 768usize, 768usize);
    let mut rest: &mut [u8] = ram;
    let a: &mut [f32] = carve(&mut rest, m * k);
    let w: &mut [f32] = carve(&mut rest, n * k);
    let wh: &mut [half::f16] = carve(&mut rest, n * k);
    let bias: &mut [f32] = carve(&mut rest, n);
    let out: &mut [f32] = carve(&mut rest, m * n);
    let mut rng = Rng(0x1357_9bdf);
    let mut unit = move || rng.unit() - 0.5;
    a.iter_mut().for_each(|v| *v = 4.0 * unit());
    w.iter_mut().zip(wh.iter_mut()).for_each(|(v, h)| {
        *h = half::f16::from_f32(0.2 * unit());
        *v = h.to_f32();
    });
    bias.iter_mut().for_each(|v| *v = unit());
    let s = Shape::new(m, n, k);
    let macs = (m * n * k) as u64;
    header("weights", "instr/MAC");
    for f16 in [false, true] {
        let mut first = 0u64;
        for v in [FGemm::SCALAR, simd] {
            let t0 = ticks();
            if f16 {
                v.run_f16(a, wh, Some(bias), out, s);
            } else {
                v.run_f32(a, w, Some(bias), out, s);
            }
            let instr = instructions(t0, ticks());
            if first == 0 {
                first = instr;
            }
            row(&shape(&[m, n, k]), &if f16 { "fp16" } else { "f32" }, v.name(), instr, macs, first);
        }
    }
    true
}

/// Activation quantizer over a 257 x 1408 row-major source (BLIP-2's image tokens x ViT-g
/// width), groups of 32 and 128, scalar vs the last compiled variant: bit-exact outputs.
fn quantizer(ram: &mut [u8], counter: &Counter) -> bool {
    let ticks = || counter.ticks();
    let simd = *quant::compiled_variants().last().expect("variants");
    let (rows, cols) = (257usize, 1408usize);
    let mut rest: &mut [u8] = ram;
    let src: &mut [f32] = carve(&mut rest, rows * cols);
    let values: &mut [i8] = carve(&mut rest, rows * cols);
    let scales: &mut [f32] = carve(&mut rest, rows * cols / 32);
    let mut rng = Rng(0x0f1e_2d3c);
    src.iter_mut().for_each(|v| *v = (rng.unit() - 0.5) * 6.0);
    let strided = Strided { data: src, rows, cols, row_stride: cols, col_stride: 1 };
    let elems = (rows * cols) as u64;
    let mut ok = true;
    header("group", "instr/elem");
    for group in [32usize, 128] {
        let (mut first, mut check) = (0u64, 0u32);
        for v in [Quantizer::SCALAR, simd] {
            let t0 = ticks();
            let q = quant::quantize_rows(v, strided, group, values, scales);
            let instr = instructions(t0, ticks());
            let sum = q.values.iter().fold(0u32, |h, &x| h.rotate_left(5) ^ x as u8 as u32);
            let sum = q.scales.iter().fold(sum, |h, x| h.rotate_left(5) ^ x.to_bits());
            if first == 0 {
                (first, check) = (instr, sum);
            } else if sum != check {
                hprintln!("FAIL: {} output differs from scalar", v.name());
                ok = false;
            }
            row(&shape(&[rows, cols]), &group, v.name(), instr, elems, first);
        }
    }
    ok
}
