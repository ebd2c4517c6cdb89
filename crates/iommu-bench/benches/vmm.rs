//! rust-vmm device DMA through the emulated IOMMU (`iommu_bench::vmm`), each figure beside
//! the bare `GuestMemoryMmap` without an IOMMU:
//!
//! * `vmm_translate/iotlb_hit` vs `bare`: an 8-byte device read whose translation hits the
//!   vm-memory IOTLB.
//! * `vmm_translate/iotlb_hit_translate_only`: `AtsIommu::translate` alone (no slices, no
//!   copy): the IOMMU layer's share of a hit.
//! * `vmm_translate/miss` vs `bare`: the same read right after an (untimed) invalidation of the
//!   PASID: an ATS request through the device TLB and the IOMMU's walk, then the fill.
//! * `vmm_dma/read_64k`, `write_64k` vs `bare_…`: 64 KiB through `read_slice`/`write_slice`.
//!
//! `cargo bench -p iommu-bench --bench vmm -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use iommu_bench::vmm::VmmDma;

fn translate(c: &mut Criterion) {
    let w = VmmDma::new();
    let (_, requests_before_hits) = w.hits_and_requests();
    let mut g = c.benchmark_group("vmm_translate");
    g.throughput(Throughput::Elements(1));
    g.bench_function("iotlb_hit", |b| b.iter(|| black_box(w.translate_read())));
    g.bench_function("iotlb_hit_bare", |b| b.iter(|| black_box(w.bare_read())));
    g.bench_function("iotlb_hit_translate_only", |b| {
        b.iter(|| black_box(w.translate_only()))
    });
    let (_, before) = w.hits_and_requests();
    assert_eq!(
        before, requests_before_hits,
        "every iotlb_hit iteration was answered by the IOTLB, without an ATS request"
    );
    g.bench_function("miss", |b| {
        b.iter_batched(
            || w.invalidate(),
            |()| black_box(w.translate_read()),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("miss_bare", |b| {
        b.iter_batched(
            || (),
            |()| black_box(w.bare_read()),
            BatchSize::PerIteration,
        )
    });
    g.finish();
    let (_, after) = w.hits_and_requests();
    assert!(after > before, "the misses sent ATS requests");
}

fn dma(c: &mut Criterion) {
    let mut w = VmmDma::new();
    let mut g = c.benchmark_group("vmm_dma");
    g.throughput(Throughput::Bytes(VmmDma::BYTES as u64));
    g.bench_function("read_64k", |b| b.iter(|| w.dma_read()));
    g.bench_function("read_64k_bare", |b| b.iter(|| w.bare_dma_read()));
    g.bench_function("write_64k", |b| b.iter(|| w.dma_write()));
    g.bench_function("write_64k_bare", |b| b.iter(|| w.bare_dma_write()));
    g.finish();
}

criterion_group!(benches, translate, dma);
criterion_main!(benches);
