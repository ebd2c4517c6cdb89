//! The fault path end to end, the translation fast paths, and memory.
//!
//! * `e2e/single_page_group`: a DMA write into an untouched page of an SVA-bound mm
//!   (`iommu_bench::fault_path`); one group per page. `..._inline_handler`: the SVA handler runs
//!   on the `prq/` thread instead of an IOPF worker.
//! * `e2e/batched_32_page_group`: the same with 32 untouched pages per DMA: one group of 32.
//! * `translate/iotlb_hit`: one translation that hits the IOTLB, inside an open DMA window.
//! * `translate/cold_walk`: translations that miss the IOTLB (65,536 distinct pages cycled
//!   through a 4,096-entry IOTLB), each a 4-level second-stage walk plus the IOTLB fill.
//! * `phys/…`, `dma/…`: 4 KiB frame writes, `PhysMem` (vm-memory; the name keeps "atomic words"
//!   from before, so runs compare) against a mutex per frame; a 64 KiB DMA
//!   write over resident pages.
//!
//! `cargo bench -p iommu-bench --bench fault_path -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iommu_bench::fault_path::{Handler, SvaFaultPath};
use iommu_bench::memory::{FrameWrites, ResidentDma};
use iommu_bench::translate::{cold_span, stride, Translate, BASE};
use iommu_pt::Access;

/// Pages faulted per chunk; unmapped (untimed) between chunks so memory stays bounded.
const CHUNK_PAGES: u64 = 8192;

fn e2e(c: &mut Criterion) {
    let mut g = c.benchmark_group("e2e");
    g.sample_size(10);
    for (handler, suffix) in [
        (Handler::Queue(1), ""),
        (Handler::Inline, "_inline_handler"),
    ] {
        let w = SvaFaultPath::new(handler, CHUNK_PAGES);
        for (name, pages) in [("single_page_group", 1u64), ("batched_32_page_group", 32)] {
            g.throughput(Throughput::Elements(pages));
            g.bench_function(format!("{name}{suffix}"), |b| {
                b.iter_custom(|iters| w.run(iters, pages))
            });
        }
    }
    g.finish();
}

fn translate(c: &mut Criterion) {
    let w = Translate::new();
    let mut g = c.benchmark_group("translate");
    g.throughput(Throughput::Elements(1));
    {
        let win = w.iommu.dma_window();
        g.bench_function("iotlb_hit", |b| {
            b.iter(|| win.translate_source(w.sid, None, black_box(BASE + 8), Access::READ))
        });
        g.bench_function("iotlb_hit_by_device", |b| {
            b.iter(|| win.translate(&w.dev, None, black_box(BASE + 8), Access::READ))
        });
    }
    {
        let win = w.iommu.dma_window();
        let mut i = 0u64;
        // The last-level tables of these pages are mostly in the paging-structure cache.
        g.bench_function("iotlb_miss", |b| {
            b.iter(|| {
                i += 1;
                win.translate_source(w.sid, None, black_box(stride(i)), Access::READ)
            })
        });
        g.bench_function("cold_walk", |b| {
            b.iter(|| {
                i += 1;
                win.translate_source(w.sid, None, black_box(cold_span(i)), Access::READ)
            })
        });
    }
    g.finish();
    let s = w.iommu.stats();
    eprintln!(
        "translate: {} translations, {} IOTLB hits, {} misses, {} walks from the paging-structure cache",
        s.translations, s.iotlb_hits, s.iotlb_misses, s.psc_hits
    );
}

fn memory(c: &mut Criterion) {
    let mut g = c.benchmark_group("phys");
    g.throughput(Throughput::Bytes(4096));
    let w = FrameWrites::new();
    let src = [0x77u8; 4096];
    g.bench_function("write_4k_atomic_words", |b| {
        b.iter(|| w.write_frame(black_box(&src)))
    });
    g.bench_function("write_4k_mutex_per_frame", |b| {
        b.iter(|| w.write_mutex_frame(black_box(1), black_box(&src)))
    });
    g.finish();

    let dma = ResidentDma::new();
    let data = vec![0x42u8; 16 * 4096];
    let mut g = c.benchmark_group("dma");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("write_64k_resident", |b| {
        b.iter(|| dma.write(black_box(&data)))
    });
    g.finish();
}

criterion_group!(benches, e2e, translate, memory);
criterion_main!(benches);
