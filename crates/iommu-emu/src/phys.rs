//! Simulated physical memory: [`PhysMem`], a bounded pool of 4 KiB frames on rust-vmm's
//! `vm-memory`.
//!
//! Data frames and page-table pages come from the same pool (as on a real machine, the IOMMU
//! walks tables that live in RAM): `PhysMem` implements [`iommu_pt::TableMem`].
//!
//! # Backend: one anonymous `GuestMemoryMmap` region
//! Every frame lives in a single [`GuestMemoryMmap`] region whose guest addresses are the
//! emulator's physical addresses: frame numbers start at [`ArenaTableMem::DEFAULT_BASE`] (64 GiB),
//! as they always have, so a [`Pfn::addr`] *is* a `GuestAddress` of [`PhysMem::guest_memory`],
//! and rust-vmm device code (virtio queues, `IommuMemory`) reaches the same bytes the emulator's
//! DMA engine and `Mm` do. We chose `GuestMemoryMmap` over a custom `GuestMemoryBackend` over
//! our own frames because handing out `VolatileSlice`s of our own memory needs `unsafe`
//! (`VolatileSlice::new` takes a raw pointer), which this crate does not allow; the mmap
//! backend builds them inside `vm-memory`. The mapping is anonymous and `MAP_NORESERVE`, so a
//! large memory costs the host nothing until a frame is touched.
//!
//! # Access
//! Data goes through `vm-memory`'s safe APIs only: [`Bytes::read_slice`]/[`Bytes::write_slice`]
//! on the region (a `memcpy` inside `vm-memory`; racing CPU and device accesses to one frame
//! see bytes before or after each other's copy, as on a coherent machine). Page-table entries
//! are 64-bit words reached through [`VolatileMemory::get_atomic_ref`] as `AtomicU64`, so the
//! lock-free walker, A/D-bit updates and the mapper share tables exactly as they did when the
//! frames were an array of atomics. A range is bounds-checked before any byte moves, so a
//! failing access changes nothing.
//!
//! What this costs against the previous frames of atomic words (same machine, interleaved runs,
//! issue 13): data got cheaper — `memcpy` instead of word-by-word atomic stores — with a 4 KiB
//! write at ~55-65 ns instead of ~115-170 ns and a 64 KiB resident DMA at ~1.6-2.0 µs instead of
//! ~2.2-2.7 µs (`cargo bench -p iommu-bench --bench fault_path -- 'dma/|phys/'`); a page walk
//! got dearer by the bounds and alignment checks `get_atomic_ref` makes on every entry, about
//! 2-3 ns per 4-level IOTLB miss (~17 → ~19-20 ns, `iommu-sim bench`); the end-to-end fault
//! group (µs) did not move beyond noise.
//!
//! Which frames are in use is the business of the frame allocator (`frames.rs`): frames are
//! handed out zeroed, never twice while allocated, a double free is caught, and running out is
//! `ENOMEM`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use iommu_core::error::{efault_v, einval_v, enomem, enomem_v};
use iommu_core::Result;
use iommu_pt::spec::ENTRIES;
use iommu_pt::{ArenaTableMem, Pfn, PhysAddr, PtError, TableMem, TableRef};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress,
    MmapRegion, VolatileMemory, VolatileSlice,
};

use crate::frames::{FrameAllocator, FreeError};

/// Bytes in one frame.
pub const PAGE_SIZE: u64 = 4096;
/// Shift from an address to its frame number.
pub const PAGE_SHIFT: u32 = 12;

/// What a recycled frame is overwritten with.
static ZERO_PAGE: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

std::thread_local! {
    /// The byte this thread last filled more than a cache line with, and a page of it.
    static FILL_PAGE: std::cell::RefCell<(u8, [u8; PAGE_SIZE as usize])> =
        const { std::cell::RefCell::new((0, [0; PAGE_SIZE as usize])) };
}

/// When a recycled frame is cleared (it may hold another process's data or a freed table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zeroing {
    /// When it is handed out again: the fault that takes it pays for the clearing.
    #[default]
    OnAlloc,
    /// When it is freed (munmap, table teardown): the fault path takes a frame that is already
    /// zero, as with Linux's `init_on_free` or a pre-zeroed pool.
    OnFree,
}

/// Simulated RAM: a fixed number of 4 KiB frames shared by page tables, processes and DMA.
///
/// All methods take `&self` and may be called from any thread. Data accesses are bounds
/// checked: an address that is not inside an allocated-or-free frame of this memory is `EFAULT`
/// (a DMA there is an Unsupported Request on a real bus).
pub struct PhysMem {
    /// The `vm-memory` view of all frames (one region), for rust-vmm code.
    mem: GuestMemoryMmap,
    /// That region, held directly so an access resolves without searching the collection.
    region: Arc<GuestRegionMmap>,
    /// Its mapping, held directly too: the walker's table lookup then chases one pointer, not
    /// two.
    mapping: Arc<MmapRegion>,
    /// Physical address of the first frame.
    base: u64,
    /// Bytes of frames (`capacity × 4 KiB`; the mapping may be one page larger when empty).
    bytes: u64,
    frames: FrameAllocator,
    zeroing: Zeroing,
}

impl PhysMem {
    /// The most frames one memory may hold: 1 TiB of address space. The mapping is lazy and
    /// unreserved, so only frames handed out cost host memory, but the host must still be able
    /// to reserve the address range.
    pub const MAX_FRAMES: usize = 1 << 28;

    /// Memory of up to `frames` frames. Frame numbers start at [`ArenaTableMem::DEFAULT_BASE`],
    /// so the first frame's physical address is 64 GiB. The frames are a budget, not an
    /// allocation: the host backs a frame only once it is written, so a large memory costs
    /// nothing until used.
    ///
    /// `EINVAL` when `frames` is above [`PhysMem::MAX_FRAMES`]; `ENOMEM` when the host cannot
    /// reserve the address range.
    pub fn new(frames: usize) -> Result<PhysMem> {
        Self::with_zeroing(frames, Zeroing::OnAlloc)
    }

    /// Memory as [`PhysMem::new`], clearing recycled frames when `zeroing` says.
    pub fn with_zeroing(frames: usize, zeroing: Zeroing) -> Result<PhysMem> {
        if frames > Self::MAX_FRAMES {
            return Err(einval_v(
                "frames above PhysMem::MAX_FRAMES (1 << 28, 1 TiB)",
                frames as u64,
            ));
        }
        let base = ArenaTableMem::DEFAULT_BASE.addr().0;
        let bytes = (frames as u64)
            .checked_mul(PAGE_SIZE)
            .filter(|b| base.checked_add(*b).is_some_and(|e| e <= PhysAddr::LIMIT))
            .ok_or(einval_v(
                "too many frames for the physical-address space",
                frames as u64,
            ))?;
        // A mapping cannot be empty: an empty memory maps one page it never hands out.
        let map_len = usize::try_from(bytes.max(PAGE_SIZE))
            .map_err(|_| einval_v("memory larger than the host address space", bytes))?;
        let mapping = Arc::new(
            MmapRegion::new(map_len)
                .map_err(|_| enomem_v("host cannot map the physical memory", bytes))?,
        );
        let region = GuestRegionMmap::with_arc(mapping.clone(), GuestAddress(base))
            .ok_or(einval_v("physical memory overflows", base))?;
        let region = Arc::new(region);
        let mem = GuestMemoryMmap::from_arc_regions(vec![region.clone()])
            .map_err(|_| einval_v("cannot build guest memory", base))?;
        Ok(PhysMem {
            mem,
            region,
            mapping,
            base,
            bytes,
            frames: FrameAllocator::new(frames),
            zeroing,
        })
    }

    /// Memory of `bytes` (rounded up to whole frames), as [`PhysMem::new`].
    pub fn with_bytes(bytes: u64) -> Result<PhysMem> {
        let frames = usize::try_from(bytes.div_ceil(PAGE_SIZE))
            .map_err(|_| einval_v("bytes above PhysMem::MAX_FRAMES frames", bytes))?;
        Self::new(frames)
    }

    /// The `vm-memory` backend holding every frame: one region, whose guest addresses are this
    /// memory's physical addresses ([`Pfn::addr`]). What rust-vmm device code reads and writes.
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Touches every frame once, so the host backs the whole memory now rather than on first
    /// access (the mapping is lazy). Benchmarks call it so they measure the emulator, not the
    /// host's first-touch page faults. Contents are unchanged.
    ///
    /// `ENOMEM` (touching nothing) when the host has less memory available for this process
    /// than this memory's capacity (the smaller of `MemAvailable` in `/proc/meminfo` and what
    /// is left under the memory limits of the process's cgroups, where they can be read):
    /// touching it all would get the process killed by the out-of-memory killer instead.
    pub fn prefault(&self) -> Result<()> {
        let bytes = self.capacity() as u64 * PAGE_SIZE;
        let bound = host::memory_available();
        if !backable(bytes, bound.map(host::Bound::bytes)) {
            let why = match bound {
                Some(host::Bound::Cgroup(_)) => {
                    "a cgroup memory limit leaves less than the emulated memory to back (bytes)"
                }
                _ => "the host has less memory available than the emulated memory to back (bytes)",
            };
            return Err(enomem_v(why, bytes));
        }
        for i in 0..self.capacity() as u64 {
            if let Some(t) = self.frame_table(Pfn(ArenaTableMem::DEFAULT_BASE.0 + i)) {
                // A write (a read would only map the host's shared zero page); compare-exchange
                // of a word with itself keeps the contents.
                let w = t.load(0);
                let _ = t.compare_exchange(0, w, w);
            }
        }
        Ok(())
    }

    /// The most frames this memory holds.
    pub fn capacity(&self) -> usize {
        self.frames.capacity()
    }

    /// Frames currently allocated (data and page tables). Exact when no thread allocates or
    /// frees at the same time; a count taken during that may be off by the frames in motion
    /// (never above [`PhysMem::capacity`]).
    pub fn frames_in_use(&self) -> usize {
        self.frames.in_use()
    }

    /// Allocates a zeroed frame. `ENOMEM` when the memory is exhausted.
    pub fn alloc_frame(&self) -> Result<Pfn> {
        let (index, recycled) = self
            .frames
            .alloc()
            .ok_or(enomem("physical memory exhausted"))?;
        let pfn = Pfn(ArenaTableMem::DEFAULT_BASE.0 + index as u64);
        // A frame never handed out is still the mapping's zero fill; a recycled one is cleared
        // now, or was when it was freed.
        if recycled && self.zeroing == Zeroing::OnAlloc {
            self.zero_frame(pfn)?;
        }
        Ok(pfn)
    }

    /// Clears frame `pfn`. A function of its own, never inlined, so that the copy from the
    /// static zero page is compiled where its source is known to be zeros and becomes one
    /// `memset` (the optimiser does that only when it sees both): in one build a `memcpy` from
    /// the zero page cleared frames instead, reading 4 KiB for every 4 KiB written.
    #[inline(never)]
    fn zero_frame(&self, pfn: Pfn) -> Result<()> {
        self.write(pfn.addr(), &ZERO_PAGE)
    }

    /// Returns a frame. The caller guarantees nothing still uses it: no mapping, no cached
    /// translation (IOTLB or device TLB) and no DMA in flight.
    ///
    /// `EINVAL` if `pfn` is not an allocated frame of this memory (a double free or a foreign
    /// frame); then nothing changes, so one frame never gets two owners.
    pub fn free_frame(&self, pfn: Pfn) -> Result<()> {
        self.zero_on_free(pfn)?;
        self.free_index(pfn)
    }

    /// The allocator's index of `pfn` (`usize::MAX`, out of range, below the base).
    fn index_of(pfn: Pfn) -> usize {
        usize::try_from(pfn.0.wrapping_sub(ArenaTableMem::DEFAULT_BASE.0)).unwrap_or(usize::MAX)
    }

    /// Zeroes `pfn` if this memory zeroes frames when they are freed and `pfn` is allocated.
    fn zero_on_free(&self, pfn: Pfn) -> Result<()> {
        if self.zeroing == Zeroing::OnFree && self.frames.is_allocated(Self::index_of(pfn)) {
            // Still ours until freed: nobody else writes it.
            self.zero_frame(pfn)?;
        }
        Ok(())
    }

    /// Frees `pfn` in the allocator, without zeroing it.
    fn free_index(&self, pfn: Pfn) -> Result<()> {
        self.frames.free(Self::index_of(pfn)).map_err(|e| {
            let why = match e {
                FreeError::OutOfRange => "frame is not in this memory",
                FreeError::NotAllocated => "frame is not allocated (double free?)",
            };
            einval_v(why, pfn.0)
        })
    }

    /// [`PhysMem::free_frame`] for a frame this crate allocated itself (a process's page):
    /// a refusal is a bug here, never caller input, and leaking the frame is the safe answer.
    pub(crate) fn release_frame(&self, pfn: Pfn) {
        let freed = self.free_frame(pfn);
        debug_assert!(freed.is_ok(), "{freed:?}");
    }

    /// [`PhysMem::release_frame`] for many frames at once (an unmapped range, an exited
    /// process): sorted, zeroed in ascending order when this memory zeroes on free, then freed
    /// highest first, so the allocator's last-in-first-out list hands them out again lowest
    /// first. A refaulted range then gets its data frames in ascending order (page-table frames
    /// its caller frees afterwards come out before them) and walks memory upwards, which the
    /// host's prefetcher streams: `mem_probe` zeroes and fills a page in 148 ns going up
    /// against 255 ns going down (BENCHMARKS.md). A frame that cannot be zeroed is leaked, as
    /// [`PhysMem::release_frame`] leaks one that cannot be freed.
    pub(crate) fn release_frames(&self, mut pfns: Vec<Pfn>) {
        pfns.sort_unstable_by_key(|p| p.0);
        pfns.retain(|&pfn| {
            let zeroed = self.zero_on_free(pfn);
            debug_assert!(zeroed.is_ok(), "{zeroed:?}");
            zeroed.is_ok()
        });
        for &pfn in pfns.iter().rev() {
            let freed = self.free_index(pfn);
            debug_assert!(freed.is_ok(), "{freed:?}");
        }
    }

    /// Offset of `[pa, pa + len)` in the region, if the whole range is inside this memory.
    #[inline]
    fn offset_of(&self, pa: u64, len: usize) -> Result<MemoryRegionAddress> {
        let off = pa
            .checked_sub(self.base)
            .filter(|o| o.checked_add(len as u64).is_some_and(|e| e <= self.bytes))
            .ok_or(efault_v("physical address outside memory", pa))?;
        Ok(MemoryRegionAddress(off))
    }

    /// Copies `buf.len()` bytes starting at `pa` into `buf`. `EFAULT` if any byte is outside
    /// memory (then `buf` is untouched).
    #[inline]
    pub fn read(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<()> {
        let at = self.offset_of(pa.0, buf.len())?;
        self.region
            .read_slice(buf, at)
            .map_err(|_| efault_v("physical read failed", pa.0))
    }

    /// Copies `data` to memory starting at `pa`. `EFAULT` if any byte is outside memory (then
    /// nothing is written).
    #[inline]
    pub fn write(&self, pa: PhysAddr, data: &[u8]) -> Result<()> {
        let at = self.offset_of(pa.0, data.len())?;
        self.region
            .write_slice(data, at)
            .map_err(|_| efault_v("physical write failed", pa.0))
    }

    /// Sets `len` bytes starting at `pa` to `byte`. `EFAULT` as [`PhysMem::write`].
    pub fn fill(&self, pa: PhysAddr, len: usize, byte: u8) -> Result<()> {
        let at = self.offset_of(pa.0, len)?;
        if len <= 64 {
            // A cache line or less (a descriptor, a flag): one copy from a line-sized pattern.
            let line = [byte; 64];
            return self
                .region
                .write_slice(&line[..len], at)
                .map_err(|_| efault_v("physical fill failed", pa.0));
        }
        let slice = self
            .region
            .get_slice(at, len)
            .map_err(|_| efault_v("physical fill failed", pa.0))?;
        // Zero from the static zero page; another byte from this thread's page of the last
        // byte it filled with (built when the byte changes, not per call): a page or less is
        // one copy either way.
        let copy = |pattern: &[u8]| -> Result<()> {
            let mut done = 0;
            while done < len {
                let n = (len - done).min(pattern.len());
                let chunk = slice
                    .subslice(done, n)
                    .map_err(|_| efault_v("physical fill failed", pa.0))?;
                chunk.copy_from(&pattern[..n]);
                done += n;
            }
            Ok(())
        };
        if byte == 0 {
            return copy(&ZERO_PAGE);
        }
        FILL_PAGE.with(|page| {
            let mut page = page.borrow_mut();
            if page.0 != byte {
                page.1.fill(byte);
                page.0 = byte;
            }
            copy(&page.1[..])
        })
    }

    /// Frame `pfn` as a page-table page, `None` outside this memory.
    #[inline]
    fn frame_table(&self, pfn: Pfn) -> Option<FrameTable<'_>> {
        let index = pfn.0.wrapping_sub(ArenaTableMem::DEFAULT_BASE.0);
        if index >= self.capacity() as u64 {
            return None;
        }
        self.mapping
            .get_slice((index << PAGE_SHIFT) as usize, PAGE_SIZE as usize)
            .ok()
            .map(FrameTable)
    }
}

/// One frame seen as a page-table page: 512 little-endian 64-bit entries, each accessed as an
/// `AtomicU64` through [`VolatileMemory::get_atomic_ref`] (frames are 4 KiB aligned in an
/// mmap, so every entry is 8-byte aligned and the alignment check always passes).
#[derive(Clone, Copy)]
pub struct FrameTable<'a>(VolatileSlice<'a>);

impl FrameTable<'_> {
    #[inline]
    fn entry(&self, idx: usize) -> &AtomicU64 {
        debug_assert!(idx < ENTRIES);
        match self.0.get_atomic_ref::<AtomicU64>(idx * 8) {
            Ok(e) => e,
            // `idx < ENTRIES` is the walker's contract (`TableRef`); a frame is one table.
            Err(e) => panic!("page-table entry {idx} outside its frame: {e}"),
        }
    }
}

impl TableRef for FrameTable<'_> {
    #[inline]
    fn load(self, idx: usize) -> u64 {
        self.entry(idx).load(Ordering::Acquire)
    }

    #[inline]
    fn store(self, idx: usize, value: u64) {
        self.entry(idx).store(value, Ordering::Release);
    }

    #[inline]
    fn compare_exchange(
        self,
        idx: usize,
        current: u64,
        new: u64,
    ) -> core::result::Result<u64, u64> {
        self.entry(idx)
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
    }
}

impl TableMem for PhysMem {
    type Table<'a> = FrameTable<'a>;

    #[inline]
    fn table(&self, pfn: Pfn) -> Option<Self::Table<'_>> {
        self.frame_table(pfn)
    }

    fn alloc_table(&self) -> core::result::Result<Pfn, PtError> {
        self.alloc_frame()
            .map_err(|_| PtError::NoMemory { tables: 1 })
    }

    fn free_table(&self, pfn: Pfn) {
        // Page tables free only tables they allocated from this memory; a refusal would be a
        // page-table bug, and leaking the frame is the safe answer to it.
        self.release_frame(pfn);
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

/// Whether `bytes` of emulated memory can be backed with `available` bytes of host memory
/// (unknown: assumed so). The whole capacity counts, even frames already backed: the check is
/// for memory about to be touched all at once, not a budget.
fn backable(bytes: u64, available: Option<u64>) -> bool {
    available.is_none_or(|a| bytes <= a)
}

mod host;
#[cfg(test)]
mod tests;
