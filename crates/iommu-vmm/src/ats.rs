//! [`AtsIommu`]: vm-memory's [`Iommu`] for one (endpoint, PASID) address space, answered by
//! the endpoint's ATS translation requests, with PRI behind a miss.
//!
//! # Why "ATS"
//! A device with ATS asks the IOMMU for translations and caches them (its device TLB, the ATC);
//! vm-memory's [`Iotlb`] is exactly such a cache, one level further up, in the device model.
//! So every miss of this IOTLB is an ATS translation request of the endpoint
//! ([`Endpoint::ats_translate`]): device TLB, else the IOMMU's IOTLB or walk, else (page not
//! present, endpoint with PRI) a page request group through the real path — PRQ,
//! `report_device_fault`, the domain's fault handler, the page response — waited for within
//! the endpoint's response timeout.
//!
//! # Staying coherent: the ATC generation and the DMA window
//! The IOMMU invalidates the endpoint's ATC (munmap, mprotect, swap-out, unmap, detach or
//! replace, PASID stop, reset); it does not know this IOTLB. [`Endpoint::atc_generation`]
//! increases with every such invalidation, and the IOTLB remembers the generation its entries
//! were filled under:
//!
//! * A lookup reads the generation first; if it moved, the IOTLB is emptied before it answers.
//! * A fill reads the generation *before* the ATS request and again after, under the IOTLB's
//!   write lock: if it moved, what was translated is dropped (it may be stale) and the
//!   translation starts over. A bounded number of rounds ([`MAX_FILL_ROUNDS`]) keeps a storm of
//!   invalidations from livelocking a translation.
//! * The answer carries the IOMMU's DMA window (the read side of its hardware lock, as the
//!   endpoint's own DMA engine holds it for a pass). Invalidations take the write side, so one
//!   issued while a vm-memory access copies through this translation waits for the copy: when
//!   `munmap` returns, no access through [`IommuMemory`] still uses the old frame (ATS
//!   invalidation completion, as the DMA engine gives it).
//!
//! Two consequences for callers. Do not hold one translation (a slice iterator of
//! [`IommuMemory`]) while asking for another on the same thread: the window is a read lock and
//! a writer queued between the two would deadlock it (vm-memory's `Bytes` calls never do this).
//! And slices kept past their iterator (virtio-queue's `Reader`/`Writer` collect them) are not
//! covered by the window: as with any IOTLB, such buffers must stay mapped until the device is
//! done with them — the virtio rule that the driver owns a buffer again only once it is used.
//!
//! # Errors
//! vm-memory's [`Error`] has three variants; a failed translation is always
//! [`Error::CannotResolve`] with the endpoint's [`DmaError`] as the reason (its `Display`):
//! Invalid, Response Failure, response timeout, PRI disabled or absent, PASID stopped or not
//! supported, unrecoverable faults. A permission failure is `CannotResolve` too:
//! `IommuMisconfigured` would claim the IOMMU itself is broken and `Fragmented` is about
//! contiguity, while `CannotResolve` is what vm-memory's own IOTLB returns when an access
//! failure cannot be resolved. Its reason names the fault (`Permission(..) fault`) when the
//! IOMMU reported it as such (a domain without fault handling); through PRI (SVA, a fault
//! capable HWPT) the handler decides, and a refused write comes back as "answered Invalid".

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use iommu_emu::{DmaError, DmaWindow, Endpoint};
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use vm_memory::iommu::{Error, Iotlb, IotlbIterator, IovaRange};
#[cfg(doc)]
use vm_memory::IommuMemory;
use vm_memory::{GuestAddress, Iommu, Permissions};

/// Rounds of "translate, then find the ATC generation moved" one translation may take before
/// it gives up with [`Error::CannotResolve`].
pub const MAX_FILL_ROUNDS: u32 = 16;

/// Chunks the IOTLB takes before it is emptied to make room. vm-memory's `Iotlb` never
/// evicts (a vhost-user front end invalidates often enough); a device walking a large address
/// space without invalidations would grow it without bound, so it is emptied whole, as a
/// hardware TLB flush would, and refilled by the next misses.
pub const IOTLB_CAPACITY: u64 = 65_536;

/// The IOTLB and the ATC generation its entries were filled under.
#[derive(Debug, Default)]
struct Cached {
    iotlb: Iotlb,
    generation: u64,
    /// Chunks inserted since it was last emptied (an upper bound on its entries).
    chunks: u64,
}

impl Cached {
    fn clear(&mut self) {
        self.iotlb.invalidate_all();
        self.chunks = 0;
    }
}

/// Counters of an [`AtsIommu`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AtsIommuStats {
    /// Calls of [`Iommu::translate`].
    pub translations: u64,
    /// Translations answered from the IOTLB without an ATS request.
    pub hits: u64,
    /// ATS translation requests sent (one per missing or insufficient range).
    pub ats_requests: u64,
    /// Chunks (pages, or runs of a page) put into the IOTLB.
    pub chunks_filled: u64,
    /// Times the IOTLB was emptied: the ATC generation moved, it was full, or
    /// [`AtsIommu::flush`] was called.
    pub flushes: u64,
    /// Fills dropped because an invalidation ran while they were translated.
    pub stale_fills_dropped: u64,
    /// Translations that failed.
    pub failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    translations: AtomicU64,
    hits: AtomicU64,
    ats_requests: AtomicU64,
    chunks_filled: AtomicU64,
    flushes: AtomicU64,
    stale_fills_dropped: AtomicU64,
    failures: AtomicU64,
}

/// vm-memory's [`Iommu`] for one address space of one endpoint: SVA (`pasid` is the process's
/// PASID), a paging domain or an iommufd HWPT (attached to `pasid`, or to the RID with `None`).
///
/// Build an [`IommuMemory`] on it with [`crate::iommu_memory`]. Thread safe: several device
/// threads may translate at once; a miss blocks only its own thread (for at most the endpoint's
/// response timeout when it needs a page request).
#[derive(Debug)]
pub struct AtsIommu {
    ep: Endpoint,
    pasid: Option<u32>,
    cached: RwLock<Cached>,
    counters: Counters,
}

/// What [`AtsIommu::translate`] answers with: the IOTLB, read locked, and the IOMMU's DMA
/// window, so no invalidation completes while the answer is in use (see the module
/// documentation).
pub struct AtsIotlbGuard<'a> {
    // Field order is drop order: the IOTLB lock goes first, then the window.
    cached: RwLockReadGuard<'a, Cached>,
    _window: DmaWindow<'a>,
}

impl Deref for AtsIotlbGuard<'_> {
    type Target = Iotlb;

    fn deref(&self) -> &Iotlb {
        &self.cached.iotlb
    }
}

impl std::fmt::Debug for AtsIotlbGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtsIotlbGuard")
            .field("generation", &self.cached.generation)
            .finish_non_exhaustive()
    }
}

impl AtsIommu {
    /// The address space `pasid` (`None`: requests without PASID, i.e. the RID's domain) of
    /// `ep`, with an empty IOTLB. Nothing is checked here: a PASID the endpoint does not
    /// support fails every translation with `CannotResolve` (`PasidNotSupported`).
    pub fn new(ep: &Endpoint, pasid: Option<u32>) -> AtsIommu {
        AtsIommu {
            ep: ep.clone(),
            pasid,
            // Empty, and current as of now: a generation that moved before this IOTLB existed
            // is no flush of it.
            cached: RwLock::new(Cached {
                generation: ep.atc_generation(),
                ..Cached::default()
            }),
            counters: Counters::default(),
        }
    }

    /// The endpoint whose ATS requests fill this IOTLB.
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// The PASID translated (`None`: the RID).
    pub fn pasid(&self) -> Option<u32> {
        self.pasid
    }

    /// The counters.
    pub fn stats(&self) -> AtsIommuStats {
        let c = &self.counters;
        AtsIommuStats {
            translations: c.translations.load(Relaxed),
            hits: c.hits.load(Relaxed),
            ats_requests: c.ats_requests.load(Relaxed),
            chunks_filled: c.chunks_filled.load(Relaxed),
            flushes: c.flushes.load(Relaxed),
            stale_fills_dropped: c.stale_fills_dropped.load(Relaxed),
            failures: c.failures.load(Relaxed),
        }
    }

    /// Empties the IOTLB (what a device reset does to its caches). Never needed for
    /// coherence: invalidations reach it through the ATC generation.
    pub fn flush(&self) {
        self.cached.write().clear();
        self.counters.flushes.fetch_add(1, Relaxed);
    }

    /// Empties the IOTLB under `w` if its entries were filled under another generation.
    fn sync_generation(&self, w: &mut RwLockWriteGuard<'_, Cached>, generation: u64) {
        if w.generation != generation {
            // Clearing is always safe; a thread that saw a newer generation clears again.
            w.clear();
            w.generation = generation;
            self.counters.flushes.fetch_add(1, Relaxed);
        }
    }

    /// The IOTLB read locked, emptied first if `generation` is not the one it was filled under.
    fn current(&self, generation: u64) -> RwLockReadGuard<'_, Cached> {
        let r = self.cached.read();
        if r.generation == generation {
            return r;
        }
        drop(r);
        let mut w = self.cached.write();
        self.sync_generation(&mut w, generation);
        RwLockWriteGuard::downgrade(w)
    }

    /// Sends the ATS requests for `ranges` (read under `generation`) and puts the answers in the
    /// IOTLB, unless an invalidation ran meanwhile. `Ok(false)`: dropped as possibly stale.
    fn fill(&self, ranges: &[IovaRange], write: bool, generation: u64) -> Result<bool, DmaError> {
        let mut chunks: Vec<(u64, u64, u64)> = Vec::new();
        for r in ranges {
            self.counters.ats_requests.fetch_add(1, Relaxed);
            self.ep
                .ats_translate(self.pasid, r.base.0, r.length as u64, write, |i, p, l| {
                    chunks.push((i, p, l));
                })?;
        }
        // Inside a window: no invalidation can run between the check and the insert.
        let _window = self.ep.iommu().dma_window();
        let now = self.ep.atc_generation();
        let mut w = self.cached.write();
        self.sync_generation(&mut w, now);
        if now != generation {
            self.counters.stale_fills_dropped.fetch_add(1, Relaxed);
            return Ok(false);
        }
        // Write permission implies read (the IOMMU's tables have no write-only pages).
        let perm = if write {
            Permissions::ReadWrite
        } else {
            Permissions::Read
        };
        if w.chunks + chunks.len() as u64 > IOTLB_CAPACITY {
            w.clear();
            self.counters.flushes.fetch_add(1, Relaxed);
        }
        w.chunks += chunks.len() as u64;
        for (iova, pa, len) in chunks {
            let Ok(len) = usize::try_from(len) else {
                continue;
            };
            // `set_mapping` cannot fail (it inserts into a range map); a failure would only
            // leave the range missing, and the lookup after this fill would try again.
            if w.iotlb
                .set_mapping(GuestAddress(iova), GuestAddress(pa), len, perm)
                .is_ok()
            {
                self.counters.chunks_filled.fetch_add(1, Relaxed);
            }
        }
        Ok(true)
    }

    fn fail(&self, iova: GuestAddress, length: usize, reason: String) -> Error {
        self.counters.failures.fetch_add(1, Relaxed);
        Error::CannotResolve {
            iova_range: IovaRange { base: iova, length },
            reason,
        }
    }
}

impl Iommu for AtsIommu {
    type IotlbGuard<'a> = AtsIotlbGuard<'a>;

    /// IOTLB hit, else ATS translation requests for the missing and insufficient ranges (with
    /// PRI behind them), then the IOTLB again. See the module documentation for coherence and
    /// errors.
    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<AtsIotlbGuard<'_>>, Error> {
        self.counters.translations.fetch_add(1, Relaxed);
        if iova.0.checked_add(length as u64).is_none() {
            return Err(self.fail(iova, length, "the range wraps around".into()));
        }
        let write = access.has_write();
        for round in 0..=MAX_FILL_ROUNDS {
            let window = self.ep.iommu().dma_window();
            let generation = self.ep.atc_generation();
            let guard = AtsIotlbGuard {
                cached: self.current(generation),
                _window: window,
            };
            let fails = match Iotlb::lookup(guard, iova, length, access) {
                Ok(hit) => {
                    if round == 0 {
                        self.counters.hits.fetch_add(1, Relaxed);
                    }
                    return Ok(hit);
                }
                // The guard (and with it the window) is gone: the ATS request may wait for a
                // page response, which must never happen inside a window.
                Err(fails) => fails,
            };
            let mut ranges = fails.misses;
            ranges.extend(fails.access_fails);
            if let Err(e) = self.fill(&ranges, write, generation) {
                return Err(self.fail(iova, length, e.to_string()));
            }
        }
        Err(self.fail(
            iova,
            length,
            format!("invalidated while being filled, {MAX_FILL_ROUNDS} times in a row"),
        ))
    }
}
