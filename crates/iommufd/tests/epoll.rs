//! The fault fd is a real file descriptor for epoll: readable from the first fault of a burst
//! with a single eventfd write, not readable once a read finds the queue empty (SPEC §5.7), and
//! a reader that keeps reading makes no eventfd syscall.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{read_records, Fx, RID};
use rustix::event::epoll;
use rustix::event::Timespec;

const NOW: Option<&Timespec> = Some(&Timespec {
    tv_sec: 0,
    tv_nsec: 0,
});

fn ready(ep: &impl std::os::fd::AsFd) -> usize {
    let mut events = Vec::with_capacity(4);
    epoll::wait(ep, rustix::buffer::spare_capacity(&mut events), NOW).unwrap();
    events.len()
}

#[test]
fn fd_becomes_readable_on_the_first_fault_and_a_burst_wakes_once() {
    let fx = Fx::new(1);
    let (_, fd, hwpt) = fx.fault_hwpt(0, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
    epoll::add(
        &ep,
        &fd,
        epoll::EventData::new_u64(7),
        epoll::EventFlags::IN,
    )
    .unwrap();
    assert_eq!(ready(&ep), 0);
    assert!(!fd.poll().readable && fd.poll().writable);
    fx.report_group(0, RID, 1, 0);
    assert_eq!(ready(&ep), 1);
    for g in 2..=50 {
        fx.report_group(0, RID, g, 0);
    }
    assert_eq!(fd.stats().wakeups, 1, "one eventfd write for the burst");
    read_records(&fd, 10);
    assert_eq!(ready(&ep), 1, "still readable while groups wait");
    read_records(&fd, 100);
    assert!(!fd.poll().readable, "poll() is exact");
    // The reader has not said it may sleep: a group arriving now needs no eventfd write.
    fx.report_group(0, RID, 51, 0);
    assert_eq!(fd.stats().wakeups, 1, "a busy reader costs no wake-up");
    assert_eq!(read_records(&fd, 10).len(), 1);
    assert_eq!(
        read_records(&fd, 10).len(),
        0,
        "a read that finds nothing..."
    );
    assert_eq!(ready(&ep), 0, "...clears readiness: the reader may sleep");
    assert!(!fd.poll().readable);
    fx.report_group(0, RID, 52, 0);
    assert_eq!(ready(&ep), 1);
    assert_eq!(
        fd.stats().wakeups,
        2,
        "a group for a reader that may sleep wakes it"
    );
}

#[test]
fn wait_readable_blocks_until_another_thread_reports() {
    let fx = Arc::new(Fx::new(1));
    let (_, fd, hwpt) = fx.fault_hwpt(0, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    assert!(!fd.wait_readable(Some(Duration::ZERO)).unwrap());
    let reporter = {
        let fx = fx.clone();
        thread::spawn(move || fx.report_group(0, RID, 1, 0))
    };
    assert!(fd.wait_readable(None).unwrap());
    reporter.join().unwrap();
    assert_eq!(read_records(&fd, 1)[0].grpid, 1);
    assert!(!fd.wait_readable(Some(Duration::ZERO)).unwrap());
}

#[test]
fn detach_draining_the_queue_clears_readiness() {
    let fx = Fx::new(1);
    let (_, fd, hwpt) = fx.fault_hwpt(0, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    fx.report_group(0, RID, 1, 0);
    assert!(fd.wait_readable(Some(Duration::ZERO)).unwrap());
    fx.ictx.device_detach(fx.dev_ids[0], RID).unwrap();
    assert!(!fd.wait_readable(Some(Duration::ZERO)).unwrap());
}

/// Two reporting threads and a consumer that blocks in poll between reads: no wake-up is
/// lost (the consumer never waits on a non-empty queue for long), every group is answered
/// once, there is at most one eventfd write per empty → non-empty transition, and once
/// everything is answered the fd is not readable (no stale readiness).
#[test]
fn blocking_consumer_and_two_reporters_lose_no_wakeup_and_leave_no_stale_readiness() {
    const PER_THREAD: u32 = 300;
    let fx = Arc::new(Fx::with_groups(&[2]));
    let (_, fd, hwpt) = fx.fault_hwpt(0, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    fx.ictx.device_attach(fx.dev_ids[1], RID, hwpt).unwrap();
    let fd = Arc::new(fd);
    let consumer = {
        let fd = fd.clone();
        thread::spawn(move || {
            let mut got = 0;
            while got < 2 * PER_THREAD {
                // A lost wake-up would leave groups queued with the fd not readable.
                let readable = fd.wait_readable(Some(Duration::from_secs(10))).unwrap();
                assert!(readable, "wake-up lost with {} groups queued", fd.pending());
                let recs = read_records(&fd, 16);
                let resp: Vec<(u32, u32)> = recs
                    .iter()
                    .map(|r| (r.cookie, iommufd::uapi::IOMMUFD_PAGE_RESP_SUCCESS))
                    .collect();
                fd.write(&common::responses(&resp)).unwrap();
                got += recs.len() as u32;
            }
        })
    };
    let reporters: Vec<_> = (0..2)
        .map(|t| {
            let fx = fx.clone();
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    fx.report_group(t, RID, t as u32 * PER_THREAD + i + 1, 0);
                }
            })
        })
        .collect();
    for r in reporters {
        r.join().unwrap();
    }
    consumer.join().unwrap();
    let per_group = fx.responses();
    assert_eq!(per_group.len(), 2 * PER_THREAD as usize);
    assert!(per_group.values().all(|v| v.len() == 1));
    assert!(!fd.wait_readable(Some(Duration::ZERO)).unwrap());
    let s = fd.stats();
    assert!(s.wakeups >= 1 && s.wakeups <= s.queued, "{s:?}");
}
