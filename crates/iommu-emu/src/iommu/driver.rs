//! The [`IommuDriver`] implementation: what the core's groups, domains and IOPF code call
//! (Linux: the `iommu_ops` of `intel/iommu.c`).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use iommu_core::error::{einval, einval_v, enodev, Condition};
use iommu_core::{
    Capabilities, Device, Domain, DomainKind, DomainRequest, DriverDomain, IommuDriver,
    PageRequest, PageResponse, Result,
};
use iommu_pt::{Perms, PhysAddr};

use super::context::DevCtx;
use super::EmuIommu;

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

    fn dev_has_pri(&self, dev: &Device) -> bool {
        self.requester_has_pri(dev.id())
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
        self.disconnect_requester(dev.id());
    }

    fn domain_alloc(&self, _dev: &Device, req: &DomainRequest<'_>) -> Result<DriverDomain> {
        self.alloc_domain(req)
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
            return Err(einval_v("PASID beyond the device's range", pasid.into())
                .because(Condition::PasidOutOfRange));
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

    fn page_response(&self, dev: &Device, req: &PageRequest, resp: PageResponse) {
        self.counters.page_responses.fetch_add(1, Relaxed);
        self.deliver_response(dev, req, resp);
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
