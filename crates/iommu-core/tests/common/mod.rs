//! Shared fixture: a mock IOMMU with one group of devices, and a way to capture everything a
//! rejected call must leave unchanged.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the fixture"
)]

use std::sync::Arc;

use iommu_core::mock::{Call, HwState, MockDriver};
use iommu_core::{Device, Domain, Group, GroupSnapshot, IommuDriver};

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
