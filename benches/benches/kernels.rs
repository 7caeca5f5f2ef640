//! Host kernel benchmarks at BLIP-2's shapes, every variant this CPU runs with the scalar
//! baseline first in the same run: the int8 GEMM, the activation quantizer and the f32/f16
//! GEMMs. `cargo bench -p qformer-benches`; GEMM throughput is in multiply-accumulates,
//! quantizer throughput in quantized values.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::f16;
use qformer_benches::{random_f32, OwnedQ, BLIP2_SHAPES};
use qformer_core::kernels::gemm::Shape;
use qformer_core::kernels::quant::{quantize_rows, Strided};
use std::time::Duration;

fn int8_gemm(c: &mut Criterion) {
    let variants = qformer_std::runtime::q8_variants();
    let mut g = c.benchmark_group("gemm_q8");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for (name, m, n, k) in BLIP2_SHAPES {
        let a = OwnedQ::random(m, k, 32, 1);
        let w = OwnedQ::random(n, k, 32, 2);
        let bias = random_f32(n, 3);
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements((m * n * k) as u64));
        for v in &variants {
            g.bench_with_input(BenchmarkId::new(v.name(), name), &(), |b, _| {
                b.iter(|| v.run(&a.view(), &w.view(), Some(&bias), &mut out, Shape::new(m, n, k)))
            });
        }
    }
    g.finish();
}

/// The activation quantizer (groups of 32) on the three activations BLIP-2's int8 path
/// quantizes most: the queries (32 x 768), the feed-forward hidden state (32 x 3072) and the
/// image features (257 x 1408).
fn quantize(c: &mut Criterion) {
    let variants = qformer_std::runtime::quant_variants();
    let mut g = c.benchmark_group("quant_i8");
    g.sample_size(20).measurement_time(Duration::from_secs(2));
    for (m, k) in [(32, 768), (32, 3072), (257, 1408)] {
        let src = random_f32(m * k, 4);
        let mut values = vec![0i8; m * k.div_ceil(32) * 32];
        let mut scales = vec![0f32; m * k.div_ceil(32)];
        g.throughput(Throughput::Elements((m * k) as u64));
        for v in &variants {
            g.bench_with_input(BenchmarkId::new(v.name(), format!("{m}x{k}")), &(), |b, _| {
                b.iter(|| {
                    let s = Strided { data: &src, rows: m, cols: k, row_stride: k, col_stride: 1 };
                    quantize_rows(*v, s, 32, &mut values, &mut scales);
                })
            });
        }
    }
    g.finish();
}

/// The f32-weight and fp16-weight GEMMs (the f32 and fp16 forward paths).
fn float_gemm(c: &mut Criterion) {
    let variants = qformer_std::runtime::f_variants();
    let mut g = c.benchmark_group("gemm_f");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for (name, m, n, k) in BLIP2_SHAPES {
        let a = random_f32(m * k, 5);
        let w = random_f32(n * k, 6);
        let wh: Vec<f16> = w.iter().map(|&x| f16::from_f32(x)).collect();
        let bias = random_f32(n, 7);
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements((m * n * k) as u64));
        for v in &variants {
            g.bench_with_input(BenchmarkId::new(format!("{}/f32", v.name()), name), &(), |b, _| {
                b.iter(|| v.run_f32(&a, &w, Some(&bias), &mut out, Shape::new(m, n, k)))
            });
            g.bench_with_input(BenchmarkId::new(format!("{}/f16", v.name()), name), &(), |b, _| {
                b.iter(|| v.run_f16(&a, &wh, Some(&bias), &mut out, Shape::new(m, n, k)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, int8_gemm, quantize, float_gemm);
criterion_main!(benches);
