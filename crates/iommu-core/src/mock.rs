//! A software IOMMU driver that only keeps books: [`MockDriver`].
//!
//! It records every call the core makes, models the hardware state those calls produce (which
//! domain each RID and each (device, PASID) points at), flags calls that break the driver
//! contract (programming a PASID twice, removing one that is not programmed), and fails any call
//! it is told to. Tests use it to check rollback and "rejected calls have no side effects";
//! the simulator uses it where no page tables are needed.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use parking_lot::Mutex;

use crate::device::{Device, DeviceId};
use crate::domain::{Domain, DomainId, DomainKind};
use crate::driver::{Capabilities, DomainRequest, DriverDomain, IommuDriver};
use crate::error::{eopnotsupp, Error, Result};
use crate::fault::{PageRequest, PageResponse};

/// Pages the mock maps at most, over all its domains (4 GiB of 4 KiB pages).
pub const MOCK_MAX_MAPPED_PAGES: u64 = 1 << 20;

/// One call the core made into the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `probe_device`.
    ProbeDevice {
        /// The device.
        dev: DeviceId,
    },
    /// `release_device`.
    ReleaseDevice {
        /// The device.
        dev: DeviceId,
    },
    /// `domain_alloc` (the domain has no ID yet when the driver is asked).
    DomainAlloc {
        /// The device the domain is for.
        dev: DeviceId,
        /// The requested kind.
        kind: DomainKind,
    },
    /// `attach_dev`.
    AttachDev {
        /// The domain.
        domain: DomainId,
        /// The device.
        dev: DeviceId,
    },
    /// `set_dev_pasid`.
    SetDevPasid {
        /// The new domain.
        domain: DomainId,
        /// The device.
        dev: DeviceId,
        /// The PASID.
        pasid: u32,
        /// The domain replaced, if a replace.
        old: Option<DomainId>,
    },
    /// `page_response`.
    PageResponse {
        /// The device.
        dev: DeviceId,
        /// The response sent.
        resp: PageResponse,
    },
    /// `remove_dev_pasid`.
    RemoveDevPasid {
        /// The device.
        dev: DeviceId,
        /// The PASID.
        pasid: u32,
        /// The domain that was attached.
        domain: DomainId,
    },
}

/// The kinds of driver call, for fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `probe_device`.
    ProbeDevice,
    /// `release_device` (cannot fail; listed for matching only).
    ReleaseDevice,
    /// `domain_alloc`.
    DomainAlloc,
    /// `attach_dev`.
    AttachDev,
    /// `set_dev_pasid`.
    SetDevPasid,
    /// `remove_dev_pasid` (cannot fail; listed for matching only).
    RemoveDevPasid,
    /// `page_response` (cannot fail; listed for matching only).
    PageResponse,
}

impl Call {
    /// The kind of call.
    pub fn op(&self) -> Op {
        match self {
            Self::ProbeDevice { .. } => Op::ProbeDevice,
            Self::ReleaseDevice { .. } => Op::ReleaseDevice,
            Self::DomainAlloc { .. } => Op::DomainAlloc,
            Self::AttachDev { .. } => Op::AttachDev,
            Self::SetDevPasid { .. } => Op::SetDevPasid,
            Self::RemoveDevPasid { .. } => Op::RemoveDevPasid,
            Self::PageResponse { .. } => Op::PageResponse,
        }
    }
}

type Matcher = Box<dyn Fn(&Call) -> bool + Send + Sync>;

struct FailRule {
    matches: Matcher,
    error: Error,
    /// Matching calls to let through before failing.
    skip: usize,
    /// Fail only once (then the rule is spent), or every time.
    once: bool,
}

/// What the mock hardware is programmed to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HwState {
    /// Paging-domain mappings: (domain, 4 KiB page IOVA) → (physical page, prot).
    pub maps: BTreeMap<(DomainId, u64), (u64, u32)>,
    /// Each device's RID domain.
    pub rid: BTreeMap<DeviceId, DomainId>,
    /// Each programmed (device, PASID) and its domain.
    pub pasids: BTreeMap<(DeviceId, u32), DomainId>,
}

#[derive(Default)]
struct Books {
    calls: Vec<Call>,
    hw: HwState,
    rules: Vec<FailRule>,
    contract_violations: Vec<String>,
}

/// The driver state a mock domain carries.
#[derive(Debug)]
pub struct MockDomain {
    /// The requested kind.
    pub kind: DomainKind,
}

/// A recording, fault-injecting IOMMU driver.
pub struct MockDriver {
    name: String,
    caps: Capabilities,
    no_pasid_kinds: BTreeSet<DomainKindKey>,
    /// Calls are kept for [`MockDriver::calls`] (every test mock); a long-lived mock (the
    /// iommufd selftest's IOMMU under the preload) keeps none, so it does not grow per call.
    record: bool,
    books: Mutex<Books>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct DomainKindKey(u32);

impl MockDriver {
    /// A mock IOMMU with default (fully featured) capabilities.
    pub fn new(name: impl Into<String>) -> Arc<Self> {
        Self::with_capabilities(name, Capabilities::default())
    }

    /// A mock IOMMU with the given capabilities. Every domain kind supports PASID attach until
    /// [`MockDriver::without_pasid_for`] says otherwise.
    pub fn with_capabilities(name: impl Into<String>, caps: Capabilities) -> Arc<Self> {
        Self::build(name.into(), caps, BTreeSet::new(), true)
    }

    /// As [`MockDriver::with_capabilities`], keeping no call log: [`MockDriver::calls`] and
    /// [`MockDriver::responses`] stay empty; the hardware state, contract checks and fault
    /// rules work as ever. For a mock that runs for as long as a process does.
    pub fn unrecorded(name: impl Into<String>, caps: Capabilities) -> Arc<Self> {
        Self::build(name.into(), caps, BTreeSet::new(), false)
    }

    fn build(
        name: String,
        caps: Capabilities,
        no_pasid_kinds: BTreeSet<DomainKindKey>,
        record: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            caps,
            no_pasid_kinds,
            record,
            books: Mutex::new(Books::default()),
        })
    }

    /// A mock whose domains of `kinds` cannot be attached to a PASID.
    pub fn without_pasid_for(
        name: impl Into<String>,
        caps: Capabilities,
        kinds: &[DomainKind],
    ) -> Arc<Self> {
        let kinds = kinds
            .iter()
            .map(|k| DomainKindKey(k.linux_type()))
            .collect();
        Self::build(name.into(), caps, kinds, true)
    }

    /// The `n`-th (1-based) future call of kind `op` fails with `error`, once.
    pub fn fail_nth(&self, op: Op, n: usize, error: Error) {
        self.fail_rule(
            move |c: &Call| c.op() == op,
            error,
            n.saturating_sub(1),
            true,
        );
    }

    /// Every future call matching `matches` fails with `error`, until [`MockDriver::heal`].
    pub fn fail_matching(
        &self,
        matches: impl Fn(&Call) -> bool + Send + Sync + 'static,
        error: Error,
    ) {
        self.fail_rule(matches, error, 0, false);
    }

    fn fail_rule(
        &self,
        matches: impl Fn(&Call) -> bool + Send + Sync + 'static,
        error: Error,
        skip: usize,
        once: bool,
    ) {
        self.books.lock().rules.push(FailRule {
            matches: Box::new(matches),
            error,
            skip,
            once,
        });
    }

    /// Removes every failure rule.
    pub fn heal(&self) {
        self.books.lock().rules.clear();
    }

    /// Every call so far, in order (failed calls included).
    pub fn calls(&self) -> Vec<Call> {
        self.books.lock().calls.clone()
    }

    /// How many calls have been made so far.
    pub fn call_count(&self) -> usize {
        self.books.lock().calls.len()
    }

    /// The modelled hardware state.
    pub fn hw(&self) -> HwState {
        self.books.lock().hw.clone()
    }

    /// Every page response sent, in order.
    pub fn responses(&self) -> Vec<(DeviceId, PageResponse)> {
        self.books
            .lock()
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::PageResponse { dev, resp } => Some((*dev, *resp)),
                _ => None,
            })
            .collect()
    }

    /// Calls that broke the driver contract (empty for a correct core).
    pub fn contract_violations(&self) -> Vec<String> {
        self.books.lock().contract_violations.clone()
    }

    /// Records `call`; returns the injected error if a rule says this call fails.
    fn enter(&self, books: &mut Books, call: Call) -> Result<()> {
        if self.record {
            books.calls.push(call.clone());
        }
        let mut hit = None;
        for (i, rule) in books.rules.iter_mut().enumerate() {
            if (rule.matches)(&call) {
                if rule.skip > 0 {
                    rule.skip -= 1;
                } else {
                    hit = Some((i, rule.error, rule.once));
                    break;
                }
            }
        }
        match hit {
            Some((i, error, once)) => {
                if once {
                    books.rules.remove(i);
                }
                Err(error)
            }
            None => Ok(()),
        }
    }
}

impl IommuDriver for MockDriver {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn probe_device(&self, dev: &Device) -> Result<()> {
        let mut b = self.books.lock();
        self.enter(&mut b, Call::ProbeDevice { dev: dev.id() })
    }

    fn release_device(&self, dev: &Device) {
        let mut b = self.books.lock();
        let _ = self.enter(&mut b, Call::ReleaseDevice { dev: dev.id() });
        b.hw.rid.remove(&dev.id());
        if b.hw.pasids.keys().any(|(d, _)| *d == dev.id()) {
            let msg = format!("release_device({}) with PASIDs programmed", dev.id());
            b.contract_violations.push(msg);
        }
    }

    fn domain_alloc(&self, dev: &Device, req: &DomainRequest<'_>) -> Result<DriverDomain> {
        let kind = req.kind();
        let mut b = self.books.lock();
        self.enter(
            &mut b,
            Call::DomainAlloc {
                dev: dev.id(),
                kind,
            },
        )?;
        if (kind == DomainKind::Sva && !self.caps.sva)
            || (kind == DomainKind::Nested && !self.caps.nesting)
        {
            return Err(eopnotsupp("mock IOMMU lacks the capability"));
        }
        Ok(DriverDomain {
            data: Box::new(MockDomain { kind }),
            set_dev_pasid: !self
                .no_pasid_kinds
                .contains(&DomainKindKey(kind.linux_type())),
        })
    }

    fn attach_dev(&self, domain: &Domain, dev: &Device) -> Result<()> {
        let mut b = self.books.lock();
        self.enter(
            &mut b,
            Call::AttachDev {
                domain: domain.id(),
                dev: dev.id(),
            },
        )?;
        b.hw.rid.insert(dev.id(), domain.id());
        Ok(())
    }

    fn set_dev_pasid(
        &self,
        domain: &Domain,
        dev: &Device,
        pasid: u32,
        old: Option<&Domain>,
    ) -> Result<()> {
        let mut b = self.books.lock();
        self.enter(
            &mut b,
            Call::SetDevPasid {
                domain: domain.id(),
                dev: dev.id(),
                pasid,
                old: old.map(Domain::id),
            },
        )?;
        let current = b.hw.pasids.get(&(dev.id(), pasid)).copied();
        if current != old.map(Domain::id) {
            let msg = format!(
                "set_dev_pasid({}, pasid {pasid}) claims old {:?} but hardware has {:?}",
                dev.id(),
                old.map(Domain::id),
                current
            );
            b.contract_violations.push(msg);
        }
        b.hw.pasids.insert((dev.id(), pasid), domain.id());
        Ok(())
    }

    fn remove_dev_pasid(&self, dev: &Device, pasid: u32, domain: &Domain) {
        let mut b = self.books.lock();
        let _ = self.enter(
            &mut b,
            Call::RemoveDevPasid {
                dev: dev.id(),
                pasid,
                domain: domain.id(),
            },
        );
        if b.hw.pasids.remove(&(dev.id(), pasid)) != Some(domain.id()) {
            let msg = format!(
                "remove_dev_pasid({}, pasid {pasid}) of a PASID not on {}",
                dev.id(),
                domain.id()
            );
            b.contract_violations.push(msg);
        }
    }

    fn page_response(&self, dev: &Device, _req: &PageRequest, resp: PageResponse) {
        let mut b = self.books.lock();
        let _ = self.enter(
            &mut b,
            Call::PageResponse {
                dev: dev.id(),
                resp,
            },
        );
    }

    fn map_pages(&self, domain: &Domain, iova: u64, pa: u64, len: u64, prot: u32) -> Result<()> {
        if iova.checked_add(len).is_none() {
            return Err(crate::error::einval_v("IOVA range wraps", iova));
        }
        if pa.checked_add(len).is_none() {
            return Err(crate::error::einval_v("physical range wraps", pa));
        }
        let mut b = self.books.lock();
        // The books hold one entry per page: a bound keeps a hostile length from taking all
        // memory, as a real IOMMU runs out of page-table memory.
        let total = (b.hw.maps.len() as u64).saturating_add(len / 4096);
        if total > MOCK_MAX_MAPPED_PAGES {
            return Err(crate::error::enomem_v(
                "mock IOMMU maps at most MOCK_MAX_MAPPED_PAGES pages",
                total,
            ));
        }
        let pages = (0..len / 4096).map(|i| (domain.id(), iova + i * 4096));
        if let Some((_, at)) = pages.clone().find(|k| b.hw.maps.contains_key(k)) {
            return Err(crate::error::eexist_v("IOVA already mapped", at));
        }
        for (i, key) in pages.enumerate() {
            b.hw.maps.insert(key, (pa + i as u64 * 4096, prot));
        }
        Ok(())
    }

    fn unmap_pages(&self, domain: &Domain, iova: u64, len: u64) -> Result<u64> {
        let mut b = self.books.lock();
        let n = (0..len / 4096)
            .filter(|i| b.hw.maps.remove(&(domain.id(), iova + i * 4096)).is_some())
            .count();
        Ok(n as u64 * 4096)
    }

    fn iova_to_phys(&self, domain: &Domain, iova: u64) -> Option<u64> {
        let b = self.books.lock();
        b.hw.maps
            .get(&(domain.id(), iova & !0xfff))
            .map(|(pa, _)| pa + (iova & 0xfff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Group;

    #[test]
    fn an_unrecorded_mock_keeps_no_log_but_still_injects_failures() {
        let mock = MockDriver::unrecorded("quiet", Capabilities::default());
        let group = Group::new(mock.clone(), "g");
        let dev = group.add_device("d", 16).unwrap();
        mock.fail_nth(Op::DomainAlloc, 1, crate::error::enomem("injected"));
        assert!(crate::Domain::alloc_paging(&dev).is_err());
        assert!(crate::Domain::alloc_paging(&dev).is_ok());
        assert_eq!(mock.call_count(), 0);
        assert!(mock.calls().is_empty());
        let recorded = MockDriver::new("loud");
        let group = Group::new(recorded.clone(), "g");
        let dev = group.add_device("d", 16).unwrap();
        crate::Domain::alloc_paging(&dev).unwrap();
        assert!(recorded.call_count() > 0);
    }
}
