//! The emulated IOMMU's translations inside an open DMA window: an IOTLB hit beside an
//! uncontended `HashMap` page → frame lookup, and an IOTLB miss (a 4-level second-stage walk plus
//! the IOTLB fill; [`PAGES`] distinct pages cycled through the IOTLB with a stride that lands each
//! in another leaf table) beside `iommu-pt` walking a table of the same shape alone.

use std::collections::HashMap;
use std::sync::Arc;

use iommu_core::{Device, Group};
use iommu_emu::{EmuIommu, EmuIommuConfig, Endpoint, EndpointConfig, PhysMem};
use iommu_pt::{Access, ArenaTableMem, PageTable, Perms, SecondStage};

/// Distinct pages mapped.
pub const PAGES: u64 = 65_536;
/// The IOVA of the first page.
pub const BASE: u64 = 0x40_0000_0000;

/// The `i`-th address of the miss workload: a large odd stride, so consecutive translations land
/// in different leaf tables.
pub fn stride(i: u64) -> u64 {
    BASE + (i * 4099 % PAGES) * 4096
}

/// An emulated IOMMU with [`PAGES`] pages mapped in a device's default domain, and the same
/// mappings in a bare `iommu-pt` table and in a `HashMap`.
pub struct Translate {
    /// The IOMMU; open a window with [`EmuIommu::dma_window`].
    pub iommu: Arc<EmuIommu>,
    /// The device's source ID, for `DmaWindow::translate_source`.
    pub sid: u32,
    /// The device (for the by-device translation).
    pub dev: Arc<Device>,
    /// The same pages in a bare table.
    pub bare: PageTable<SecondStage, Arc<ArenaTableMem>>,
    /// The same pages as page → frame.
    pub map: HashMap<u64, u64>,
    _ep: Endpoint,
    _phys: Arc<PhysMem>,
}

impl Translate {
    /// Maps [`PAGES`] pages (all to one frame) in the three places.
    pub fn new() -> Self {
        let phys = Arc::new(PhysMem::new(1024).expect("physical memory"));
        let iommu = EmuIommu::new("bench-tr", &phys, EmuIommuConfig::default()).expect("iommu");
        let group = Group::new(iommu.driver(), "g0");
        let ep = iommu
            .add_endpoint(&group, "dev0", 1 << 20, EndpointConfig::default())
            .expect("endpoint");
        let domain = group.default_domain().expect("default domain");
        let frame = phys.alloc_frame().expect("frame");
        let mut bare =
            PageTable::new(Arc::new(ArenaTableMem::new(512).expect("arena"))).expect("table");
        let mut map = HashMap::new();
        for p in 0..PAGES {
            let iova = BASE + p * 4096;
            iommu
                .map(&domain, iova, frame.addr(), 4096, Perms::READ_WRITE)
                .expect("map");
            bare.map(iova, frame.addr(), 4096, Perms::READ_WRITE)
                .expect("map");
            map.insert(iova >> 12, frame.addr().0);
        }
        let dev = ep.device().clone();
        let sid = iommu.source_id(&dev).expect("source id");
        iommu
            .dma_window()
            .translate_source(sid, None, BASE, Access::READ)
            .expect("warm");
        Self {
            iommu,
            sid,
            dev,
            bare,
            map,
            _ep: ep,
            _phys: phys,
        }
    }
}

impl Default for Translate {
    fn default() -> Self {
        Self::new()
    }
}
