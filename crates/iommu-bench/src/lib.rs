//! The benchmark workloads of iommu-rs, in one place.
//!
//! Each module builds one workload (the objects it needs, in the state the measurement
//! assumes) and exposes the operation to time, without timing it: the criterion benches in
//! `benches/` (`cargo bench -p iommu-bench`) and `iommu-sim bench` (each figure beside its floor,
//! in one run) wrap the same calls in their own timing loops, so the two can never drift apart.
//! `iommu-sim bench` runs the `e2e`, `floor` and `fault_fd` workloads (the fault path against
//! its floors) and the `pt`, `lookup` and `translate` building blocks; `fault_path`, `memory`
//! and `vmm` run under criterion only. The `examples/` time single workloads quickly while
//! profiling (`e2e_probe`, `fd_probe`, `mem_probe`, `lat_probe` for the latency tail), what one
//! atomic operation costs (`atomics_probe`), how often the machine takes a CPU away
//! (`stall_probe`), and how two devices scale on two CPUs (`scale_probe`).
//!
//! Workloads `expect` success: each is built so that every call succeeds, and a failure is a
//! bug in the stack that the bench must not hide.
//!
//! * [`pt`]: `iommu-pt` and the `x86_64` crate's mapper behind one [`pt::PtSide`] trait.
//! * [`lookup`]: `attach_handle_get` over 1,024 live PASIDs, with a `HashMap` floor and churn.
//! * [`translate`]: the emulated IOMMU's IOTLB hit and miss, with their floors.
//! * [`e2e`]: end-to-end SVA fault groups with 1 to 256 in flight on one `DmaEngine`, pages
//!   prepared off the path or fresh.
//! * [`fault_path`]: end-to-end SVA fault groups through the blocking DMA calls.
//! * [`fault_fd`]: the iommufd fault fd round trip, and the core-only floor.
//! * [`memory`]: frame writes and DMA over resident pages.
//! * [`floor`]: the floors of the fault path: a minimal routing pipeline, a frame's memory
//!   work, a cross-thread handoff.
//! * [`vmm`]: rust-vmm device DMA through vm-memory's `IommuMemory` over the emulated IOMMU.
//! * [`probe_args`]: the probes' argument checks (a bad value ends a probe with its usage).
//! * [`load`]: spinning threads on every other CPU, for figures under load.

pub mod e2e;
pub mod fault_fd;
pub mod fault_path;
pub mod floor;
pub mod load;
pub mod lookup;
pub mod memory;
pub mod probe_args;
pub mod pt;
pub mod translate;
pub mod vmm;

use std::time::{Duration, Instant};

/// Times `timed(state, j)` for `iters` calls, in batches of `batch` (`j` in `0..batch`), and
/// runs `untimed(state, j)` after each batch to undo it: one map (or unmap) at a time into
/// tables that already exist, the steady state of a DMA mapping cache.
pub fn batched<T>(
    state: &mut T,
    iters: u64,
    batch: u64,
    mut timed: impl FnMut(&mut T, u64),
    mut untimed: impl FnMut(&mut T, u64),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = batch.min(iters - done);
        let start = Instant::now();
        for j in 0..n {
            timed(state, j);
        }
        total += start.elapsed();
        for j in 0..n {
            untimed(state, j);
        }
        done += n;
    }
    total
}
