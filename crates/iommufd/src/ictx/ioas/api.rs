//! The IOAS API of the context: allocation, allowed ranges, map, copy, unmap and options.

use super::*;

impl Ictx {
    /// `IOMMU_IOAS_ALLOC`: a new, empty IOVA space; returns its ID.
    pub fn ioas_alloc(&self) -> Result<u32> {
        let mut t = self.table.lock();
        let id = t.alloc_id()?;
        t.insert_object(id, Object::Ioas(IoasObj::new(self.mem.clone())));
        Ok(id)
    }

    /// `IOMMU_IOAS_IOVA_RANGES`: the IOVA ranges mappings may use: all 64 bits less the
    /// reserved ranges (each paging HWPT reserves what lies beyond its domain's aperture).
    pub fn ioas_iova_ranges(&self, ioas_id: u32) -> Result<Vec<IovaRange>> {
        Ok(self.table.lock().ioas_mut(ioas_id)?.iova_ranges())
    }

    /// The IOVA alignment every mapping of the IOAS needs: 1 byte without a paging HWPT (as
    /// Linux), the domains' 4 KiB page with one.
    pub fn ioas_iova_alignment(&self, ioas_id: u32) -> Result<u64> {
        Ok(self.table.lock().ioas_mut(ioas_id)?.iova_alignment())
    }

    /// Reserves `[start, last]` of the IOAS (the selftest's `IOMMU_TEST_OP_ADD_RESERVED`):
    /// no mapping may go there. `EADDRINUSE` if a mapping or an allowed range meets it.
    pub fn ioas_reserve(&self, ioas_id: u32, start: u64, last: u64) -> Result<()> {
        if start > last {
            return Err(einval_v("reserved range start > last", start));
        }
        self.table.lock().ioas_mut(ioas_id)?.reserve(start, last, 0)
    }

    /// `IOMMU_IOAS_ALLOW_IOVAS`: replaces the ranges automatic IOVA allocation may use (an
    /// empty list allows everything again). `EINVAL` for a range with `start >= last` or two
    /// overlapping ranges; nothing changes then.
    pub fn ioas_allow_iovas(&self, ioas_id: u32, ranges: &[IovaRange]) -> Result<()> {
        let mut t = self.table.lock();
        let ioas = t.ioas_mut(ioas_id)?;
        let mut sorted = ranges.to_vec();
        sorted.sort_by_key(|r| r.start);
        for (i, r) in sorted.iter().enumerate() {
            if r.start >= r.last {
                return Err(einval_v("allowed range start >= last", r.start));
            }
            if i > 0 && sorted[i - 1].last >= r.start {
                return Err(einval_v("allowed ranges overlap", r.start));
            }
        }
        if let Some(r) = sorted.iter().find(|r| {
            ioas.reserved
                .iter()
                .any(|v| v.0 <= r.last && r.start <= v.1)
        }) {
            return Err(eaddrinuse_v(
                "allowed range meets a reserved range",
                r.start,
            ));
        }
        ioas.allowed = sorted;
        Ok(())
    }

    /// `IOMMU_IOAS_MAP` of physical memory: maps `len` bytes at `pa` into the IOAS at `iova`
    /// (or at the lowest free IOVA with `None`); returns the IOVA used.
    ///
    /// The mapping is pushed into every paging HWPT on the IOAS through `Domain::map`; if one
    /// refuses, the others are rolled back. `ENOENT` for an unknown IOAS; `EINVAL` for a zero
    /// or unaligned (4 KiB) range, a range outside the allowed IOVA ranges, or `prot` not a
    /// non-empty subset of `IOMMU_READ | IOMMU_WRITE`; `EOVERFLOW` when `pa + len` or
    /// `iova + len` wraps (Linux's `check_add_overflow` on the user range); `EEXIST` for an
    /// overlap; `ENOSPC` when no free IOVA range is large enough.
    pub fn ioas_map(
        &self,
        ioas_id: u32,
        iova: Option<u64>,
        pa: u64,
        len: u64,
        prot: u32,
    ) -> Result<u64> {
        self.map_range(ioas_id, iova, pa, len, prot, false)
    }

    /// Checks the arguments and records one mapping of `[addr, addr + len)` (physical, or a
    /// user VA when `user`) in IOAS `ioas_id`.
    fn map_range(
        &self,
        ioas_id: u32,
        iova: Option<u64>,
        addr: u64,
        len: u64,
        prot: u32,
        user: bool,
    ) -> Result<u64> {
        let mut t = self.table.lock();
        let ioas = t.ioas_mut(ioas_id)?;
        check_map_args(addr, len, prot)?;
        ioas.insert(
            iova,
            IoasMap {
                len,
                pa: addr,
                prot,
                user,
                pin: None,
                file: None,
            },
        )
    }

    /// `IOMMU_IOAS_MAP` of the caller's memory at user VA `uva` (the context's
    /// [`UserMemory`]); as [`Ictx::ioas_map`], and `EFAULT` if the IOAS has a paging HWPT and
    /// a page of the range cannot be pinned.
    pub fn ioas_map_user(
        &self,
        ioas_id: u32,
        iova: Option<u64>,
        uva: u64,
        len: u64,
        prot: u32,
    ) -> Result<u64> {
        self.map_range(ioas_id, iova, uva, len, prot, true)
    }

    /// `IOMMU_IOAS_MAP_FILE`: maps `[start, start + len)` of the caller's file `fd` (a memfd)
    /// at `iova` (or the lowest free IOVA) with `prot`; returns the IOVA used. The context's
    /// [`UserMemory`] makes the file range addressable ([`UserMemory::map_file`]: `EBADF`,
    /// `EINVAL` for a range beyond the file's end, `EOPNOTSUPP` where there are no files) and
    /// the range is then mapped as [`Ictx::ioas_map_user`] maps memory; the window goes with
    /// the mapping (or at once on an error).
    pub fn ioas_map_file(
        &self,
        ioas_id: u32,
        iova: Option<u64>,
        fd: i32,
        start: u64,
        len: u64,
        prot: u32,
    ) -> Result<u64> {
        let mut t = self.table.lock();
        let ioas = t.ioas_mut(ioas_id)?;
        check_map_args(start, len, prot)?;
        let uva = self.mem.map_file(fd, start, len, prot & IOMMU_WRITE != 0)?;
        let window = Arc::new(FileWindow {
            mem: self.mem.clone(),
            uva,
            len,
        });
        ioas.insert(
            iova,
            IoasMap {
                len,
                pa: uva,
                prot,
                user: true,
                pin: None,
                file: Some(window),
            },
        )
    }

    /// `IOMMU_IOAS_COPY`: maps what `[src_iova, src_iova + len)` of IOAS `src_id` maps into IOAS
    /// `dst_id` at `dst_iova` (or the lowest free IOVA), with protection `prot`; returns the
    /// IOVA used. `ENOENT` if the source range is not fully mapped; `EPERM` for a writable copy
    /// of a read-only source; then as [`Ictx::ioas_map`]. A copy takes its own pins (Linux
    /// shares the source's) and shares the file window of a file mapping, which stays mapped
    /// while either maps it.
    pub fn ioas_copy(
        &self,
        dst_id: u32,
        dst_iova: Option<u64>,
        src_id: u32,
        src_iova: u64,
        len: u64,
        prot: u32,
    ) -> Result<u64> {
        let mut t = self.table.lock();
        let slices = t.ioas_mut(src_id)?.slices(src_iova, len)?;
        let dst = t.ioas_mut(dst_id)?;
        check_map_args(0, len, prot)?;
        if prot & IOMMU_WRITE != 0 {
            if let Some(s) = slices.iter().find(|s| s.prot & IOMMU_WRITE == 0) {
                return Err(eperm_v("writable copy of a read-only mapping", s.pa));
            }
        }
        let align = dst.iova_alignment();
        if !len.is_multiple_of(align) {
            return Err(einval_v("length not aligned to the IOAS", len));
        }
        let base = match dst_iova {
            Some(iova) => dst.check_fixed_iova(iova, len)?,
            None => dst.find_free_iova(slices[0].pa, len)?,
        };
        let mut done: Vec<u64> = Vec::new();
        let mut iova = base;
        for mut m in slices {
            let n = m.len;
            m.prot = prot;
            if let Err(e) = dst.insert(Some(iova), m) {
                for at in done {
                    dst.remove_map(at);
                }
                return Err(e);
            }
            done.push(iova);
            iova += n;
        }
        Ok(base)
    }

    /// `IOMMU_IOAS_UNMAP`: removes every mapping inside `[iova, iova + len)` from the IOAS and
    /// its paging HWPTs; returns the bytes unmapped. `iova` 0 with `len` `u64::MAX` unmaps
    /// everything and succeeds on an empty IOAS. Otherwise `EINVAL` for a zero length,
    /// `EOVERFLOW` for a range past 2^64, `ENOENT` for an unknown IOAS, when
    /// nothing is mapped there, or when a mapping straddles the range's edge (mappings are not
    /// split, as Linux's areas).
    pub fn ioas_unmap(&self, ioas_id: u32, iova: u64, len: u64) -> Result<u64> {
        let mut t = self.table.lock();
        let ioas = t.ioas_mut(ioas_id)?;
        if iova == 0 && len == u64::MAX {
            let all: Vec<u64> = ioas.maps.keys().copied().collect();
            return Ok(all.into_iter().map(|at| ioas.remove_map(at)).sum());
        }
        if len == 0 {
            return Err(einval_v("zero-length unmap", iova));
        }
        // Linux `iopt_unmap_iova`: a range whose last byte wraps is EOVERFLOW.
        let last = iova
            .checked_add(len - 1)
            .ok_or(eoverflow_v("unmap range wraps", iova))?;
        let hit: Vec<(u64, u64)> = ioas
            .maps_in(iova, last)
            .map(|(&s, m)| (s, m.last(s)))
            .collect();
        if hit.iter().any(|&(s, l)| s < iova || l > last) {
            return Err(enoent_v("unmap range cuts through a mapping", iova));
        }
        if hit.is_empty() {
            return Err(enoent_v("nothing mapped in range", iova));
        }
        Ok(hit.into_iter().map(|(s, _)| ioas.remove_map(s)).sum())
    }

    /// `IOMMU_OPTION_HUGE_PAGES` of IOAS `ioas_id`: sets it with `Some`, returns it. Turning
    /// huge pages off makes everything page aligned (Linux `iopt_disable_large_pages`):
    /// `EADDRINUSE` while a mapping is not.
    pub fn ioas_huge_pages(&self, ioas_id: u32, set: Option<bool>) -> Result<bool> {
        let mut t = self.table.lock();
        let ioas = t.ioas_mut(ioas_id)?;
        if set == Some(false) {
            ioas.check_alignment(PAGE_SIZE)?;
        }
        if let Some(v) = set {
            ioas.huge_pages = v;
        }
        Ok(ioas.huge_pages)
    }
}
