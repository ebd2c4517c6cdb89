//! What a scenario file may size, and how far (`docs/scenarios.md`, "Limits"). Each bound keeps
//! one run's threads, memory and time sane whatever the file says; the engine relies on them
//! (no arithmetic on a file's values can overflow once they hold).

/// Bytes `check` and `run` read of a scenario file.
pub const MAX_FILE_BYTES: u64 = 4 << 20;
/// Bytes of a name (any `name` field, and `group`).
pub const MAX_NAME_BYTES: usize = 128;
/// `[[iommu]]` tables (each has a page request queue thread and up to 64 IOPF workers).
pub const MAX_IOMMUS: usize = 16;
/// `[[device]]` tables.
pub const MAX_DEVICES: usize = 256;
/// `[[process]]` tables.
pub const MAX_PROCESSES: usize = 4096;
/// VMAs of one process.
pub const MAX_VMAS_PER_PROCESS: usize = 64;
/// Sum of one process's VMA sizes: VMAs are lazy, but they must fit in the 47-bit user half
/// of the first-stage address space with room left for the `overflow` flood regions.
pub const MAX_PROCESS_VM: u64 = 1 << 46;
/// `[[bond]]` tables.
pub const MAX_BONDS: usize = 4096;
/// `[[owner]]` tables (each has a fault handler thread).
pub const MAX_OWNERS: usize = 64;
/// `[[job]]` tables (threads mode runs one thread per job).
pub const MAX_JOBS: usize = 1024;
/// `[[event]]` tables.
pub const MAX_EVENTS: usize = 4096;
/// A job's `len`: the run keeps a buffer of this size per job for verification.
pub const MAX_JOB_LEN: u64 = 1 << 30;
/// Sum of every job's `len` (the verification buffers held at once).
pub const MAX_JOB_LEN_TOTAL: u64 = 4 << 30;
/// A job's `repeat`.
pub const MAX_REPEAT: u64 = 1_000_000;
/// Bytes one run moves by DMA: the sum over jobs of `len` (half of it for copies) times
/// `repeat`.
pub const MAX_DMA_BYTES: u64 = 64 << 30;
/// An event's `at_ms` (ten minutes): a timed event always fires, so the run waits for it.
pub const MAX_AT_MS: u64 = 600_000;
/// An event's `after_groups`.
pub const MAX_AFTER_GROUPS: u64 = 1 << 40;
/// End of an owner's IOVA space: `iova + len` must not pass it (the IOAS aperture, 48 bits).
pub const IOVA_END: u64 = iommufd::IOAS_APERTURE_END;
