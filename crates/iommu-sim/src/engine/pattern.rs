//! The data jobs move: what a write or fill job puts in memory, derived from the job's name so
//! the end-of-run verification can recompute it without keeping a copy.

use crate::scenario::JobSpec;

/// Byte `off` of job `seed`'s write pattern.
pub(super) fn pattern(seed: u64, off: u64) -> u8 {
    (off as u8) ^ ((off >> 12) as u8).wrapping_mul(31) ^ (seed as u8) ^ ((seed >> 8) as u8)
}

/// A job's pattern seed: the FNV-1a 64-bit hash of its name.
pub(super) fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The bytes job `j` writes for chunk `[off, off + buf.len())` (write jobs).
pub(super) fn write_chunk(j: &JobSpec, off: u64, buf: &mut [u8]) {
    let seed = name_seed(&j.name);
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern(seed, j.offset + off + k as u64);
    }
}

/// The byte fill jobs write.
pub(super) fn fill_byte(j: &JobSpec) -> u8 {
    name_seed(&j.name) as u8 | 1
}
