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
use iommu_pt::{ArenaTableMem, FirstStage4, PageTable, Perms, PhysAddr};

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

/// `iommu-pt` map+unmap of a 4 KiB page and of a 2 MiB leaf (one pair per operation).
pub fn page_table_figures(iters: u64) -> Vec<Figure> {
    let mem = ArenaTableMem::new(64);
    let mut pt = PageTable::<FirstStage4, _>::new(&mem).expect("table");
    let mut run = |len: u64| {
        measure(iters, |i| {
            let iova = 0x4000_0000 + (i % 8) * len;
            pt.map(iova, PhysAddr(0x8000_0000), len, Perms::READ_WRITE)
                .expect("map");
            let gone = pt.unmap(iova, len).expect("unmap");
            pt.free_tables(black_box(gone).freed_tables);
        })
    };
    vec![
        Figure {
            name: "iommu-pt map+unmap 4 KiB".into(),
            ns_per_op: run(4096),
            floor: None,
        },
        Figure {
            name: "iommu-pt map+unmap 2 MiB leaf".into(),
            ns_per_op: run(2 << 20),
            floor: None,
        },
    ]
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
    figures.extend(page_table_figures(100_000 * scale));
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
    out
}
