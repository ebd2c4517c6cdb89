//! The software IOMMU: [`EmuIommu`], an [`IommuDriver`] with real translation.
//!
//! # Hardware state and the DMA window
//! Everything DMA translation reads — each device's RID context and PASID table — lives in one
//! `RwLock` (the "hardware lock"). A DMA engine takes its read side for a *pass* over a batch of
//! pages ([`EmuIommu::dma_window`]): translations, cache fills, data copies and page-request
//! writes all happen inside a window. Configuration (attach, PASID set/remove) and every
//! invalidation take the write side. That one rule gives three guarantees:
//!
//! * **No stale fill.** A translation walked before an unmap cannot be cached after the
//!   invalidation that should have removed it: the fill happens inside a window, the
//!   invalidation waits for windows to close.
//! * **Invalidation completes DMA in flight.** When an invalidation returns, no access that
//!   used an old translation is still copying (ATS invalidation completion semantics), so the
//!   mm may free the frames (DESIGN §4, "after munmap no DMA touches the old frame").
//! * **Drain covers everything (H2).** Page requests are written inside a window after the
//!   context entry was checked, so once `remove_dev_pasid` has cleared the entry under the write
//!   lock, every request for that PASID is already in the ring and the queue's drain
//!   waits for it.
//!
//! Windows are short (a bounded number of pages) and are never held while a DMA waits for a
//! page response, so writers wait at most one pass. A DMA engine's sweep
//! (`DmaEngine::poll_all`) keeps one window over many jobs' passes, groups sent and responses
//! taken, up to the same number of pages. Inside a window the endpoint's PRI lock and the
//! page request queue's lock may be taken; nothing that holds either of them opens a window
//! or takes the write side (a reset, a stopped PASID and a disabled PASID capability drop the
//! PRI lock before they invalidate the device TLB), and a window is never opened inside
//! another on one thread (a read side taken twice would wait behind a queued writer).
//!
//! # IOTLB
//! A combined context/IOTLB cache (`tlb.rs`): entries are tagged with source ID, PASID and
//! domain ID, so a hit needs no PASID-table lookup. It is invalidated by domain (DID), by
//! (device, PASID) and by address range; a PASID-entry change flushes that (device, PASID). A hit
//! whose cached permissions do not allow the access is treated as a miss and re-walked (the
//! mapping may have been upgraded). Only 4 KiB translations are cached.
//!
//! Below it, a paging-structure cache (`psc.rs`) keeps, per table root and 2 MiB span, the
//! last-level table a walk reached: an IOTLB miss in a span walked before reads one entry. It
//! is valid only while the IOTLB's invalidation count is unchanged, so every invalidation
//! above flushes it whole.
//!
//! # Domains
//! Blocked and identity domains need no tables. A paging domain owns a second-stage table in
//! the IOMMU's [`PhysMem`] ([`EmuIommu::map`] / [`EmuIommu::unmap`] populate it). An SVA domain
//! walks the mm's first-stage table from its root and registers a
//! [`SecondaryTlb`](crate::mm::SecondaryTlb) on the mm. A
//! nested domain, for now, translates through its parent's second stage with an identity stage
//! 1 (the stage-1 descriptor iommufd passes is accepted but not walked).
//!
//! # Files
//! Linux splits the same driver across `intel/iommu.c`, `intel/pasid.c`, `intel/prq.c` and
//! `intel/cache.c`; here: `config.rs` (what the hardware supports), `context.rs` (RID context
//! and PASID-table entries, the state DMA reads), `domain.rs` (domains, DIDs, map/unmap),
//! `translate.rs` (the DMA window's translation, the hot path), `invalidate.rs` (IOTLB and
//! device-TLB flushes), `response.rs` (routing page responses back to the device),
//! `fault.rs` (fault reasons and the fault log), `stats.rs`, `driver.rs` (the
//! [`IommuDriver`] implementation the core calls).

mod config;
mod context;
mod domain;
mod driver;
mod fault;
mod invalidate;
mod nested;
mod response;
mod stats;
mod translate;

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use iommu_core::error::{einval_v, enomem};
use iommu_core::{Device, DeviceId, Group, IommuDriver, Result, PASID_WIDTH_MAX};
use iommu_pt::Access;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::phys::PhysMem;
use crate::prq::Prq;
use crate::tlb::Tlb;

pub use config::EmuIommuConfig;
use context::HwState;
pub use fault::{FaultReason, FaultRecord, TranslationFault};
pub use nested::{VtdS1, HWPT_DATA_VTD_S1, VTD_S1_FLAGS, VTD_S1_SIZE};
pub use response::PageResponseSink;
use response::Requester;
use stats::Counters;
pub use stats::IommuStats;

/// A software IOMMU: PASID tables, domain IDs, IOTLB, page request queue, fault log.
///
/// Create with [`EmuIommu::new`]; build groups on it with [`iommu_core::Group::new`] (pass
/// [`EmuIommu::driver`]) and devices with [`EmuIommu::add_endpoint`].
pub struct EmuIommu {
    name: String,
    cfg: EmuIommuConfig,
    phys: Arc<PhysMem>,
    me: Weak<EmuIommu>,
    hw: RwLock<HwState>,
    iotlb: Tlb,
    /// The paging-structure cache, valid while the IOTLB's invalidation count holds.
    psc: crate::psc::Psc,
    dids: Mutex<Vec<u16>>,
    pub(crate) prq: Arc<Prq>,
    prq_thread: Mutex<Option<JoinHandle<()>>>,
    /// Each requester's source ID and where its page responses go (see `response.rs`).
    requesters: RwLock<HashMap<DeviceId, Requester, crate::hash::FastHash>>,
    fault_log: Mutex<VecDeque<FaultRecord>>,
    counters: Counters,
}

/// The read side of the IOMMU's hardware lock, held by a DMA engine for one pass over a batch
/// of pages (see the module documentation). Translations, cache fills and page-request writes
/// happen inside it; invalidations and configuration changes wait for it.
///
/// Hit/miss counts are kept in the window and added to the IOMMU's counters when it closes, so
/// the hit path does no atomic read-modify-write on a shared cache line.
pub struct DmaWindow<'a> {
    iommu: &'a EmuIommu,
    hw: RwLockReadGuard<'a, HwState>,
    hits: Cell<u64>,
    misses: Cell<u64>,
    psc_hits: Cell<u64>,
    pages: Cell<u64>,
}

impl DmaWindow<'_> {
    /// Pages DMA passes went through in this window so far: how long it has been open.
    pub(crate) fn pages(&self) -> u64 {
        self.pages.get()
    }

    /// Counts `n` more pages gone through in this window.
    pub(crate) fn note_pages(&self, n: u64) {
        self.pages.set(self.pages.get() + n);
    }
}

impl Drop for DmaWindow<'_> {
    fn drop(&mut self) {
        let c = &self.iommu.counters;
        if self.hits.get() > 0 {
            c.hits.fetch_add(self.hits.get(), Relaxed);
        }
        if self.misses.get() > 0 {
            c.misses.fetch_add(self.misses.get(), Relaxed);
        }
        if self.psc_hits.get() > 0 {
            c.psc_hits.fetch_add(self.psc_hits.get(), Relaxed);
        }
    }
}

impl EmuIommu {
    /// A new IOMMU named `name` over `phys`, with its page request queue thread `prq/<name>`
    /// running (unless [`EmuIommuConfig::prq_thread`] is false). `EINVAL` for a PASID width
    /// above 20 or more IOTLB entries than [`EmuIommuConfig::MAX_IOTLB_ENTRIES`], `ENOMEM` if
    /// the thread cannot start.
    ///
    /// The queue thread runs under the `tracing` dispatcher that is current here.
    pub fn new(name: &str, phys: &Arc<PhysMem>, cfg: EmuIommuConfig) -> Result<Arc<EmuIommu>> {
        if cfg.pasid_bits > PASID_WIDTH_MAX {
            return Err(einval_v("PASID width above 20 bits", cfg.pasid_bits.into()));
        }
        if cfg.iotlb_entries > EmuIommuConfig::MAX_IOTLB_ENTRIES {
            return Err(einval_v(
                "iotlb_entries above EmuIommuConfig::MAX_IOTLB_ENTRIES (1 << 20)",
                cfg.iotlb_entries as u64,
            ));
        }
        let prq = Prq::new(cfg.prq_depth, !cfg.prq_thread);
        let spawn_thread = cfg.prq_thread;
        let iommu = Arc::new_cyclic(|me| EmuIommu {
            name: name.into(),
            iotlb: Tlb::new(cfg.iotlb_entries),
            psc: crate::psc::Psc::new(),
            cfg,
            phys: phys.clone(),
            me: me.clone(),
            hw: RwLock::new(HwState::default()),
            // DID 0 is reserved (VT-d uses it for caching mode); hand out from the top down.
            dids: Mutex::new((1..=u16::MAX).collect()),
            prq: prq.clone(),
            prq_thread: Mutex::new(None),
            requesters: RwLock::new(HashMap::default()),
            fault_log: Mutex::new(VecDeque::new()),
            counters: Counters::default(),
        });
        if spawn_thread {
            let dispatch = tracing::dispatcher::get_default(|d| d.clone());
            let handle = std::thread::Builder::new()
                .name(format!("prq/{name}"))
                .spawn(move || tracing::dispatcher::with_default(&dispatch, || prq.run()))
                .map_err(|_| enomem("cannot spawn the page request queue thread"))?;
            *iommu.prq_thread.lock() = Some(handle);
        }
        Ok(iommu)
    }

    /// Manual page request queue ([`EmuIommuConfig::prq_thread`] false): reports up to `max`
    /// queued page requests on the calling thread, exactly as the queue thread would —
    /// including the overflow handling (once everything queued before the overflow has been
    /// reported, every device's partial groups are discarded and the flag is cleared). Returns
    /// how many requests it reported. Reporting may run fault handlers (and so answer groups)
    /// on this thread; call it without holding locks those handlers need.
    ///
    /// On an IOMMU with a queue thread it does nothing and returns 0.
    pub fn prq_step(&self, max: usize) -> usize {
        if !self.prq.manual() {
            return 0;
        }
        self.prq.step(max)
    }

    /// Stalls (or resumes) the page request queue's reporting, as if the driver's IRQ thread
    /// were starved: requests pile up until the queue overflows (the hardware then answers
    /// groups itself). A simulation knob for flooding scenarios; while stalled, a blocking DMA
    /// waits for its response and a PASID detach (which drains the queue) waits too, so stall
    /// only briefly and always resume.
    pub fn stall_prq(&self, stalled: bool) {
        self.prq.set_stalled(stalled);
    }

    /// This IOMMU as the core's driver trait object (for [`Group::new`]).
    pub fn driver(self: &Arc<Self>) -> Arc<dyn IommuDriver> {
        self.clone()
    }

    /// The physical memory this IOMMU translates into.
    pub fn phys(&self) -> &Arc<PhysMem> {
        &self.phys
    }

    /// The configuration.
    pub fn config(&self) -> &EmuIommuConfig {
        &self.cfg
    }

    /// Whether `group` sits behind this IOMMU.
    pub fn owns_group(&self, group: &Group) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(group.iommu()), self as *const EmuIommu)
    }

    /// The source ID (requester ID, like a PCI BDF) this IOMMU gave `dev` when it was probed.
    pub fn source_id(&self, dev: &Device) -> Option<u32> {
        self.sid_of(dev.id())
    }

    pub(crate) fn sid_of(&self, id: DeviceId) -> Option<u32> {
        self.hw.read().by_id.get(&id).copied()
    }

    /// Opens a DMA window (the read side of the hardware lock). Keep it for a bounded batch of
    /// work; never wait for a page response inside one.
    pub fn dma_window(&self) -> DmaWindow<'_> {
        DmaWindow {
            iommu: self,
            hw: self.hw.read(),
            hits: Cell::new(0),
            misses: Cell::new(0),
            psc_hits: Cell::new(0),
            pages: Cell::new(0),
        }
    }

    /// Translates one access (an untranslated request, or an ATS translation request) of `dev`
    /// with `pasid` at `iova`: IOTLB hit, else PASID-table lookup and walk. Opens its own window.
    pub fn translate(
        &self,
        dev: &Device,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> core::result::Result<iommu_pt::Translation, TranslationFault> {
        self.dma_window().translate(dev, pasid, iova, access)
    }
}

impl Drop for EmuIommu {
    fn drop(&mut self) {
        self.prq.shutdown();
        if let Some(h) = self.prq_thread.lock().take() {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl fmt::Debug for EmuIommu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmuIommu")
            .field("name", &self.name)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
