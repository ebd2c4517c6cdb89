//! A fast hasher for the small integer keys of the emulator's tables (contexts, requesters,
//! the page map).

/// A multiplicative hasher for small integer keys (PASIDs, device IDs): these lookups are on
/// the translation path, where SipHash would cost more than the rest of the lookup.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHash;
#[derive(Default)]
pub(crate) struct FastHasher(u64);
impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}
impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (self.0 ^ u64::from(i)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0 ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
