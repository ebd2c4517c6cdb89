//! The core's trace points (`iommu_core::trace`), seen through a recording subscriber.
//!
//! One test in its own binary: `tracing` caches each call site's interest process-wide, and a
//! call site first reached by another test's thread while this test's dispatcher is being
//! registered could be cached as uninteresting.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{last, manual_fixture};
use iommu_core::report_device_fault;
use iommu_core::sva_bind_device;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records every trace event's fields.
#[derive(Default, Clone)]
struct Recorder(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.0.insert(f.name().into(), format!("{v:?}"));
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().into(), v.into());
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.target().starts_with("iommu_core")
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut m = BTreeMap::new();
        e.record(&mut Fields(&mut m));
        self.0.lock().unwrap().push(m);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn trace_points_follow_bind_fault_response_detach_and_pasid_free_in_order() {
    let rec = Recorder::default();
    let dispatch = tracing::Dispatch::new(rec.clone());
    let (pasid, handle) = tracing::dispatcher::with_default(&dispatch, || {
        let (fx, space, mm, queue) = manual_fixture();
        let bond = sva_bind_device(fx.dev(0), &space).unwrap();
        let pasid = bond.pasid();
        report_device_fault(fx.dev(0), last(pasid, 9, 0x1000)).unwrap();
        assert!(queue.run_one());
        bond.unbind();
        report_device_fault(fx.dev(0), last(pasid, 10, 0x1000)).unwrap_err();
        drop((space, mm));
        let h = fx.group.id().0;
        (pasid, h)
    });
    let events = rec.0.lock().unwrap().clone();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "alloc",
            "attached",
            "delivered",
            "responded",
            "detached",
            "responded",
            "free"
        ]
    );
    let get = |i: usize, k: &str| events[i][k].clone();
    assert_eq!(get(0, "pasid"), pasid.to_string());
    assert_eq!(get(1, "group"), handle.to_string());
    // The delivered group names the handle the bind published, and detach names it again.
    assert_eq!(get(2, "handle"), get(1, "handle"));
    assert_eq!(get(4, "handle"), get(1, "handle"));
    assert_eq!(
        (get(2, "grpid"), get(2, "pasid")),
        ("9".into(), pasid.to_string())
    );
    assert_eq!(
        (get(3, "code"), get(3, "path")),
        ("0".into(), "group".into())
    );
    assert_eq!((get(5, "code"), get(5, "path")), ("1".into(), "bad".into()));
    assert_eq!(get(6, "pasid"), pasid.to_string());
}
