//! Map/unmap/walk costs of `iommu-pt`, side by side with the same work done by the `x86_64`
//! crate's `OffsetPageTable` over frames in a heap buffer (ANCHORS.md: the in-process peer; the
//! `pt-peer` crate holds it, and all the unsafe code it needs).
//!
//! Map and unmap are timed in batches with the opposite operation done untimed between
//! batches, so every timed call does exactly one map (or unmap) into tables that already exist:
//! the steady state of a DMA mapping cache, as in Linux's iommupt figures.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use iommu_pt::{walk, Access, ArenaTableMem, FirstStage4, PageTable, Perms, PhysAddr};
use pt_peer::X86Peer;

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
/// Start of the mapped window: a 1 GiB-aligned address in the lower half.
const BASE: u64 = 0x40_0000_0000;
/// Data frames are never touched; any 2 MiB-aligned address below 2^52 will do.
const DATA: u64 = 0x1_0000_0000;
/// Leaf tables populated for the cold walk: 64 MiB of tables, twice the L3 cache.
const WALK_TABLES: u64 = 16384;

/// Times `timed(state, i)` for `i` in batches of `batch`, running `untimed(state, i)` after each
/// batch to undo it.
fn batched<T>(
    state: &mut T,
    iters: u64,
    batch: u64,
    mut timed: impl FnMut(&mut T, u64),
    mut untimed: impl FnMut(&mut T, u64),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = batch.min(iters - done);
        let start = Instant::now();
        for i in 0..n {
            timed(state, i);
        }
        total += start.elapsed();
        for i in 0..n {
            untimed(state, i);
        }
        done += n;
    }
    total
}

/// A well-mixed index for address `i` of a random walk.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

type Pt<'m> = PageTable<FirstStage4, &'m ArenaTableMem>;

fn pt_map(pt: &mut Pt<'_>, va: u64, pa: u64, len: u64) {
    pt.map(va, PhysAddr(pa), len, Perms::READ_WRITE).unwrap();
}

fn pt_unmap(pt: &mut Pt<'_>, va: u64, len: u64) {
    let unmapped = black_box(pt.unmap(va, len).unwrap());
    pt.free_tables(unmapped.freed_tables);
}

/// Address of the `i`-th 4 KiB page, the `i`-th 256-page range, the `i`-th free 2 MiB slot.
fn page_va(i: u64) -> u64 {
    BASE + i * K4
}
fn range_va(i: u64) -> u64 {
    BASE + i * 256 * K4
}
fn slot_va(i: u64) -> u64 {
    BASE + (8 + i) * M2
}
/// One 4 KiB page in each of `WALK_TABLES` leaf tables, at a scattered index.
fn walk_va(i: u64) -> u64 {
    (1 << 39) + (i % WALK_TABLES) * M2 + (mix(i) % 512) * K4
}
/// The `i`-th address of a random walk over the populated pages.
fn random_walk_va(i: u64) -> u64 {
    walk_va(mix(i.wrapping_mul(0x9e37_79b9)) % WALK_TABLES)
}

fn iommu_pt(c: &mut Criterion) {
    let mem = ArenaTableMem::new(WALK_TABLES as usize + 1024);
    let mut pt = Pt::new(&mem).unwrap();
    // Tables that stay: 4 leaf tables under the first 8 MiB (4 KiB leaves because the physical
    // address is not 2 MiB aligned), emptied by partial unmaps, and the PD holding the 2 MiB
    // slots after them.
    pt_map(&mut pt, BASE, DATA + K4, 4 * M2);
    for slot in 0..4 {
        pt_unmap(&mut pt, BASE + slot * M2, M2 - K4);
        pt_unmap(&mut pt, BASE + slot * M2 + M2 - K4, K4);
    }
    assert_eq!((pt.mapped_bytes(), pt.table_count()), (0, 7));

    let mut g = c.benchmark_group("iommu_pt");
    g.bench_function("map_4k", |b| {
        b.iter_custom(|iters| {
            batched(
                &mut pt,
                iters,
                512,
                |pt, i| pt_map(pt, page_va(i), DATA + i * K4, K4),
                |pt, i| pt_unmap(pt, page_va(i), K4),
            )
        })
    });
    g.bench_function("unmap_4k", |b| {
        b.iter_custom(|iters| {
            (0..512).for_each(|i| pt_map(&mut pt, page_va(i), DATA + i * K4, K4));
            let d = batched(
                &mut pt,
                iters,
                512,
                |pt, i| pt_unmap(pt, page_va(i), K4),
                |pt, i| pt_map(pt, page_va(i), DATA + i * K4, K4),
            );
            (0..512).for_each(|i| pt_unmap(&mut pt, page_va(i), K4));
            d
        })
    });
    // 256 × 4 KiB ranges: eight of them, two per leaf table, one map (or unmap) call each.
    g.bench_function("map_256x4k_range", |b| {
        b.iter_custom(|iters| {
            batched(
                &mut pt,
                iters,
                8,
                |pt, i| pt_map(pt, range_va(i), DATA + K4, 256 * K4),
                |pt, i| pt_unmap(pt, range_va(i), 256 * K4),
            )
        })
    });
    g.bench_function("unmap_256x4k_range", |b| {
        b.iter_custom(|iters| {
            (0..8).for_each(|i| pt_map(&mut pt, range_va(i), DATA + K4, 256 * K4));
            let d = batched(
                &mut pt,
                iters,
                8,
                |pt, i| pt_unmap(pt, range_va(i), 256 * K4),
                |pt, i| pt_map(pt, range_va(i), DATA + K4, 256 * K4),
            );
            (0..8).for_each(|i| pt_unmap(&mut pt, range_va(i), 256 * K4));
            d
        })
    });
    g.bench_function("map_2m_leaf", |b| {
        b.iter_custom(|iters| {
            batched(
                &mut pt,
                iters,
                8,
                |pt, i| pt_map(pt, slot_va(i), DATA, M2),
                |pt, i| pt_unmap(pt, slot_va(i), M2),
            )
        })
    });
    g.bench_function("unmap_2m_leaf", |b| {
        b.iter_custom(|iters| {
            (0..8).for_each(|i| pt_map(&mut pt, slot_va(i), DATA, M2));
            let d = batched(
                &mut pt,
                iters,
                8,
                |pt, i| pt_unmap(pt, slot_va(i), M2),
                |pt, i| pt_map(pt, slot_va(i), DATA, M2),
            );
            (0..8).for_each(|i| pt_unmap(&mut pt, slot_va(i), M2));
            d
        })
    });
    assert_eq!(
        (pt.mapped_bytes(), pt.table_count()),
        (0, 7),
        "steady state: no table churn"
    );

    for i in 0..WALK_TABLES {
        pt_map(&mut pt, walk_va(i), DATA + i * K4, K4);
        pt.walk(walk_va(i), Access::READ).unwrap(); // accessed bits set: timed walks only read
    }
    let root = pt.root();
    g.bench_function("walk_4level_cold", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = i.wrapping_add(1);
            walk::<FirstStage4, _>(&mem, root, black_box(random_walk_va(i)), Access::READ).unwrap()
        })
    });
    g.bench_function("walk_4level_warm", |b| {
        b.iter(|| walk::<FirstStage4, _>(&mem, root, black_box(walk_va(7)), Access::READ).unwrap())
    });
    g.finish();
}

/// The `x86_64` crate's mapper over a heap buffer of frames (all of the comparison's unsafe code
/// is in `pt-peer`), with the calls used here unwrapped.
struct X86(X86Peer);

impl X86 {
    fn map(&mut self, va: u64, pa: u64) {
        self.0.map_4k(va, pa).unwrap();
    }

    fn unmap(&mut self, va: u64) {
        black_box(self.0.unmap_4k(va).unwrap());
    }

    fn map_2m(&mut self, va: u64, pa: u64) {
        self.0.map_2m(va, pa).unwrap();
    }

    fn unmap_2m(&mut self, va: u64) {
        black_box(self.0.unmap_2m(va).unwrap());
    }

    /// The crate has no range API: a range is one call per page, as its callers do.
    fn map_range(&mut self, va: u64, pa: u64, pages: u64) {
        (0..pages).for_each(|p| self.map(va + p * K4, pa + p * K4));
    }

    fn unmap_range(&mut self, va: u64, pages: u64) {
        (0..pages).for_each(|p| self.unmap(va + p * K4));
    }
}

fn x86_64_crate(c: &mut Criterion) {
    let mut x = X86(X86Peer::new(WALK_TABLES as usize + 1024).unwrap());
    // Same table shape as the iommu-pt side: 4 leaf tables and the PD of the 2 MiB slots.
    for slot in 0..4 {
        x.map(BASE + slot * M2, DATA);
        x.unmap(BASE + slot * M2);
    }

    let mut g = c.benchmark_group("x86_64_crate");
    g.bench_function("map_4k", |b| {
        b.iter_custom(|iters| {
            batched(
                &mut x,
                iters,
                512,
                |x, i| x.map(page_va(i), DATA + i * K4),
                |x, i| x.unmap(page_va(i)),
            )
        })
    });
    g.bench_function("unmap_4k", |b| {
        b.iter_custom(|iters| {
            (0..512).for_each(|i| x.map(page_va(i), DATA + i * K4));
            let d = batched(
                &mut x,
                iters,
                512,
                |x, i| x.unmap(page_va(i)),
                |x, i| x.map(page_va(i), DATA + i * K4),
            );
            (0..512).for_each(|i| x.unmap(page_va(i)));
            d
        })
    });
    g.bench_function("map_256x4k_range", |b| {
        b.iter_custom(|iters| {
            batched(
                &mut x,
                iters,
                8,
                |x, i| x.map_range(range_va(i), DATA + K4, 256),
                |x, i| x.unmap_range(range_va(i), 256),
            )
        })
    });
    g.bench_function("unmap_256x4k_range", |b| {
        b.iter_custom(|iters| {
            (0..8).for_each(|i| x.map_range(range_va(i), DATA + K4, 256));
            let d = batched(
                &mut x,
                iters,
                8,
                |x, i| x.unmap_range(range_va(i), 256),
                |x, i| x.map_range(range_va(i), DATA + K4, 256),
            );
            (0..8).for_each(|i| x.unmap_range(range_va(i), 256));
            d
        })
    });
    g.bench_function("map_2m_leaf", |b| {
        b.iter_custom(|iters| {
            batched(
                &mut x,
                iters,
                8,
                |x, i| x.map_2m(slot_va(i), DATA),
                |x, i| x.unmap_2m(slot_va(i)),
            )
        })
    });
    g.bench_function("unmap_2m_leaf", |b| {
        b.iter_custom(|iters| {
            (0..8).for_each(|i| x.map_2m(slot_va(i), DATA));
            let d = batched(
                &mut x,
                iters,
                8,
                |x, i| x.unmap_2m(slot_va(i)),
                |x, i| x.map_2m(slot_va(i), DATA),
            );
            (0..8).for_each(|i| x.unmap_2m(slot_va(i)));
            d
        })
    });

    for i in 0..WALK_TABLES {
        x.map(walk_va(i), DATA + i * K4);
    }
    g.bench_function("translate_4level_cold", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = i.wrapping_add(1);
            x.0.translate(black_box(random_walk_va(i))).unwrap()
        })
    });
    g.bench_function("translate_4level_warm", |b| {
        b.iter(|| x.0.translate(black_box(walk_va(7))).unwrap())
    });
    g.finish();
}

criterion_group!(benches, iommu_pt, x86_64_crate);
criterion_main!(benches);
