//! I/O page-fault handlers, as far as domains need them.
//!
//! A domain is *fault capable* when it carries an [`IopfHandler`]; page requests routed to an
//! attachment whose domain has none are answered Invalid at once (SPEC §4.3). The handler is
//! also the routing key of the fault path: each handler only ever receives groups from the
//! domains it was installed on, so it can trust the owner type of their attach handles (the
//! "iopf_handler as type key" idea of the seed thread).
//!
//! The delivery half (page request groups, the IOPF queue) is the IOPF framework's layer; this
//! module fixes the handler's identity so domains can be created fault capable now.

/// The fault handler of a fault-capable domain (SVA's, or iommufd's fault queue).
pub trait IopfHandler: Send + Sync + 'static {
    /// The handler's name, for traces and reports (`"sva"`, `"iommufd"`).
    fn name(&self) -> &str;
}
