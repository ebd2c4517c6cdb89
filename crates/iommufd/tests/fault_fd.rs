//! The fault fd's read and write byte semantics (SPEC §5.5, §5.6, §6.4): whole groups, cookies
//! (H18), user response codes (H19), errno per bad input — each test also checks that no group
//! was lost or answered twice.

mod common;

use common::{read_records, responses, Fx, RID};
use iommu_core::PageResponseCode::{Invalid, Success};
use iommufd::uapi::{
    IOMMUFD_PAGE_RESP_INVALID as INV, IOMMUFD_PAGE_RESP_SUCCESS as OK,
    IOMMU_PGFAULT_FLAGS_LAST_PAGE, IOMMU_PGFAULT_PERM_READ,
};
use iommufd::{FaultFd, FAULT_RECORD_SIZE};

fn attached(n_devs: usize) -> (Fx, FaultFd) {
    let fx = Fx::new(n_devs);
    let (_, fd, hwpt) = fx.fault_hwpt(0, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    (fx, fd)
}

#[test]
fn multi_fault_group_is_read_whole_in_arrival_order_with_one_cookie_and_dev_id() {
    let (fx, fd) = attached(1);
    fx.report_group(0, RID, 5, 2);
    let recs = read_records(&fd, 4);
    assert_eq!(recs.len(), 3);
    let addrs: Vec<u64> = recs.iter().map(|r| r.addr).collect();
    assert_eq!(addrs, [0x50_0000, 0x50_1000, 0x50_2000]);
    assert!(recs.iter().all(|r| r.cookie == 1
        && r.dev_id == fx.dev_ids[0]
        && r.grpid == 5
        && r.perm == IOMMU_PGFAULT_PERM_READ
        && r.length == 0
        && r.__reserved == 0));
    let lasts: Vec<bool> = recs
        .iter()
        .map(|r| r.flags & IOMMU_PGFAULT_FLAGS_LAST_PAGE != 0)
        .collect();
    assert_eq!(lasts, [false, false, true]);
    fx.assert_answered(&[]);
    assert_eq!(fd.write(&responses(&[(1, OK)])).unwrap(), 8);
    fx.assert_answered(&[(5, Success)]);
}

#[test]
fn buffer_smaller_than_the_group_reads_zero_and_keeps_the_group() {
    let (fx, fd) = attached(1);
    fx.report_group(0, RID, 1, 2);
    let mut small = [0u8; 2 * FAULT_RECORD_SIZE];
    assert_eq!(fd.read(&mut small).unwrap(), 0);
    assert_eq!(fd.read(&mut small).unwrap(), 0, "every retry returns 0");
    assert_eq!((fd.pending(), fd.unanswered()), (1, 0));
    assert_eq!(fd.next_group_records(), Some(3), "the buffer a read needs");
    assert_eq!(read_records(&fd, 3).len(), 3);
    assert_eq!(fd.next_group_records(), None);
    fx.assert_answered(&[]);
}

/// The handler reads a group larger than its initial buffer ([`iommufd::handler::READ_RECORDS`]
/// records) by growing to exactly what the fd says the next group needs, and answers it once.
/// (It used to double the buffer whenever a read returned nothing with a group queued — also
/// when the group had merely arrived after the read — and gave up after six such races.)
#[test]
fn handler_grows_its_buffer_to_a_group_larger_than_it() {
    use iommufd::handler::{run_fault_handler, StopHandle, READ_RECORDS};
    let (fx, fd) = attached(1);
    let big = READ_RECORDS + 500;
    fx.report_group(0, RID, 9, big - 1);
    assert_eq!(fd.next_group_records(), Some(big));
    let stop = StopHandle::new().unwrap();
    stop.stop();
    let stats = run_fault_handler(&fd, &stop, |_| Ok(()));
    assert_eq!(stats.error, None);
    assert_eq!((stats.groups, stats.faults), (1, big as u64));
    fx.assert_answered(&[(9, Success)]);
}

#[test]
fn read_of_k_groups_fills_exactly_and_stops_before_a_group_that_does_not_fit() {
    let (fx, fd) = attached(1);
    fx.report_group(0, RID, 1, 0);
    fx.report_group(0, RID, 2, 0);
    fx.report_group(0, RID, 3, 1); // two records
    let recs = read_records(&fd, 3);
    let got: Vec<(u32, u32)> = recs.iter().map(|r| (r.grpid, r.cookie)).collect();
    assert_eq!(
        got,
        [(1, 1), (2, 2)],
        "group 3 (2 records) does not fit the third slot"
    );
    assert_eq!(fd.pending(), 1);
    let recs = read_records(&fd, 2);
    assert_eq!(
        recs.iter().map(|r| (r.grpid, r.cookie)).collect::<Vec<_>>(),
        [(3, 3), (3, 3)]
    );
    fx.assert_answered(&[]);
}

#[test]
fn groups_are_delivered_in_report_order() {
    let (fx, fd) = attached(1);
    for g in [9, 4, 7, 1] {
        fx.report_group(0, RID, g, 0);
    }
    let grpids: Vec<u32> = read_records(&fd, 8).iter().map(|r| r.grpid).collect();
    assert_eq!(grpids, [9, 4, 7, 1]);
}

#[test]
fn empty_queue_reads_zero_without_blocking() {
    let (fx, fd) = attached(1);
    assert_eq!(read_records(&fd, 4).len(), 0);
    fx.assert_answered(&[]);
}

#[test]
fn reads_of_bad_sizes_or_offsets_return_espipe_and_zero_length_einval() {
    let (fx, fd) = attached(1);
    fx.report_group(0, RID, 1, 0);
    for len in [1, 8, 39, 41, 79] {
        let mut buf = vec![0u8; len];
        assert_eq!(
            fd.read(&mut buf).unwrap_err().errno_name(),
            "ESPIPE",
            "len {len}"
        );
    }
    let mut buf = [0u8; 40];
    assert_eq!(fd.read_at(&mut buf, 40).unwrap_err().errno_name(), "ESPIPE");
    assert_eq!(fd.read_at(&mut buf, 1).unwrap_err().errno_name(), "ESPIPE");
    assert_eq!(fd.read(&mut []).unwrap_err().errno_name(), "EINVAL");
    assert_eq!(
        (fd.pending(), fd.unanswered()),
        (1, 0),
        "rejected reads take nothing"
    );
    assert_eq!(read_records(&fd, 1)[0].cookie, 1);
    fx.assert_answered(&[]);
}

#[test]
fn cookies_are_the_lowest_free_and_reused_immediately() {
    let (fx, fd) = attached(1);
    for g in 1..=3 {
        fx.report_group(0, RID, g, 0);
    }
    let c: Vec<u32> = read_records(&fd, 3).iter().map(|r| r.cookie).collect();
    assert_eq!(c, [1, 2, 3]);
    fd.write(&responses(&[(2, OK)])).unwrap();
    fx.report_group(0, RID, 4, 0);
    assert_eq!(read_records(&fd, 1)[0].cookie, 2, "2 is the lowest free");
    fd.write(&responses(&[(1, OK)])).unwrap();
    fx.report_group(0, RID, 5, 0);
    fx.report_group(0, RID, 6, 0);
    let c: Vec<u32> = read_records(&fd, 2).iter().map(|r| r.cookie).collect();
    assert_eq!(c, [1, 4]);
    fx.assert_answered(&[(1, Success), (2, Success)]);
}

#[test]
fn answered_cookie_is_stale_and_a_second_write_returns_einval() {
    let (fx, fd) = attached(1);
    fx.report_group(0, RID, 1, 0);
    let cookie = read_records(&fd, 1)[0].cookie;
    assert_eq!(fd.write(&responses(&[(cookie, OK)])).unwrap(), 8);
    let err = fd.write(&responses(&[(cookie, OK)])).unwrap_err();
    assert_eq!(err.errno_name(), "EINVAL");
    fx.assert_answered(&[(1, Success)]);
}

#[test]
fn unknown_cookies_return_einval_and_answer_nothing() {
    let (fx, fd) = attached(1);
    fx.report_group(0, RID, 1, 0);
    read_records(&fd, 1);
    for cookie in [0, 2, 99, u32::MAX] {
        let err = fd.write(&responses(&[(cookie, OK)])).unwrap_err();
        assert_eq!(err.errno_name(), "EINVAL", "cookie {cookie}");
    }
    assert_eq!(fd.unanswered(), 1);
    fx.assert_answered(&[]);
}

#[test]
fn response_code_failure_or_unknown_returns_einval_and_keeps_the_group() {
    let (fx, fd) = attached(1);
    fx.report_group(0, RID, 1, 0);
    read_records(&fd, 1);
    for code in [2, 3, u32::MAX] {
        let err = fd.write(&responses(&[(1, code)])).unwrap_err();
        assert_eq!(err.errno_name(), "EINVAL", "code {code}");
    }
    assert_eq!(fd.unanswered(), 1);
    fx.assert_answered(&[]);
    assert_eq!(fd.write(&responses(&[(1, INV)])).unwrap(), 8);
    fx.assert_answered(&[(1, Invalid)]);
}

#[test]
fn responses_before_a_bad_record_stay_applied_and_their_bytes_are_returned() {
    let (fx, fd) = attached(1);
    for g in 1..=3 {
        fx.report_group(0, RID, g, 0);
    }
    read_records(&fd, 3);
    let n = fd
        .write(&responses(&[(1, OK), (2, INV), (42, OK), (3, OK)]))
        .unwrap();
    assert_eq!(n, 16, "stops at the unknown cookie");
    fx.assert_answered(&[(1, Success), (2, Invalid)]);
    assert_eq!(fd.unanswered(), 1);
    let n = fd.write(&responses(&[(3, OK), (3, OK)])).unwrap();
    assert_eq!(n, 8, "a duplicate within one write is stale");
    fx.assert_answered(&[(1, Success), (2, Invalid), (3, Success)]);
}

#[test]
fn writes_of_bad_sizes_or_offsets_return_espipe() {
    let (fx, fd) = attached(1);
    fx.report_group(0, RID, 1, 0);
    read_records(&fd, 1);
    let good = responses(&[(1, OK), (1, OK)]);
    for len in [1, 7, 9, 15] {
        assert_eq!(fd.write(&good[..len]).unwrap_err().errno_name(), "ESPIPE");
    }
    assert_eq!(
        fd.write_at(&good[..8], 8).unwrap_err().errno_name(),
        "ESPIPE"
    );
    assert_eq!(fd.write(&[]).unwrap(), 0);
    assert_eq!(fd.unanswered(), 1);
    fx.assert_answered(&[]);
}

#[test]
fn many_groups_in_one_read_and_one_write() {
    let (fx, fd) = attached(1);
    for g in 1..=100 {
        fx.report_group(0, RID, g, (g % 3) as usize);
    }
    let recs = read_records(&fd, 400);
    assert_eq!(
        recs.len(),
        (1..=100u32).map(|g| (g % 3) as usize + 1).sum::<usize>()
    );
    let mut cookies: Vec<u32> = recs.iter().map(|r| r.cookie).collect();
    cookies.dedup();
    assert_eq!(cookies, (1..=100).collect::<Vec<_>>());
    let all: Vec<(u32, u32)> = cookies.iter().map(|&c| (c, OK)).collect();
    assert_eq!(fd.write(&responses(&all)).unwrap(), 800);
    let expected: Vec<_> = (1..=100).map(|g| (g, Success)).collect();
    fx.assert_answered(&expected);
    let s = fd.stats();
    assert_eq!(
        (s.queued, s.user_responses, s.auto_responses),
        (100, 100, 0)
    );
}

#[test]
fn lowest_free_cookie_holds_across_many_outstanding_groups() {
    let (fx, fd) = attached(1);
    for g in 1..=130 {
        fx.report_group(0, RID, g, 0);
    }
    assert_eq!(read_records(&fd, 130).last().unwrap().cookie, 130);
    fd.write(&responses(&[(129, OK), (70, OK), (5, OK)]))
        .unwrap();
    for g in 131..=134 {
        fx.report_group(0, RID, g, 0);
    }
    let c: Vec<u32> = read_records(&fd, 4).iter().map(|r| r.cookie).collect();
    assert_eq!(c, [5, 70, 129, 131]);
    assert_eq!(fd.unanswered(), 131);
    fx.assert_answered(&[(5, Success), (70, Success), (129, Success)]);
}
