//! Stress of the run-to-completion execution model (issue 10): a blocking DMA thread (which
//! reports the page request queue and runs IOPF work itself while it waits), a DMA engine with
//! many jobs in flight (the same, between polls), another sweeping its jobs in one DMA window
//! (`DmaEngine::poll_all`), and a thread polling jobs without helping
//! (which relies on the queue thread and the IOPF worker being woken) share one IOMMU, one
//! IOPF queue and one process. Every job completes, every group is answered exactly once, and
//! nobody sleeps on work nobody will do: a watchdog fails the test instead of hanging it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iommu_core::{iopf_queue_add_device, sva_bind_device, Group, IopfQueue};
use iommu_emu::{DmaKind, DmaPoll, EmuIommu, EmuIommuConfig, EndpointConfig, Mm, PhysMem, Prot};

const PAGES: u64 = 20_000;

#[test]
fn helpers_engines_and_plain_pollers_share_the_fault_path() {
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::Acquire) {
                if start.elapsed() > Duration::from_secs(120) {
                    eprintln!("run_to_completion: no progress for 120 s (a lost wake-up?)");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let phys = Arc::new(PhysMem::new(5 * PAGES as usize + 1024).unwrap());
    let iommu = EmuIommu::new("rtc", &phys, EmuIommuConfig::default()).unwrap();
    let queue = IopfQueue::new("rtc", 1).unwrap();
    let mm = Mm::new(&phys).unwrap();
    let cfg = EndpointConfig {
        pri_credits: 64,
        ..EndpointConfig::default()
    };
    let eps: Vec<_> = (0..4)
        .map(|i| {
            let group = Group::new(iommu.driver(), format!("g{i}"));
            let ep = iommu
                .add_endpoint(&group, &format!("dev{i}"), 1 << 20, cfg.clone())
                .unwrap();
            iopf_queue_add_device(&queue, ep.device()).unwrap();
            ep
        })
        .collect();
    let bonds: Vec<_> = eps
        .iter()
        .map(|ep| sva_bind_device(ep.device(), &mm.as_address_space()).unwrap())
        .collect();
    let pasid = Some(bonds[0].pasid());
    let regions: Vec<u64> = (0..4)
        .map(|_| mm.mmap(PAGES * 4096, Prot::READ_WRITE).unwrap())
        .collect();

    std::thread::scope(|s| {
        // Blocking: one group at a time, the waiting thread does the work.
        s.spawn(|| {
            for i in 0..PAGES {
                eps[0]
                    .dma_fill(pasid, regions[0] + i * 4096, 64, 1)
                    .unwrap();
            }
        });
        // A DMA engine with 16 jobs in flight.
        s.spawn(|| {
            let ep = &eps[1];
            let engine = ep.engine();
            let mut jobs: Vec<_> = Vec::new();
            let mut next = 0;
            let mut finished = 0;
            while finished < PAGES {
                while jobs.len() < 16 && next < PAGES {
                    let va = regions[1] + next * 4096;
                    jobs.push(ep.start_dma(pasid, va, 64, DmaKind::Fill(2)));
                    next += 1;
                }
                let seen = engine.responses();
                let mut moved = false;
                jobs.retain_mut(|job| match engine.poll(job) {
                    DmaPoll::Ready(r) => {
                        r.unwrap();
                        finished += 1;
                        moved = true;
                        false
                    }
                    DmaPoll::Pending => {
                        moved |= !job.is_waiting();
                        true
                    }
                });
                if !moved {
                    engine.wait(seen, Duration::from_millis(10));
                }
            }
        });
        // A DMA engine sweeping 16 jobs in one window at a time, restarted in place.
        s.spawn(|| {
            let ep = &eps[3];
            let engine = ep.engine();
            let mut jobs: Vec<_> = (0..16)
                .map(|_| {
                    let mut job = ep.start_dma(pasid, 0, 0, DmaKind::Fill(4));
                    let _ = ep.poll_dma(&mut job);
                    job
                })
                .collect();
            let mut busy = [false; 16];
            let (mut next, mut finished) = (0, 0);
            while finished < PAGES {
                for (job, busy) in jobs.iter_mut().zip(busy.iter_mut()) {
                    if !*busy && next < PAGES {
                        let va = regions[3] + next * 4096;
                        job.restart(pasid, va, 64, DmaKind::Fill(4)).unwrap();
                        (*busy, next) = (true, next + 1);
                    }
                }
                let seen = engine.responses();
                if engine.poll_all(&mut jobs) == 0 {
                    engine.wait(seen, Duration::from_millis(10));
                    continue;
                }
                for (job, busy) in jobs.iter_mut().zip(busy.iter_mut()) {
                    if let (true, Some(r)) = (*busy, job.outcome()) {
                        r.unwrap();
                        (*busy, finished) = (false, finished + 1);
                    }
                }
            }
        });
        // Plain polling: never helps, so the queue thread and the worker must be woken.
        s.spawn(|| {
            let ep = &eps[2];
            for i in 0..PAGES {
                let mut job = ep.start_dma(pasid, regions[2] + i * 4096, 64, DmaKind::Fill(3));
                loop {
                    match ep.poll_dma(&mut job) {
                        DmaPoll::Ready(r) => break r.unwrap(),
                        DmaPoll::Pending if job.is_waiting() => std::thread::yield_now(),
                        DmaPoll::Pending => {}
                    }
                }
            }
        });
    });
    done.store(true, Ordering::Release);
    watchdog.join().unwrap();

    for (k, ep) in eps.iter().enumerate() {
        let st = ep.stats();
        assert_eq!(st.dma_failed, 0, "dev{k}");
        assert_eq!(
            st.groups_answered, st.groups_sent,
            "dev{k}: every group answered once"
        );
        assert_eq!(
            st.stray_responses, 0,
            "dev{k}: no response without its group"
        );
        let mut b = [0u8; 64];
        mm.read(regions[k] + (PAGES - 1) * 4096, &mut b).unwrap();
        assert_eq!(b, [k as u8 + 1; 64], "dev{k}: the data landed");
    }
    assert_eq!(mm.stats().faults, 4 * PAGES);
}

/// A job of another function polled through an engine is stepped as a plain polled job: its
/// group wakes its own IOMMU's queue thread instead of waiting for a help that never comes.
#[test]
fn an_engine_polling_a_foreign_job_does_not_strand_its_requests() {
    let phys = Arc::new(PhysMem::new(1024).unwrap());
    let mm = Mm::new(&phys).unwrap();
    let mut eps = Vec::new();
    let mut keep = Vec::new();
    for i in 0..2 {
        let iommu = EmuIommu::new(&format!("iommu{i}"), &phys, EmuIommuConfig::default()).unwrap();
        let queue = IopfQueue::new(&format!("q{i}"), 1).unwrap();
        let group = Group::new(iommu.driver(), "g");
        let ep = iommu
            .add_endpoint(&group, "dev", 1 << 20, EndpointConfig::default())
            .unwrap();
        iopf_queue_add_device(&queue, ep.device()).unwrap();
        keep.push((iommu, queue));
        eps.push(ep);
    }
    let bond = sva_bind_device(eps[1].device(), &mm.as_address_space()).unwrap();
    let va = mm.mmap(4096, Prot::READ_WRITE).unwrap();
    let engine = eps[0].engine();
    let mut job = eps[1].start_dma(Some(bond.pasid()), va, 64, DmaKind::Fill(7));
    let start = Instant::now();
    loop {
        match engine.poll(&mut job) {
            DmaPoll::Ready(r) => break r.unwrap(),
            DmaPoll::Pending => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the foreign job's group was never reported"
                );
                std::thread::yield_now();
            }
        }
    }
    let mut b = [0u8; 64];
    mm.read(va, &mut b).unwrap();
    assert_eq!(b, [7; 64]);

    // The same through a sweep: the foreign job runs in windows of its own IOMMU, beside a job
    // of the engine's own function, whose page is already there.
    let va2 = mm.mmap(4096, Prot::READ_WRITE).unwrap();
    let bond0 = sva_bind_device(eps[0].device(), &mm.as_address_space()).unwrap();
    mm.write(va, &[1; 64]).unwrap();
    let mut jobs = [
        eps[1].start_dma(Some(bond.pasid()), va2, 64, DmaKind::Fill(8)),
        eps[0].start_dma(Some(bond0.pasid()), va, 64, DmaKind::Fill(9)),
    ];
    let mut ready = 0;
    while ready < jobs.len() {
        ready += engine.poll_all(&mut jobs);
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "a swept foreign job's group was never reported"
        );
        std::thread::yield_now();
    }
    assert!(jobs.iter().all(|j| j.outcome() == Some(Ok(()))));
    mm.read(va2, &mut b).unwrap();
    assert_eq!(b, [8; 64]);
    mm.read(va, &mut b).unwrap();
    assert_eq!(b, [9; 64]);
}

/// A sweep gives its window back after each pass's worth of pages: an invalidation waiting
/// for the hardware lock gets in many times during one long sweep, not once after it. And a
/// job behind another IOMMU runs with none of the engine's IOMMU's windows open.
#[test]
fn a_long_sweep_lets_invalidations_in_between_windows() {
    flushes_during_a_long_sweep(false);
    flushes_during_a_long_sweep(true);
}

/// Sweeps four 8 MiB jobs of resident pages with an engine of another function, behind the
/// same IOMMU (`foreign` false) or another one, while a thread flushes the engine's IOMMU.
fn flushes_during_a_long_sweep(foreign: bool) {
    use std::sync::atomic::AtomicU64;
    const JOB_PAGES: u64 = 8192;
    let phys = Arc::new(PhysMem::new(2 * JOB_PAGES as usize + 1024).unwrap());
    let mut keep: Vec<Arc<EmuIommu>> = Vec::new();
    let mut eps = Vec::new();
    for i in 0..2 {
        let iommu = if i == 1 && !foreign {
            keep[0].clone()
        } else {
            EmuIommu::new(&format!("sweep{i}"), &phys, EmuIommuConfig::default()).unwrap()
        };
        let group = Group::new(iommu.driver(), format!("g{i}"));
        let ep = iommu
            .add_endpoint(
                &group,
                &format!("dev{i}"),
                1 << 20,
                EndpointConfig::default(),
            )
            .unwrap();
        keep.push(iommu);
        eps.push(ep);
    }
    let queue = IopfQueue::new("sweep", 1).unwrap();
    iopf_queue_add_device(&queue, eps[1].device()).unwrap();
    let mm = Mm::new(&phys).unwrap();
    let bond = sva_bind_device(eps[1].device(), &mm.as_address_space()).unwrap();
    let va = mm.mmap(JOB_PAGES * 4096, Prot::READ_WRITE).unwrap();
    // Every page present first (a CPU touch), so the sweep below is pure DMA, no faults.
    for i in 0..JOB_PAGES {
        mm.write(va + i * 4096, &[1]).unwrap();
    }
    let (started, finished) = (AtomicBool::new(false), AtomicBool::new(false));
    let during = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !started.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            while !finished.load(Ordering::Acquire) {
                // The engine's IOMMU: the one its windows are of.
                keep[0].flush_pasid(eps[0].device(), None);
                if !finished.load(Ordering::Acquire) {
                    during.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let engine = eps[0].engine();
        // Four jobs of 8 MiB each, 4 KiB written per page: each pass is a window's worth.
        let mut jobs: Vec<_> = (0..4)
            .map(|_| eps[1].start_dma(Some(bond.pasid()), va, JOB_PAGES * 4096, DmaKind::Fill(2)))
            .collect();
        started.store(true, Ordering::Release);
        let mut ready = 0;
        while ready < jobs.len() {
            ready += engine.poll_all(&mut jobs);
        }
        finished.store(true, Ordering::Release);
        assert!(jobs.iter().all(|j| j.outcome() == Some(Ok(()))));
    });
    // 64 windows in the sweep (or none of the engine's IOMMU, for a foreign job): a writer
    // waiting at each boundary gets in at most of them (one window for the whole sweep would
    // let it in at most once, at the very end).
    let n = during.load(Ordering::Relaxed);
    assert!(
        n >= 8,
        "foreign {foreign}: only {n} invalidations got in during the sweep"
    );
}
