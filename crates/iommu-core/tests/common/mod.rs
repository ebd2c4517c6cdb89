//! Shared fixture: a mock IOMMU with one group of devices, and a way to capture everything a
//! rejected call must leave unchanged.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the fixture"
)]

use std::sync::Arc;

use iommu_core::mock::{Call, HwState, MockDriver};
use iommu_core::{
    iopf_queue_add_device, AddressSpace, Device, Domain, Group, GroupSnapshot, IommuDriver,
    IopfQueue, PageRequest, IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE as LAST,
    IOMMU_FAULT_PAGE_REQUEST_PASID_VALID as PV, IOMMU_FAULT_PERM_READ as R,
};

pub struct Fixture {
    pub iommu: Arc<MockDriver>,
    pub group: Arc<Group>,
    pub devs: Vec<Arc<Device>>,
}

impl Fixture {
    /// One group behind a fresh mock IOMMU, one device per entry of `max_pasids`.
    pub fn new(max_pasids: &[u32]) -> Self {
        Self::with_iommu(MockDriver::new("mock0"), max_pasids)
    }

    pub fn with_iommu(iommu: Arc<MockDriver>, max_pasids: &[u32]) -> Self {
        let group = Group::new(iommu.clone() as Arc<dyn IommuDriver>, "g0");
        let devs = max_pasids
            .iter()
            .enumerate()
            .map(|(i, &m)| group.add_device(format!("dev{i}"), m).expect("probe"))
            .collect();
        Self { iommu, group, devs }
    }

    pub fn dev(&self, i: usize) -> &Arc<Device> {
        &self.devs[i]
    }

    pub fn paging(&self) -> Arc<Domain> {
        Domain::alloc_paging(&self.devs[0]).expect("paging domain")
    }

    /// Everything observable about the group and its hardware.
    pub fn state(&self) -> State {
        State {
            group: self.group.snapshot(),
            hw: self.iommu.hw(),
        }
    }

    /// Driver calls made after the first `since`.
    pub fn calls_since(&self, since: usize) -> Vec<Call> {
        self.iommu.calls()[since..].to_vec()
    }

    pub fn assert_contract_kept(&self) {
        assert_eq!(self.iommu.contract_violations(), Vec::<String>::new());
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub group: GroupSnapshot,
    pub hw: HwState,
}

/// Asserts that `call` fails with `errno` and that neither the group nor the hardware changed.
/// `driver_calls_allowed`: whether the call may reach the driver (and then undo itself).
#[track_caller]
pub fn assert_rejected<T: std::fmt::Debug>(
    fx: &Fixture,
    errno: &str,
    driver_calls_allowed: bool,
    call: impl FnOnce() -> Result<T, iommu_core::Error>,
) {
    let before = fx.state();
    let calls_before = fx.iommu.call_count();
    let err = call().expect_err("call should have been rejected");
    assert_eq!(err.errno_name(), errno, "wrong errno: {err}");
    assert_eq!(fx.state(), before, "a rejected call changed state ({err})");
    if !driver_calls_allowed {
        assert_eq!(
            fx.calls_since(calls_before),
            vec![],
            "validation failure reached the driver"
        );
    }
    fx.assert_contract_kept();
}

/// An address space that resolves every fault inside `[0, limit)` and fails the rest.
pub struct Mm {
    pub id: u64,
    pub limit: u64,
    pub iommu: iommu_core::MmIommuData,
    pub faults: std::sync::Mutex<Vec<(u64, u32)>>,
}

impl Mm {
    pub fn new(id: u64) -> Arc<Self> {
        Arc::new(Self {
            id,
            limit: 1 << 30,
            iommu: Default::default(),
            faults: Default::default(),
        })
    }
}

impl iommu_core::AddressSpace for Mm {
    fn mm_id(&self) -> u64 {
        self.id
    }
    fn iommu_mm(&self) -> &iommu_core::MmIommuData {
        &self.iommu
    }
    fn handle_mm_fault(&self, addr: u64, perm: u32) -> iommu_core::Result<()> {
        self.faults.lock().unwrap().push((addr, perm));
        if addr < self.limit {
            Ok(())
        } else {
            Err(iommu_core::error::efault_v("no VMA", addr))
        }
    }
}

/// A one-device fixture whose IOPF queue is manual, and a process to bind.
pub fn manual_fixture() -> (Fixture, Arc<dyn AddressSpace>, Arc<Mm>, Arc<IopfQueue>) {
    let fx = Fixture::new(&[1 << 16]);
    let queue = IopfQueue::new_manual("manual");
    iopf_queue_add_device(&queue, fx.dev(0)).unwrap();
    let mm = Mm::new(1);
    let space: Arc<dyn AddressSpace> = mm.clone();
    (fx, space, mm, queue)
}

/// A one-request page request group (READ) for `pasid`.
pub fn last(pasid: u32, grpid: u32, addr: u64) -> PageRequest {
    PageRequest {
        flags: PV | LAST,
        pasid,
        grpid,
        perm: R,
        addr,
    }
}
