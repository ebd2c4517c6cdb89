//! `iommu-sim`'s library half: scenarios, the engine that runs them, the invariant checker, reports and benchmarks, so the binary stays a
//! thin command line and tests can drive every part.

pub mod bench;
pub mod engine;
pub mod foundation;
pub mod invariants;
pub mod observe;
pub mod report;
pub mod scenario;
pub mod soak;

/// The built-in default scenario (`scenarios/default.toml`), what `cargo run --release` runs.
pub const DEFAULT_SCENARIO: &str = include_str!("../../../scenarios/default.toml");
