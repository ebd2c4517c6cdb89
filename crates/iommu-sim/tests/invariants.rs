//! The checker is itself tested: a clean run passes, and for each invariant an injected
//! violation fails the run with a message naming the offending event.

use iommu_sim::invariants::{Checker, Event, Invariant};

/// A clean run touching every invariant's events.
fn clean_run() -> Vec<Event> {
    vec![
        Event::PasidAllocated { pasid: 5 },
        Event::Bound { dev: 1, pasid: 5 },
        Event::GroupRequested {
            dev: 1,
            pasid: Some(5),
            grpid: 0,
        },
        Event::Delivered {
            attachment: 0x100,
            dev: 1,
            grpid: 0,
        },
        Event::Responded {
            dev: 1,
            grpid: 0,
            code: 0,
        },
        Event::Dma { dev: 1, pasid: 5 },
        Event::GroupRequested {
            dev: 1,
            pasid: Some(5),
            grpid: 0,
        }, // index reused after answer
        Event::Delivered {
            attachment: 0x100,
            dev: 1,
            grpid: 0,
        },
        Event::DetachReturned { attachment: 0x100 },
        Event::UnbindReturned { dev: 1, pasid: 5 },
        Event::Responded {
            dev: 1,
            grpid: 0,
            code: 1,
        }, // auto-response after detach
        Event::JobVerified {
            job: "j".into(),
            mismatched_bytes: 0,
        },
        Event::PasidFreed { pasid: 5 },
        Event::PasidAllocated { pasid: 5 }, // reuse after free with nothing outstanding
        Event::Bound { dev: 1, pasid: 5 },
        Event::Dma { dev: 1, pasid: 5 }, // rebound: DMA allowed again
    ]
}

/// Runs the clean run with `bad` inserted at `at`; returns the report.
fn run_with(at: usize, bad: Event) -> iommu_sim::invariants::CheckReport {
    let mut events = clean_run();
    events.insert(at, bad);
    let mut c = Checker::new();
    for e in &events {
        c.observe(e);
    }
    c.finish()
}

#[track_caller]
fn fails_naming(
    report: &iommu_sim::invariants::CheckReport,
    inv: Invariant,
    index: Option<u64>,
    fragment: &str,
) {
    assert!(!report.passed());
    assert_eq!(report.count(inv), 1, "{report:?}");
    let total: u64 = report.counts.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 1, "exactly the injected violation: {report:?}");
    let v = &report.violations[0];
    assert_eq!((v.invariant, v.event_index), (inv, index));
    assert!(v.to_string().contains(inv.name()), "{v}");
    assert!(v.message.contains(fragment), "{v}");
}

#[test]
fn clean_run_passes_every_invariant() {
    let mut c = Checker::new();
    for e in clean_run() {
        assert!(!c.observe(&e), "{e:?}");
    }
    let r = c.finish();
    assert!(r.passed(), "{r:?}");
    assert_eq!(r.counts.len(), Invariant::ALL.len());
}

#[test]
fn second_response_fails_exactly_one_response() {
    let r = run_with(
        5,
        Event::Responded {
            dev: 1,
            grpid: 0,
            code: 0,
        },
    );
    fails_naming(
        &r,
        Invariant::ExactlyOneResponse,
        Some(5),
        "Responded { dev: 1, grpid: 0, code: 0 }",
    );
}

#[test]
fn unanswered_group_fails_at_the_end() {
    let r = run_with(
        3,
        Event::GroupRequested {
            dev: 2,
            pasid: Some(9),
            grpid: 4,
        },
    );
    fails_naming(
        &r,
        Invariant::ExactlyOneResponse,
        None,
        "device 2 PRG 4 (PASID Some(9)) never answered",
    );
}

#[test]
fn delivery_after_detach_fails() {
    let r = run_with(
        9,
        Event::Delivered {
            attachment: 0x100,
            dev: 1,
            grpid: 7,
        },
    );
    fails_naming(
        &r,
        Invariant::NoDeliveryAfterDetach,
        Some(9),
        "attachment 0x100",
    );
}

#[test]
fn dma_after_unbind_fails() {
    let r = run_with(10, Event::Dma { dev: 1, pasid: 5 });
    fails_naming(
        &r,
        Invariant::NoDmaAfterUnbind,
        Some(10),
        "PASID 5 after its unbind",
    );
}

#[test]
fn reused_pasid_fails() {
    // PASID 5 allocated again while still live (before it was freed).
    let r = run_with(4, Event::PasidAllocated { pasid: 5 });
    fails_naming(
        &r,
        Invariant::NoPasidReuse,
        Some(4),
        "PASID 5 allocated while still live",
    );
}

#[test]
fn pasid_reallocated_with_groups_unanswered_fails() {
    let mut c = Checker::new();
    c.observe(&Event::PasidAllocated { pasid: 3 });
    c.observe(&Event::GroupRequested {
        dev: 1,
        pasid: Some(3),
        grpid: 1,
    });
    c.observe(&Event::PasidFreed { pasid: 3 });
    assert!(c.observe(&Event::PasidAllocated { pasid: 3 }));
    c.observe(&Event::Responded {
        dev: 1,
        grpid: 1,
        code: 1,
    });
    let r = c.finish();
    fails_naming(&r, Invariant::NoPasidReuse, Some(3), "1 groups unanswered");
}

#[test]
fn corrupted_byte_fails_data_verified() {
    let r = run_with(
        11,
        Event::JobVerified {
            job: "db-write".into(),
            mismatched_bytes: 1,
        },
    );
    fails_naming(
        &r,
        Invariant::DataVerified,
        Some(11),
        "job 'db-write' read back 1 wrong bytes",
    );
}

#[test]
fn responses_the_core_announced_on_its_bad_path_are_expected_but_no_more() {
    let mut c = Checker::new();
    let req = Event::GroupRequested {
        dev: 1,
        pasid: Some(5),
        grpid: 3,
    };
    let bad = Event::BadPathResponse { dev: 1, grpid: 3 };
    let resp = Event::Responded {
        dev: 1,
        grpid: 3,
        code: 1,
    };
    // The group's partial request meets a detached PASID (answered), then its last one too.
    for e in [&req, &bad, &resp, &bad, &resp] {
        assert!(!c.observe(e), "{e:?}");
    }
    // A third response nobody announced is a second answer.
    assert!(c.observe(&resp));
    let r = c.finish();
    fails_naming(&r, Invariant::ExactlyOneResponse, Some(5), "PRG 3");
}

#[test]
fn a_group_abandoned_by_its_device_may_be_answered_late_once() {
    let mut c = Checker::new();
    c.observe(&Event::GroupRequested {
        dev: 1,
        pasid: None,
        grpid: 8,
    });
    c.observe(&Event::Abandoned { dev: 1, grpid: 8 });
    let late = Event::Responded {
        dev: 1,
        grpid: 8,
        code: 0,
    };
    assert!(!c.observe(&late));
    assert!(c.observe(&late), "a second late answer");
    let r = c.finish();
    fails_naming(&r, Invariant::ExactlyOneResponse, Some(3), "PRG 8");
}

#[test]
fn a_handle_address_reused_by_a_new_attach_may_receive_groups() {
    let mut c = Checker::new();
    c.observe(&Event::DetachReturned { attachment: 0x200 });
    c.observe(&Event::Attached { attachment: 0x200 });
    assert!(!c.observe(&Event::Delivered {
        attachment: 0x200,
        dev: 1,
        grpid: 0,
    }));
    assert!(c.finish().passed());
}

/// The observer reads the emulator's and the core's trace points: a second response traced at
/// a device is caught, named with run-local identities, and devices of other runs are ignored.
#[test]
fn traced_second_response_fails_the_run_through_the_observer() {
    use iommu_core::trace::{kind as core_kind, target as core_target};
    use iommu_emu::trace::{kind as emu_kind, TARGET as EMU};
    use iommu_sim::observe::Observer;
    let obs = Observer::new();
    obs.set_devices([77]);
    tracing::dispatcher::with_default(&obs.dispatch(), || {
        tracing::trace!(target: core_target::PASID, kind = core_kind::PASID_ALLOC, pasid = 5u64);
        tracing::trace!(target: EMU, kind = emu_kind::GROUP_SENT, dev = 77u64, pasid = 5i64, grpid = 3u64, pages = 1u64);
        for _ in 0..2 {
            tracing::trace!(target: EMU, kind = emu_kind::RESPONSE, dev = 77u64, grpid = 3u64, code = 0u64, applied = true, auto = false);
        }
        // Another run's device: not this run's business.
        tracing::trace!(target: EMU, kind = emu_kind::RESPONSE, dev = 99u64, grpid = 3u64, code = 0u64, applied = false, auto = false);
    });
    assert_eq!(obs.foreign_events(), 1);
    let (r, hash, lines) = obs.finish();
    assert_eq!(lines, 4);
    assert_ne!(hash, 0);
    fails_naming(
        &r,
        Invariant::ExactlyOneResponse,
        Some(3),
        "Responded { dev: 0, grpid: 3, code: 0 }",
    );
}

/// The observer's ledger follows every group to its first conclusion at its device and names
/// who concluded it: the core's response traced on the same thread just before (a handler,
/// iommufd's auto-response, a dropped group, the bad path), the IOMMU itself, or an abandon
/// (by reset, or by its DMA); responses that concluded nothing are discarded strays.
#[test]
fn observer_ledger_accounts_for_every_group_by_who_answered_it() {
    use iommu_core::trace::{kind as core_kind, path, target as core_target};
    use iommu_emu::trace::{cause, kind as emu_kind, TARGET as EMU};
    use iommu_sim::observe::Observer;
    let obs = Observer::new();
    obs.set_devices([77]);
    tracing::dispatcher::with_default(&obs.dispatch(), || {
        for g in 0..8u64 {
            tracing::trace!(target: EMU, kind = emu_kind::GROUP_SENT, dev = 77u64, pasid = 5i64, grpid = g, pages = 1u64);
        }
        // Groups 0-4: answered through the core, by each kind of responder.
        for (g, p, code) in [
            (0u64, path::GROUP, 0u64),
            (1, path::GROUP, 2),
            (2, path::AUTO, 1),
            (3, path::DROPPED, 1),
            (4, path::BAD, 1),
        ] {
            tracing::trace!(target: core_target::IOPF, kind = core_kind::RESPONDED, dev = 77u64, pasid = 5i64, grpid = g, code, path = p);
            tracing::trace!(target: EMU, kind = emu_kind::RESPONSE, dev = 77u64, grpid = g, code, applied = true, auto = false);
        }
        // Group 5: the IOMMU answered it itself (queue full).
        tracing::trace!(target: EMU, kind = emu_kind::RESPONSE, dev = 77u64, grpid = 5u64, code = 0u64, applied = true, auto = true);
        // Group 6: a reset gave it up; its late answer is a stray.
        tracing::trace!(target: EMU, kind = emu_kind::ABANDONED, dev = 77u64, grpid = 6u64, cause = cause::RESET);
        tracing::trace!(target: core_target::IOPF, kind = core_kind::RESPONDED, dev = 77u64, pasid = 5i64, grpid = 6u64, code = 0u64, path = path::GROUP);
        tracing::trace!(target: EMU, kind = emu_kind::RESPONSE, dev = 77u64, grpid = 6u64, code = 0u64, applied = false, auto = false);
        // Group 7: its DMA gave up on it (timeout).
        tracing::trace!(target: EMU, kind = emu_kind::ABANDONED, dev = 77u64, grpid = 7u64, cause = cause::TIMEOUT);
        // An abandon of an answered group concludes nothing more.
        tracing::trace!(target: EMU, kind = emu_kind::ABANDONED, dev = 77u64, grpid = 0u64, cause = cause::DROPPED);
    });
    let l = obs.ledger();
    assert_eq!(l.sent, 8);
    assert_eq!(l.handler, [1, 0, 1]);
    assert_eq!(
        (
            l.auto_iommufd,
            l.auto_dropped,
            l.no_handler,
            l.iommu_overflow
        ),
        (1, 1, 1, 1)
    );
    assert_eq!((l.abandoned_reset, l.abandoned_dma), (1, 1));
    assert_eq!(
        (l.stray_responses, l.unattributed, l.outstanding),
        (1, 0, 0)
    );
    assert!(l.reconciles(), "{l:?}");
}

/// A device response that no core response preceded on its thread is unattributed, and a
/// group never concluded is outstanding: either keeps the ledger from reconciling.
#[test]
fn observer_ledger_does_not_reconcile_an_unexplained_or_missing_answer() {
    use iommu_emu::trace::{kind as emu_kind, TARGET as EMU};
    use iommu_sim::observe::Observer;
    let obs = Observer::new();
    obs.set_devices([77]);
    tracing::dispatcher::with_default(&obs.dispatch(), || {
        for g in 0..2u64 {
            tracing::trace!(target: EMU, kind = emu_kind::GROUP_SENT, dev = 77u64, pasid = 5i64, grpid = g, pages = 1u64);
        }
        tracing::trace!(target: EMU, kind = emu_kind::RESPONSE, dev = 77u64, grpid = 0u64, code = 0u64, applied = true, auto = false);
    });
    let l = obs.ledger();
    assert_eq!((l.sent, l.unattributed, l.outstanding), (2, 1, 1));
    assert!(!l.reconciles());
}

/// A reset between a group's allocation and its sending gives the group up before the trace
/// saw it sent: sent with an epoch older than the reset's, it is abandoned on reset at once
/// (it used to stay open for ever, its answer counted stray), and a later group at that index
/// is followed as usual.
#[test]
fn observer_ledger_abandons_a_group_sent_after_its_reset() {
    use iommu_emu::trace::{cause, kind as emu_kind, TARGET as EMU};
    use iommu_sim::observe::Observer;
    let obs = Observer::new();
    obs.set_devices([77]);
    tracing::dispatcher::with_default(&obs.dispatch(), || {
        tracing::trace!(target: EMU, kind = emu_kind::ABANDONED, dev = 77u64, grpid = 1u64, cause = cause::RESET, epoch = 1u64);
        tracing::trace!(target: EMU, kind = emu_kind::GROUP_SENT, dev = 77u64, pasid = 5i64, grpid = 1u64, pages = 1u64, epoch = 0u64);
        tracing::trace!(target: EMU, kind = emu_kind::RESPONSE, dev = 77u64, grpid = 1u64, code = 0u64, applied = false, auto = true);
        tracing::trace!(target: EMU, kind = emu_kind::GROUP_SENT, dev = 77u64, pasid = 5i64, grpid = 1u64, pages = 1u64, epoch = 1u64);
        tracing::trace!(target: EMU, kind = emu_kind::RESPONSE, dev = 77u64, grpid = 1u64, code = 0u64, applied = true, auto = true);
    });
    let l = obs.ledger();
    assert_eq!((l.sent, l.abandoned_reset, l.iommu_overflow), (2, 1, 1));
    assert_eq!((l.stray_iommu_responses, l.outstanding), (1, 0));
    assert!(l.reconciles(), "{l:?}");
}
