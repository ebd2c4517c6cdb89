//! End-to-end fault groups with many in flight: one thread drives `in_flight` polled DMA jobs
//! of one SVA-bound function as its DMA engine ([`iommu_emu::DmaEngine`]), each job writing
//! into one untouched page (one single-page page request group per job), and does the
//! fault-path work itself while its jobs wait: page request queue → `report_device_fault` →
//! SVA handler on the IOPF queue → `handle_mm_fault` → page response → retry. The queue thread
//! and the IOPF worker exist and are woken only when nobody runs the work where it is.
//!
//! Two kinds of page ([`Pages`]): *prepared* — frames are zeroed when freed, off the fault
//! path, and the job writes 64 bytes, so the figure is the routing of a group; *fresh* — the
//! fault zeroes its frame and the job writes the whole 4 KiB page, so the figure includes the
//! memory work a demand-zero fault must do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iommu_emu::{DmaJob, DmaKind, Endpoint, EndpointConfig, PhysMem, Prot, Zeroing};

use crate::fault_path::{Handler, SvaStack};

/// What each faulting page costs besides routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pages {
    /// Frames zeroed when freed (off the path); each job writes 64 bytes.
    Prepared,
    /// Frames zeroed by the fault; each job writes the whole page.
    Fresh,
}

impl Pages {
    /// Bytes each job writes.
    pub fn bytes(self) -> u64 {
        match self {
            Pages::Prepared => 64,
            Pages::Fresh => 4096,
        }
    }
}

/// Enough PRI credits for every job in flight.
fn engine_config() -> EndpointConfig {
    EndpointConfig {
        pri_credits: 512,
        ..EndpointConfig::default()
    }
}

/// A function bound by SVA to a process, and a chunk of untouched memory per run.
pub struct E2e {
    stack: SvaStack,
    pages: Pages,
    chunk: u64,
}

impl E2e {
    /// Builds the stack; each chunk of `chunk` pages is mapped before and unmapped after it
    /// is faulted in, untimed.
    pub fn new(pages: Pages, chunk: u64) -> Self {
        Self::with_runners(pages, chunk, 1)
    }

    /// [`E2e::new`] with memory for `runners` threads running it at once, each faulting in a
    /// chunk of its own (plus one chunk and the page tables to spare).
    pub fn with_runners(pages: Pages, chunk: u64, runners: usize) -> Self {
        let zeroing = match pages {
            Pages::Prepared => Zeroing::OnFree,
            Pages::Fresh => Zeroing::OnAlloc,
        };
        let phys = Arc::new(
            PhysMem::with_zeroing((runners.max(1) + 1) * chunk as usize + 512, zeroing)
                .expect("physical memory"),
        );
        // Host first-touch faults are not the emulator's cost.
        phys.prefault().expect("host memory for the emulated RAM");
        let stack = SvaStack::new(&phys, Handler::Queue(1), engine_config());
        Self {
            stack,
            pages,
            chunk,
        }
    }

    /// The IOMMU's counters (how many walks started from the paging-structure cache, say).
    pub fn iommu_stats(&self) -> iommu_emu::IommuStats {
        self.stack.iommu.stats()
    }

    /// Another function on the same IOMMU, IOPF queue and physical memory, bound to its own
    /// process, with chunks of the same size: two of them driven from two threads measure how
    /// the fault path scales across CPUs behind one IOMMU. The memory was sized for one
    /// stack's chunks, so at most one sibling fits (`ENOMEM` panics the workload otherwise).
    pub fn sibling(&self, name: &str) -> Self {
        Self {
            stack: self.stack.sibling(name, engine_config()),
            pages: self.pages,
            chunk: self.chunk,
        }
    }

    /// Another function bound to its own process, behind an IOMMU unit and IOPF queue of its
    /// own but over the same physical memory: a machine with two IOMMU units (a server has one
    /// per PCIe root complex, and Linux one IOPF queue per unit). Memory as for
    /// [`E2e::sibling`]: at most one such second function fits.
    pub fn other_unit(&self) -> Self {
        let phys = self.stack.iommu.phys().clone();
        Self {
            stack: SvaStack::new(&phys, Handler::Queue(1), engine_config()),
            pages: self.pages,
            chunk: self.chunk,
        }
    }

    /// [`E2e::run`] on every one of `devices` at once, each from a thread of its own, with up
    /// to `in_flight` jobs outstanding per device, all devices faulting each chunk together:
    /// every thread maps its chunk (untimed), then all start at once and the chunk's time runs
    /// until the last of them has finished it; unmapping (and zeroing freed frames) is
    /// untimed, as in [`E2e::run`]. Returns the sum of those times: the wall-clock time the
    /// devices spent faulting side by side. Every device must have the same chunk size (they
    /// do when made by [`E2e::sibling`] or [`E2e::other_unit`]); panics otherwise.
    pub fn run_at_once(devices: &[&E2e], groups: u64, in_flight: usize) -> Duration {
        assert!(
            devices.iter().all(|d| d.chunk == devices[0].chunk),
            "run_at_once: devices with different chunk sizes cannot fault their chunks together"
        );
        let together = SpinBarrier::new(devices.len());
        std::thread::scope(|s| {
            let threads: Vec<_> = devices
                .iter()
                .map(|w| {
                    let together = &together;
                    s.spawn(move || w.run_chunks(groups, in_flight, None, Some(together)))
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("a device thread"))
                .max()
                .unwrap_or_default()
        })
    }

    /// Runs `groups` single-page fault groups with up to `in_flight` jobs outstanding and
    /// returns the time spent in them. With `latency`, each job's time from start to
    /// completion (ns) is passed to it.
    pub fn run(
        &self,
        groups: u64,
        in_flight: usize,
        latency: Option<&mut dyn FnMut(u64)>,
    ) -> Duration {
        self.run_chunks(groups, in_flight, latency, None)
    }

    /// [`E2e::run`]; with `together`, each chunk's faulting starts when every thread sharing
    /// the barrier has mapped its chunk and its time ends when every one has finished.
    fn run_chunks(
        &self,
        groups: u64,
        in_flight: usize,
        mut latency: Option<&mut dyn FnMut(u64)>,
        together: Option<&SpinBarrier>,
    ) -> Duration {
        let in_flight = in_flight.clamp(1, 512);
        let SvaStack { bond, mm, ep, .. } = &self.stack;
        let pasid = Some(bond.pasid());
        let bytes = self.pages.bytes();
        let mut total = Duration::ZERO;
        let mut left = groups;
        // One job per slot, made before timing and restarted in place for each transfer, as a
        // DMA engine reuses its descriptors; beside each, its start time and whether it is busy.
        let mut jobs: Vec<DmaJob> = (0..in_flight)
            .map(|_| {
                let mut job = ep.start_dma(pasid, 0, 0, DmaKind::Fill(0));
                let _ = ep.poll_dma(&mut job);
                job
            })
            .collect();
        let mut slots: Vec<(Instant, bool)> = vec![(Instant::now(), false); in_flight];
        while left > 0 {
            let n = left.min(self.chunk);
            let len = n * 4096;
            let va = mm.mmap(len, Prot::READ_WRITE).expect("mmap");
            if let Some(b) = together {
                b.wait();
            }
            let start = Instant::now();
            let chunk = Chunk {
                pasid,
                va,
                pages: n,
                bytes,
            };
            drive(ep, chunk, &mut jobs, &mut slots, &mut latency);
            if let Some(b) = together {
                b.wait();
            }
            total += start.elapsed();
            mm.munmap(va, len).expect("munmap");
            left -= n;
        }
        total
    }
}

/// A barrier for threads that each have a CPU: they spin (yielding after a while, in case one
/// of them lost its CPU) instead of sleeping, so passing it costs well under a microsecond and
/// does not blur what is timed between two of them.
pub(crate) struct SpinBarrier {
    threads: usize,
    arrived: AtomicUsize,
    /// Bumped each time the last thread arrives: the others wait for it to move.
    round: AtomicUsize,
}

impl SpinBarrier {
    pub(crate) fn new(threads: usize) -> Self {
        SpinBarrier {
            threads: threads.max(1),
            arrived: AtomicUsize::new(0),
            round: AtomicUsize::new(0),
        }
    }

    /// Waits until all `threads` have called it in this round.
    pub(crate) fn wait(&self) {
        let round = self.round.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            // Reset before releasing: a released thread may arrive for the next round at once.
            self.arrived.store(0, Ordering::Relaxed);
            self.round.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.round.load(Ordering::Acquire) == round {
            spins += 1;
            if spins < 200 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// One chunk of [`E2e::run`]: `pages` untouched pages at `va`, `bytes` written into each.
struct Chunk {
    pasid: Option<u32>,
    va: u64,
    pages: u64,
    bytes: u64,
}

/// The timed part of [`E2e::run`] for one chunk: the `jobs` restarted (those not busy, by
/// `slots`) and swept by the engine until every page is written. Never inlined, so an
/// instruction counter (`scripts/fault-path-instructions`) finds the fault path's whole cost
/// under one function whatever the build inlines.
#[inline(never)]
fn drive(
    ep: &Endpoint,
    c: Chunk,
    jobs: &mut [DmaJob],
    slots: &mut [(Instant, bool)],
    latency: &mut Option<&mut dyn FnMut(u64)>,
) {
    let engine = ep.engine();
    let timed = latency.is_some();
    let mut next = 0u64;
    let mut done = 0u64;
    // Restarts a finished job on the next page, if there is one; returns whether it did.
    let mut start = |job: &mut DmaJob, t: &mut Instant| {
        if next >= c.pages {
            return false;
        }
        let kind = DmaKind::Fill(0x5a);
        job.restart(c.pasid, c.va + next * 4096, c.bytes, kind)
            .expect("a finished job restarts");
        if timed {
            *t = Instant::now();
        }
        next += 1;
        true
    };
    for (job, (t, busy)) in jobs.iter_mut().zip(slots.iter_mut()) {
        *busy = start(job, t);
    }
    while done < c.pages {
        // Before the sweep: a response that lands during it is news to `wait`.
        let seen = engine.responses();
        if engine.poll_all(jobs) == 0 {
            // Does the fault-path work first; sleeps only if there was none.
            engine.wait(seen, Duration::from_millis(1));
            continue;
        }
        for (job, (t, busy)) in jobs.iter_mut().zip(slots.iter_mut()) {
            if let (true, Some(r)) = (*busy, job.outcome()) {
                r.expect("dma");
                if let Some(l) = latency.as_mut() {
                    l(t.elapsed().as_nanos() as u64);
                }
                done += 1;
                *busy = start(job, t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SpinBarrier;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn nobody_passes_the_barrier_before_everybody_reached_it() {
        const THREADS: usize = 3;
        const ROUNDS: usize = 2_000;
        let barrier = SpinBarrier::new(THREADS);
        // Each thread bumps its round count, waits, and then checks every other thread has
        // reached the same round; it waits again before the next bump.
        let reached: Vec<AtomicUsize> = (0..THREADS).map(|_| AtomicUsize::new(0)).collect();
        std::thread::scope(|s| {
            for me in 0..THREADS {
                let (barrier, reached) = (&barrier, &reached);
                s.spawn(move || {
                    for round in 1..=ROUNDS {
                        reached[me].store(round, Ordering::Relaxed);
                        barrier.wait();
                        for (other, r) in reached.iter().enumerate() {
                            let r = r.load(Ordering::Relaxed);
                            assert!(r >= round, "thread {other} at {r} when {me} passed {round}");
                        }
                        barrier.wait();
                    }
                });
            }
        });
    }
}
