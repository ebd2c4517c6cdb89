//! `iommu-sim bench`: each figure beside its floor, measured in the same run, as a ratio.
//!
//! The fault path first ([`fault`]): its floors (a minimal routing pipeline with no iommu-rs
//! code, zeroing plus writing a 4 KiB frame, a cross-thread round trip; minimum of runs),
//! end-to-end single-page groups with 1 to 256 in flight with pages prepared off the path and
//! with fresh zeroed pages, the latency of one fault (p50/p99/p99.9), and the iommufd fault fd;
//! with `--load` all of them again with every other CPU busy, and with `--json FILE` under
//! stable names. Then the building blocks: the workloads are `iommu-bench`'s, the same ones
//! `cargo bench -p iommu-bench` runs under criterion; every measurement is a timed loop after a
//! warm-up, repeated [`RUNS`] times, the median reported. Their floors are the cheapest thing
//! that does the same job: an uncontended `HashMap` lookup for the handle lookup, a bare walk
//! for an IOTLB miss, the `x86_64` crate's mapper for `iommu-pt`.

pub mod fault;

use std::hint::black_box;
use std::time::Instant;

use iommu_bench::batched;
use iommu_bench::lookup::{pick, Lookup};
use iommu_bench::pt::{self, prepare, spanning_range_round_trip, MapOps, PtSide};
use iommu_bench::translate::{cold_span, stride, Translate, BASE};
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
    median((0..RUNS).map(|_| run()).collect())
}

/// The median of `v` (not empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    let cold = measure(iters, |i| {
        black_box(win.translate_source(w.sid, None, cold_span(i), Access::READ)).expect("walk");
    });
    let cold_floor = measure(iters, |i| {
        black_box(w.bare.walk(cold_span(i), Access::READ)).expect("walk");
    });
    drop(win);
    vec![
        Figure {
            name: "IOTLB-hit translation".into(),
            ns_per_op: hit,
            floor: Some(("HashMap page → frame get".into(), map_floor)),
        },
        Figure {
            name: "IOTLB-miss translation, last-level table cached (1 entry + fill)".into(),
            ns_per_op: miss,
            floor: Some(("iommu-pt 4-level walk alone, same table".into(), walk_floor)),
        },
        Figure {
            name: "IOTLB-miss translation, cold (4-level walk + fill)".into(),
            ns_per_op: cold,
            floor: Some(("iommu-pt 4-level walk alone, same table".into(), cold_floor)),
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

/// What `iommu-sim bench` was asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Fewer iterations (a smoke run; figures are noisier).
    pub quick: bool,
    /// Measure the fault-path figures a second time with every other CPU kept busy.
    pub load: bool,
    /// Write the fault-path figures as JSON here.
    pub json: Option<std::path::PathBuf>,
}

/// Runs every benchmark and renders the table; writes the JSON file if asked.
pub fn run(opts: &Options) -> Result<String, String> {
    let scale = if opts.quick { 1 } else { 10 };
    // Refuse an unwritable path before minutes of measuring, not after.
    let mut json_file = match &opts.json {
        Some(path) => Some(
            std::fs::File::create(path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let idle = fault::cpu_idle_percent();
    let mut out = format!(
        "machine: {cpus} CPUs; CPUs idle in the second before timing: {}\n\n",
        idle.map_or("unknown".into(), |p| format!("{p:.1} %"))
    );
    let quiet = fault::measure(scale);
    let loaded = if opts.load {
        let _load = iommu_bench::load::Load::start()?;
        Some(fault::measure(scale))
    } else {
        None
    };
    out += &render_fault(&quiet, loaded.as_ref());
    if let (Some(file), Some(path)) = (json_file.as_mut(), &opts.json) {
        use std::io::Write;
        let mut v = loaded.as_ref().unwrap_or(&quiet).json();
        v["load"] = serde_json::json!(opts.load);
        if loaded.is_some() {
            v["quiet"] = quiet.json();
        }
        v["machine"] = serde_json::json!({ "cpus": cpus, "idle_percent_before": idle });
        let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
        writeln!(file, "{text}").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let mut figures = lookup_figures(200_000 * scale);
    figures.extend(translation_figures(200_000 * scale));
    figures.extend(pt_vs_x86_64_figures(100_000 * scale));
    out += "\n";
    out += &render(&figures);
    Ok(out)
}

/// The fault-path table: each figure as ns, per second and × its floor, and under load
/// beside it when measured.
fn render_fault(quiet: &fault::FaultFigures, loaded: Option<&fault::FaultFigures>) -> String {
    let mut out = format!(
        "{:<58} {:>10} {:>12} {:>8}",
        "fault path", "ns/op", "ops/s", "× floor"
    );
    if loaded.is_some() {
        out += &format!(" {:>12} {:>8}", "loaded ns", "× quiet");
    }
    out += "\n";
    let loaded_figures = loaded.map(fault::FaultFigures::figures);
    let mut last_floor = None;
    for (i, f) in quiet.figures().iter().enumerate() {
        let ratio = f.ratio().map_or("-".into(), |r| format!("{r:.2}"));
        out += &format!(
            "{:<58} {:>10.1} {:>12.0} {ratio:>8}",
            f.name,
            f.ns_per_op,
            f.ops_per_s()
        );
        if let Some(l) = &loaded_figures {
            let lns = l[i].ns_per_op;
            out += &format!(" {lns:>12.1} {:>8.2}", lns / f.ns_per_op);
        }
        out += "\n";
        // Each floor once, under the first figure compared against it.
        if let Some((name, ns)) = &f.floor {
            if last_floor != Some(name) {
                out += &format!("{:<58} {ns:>10.1}\n", format!("  floor: {name}"));
            }
        }
        last_floor = f.floor.as_ref().map(|(n, _)| n);
    }
    out += "× floor: ns/op ÷ the floor's ns/op measured in this run (prepared pages against the \
            routing floor at the same groups in flight, fresh pages against the memory floor; \
            two devices on two IOMMU units: ns per group of both together against the one-thread \
            routing floor at 64 in flight). Floors: minimum of runs; figures: median.\n";
    // The median hides how much the machine moved under it: a loaded figure below its quiet
    // one is that noise, not the load helping.
    out += &format!(
        "end-to-end runs behind each median, fastest-slowest ns per group by groups in flight:\n{}",
        quiet.spread_lines()
    );
    if let Some(l) = loaded {
        out += &format!("  under --load:\n{}", l.spread_lines());
    }
    out
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
