//! IOVA spaces (Linux `io_pagetable.c` and `ioas.c`): the mappings of an IOAS and their
//! propagation into every paging HWPT on it.
//!
//! A mapping is either of a physical address (the Rust API, [`Ictx::ioas_map`]) or of the
//! caller's own memory ([`Ictx::ioas_map_user`], `IOMMU_IOAS_MAP`), whose "physical address"
//! is the user VA. User mappings are pinned exactly while the IOAS has a paging HWPT (see
//! [`crate::user_memory`]).

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use iommu_core::error::{eaddrinuse_v, eexist_v, einval_v, enoent_v, enospc, eoverflow_v, eperm_v};
use iommu_core::{Domain, Result, IOMMU_READ, IOMMU_WRITE};

use super::{Ictx, Object};
use crate::user_memory::UserMemory;

mod api;

/// The aperture of the model's paging domains: `[0, IOAS_APERTURE_END)` (48-bit). An IOAS
/// without a paging HWPT spans all 64 bits, as in Linux; each paging HWPT reserves the IOVAs
/// beyond its domain's aperture.
pub const IOAS_APERTURE_END: u64 = 1 << 48;
const PAGE_SIZE: u64 = 4096;
/// The largest alignment automatic IOVA allocation aims for (a 2 MiB huge page).
const MAX_AUTO_ALIGN: u64 = 2 << 20;

/// An allowed IOVA range of an IOAS, inclusive (Linux `struct iommu_iova_range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IovaRange {
    /// First allowed IOVA.
    pub start: u64,
    /// Last allowed IOVA (inclusive).
    pub last: u64,
}

/// One pin on every page of a user range, dropped with the guard.
pub(super) struct Pin {
    mem: Arc<dyn UserMemory>,
    uva: u64,
    len: u64,
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.mem.unpin(self.uva, self.len);
    }
}

#[derive(Clone)]
pub(super) struct IoasMap {
    len: u64,
    /// The physical address; for a user mapping, the user VA.
    pa: u64,
    prot: u32,
    /// A mapping of the caller's memory (pinned while the IOAS has a paging HWPT).
    user: bool,
    /// The pin this mapping holds, while it holds one.
    pin: Option<Arc<Pin>>,
    /// For `IOMMU_IOAS_MAP_FILE`: the window of the file the user VA is in, released with
    /// the mapping.
    file: Option<Arc<FileWindow>>,
}

/// A file range made addressable by [`UserMemory::map_file`], unmapped on drop.
pub(super) struct FileWindow {
    mem: Arc<dyn UserMemory>,
    uva: u64,
    len: u64,
}

impl Drop for FileWindow {
    fn drop(&mut self) {
        self.mem.unmap_file(self.uva, self.len);
    }
}

impl IoasMap {
    /// Pins a user mapping's pages (a no-op for a physical one or one already pinned).
    fn pin(&mut self, mem: &Arc<dyn UserMemory>) -> Result<()> {
        if self.user && self.pin.is_none() {
            // The pages the (possibly unaligned) range touches.
            let uva = self.pa - self.pa % PAGE_SIZE;
            let end = self
                .pa
                .checked_add(self.len)
                .and_then(|e| e.checked_next_multiple_of(PAGE_SIZE))
                .ok_or(eoverflow_v("user range wraps", self.pa))?;
            mem.pin(uva, end - uva, self.prot & IOMMU_WRITE != 0)?;
            self.pin = Some(Arc::new(Pin {
                mem: mem.clone(),
                uva,
                len: end - uva,
            }));
        }
        Ok(())
    }

    fn last(&self, iova: u64) -> u64 {
        iova + (self.len - 1)
    }
}

pub(super) struct IoasObj {
    /// IOVA → mapping; mappings never overlap.
    maps: BTreeMap<u64, IoasMap>,
    /// The paging HWPTs on this IOAS (id → domain): every mapping is pushed into each.
    pub(super) hwpts: BTreeMap<u32, Arc<Domain>>,
    /// `IOMMU_IOAS_ALLOW_IOVAS`: where automatic IOVAs may go (empty: anywhere).
    allowed: Vec<IovaRange>,
    /// `IOMMU_OPTION_HUGE_PAGES` (on by default).
    pub(super) huge_pages: bool,
    /// Reserved IOVA ranges, inclusive: `(start, last, owner)`; owner 0 is the selftest's
    /// `ADD_RESERVED`, otherwise the paging HWPT whose aperture excludes the range.
    reserved: Vec<(u64, u64, u32)>,
    /// Where user mappings are pinned.
    mem: Arc<dyn UserMemory>,
}

/// Maps each `(domain, iova, mapping)` in turn; on the first refusal unmaps what was mapped
/// (in order) and returns that error, so the domains are as before (Linux's `iopt_fill_domain`
/// and `iopt_map_pages` unwinding).
fn map_or_roll_back<'a>(
    steps: impl IntoIterator<Item = (&'a Domain, u64, &'a IoasMap)>,
) -> Result<()> {
    let mut done: Vec<(&Domain, u64, u64)> = Vec::new();
    for (domain, iova, m) in steps {
        if let Err(e) = domain.map(iova, m.pa, m.len, m.prot) {
            for &(domain, iova, len) in &done {
                let _ = domain.unmap(iova, len);
            }
            return Err(e);
        }
        done.push((domain, iova, m.len));
    }
    Ok(())
}

impl IoasObj {
    pub(super) fn new(mem: Arc<dyn UserMemory>) -> Self {
        Self {
            maps: BTreeMap::new(),
            hwpts: BTreeMap::new(),
            allowed: Vec::new(),
            huge_pages: true,
            reserved: Vec::new(),
            mem,
        }
    }

    /// Pushes every mapping into a new paging HWPT's `domain` and adds it as `hwpt_id`; the
    /// first HWPT pins every user mapping (`EFAULT` on a hole). On a refusal the domain is
    /// left empty and the IOAS unchanged.
    pub(super) fn add_hwpt(&mut self, hwpt_id: u32, domain: &Arc<Domain>) -> Result<()> {
        // The domain's page size becomes the IOAS's alignment.
        self.check_alignment(PAGE_SIZE)?;
        // The IOVAs beyond the domain's aperture become reserved.
        self.check_reservable(IOAS_APERTURE_END, u64::MAX)?;
        let mut maps = self.maps.clone();
        for m in maps.values_mut() {
            m.pin(&self.mem)?;
        }
        map_or_roll_back(maps.iter().map(|(&iova, m)| (&**domain, iova, m)))?;
        self.maps = maps;
        self.hwpts.insert(hwpt_id, domain.clone());
        self.reserved.push((IOAS_APERTURE_END, u64::MAX, hwpt_id));
        Ok(())
    }

    /// `EADDRINUSE` if `[start, last]` holds a mapping or meets an allowed range.
    fn check_reservable(&self, start: u64, last: u64) -> Result<()> {
        if let Some((&iova, _)) = self.maps_in(start, last).next() {
            return Err(eaddrinuse_v("reserved range holds a mapping", iova));
        }
        if let Some(r) = self
            .allowed
            .iter()
            .find(|r| r.start <= last && start <= r.last)
        {
            return Err(eaddrinuse_v(
                "reserved range meets an allowed range",
                r.start,
            ));
        }
        Ok(())
    }

    /// The mappings meeting `[start, last]`.
    fn maps_in(&self, start: u64, last: u64) -> impl Iterator<Item = (&u64, &IoasMap)> {
        let first = self
            .maps
            .range(..=start)
            .next_back()
            .filter(|(&s, m)| m.last(s) >= start)
            .map(|(&s, _)| s)
            .unwrap_or(start);
        self.maps.range(first..=last)
    }

    /// Reserves `[start, last]` for `owner` (the selftest's `ADD_RESERVED` is owner 0).
    pub(super) fn reserve(&mut self, start: u64, last: u64, owner: u32) -> Result<()> {
        self.check_reservable(start, last)?;
        self.reserved.push((start, last, owner));
        Ok(())
    }

    /// The IOVA alignment mappings need: 1 without a paging HWPT, the page size with one.
    pub(super) fn iova_alignment(&self) -> u64 {
        if self.hwpts.is_empty() && self.huge_pages {
            1
        } else {
            PAGE_SIZE
        }
    }

    /// `EADDRINUSE` unless every mapping is aligned to `align` (Linux's
    /// `iopt_check_iova_alignment` before the alignment goes up).
    fn check_alignment(&self, align: u64) -> Result<()> {
        match self.maps.iter().find(|(&iova, m)| {
            !iova.is_multiple_of(align)
                || !m.len.is_multiple_of(align)
                || !(m.pa % PAGE_SIZE).is_multiple_of(align)
        }) {
            Some((&iova, _)) => Err(eaddrinuse_v(
                "a mapping is not aligned to the new alignment",
                iova,
            )),
            None => Ok(()),
        }
    }

    /// The IOVA ranges not reserved, in order.
    pub(super) fn iova_ranges(&self) -> Vec<IovaRange> {
        let mut res = self.reserved.clone();
        res.sort_unstable();
        let mut out = Vec::new();
        let mut cursor = Some(0u64);
        for (s, l, _) in res {
            let Some(c) = cursor else { break };
            if s > c {
                out.push(IovaRange {
                    start: c,
                    last: s - 1,
                });
            }
            if l >= c {
                cursor = l.checked_add(1);
            }
        }
        if let Some(c) = cursor {
            out.push(IovaRange {
                start: c,
                last: u64::MAX,
            });
        }
        out
    }

    /// Removes paging HWPT `hwpt_id` and unmaps every mapping from its `domain`; the last one
    /// unpins the user mappings.
    pub(super) fn remove_hwpt(&mut self, hwpt_id: u32, domain: &Domain) {
        self.hwpts.remove(&hwpt_id);
        self.reserved.retain(|r| r.2 != hwpt_id);
        for (&iova, m) in &self.maps {
            let _ = domain.unmap(iova, m.len);
        }
        if self.hwpts.is_empty() {
            for m in self.maps.values_mut() {
                m.pin = None;
            }
        }
    }

    /// Checks that `[iova, iova + len)` is aligned, clear of reserved ranges (`EINVAL`) and of
    /// mappings (`EEXIST`), as Linux's `iopt_check_iova`.
    fn check_fixed_iova(&self, iova: u64, len: u64) -> Result<u64> {
        if !iova.is_multiple_of(self.iova_alignment()) {
            return Err(einval_v("IOVA not aligned to the IOAS's alignment", iova));
        }
        let last = iova
            .checked_add(len - 1)
            .ok_or(eoverflow_v("IOVA range wraps", iova))?;
        if let Some(r) = self.reserved.iter().find(|r| r.0 <= last && iova <= r.1) {
            return Err(einval_v("IOVA range meets a reserved range", r.0));
        }
        if let Some((&at, _)) = self.maps_in(iova, last).next() {
            return Err(eexist_v("IOVA range already mapped", at));
        }
        Ok(iova)
    }

    /// Linux's automatic IOVA (`iopt_alloc_iova`): aligned to the smaller of the length
    /// rounded up to a power of two and the alignment of `uva` (at most 2 MiB), keeping the
    /// page offset of `uva`, inside the allowed ranges if any (never at IOVA 0 nor in the last
    /// page), the first hole between reserved ranges and mappings that fits.
    fn find_free_iova(&self, uva: u64, len: u64) -> Result<u64> {
        if len == 0 || len >= u64::MAX / 2 {
            return Err(eoverflow_v("length for an automatic IOVA", len));
        }
        let pow = len.next_power_of_two();
        let mut align = if uva == 0 {
            pow
        } else {
            pow.min(1 << uva.trailing_zeros())
        };
        align = align.min(MAX_AUTO_ALIGN);
        if align < self.iova_alignment() {
            return Err(einval_v("user address not aligned to the IOAS", uva));
        }
        let offset = uva % PAGE_SIZE;
        let fits = |start: u64, last: u64| -> Option<u64> {
            let aligned = start.checked_add(align - 1)? & !(align - 1) | offset;
            (aligned < last && last - aligned >= len - 1).then_some(aligned)
        };
        let (lo, hi) = (PAGE_SIZE, u64::MAX - PAGE_SIZE);
        let spans: Vec<(u64, u64)> = if self.allowed.is_empty() {
            alloc::vec![(lo, hi)]
        } else {
            self.allowed
                .iter()
                .filter(|r| r.last >= lo && r.start <= hi)
                .map(|r| (r.start.max(lo), r.last.min(hi)))
                .collect()
        };
        for (s, l) in spans {
            let Some(start) = fits(s, l) else { continue };
            let mut used: Vec<(u64, u64)> = self
                .reserved
                .iter()
                .filter(|r| r.0 <= l && start <= r.1)
                .map(|r| (r.0, r.1))
                .chain(self.maps_in(start, l).map(|(&i, m)| (i, m.last(i))))
                .collect();
            used.sort_unstable();
            let mut cursor = start;
            for (us, ul) in used {
                if ul < cursor {
                    continue;
                }
                if us > cursor {
                    if let Some(iova) = fits(cursor, us - 1) {
                        return Ok(iova);
                    }
                }
                match ul.checked_add(1) {
                    Some(c) => cursor = c,
                    None => break,
                }
            }
            if cursor <= l {
                if let Some(iova) = fits(cursor, l) {
                    return Ok(iova);
                }
            }
        }
        Err(enospc("no free IOVA range large enough"))
    }

    /// Adds mapping `m` at `iova` (or the lowest free IOVA): pinned first if the IOAS has a
    /// paging HWPT, then pushed into every one. Returns the IOVA used.
    fn insert(&mut self, iova: Option<u64>, mut m: IoasMap) -> Result<u64> {
        let align = self.iova_alignment();
        if !m.len.is_multiple_of(align) || !(m.pa % PAGE_SIZE).is_multiple_of(align) {
            return Err(einval_v(
                "length or page offset not aligned to the IOAS",
                m.len,
            ));
        }
        let iova = match iova {
            Some(iova) => self.check_fixed_iova(iova, m.len)?,
            None => self.find_free_iova(m.pa, m.len)?,
        };
        if !self.hwpts.is_empty() {
            m.pin(&self.mem)?;
        }
        map_or_roll_back(self.hwpts.values().map(|d| (&**d, iova, &m)))?;
        self.maps.insert(iova, m);
        Ok(iova)
    }

    /// The mappings covering `[iova, iova + len)` without a gap, as mappings of the slices in
    /// IOVA order (no pin; a file mapping's window shared, so it stays mapped while the copy
    /// lives); `ENOENT` if any byte is not mapped.
    fn slices(&self, iova: u64, len: u64) -> Result<Vec<IoasMap>> {
        let end = iova.checked_add(len).ok_or(einval_v("range wraps", iova))?;
        let mut out = Vec::new();
        let mut cursor = iova;
        let first = self
            .maps
            .range(..=iova)
            .next_back()
            .map(|(&s, _)| s)
            .unwrap_or(iova);
        for (&s, m) in self.maps.range(first..end) {
            if s + m.len <= cursor {
                continue;
            }
            if s > cursor {
                break;
            }
            let off = cursor - s;
            let n = (m.len - off).min(end - cursor);
            out.push(IoasMap {
                len: n,
                pa: m.pa + off,
                prot: m.prot,
                user: m.user,
                pin: None,
                file: m.file.clone(),
            });
            cursor += n;
            if cursor == end {
                return Ok(out);
            }
        }
        Err(enoent_v("source range not fully mapped", cursor))
    }
}

/// Checks a mapping's length, address and protection.
fn check_map_args(pa: u64, len: u64, prot: u32) -> Result<()> {
    if len == 0 {
        return Err(einval_v("zero-length mapping", len));
    }
    if pa.checked_add(len - 1).is_none() {
        return Err(eoverflow_v("address range wraps", pa));
    }
    if prot == 0 || prot & !(IOMMU_READ | IOMMU_WRITE) != 0 {
        return Err(einval_v("bad prot", prot.into()));
    }
    Ok(())
}
impl IoasObj {
    /// Removes the mapping at `iova` from the IOAS and its HWPTs (dropping its pin); returns
    /// its length (0 if there is none).
    fn remove_map(&mut self, iova: u64) -> u64 {
        let Some(m) = self.maps.remove(&iova) else {
            return 0;
        };
        for d in self.hwpts.values() {
            let _ = d.unmap(iova, m.len);
        }
        m.len
    }
}
