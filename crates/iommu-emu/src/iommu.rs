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
//! page response, so writers wait at most one pass.
//!
//! # IOTLB
//! A combined context/IOTLB cache (`tlb.rs`): entries are tagged with source ID, PASID and
//! domain ID, so a hit needs no PASID-table lookup. It is invalidated by domain (DID), by
//! (device, PASID) and by address range; a PASID-entry change flushes that (device, PASID). A hit
//! whose cached permissions do not allow the access is treated as a miss and re-walked (the
//! mapping may have been upgraded). Only 4 KiB translations are cached.
//!
//! # Domains
//! Blocked and identity domains need no tables. A paging domain owns a second-stage table in
//! the IOMMU's [`PhysMem`] ([`EmuIommu::map`] / [`EmuIommu::unmap`] populate it). An SVA domain
//! walks the mm's first-stage table from its root and registers a [`SecondaryTlb`] on the mm. A
//! nested domain, for now, translates through its parent's second stage with an identity stage
//! 1 (the stage-1 descriptor iommufd passes is accepted but not walked).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use iommu_core::error::{einval, einval_v, enodev, enomem, enospc, Error};
use iommu_core::{
    Capabilities, DefaultDomainKind, Device, DeviceId, Domain, DomainKind, DomainRequest,
    DriverDomain, Group, IommuDriver, PageRequest, PageResponse, Result, PASID_WIDTH_MAX,
};
use iommu_pt::{
    walk, Access, FaultKind, FirstStage4, PageTable, Perms, Pfn, PhysAddr, SecondStage,
};
use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::endpoint::{Endpoint, EndpointConfig, EpShared};
use crate::mm::{Mm, SecondaryTlb};
use crate::phys::{PhysMem, PAGE_SHIFT};
use crate::prq::{Prq, Pushed};
use crate::tlb::{perm_bits, perms_allow, pkey, Entry, Tag, Tlb};

/// Configuration of an [`EmuIommu`]. `Default` is a fully featured VT-d-like IOMMU.
#[derive(Debug, Clone)]
pub struct EmuIommuConfig {
    /// PASID width in bits (0: no PASID support; at most 20).
    pub pasid_bits: u32,
    /// Page Request Interface support.
    pub pri: bool,
    /// Address Translation Services support (device TLBs).
    pub ats: bool,
    /// Nested translation support.
    pub nesting: bool,
    /// SVA support (first-stage tables shared with an [`Mm`]).
    pub sva: bool,
    /// Kind of each group's default (DMA API) domain.
    pub default_domain: DefaultDomainKind,
    /// IOTLB entries (rounded up to a power of two).
    pub iotlb_entries: usize,
    /// Page request queue depth (VT-d: 2,048).
    pub prq_depth: usize,
    /// Unrecoverable faults kept in the fault log (older ones are counted, not kept).
    pub fault_log_depth: usize,
    /// Run the page request queue thread `prq/<name>` (default true). When false no thread is
    /// spawned: queued page requests are reported only by [`EmuIommu::prq_step`] (and inline by
    /// `remove_dev_pasid`'s drain), so a single-threaded scheduler can drive the IOMMU step by
    /// step.
    pub prq_thread: bool,
}

impl Default for EmuIommuConfig {
    fn default() -> Self {
        EmuIommuConfig {
            pasid_bits: PASID_WIDTH_MAX,
            pri: true,
            ats: true,
            nesting: true,
            sva: true,
            default_domain: DefaultDomainKind::Paging,
            iotlb_entries: 4096,
            prq_depth: 2048,
            fault_log_depth: 256,
            prq_thread: true,
        }
    }
}

/// Why a translation failed (what the IOMMU would record in its fault reason field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultReason {
    /// No context for the requester: device unknown, RID not attached, or PASID entry not
    /// present.
    NoContext,
    /// The PASID is beyond the IOMMU's or the device's PASID range.
    PasidOutOfRange,
    /// The context is a blocking domain.
    Blocked,
    /// The walk found no present entry.
    NotPresent,
    /// The walk found the page but the access is not permitted.
    Permission(FaultKind),
    /// The address is outside the domain's address space (non-canonical, beyond 48 bits).
    AddressSize,
    /// A table entry points outside physical memory (corrupt table).
    BadTable,
    /// The access needs PRI, but the device has none or disabled it (after Response Failure).
    PriUnavailable,
}

/// A failed translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TranslationFault {
    /// Why.
    pub reason: FaultReason,
    /// The faulting address.
    pub iova: u64,
    /// Whether a page request can resolve it: a not-present or permission fault in a context
    /// whose domain is fault capable.
    pub recoverable: bool,
}

impl fmt::Display for TranslationFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} fault at iova {:#x}", self.reason, self.iova)
    }
}

/// One entry of the unrecoverable-fault log (VT-d fault recording registers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRecord {
    /// The requester.
    pub device: DeviceId,
    /// The PASID of the request, if any.
    pub pasid: Option<u32>,
    /// The faulting address.
    pub iova: u64,
    /// Whether the request was a write.
    pub write: bool,
    /// Why.
    pub reason: FaultReason,
}

/// A snapshot of an IOMMU's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IommuStats {
    /// Translations performed (IOTLB hits + misses).
    pub translations: u64,
    /// IOTLB hits.
    pub iotlb_hits: u64,
    /// IOTLB misses (each one a table walk, or a fault without a context).
    pub iotlb_misses: u64,
    /// Page requests written to the queue.
    pub page_requests: u64,
    /// Times the page request queue overflowed.
    pub prq_overflows: u64,
    /// Groups the hardware answered Success itself during an overflow.
    pub prq_auto_responses: u64,
    /// Partial requests dropped during an overflow.
    pub prq_dropped_partials: u64,
    /// Page responses sent by software.
    pub page_responses: u64,
    /// IOTLB invalidation commands executed.
    pub invalidations: u64,
    /// Unrecoverable faults recorded.
    pub unrecoverable_faults: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    page_responses: AtomicU64,
    invalidations: AtomicU64,
    faults: AtomicU64,
}

/// A domain ID, given back (and its IOTLB entries flushed) when the last user drops it.
struct DidGuard {
    did: u16,
    iommu: Weak<EmuIommu>,
}

impl Drop for DidGuard {
    fn drop(&mut self) {
        if let Some(iommu) = self.iommu.upgrade() {
            let did = self.did;
            // No window needed: the last context entry using this DID is gone (removed under
            // the write lock), so no translation can fill an entry with it any more.
            iommu.iotlb.invalidate(|e| e.tag.did == did);
            iommu.dids.lock().push(did);
        }
    }
}

enum Backing {
    Blocked,
    Identity,
    Paging(Mutex<PageTable<SecondStage, Arc<PhysMem>>>),
    Sva {
        mm: Arc<Mm>,
        _hook: Arc<SvaHook>,
        reg: u64,
    },
    Nested {
        parent: Arc<DomainInner>,
    },
}

/// The driver-private state of a domain, shared by the PASID/RID entries that point at it.
struct DomainInner {
    did: DidGuard,
    root: Pfn,
    backing: Backing,
}

impl Drop for DomainInner {
    fn drop(&mut self) {
        if let Backing::Sva { mm, reg, .. } = &self.backing {
            mm.unregister_secondary_tlb(*reg);
        }
    }
}

/// What `Domain::driver_data` holds for a domain of this IOMMU.
struct EmuDomain(Arc<DomainInner>);

/// The secondary TLB an SVA domain registers on its mm.
struct SvaHook {
    iommu: Weak<EmuIommu>,
    did: u16,
}

impl SecondaryTlb for SvaHook {
    fn invalidate_range(&self, _mm_id: u64, start: u64, end: u64) {
        if let Some(iommu) = self.iommu.upgrade() {
            iommu.invalidate_did_range(self.did, start, end);
        }
    }
}

#[derive(Clone)]
enum Tr {
    Blocked,
    Identity,
    FirstStage(Pfn),
    SecondStage(Pfn),
}

/// A RID context or PASID-table entry.
#[derive(Clone)]
struct CtxEntry {
    did: u16,
    tr: Tr,
    fault_capable: bool,
    _domain: Arc<DomainInner>,
}

struct DevCtx {
    id: DeviceId,
    max_pasids: u32,
    rid: Option<CtxEntry>,
    pasids: HashMap<u32, CtxEntry, FastHash>,
    /// The endpoint's ATS device TLB, once an endpoint drives the device.
    atc: Option<Arc<Tlb>>,
}

#[derive(Default)]
struct HwState {
    /// By source ID.
    devices: Vec<Option<DevCtx>>,
    by_id: HashMap<DeviceId, u32, FastHash>,
}

/// A multiplicative hasher for small integer keys (PASIDs, device IDs): these lookups are on
/// the translation path, where SipHash would cost more than the rest of the lookup.
#[derive(Default, Clone, Copy)]
struct FastHash;
#[derive(Default)]
struct FastHasher(u64);
impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}
impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (self.0 ^ u64::from(i)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0 ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

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
    dids: Mutex<Vec<u16>>,
    prq: Arc<Prq>,
    prq_thread: Mutex<Option<JoinHandle<()>>>,
    endpoints: RwLock<HashMap<DeviceId, Weak<EpShared>>>,
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
    }
}

impl EmuIommu {
    /// A new IOMMU named `name` over `phys`, with its page request queue thread `prq/<name>`
    /// running (unless [`EmuIommuConfig::prq_thread`] is false). `EINVAL` for a PASID width
    /// above 20, `ENOMEM` if the thread cannot start.
    ///
    /// The queue thread runs under the `tracing` dispatcher that is current here.
    pub fn new(name: &str, phys: &Arc<PhysMem>, cfg: EmuIommuConfig) -> Result<Arc<EmuIommu>> {
        if cfg.pasid_bits > PASID_WIDTH_MAX {
            return Err(einval_v("PASID width above 20 bits", cfg.pasid_bits.into()));
        }
        let prq = Prq::new(cfg.prq_depth, !cfg.prq_thread);
        let spawn_thread = cfg.prq_thread;
        let iommu = Arc::new_cyclic(|me| EmuIommu {
            name: name.into(),
            iotlb: Tlb::new(cfg.iotlb_entries),
            cfg,
            phys: phys.clone(),
            me: me.clone(),
            hw: RwLock::new(HwState::default()),
            // DID 0 is reserved (VT-d uses it for caching mode); hand out from the top down.
            dids: Mutex::new((1..=u16::MAX).collect()),
            prq: prq.clone(),
            prq_thread: Mutex::new(None),
            endpoints: RwLock::new(HashMap::new()),
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

    /// Probes a new PCIe function `name` into `group` and returns the [`Endpoint`] that drives
    /// it. `EINVAL` if the group is behind another IOMMU; the core's `add_device` errors pass
    /// through.
    pub fn add_endpoint(
        self: &Arc<Self>,
        group: &Arc<Group>,
        name: &str,
        max_pasids: u32,
        cfg: EndpointConfig,
    ) -> Result<Endpoint> {
        if !self.owns_group(group) {
            return Err(einval("group is behind another IOMMU"));
        }
        let dev = group.add_device(name, max_pasids)?;
        let sid = self
            .sid_of(dev.id())
            .ok_or(enodev("device was not probed"))?;
        let ep = Endpoint::new(self.clone(), group.clone(), dev.clone(), sid, cfg);
        if let Some(Some(ctx)) = self.hw.write().devices.get_mut(sid as usize) {
            ctx.atc = Some(ep.shared().atc.clone());
        }
        self.endpoints
            .write()
            .insert(dev.id(), Arc::downgrade(ep.shared()));
        self.prq.add_device(&dev);
        Ok(ep)
    }

    /// The source ID (requester ID, like a PCI BDF) this IOMMU gave `dev` when it was probed.
    pub fn source_id(&self, dev: &Device) -> Option<u32> {
        self.sid_of(dev.id())
    }

    fn sid_of(&self, id: DeviceId) -> Option<u32> {
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

    /// Records an unrecoverable fault in the fault log.
    pub fn log_fault(&self, rec: FaultRecord) {
        self.counters.faults.fetch_add(1, Relaxed);
        let mut log = self.fault_log.lock();
        if log.len() >= self.cfg.fault_log_depth.max(1) {
            log.pop_front();
        }
        log.push_back(rec);
    }

    /// The most recent unrecoverable faults, oldest first.
    pub fn fault_log(&self) -> Vec<FaultRecord> {
        self.fault_log.lock().iter().cloned().collect()
    }

    /// The counters.
    pub fn stats(&self) -> IommuStats {
        let c = &self.counters;
        let p = &self.prq.counters;
        let hits = c.hits.load(Relaxed);
        let misses = c.misses.load(Relaxed);
        IommuStats {
            translations: hits + misses,
            iotlb_hits: hits,
            iotlb_misses: misses,
            page_requests: p.requests.load(Relaxed),
            prq_overflows: p.overflows.load(Relaxed),
            prq_auto_responses: p.auto_responses.load(Relaxed),
            prq_dropped_partials: p.dropped_partials.load(Relaxed),
            page_responses: c.page_responses.load(Relaxed),
            invalidations: c.invalidations.load(Relaxed),
            unrecoverable_faults: c.faults.load(Relaxed),
        }
    }

    /// Valid IOTLB entries right now.
    pub fn iotlb_len(&self) -> usize {
        self.iotlb.len()
    }

    /// IOTLB capacity in entries.
    pub fn iotlb_capacity(&self) -> usize {
        self.iotlb.capacity()
    }

    /// Requests currently waiting in the page request queue.
    pub fn prq_len(&self) -> usize {
        self.prq.len()
    }

    /// The page request queue's depth.
    pub fn prq_depth(&self) -> usize {
        self.prq.depth()
    }

    /// Whether the page request queue's overflow flag is set.
    pub fn prq_overflowed(&self) -> bool {
        self.prq.overflowed()
    }

    /// The domain ID this IOMMU gave `domain`; `None` for another IOMMU's domain.
    pub fn domain_did(&self, domain: &Domain) -> Option<u16> {
        self.own(domain).ok().map(|d| d.did.did)
    }

    /// `domain`'s driver state, if this instance allocated it (another `EmuIommu`'s domain has
    /// the same type but other caches: using it here would leave stale IOTLB entries there).
    fn own<'d>(&self, domain: &'d Domain) -> Result<&'d Arc<DomainInner>> {
        if !std::ptr::addr_eq(Arc::as_ptr(domain.owner()), self as *const EmuIommu) {
            return Err(einval("domain belongs to another IOMMU"));
        }
        domain
            .driver_data::<EmuDomain>()
            .map(|d| &d.0)
            .ok_or(einval("domain belongs to another driver"))
    }

    fn paging_inner<'d>(
        &self,
        domain: &'d Domain,
    ) -> Result<&'d Mutex<PageTable<SecondStage, Arc<PhysMem>>>> {
        match &self.own(domain)?.backing {
            Backing::Paging(pt) => Ok(pt),
            _ => Err(einval("not a paging domain")),
        }
    }

    /// Maps `[iova, iova + len)` of paging domain `domain` to `[pa, pa + len)` with `perms`
    /// (iommufd's `IOMMU_IOAS_MAP` lands here). `EINVAL` for another driver's or a non-paging
    /// domain and for bad ranges, `EEXIST` if already mapped, `ENOMEM`. Nothing changes on error.
    pub fn map(
        &self,
        domain: &Domain,
        iova: u64,
        pa: PhysAddr,
        len: u64,
        perms: Perms,
    ) -> Result<()> {
        self.paging_inner(domain)?
            .lock()
            .map(iova, pa, len, perms)
            .map_err(pt_error)
    }

    /// Unmaps `[iova, iova + len)` of paging domain `domain`; returns the bytes unmapped. The
    /// IOTLB and every device TLB are invalidated, and DMA in flight through the old entries has
    /// completed, before the table pages are freed. `ENOENT` if nothing was mapped.
    pub fn unmap(&self, domain: &Domain, iova: u64, len: u64) -> Result<u64> {
        let did = self
            .domain_did(domain)
            .ok_or(einval("domain belongs to another driver"))?;
        let pt = self.paging_inner(domain)?;
        let mut pt = pt.lock();
        let u = pt.unmap(iova, len).map_err(pt_error)?;
        self.invalidate_did_range(did, iova, iova.saturating_add(len));
        pt.free_tables(u.freed_tables);
        Ok(u.bytes)
    }

    /// What `iova` maps to in paging domain `domain` (no accessed/dirty update).
    pub fn iova_to_phys(&self, domain: &Domain, iova: u64) -> Option<PhysAddr> {
        let pt = self.paging_inner(domain).ok()?.lock();
        pt.query(iova).and_then(|m| m.translate(iova))
    }

    /// Invalidates the IOTLB entries of domain ID `did` in `[start, end)` and the device-TLB
    /// entries of every (device, PASID) pointing at it, after DMA in flight has completed.
    fn invalidate_did_range(&self, did: u16, start: u64, end: u64) {
        let hw = self.hw.write();
        self.counters.invalidations.fetch_add(1, Relaxed);
        let (first, last) = (start >> PAGE_SHIFT, end.saturating_sub(1) >> PAGE_SHIFT);
        self.iotlb
            .invalidate(|e| e.tag.did == did && e.vpn >= first && e.vpn <= last);
        for ctx in hw.devices.iter().flatten() {
            let Some(atc) = &ctx.atc else { continue };
            let mut keys: Vec<u32> = ctx
                .pasids
                .iter()
                .filter(|(_, e)| e.did == did)
                .map(|(p, _)| pkey(Some(*p)))
                .collect();
            if ctx.rid.as_ref().is_some_and(|e| e.did == did) {
                keys.push(pkey(None));
            }
            if !keys.is_empty() {
                atc.invalidate(|e| keys.contains(&e.tag.pkey) && e.vpn >= first && e.vpn <= last);
            }
        }
    }

    /// Flushes every cached translation of domain `domain` (IOTLB by DID and device TLBs).
    pub fn flush_domain(&self, domain: &Domain) {
        if let Some(did) = self.domain_did(domain) {
            self.invalidate_did_range(did, 0, u64::MAX);
        }
    }

    /// Flushes the cached translations of `[start, end)` in domain `domain` (IOTLB entries with
    /// its DID and the device-TLB entries of every (device, PASID) attached to it), waiting for
    /// DMA in flight through them.
    pub fn flush_range(&self, domain: &Domain, start: u64, end: u64) {
        if let Some(did) = self.domain_did(domain) {
            self.invalidate_did_range(did, start, end);
        }
    }

    /// Flushes every cached translation of `dev`'s `pasid` (`None`: its RID).
    pub fn flush_pasid(&self, dev: &Device, pasid: Option<u32>) {
        let hw = self.hw.write();
        if let Some(sid) = hw.by_id.get(&dev.id()).copied() {
            self.flush_sid_pasid(&hw, sid, pasid);
        }
    }

    fn flush_sid_pasid(&self, hw: &HwState, sid: u32, pasid: Option<u32>) {
        self.counters.invalidations.fetch_add(1, Relaxed);
        let k = pkey(pasid);
        self.iotlb
            .invalidate(|e| e.tag.sid == sid && e.tag.pkey == k);
        if let Some(Some(ctx)) = hw.devices.get(sid as usize) {
            if let Some(atc) = &ctx.atc {
                atc.invalidate(|e| e.tag.pkey == k);
            }
        }
    }

    fn entry_for(&self, domain: &Domain) -> Result<CtxEntry> {
        let inner = self.own(domain)?;
        let tr = match &inner.backing {
            Backing::Blocked => Tr::Blocked,
            Backing::Identity => Tr::Identity,
            Backing::Paging(_) => Tr::SecondStage(inner.root),
            Backing::Sva { .. } => Tr::FirstStage(inner.root),
            Backing::Nested { parent } => Tr::SecondStage(parent.root),
        };
        Ok(CtxEntry {
            did: inner.did.did,
            tr,
            fault_capable: domain.is_fault_capable(),
            _domain: inner.clone(),
        })
    }

    fn alloc_did(&self) -> Result<DidGuard> {
        let did = self.dids.lock().pop().ok_or(enospc("no domain ID left"))?;
        Ok(DidGuard {
            did,
            iommu: self.me.clone(),
        })
    }

    /// Routes a page response to the endpoint of `dev`.
    fn deliver_response(&self, dev: &Device, resp: PageResponse) {
        let ep = self.endpoints.read().get(&dev.id()).and_then(Weak::upgrade);
        if let Some(ep) = ep {
            ep.on_page_response(resp);
        }
    }
}

fn pt_error(e: iommu_pt::PtError) -> Error {
    use iommu_core::error::{eexist, enoent};
    match e.errno() {
        iommu_pt::errno::EEXIST => eexist("range already mapped"),
        iommu_pt::errno::ENOMEM => enomem("out of page-table memory"),
        iommu_pt::errno::ENOENT => enoent("nothing mapped in range"),
        _ => einval("invalid range, alignment or permissions"),
    }
}

impl DmaWindow<'_> {
    /// Translates an access of `dev` (see [`EmuIommu::translate`]).
    pub fn translate(
        &self,
        dev: &Device,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> core::result::Result<iommu_pt::Translation, TranslationFault> {
        let Some(sid) = self.hw.by_id.get(&dev.id()).copied() else {
            return Err(TranslationFault {
                reason: FaultReason::NoContext,
                iova,
                recoverable: false,
            });
        };
        self.translate_sid(sid, pasid, iova, access)
            .map(|(pa, perms)| iommu_pt::Translation {
                pa: PhysAddr(pa | (iova & 0xfff)),
                size: iommu_pt::PageSize::Size4K,
                perms,
            })
    }

    /// Translates an access of the requester with source ID `sid` (see
    /// [`EmuIommu::source_id`]): what hardware does, keyed by the request's requester ID
    /// rather than by a device object. Returns the page-aligned physical address and the
    /// permissions of the page.
    #[inline]
    pub fn translate_source(
        &self,
        sid: u32,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> core::result::Result<(u64, Perms), TranslationFault> {
        self.translate_sid(sid, pasid, iova, access)
    }

    /// The hot path: page-aligned physical address and permissions of `iova` for source `sid`.
    #[inline]
    pub(crate) fn translate_sid(
        &self,
        sid: u32,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> core::result::Result<(u64, Perms), TranslationFault> {
        let iommu = self.iommu;
        let vpn = iova >> PAGE_SHIFT;
        let k = pkey(pasid);
        if let Some(e) = iommu.iotlb.lookup(sid, k, vpn) {
            if perms_allow(e.perms, access) {
                self.hits.set(self.hits.get() + 1);
                return Ok((e.pa, perms_of(e.perms)));
            }
        }
        self.misses.set(self.misses.get() + 1);
        let fault = |reason, recoverable| TranslationFault {
            reason,
            iova,
            recoverable,
        };
        let ctx = self
            .hw
            .devices
            .get(sid as usize)
            .and_then(Option::as_ref)
            .ok_or(fault(FaultReason::NoContext, false))?;
        let entry = match pasid {
            None => ctx.rid.as_ref(),
            Some(p) => {
                if p >= ctx.max_pasids {
                    return Err(fault(FaultReason::PasidOutOfRange, false));
                }
                ctx.pasids.get(&p)
            }
        }
        .ok_or(fault(FaultReason::NoContext, false))?;
        let walked = match entry.tr {
            Tr::Blocked => return Err(fault(FaultReason::Blocked, false)),
            Tr::Identity => {
                return Ok((iova & !0xfff, Perms::ALL));
            }
            Tr::FirstStage(root) => walk::<FirstStage4, PhysMem>(&iommu.phys, root, iova, access),
            Tr::SecondStage(root) => {
                let a = Access {
                    user: false,
                    ..access
                };
                walk::<SecondStage, PhysMem>(&iommu.phys, root, iova, a)
            }
        };
        match walked {
            Ok(t) => {
                let pa = t.pa.0 & !0xfff;
                // The second stage has no user/supervisor bit: every access is checked the same
                // way, so the cached entry allows user accesses (else a user-tagged request
                // would never hit the caches).
                let perms = match entry.tr {
                    Tr::SecondStage(_) => Perms {
                        user: true,
                        ..t.perms
                    },
                    _ => t.perms,
                };
                iommu.iotlb.insert(Entry {
                    vpn,
                    tag: Tag {
                        sid,
                        pkey: k,
                        did: entry.did,
                    },
                    pa,
                    perms: perm_bits(perms),
                });
                Ok((pa, perms))
            }
            Err(w) => {
                let (reason, fixable) = match w.kind {
                    FaultKind::NotPresent => (FaultReason::NotPresent, true),
                    FaultKind::NonCanonical => (FaultReason::AddressSize, false),
                    FaultKind::BadTable => (FaultReason::BadTable, false),
                    k => (FaultReason::Permission(k), true),
                };
                Err(fault(reason, fixable && entry.fault_capable))
            }
        }
    }

    /// Whether `sid`'s `pasid` has a context entry whose domain takes page requests.
    pub(crate) fn fault_capable(&self, sid: u32, pasid: Option<u32>) -> bool {
        let Some(Some(ctx)) = self.hw.devices.get(sid as usize) else {
            return false;
        };
        match pasid {
            None => ctx.rid.as_ref(),
            Some(p) => ctx.pasids.get(&p),
        }
        .is_some_and(|e| e.fault_capable)
    }

    /// Writes a page request group into the queue, if the context still takes page requests
    /// (checked inside the window, so `remove_dev_pasid`'s drain sees it, H2). `None`: the
    /// context is gone.
    pub(crate) fn page_request(
        &self,
        sid: u32,
        dev: &Arc<Device>,
        pasid: Option<u32>,
        reqs: &[PageRequest],
    ) -> Option<Pushed> {
        if !self.fault_capable(sid, pasid) {
            return None;
        }
        Some(self.iommu.prq.push_group(dev, reqs))
    }

    /// The IOMMU this window belongs to.
    pub fn iommu(&self) -> &EmuIommu {
        self.iommu
    }
}

fn perms_of(bits: u64) -> Perms {
    use crate::tlb::{P_EXEC, P_READ, P_USER, P_WRITE};
    Perms {
        read: bits & P_READ != 0,
        write: bits & P_WRITE != 0,
        exec: bits & P_EXEC != 0,
        user: bits & P_USER != 0,
    }
}

impl IommuDriver for EmuIommu {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_pasids: if self.cfg.pasid_bits == 0 {
                0
            } else {
                1 << self.cfg.pasid_bits
            },
            pri: self.cfg.pri,
            ats: self.cfg.ats,
            nesting: self.cfg.nesting,
            sva: self.cfg.sva,
            user_pasid_table: false,
            default_domain: self.cfg.default_domain,
        }
    }

    fn probe_device(&self, dev: &Device) -> Result<()> {
        let mut hw = self.hw.write();
        if hw.by_id.contains_key(&dev.id()) {
            return Err(einval("device already probed"));
        }
        let ctx = DevCtx {
            id: dev.id(),
            max_pasids: dev.max_pasids(),
            rid: None,
            pasids: HashMap::default(),
            atc: None,
        };
        let sid = match hw.devices.iter().position(Option::is_none) {
            Some(free) => {
                hw.devices[free] = Some(ctx);
                free
            }
            None => {
                hw.devices.push(Some(ctx));
                hw.devices.len() - 1
            }
        };
        hw.by_id.insert(dev.id(), sid as u32);
        Ok(())
    }

    fn release_device(&self, dev: &Device) {
        let mut hw = self.hw.write();
        if let Some(sid) = hw.by_id.remove(&dev.id()) {
            if let Some(slot) = hw.devices.get_mut(sid as usize) {
                debug_assert!(slot.as_ref().is_some_and(|c| c.id == dev.id()));
                *slot = None;
            }
            self.iotlb.invalidate(|e| e.tag.sid == sid);
        }
        drop(hw);
        self.endpoints.write().remove(&dev.id());
    }

    fn domain_alloc(&self, _dev: &Device, req: &DomainRequest<'_>) -> Result<DriverDomain> {
        let did = self.alloc_did()?;
        let (root, backing) = match req {
            DomainRequest::Blocked => (Pfn(0), Backing::Blocked),
            DomainRequest::Identity => (Pfn(0), Backing::Identity),
            DomainRequest::Paging { .. } => {
                let pt = PageTable::<SecondStage, _>::new(self.phys.clone())
                    .map_err(|_| enomem("no memory for a second-stage root"))?;
                (pt.root(), Backing::Paging(Mutex::new(pt)))
            }
            DomainRequest::Sva(mm) => {
                let mm = Mm::from_address_space(mm)
                    .ok_or(einval("SVA needs an iommu-emu Mm address space"))?;
                if !Arc::ptr_eq(mm.phys(), &self.phys) {
                    return Err(einval("the mm lives in another physical memory"));
                }
                let hook = Arc::new(SvaHook {
                    iommu: self.me.clone(),
                    did: did.did,
                });
                let weak: Weak<dyn SecondaryTlb> = Arc::downgrade(&hook) as Weak<dyn SecondaryTlb>;
                let reg = mm.register_secondary_tlb(weak);
                (
                    mm.pgd_root(),
                    Backing::Sva {
                        mm,
                        _hook: hook,
                        reg,
                    },
                )
            }
            DomainRequest::Nested { parent, .. } => {
                let p = parent
                    .driver_data::<EmuDomain>()
                    .ok_or(einval("nested parent belongs to another driver"))?;
                if !matches!(p.0.backing, Backing::Paging(_)) {
                    return Err(einval("nested parent is not a paging domain"));
                }
                (
                    Pfn(0),
                    Backing::Nested {
                        parent: p.0.clone(),
                    },
                )
            }
        };
        let inner = Arc::new(DomainInner { did, root, backing });
        Ok(DriverDomain {
            data: Box::new(EmuDomain(inner)),
            // Every kind may sit in a PASID entry except a blocked one (use remove instead).
            set_dev_pasid: !matches!(req, DomainRequest::Blocked),
        })
    }

    fn attach_dev(&self, domain: &Domain, dev: &Device) -> Result<()> {
        let entry = self.entry_for(domain)?;
        if domain.kind() == DomainKind::Sva {
            return Err(einval("an SVA domain cannot translate the RID"));
        }
        let mut hw = self.hw.write();
        let sid = *hw.by_id.get(&dev.id()).ok_or(enodev("device not probed"))?;
        if let Some(Some(ctx)) = hw.devices.get_mut(sid as usize) {
            ctx.rid = Some(entry);
        }
        self.flush_sid_pasid(&hw, sid, None);
        Ok(())
    }

    fn set_dev_pasid(
        &self,
        domain: &Domain,
        dev: &Device,
        pasid: u32,
        _old: Option<&Domain>,
    ) -> Result<()> {
        let entry = self.entry_for(domain)?;
        let mut hw = self.hw.write();
        let sid = *hw.by_id.get(&dev.id()).ok_or(enodev("device not probed"))?;
        let ctx = hw
            .devices
            .get_mut(sid as usize)
            .and_then(Option::as_mut)
            .ok_or(enodev("device not probed"))?;
        if pasid >= ctx.max_pasids {
            return Err(einval_v("PASID beyond the device's range", pasid.into()));
        }
        // A replace swaps the entry in one step under the lock: DMA never sees it blocked.
        ctx.pasids.insert(pasid, entry);
        self.flush_sid_pasid(&hw, sid, Some(pasid));
        Ok(())
    }

    fn remove_dev_pasid(&self, dev: &Device, pasid: u32, _domain: &Domain) {
        {
            let mut hw = self.hw.write();
            let Some(sid) = hw.by_id.get(&dev.id()).copied() else {
                return;
            };
            if let Some(Some(ctx)) = hw.devices.get_mut(sid as usize) {
                ctx.pasids.remove(&pasid);
            }
            self.flush_sid_pasid(&hw, sid, Some(pasid));
        }
        // Hardware lock released: the queue thread and DMA windows may proceed while we wait
        // for every request written before the entry was cleared to be reported (H2).
        self.prq.drain();
    }

    fn page_response(&self, dev: &Device, _req: &PageRequest, resp: PageResponse) {
        self.counters.page_responses.fetch_add(1, Relaxed);
        self.deliver_response(dev, resp);
    }

    /// Linux `map_pages`: the core's `Domain::map` (and so iommufd's IOAS) lands here.
    fn map_pages(&self, domain: &Domain, iova: u64, pa: u64, len: u64, prot: u32) -> Result<()> {
        let perms = Perms {
            read: prot & iommu_core::IOMMU_READ != 0,
            write: prot & iommu_core::IOMMU_WRITE != 0,
            exec: false,
            user: false,
        };
        EmuIommu::map(self, domain, iova, PhysAddr(pa), len, perms)
    }

    /// Linux `unmap_pages`, with the IOTLB and device-TLB invalidation.
    fn unmap_pages(&self, domain: &Domain, iova: u64, len: u64) -> Result<u64> {
        EmuIommu::unmap(self, domain, iova, len)
    }

    fn iova_to_phys(&self, domain: &Domain, iova: u64) -> Option<u64> {
        EmuIommu::iova_to_phys(self, domain, iova).map(|pa| pa.0)
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
