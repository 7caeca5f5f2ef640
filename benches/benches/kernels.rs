//! Host kernel benchmarks at BLIP-2's shapes: every int8 GEMM variant this CPU runs
//! (scalar baseline first, in the same run), activation quantization, and the f32/f16 GEMMs.
//! `cargo bench -p qformer-benches`; throughput is reported in multiply-accumulates.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qformer_benches::{random_f32, OwnedQ, BLIP2_SHAPES};
use qformer_core::kernels::gemm::Shape;

fn int8_gemm(c: &mut Criterion) {
    let variants = qformer_std::runtime::q8_variants();
    let mut g = c.benchmark_group("gemm_q8");
    g.sample_size(10).measurement_time(std::time::Duration::from_secs(3));
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

criterion_group!(benches, int8_gemm);
criterion_main!(benches);
