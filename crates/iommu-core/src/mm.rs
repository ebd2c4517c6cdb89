//! The core's view of a process address space (Linux's `mm_struct`), as SVA needs it.
//!
//! The core does not know how memory is managed; it binds devices to an address space by
//! identity and (in the SVA layer) asks it to resolve page faults. `iommu-emu`'s `Mm` implements
//! this for simulated processes.

/// A process address space that devices can share through SVA.
pub trait AddressSpace: Send + Sync + 'static {
    /// A stable identity, unique among live address spaces (used to tell two mms apart when an
    /// existing bond is found, SPEC §3.2 step 5).
    fn mm_id(&self) -> u64;
}
