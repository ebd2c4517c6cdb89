//! `iommu-sim bench`: each figure beside its floor, measured in the same run, as a ratio.
//!
//! Every measurement is a timed loop after a warm-up, repeated [`RUNS`] times; the median run is
//! reported. Floors are the cheapest thing that does the same job: a bare cross-thread handoff
//! for anything that crosses threads, an uncontended `HashMap` lookup for the handle lookup.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use iommu_core::mock::MockDriver;
use iommu_core::{
    attach_device_pasid, attach_handle_get, detach_device_pasid, AttachHandle, Domain, Group,
};
use iommu_emu::{EmuIommu, EmuIommuConfig, EndpointConfig, PhysMem};
use iommu_pt::{Access, ArenaTableMem, FirstStage4, PageTable, Perms, PhysAddr, SecondStage};
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

/// Times `iters` calls of `op` per run; returns median ns per call.
fn measure(iters: u64, mut op: impl FnMut(u64)) -> f64 {
    for i in 0..iters / 10 {
        op(i);
    }
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            for i in 0..iters {
                op(i);
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

/// Round trip to another thread and back: spin briefly, then park (the floor of any
/// cross-thread fault path). Returns ns per round trip.
pub fn handoff_round_trip(iters: u64) -> f64 {
    let ping = Arc::new(AtomicU64::new(0));
    let pong = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let main = thread::current();
    let peer = {
        let (ping, pong, stop) = (ping.clone(), pong.clone(), stop.clone());
        thread::spawn(move || {
            let mut seen = 0;
            while !stop.load(Ordering::Acquire) {
                let v = wait_change(&ping, seen, &stop);
                seen = v;
                pong.store(v, Ordering::Release);
                main.unpark();
            }
        })
    };
    let peer_thread = peer.thread().clone();
    let mut n = 0u64;
    let ns = measure(iters, |_| {
        n += 1;
        ping.store(n, Ordering::Release);
        peer_thread.unpark();
        wait_change(&pong, n - 1, &AtomicBool::new(false));
    });
    stop.store(true, Ordering::Release);
    ping.store(u64::MAX, Ordering::Release);
    peer_thread.unpark();
    peer.join().expect("peer");
    ns
}

/// Spins for a while, then parks, until `v` differs from `old` (or `stop`).
fn wait_change(v: &AtomicU64, old: u64, stop: &AtomicBool) -> u64 {
    for spins in 0u32.. {
        let x = v.load(Ordering::Acquire);
        if x != old || stop.load(Ordering::Acquire) {
            return x;
        }
        if spins < 2_000 {
            std::hint::spin_loop();
        } else {
            thread::park_timeout(Duration::from_micros(50));
        }
    }
    unreachable!()
}

struct Owner(u32);

/// `attach_handle_get` over 1,024 live PASIDs, alone and under attach/detach churn, beside an
/// uncontended `HashMap` get + `Arc` clone.
pub fn lookup_figures(iters: u64) -> Vec<Figure> {
    const LIVE: u32 = 1024;
    let group = Group::new(MockDriver::new("bench"), "g");
    let dev = group.add_device("d", 1 << 20).expect("probe");
    let dom = Domain::alloc_paging(&dev).expect("domain");
    let mut map: HashMap<u32, Arc<AttachHandle<Owner>>> = HashMap::new();
    for p in 1..=LIVE {
        map.insert(
            p,
            attach_device_pasid(&dom, &dev, p, Owner(p)).expect("attach"),
        );
    }
    let pick = |i: u64| (i % LIVE as u64) as u32 + 1;
    let floor = measure(iters, |i| {
        black_box(map.get(&pick(i)).map(|h| h.0));
    });
    let alone = measure(iters, |i| {
        black_box(
            attach_handle_get::<Owner>(&group, pick(i))
                .map(|h| h.0)
                .ok(),
        );
    });
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (dev, dom, stop) = (dev.clone(), dom.clone(), stop.clone());
        thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let p = LIVE + 1 + n % 64;
                attach_device_pasid(&dom, &dev, p, Owner(p)).expect("churn attach");
                detach_device_pasid(&dom, &dev, p).expect("churn detach");
                n += 1;
            }
        })
    };
    let churned = measure(iters, |i| {
        black_box(
            attach_handle_get::<Owner>(&group, pick(i))
                .map(|h| h.0)
                .ok(),
        );
    });
    stop.store(true, Ordering::Relaxed);
    churn.join().expect("churn");
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

/// The emulated IOMMU's translations, inside an open DMA window: an IOTLB hit beside an
/// uncontended `HashMap` page → frame lookup, and an IOTLB miss (a 4-level second-stage walk
/// plus the IOTLB fill; 65,536 distinct pages cycled through the IOTLB with a stride that lands
/// each in another leaf table) beside `iommu-pt` walking a table of the same shape alone.
pub fn translation_figures(iters: u64) -> Vec<Figure> {
    const PAGES: u64 = 65_536;
    const BASE: u64 = 0x40_0000_0000;
    let phys = Arc::new(PhysMem::new(1024));
    let iommu = EmuIommu::new("bench-tr", &phys, EmuIommuConfig::default()).expect("iommu");
    let group = Group::new(iommu.driver(), "g0");
    let ep = iommu
        .add_endpoint(&group, "dev0", 1 << 20, EndpointConfig::default())
        .expect("endpoint");
    let domain = group.default_domain().expect("default domain");
    let frame = phys.alloc_frame().expect("frame");
    let mem = ArenaTableMem::new(512);
    let mut bare = PageTable::<SecondStage, _>::new(&mem).expect("table");
    let mut map: HashMap<u64, u64> = HashMap::new();
    for p in 0..PAGES {
        let iova = BASE + p * 4096;
        iommu
            .map(&domain, iova, frame.addr(), 4096, Perms::READ_WRITE)
            .expect("map");
        bare.map(iova, frame.addr(), 4096, Perms::READ_WRITE)
            .expect("map");
        map.insert(iova >> 12, frame.addr().0);
    }
    let dev = ep.device().clone();
    let sid = iommu.source_id(&dev).expect("source id");
    let win = iommu.dma_window();
    let stride = |i: u64| BASE + (i * 4099 % PAGES) * 4096;
    win.translate_source(sid, None, BASE, Access::READ)
        .expect("warm");
    let hit = measure(iters, |_| {
        black_box(win.translate_source(sid, None, black_box(BASE + 8), Access::READ)).expect("hit");
    });
    let map_floor = measure(iters, |_| {
        black_box(map.get(&(black_box(BASE + 8) >> 12)));
    });
    let miss = measure(iters, |i| {
        black_box(win.translate_source(sid, None, stride(i), Access::READ)).expect("walk");
    });
    let walk_floor = measure(iters, |i| {
        black_box(bare.walk(stride(i), Access::READ)).expect("walk");
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

/// Like [`measure`], but times only `timed(state, j)`, in batches of `batch` (`j` in
/// `0..batch`), and runs `untimed(state, j)` after each batch to undo it; returns median ns per
/// timed call. This times one map (or unmap) at a time into tables that already exist: the
/// steady state of a DMA mapping cache, as in `cargo bench -p iommu-pt --bench pt`.
fn measure_batched<T>(
    state: &mut T,
    iters: u64,
    batch: u64,
    mut timed: impl FnMut(&mut T, u64),
    mut untimed: impl FnMut(&mut T, u64),
) -> f64 {
    let mut run = |state: &mut T, n: u64| {
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < n {
            let k = batch.min(n - done);
            let t = Instant::now();
            for j in 0..k {
                timed(state, j);
            }
            total += t.elapsed();
            for j in 0..k {
                untimed(state, j);
            }
            done += k;
        }
        total.as_nanos() as f64 / n.max(1) as f64
    };
    run(state, iters / 10);
    let mut runs: Vec<f64> = (0..RUNS).map(|_| run(state, iters)).collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
/// Start of the mapped window (1 GiB aligned, so every address below is under one level-2
/// table): 4 KiB pages in its first 2 MiB, the 2 MiB range at 3 MiB, 2 MiB leaves from 16 MiB.
const PT_BASE: u64 = 0x40_0000_0000;
/// Data frames are never touched; any 2 MiB-aligned address below 2^52 will do.
const PT_DATA: u64 = 0x1_0000_0000;
/// 4 KiB pages per batch: one full leaf table.
const PAGE_BATCH: u64 = 512;
/// 2 MiB leaves per batch, in one level-2 table.
const LEAF_BATCH: u64 = 64;

fn page_va(j: u64) -> u64 {
    PT_BASE + j * K4
}
fn leaf_va(j: u64) -> u64 {
    PT_BASE + (8 + j) * M2
}
/// A 2 MiB range of 4 KiB pages starting half-way into a leaf table, so it spans two leaf
/// tables and covers neither whole: unmapping it leaves both linked (an aligned 2 MiB unmap makes
/// `iommu-pt` unlink and free the leaf table, which the `x86_64` crate never does; that would
/// time table churn on one side only).
const RANGE_VA: u64 = PT_BASE + M2 + M2 / 2;
/// Not 2 MiB aligned, so `iommu-pt` could not use a 2 MiB leaf even at an aligned IOVA.
const RANGE_PA: u64 = PT_DATA + K4;

/// One side of the page-table comparison: map/unmap a 4 KiB page or a 2 MiB leaf, and a range
/// of 4 KiB pages. Every call succeeds by construction of the workload.
trait PtSide {
    fn map(&mut self, va: u64, pa: u64, len: u64);
    fn unmap(&mut self, va: u64, len: u64);
    /// `pages` 4 KiB pages from `va` to `pa`; one call per page unless the side has a range API.
    fn map_range(&mut self, va: u64, pa: u64, pages: u64) {
        (0..pages).for_each(|p| self.map(va + p * K4, pa + p * K4, K4));
    }
    fn unmap_range(&mut self, va: u64, pages: u64) {
        (0..pages).for_each(|p| self.unmap(va + p * K4, K4));
    }
}

impl<M: iommu_pt::TableMem> PtSide for PageTable<FirstStage4, M> {
    #[inline]
    fn map(&mut self, va: u64, pa: u64, len: u64) {
        PageTable::map(self, va, PhysAddr(pa), len, Perms::READ_WRITE).expect("iommu-pt map");
    }
    #[inline]
    fn unmap(&mut self, va: u64, len: u64) {
        let gone = PageTable::unmap(self, va, len).expect("iommu-pt unmap");
        self.free_tables(black_box(gone).freed_tables);
    }
    /// One call: `iommu-pt` maps a range as such (4 KiB leaves here: `RANGE_PA` is not 2 MiB
    /// aligned).
    fn map_range(&mut self, va: u64, pa: u64, pages: u64) {
        PtSide::map(self, va, pa, pages * K4);
    }
    fn unmap_range(&mut self, va: u64, pages: u64) {
        PtSide::unmap(self, va, pages * K4);
    }
}

/// The `x86_64` crate's `OffsetPageTable` (via `pt-peer`). It has no range call: a range is one
/// `map_to` (or `unmap`) per page, as its callers do.
impl PtSide for X86Peer {
    #[inline]
    fn map(&mut self, va: u64, pa: u64, len: u64) {
        match len {
            K4 => self.map_4k(va, pa),
            _ => self.map_2m(va, pa),
        }
        .expect("x86_64 crate map_to");
    }
    #[inline]
    fn unmap(&mut self, va: u64, len: u64) {
        black_box(match len {
            K4 => self.unmap_4k(va),
            _ => self.unmap_2m(va),
        })
        .expect("x86_64 crate unmap");
    }
}

/// ns per op of one side: [map 4 KiB, unmap 4 KiB, map 2 MiB leaf, unmap 2 MiB leaf,
/// map+unmap of a 2 MiB range of 512 × 4 KiB].
///
/// The tables are built first, untimed, so every timed call works on existing tables on both
/// sides. Single map/unmap figures are timed in batches with the opposite operation run
/// untimed between batches ([`measure_batched`]); the range figure is one map+unmap pair per op
/// (a range is long enough that timing pairs costs nothing in resolution).
fn pt_side_ns<S: PtSide>(side: &mut S, iters: u64) -> [f64; 5] {
    side.map(page_va(0), PT_DATA, K4);
    side.unmap(page_va(0), K4);
    side.map(leaf_va(0), PT_DATA, M2);
    side.unmap(leaf_va(0), M2);
    side.map_range(RANGE_VA, RANGE_PA, 512);
    side.unmap_range(RANGE_VA, 512);

    let map = |s: &mut S, j: u64| s.map(page_va(j), PT_DATA + j * K4, K4);
    let unmap = |s: &mut S, j: u64| s.unmap(page_va(j), K4);
    let map_4k = measure_batched(side, iters, PAGE_BATCH, map, unmap);
    (0..PAGE_BATCH).for_each(|j| map(side, j));
    let unmap_4k = measure_batched(side, iters, PAGE_BATCH, unmap, map);
    (0..PAGE_BATCH).for_each(|j| unmap(side, j));

    let map = |s: &mut S, j: u64| s.map(leaf_va(j), PT_DATA, M2);
    let unmap = |s: &mut S, j: u64| s.unmap(leaf_va(j), M2);
    let map_2m = measure_batched(side, iters, LEAF_BATCH, map, unmap);
    (0..LEAF_BATCH).for_each(|j| map(side, j));
    let unmap_2m = measure_batched(side, iters, LEAF_BATCH, unmap, map);
    (0..LEAF_BATCH).for_each(|j| unmap(side, j));

    let range = measure(iters / 512, |_| {
        side.map_range(RANGE_VA, RANGE_PA, 512);
        side.unmap_range(RANGE_VA, 512);
    });
    [map_4k, unmap_4k, map_2m, unmap_2m, range]
}

/// `iommu-pt` map and unmap of a 4 KiB page, a 2 MiB leaf and a 2 MiB range of 4 KiB pages,
/// each beside the `x86_64` crate's mapper doing the same work (its floor), measured in this
/// run. `iters` single operations per run (a range counts as 512).
pub fn pt_vs_x86_64_figures(iters: u64) -> Vec<Figure> {
    let mem = ArenaTableMem::new(64);
    let mut pt = PageTable::<FirstStage4, _>::new(&mem).expect("table");
    let ours = pt_side_ns(&mut pt, iters);
    assert_eq!(
        (pt.mapped_bytes(), pt.table_count()),
        (0, 6),
        "root, L3, L2 and 3 leaf tables: no table churn while timed"
    );
    let mut peer = X86Peer::new(64).expect("peer");
    let theirs = pt_side_ns(&mut peer, iters);
    assert_eq!(peer.frames_used(), 6, "same table shape on the x86_64 side");
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
/// per group (page request → PRQ thread → core → SVA handler on `workers` IOPF workers →
/// fault-in → response → DMA retry). Returns ns per group.
pub fn fault_path_ns(groups: u64, workers: usize) -> f64 {
    use iommu_core::{iopf_queue_add_device, sva_bind_device, IopfQueue};
    use iommu_emu::{EmuIommu, EmuIommuConfig, EndpointConfig, Mm, PhysMem, Prot};

    const CHUNK: u64 = 4096; // pages mapped, faulted, then unmapped to recycle frames
    let phys = Arc::new(PhysMem::new(2 * CHUNK as usize + 256));
    let iommu = EmuIommu::new("bench", &phys, EmuIommuConfig::default()).expect("iommu");
    let queue = IopfQueue::new("bench", workers).expect("queue");
    let group = Group::new(iommu.driver(), "g");
    let ep = iommu
        .add_endpoint(&group, "dev0", 1 << 20, EndpointConfig::default())
        .expect("endpoint");
    iopf_queue_add_device(&queue, ep.device()).expect("iopf");
    let mm = Mm::new(&phys).expect("mm");
    let bond = sva_bind_device(ep.device(), &mm.as_address_space()).expect("bind");
    let pasid = Some(bond.pasid());
    let page = [0x5au8; 4096];
    let run = |n: u64| -> f64 {
        let mut total = Duration::ZERO;
        let mut left = n;
        while left > 0 {
            let k = left.min(CHUNK);
            let va = mm.mmap(k * 4096, Prot::READ_WRITE).expect("mmap");
            let t = Instant::now();
            for i in 0..k {
                ep.dma_write(pasid, va + i * 4096, &page).expect("dma");
            }
            total += t.elapsed();
            mm.munmap(va, k * 4096).expect("munmap");
            left -= k;
        }
        total.as_nanos() as f64 / n as f64
    };
    run(groups / 10);
    let mut runs: Vec<f64> = (0..RUNS).map(|_| run(groups)).collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

/// User-space delivery through the iommufd fault fd, in process: report `batch` single-fault
/// groups, read them as records, write Success for each. Returns ns per record.
pub fn fd_delivery_ns(records: u64, batch: usize) -> f64 {
    use iommu_core::{report_device_fault, PageRequest, IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE};
    use iommufd::uapi::{IOMMUFD_PAGE_RESP_SUCCESS, IOMMU_HWPT_FAULT_ID_VALID};
    use iommufd::{Ictx, FAULT_RECORD_SIZE, IOMMU_NO_PASID, RESPONSE_RECORD_SIZE};

    let group = Group::new(MockDriver::new("fd"), "g");
    let dev = group.add_device("d", 1 << 20).expect("probe");
    let ictx = Ictx::new();
    let dev_id = ictx.bind_device(dev.clone()).expect("bind");
    let ioas = ictx.ioas_alloc().expect("ioas");
    let (fault_id, fd) = ictx.fault_queue_alloc(0).expect("fault queue");
    let hwpt = ictx
        .hwpt_alloc(dev_id, ioas, IOMMU_HWPT_FAULT_ID_VALID, fault_id, 0, &[])
        .expect("hwpt");
    ictx.device_attach(dev_id, IOMMU_NO_PASID, hwpt)
        .expect("attach");
    let mut rbuf = vec![0u8; batch * FAULT_RECORD_SIZE];
    let mut wbuf = vec![0u8; batch * RESPONSE_RECORD_SIZE];
    let mut grpid = 0u32;
    let rounds = (records / batch as u64).max(1);
    let ns = measure(rounds, |_| {
        for _ in 0..batch {
            grpid = (grpid + 1) & 0x1ff;
            let req = PageRequest {
                flags: IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
                grpid,
                perm: 1,
                addr: 0x1000,
                ..Default::default()
            };
            report_device_fault(&dev, req).expect("report");
        }
        let n = fd.read(&mut rbuf).expect("read");
        assert_eq!(n, rbuf.len(), "every record read");
        for (rec, resp) in rbuf
            .chunks_exact(FAULT_RECORD_SIZE)
            .zip(wbuf.chunks_exact_mut(RESPONSE_RECORD_SIZE))
        {
            resp[..4].copy_from_slice(&rec[36..40]);
            resp[4..].copy_from_slice(&IOMMUFD_PAGE_RESP_SUCCESS.to_ne_bytes());
        }
        assert_eq!(fd.write(&wbuf).expect("write"), wbuf.len());
    });
    drop(ictx);
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
    let mut out = format!(
        "{:<58} {:>12} {:>14} {:>8}\n",
        "benchmark", "ns/op", "ops/s", "× floor"
    );
    for f in &figures {
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
