//! The fault path's lookup: `attach_handle_get` over 1,024 live PASIDs (as in ANCHORS.md),
//! beside the floor of an uncontended `HashMap` lookup returning the same counted reference,
//! alone and while another thread churns attach/detach on the same group.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use iommu_core::mock::MockDriver;
use iommu_core::{
    attach_device_pasid, attach_handle_get, detach_device_pasid, AttachHandle, Device, Domain,
    Group,
};

/// Live PASIDs in the array.
pub const LIVE: u32 = 1024;

/// The owner type of the attachments looked up.
pub struct Owner(pub u32);

/// A group with [`LIVE`] PASIDs attached, and the same handles in a `HashMap`.
pub struct Lookup {
    group: Arc<Group>,
    dev: Arc<Device>,
    dom: Arc<Domain>,
    floor: HashMap<u32, Arc<AttachHandle<Owner>>>,
}

/// The `i`-th PASID looked up: all live ones in turn.
pub fn pick(i: u64) -> u32 {
    (i % u64::from(LIVE)) as u32 + 1
}

impl Lookup {
    /// Attaches PASIDs `1..=LIVE` on a mock IOMMU.
    pub fn new() -> Self {
        let group = Group::new(MockDriver::new("bench"), "g");
        let dev = group.add_device("d", 1 << 20).expect("probe");
        let dom = Domain::alloc_paging(&dev).expect("domain");
        let floor = (1..=LIVE)
            .map(|p| {
                let h = attach_device_pasid(&dom, &dev, p, Owner(p)).expect("attach");
                (p, h)
            })
            .collect();
        Self {
            group,
            dev,
            dom,
            floor,
        }
    }

    /// The floor: `HashMap` get plus `Arc` clone.
    #[inline]
    pub fn floor(&self, pasid: u32) -> Option<Arc<AttachHandle<Owner>>> {
        self.floor.get(&pasid).cloned()
    }

    /// The typed lookup.
    #[inline]
    pub fn get(&self, pasid: u32) -> Option<u32> {
        attach_handle_get::<Owner>(&self.group, pasid)
            .map(|h| h.0)
            .ok()
    }

    /// The typed lookup with another owner type: `EBUSY`.
    #[inline]
    pub fn get_wrong_type(&self, pasid: u32) -> bool {
        attach_handle_get::<u8>(&self.group, pasid).is_err()
    }

    /// Starts a thread that attaches and detaches 64 other PASIDs on the same group until the
    /// returned guard is dropped.
    pub fn churn(&self) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let (dev, dom, flag) = (self.dev.clone(), self.dom.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut n = 0u32;
            while !flag.load(Ordering::Relaxed) {
                let p = LIVE + 1 + n % 64;
                attach_device_pasid(&dom, &dev, p, Owner(p)).expect("churn attach");
                detach_device_pasid(&dom, &dev, p).expect("churn detach");
                n = n.wrapping_add(1);
            }
        });
        Churn {
            stop,
            thread: Some(thread),
        }
    }
}

impl Default for Lookup {
    fn default() -> Self {
        Self::new()
    }
}

/// Attach/detach churn on another thread; stops and joins on drop.
pub struct Churn {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            black_box(t.join().is_ok());
        }
    }
}
