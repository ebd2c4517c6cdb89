//! The page request queue's records: [`PageRequestDesc`] (what the IOMMU writes for each page
//! request it receives) and [`PageGroupResponse`] (what software sends back for a group).
//!
//! Layouts follow the VT-d specification (3.0 and later: the 256-bit page request descriptor,
//! the 128-bit page group response descriptor), as Linux's `intel/prq.c` reads and writes them.

use iommu_core::{
    PageRequest, PageResponse, PageResponseCode, IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
    IOMMU_FAULT_PAGE_REQUEST_PASID_VALID, IOMMU_FAULT_PERM_EXEC, IOMMU_FAULT_PERM_PRIV,
    IOMMU_FAULT_PERM_READ, IOMMU_FAULT_PERM_WRITE,
};

use super::{flag, get, set, set_flag};

/// `b` if `on`, else 0.
#[inline]
const fn bit(on: bool, b: u32) -> u32 {
    if on {
        b
    } else {
        0
    }
}

/// A VT-d page request descriptor: 32 bytes, four 64-bit words.
///
/// | word | bits  | field |
/// |------|-------|-------|
/// | 0    | 7:0   | type (1: page request) |
/// | 0    | 8     | PASID present |
/// | 0    | 31:16 | requester ID (bus/device/function) |
/// | 0    | 51:32 | PASID |
/// | 0    | 52    | execute requested |
/// | 0    | 53    | privileged mode requested |
/// | 1    | 0     | read requested |
/// | 1    | 1     | write requested |
/// | 1    | 2     | last page in group (LPIG) |
/// | 1    | 11:3  | page request group index |
/// | 1    | 63:12 | page address |
/// | 2, 3 | all   | private data (not modelled: always 0) |
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageRequestDesc(pub [u64; 4]);

const _: () = assert!(core::mem::size_of::<PageRequestDesc>() == 32);

impl PageRequestDesc {
    /// The descriptor type of a page request.
    pub const TYPE: u64 = 1;

    const TYPE_BITS: u32 = 8;
    const PASID_PRESENT: u32 = 8;
    const RID_SHIFT: u32 = 16;
    const RID_BITS: u32 = 16;
    const PASID_SHIFT: u32 = 32;
    const PASID_BITS: u32 = 20;
    const EXE_REQ: u32 = 52;
    const PM_REQ: u32 = 53;
    const RD_REQ: u32 = 0;
    const WR_REQ: u32 = 1;
    const LPIG: u32 = 2;
    const PRG_SHIFT: u32 = 3;
    const PRG_BITS: u32 = 9;
    const ADDR_SHIFT: u32 = 12;
    const ADDR_BITS: u32 = 52;

    /// Descriptor type (word 0, bits 7:0).
    #[inline]
    pub const fn desc_type(&self) -> u64 {
        get(self.0[0], 0, Self::TYPE_BITS)
    }
    /// Whether the request carries a PASID.
    #[inline]
    pub const fn pasid_present(&self) -> bool {
        flag(self.0[0], Self::PASID_PRESENT)
    }
    /// Requester ID.
    #[inline]
    pub const fn rid(&self) -> u16 {
        get(self.0[0], Self::RID_SHIFT, Self::RID_BITS) as u16
    }
    /// PASID (meaningful when present).
    #[inline]
    pub const fn pasid(&self) -> u32 {
        get(self.0[0], Self::PASID_SHIFT, Self::PASID_BITS) as u32
    }
    /// Execute access requested.
    #[inline]
    pub const fn exe_req(&self) -> bool {
        flag(self.0[0], Self::EXE_REQ)
    }
    /// Privileged-mode access requested.
    #[inline]
    pub const fn pm_req(&self) -> bool {
        flag(self.0[0], Self::PM_REQ)
    }
    /// Read access requested.
    #[inline]
    pub const fn rd_req(&self) -> bool {
        flag(self.0[1], Self::RD_REQ)
    }
    /// Write access requested.
    #[inline]
    pub const fn wr_req(&self) -> bool {
        flag(self.0[1], Self::WR_REQ)
    }
    /// Last page in the group: the group needs a response.
    #[inline]
    pub const fn lpig(&self) -> bool {
        flag(self.0[1], Self::LPIG)
    }
    /// Page request group index (9 bits).
    #[inline]
    pub const fn prg_index(&self) -> u32 {
        get(self.0[1], Self::PRG_SHIFT, Self::PRG_BITS) as u32
    }
    /// Page-aligned address of the request.
    #[inline]
    pub const fn addr(&self) -> u64 {
        get(self.0[1], Self::ADDR_SHIFT, Self::ADDR_BITS) << Self::ADDR_SHIFT
    }

    /// The descriptor the IOMMU writes for `req` from requester `rid`. The core's request maps
    /// one to one onto the descriptor's fields: a PASID of at most 20 bits, a 9-bit PRG index,
    /// a page-aligned address, no other flags (what a PCIe page request message can carry).
    #[inline]
    pub const fn encode(rid: u16, req: &PageRequest) -> PageRequestDesc {
        let perm = req.perm;
        let mut w0 = Self::TYPE;
        w0 = set_flag(
            w0,
            Self::PASID_PRESENT,
            req.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID != 0,
        );
        w0 = set(w0, Self::RID_SHIFT, Self::RID_BITS, rid as u64);
        w0 = set(w0, Self::PASID_SHIFT, Self::PASID_BITS, req.pasid as u64);
        w0 = set_flag(w0, Self::EXE_REQ, perm & IOMMU_FAULT_PERM_EXEC != 0);
        w0 = set_flag(w0, Self::PM_REQ, perm & IOMMU_FAULT_PERM_PRIV != 0);
        let mut w1 = 0;
        w1 = set_flag(w1, Self::RD_REQ, perm & IOMMU_FAULT_PERM_READ != 0);
        w1 = set_flag(w1, Self::WR_REQ, perm & IOMMU_FAULT_PERM_WRITE != 0);
        w1 = set_flag(
            w1,
            Self::LPIG,
            req.flags & IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE != 0,
        );
        w1 = set(w1, Self::PRG_SHIFT, Self::PRG_BITS, req.grpid as u64);
        w1 = set(
            w1,
            Self::ADDR_SHIFT,
            Self::ADDR_BITS,
            req.addr >> Self::ADDR_SHIFT,
        );
        PageRequestDesc([w0, w1, 0, 0])
    }

    /// The core's page request this descriptor reports (what the driver's queue handler
    /// builds before `report_device_fault`).
    #[inline]
    pub const fn decode(&self) -> PageRequest {
        PageRequest {
            flags: bit(self.pasid_present(), IOMMU_FAULT_PAGE_REQUEST_PASID_VALID)
                | bit(self.lpig(), IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE),
            pasid: self.pasid(),
            grpid: self.prg_index(),
            perm: bit(self.rd_req(), IOMMU_FAULT_PERM_READ)
                | bit(self.wr_req(), IOMMU_FAULT_PERM_WRITE)
                | bit(self.exe_req(), IOMMU_FAULT_PERM_EXEC)
                | bit(self.pm_req(), IOMMU_FAULT_PERM_PRIV),
            addr: self.addr(),
        }
    }
}

/// A VT-d page group response descriptor (invalidation-queue descriptor type 9): 16 bytes.
///
/// | word | bits  | field |
/// |------|-------|-------|
/// | 0    | 3:0   | type, low bits (9) |
/// | 0    | 4     | PASID present |
/// | 0    | 5     | private data present (not modelled: 0) |
/// | 0    | 11:9  | type, high bits (0) |
/// | 0    | 15:12 | response code (0 Success, 1 Invalid Request, 15 Response Failure) |
/// | 0    | 31:16 | requester ID |
/// | 0    | 51:32 | PASID |
/// | 1    | 2     | last page in group (always set: the response answers the group) |
/// | 1    | 11:3  | page request group index |
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageGroupResponse(pub [u64; 2]);

const _: () = assert!(core::mem::size_of::<PageGroupResponse>() == 16);

impl PageGroupResponse {
    /// The descriptor type of a page group response.
    pub const TYPE: u64 = 9;
    /// Response code: Success.
    pub const CODE_SUCCESS: u64 = 0;
    /// Response code: Invalid Request.
    pub const CODE_INVALID: u64 = 1;
    /// Response code: Response Failure.
    pub const CODE_FAILURE: u64 = 0xf;

    const TYPE_LO_BITS: u32 = 4;
    const PASID_PRESENT: u32 = 4;
    const TYPE_HI_SHIFT: u32 = 9;
    const TYPE_HI_BITS: u32 = 3;
    const CODE_SHIFT: u32 = 12;
    const CODE_BITS: u32 = 4;
    const RID_SHIFT: u32 = 16;
    const RID_BITS: u32 = 16;
    const PASID_SHIFT: u32 = 32;
    const PASID_BITS: u32 = 20;
    const LPIG: u32 = 2;
    const PRG_SHIFT: u32 = 3;
    const PRG_BITS: u32 = 9;

    /// Descriptor type (word 0, bits 11:9 and 3:0).
    #[inline]
    pub const fn desc_type(&self) -> u64 {
        get(self.0[0], 0, Self::TYPE_LO_BITS)
            | get(self.0[0], Self::TYPE_HI_SHIFT, Self::TYPE_HI_BITS) << Self::TYPE_LO_BITS
    }
    /// Whether the response carries a PASID.
    #[inline]
    pub const fn pasid_present(&self) -> bool {
        flag(self.0[0], Self::PASID_PRESENT)
    }
    /// The raw response code.
    #[inline]
    pub const fn code_bits(&self) -> u64 {
        get(self.0[0], Self::CODE_SHIFT, Self::CODE_BITS)
    }
    /// Requester ID.
    #[inline]
    pub const fn rid(&self) -> u16 {
        get(self.0[0], Self::RID_SHIFT, Self::RID_BITS) as u16
    }
    /// PASID.
    #[inline]
    pub const fn pasid(&self) -> u32 {
        get(self.0[0], Self::PASID_SHIFT, Self::PASID_BITS) as u32
    }
    /// Last page in group.
    #[inline]
    pub const fn lpig(&self) -> bool {
        flag(self.0[1], Self::LPIG)
    }
    /// Page request group index.
    #[inline]
    pub const fn prg_index(&self) -> u32 {
        get(self.0[1], Self::PRG_SHIFT, Self::PRG_BITS) as u32
    }

    /// The response code; a value the hardware does not define reads as Response Failure.
    #[inline]
    pub const fn code(&self) -> PageResponseCode {
        match self.code_bits() {
            Self::CODE_SUCCESS => PageResponseCode::Success,
            Self::CODE_INVALID => PageResponseCode::Invalid,
            _ => PageResponseCode::Failure,
        }
    }

    /// The descriptor answering the group whose last request is `req` (from requester `rid`)
    /// with `resp`. Its PRG index and PASID come from the request, so they fit the fields.
    #[inline]
    pub const fn new(rid: u32, req: &PageRequest, resp: PageResponse) -> PageGroupResponse {
        let code = match resp.code {
            PageResponseCode::Success => Self::CODE_SUCCESS,
            PageResponseCode::Invalid => Self::CODE_INVALID,
            PageResponseCode::Failure => Self::CODE_FAILURE,
        };
        let mut w0 = Self::TYPE;
        w0 = set_flag(
            w0,
            Self::PASID_PRESENT,
            req.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID != 0,
        );
        w0 = set(w0, Self::CODE_SHIFT, Self::CODE_BITS, code);
        w0 = set(w0, Self::RID_SHIFT, Self::RID_BITS, rid as u64);
        w0 = set(w0, Self::PASID_SHIFT, Self::PASID_BITS, resp.pasid as u64);
        let mut w1 = set_flag(0, Self::LPIG, true);
        w1 = set(w1, Self::PRG_SHIFT, Self::PRG_BITS, resp.grpid as u64);
        PageGroupResponse([w0, w1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_request_fields_sit_at_their_vtd_bits() {
        let req = PageRequest {
            flags: IOMMU_FAULT_PAGE_REQUEST_PASID_VALID | IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
            pasid: 0xabcde,
            grpid: 0x1a5,
            perm: IOMMU_FAULT_PERM_READ
                | IOMMU_FAULT_PERM_WRITE
                | IOMMU_FAULT_PERM_EXEC
                | IOMMU_FAULT_PERM_PRIV,
            addr: 0x0007_ffff_f123_4000,
        };
        let d = PageRequestDesc::encode(0xbeef, &req);
        // Word 0: type 1, PASID present (bit 8), RID 0xbeef at 31:16, PASID at 51:32,
        // exec (52), privileged (53).
        let w0 = 1 | 1 << 8 | 0xbeef << 16 | 0xabcde << 32 | 1 << 52 | 1 << 53;
        // Word 1: read (0), write (1), LPIG (2), PRG index at 11:3, address at 63:12.
        let w1 = 1 | 1 << 1 | 1 << 2 | 0x1a5 << 3 | 0x0007_ffff_f123_4000;
        assert_eq!(d, PageRequestDesc([w0, w1, 0, 0]));
        assert_eq!(core::mem::size_of::<PageRequestDesc>(), 32);
        assert_eq!(d.desc_type(), PageRequestDesc::TYPE);
        assert!(d.pasid_present() && d.exe_req() && d.pm_req());
        assert!(d.rd_req() && d.wr_req() && d.lpig());
        assert_eq!(
            (d.rid(), d.pasid(), d.prg_index()),
            (0xbeef, 0xabcde, 0x1a5)
        );
        assert_eq!(d.addr(), 0x0007_ffff_f123_4000);
        assert_eq!(d.decode(), req);
    }

    #[test]
    fn page_request_without_pasid_or_last_leaves_those_bits_clear() {
        let req = PageRequest {
            flags: 0,
            pasid: 0,
            grpid: 3,
            perm: IOMMU_FAULT_PERM_READ,
            addr: 0x5000,
        };
        let d = PageRequestDesc::encode(2, &req);
        assert_eq!(d.0, [1 | 2 << 16, 1 | 3 << 3 | 0x5000, 0, 0]);
        assert_eq!(d.decode(), req);
    }

    #[test]
    fn page_group_response_fields_sit_at_their_vtd_bits() {
        let req = PageRequest {
            flags: IOMMU_FAULT_PAGE_REQUEST_PASID_VALID | IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
            pasid: 0xfffff,
            grpid: 0x1ff,
            perm: IOMMU_FAULT_PERM_READ,
            addr: 0,
        };
        let resp = PageResponse {
            pasid: 0xfffff,
            grpid: 0x1ff,
            code: PageResponseCode::Failure,
        };
        let d = PageGroupResponse::new(0x1234, &req, resp);
        // Word 0: type 9 at 3:0, PASID present (4), code 0xf at 15:12, RID at 31:16, PASID at
        // 51:32. Word 1: LPIG (2), PRG index at 11:3.
        let w0 = 9 | 1 << 4 | 0xf << 12 | 0x1234 << 16 | 0xfffff << 32;
        let w1 = 1 << 2 | 0x1ff << 3;
        assert_eq!(d, PageGroupResponse([w0, w1]));
        assert_eq!(core::mem::size_of::<PageGroupResponse>(), 16);
        assert_eq!(d.desc_type(), PageGroupResponse::TYPE);
        assert!(d.pasid_present() && d.lpig());
        assert_eq!(
            (d.rid(), d.pasid(), d.prg_index()),
            (0x1234, 0xfffff, 0x1ff)
        );
        assert_eq!(d.code(), PageResponseCode::Failure);
    }

    #[test]
    fn page_group_response_codes_encode_as_vtd_defines_them() {
        let req = PageRequest::default();
        for (code, bits) in [
            (PageResponseCode::Success, 0),
            (PageResponseCode::Invalid, 1),
            (PageResponseCode::Failure, 0xf),
        ] {
            let resp = PageResponse {
                pasid: 0,
                grpid: 0,
                code,
            };
            let d = PageGroupResponse::new(0, &req, resp);
            assert_eq!(d.0[0], 9 | bits << 12);
            assert_eq!(d.code(), code);
        }
    }
}
