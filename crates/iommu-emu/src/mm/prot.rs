//! Memory protection of a VMA: [`Prot`] (`PROT_*`), and what it allows.

use iommu_core::{IOMMU_FAULT_PERM_EXEC, IOMMU_FAULT_PERM_READ, IOMMU_FAULT_PERM_WRITE};
use iommu_pt::Perms;

/// Memory protection of a VMA (`PROT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Prot {
    /// `PROT_READ`.
    pub read: bool,
    /// `PROT_WRITE`.
    pub write: bool,
    /// `PROT_EXEC`.
    pub exec: bool,
}

impl Prot {
    /// `PROT_NONE`: no access; pages keep their data.
    pub const NONE: Prot = Prot {
        read: false,
        write: false,
        exec: false,
    };
    /// `PROT_READ`.
    pub const READ: Prot = Prot {
        read: true,
        write: false,
        exec: false,
    };
    /// `PROT_READ | PROT_WRITE`.
    pub const READ_WRITE: Prot = Prot {
        read: true,
        write: true,
        exec: false,
    };
    /// `PROT_READ | PROT_EXEC`.
    pub const READ_EXEC: Prot = Prot {
        read: true,
        write: false,
        exec: true,
    };

    /// Whether the protection allows an access with `IOMMU_FAULT_PERM_*` bits `perm`.
    pub fn allows(self, perm: u32) -> bool {
        let any = self.read || self.write || self.exec;
        // x86 cannot express write-only or exec-only pages: any access right implies read.
        (perm & IOMMU_FAULT_PERM_READ == 0 || any)
            && (perm & IOMMU_FAULT_PERM_WRITE == 0 || self.write)
            && (perm & IOMMU_FAULT_PERM_EXEC == 0 || self.exec)
            && (perm & (IOMMU_FAULT_PERM_READ | IOMMU_FAULT_PERM_WRITE | IOMMU_FAULT_PERM_EXEC)
                != 0
                || any)
    }

    pub(super) fn pte_perms(self) -> Perms {
        Perms {
            read: true,
            write: self.write,
            exec: self.exec,
            user: true,
        }
    }
}
