//! Hardware records the emulator models, in their VT-d encodings, apart from the logic that
//! uses them (the OpenVMM `spec` module pattern).
//!
//! * [`pasid`] — the scalable-mode PASID-table entry: what a RID or PASID
//!   context points DMA at. Linux: `intel/pasid.h`.
//! * [`prq`] — the page request descriptor written to the page request queue (256 bits since
//!   VT-d 3.0) and the page group response descriptor that answers it. Linux: `intel/prq.c`.
//!
//! Each record is a `#[repr(transparent)]` newtype over `[u64; N]`, the words in the order the
//! hardware lays them out, with `const fn` accessors per field and a size assertion. Plain
//! words rather than `bitfield-struct` or `zerocopy`: the records are a few fields over two to
//! eight words, the hot paths (the page request queue, responses) only need shifts and masks,
//! and no dependency is added for that. Every field's bit position is checked against a
//! hand-written encoding in the tests of its file.

pub mod pasid;
pub mod prq;

/// A mask of the low `bits` bits.
#[inline]
const fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    }
}

/// Field `[shift, shift + bits)` of `word`.
#[inline]
const fn get(word: u64, shift: u32, bits: u32) -> u64 {
    (word >> shift) & mask(bits)
}

/// `word` with field `[shift, shift + bits)` set to `value` (truncated to the field).
#[inline]
const fn set(word: u64, shift: u32, bits: u32, value: u64) -> u64 {
    (word & !(mask(bits) << shift)) | ((value & mask(bits)) << shift)
}

/// Bit `bit` of `word`.
#[inline]
const fn flag(word: u64, bit: u32) -> bool {
    word & (1 << bit) != 0
}

/// `word` with bit `bit` set to `on`.
#[inline]
const fn set_flag(word: u64, bit: u32, on: bool) -> u64 {
    set(word, bit, 1, on as u64)
}
