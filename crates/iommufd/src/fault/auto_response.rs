//! Answering on user space's behalf (Linux `iommufd_auto_response_faults` and the release
//! paths): every group of a detached or replaced attachment, or everything when the queue is
//! closed, is answered Invalid exactly once (H9, H21, H23).

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::Ordering::Relaxed;

use iommu_core::{Attachment, IopfGroup, PageResponseCode};

use super::Fault;

impl Fault {
    /// Answers Invalid every group of `attachment` still queued or read-but-unanswered (Linux
    /// `iommufd_auto_response_faults`), matching by attachment identity. Called after the core
    /// detach/replace returned, so no report can still deliver to `attachment` (H2, H4) and this
    /// sees every group it produced. Returns how many groups were answered.
    pub(crate) fn auto_response(&self, attachment: &Attachment) -> usize {
        self.answer_invalid_where(false, |a| a.ptr_eq(attachment))
    }

    /// Closes the queue: answers everything Invalid, and answers later arrivals at once.
    pub(crate) fn shutdown(&self) -> usize {
        self.answer_invalid_where(true, |_| true)
    }

    /// Takes every group whose attachment satisfies `of` out of `deliver` and the cookie map
    /// (under the `mutex`, then the short lock, as read and write take them), closing the
    /// queue first if `close`, and answers them Invalid.
    fn answer_invalid_where(&self, close: bool, of: impl Fn(&Attachment) -> bool) -> usize {
        let mut resp = self.mutex.lock();
        let mut out = Vec::new();
        {
            let mut d = self.lock.lock();
            d.closed |= close;
            let mut keep = VecDeque::new();
            for q in d.list.drain(..) {
                if of(q.group.attachment()) {
                    out.push(q.group);
                } else {
                    keep.push_back(q);
                }
            }
            d.list = keep;
            self.clear_if_empty(&mut d);
        }
        resp.map.take_matching(|g| of(g.attachment()), &mut out);
        if resp.dev_id_cache.as_ref().is_some_and(|(a, _)| of(a)) {
            resp.dev_id_cache = None;
        }
        drop(resp);
        self.answer_invalid(out)
    }

    fn answer_invalid(&self, groups: Vec<IopfGroup>) -> usize {
        let n = groups.len();
        self.auto_responses.fetch_add(n as u64, Relaxed);
        for g in groups {
            g.respond_auto(PageResponseCode::Invalid);
        }
        n
    }
}
