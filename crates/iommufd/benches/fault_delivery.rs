//! The user-space fault round trip through the fault fd, in process on the mock IOMMU:
//! `report_device_fault` → iommufd handler → `read` of 40-byte records → `write` of 8-byte
//! responses → page response to the driver, in batches of 1, 16 and 256 one-fault groups.
//!
//! Targets (ANCHORS.md): ≥ 1 M records/s one at a time, ≥ 5 M records/s in batches of 256.
//! The eventfd is live: each batch is one empty → non-empty transition (one eventfd write) and
//! one drain (one eventfd read), as a real consumer sees it.
//!
//! Run: `cargo bench -p iommufd --bench fault_delivery -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iommu_core::mock::MockDriver;
use iommu_core::{
    attach_group_handle, iopf_enable, report_device_fault, Device, Domain, DomainRequest, Group,
    IommuDriver, IopfGroup, IopfHandler, PageRequest, PageResponseCode,
    IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, IOMMU_FAULT_PERM_READ,
};
use iommufd::uapi::{IOMMUFD_PAGE_RESP_SUCCESS, IOMMU_HWPT_FAULT_ID_VALID};
use iommufd::{FaultFd, Ictx, FAULT_RECORD_SIZE, IOMMU_NO_PASID, RESPONSE_RECORD_SIZE};

struct Setup {
    // Field order is drop order: the context detaches before the driver goes.
    ictx: Ictx,
    fd: FaultFd,
    dev: Arc<Device>,
    _mock: Arc<MockDriver>,
}

/// A fresh mock IOMMU per measurement: the mock records every page response, so its log is
/// bounded by one sample's iterations.
fn setup() -> Setup {
    let mock = MockDriver::new("bench");
    let group = Group::new(mock.clone() as Arc<dyn IommuDriver>, "g");
    let dev = group.add_device("d", 1 << 20).unwrap();
    let ictx = Ictx::new();
    let dev_id = ictx.bind_device(dev.clone()).unwrap();
    let ioas = ictx.ioas_alloc().unwrap();
    let (fault_id, fd) = ictx.fault_queue_alloc(0).unwrap();
    let hwpt = ictx
        .hwpt_alloc(dev_id, ioas, IOMMU_HWPT_FAULT_ID_VALID, fault_id, 0, &[])
        .unwrap();
    ictx.device_attach(dev_id, IOMMU_NO_PASID, hwpt).unwrap();
    Setup {
        ictx,
        fd,
        dev,
        _mock: mock,
    }
}

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("fault_round_trip");
    for batch in [1usize, 16, 256] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("batch_{batch}"), |b| {
            b.iter_custom(|iters| {
                let s = setup();
                let mut rbuf = vec![0u8; batch * FAULT_RECORD_SIZE];
                let mut wbuf = vec![0u8; batch * RESPONSE_RECORD_SIZE];
                let mut grpid = 0u32;
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..batch {
                        grpid = (grpid + 1) & 0x1ff; // 9-bit PRG index
                        let req = PageRequest {
                            flags: IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
                            pasid: 0,
                            grpid,
                            perm: IOMMU_FAULT_PERM_READ,
                            addr: 0x1000,
                        };
                        report_device_fault(&s.dev, req).unwrap();
                    }
                    let n = s.fd.read(&mut rbuf).unwrap();
                    assert_eq!(n, rbuf.len());
                    for (rec, resp) in rbuf
                        .chunks_exact(FAULT_RECORD_SIZE)
                        .zip(wbuf.chunks_exact_mut(RESPONSE_RECORD_SIZE))
                    {
                        resp[..4].copy_from_slice(&rec[36..40]);
                        resp[4..].copy_from_slice(&IOMMUFD_PAGE_RESP_SUCCESS.to_ne_bytes());
                    }
                    let w = s.fd.write(black_box(&wbuf)).unwrap();
                    assert_eq!(w, wbuf.len());
                }
                let t = start.elapsed();
                drop(s.ictx);
                t
            })
        });
    }
    g.finish();
}

/// The floor: the same reports answered Success by a handler that responds at once (core +
/// mock driver only, no iommufd), so the iommufd share of the round trip can be read off.
struct AnswerAtOnce;

impl IopfHandler for AnswerAtOnce {
    fn name(&self) -> &str {
        "answer-at-once"
    }
    fn handle_iopf(&self, group: IopfGroup) -> Result<(), IopfGroup> {
        group.respond(PageResponseCode::Success);
        Ok(())
    }
}

fn core_floor(c: &mut Criterion) {
    let mut g = c.benchmark_group("core_floor");
    g.throughput(Throughput::Elements(256));
    g.bench_function("batch_256", |b| {
        b.iter_custom(|iters| {
            let mock = MockDriver::new("floor");
            let group = Group::new(mock.clone() as Arc<dyn IommuDriver>, "g");
            let dev = group.add_device("d", 1 << 20).unwrap();
            let handler: Arc<dyn IopfHandler> = Arc::new(AnswerAtOnce);
            let dom = Domain::alloc(
                &dev,
                DomainRequest::Paging { dma_api: false },
                Some(handler),
            )
            .unwrap();
            attach_group_handle(&dom, &group, ()).unwrap();
            iopf_enable(&dev).unwrap();
            let mut grpid = 0u32;
            let start = Instant::now();
            for _ in 0..iters {
                for _ in 0..256 {
                    grpid = (grpid + 1) & 0x1ff;
                    let req = PageRequest {
                        flags: IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
                        pasid: 0,
                        grpid,
                        perm: IOMMU_FAULT_PERM_READ,
                        addr: 0x1000,
                    };
                    report_device_fault(&dev, req).unwrap();
                }
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = round_trip, core_floor
}
criterion_main!(benches);
