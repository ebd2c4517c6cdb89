//! Simulated physical memory: [`PhysMem`], a bounded pool of 4 KiB frames.
//!
//! Data frames and page-table pages come from the same pool (as on a real machine, the IOMMU
//! walks tables that live in RAM): `PhysMem` implements [`iommu_pt::TableMem`]. The pool is an
//! [`ArenaTableMem`] — one zeroed allocation of `[AtomicU64; 512]` frames — because that gives
//! both properties the emulator needs without `unsafe`:
//!
//! * a frame is resolved by a subtraction and a bounds check (no lock, no pointer chase), which
//!   keeps the IOMMU's walk and the DMA engine's copies lock-free;
//! * every word is an atomic, so CPU threads and DMA threads may read and write the same frame at
//!   the same time (a racing access sees each 64-bit word before or after a store, never torn
//!   inside a word — the same guarantee a coherent machine gives for aligned 8-byte accesses).
//!
//! Measured against the alternative, a lock per frame (`cargo bench -p iommu-bench --bench
//! fault_path -- phys/`, figures in BENCHMARKS.md): an uncontended 4 KiB write costs about 20 ns
//! more with atomic words than with a `Mutex<[u8; 4096]>` (SIMD memcpy; `Relaxed` atomic stores
//! are plain 8-byte moves but are not vectorised). We keep atomic words anyway: the difference is
//! small against the fault path (µs per group), page-table
//! pages must be atomic words for the lock-free walker (so one representation serves both), and
//! a frame lock would serialise CPU and device access to one page, which real memory does not.
//! Sub-word edges of an unaligned write use a compare-exchange loop so a concurrent writer of the
//! neighbouring bytes is never undone.
//!
//! Capacity is fixed at creation; running out is `ENOMEM`, never a panic. Frames are handed out
//! zeroed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use iommu_core::error::{efault_v, einval_v, enomem};
use iommu_core::Result;
use iommu_pt::spec::ENTRIES;
use iommu_pt::{ArenaTableMem, Pfn, PhysAddr, PtError, TableMem};

/// Bytes in one frame.
pub const PAGE_SIZE: u64 = 4096;
/// Shift from an address to its frame number.
pub const PAGE_SHIFT: u32 = 12;
const PAGE_MASK: u64 = PAGE_SIZE - 1;

/// One frame's contents: 512 atomic 64-bit words.
pub type Frame = [AtomicU64; ENTRIES];

/// Simulated RAM: a fixed number of 4 KiB frames shared by page tables, processes and DMA.
///
/// All methods take `&self` and may be called from any thread. Data accesses are bounds checked
/// per frame: an address that is not inside an allocated-or-free frame of this memory is
/// `EFAULT` (a DMA there is an Unsupported Request on a real bus).
pub struct PhysMem {
    arena: ArenaTableMem,
}

impl PhysMem {
    /// Memory of `frames` frames. Frame numbers start at [`ArenaTableMem::DEFAULT_BASE`], so the
    /// first frame's physical address is 64 GiB.
    ///
    /// # Panics
    /// Only if the host cannot allocate `frames × 4 KiB` (the allocation is requested zeroed,
    /// so untouched frames cost no host memory on an OS with lazy zero pages).
    pub fn new(frames: usize) -> PhysMem {
        PhysMem {
            arena: ArenaTableMem::new(frames),
        }
    }

    /// Memory of `bytes` (rounded up to whole frames).
    pub fn with_bytes(bytes: u64) -> PhysMem {
        Self::new(bytes.div_ceil(PAGE_SIZE) as usize)
    }

    /// Touches every frame once, so the host backs the whole memory now rather than on first
    /// access (the arena is allocated zeroed and lazily by the host OS). Benchmarks call it so
    /// they measure the emulator, not the host's first-touch page faults. Contents are unchanged.
    pub fn prefault(&self) {
        for i in 0..self.capacity() as u64 {
            if let Some(f) = self.frame(Pfn(ArenaTableMem::DEFAULT_BASE.0 + i)) {
                // A write (an idempotent RMW could be compiled to a read, which would only map
                // the host's shared zero page).
                let w = f[0].load(Relaxed);
                let _ = f[0].compare_exchange(w, w, Relaxed, Relaxed);
            }
        }
    }

    /// The most frames this memory holds.
    pub fn capacity(&self) -> usize {
        self.arena.capacity()
    }

    /// Frames currently allocated (data and page tables).
    pub fn frames_in_use(&self) -> usize {
        self.arena.tables_in_use()
    }

    /// Allocates a zeroed frame. `ENOMEM` when the memory is exhausted.
    pub fn alloc_frame(&self) -> Result<Pfn> {
        self.arena
            .alloc_table()
            .map_err(|_| enomem("physical memory exhausted"))
    }

    /// Returns a frame. The caller guarantees nothing still uses it: no mapping, no cached
    /// translation (IOTLB or device TLB) and no DMA in flight.
    ///
    /// # Panics
    /// If `pfn` is not an allocated frame of this memory (a double free is a bug in the caller,
    /// not a runtime condition).
    pub fn free_frame(&self, pfn: Pfn) {
        self.arena.free_table(pfn);
    }

    /// The frame `pfn`, for word-level access. `None` outside this memory.
    #[inline]
    pub fn frame(&self, pfn: Pfn) -> Option<&Frame> {
        self.arena.table(pfn)
    }

    #[inline]
    fn frame_of(&self, pa: u64) -> Result<&Frame> {
        self.frame(Pfn(pa >> PAGE_SHIFT))
            .ok_or(efault_v("physical address outside memory", pa))
    }

    /// Splits `[pa, pa + len)` into per-frame chunks `(frame, offset, chunk_len, done)`.
    fn for_each_chunk(
        &self,
        pa: PhysAddr,
        len: usize,
        mut f: impl FnMut(&Frame, usize, usize, usize),
    ) -> Result<()> {
        let end =
            pa.0.checked_add(len as u64)
                .ok_or(einval_v("physical range overflows", pa.0))?;
        // Check every frame first so a failing access changes nothing.
        let mut a = pa.0 & !PAGE_MASK;
        while a < end {
            self.frame_of(a)?;
            a += PAGE_SIZE;
        }
        let mut done = 0usize;
        while done < len {
            let addr = pa.0 + done as u64;
            let off = (addr & PAGE_MASK) as usize;
            let n = (PAGE_SIZE as usize - off).min(len - done);
            f(self.frame_of(addr)?, off, n, done);
            done += n;
        }
        Ok(())
    }

    /// Copies `buf.len()` bytes starting at `pa` into `buf`. `EFAULT` if any byte is outside
    /// memory (then `buf` is untouched).
    pub fn read(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<()> {
        self.for_each_chunk(pa, buf.len(), |frame, off, n, done| {
            read_frame(frame, off, &mut buf[done..done + n]);
        })
    }

    /// Copies `data` to memory starting at `pa`. `EFAULT` if any byte is outside memory (then
    /// nothing is written).
    pub fn write(&self, pa: PhysAddr, data: &[u8]) -> Result<()> {
        self.for_each_chunk(pa, data.len(), |frame, off, n, done| {
            write_frame(frame, off, &data[done..done + n]);
        })
    }

    /// Sets `len` bytes starting at `pa` to `byte`. `EFAULT` as [`PhysMem::write`].
    pub fn fill(&self, pa: PhysAddr, len: usize, byte: u8) -> Result<()> {
        self.for_each_chunk(pa, len, |frame, off, n, _| fill_frame(frame, off, n, byte))
    }
}

/// Reads `buf.len()` bytes at byte offset `off` of `frame` (`off + len <= 4096`).
#[inline]
pub fn read_frame(frame: &Frame, off: usize, buf: &mut [u8]) {
    let mut i = 0;
    let len = buf.len();
    // Leading bytes up to a word boundary.
    while i < len && !(off + i).is_multiple_of(8) {
        buf[i] = byte_at(frame, off + i);
        i += 1;
    }
    // Whole words (iterators: no per-word bounds checks).
    let words = (len - i) / 8;
    let first = (off + i) / 8;
    for (w, out) in frame[first..first + words]
        .iter()
        .zip(buf[i..i + words * 8].chunks_exact_mut(8))
    {
        out.copy_from_slice(&w.load(Relaxed).to_le_bytes());
    }
    i += words * 8;
    while i < len {
        buf[i] = byte_at(frame, off + i);
        i += 1;
    }
}

#[inline]
fn byte_at(frame: &Frame, at: usize) -> u8 {
    (frame[at / 8].load(Relaxed) >> ((at % 8) * 8)) as u8
}

/// Merges `bytes` into word `idx` at byte `shift`, atomically (a racing writer of the other
/// bytes of the word keeps its bytes).
#[inline]
fn merge_word(frame: &Frame, idx: usize, first: usize, bytes: &[u8]) {
    let mut mask = 0u64;
    let mut val = 0u64;
    for (k, b) in bytes.iter().enumerate() {
        let sh = (first + k) * 8;
        mask |= 0xff << sh;
        val |= u64::from(*b) << sh;
    }
    let _ = frame[idx].fetch_update(Relaxed, Relaxed, |w| Some((w & !mask) | val));
}

/// Writes `data` at byte offset `off` of `frame` (`off + len <= 4096`).
#[inline]
pub fn write_frame(frame: &Frame, off: usize, data: &[u8]) {
    let len = data.len();
    let mut i = 0;
    if !off.is_multiple_of(8) {
        let n = (8 - off % 8).min(len);
        merge_word(frame, off / 8, off % 8, &data[..n]);
        i = n;
    }
    let words = (len - i) / 8;
    let first = (off + i) / 8;
    for (w, src) in frame[first..first + words]
        .iter()
        .zip(data[i..i + words * 8].chunks_exact(8))
    {
        let mut b = [0u8; 8];
        b.copy_from_slice(src);
        w.store(u64::from_le_bytes(b), Relaxed);
    }
    i += words * 8;
    if i < len {
        merge_word(frame, (off + i) / 8, 0, &data[i..]);
    }
}

/// Sets `len` bytes at byte offset `off` of `frame` to `byte`.
#[inline]
pub fn fill_frame(frame: &Frame, off: usize, len: usize, byte: u8) {
    let word = u64::from_le_bytes([byte; 8]);
    let mut i = 0;
    if !off.is_multiple_of(8) {
        let n = (8 - off % 8).min(len);
        merge_word(frame, off / 8, off % 8, &[byte; 8][..n]);
        i = n;
    }
    let words = (len - i) / 8;
    let first = (off + i) / 8;
    for w in &frame[first..first + words] {
        w.store(word, Relaxed);
    }
    i += words * 8;
    if i < len {
        merge_word(frame, (off + i) / 8, 0, &[byte; 8][..len - i]);
    }
}

impl TableMem for PhysMem {
    type Table<'a> = &'a Frame;

    #[inline]
    fn table(&self, pfn: Pfn) -> Option<Self::Table<'_>> {
        self.arena.table(pfn)
    }

    fn alloc_table(&self) -> core::result::Result<Pfn, PtError> {
        self.arena.alloc_table()
    }

    fn free_table(&self, pfn: Pfn) {
        self.arena.free_table(pfn);
    }
}

impl core::fmt::Debug for PhysMem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PhysMem")
            .field("capacity", &self.capacity())
            .field("frames_in_use", &self.frames_in_use())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_zeroed_and_exhaustion_is_enomem() {
        let mem = PhysMem::new(2);
        let a = mem.alloc_frame().unwrap();
        mem.write(a.addr(), &[0xab; 4096]).unwrap();
        mem.free_frame(a);
        let b = mem.alloc_frame().unwrap();
        let _c = mem.alloc_frame().unwrap();
        let mut buf = [1u8; 4096];
        mem.read(b.addr(), &mut buf).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        assert_eq!(mem.alloc_frame().unwrap_err().errno_name(), "ENOMEM");
    }

    #[test]
    fn unaligned_writes_keep_neighbouring_bytes() {
        let mem = PhysMem::new(2);
        let f = mem.alloc_frame().unwrap();
        let g = mem.alloc_frame().unwrap();
        assert_eq!(g.0, f.0 + 1, "arena frames are consecutive");
        mem.fill(f.addr(), 8192, 0x11).unwrap();
        let data: Vec<u8> = (0..37u8).collect();
        let at = PhysAddr(f.addr().0 + 4090);
        mem.write(at, &data).unwrap();
        let mut back = vec![0u8; 41];
        mem.read(PhysAddr(at.0 - 2), &mut back).unwrap();
        assert_eq!(&back[..2], &[0x11, 0x11]);
        assert_eq!(&back[2..39], &data[..]);
        assert_eq!(&back[39..], &[0x11, 0x11]);
    }

    #[test]
    fn access_outside_memory_is_efault_and_changes_nothing() {
        let mem = PhysMem::new(1);
        let f = mem.alloc_frame().unwrap();
        let err = mem
            .write(PhysAddr(f.addr().0 + 4000), &[7; 200])
            .unwrap_err();
        assert_eq!(err.errno_name(), "EFAULT");
        let mut b = [9u8; 96];
        mem.read(PhysAddr(f.addr().0 + 4000), &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0));
    }
}
