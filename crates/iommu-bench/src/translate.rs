//! The emulated IOMMU's translations inside an open DMA window: an IOTLB hit beside an
//! uncontended `HashMap` page → frame lookup, and IOTLB misses beside `iommu-pt` walking a table
//! of the same shape alone. Two kinds of miss:
//! - [`stride`]: [`PAGES`] distinct pages in 128 last-level tables, cycled with a stride that
//!   lands each in another one; the IOMMU's paging-structure cache holds most of those tables,
//!   so most misses read one entry (plus the IOTLB fill);
//! - [`cold_span`]: [`PAGES_PER_SPAN`] pages in each of [`SPANS`] 2 MiB spans, visited so that
//!   neither the paging-structure cache nor the IOTLB holds what the next walk needs: a full
//!   4-level walk (plus the fill), through tables the host's caches do hold.

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

/// Spans of the cold-walk workload: four times the paging-structure cache's 256 entries.
pub const SPANS: u64 = 1024;
/// Pages mapped at the start of each span of the cold-walk workload: `SPANS` × this is four
/// times the default IOTLB's 4,096 entries. The tables stay a few MiB, within the host's
/// last-level cache: "cold" is the emulator's caches, not the host's.
pub const PAGES_PER_SPAN: u64 = 16;
/// The IOVA of the cold-walk workload's first span.
pub const COLD_BASE: u64 = 0x80_0000_0000;

/// The `i`-th address of the cold-walk workload: consecutive ones land in different spans,
/// and a span comes back only after every other span has been visited, by which time neither
/// its last-level table in the paging-structure cache nor its page in the IOTLB is likely to
/// have survived.
pub fn cold_span(i: u64) -> u64 {
    let j = i.wrapping_mul(4099) % (SPANS * PAGES_PER_SPAN);
    COLD_BASE + (j % SPANS) * 0x20_0000 + (j / SPANS) * 4096
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
        let phys = Arc::new(PhysMem::new(1024 + 2 * SPANS as usize).expect("physical memory"));
        let iommu = EmuIommu::new("bench-tr", &phys, EmuIommuConfig::default()).expect("iommu");
        let group = Group::new(iommu.driver(), "g0");
        let ep = iommu
            .add_endpoint(&group, "dev0", 1 << 20, EndpointConfig::default())
            .expect("endpoint");
        let domain = group.default_domain().expect("default domain");
        let frame = phys.alloc_frame().expect("frame");
        let mut bare = PageTable::new(Arc::new(
            ArenaTableMem::new(512 + 2 * SPANS as usize).expect("arena"),
        ))
        .expect("table");
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
        for s in 0..SPANS {
            for p in 0..PAGES_PER_SPAN {
                let iova = COLD_BASE + s * 0x20_0000 + p * 4096;
                iommu
                    .map(&domain, iova, frame.addr(), 4096, Perms::READ_WRITE)
                    .expect("map");
                bare.map(iova, frame.addr(), 4096, Perms::READ_WRITE)
                    .expect("map");
            }
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
