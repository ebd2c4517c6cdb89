//! `pt-peer`: the `x86_64` crate's page-table mapper ([`OffsetPageTable`]) over frames in a heap
//! buffer, behind a safe API. It is the in-process peer that `iommu-pt` is benchmarked against
//! (`cargo bench -p iommu-bench --bench pt`, `iommu-sim bench`), kept in one crate so that the only
//! unsafe code of that comparison lives here.
//!
//! # Why unsafe is needed
//! The `x86_64` crate's mapper is written for a kernel: it reaches each page table by turning
//! the table's *physical* address into a pointer (physical address + a fixed offset) and
//! dereferencing it, so constructing it ([`OffsetPageTable::new`]), handing it frames
//! ([`FrameAllocator`] is an `unsafe trait`) and creating mappings ([`Mapper::map_to`]) are all
//! `unsafe`. [`X86Peer`] makes those contracts hold by construction:
//!
//! - "physical" addresses of table frames are offsets into a heap buffer of [`PageTable`]s owned
//!   by the peer, and the mapper's offset is the buffer's address, so every physical address the
//!   mapper dereferences is a table inside that buffer;
//! - table frames are handed out from that buffer only, each at most once;
//! - the tables are never loaded into CR3 and no leaf (data) frame is ever dereferenced, so a
//!   mapping cannot alias memory the program uses, whatever physical address a caller maps;
//! - every caller input is validated before it reaches the crate (whose constructors panic on
//!   misaligned or out-of-range addresses), so no method panics on caller input.
//!
//! # Example
//! ```
//! use pt_peer::{PeerError, X86Peer};
//!
//! let mut peer = X86Peer::new(16)?;
//! peer.map_4k(0x40_0000_0000, 0x1_0000_0000)?;
//! assert_eq!(peer.translate(0x40_0000_0123), Some(0x1_0000_0123));
//! assert_eq!(peer.unmap_4k(0x40_0000_0000)?, 0x1_0000_0000);
//! assert_eq!(peer.translate(0x40_0000_0000), None);
//! assert!(matches!(peer.map_2m(0x40_0000_1000, 0), Err(PeerError::MisalignedVirt { .. })));
//! # Ok::<(), PeerError>(())
//! ```
#![warn(missing_docs)]

use core::fmt;
use core::mem::ManuallyDrop;
use core::ptr::{self, NonNull};

use x86_64::structures::paging::mapper::{MapToError, UnmapError};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageSize, PageTable, PageTableFlags, PhysFrame,
    Size2MiB, Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

/// Why a [`X86Peer`] call failed. The peer is unchanged unless stated otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerError {
    /// [`X86Peer::new`] was asked for no frames (at least the root table is needed).
    ZeroFrames,
    /// The frame buffer could not be allocated.
    NoMemory,
    /// The virtual address is not canonical (bits 47..63 not a sign extension).
    NonCanonical {
        /// The address.
        va: u64,
    },
    /// The virtual address is not aligned to the page size.
    MisalignedVirt {
        /// The address.
        va: u64,
        /// The required alignment in bytes.
        align: u64,
    },
    /// The physical address is not aligned to the page size.
    MisalignedPhys {
        /// The address.
        pa: u64,
        /// The required alignment in bytes.
        align: u64,
    },
    /// The physical address has bits at or above bit 52.
    PhysOutOfRange {
        /// The address.
        pa: u64,
    },
    /// No frame left for a page table. Tables created before running out stay (empty).
    OutOfFrames,
    /// The page is already mapped.
    AlreadyMapped {
        /// The page's address.
        va: u64,
    },
    /// The page is not mapped.
    NotMapped {
        /// The page's address.
        va: u64,
    },
    /// A page of the other size covers the address (a 2 MiB leaf where a 4 KiB page was asked
    /// for, or a 4 KiB table where a 2 MiB leaf was asked for).
    SizeConflict {
        /// The page's address.
        va: u64,
    },
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ZeroFrames => write!(f, "a peer needs at least one frame (the root table)"),
            Self::NoMemory => write!(f, "cannot allocate the frame buffer"),
            Self::NonCanonical { va } => write!(f, "virtual address {va:#x} is not canonical"),
            Self::MisalignedVirt { va, align } => {
                write!(f, "virtual address {va:#x} is not {align:#x}-aligned")
            }
            Self::MisalignedPhys { pa, align } => {
                write!(f, "physical address {pa:#x} is not {align:#x}-aligned")
            }
            Self::PhysOutOfRange { pa } => write!(f, "physical address {pa:#x} is above 2^52"),
            Self::OutOfFrames => write!(f, "out of page-table frames"),
            Self::AlreadyMapped { va } => write!(f, "page {va:#x} is already mapped"),
            Self::NotMapped { va } => write!(f, "page {va:#x} is not mapped"),
            Self::SizeConflict { va } => {
                write!(f, "a page of another size covers {va:#x}")
            }
        }
    }
}

impl std::error::Error for PeerError {}

/// Flags of every leaf the peer maps: what a DMA read/write mapping needs.
const LEAF_FLAGS: PageTableFlags = PageTableFlags::PRESENT
    .union(PageTableFlags::WRITABLE)
    .union(PageTableFlags::NO_EXECUTE);

/// Hands out the frames `next..len` of the peer's buffer; frame `i` has physical address
/// `i * 4096`. Frame 0 is the root table.
struct BufferFrames {
    next: u64,
    len: u64,
}

// SAFETY: a frame is returned only while `next < len`, so it is one of the peer's tables (frame
// `i` is `buffer[i]`, physical address `i * 4096`, mapped at buffer base + `i * 4096`); `next`
// only grows, so each frame is handed out at most once and was never used before; frame 0 (the
// root) is never handed out because `next` starts at 1. The buffer lives as long as the peer.
unsafe impl FrameAllocator<Size4KiB> for BufferFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        if self.next >= self.len {
            return None;
        }
        let frame =
            PhysFrame::containing_address(PhysAddr::new_truncate(self.next * Size4KiB::SIZE));
        self.next += 1;
        Some(frame)
    }
}

/// The `x86_64` crate's 4-level mapper over a root table and up to `frames - 1` more tables in a
/// heap buffer owned by the peer.
///
/// Intermediate tables are created on demand and never freed (the `x86_64` mapper does not free
/// tables on unmap), so a peer has a fixed table budget: [`PeerError::OutOfFrames`] once it is
/// spent. Mappings are never used for memory accesses; they only exist to be made, walked and
/// removed. Dropping the peer with mappings alive is fine: it just frees the buffer.
pub struct X86Peer {
    /// The mapper over `buffer`, its root `buffer[0]`. The `'static` is a lie confined to this
    /// crate: the mapper is used only inside the peer's methods (mutated only through `&mut self`)
    /// and never handed out, and `Drop` frees
    /// the buffer only after its last use (it has no drop glue: `ManuallyDrop` just says so).
    /// Kept built rather than built per call, as a kernel keeps it (and per-call construction
    /// measurably slowed `map_to`).
    mapper: ManuallyDrop<OffsetPageTable<'static>>,
    frames: BufferFrames,
    /// `buffer[0]`, the start of a `Box<[PageTable]>` of `frames.len` tables leaked with
    /// [`Box::into_raw`] and freed in `Drop`. Kept raw (not as a `Box`) because the mapper holds
    /// a `&mut` to its first table and reaches the others through addresses computed from this
    /// pointer's address, which a `Box`'s uniqueness would forbid.
    buffer: NonNull<PageTable>,
}

impl X86Peer {
    /// A peer with an empty root table and `frames - 1` spare frames for intermediate tables
    /// (a first 4 KiB mapping needs 3, each new 2 MiB / 1 GiB / 512 GiB region 1 / 2 / 3 more).
    ///
    /// # Errors
    /// [`PeerError::ZeroFrames`] if `frames` is 0, [`PeerError::NoMemory`] if the buffer cannot
    /// be allocated.
    pub fn new(frames: usize) -> Result<Self, PeerError> {
        if frames == 0 {
            return Err(PeerError::ZeroFrames);
        }
        let mut tables: Vec<PageTable> = Vec::new();
        tables
            .try_reserve_exact(frames)
            .map_err(|_| PeerError::NoMemory)?;
        tables.resize_with(frames, PageTable::new);
        // Leaked here, freed in `Drop` (a `Box`'s pointer is never null).
        let buffer: NonNull<PageTable> = NonNull::from(Box::leak(tables.into_boxed_slice())).cast();
        // SAFETY: `buffer` points at `buffer[0]` of a live allocation of `frames` tables that
        // nothing else references. The `&mut` made here is the only reference into the
        // allocation while the peer lives: it stays in the mapper, and the raw pointer is used
        // again only to free the allocation in `Drop`, after the mapper's last use.
        let root: &'static mut PageTable = unsafe { &mut *buffer.as_ptr() };
        let base = VirtAddr::from_ptr(buffer.as_ptr());
        // SAFETY: `root` is the level-4 table of a valid hierarchy: it is empty now, and every
        // table entry the mapper will write in it or below points at a frame from
        // `BufferFrames`. Each such frame has physical address `i * 4096` with `i < frames`, so
        // `base + physical` is `buffer[i]`, a table inside the allocation: every physical
        // address the mapper dereferences is mapped at offset `base`. Leaf entries are never
        // dereferenced (a huge-page entry is recognised by its flag before any descent), so the
        // physical addresses callers map need not be ours.
        let mapper = unsafe { OffsetPageTable::new(root, base) };
        Ok(Self {
            mapper: ManuallyDrop::new(mapper),
            buffer,
            frames: BufferFrames {
                next: 1,
                len: frames as u64,
            },
        })
    }

    /// Frames in the buffer, the root table included.
    pub fn frames(&self) -> usize {
        self.frames.len as usize
    }

    /// Frames in use as page tables, the root table included.
    pub fn frames_used(&self) -> usize {
        self.frames.next as usize
    }

    /// The physical address `va` translates to, or `None` if it is not mapped (or not
    /// canonical).
    #[inline]
    pub fn translate(&self, va: u64) -> Option<u64> {
        let va = VirtAddr::try_new(va).ok()?;
        self.mapper.translate_addr(va).map(PhysAddr::as_u64)
    }

    #[inline]
    fn map<S: PageSize>(&mut self, va: u64, pa: u64) -> Result<(), PeerError>
    where
        for<'a> OffsetPageTable<'a>: Mapper<S>,
    {
        let page = page::<S>(va)?;
        let pa_addr = PhysAddr::try_new(pa).map_err(|_| PeerError::PhysOutOfRange { pa })?;
        let frame = PhysFrame::<S>::from_start_address(pa_addr)
            .map_err(|_| PeerError::MisalignedPhys { pa, align: S::SIZE })?;
        // SAFETY: `map_to` is unsafe because a new mapping could alias memory in use once the
        // tables are loaded into CR3. These tables are never loaded into CR3 (nor given to a
        // device), and no memory is ever accessed through them, so no mapping can alias
        // anything, whatever `frame` is. Table frames come from `BufferFrames` (see its impl).
        let mapped = unsafe {
            self.mapper
                .map_to(page, frame, LEAF_FLAGS, &mut self.frames)
        };
        match mapped {
            Ok(flush) => {
                // Nothing to flush: no TLB holds these tables.
                flush.ignore();
                Ok(())
            }
            Err(MapToError::FrameAllocationFailed) => Err(PeerError::OutOfFrames),
            Err(MapToError::ParentEntryHugePage) => Err(PeerError::SizeConflict { va }),
            Err(MapToError::PageAlreadyMapped(_)) => Err(PeerError::AlreadyMapped { va }),
        }
    }

    #[inline]
    fn unmap<S: PageSize>(&mut self, va: u64) -> Result<u64, PeerError>
    where
        for<'a> OffsetPageTable<'a>: Mapper<S>,
    {
        let page = page::<S>(va)?;
        match self.mapper.unmap(page) {
            Ok((frame, flush)) => {
                flush.ignore();
                Ok(frame.start_address().as_u64())
            }
            Err(UnmapError::PageNotMapped) => Err(PeerError::NotMapped { va }),
            Err(UnmapError::ParentEntryHugePage) => Err(PeerError::SizeConflict { va }),
            // Leaves are only written by `map`, from validated frames: not reachable, but a
            // mapping that cannot be read back is "not mapped" rather than a panic.
            Err(UnmapError::InvalidFrameAddress(_)) => Err(PeerError::NotMapped { va }),
        }
    }
}

/// One page at a time, at either leaf size: the 4 KiB and 2 MiB methods are the same two
/// operations ([`X86Peer`]'s generic `map`/`unmap`, where the unsafe call and its `SAFETY`
/// argument live once), named per size because that is how the benchmarks call them.
///
/// # Errors
/// Map: [`NonCanonical`](PeerError::NonCanonical), [`MisalignedVirt`](PeerError::MisalignedVirt)
/// and [`MisalignedPhys`](PeerError::MisalignedPhys) (to the page size),
/// [`PhysOutOfRange`](PeerError::PhysOutOfRange), [`AlreadyMapped`](PeerError::AlreadyMapped)
/// (for a 2 MiB page also when a 4 KiB table sits in the slot, even an empty one: the `x86_64`
/// mapper never frees tables), [`SizeConflict`](PeerError::SizeConflict) (a 4 KiB page inside a
/// 2 MiB leaf), or [`OutOfFrames`](PeerError::OutOfFrames) (tables made before that stay, empty).
///
/// Unmap: [`NonCanonical`](PeerError::NonCanonical), [`MisalignedVirt`](PeerError::MisalignedVirt),
/// [`NotMapped`](PeerError::NotMapped), or [`SizeConflict`](PeerError::SizeConflict) (a 4 KiB
/// page inside a 2 MiB leaf, or a 2 MiB slot holding a 4 KiB table).
impl X86Peer {
    /// Maps the 4 KiB page at `va` to the frame at `pa`.
    #[inline]
    pub fn map_4k(&mut self, va: u64, pa: u64) -> Result<(), PeerError> {
        self.map::<Size4KiB>(va, pa)
    }

    /// Unmaps the 4 KiB page at `va`; returns the physical address it mapped.
    #[inline]
    pub fn unmap_4k(&mut self, va: u64) -> Result<u64, PeerError> {
        self.unmap::<Size4KiB>(va)
    }

    /// Maps the 2 MiB page at `va` to the 2 MiB frame at `pa` as one leaf (a huge-page entry
    /// in the level-2 table).
    #[inline]
    pub fn map_2m(&mut self, va: u64, pa: u64) -> Result<(), PeerError> {
        self.map::<Size2MiB>(va, pa)
    }

    /// Unmaps the 2 MiB leaf at `va`; returns the physical address it mapped.
    #[inline]
    pub fn unmap_2m(&mut self, va: u64) -> Result<u64, PeerError> {
        self.unmap::<Size2MiB>(va)
    }
}

/// The page of size `S` starting at `va`, validated.
#[inline]
fn page<S: PageSize>(va: u64) -> Result<Page<S>, PeerError> {
    let addr = VirtAddr::try_new(va).map_err(|_| PeerError::NonCanonical { va })?;
    Page::from_start_address(addr).map_err(|_| PeerError::MisalignedVirt { va, align: S::SIZE })
}

impl Drop for X86Peer {
    fn drop(&mut self) {
        let tables = ptr::slice_from_raw_parts_mut(self.buffer.as_ptr(), self.frames.len as usize);
        // SAFETY: `tables` is exactly the slice leaked by `Box::leak` in `new` (same pointer,
        // same length: `frames.len` never changes), freed only here, once. The mapper's `&mut`
        // to `buffer[0]` is never used again: `drop` is its last owner's last call, and the
        // `ManuallyDrop` field runs no code afterwards. Mappings left in the tables are plain
        // integers; freeing them touches no memory they name.
        drop(unsafe { Box::from_raw(tables) });
    }
}

impl fmt::Debug for X86Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X86Peer")
            .field("frames", &self.frames())
            .field("frames_used", &self.frames_used())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
