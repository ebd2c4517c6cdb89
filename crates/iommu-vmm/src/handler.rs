//! The VMM's user-space fault handler loop: iommufd's own [`iommufd::handler`], re-exported
//! where this crate's worlds use it.

pub use iommufd::handler::{run_fault_handler, HandlerStats, StopHandle, GUARD, READ_RECORDS};
