//! `IOMMU_IOAS_COPY` of an `IOMMU_IOAS_MAP_FILE` mapping shares the file's window: unmapping
//! the source does not unmap the user range the copy still maps (a later mmap could reuse
//! it); the window goes when the last mapping of it does.

use std::sync::{Arc, Mutex};

use iommu_core::{Result, IOMMU_READ};
use iommufd::user_memory::{SimMemory, UserMemory};
use iommufd::Ictx;

const PAGE: u64 = 4096;
/// Where the one file window of this test lands.
const WINDOW: u64 = 0x40_0000;

/// Simulated memory with files: `map_file` maps a window at [`WINDOW`] and logs its unmap.
struct WithFiles {
    mem: SimMemory,
    unmapped: Mutex<Vec<u64>>,
}

impl UserMemory for WithFiles {
    fn read(&self, uva: u64, buf: &mut [u8]) -> Result<()> {
        self.mem.read(uva, buf)
    }
    fn write(&self, uva: u64, data: &[u8]) -> Result<()> {
        self.mem.write(uva, data)
    }
    fn pin(&self, uva: u64, len: u64, writable: bool) -> Result<()> {
        self.mem.pin(uva, len, writable)
    }
    fn unpin(&self, uva: u64, len: u64) {
        self.mem.unpin(uva, len)
    }
    fn pin_count(&self, uva: u64) -> Result<u32> {
        self.mem.pin_count(uva)
    }
    fn map_file(&self, _fd: i32, _start: u64, len: u64, writable: bool) -> Result<u64> {
        self.mem.map(WINDOW, len, writable)?;
        Ok(WINDOW)
    }
    fn unmap_file(&self, uva: u64, _len: u64) {
        self.unmapped.lock().unwrap().push(uva);
    }
}

#[test]
fn a_copy_keeps_the_file_window_its_source_mapped() {
    let mem = Arc::new(WithFiles {
        mem: SimMemory::new(),
        unmapped: Mutex::new(Vec::new()),
    });
    let ictx = Ictx::with_user_memory(mem.clone());
    let (a, b) = (ictx.ioas_alloc().unwrap(), ictx.ioas_alloc().unwrap());
    let src = ictx
        .ioas_map_file(a, Some(0x10_0000), 3, 0, 2 * PAGE, IOMMU_READ)
        .unwrap();
    let dst = ictx
        .ioas_copy(b, Some(0x20_0000), a, src, 2 * PAGE, IOMMU_READ)
        .unwrap();
    ictx.ioas_unmap(a, src, 2 * PAGE).unwrap();
    assert!(
        mem.unmapped.lock().unwrap().is_empty(),
        "the copy still maps the window"
    );
    ictx.ioas_unmap(b, dst, 2 * PAGE).unwrap();
    assert_eq!(*mem.unmapped.lock().unwrap(), vec![WINDOW]);
}
