//! The soak's long-lived world: the IOMMU and its queue, `sva0` with its bound processes, `vmm0`
//! and its iommufd owner (which backs faulting pages), and the teardown.

use super::*;

/// An SVA tenant: a process bound to `sva0`.
pub(super) struct Tenant {
    pub(super) mm: Arc<Mm>,
    pub(super) bond: Option<SvaBond>,
    pub(super) pasid: u32,
}

/// The iommufd owner of `vmm0`.
pub(super) struct Owner {
    pub(super) ictx: Ictx,
    pub(super) dev_id: u32,
    pub(super) ioas: u32,
    pub(super) fault_id: u32,
    pub(super) hwpt: u32,
    pub(super) fd: FaultFd,
    /// Frames the handler backed, by IOVA page.
    pub(super) backed: Mutex<BTreeMap<u64, Pfn>>,
}

pub(super) type World = (
    Arc<PhysMem>,
    Arc<EmuIommu>,
    Arc<IopfQueue>,
    Endpoint,
    Endpoint,
    Owner,
    Vec<Tenant>,
);

/// The IOMMU with its page request queue thread and one IOPF worker, `sva0` with two bound
/// processes, and `vmm0` owned through iommufd on a fault-capable HWPT.
pub(super) fn build(obs: &Observer) -> Result<World, String> {
    let phys = Arc::new(PhysMem::new(FRAMES).map_err(|e| format!("physical memory: {e}"))?);
    let cfg = EmuIommuConfig {
        prq_depth: PRQ_DEPTH,
        ..EmuIommuConfig::default()
    };
    let iommu = EmuIommu::new("soak0", &phys, cfg).map_err(|e| format!("iommu: {e}"))?;
    let queue = IopfQueue::new("soak0", 1).map_err(|e| format!("iopf queue: {e}"))?;
    let ep_cfg = EndpointConfig {
        pri_credits: 256,
        max_group_pages: (PRQ_DEPTH / 2) as u32,
        ..EndpointConfig::default()
    };
    let endpoint = |group: &str, name: &str| {
        let g = Group::new(iommu.driver(), group);
        iommu
            .add_endpoint(&g, name, 1 << 16, ep_cfg.clone())
            .map_err(|e| format!("endpoint {name}: {e}"))
    };
    let sva = endpoint("sva", "sva0")?;
    let vmm = endpoint("vmm", "vmm0")?;
    obs.set_devices([sva.device().id().0, vmm.device().id().0]);
    iopf_queue_add_device(&queue, sva.device()).map_err(|e| format!("iopf add: {e}"))?;
    let tenants = (0..2)
        .map(|_| new_tenant(obs, &sva, &phys))
        .collect::<Result<Vec<_>, _>>()?;
    let owner = open_owner(&vmm)?;
    Ok((phys, iommu, queue, sva, vmm, owner, tenants))
}

/// A fresh process bound to `sva`.
pub(super) fn new_tenant(
    obs: &Observer,
    sva: &Endpoint,
    phys: &Arc<PhysMem>,
) -> Result<Tenant, String> {
    let mm = Mm::new(phys).map_err(|e| format!("mm: {e}"))?;
    bind(obs, sva, mm)
}

/// Binds `mm` to `sva` (first time, or again after an unbind) and restarts its PASID.
pub(super) fn bind(obs: &Observer, sva: &Endpoint, mm: Arc<Mm>) -> Result<Tenant, String> {
    let bond = sva_bind_device(sva.device(), &mm.as_address_space())
        .map_err(|e| format!("sva bind: {e}"))?;
    let pasid = bond.pasid();
    sva.start_pasid(pasid);
    obs.observe(Event::Bound { dev: 0, pasid });
    Ok(Tenant {
        mm,
        bond: Some(bond),
        pasid,
    })
}

pub(super) fn open_owner(vmm: &Endpoint) -> Result<Owner, String> {
    let e = |what: &'static str| move |err: iommu_core::Error| format!("iommufd {what}: {err}");
    let ictx = Ictx::new();
    let dev_id = ictx.bind_device(vmm.device().clone()).map_err(e("bind"))?;
    let ioas = ictx.ioas_alloc().map_err(e("ioas"))?;
    let (fault_id, fd) = ictx.fault_queue_alloc(0).map_err(e("fault queue"))?;
    let hwpt = ictx
        .hwpt_alloc(dev_id, ioas, IOMMU_HWPT_FAULT_ID_VALID, fault_id, 0, &[])
        .map_err(e("hwpt"))?;
    ictx.device_attach(dev_id, IOMMU_NO_PASID, hwpt)
        .map_err(e("attach"))?;
    Ok(Owner {
        ictx,
        dev_id,
        ioas,
        fault_id,
        hwpt,
        fd,
        backed: Mutex::new(BTreeMap::new()),
    })
}

/// The owner's fault handler backs one faulting page with a fresh frame (once per page).
pub(super) fn back_page(owner: &Owner, phys: &PhysMem, iova: u64) -> Result<(), String> {
    let mut backed = owner.backed.lock().unwrap_or_else(|p| p.into_inner());
    if backed.contains_key(&iova) {
        return Ok(());
    }
    let pfn = phys.alloc_frame().map_err(|e| format!("frame: {e}"))?;
    match owner.ictx.ioas_map(
        owner.ioas,
        Some(iova),
        pfn.addr().0,
        PAGE,
        IOMMU_READ | IOMMU_WRITE,
    ) {
        Ok(_) => {
            backed.insert(iova, pfn);
            Ok(())
        }
        Err(e) => {
            // The frame was allocated just above: freeing it cannot fail.
            let _ = phys.free_frame(pfn);
            Err(format!("map {iova:#x}: {e}"))
        }
    }
}

/// Unmaps `[base, base + len)` from the owner's IOAS and frees the frames backing it.
pub(super) fn unback_range(
    owner: &Owner,
    phys: &PhysMem,
    base: u64,
    len: u64,
) -> Result<(), String> {
    let mut backed = owner.backed.lock().unwrap_or_else(|p| p.into_inner());
    let pages: Vec<u64> = backed.range(base..base + len).map(|(k, _)| *k).collect();
    if pages.is_empty() {
        return Ok(());
    }
    owner
        .ictx
        .ioas_unmap(owner.ioas, base, len)
        .map_err(|e| format!("unmap {base:#x}+{len:#x}: {e}"))?;
    for p in pages {
        if let Some(pfn) = backed.remove(&p) {
            phys.free_frame(pfn)
                .map_err(|e| format!("free the frame backing {p:#x}: {e}"))?;
        }
    }
    Ok(())
}

/// Detaches the owner, frees what it backed and shuts the IOPF queue down.
pub(super) fn teardown(owner: &Owner, queue: &IopfQueue, sh: &Shared) {
    if let Err(e) = owner.ictx.device_detach(owner.dev_id, IOMMU_NO_PASID) {
        sh.problem(format!("iommufd: detach at the end: {e}"));
    }
    queue.shutdown();
}
