//! The emulator's trace-event contract: the `target` and `kind` values of the PRI events the
//! endpoints and the page request queue emit (documented field by field in [`crate::endpoint`]),
//! exported so that a subscriber matches on these names instead of copies of the strings.

/// The target of every PRI event.
pub const TARGET: &str = "iommu_emu::pri";

/// The values of the `kind` field.
pub mod kind {
    /// A page request group was written to the queue or answered by the IOMMU on overflow.
    pub const GROUP_SENT: &str = "group_sent";
    /// A page response reached the endpoint (applied, auto or stray).
    pub const RESPONSE: &str = "response";
    /// A group was given up without its response being consumed.
    pub const ABANDONED: &str = "abandoned";
}

/// The values of the `cause` field of an [`kind::ABANDONED`] event: why the group was given up.
pub mod cause {
    /// A function-level reset dropped every outstanding group.
    pub const RESET: &str = "reset";
    /// The DMA waited longer than the response timeout.
    pub const TIMEOUT: &str = "timeout";
    /// The polled job waiting for it was dropped.
    pub const DROPPED: &str = "dropped";
}
