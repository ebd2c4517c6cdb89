//! The fault path end to end, and the translation fast paths.
//!
//! * `e2e/single_page_group`: a DMA write into an untouched page of an SVA-bound mm — page
//!   request → PRQ thread → `report_device_fault` → SVA handler on the IOPF queue →
//!   `handle_mm_fault` (zeroed 4 KiB frame) → page response → DMA retry. One group per page.
//! * `e2e/batched_32_page_group`: the same with 32 untouched pages per DMA: one group of 32.
//! * `translate/iotlb_hit`: one translation that hits the IOTLB, inside an open DMA window.
//! * `translate/cold_walk`: translations that miss the IOTLB (65,536 distinct pages cycled
//!   through a 4,096-entry IOTLB), each a 4-level second-stage walk plus the IOTLB fill.
//!
//! `cargo bench -p iommu-emu --bench fault_path -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iommu_core::{iopf_enable, iopf_queue_add_device, sva_bind_device, Group, IopfQueue};
use iommu_emu::{EmuIommu, EmuIommuConfig, EndpointConfig, Mm, PhysMem, Prot};
use iommu_pt::{Access, Perms};

/// Pages mapped per chunk of measured faults; unmapped (untimed) between chunks so memory stays
/// bounded however many iterations criterion asks for.
const CHUNK_PAGES: u64 = 8192;

fn e2e(c: &mut Criterion) {
    let mut g = c.benchmark_group("e2e");
    g.sample_size(10);
    // With an IOPF queue (SVA work on the `iopf_queue` worker, as Linux), and without one (the
    // core runs the SVA handler inline on the `prq/` thread: one thread hop less per group).
    for iopf_queue in [true, false] {
        let phys = Arc::new(PhysMem::new(3 * CHUNK_PAGES as usize));
        let iommu = EmuIommu::new("bench", &phys, EmuIommuConfig::default()).unwrap();
        let queue = IopfQueue::new("bench", 1).unwrap();
        let group = Group::new(iommu.driver(), "g0");
        let ep = iommu
            .add_endpoint(&group, "dev0", 1 << 20, EndpointConfig::default())
            .unwrap();
        if iopf_queue {
            iopf_queue_add_device(&queue, ep.device()).unwrap();
        } else {
            iopf_enable(ep.device()).unwrap();
        }
        let mm = Mm::new(&phys).unwrap();
        let bond = sva_bind_device(ep.device(), &mm.as_address_space()).unwrap();
        let pasid = Some(bond.pasid());
        let suffix = if iopf_queue { "" } else { "_inline_handler" };
        for (name, pages) in [("single_page_group", 1u64), ("batched_32_page_group", 32)] {
            g.throughput(Throughput::Elements(pages));
            let data = vec![0x5au8; (pages * 4096) as usize];
            g.bench_function(format!("{name}{suffix}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let jobs = left.min(CHUNK_PAGES / pages);
                        let va = mm.mmap(jobs * pages * 4096, Prot::READ_WRITE).unwrap();
                        let t = Instant::now();
                        for j in 0..jobs {
                            ep.dma_write(pasid, va + j * pages * 4096, &data).unwrap();
                        }
                        total += t.elapsed();
                        mm.munmap(va, jobs * pages * 4096).unwrap();
                        left -= jobs;
                    }
                    total
                });
            });
        }
        drop(bond);
    }
    g.finish();
}

fn translate(c: &mut Criterion) {
    let phys = Arc::new(PhysMem::new(1024));
    let iommu = EmuIommu::new("bench-tr", &phys, EmuIommuConfig::default()).unwrap();
    let group = Group::new(iommu.driver(), "g0");
    let ep = iommu
        .add_endpoint(&group, "dev0", 1 << 20, EndpointConfig::default())
        .unwrap();
    let domain = group.default_domain().unwrap();
    let frame = phys.alloc_frame().unwrap();
    const PAGES: u64 = 65536;
    const BASE: u64 = 0x40_0000_0000;
    for p in 0..PAGES {
        iommu
            .map(
                &domain,
                BASE + p * 4096,
                frame.addr(),
                4096,
                Perms::READ_WRITE,
            )
            .unwrap();
    }
    let dev = ep.device().clone();

    let mut g = c.benchmark_group("translate");
    g.throughput(Throughput::Elements(1));
    {
        let win = iommu.dma_window();
        win.translate(&dev, None, BASE, Access::READ).unwrap();
        let sid = iommu.source_id(&dev).unwrap();
        g.bench_function("iotlb_hit", |b| {
            b.iter(|| win.translate_source(sid, None, black_box(BASE + 8), Access::READ))
        });
        g.bench_function("iotlb_hit_by_device", |b| {
            b.iter(|| win.translate(&dev, None, black_box(BASE + 8), Access::READ))
        });
    }
    {
        let win = iommu.dma_window();
        let sid = iommu.source_id(&dev).unwrap();
        let mut p = 0u64;
        g.bench_function("cold_walk", |b| {
            b.iter(|| {
                // A large odd stride: consecutive translations land in different leaf tables.
                p = (p + 4099) % PAGES;
                win.translate_source(sid, None, black_box(BASE + p * 4096), Access::READ)
            })
        });
    }
    g.finish();
    let s = iommu.stats();
    eprintln!(
        "translate: {} translations, {} IOTLB hits, {} misses",
        s.translations, s.iotlb_hits, s.iotlb_misses
    );
}

/// The PhysMem design choice (atomic words) against the alternative (a lock per frame), and
/// the DMA engine's throughput over resident pages.
fn memory(c: &mut Criterion) {
    let mut g = c.benchmark_group("phys");
    g.throughput(Throughput::Bytes(4096));
    let phys = PhysMem::new(4);
    let f = phys.alloc_frame().unwrap();
    let src = vec![0x77u8; 4096];
    g.bench_function("write_4k_atomic_words", |b| {
        b.iter(|| phys.write(black_box(f.addr()), black_box(&src)).unwrap())
    });
    let locked: Vec<parking_lot::Mutex<Box<[u8; 4096]>>> = (0..4)
        .map(|_| parking_lot::Mutex::new(Box::new([0u8; 4096])))
        .collect();
    g.bench_function("write_4k_mutex_per_frame", |b| {
        b.iter(|| locked[black_box(1)].lock().copy_from_slice(black_box(&src)))
    });
    g.finish();

    let phys = Arc::new(PhysMem::new(1024));
    let iommu = EmuIommu::new("bench-dma", &phys, EmuIommuConfig::default()).unwrap();
    let group = Group::new(iommu.driver(), "g0");
    let ep = iommu
        .add_endpoint(&group, "dev0", 1 << 20, EndpointConfig::default())
        .unwrap();
    let domain = group.default_domain().unwrap();
    for p in 0..16u64 {
        let fr = phys.alloc_frame().unwrap();
        iommu
            .map(
                &domain,
                0x10_0000 + p * 4096,
                fr.addr(),
                4096,
                Perms::READ_WRITE,
            )
            .unwrap();
    }
    let data = vec![0x42u8; 16 * 4096];
    let mut g = c.benchmark_group("dma");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("write_64k_resident", |b| {
        b.iter(|| ep.dma_write(None, 0x10_0000, black_box(&data)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, e2e, translate, memory);
criterion_main!(benches);
