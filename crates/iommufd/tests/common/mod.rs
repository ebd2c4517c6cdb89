//! Shared fixture: one mock IOMMU, one group of devices bound to an `Ictx`, an IOAS, and helpers
//! to report faults, read records and count page responses per group.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the fixture"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use iommu_core::mock::MockDriver;
use iommu_core::{
    report_device_fault, Device, Group, IommuDriver, PageRequest, PageResponseCode,
    IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
    IOMMU_FAULT_PERM_READ,
};
use iommufd::uapi::{IommuHwptPageResponse, IommuHwptPgfault, IOMMU_HWPT_FAULT_ID_VALID};
use iommufd::{FaultFd, Ictx, FAULT_RECORD_SIZE};
use zerocopy::{FromBytes, IntoBytes};

pub use iommufd::IOMMU_NO_PASID as RID;

pub struct Fx {
    pub mock: Arc<MockDriver>,
    pub groups: Vec<Arc<Group>>,
    pub devs: Vec<Arc<Device>>,
    pub ictx: Ictx,
    pub dev_ids: Vec<u32>,
    pub ioas: u32,
}

impl Fx {
    /// `n` devices, each in its own group, all bound; one IOAS.
    pub fn new(n: usize) -> Self {
        Self::with_groups(&vec![1; n])
    }

    /// One group per entry of `per_group`, with that many devices each.
    pub fn with_groups(per_group: &[usize]) -> Self {
        Self::with_mock(MockDriver::new("mock0"), per_group)
    }

    /// As [`Fx::with_groups`] behind the given mock IOMMU.
    pub fn with_mock(mock: Arc<MockDriver>, per_group: &[usize]) -> Self {
        let ictx = Ictx::new();
        let mut groups = Vec::new();
        let mut devs = Vec::new();
        let mut dev_ids = Vec::new();
        for (g, &n) in per_group.iter().enumerate() {
            let group = Group::new(mock.clone() as Arc<dyn IommuDriver>, format!("g{g}"));
            // A device cannot join a group already owned for DMA: add all, then bind.
            let members: Vec<_> = (0..n)
                .map(|i| group.add_device(format!("g{g}d{i}"), 1 << 20).unwrap())
                .collect();
            for dev in members {
                dev_ids.push(ictx.bind_device(dev.clone()).unwrap());
                devs.push(dev);
            }
            groups.push(group);
        }
        let ioas = ictx.ioas_alloc().unwrap();
        Self {
            mock,
            groups,
            devs,
            ictx,
            dev_ids,
            ioas,
        }
    }

    /// A fault queue and a fault-capable paging HWPT on the IOAS delivering to it.
    pub fn fault_hwpt(&self, dev: usize, extra_flags: u32) -> (u32, FaultFd, u32) {
        let (fault_id, fd) = self.ictx.fault_queue_alloc(0).unwrap();
        let hwpt = self.hwpt_on(dev, fault_id, extra_flags);
        (fault_id, fd, hwpt)
    }

    /// A fault-capable paging HWPT delivering to `fault_id`.
    pub fn hwpt_on(&self, dev: usize, fault_id: u32, extra_flags: u32) -> u32 {
        self.ictx
            .hwpt_alloc(
                self.dev_ids[dev],
                self.ioas,
                IOMMU_HWPT_FAULT_ID_VALID | extra_flags,
                fault_id,
                0,
                &[],
            )
            .unwrap()
    }

    /// A paging HWPT without a fault queue.
    pub fn plain_hwpt(&self, dev: usize, flags: u32) -> u32 {
        self.ictx
            .hwpt_alloc(self.dev_ids[dev], self.ioas, flags, 0, 0, &[])
            .unwrap()
    }

    /// Reports one page request; `n_partial` partial requests then the last one.
    pub fn report_group(&self, dev: usize, pasid: u32, grpid: u32, n_partial: usize) {
        for r in self.try_report_group(dev, pasid, grpid, n_partial) {
            r.unwrap();
        }
    }

    /// As [`Fx::report_group`], returning each request's result.
    pub fn try_report_group(
        &self,
        dev: usize,
        pasid: u32,
        grpid: u32,
        n_partial: usize,
    ) -> Vec<iommu_core::Result<()>> {
        let pv = if pasid != RID {
            IOMMU_FAULT_PAGE_REQUEST_PASID_VALID
        } else {
            0
        };
        let mut out = Vec::new();
        for i in 0..=n_partial {
            let last = if i == n_partial {
                IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE
            } else {
                0
            };
            let req = PageRequest {
                flags: pv | last,
                pasid,
                grpid,
                perm: IOMMU_FAULT_PERM_READ,
                addr: 0x10_0000 * u64::from(grpid) + 0x1000 * i as u64,
            };
            out.push(report_device_fault(&self.devs[dev], req));
        }
        out
    }

    /// Every page response so far, per group id: the codes sent.
    pub fn responses(&self) -> BTreeMap<u32, Vec<PageResponseCode>> {
        let mut m: BTreeMap<u32, Vec<PageResponseCode>> = BTreeMap::new();
        for (_, r) in self.mock.responses() {
            m.entry(r.grpid).or_default().push(r.code);
        }
        m
    }

    /// Asserts the page responses so far are exactly `expected` (one per group).
    #[track_caller]
    pub fn assert_answered(&self, expected: &[(u32, PageResponseCode)]) {
        let want: BTreeMap<u32, Vec<PageResponseCode>> =
            expected.iter().map(|&(g, c)| (g, vec![c])).collect();
        assert_eq!(self.responses(), want);
    }
}

/// Reads with a `cap`-record buffer and returns the records read.
pub fn read_records(fd: &FaultFd, cap: usize) -> Vec<IommuHwptPgfault> {
    let mut buf = vec![0u8; cap * FAULT_RECORD_SIZE];
    let n = fd.read(&mut buf).unwrap();
    buf[..n]
        .chunks_exact(FAULT_RECORD_SIZE)
        .map(|c| IommuHwptPgfault::read_from_bytes(c).unwrap())
        .collect()
}

/// Response records as bytes.
pub fn responses(items: &[(u32, u32)]) -> Vec<u8> {
    items
        .iter()
        .flat_map(|&(cookie, code)| IommuHwptPageResponse { cookie, code }.as_bytes().to_vec())
        .collect()
}
