//! `iommu-sim`'s library half: scenarios and the built-in foundation run, so the binary stays a
//! thin command line and tests can drive every part.

pub mod bench;
pub mod engine;
pub mod foundation;
pub mod invariants;
pub mod report;
pub mod scenario;
