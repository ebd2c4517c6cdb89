//! Map/unmap/walk costs of `iommu-pt`, side by side with the same work done by the `x86_64`
//! crate's `OffsetPageTable` over frames in a heap buffer (ANCHORS.md: the in-process peer),
//! both through `iommu_bench::pt::PtSide`.
//!
//! Map and unmap are timed in batches with the opposite operation done untimed between
//! batches, so every timed call does exactly one map (or unmap) into tables that already exist:
//! the steady state of a DMA mapping cache, as in Linux's iommupt figures.
//!
//! Run: `cargo bench -p iommu-bench --bench pt`.

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use iommu_bench::batched;
use iommu_bench::pt::{
    populate_walk, prepare, random_walk_va, walk_va, MapOps, PtSide, WALK_TABLES,
};
use iommu_pt::{ArenaTableMem, FirstStage4, PageTable};
use pt_peer::X86Peer;

/// Times mapping (named `map_{name}`) and unmapping (`unmap_{name}`) one place of `ops` at a time.
fn map_unmap<S: PtSide>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    side: &mut S,
    name: &str,
    ops: MapOps<S>,
) {
    g.bench_function(format!("map_{name}"), |b| {
        b.iter_custom(|iters| batched(side, iters, ops.batch, ops.map, ops.unmap))
    });
    g.bench_function(format!("unmap_{name}"), |b| {
        b.iter_custom(|iters| {
            ops.fill(side);
            let d = batched(side, iters, ops.batch, ops.unmap, ops.map);
            ops.clear(side);
            d
        })
    });
}

/// Every figure of one side; the walks are named `{walk}_4level_cold` and `..._warm`.
/// `steady` checks the side's tables between the map/unmap figures and the walks.
fn side_figures<S: PtSide>(
    c: &mut Criterion,
    group: &str,
    walk: &str,
    side: &mut S,
    steady: impl FnOnce(&S),
) {
    let mut g = c.benchmark_group(group);
    map_unmap(&mut g, side, "4k", MapOps::page_4k());
    // 256 × 4 KiB ranges: eight of them, two per leaf table.
    map_unmap(&mut g, side, "256x4k_range", MapOps::range_256x4k());
    map_unmap(&mut g, side, "2m_leaf", MapOps::leaf_2m(8));
    steady(side);
    populate_walk(side);
    g.bench_function(format!("{walk}_4level_cold"), |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = i.wrapping_add(1);
            side.translate(black_box(random_walk_va(i)))
        })
    });
    g.bench_function(format!("{walk}_4level_warm"), |b| {
        b.iter(|| side.translate(black_box(walk_va(7))))
    });
    g.finish();
}

fn iommu_pt(c: &mut Criterion) {
    let mem = ArenaTableMem::new(WALK_TABLES as usize + 1024).expect("page-table arena");
    let mut pt = PageTable::<FirstStage4, _>::new(&mem).expect("table");
    prepare(&mut pt);
    // Root, L3, L2 and the 4 leaf tables of the first 8 MiB.
    assert_eq!((pt.mapped_bytes(), pt.table_count()), (0, 7));
    side_figures(c, "iommu_pt", "walk", &mut pt, |pt| {
        assert_eq!(
            (pt.mapped_bytes(), pt.table_count()),
            (0, 7),
            "steady state: no table churn"
        )
    });
}

fn x86_64_crate(c: &mut Criterion) {
    let mut x = X86Peer::new(WALK_TABLES as usize + 1024).expect("peer");
    prepare(&mut x);
    side_figures(c, "x86_64_crate", "translate", &mut x, |x| {
        assert_eq!(x.frames_used(), 7, "same table shape as the iommu-pt side")
    });
}

criterion_group!(benches, iommu_pt, x86_64_crate);
criterion_main!(benches);
