//! The read-but-unanswered side of a fault object (Linux `fault->response` and the state
//! `fault->mutex` guards): response cookies and the groups waiting behind them.

use alloc::vec::Vec;

use iommu_core::{Attachment, IopfGroup};

use super::{FdHandle, Queued};

/// Cookie → group for groups read but not answered (Linux `fault->response` xarray with
/// `XA_FLAGS_ALLOC1`). Cookies are the lowest free value in `[1, u32::MAX]` (H18): slot `i`
/// holds cookie `i + 1`; `free` has bit `i` set for every free slot below `slots.len()`, and
/// every word below `hint` is full, so finding the lowest free slot is a short word scan
/// (a binary heap cost more: its sift showed up in the batched profile).
#[derive(Default)]
pub(super) struct CookieMap {
    slots: Vec<Option<IopfGroup>>,
    free: Vec<u64>,
    hint: usize,
    pub(super) live: usize,
}

impl CookieMap {
    /// Gives `group` the lowest free cookie; hands the group back when none is left.
    #[inline]
    pub(super) fn insert(&mut self, group: IopfGroup) -> core::result::Result<u32, IopfGroup> {
        let found = self.free[self.hint..]
            .iter()
            .position(|&w| w != 0)
            .map(|off| self.hint + off);
        let idx = match found {
            Some(w) => {
                self.hint = w;
                let bit = self.free[w].trailing_zeros() as usize;
                self.free[w] &= !(1 << bit);
                w * 64 + bit
            }
            None => {
                self.hint = self.free.len();
                // Cookie u32::MAX is index u32::MAX - 1: the last one that fits.
                if self.slots.len() >= u32::MAX as usize {
                    return Err(group);
                }
                self.slots.push(None);
                if self.slots.len() > self.free.len() * 64 {
                    self.free.push(0);
                }
                self.slots.len() - 1
            }
        };
        self.slots[idx] = Some(group);
        self.live += 1;
        Ok(idx as u32 + 1)
    }

    /// The group waiting behind `cookie`.
    #[inline]
    pub(super) fn get(&self, cookie: u32) -> Option<&IopfGroup> {
        let idx = cookie.checked_sub(1)? as usize;
        self.slots.get(idx)?.as_ref()
    }

    #[inline]
    fn release(&mut self, idx: usize) {
        self.free[idx / 64] |= 1 << (idx % 64);
        self.hint = self.hint.min(idx / 64);
        self.live -= 1;
    }

    /// Erases `cookie` and returns its group (H18: erased before the response is sent).
    #[inline]
    pub(super) fn take(&mut self, cookie: u32) -> Option<IopfGroup> {
        let idx = cookie.checked_sub(1)? as usize;
        let g = self.slots.get_mut(idx)?.take()?;
        self.release(idx);
        Some(g)
    }

    /// Erases every group for which `pred` holds.
    pub(super) fn take_matching(
        &mut self,
        mut pred: impl FnMut(&IopfGroup) -> bool,
        out: &mut Vec<IopfGroup>,
    ) {
        if self.live == 0 {
            return;
        }
        for idx in 0..self.slots.len() {
            if self.slots[idx].as_ref().is_some_and(&mut pred) {
                out.extend(self.slots[idx].take());
                self.release(idx);
            }
        }
    }
}

/// What the `mutex` protects (Linux `fault->mutex`, serialising read, write and auto-response).
#[derive(Default)]
pub(super) struct Responses {
    pub(super) map: CookieMap,
    /// Reused buffer for the groups one read takes off `deliver`.
    pub(super) scratch: Vec<Queued>,
    /// The last attachment whose `dev_id` a read resolved (a downcast costs two atomic RMWs;
    /// consecutive groups usually share an attachment). Holding the clone rules out address
    /// reuse; auto-response and shutdown drop it so it never outlives its attachment's detach.
    pub(super) dev_id_cache: Option<(Attachment, u32)>,
}

impl Responses {
    /// The `dev_id` recorded in the handle `group` was routed through (SPEC §5.5).
    #[inline]
    pub(super) fn dev_id(&mut self, group: &IopfGroup) -> u32 {
        let att = group.attachment();
        if let Some((a, id)) = &self.dev_id_cache {
            if a.ptr_eq(att) {
                return *id;
            }
        }
        // The handler only queues groups whose handle is an `FdHandle`.
        let id = group.handle::<FdHandle>().map_or(0, |h| h.dev_id);
        self.dev_id_cache = Some((att.clone(), id));
        id
    }
}
