//! The SVA fault path allocates nothing per fault group in steady state (issue 10): a counting
//! global allocator watches a device fault pages in, one group at a time and with many groups
//! in flight (new jobs, jobs restarted in place, and jobs swept in one DMA window as `iommu-sim
//! bench` drives them), after
//! one warm-up round has sized every buffer the path reuses.
//!
//! One test in this binary on purpose: the allocator counts every thread of the process.

use std::alloc::System;
use std::sync::Arc;

use iommu_core::{iopf_queue_add_device, sva_bind_device, Group, IopfQueue};
use iommu_emu::{
    DmaKind, DmaPoll, EmuIommu, EmuIommuConfig, EndpointConfig, Mm, PhysMem, Prot, Zeroing,
};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const PAGES: u64 = 1024;

#[test]
fn sva_fault_groups_allocate_nothing_in_steady_state() {
    for zeroing in [Zeroing::OnAlloc, Zeroing::OnFree] {
        let phys = Arc::new(PhysMem::with_zeroing(4 * PAGES as usize, zeroing).unwrap());
        let iommu = EmuIommu::new("alloc", &phys, EmuIommuConfig::default()).unwrap();
        let queue = IopfQueue::new("alloc", 1).unwrap();
        let group = Group::new(iommu.driver(), "g");
        let cfg = EndpointConfig {
            pri_credits: 512,
            ..EndpointConfig::default()
        };
        let ep = iommu.add_endpoint(&group, "dev", 1 << 20, cfg).unwrap();
        iopf_queue_add_device(&queue, ep.device()).unwrap();
        let mm = Mm::new(&phys).unwrap();
        let bond = sva_bind_device(ep.device(), &mm.as_address_space()).unwrap();
        let pasid = Some(bond.pasid());

        // One group at a time through the blocking call.
        let one_at_a_time = |va: u64| {
            for i in 0..PAGES {
                ep.dma_fill(pasid, va + i * 4096, 64, 0x5a).unwrap();
            }
        };
        // Many in flight on one DMA engine; the job slots exist before counting starts.
        let jobs = std::cell::RefCell::new(Vec::with_capacity(64));
        let pipelined = |va: u64| {
            let mut jobs = jobs.borrow_mut();
            jobs.clear();
            jobs.extend(
                (0..64).map(|i| ep.start_dma(pasid, va + i * 4096, 4096, DmaKind::Fill(1))),
            );
            let engine = ep.engine();
            let mut next = 64;
            let mut done = 0;
            while done < PAGES {
                let seen = engine.responses();
                let mut moved = false;
                for job in jobs.iter_mut() {
                    match engine.poll(job) {
                        DmaPoll::Ready(r) => {
                            r.unwrap();
                            if job.is_empty() {
                                continue;
                            }
                            done += 1;
                            moved = true;
                            // A finished slot takes the next page, or an empty job at the end.
                            let len = if next < PAGES { 4096 } else { 0 };
                            *job = ep.start_dma(
                                pasid,
                                va + (next % PAGES) * 4096,
                                len,
                                DmaKind::Fill(1),
                            );
                            next += 1;
                        }
                        // A DMA engine's poll returns Pending only once the job waits.
                        DmaPoll::Pending => assert!(job.is_waiting()),
                    }
                }
                if !moved {
                    // Does the fault-path work first; sleeps only if there was none.
                    engine.wait(seen, std::time::Duration::from_millis(1));
                }
            }
        };
        // The same, each finished job restarted in place (`DmaJob::restart`), as a DMA engine
        // reuses its descriptors (and as `iommu-sim bench` drives its jobs).
        let slots = std::cell::RefCell::new(
            (0..64)
                .map(|_| {
                    // An empty job, polled once: finished, so it can be restarted.
                    let mut job = ep.start_dma(pasid, 0, 0, DmaKind::Fill(1));
                    let _ = ep.poll_dma(&mut job);
                    job
                })
                .collect::<Vec<_>>(),
        );
        let restarted = |va: u64| {
            let mut slots = slots.borrow_mut();
            let engine = ep.engine();
            let mut busy = [false; 64];
            let (mut next, mut done) = (0, 0);
            while done < PAGES {
                let seen = engine.responses();
                let mut moved = false;
                for (job, busy) in slots.iter_mut().zip(busy.iter_mut()) {
                    if !*busy && next < PAGES {
                        job.restart(pasid, va + next * 4096, 4096, DmaKind::Fill(1))
                            .expect("a finished job restarts");
                        (*busy, next) = (true, next + 1);
                    }
                    if !*busy {
                        continue;
                    }
                    match engine.poll(job) {
                        DmaPoll::Ready(r) => {
                            r.unwrap();
                            (*busy, done, moved) = (false, done + 1, true);
                        }
                        // A DMA engine's poll returns Pending only once the job waits.
                        DmaPoll::Pending => assert!(job.is_waiting()),
                    }
                }
                if !moved {
                    engine.wait(seen, std::time::Duration::from_millis(1));
                }
            }
        };
        // The same, every job swept in one DMA window (`DmaEngine::poll_all`), as `iommu-sim
        // bench` drives them.
        let swept = |va: u64| {
            let mut slots = slots.borrow_mut();
            let engine = ep.engine();
            let mut busy = [false; 64];
            let (mut next, mut done) = (0, 0);
            while done < PAGES {
                for (job, busy) in slots.iter_mut().zip(busy.iter_mut()) {
                    if !*busy && next < PAGES {
                        job.restart(pasid, va + next * 4096, 4096, DmaKind::Fill(1))
                            .expect("a finished job restarts");
                        (*busy, next) = (true, next + 1);
                    }
                }
                let seen = engine.responses();
                if engine.poll_all(&mut slots) == 0 {
                    engine.wait(seen, std::time::Duration::from_millis(1));
                    continue;
                }
                for (job, busy) in slots.iter_mut().zip(busy.iter_mut()) {
                    if let (true, Some(r)) = (*busy, job.outcome()) {
                        r.unwrap();
                        (*busy, done) = (false, done + 1);
                    }
                }
            }
        };
        for (name, run) in [
            ("one at a time", &one_at_a_time as &dyn Fn(u64)),
            ("64 in flight", &pipelined),
            ("64 in flight, jobs restarted in place", &restarted),
            ("64 in flight, swept in one window", &swept),
        ] {
            // Warm-up: sizes the page map, the queues' rings and the frame free list.
            let va = mm.mmap(PAGES * 4096, Prot::READ_WRITE).unwrap();
            run(va);
            mm.munmap(va, PAGES * 4096).unwrap();
            let va = mm.mmap(PAGES * 4096, Prot::READ_WRITE).unwrap();
            let faults = mm.stats().faults;
            let region = Region::new(GLOBAL);
            run(va);
            let change = region.change();
            assert_eq!(
                mm.stats().faults - faults,
                PAGES,
                "{name}: every page faulted"
            );
            assert_eq!(
                (change.allocations, change.reallocations),
                (0, 0),
                "{name}, {zeroing:?}: {PAGES} fault groups allocated ({change:?})"
            );
            mm.munmap(va, PAGES * 4096).unwrap();
        }
        drop(bond);
    }
}
