//! `iommu-sim bench`: each figure beside its floor, measured in the same run, as a ratio.
//!
//! The workloads are `iommu-bench`'s, the same ones `cargo bench -p iommu-bench` runs under
//! criterion; this module only times them. Every measurement is a timed loop after a warm-up,
//! repeated [`RUNS`] times; the median run is reported. Floors are the cheapest thing that does
//! the same job: a bare cross-thread handoff for anything that crosses threads, an uncontended
//! `HashMap` lookup for the handle lookup, a bare walk for an IOTLB miss, the `x86_64` crate's
//! mapper for `iommu-pt`.

use std::hint::black_box;
use std::time::Instant;

use iommu_bench::batched;
use iommu_bench::fault_fd::FdRoundTrip;
use iommu_bench::fault_path::{Handler, SvaFaultPath};
use iommu_bench::floor::Handoff;
use iommu_bench::lookup::{pick, Lookup};
use iommu_bench::pt::{self, prepare, spanning_range_round_trip, MapOps, PtSide};
use iommu_bench::translate::{stride, Translate, BASE};
use iommu_pt::{Access, ArenaTableMem, FirstStage4, PageTable};
use pt_peer::X86Peer;

/// Repetitions of each measurement; the median is reported.
pub const RUNS: usize = 5;

/// One line of the bench output.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// Nanoseconds per operation (median run).
    pub ns_per_op: f64,
    /// The floor's name and ns per operation, if the figure has one.
    pub floor: Option<(String, f64)>,
}

impl Figure {
    /// Operations per second.
    pub fn ops_per_s(&self) -> f64 {
        1e9 / self.ns_per_op
    }

    /// How many times the floor's cost this is.
    pub fn ratio(&self) -> Option<f64> {
        self.floor.as_ref().map(|(_, f)| self.ns_per_op / f)
    }
}

/// The median of [`RUNS`] runs of `run`, each returning ns per operation.
fn median_of_runs(mut run: impl FnMut() -> f64) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS).map(|_| run()).collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

/// Times `iters` calls of `op` per run, after a warm-up of a tenth as many; returns median ns
/// per call.
fn measure(iters: u64, mut op: impl FnMut(u64)) -> f64 {
    for i in 0..iters / 10 {
        op(i);
    }
    median_of_runs(|| {
        let t = Instant::now();
        for i in 0..iters {
            op(i);
        }
        t.elapsed().as_nanos() as f64 / iters.max(1) as f64
    })
}

/// Like [`measure`], but times one map (or unmap) at a time with [`batched`]: the opposite
/// operation runs untimed after each batch. Returns median ns per timed call.
fn measure_batched<S>(
    side: &mut S,
    iters: u64,
    timed: fn(&mut S, u64),
    untimed: fn(&mut S, u64),
    batch: u64,
) -> f64 {
    let mut run =
        |n: u64| batched(side, n, batch, timed, untimed).as_nanos() as f64 / n.max(1) as f64;
    run(iters / 10);
    median_of_runs(|| run(iters))
}

/// Round trip to another thread and back: spin briefly, then park (the floor of any
/// cross-thread fault path). Returns ns per round trip.
pub fn handoff_round_trip(iters: u64) -> f64 {
    let mut h = Handoff::new();
    measure(iters, |_| h.round_trip())
}

/// `attach_handle_get` over 1,024 live PASIDs, alone and under attach/detach churn, beside an
/// uncontended `HashMap` get + `Arc` clone.
pub fn lookup_figures(iters: u64) -> Vec<Figure> {
    let w = Lookup::new();
    let floor = measure(iters, |i| {
        black_box(w.floor(pick(i)).map(|h| h.0));
    });
    let alone = measure(iters, |i| {
        black_box(w.get(pick(i)));
    });
    let churn = w.churn();
    let churned = measure(iters, |i| {
        black_box(w.get(pick(i)));
    });
    drop(churn);
    let f = Some(("HashMap get+clone".to_string(), floor));
    vec![
        Figure {
            name: "attach_handle_get (1,024 live PASIDs)".into(),
            ns_per_op: alone,
            floor: f.clone(),
        },
        Figure {
            name: "attach_handle_get under attach/detach churn".into(),
            ns_per_op: churned,
            floor: f,
        },
    ]
}

/// The emulated IOMMU's translations inside an open DMA window (see [`iommu_bench::translate`]): an IOTLB
/// hit beside a `HashMap` page → frame lookup, an IOTLB miss beside `iommu-pt` walking a table of
/// the same shape alone.
pub fn translation_figures(iters: u64) -> Vec<Figure> {
    let w = Translate::new();
    let win = w.iommu.dma_window();
    let hit = measure(iters, |_| {
        black_box(win.translate_source(w.sid, None, black_box(BASE + 8), Access::READ))
            .expect("hit");
    });
    let map_floor = measure(iters, |_| {
        black_box(w.map.get(&(black_box(BASE + 8) >> 12)));
    });
    let miss = measure(iters, |i| {
        black_box(win.translate_source(w.sid, None, stride(i), Access::READ)).expect("walk");
    });
    let walk_floor = measure(iters, |i| {
        black_box(w.bare.walk(stride(i), Access::READ)).expect("walk");
    });
    drop(win);
    vec![
        Figure {
            name: "IOTLB-hit translation".into(),
            ns_per_op: hit,
            floor: Some(("HashMap page → frame get".into(), map_floor)),
        },
        Figure {
            name: "IOTLB-miss translation (4-level walk + fill)".into(),
            ns_per_op: miss,
            floor: Some(("iommu-pt walk alone, same table".into(), walk_floor)),
        },
    ]
}

/// Times mapping `ops` one place at a time, then unmapping; returns (map, unmap) ns per call.
fn map_unmap_ns<S: PtSide>(side: &mut S, iters: u64, ops: MapOps<S>) -> (f64, f64) {
    let map = measure_batched(side, iters, ops.map, ops.unmap, ops.batch);
    ops.fill(side);
    let unmap = measure_batched(side, iters, ops.unmap, ops.map, ops.batch);
    ops.clear(side);
    (map, unmap)
}

/// ns per op of one side: [map 4 KiB, unmap 4 KiB, map 2 MiB leaf, unmap 2 MiB leaf,
/// map+unmap of a 2 MiB range of 512 × 4 KiB].
///
/// The tables are built first ([`prepare`]), untimed, so every timed call works on existing
/// tables on both sides. Single map/unmap figures are timed in batches with the opposite
/// operation run untimed between batches; the range figure is one map+unmap pair per op (a range
/// is long enough that timing pairs costs nothing in resolution).
fn pt_side_ns<S: PtSide>(side: &mut S, iters: u64) -> [f64; 5] {
    prepare(side);
    let (map_4k, unmap_4k) = map_unmap_ns(side, iters, MapOps::page_4k());
    let (map_2m, unmap_2m) = map_unmap_ns(side, iters, MapOps::leaf_2m(pt::LEAF_BATCH));
    let range = measure(iters / 512, |_| spanning_range_round_trip(side));
    [map_4k, unmap_4k, map_2m, unmap_2m, range]
}

/// `iommu-pt` map and unmap of a 4 KiB page, a 2 MiB leaf and a 2 MiB range of 4 KiB pages,
/// each beside the `x86_64` crate's mapper doing the same work (its floor), measured in this
/// run. `iters` single operations per run (a range counts as 512).
pub fn pt_vs_x86_64_figures(iters: u64) -> Vec<Figure> {
    let mem = ArenaTableMem::new(64).expect("page-table arena");
    let mut pt = PageTable::<FirstStage4, _>::new(&mem).expect("table");
    let ours = pt_side_ns(&mut pt, iters);
    assert_eq!(
        (pt.mapped_bytes(), pt.table_count()),
        (0, 7),
        "root, L3, L2 and 4 leaf tables: no table churn while timed"
    );
    let mut peer = X86Peer::new(64).expect("peer");
    let theirs = pt_side_ns(&mut peer, iters);
    assert_eq!(peer.frames_used(), 7, "same table shape on the x86_64 side");
    let names = [
        ("map 4 KiB", "map_to 4 KiB"),
        ("unmap 4 KiB", "unmap 4 KiB"),
        ("map 2 MiB (one 2 MiB leaf)", "map_to 2 MiB page"),
        ("unmap 2 MiB (one 2 MiB leaf)", "unmap 2 MiB page"),
        (
            "map+unmap 2 MiB range of 512 × 4 KiB",
            "512 × map_to + 512 × unmap 4 KiB",
        ),
    ];
    names
        .iter()
        .zip(ours.iter().zip(theirs))
        .map(|(&(ours_name, floor_name), (&ns, floor))| Figure {
            name: format!("iommu-pt {ours_name}"),
            ns_per_op: ns,
            floor: Some((format!("x86_64 crate {floor_name}"), floor)),
        })
        .collect()
}

/// End-to-end SVA fault groups through the software IOMMU: a device writes one untouched page
/// per group on `workers` IOPF workers (see [`iommu_bench::fault_path`]). Returns ns per group.
pub fn fault_path_ns(groups: u64, workers: usize) -> f64 {
    let w = SvaFaultPath::new(Handler::Queue(workers), 4096);
    let run = |n: u64| w.run(n, 1).as_nanos() as f64 / n.max(1) as f64;
    run(groups / 10);
    median_of_runs(|| run(groups))
}

/// User-space delivery through the iommufd fault fd, in process: report `batch` single-fault
/// groups, read them as records, write Success for each. Returns ns per record.
pub fn fd_delivery_ns(records: u64, batch: usize) -> f64 {
    let mut w = FdRoundTrip::new(batch);
    let rounds = (records / batch as u64).max(1);
    let ns = measure(rounds, |_| w.round());
    w.finish();
    ns / batch as f64
}

/// Runs every benchmark and renders the table.
pub fn run(quick: bool) -> String {
    let scale = if quick { 1 } else { 10 };
    let handoff = handoff_round_trip(2_000 * scale);
    let mut figures = vec![Figure {
        name: "floor: cross-thread handoff round trip (spin, then park)".into(),
        ns_per_op: handoff,
        floor: None,
    }];
    let floor = Some(("cross-thread handoff round trip".to_string(), handoff));
    for workers in [1, 2] {
        figures.push(Figure {
            name: format!("end-to-end single-page fault group, {workers} IOPF worker(s)"),
            ns_per_op: fault_path_ns(2_000 * scale, workers),
            floor: floor.clone(),
        });
    }
    for batch in [1, 16, 256] {
        figures.push(Figure {
            name: format!("iommufd fault fd delivery, batches of {batch} (per record)"),
            ns_per_op: fd_delivery_ns(20_000 * scale, batch),
            floor: floor.clone(),
        });
    }
    figures.extend(lookup_figures(200_000 * scale));
    figures.extend(translation_figures(200_000 * scale));
    figures.extend(pt_vs_x86_64_figures(100_000 * scale));
    render(&figures)
}

/// The table: one line per figure, its floor under it.
fn render(figures: &[Figure]) -> String {
    let mut out = format!(
        "{:<58} {:>12} {:>14} {:>8}\n",
        "benchmark", "ns/op", "ops/s", "× floor"
    );
    for f in figures {
        let ratio = f.ratio().map_or("-".to_string(), |r| format!("{r:.2}"));
        out += &format!(
            "{:<58} {:>12.1} {:>14.0} {:>8}\n",
            f.name,
            f.ns_per_op,
            f.ops_per_s(),
            ratio
        );
        if let Some((name, ns)) = &f.floor {
            out += &format!("{:<58} {:>12.1}\n", format!("  floor: {name}"), ns);
        }
    }
    out += "× floor = ns/op ÷ floor ns/op: below 1 is faster than the floor (for iommu-pt \
            figures, than the x86_64 crate's mapper doing the same work).\n";
    out
}
