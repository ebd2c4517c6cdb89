//! Operation-sequence fuzzer over iommufd's objects and the fault fd's byte interface (issue 11,
//! item 5b).
//!
//! Random sequences of IOAS alloc/map/unmap (IOVAs and lengths near `u64::MAX` included), device
//! bind/unbind, HWPT alloc (plain, fault-capable, nest parent, nested, hostile flags and data,
//! and the raw ioctl structs), attach/replace/detach at the RID and at PASIDs, fault queue alloc,
//! destroy of any ID (bogus ones included), page requests, reads with any buffer length and
//! offset, writes of valid, stale, truncated, oversize and random response bytes, and closing
//! the fault fd. After every step (DESIGN §4): no panic; every error is errno-style and changed
//! nothing observable; every record read belongs to a reported group, carries a non-zero
//! cookie, and no group is read twice; no group is answered more than once. At the end, after
//! closing and destroying everything: no object ID is left, and every page request group got
//! exactly one response (a request nobody took: one per request, at once).
//!
//! Cases: `PROPTEST_CASES` (default below, sized for CI); see docs/fuzzing.md.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use iommu_core::mock::{HwState, MockDriver};
use iommu_core::{
    iopf_stats, report_device_fault, Device, Group, IommuDriver, PageRequest,
    IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE as LAST, IOMMU_FAULT_PAGE_REQUEST_PASID_VALID as PV,
    IOMMU_FAULT_PERM_READ,
};
use iommufd::uapi::{
    IommuHwptPageResponse, IommuHwptPgfault, IOMMUFD_PAGE_RESP_INVALID, IOMMUFD_PAGE_RESP_SUCCESS,
    IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_ALLOC_PASID, IOMMU_HWPT_DATA_SELFTEST,
    IOMMU_HWPT_FAULT_ID_VALID,
};
use iommufd::{FaultFd, Ictx, FAULT_RECORD_SIZE, IOMMU_NO_PASID};
use proptest::prelude::*;
use proptest::test_runner::Config;
use zerocopy::{FromBytes, IntoBytes};

/// Devices per group (all behind one mock IOMMU).
const GROUPS: [usize; 2] = [2, 1];
const N_DEV: usize = 3;

/// The kinds of object the fuzzer names IDs by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Ioas,
    Dev,
    Hwpt,
    Fault,
}

/// An object ID: one the context handed out for an object of a kind (by index), any one it
/// handed out, or any value.
#[derive(Debug, Clone, Copy)]
enum Id {
    Of(Kind, usize),
    Known(usize),
    Bogus(u32),
}

/// An ID, usually of an object of `kind`.
fn id_of(kind: Kind) -> impl Strategy<Value = Id> {
    prop_oneof![
        8 => (0usize..8).prop_map(move |i| Id::Of(kind, i)),
        2 => (0usize..16).prop_map(Id::Known),
        1 => prop_oneof![Just(0u32), Just(u32::MAX), Just(u32::MAX - 1), any::<u32>()].prop_map(Id::Bogus),
    ]
}

/// An ID of any kind (destroy).
fn id() -> impl Strategy<Value = Id> {
    prop_oneof![
        3 => (0usize..16).prop_map(Id::Known),
        1 => prop::sample::select(vec![Kind::Ioas, Kind::Dev, Kind::Hwpt, Kind::Fault])
            .prop_flat_map(id_of),
    ]
}

/// A page table ID: an IOAS or a HWPT.
fn pt() -> impl Strategy<Value = Id> {
    prop_oneof![id_of(Kind::Hwpt), id_of(Kind::Ioas)]
}

/// Addresses and lengths a hostile caller picks: small, page-aligned, and near `u64::MAX`.
fn hostile_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0u64..16).prop_map(|p| p << 12),
        2 => prop::sample::select(vec![
            0, 1, 0xfff, 1 << 47, (1 << 47) - 0x1000, 1 << 48, 1 << 63,
            u64::MAX, !0xfff, !0xfff - 0x1000,
        ]),
        1 => any::<u64>(),
    ]
}

fn pasid() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => Just(IOMMU_NO_PASID),
        3 => 1u32..4,
        1 => prop::sample::select(vec![(1 << 20) - 1, 1 << 20, u32::MAX]),
    ]
}

#[derive(Debug, Clone)]
enum Write {
    /// One record answering an outstanding cookie (Success or Invalid).
    Answer { pick: usize, invalid: bool },
    /// A record with a cookie never issued or already answered, or a bad code.
    Bad { cookie: u32, code: u32 },
    /// Any bytes.
    Random(Vec<u8>),
    /// A valid record cut short.
    Truncated { pick: usize, len: usize },
    /// Many records: valid answers followed by garbage.
    Oversize { answers: usize, junk: usize },
}

#[derive(Debug, Clone)]
enum Op {
    IoasAlloc,
    Map {
        ioas: Id,
        iova: Option<u64>,
        pa: u64,
        len: u64,
        prot: u32,
    },
    Unmap {
        ioas: Id,
        iova: u64,
        len: u64,
    },
    Bind {
        dev: usize,
    },
    Unbind {
        dev: Id,
    },
    HwptAlloc {
        dev: Id,
        pt: Id,
        flags: u32,
        fault: Id,
        data_type: u32,
        data: Vec<u8>,
    },
    IoctlHwptAlloc {
        cmd: Vec<u8>,
        data: Vec<u8>,
    },
    FaultAlloc {
        flags: u32,
    },
    IoctlFaultAlloc {
        cmd: Vec<u8>,
    },
    Attach {
        dev: Id,
        pasid: u32,
        pt: Id,
    },
    Replace {
        dev: Id,
        pasid: u32,
        pt: Id,
    },
    Detach {
        dev: Id,
        pasid: u32,
    },
    Destroy {
        id: Id,
    },
    Report {
        dev: usize,
        pasid: u32,
        partials: usize,
    },
    Read {
        fd: usize,
        len: usize,
        offset: u64,
    },
    Write {
        fd: usize,
        offset: u64,
        what: Write,
    },
    Close {
        fd: usize,
    },
}

fn flags() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => Just(IOMMU_HWPT_FAULT_ID_VALID),
        2 => Just(0),
        1 => Just(IOMMU_HWPT_ALLOC_NEST_PARENT),
        1 => Just(IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID),
        1 => Just(IOMMU_HWPT_ALLOC_PASID),
        1 => any::<u32>(),
    ]
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        4 => (0usize..8, any::<bool>()).prop_map(|(pick, invalid)| Write::Answer { pick, invalid }),
        1 => (prop_oneof![0u32..8, any::<u32>()], prop_oneof![0u32..4, any::<u32>()])
            .prop_map(|(cookie, code)| Write::Bad { cookie, code }),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Write::Random),
        1 => (0usize..8, 1usize..8).prop_map(|(pick, len)| Write::Truncated { pick, len }),
        1 => (0usize..4, 0usize..600).prop_map(|(answers, junk)| Write::Oversize { answers, junk }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let bytes = |n| prop::collection::vec(any::<u8>(), 0..n);
    prop_oneof![
        2 => Just(Op::IoasAlloc),
        3 => (id_of(Kind::Ioas), prop::option::of(hostile_u64()), hostile_u64(), hostile_u64(), 0u32..4)
            .prop_map(|(ioas, iova, pa, len, prot)| Op::Map { ioas, iova, pa, len, prot }),
        2 => (id_of(Kind::Ioas), hostile_u64(), hostile_u64()).prop_map(|(ioas, iova, len)| Op::Unmap { ioas, iova, len }),
        2 => (0..N_DEV).prop_map(|dev| Op::Bind { dev }),
        1 => id_of(Kind::Dev).prop_map(|dev| Op::Unbind { dev }),
        6 => (id_of(Kind::Dev), pt(), flags(), id_of(Kind::Fault), prop_oneof![6 => Just(0u32), 1 => Just(IOMMU_HWPT_DATA_SELFTEST), 1 => any::<u32>()], prop_oneof![6 => Just(Vec::new()), 1 => bytes(16)])
            .prop_map(|(dev, pt, flags, fault, data_type, data)| Op::HwptAlloc { dev, pt, flags, fault, data_type, data }),
        1 => (bytes(48), bytes(8)).prop_map(|(cmd, data)| Op::IoctlHwptAlloc { cmd, data }),
        2 => prop_oneof![4 => Just(0u32), 1 => any::<u32>()].prop_map(|flags| Op::FaultAlloc { flags }),
        1 => bytes(32).prop_map(|cmd| Op::IoctlFaultAlloc { cmd }),
        4 => (id_of(Kind::Dev), pasid(), pt()).prop_map(|(dev, pasid, pt)| Op::Attach { dev, pasid, pt }),
        2 => (id_of(Kind::Dev), pasid(), pt()).prop_map(|(dev, pasid, pt)| Op::Replace { dev, pasid, pt }),
        2 => (id_of(Kind::Dev), pasid()).prop_map(|(dev, pasid)| Op::Detach { dev, pasid }),
        2 => id().prop_map(|id| Op::Destroy { id }),
        6 => (0..N_DEV, pasid(), 0usize..3).prop_map(|(dev, pasid, partials)| Op::Report { dev, pasid, partials }),
        4 => (0usize..4, prop_oneof![4 => (0usize..5).prop_map(|n| n * FAULT_RECORD_SIZE), 1 => 0usize..300], prop_oneof![8 => Just(0u64), 1 => any::<u64>()])
            .prop_map(|(fd, len, offset)| Op::Read { fd, len, offset }),
        4 => (0usize..4, prop_oneof![8 => Just(0u64), 1 => any::<u64>()], write())
            .prop_map(|(fd, offset, what)| Op::Write { fd, offset, what }),
        1 => (0usize..4).prop_map(|fd| Op::Close { fd }),
    ]
}

struct System {
    mock: Arc<MockDriver>,
    /// Devices hold their group weakly: the groups live as long as the case.
    _groups: Vec<Arc<Group>>,
    devs: Vec<Arc<Device>>,
    ictx: Ictx,
    /// Every ID the context handed out, in order, and by the kind it was handed out for
    /// (destroyed objects stay listed: their IDs make stale references).
    ids: Vec<u32>,
    kinds: BTreeMap<Kind, Vec<u32>>,
    /// dev_id of each device while bound.
    dev_ids: [Option<u32>; N_DEV],
    fds: Vec<Option<FaultFd>>,
}

/// Page request bookkeeping: what was reported and read, which cookies are outstanding.
#[derive(Default)]
struct Books {
    next_grpid: u32,
    /// Per group: requests the core refused (answered at once), and whether its last request
    /// was taken (then exactly one response is owed).
    refused: BTreeMap<u32, usize>,
    taken: BTreeSet<u32>,
    read: BTreeSet<u32>,
    /// Outstanding cookies per fd index.
    cookies: BTreeMap<usize, BTreeMap<u32, u32>>,
}

/// Everything an error must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Observable {
    objects: Vec<Option<iommufd::ObjectType>>,
    attached: Vec<Option<u32>>,
    iopf: Vec<bool>,
    hw: HwState,
    responses: usize,
    fds: Vec<Option<(usize, usize)>>,
}

impl System {
    fn new() -> Self {
        let mock = MockDriver::new("fuzz-iommufd");
        let mut devs = Vec::new();
        let mut groups = Vec::new();
        for (g, &n) in GROUPS.iter().enumerate() {
            let group = Group::new(mock.clone() as Arc<dyn IommuDriver>, format!("g{g}"));
            for i in 0..n {
                devs.push(group.add_device(format!("g{g}d{i}"), 1 << 20).unwrap());
            }
            groups.push(group);
        }
        System {
            mock,
            _groups: groups,
            devs,
            ictx: Ictx::new(),
            ids: Vec::new(),
            kinds: BTreeMap::new(),
            dev_ids: [None; N_DEV],
            fds: Vec::new(),
        }
    }

    fn id(&self, id: Id) -> u32 {
        match id {
            Id::Of(kind, i) => match self.kinds.get(&kind).filter(|v| !v.is_empty()) {
                Some(v) => v[i % v.len()],
                None => self.id(Id::Known(i)),
            },
            Id::Known(i) if !self.ids.is_empty() => self.ids[i % self.ids.len()],
            Id::Known(i) => i as u32,
            Id::Bogus(v) => v,
        }
    }

    fn observable(&self) -> Observable {
        let max = self.ids.iter().copied().max().unwrap_or(0);
        let pasids = [IOMMU_NO_PASID, 1, 2, 3];
        Observable {
            objects: (0..=max + 1)
                .map(|i| self.ictx.object_type(i).ok())
                .collect(),
            attached: self
                .dev_ids
                .iter()
                .flatten()
                .flat_map(|&d| pasids.map(|p| self.ictx.attached_hwpt(d, p).ok().flatten()))
                .collect(),
            iopf: self.devs.iter().map(|d| iopf_stats(d).is_some()).collect(),
            hw: self.mock.hw(),
            responses: self.mock.responses().len(),
            fds: self
                .fds
                .iter()
                .map(|f| f.as_ref().map(|f| (f.pending(), f.unanswered())))
                .collect(),
        }
    }

    /// Notes a new object's ID (IDs of destroyed objects may come back).
    fn record_id(&mut self, kind: Kind, id: u32) -> Result<(), TestCaseError> {
        prop_assert!(id != 0, "object ID 0 handed out");
        prop_assert!(
            self.ictx.object_type(id).is_ok(),
            "new object {} not in the table",
            id
        );
        if !self.ids.contains(&id) {
            self.ids.push(id);
        }
        let v = self.kinds.entry(kind).or_default();
        if !v.contains(&id) {
            v.push(id);
        }
        Ok(())
    }
}

/// An error must be errno-style and leave everything as it was.
fn check<T>(
    what: &str,
    res: &iommu_core::Result<T>,
    before: Observable,
    sys: &System,
) -> Result<(), TestCaseError> {
    if let Err(e) = res {
        prop_assert!(
            e.errno() > 0 && !e.to_string().is_empty(),
            "{}: not errno-style: {:?}",
            what,
            e
        );
        prop_assert_eq!(
            &sys.observable(),
            &before,
            "{} failed ({}) but changed state",
            what,
            e
        );
    }
    Ok(())
}

fn responses_per_group(sys: &System) -> BTreeMap<u32, usize> {
    let mut per = BTreeMap::new();
    for (_, r) in sys.mock.responses() {
        *per.entry(r.grpid).or_default() += 1;
    }
    per
}

/// No group answered more often than it may be (DESIGN §4.1).
fn check_responses(sys: &System, b: &Books, exact: bool) -> Result<(), TestCaseError> {
    let per = responses_per_group(sys);
    for g in 1..b.next_grpid {
        let owed = b.refused.get(&g).copied().unwrap_or(0) + usize::from(b.taken.contains(&g));
        let got = per.get(&g).copied().unwrap_or(0);
        if exact {
            prop_assert_eq!(got, owed, "responses for group {}", g);
        } else {
            prop_assert!(
                got <= owed,
                "group {} answered {} times, owed {}",
                g,
                got,
                owed
            );
        }
    }
    prop_assert!(
        per.keys().all(|&g| g >= 1 && g < b.next_grpid),
        "a response for a group never reported"
    );
    prop_assert_eq!(sys.mock.contract_violations(), Vec::<String>::new());
    Ok(())
}

fn answer_bytes(cookie: u32, code: u32) -> Vec<u8> {
    IommuHwptPageResponse { cookie, code }.as_bytes().to_vec()
}

fn step(sys: &mut System, b: &mut Books, op: &Op) -> Result<(), TestCaseError> {
    let before = sys.observable();
    match op {
        Op::IoasAlloc => {
            let r = sys.ictx.ioas_alloc();
            check("ioas_alloc", &r, before, sys)?;
            if let Ok(id) = r {
                sys.record_id(Kind::Ioas, id)?;
            }
        }
        &Op::Map {
            ioas,
            iova,
            pa,
            len,
            prot,
        } => {
            let r = sys.ictx.ioas_map(sys.id(ioas), iova, pa, len, prot);
            check("ioas_map", &r, before, sys)?;
            if let Ok(at) = r {
                // The last page of the 64-bit space is mappable (Linux checks iova + len - 1).
                prop_assert!(
                    at.checked_add(len - 1).is_some(),
                    "mapped [{:#x}, +{:#x}) wraps",
                    at,
                    len
                );
                if let Some(want) = iova {
                    prop_assert_eq!(at, want);
                }
            }
        }
        &Op::Unmap { ioas, iova, len } => {
            let r = sys.ictx.ioas_unmap(sys.id(ioas), iova, len);
            check("ioas_unmap", &r, before, sys)?;
        }
        &Op::Bind { dev } => {
            let r = sys.ictx.bind_device(sys.devs[dev].clone());
            check("bind_device", &r, before, sys)?;
            if let Ok(id) = r {
                prop_assert!(sys.dev_ids[dev].is_none(), "device bound twice");
                sys.dev_ids[dev] = Some(id);
                sys.record_id(Kind::Dev, id)?;
            }
        }
        &Op::Unbind { dev } => {
            let id = sys.id(dev);
            let r = sys.ictx.unbind_device(id);
            check("unbind_device", &r, before, sys)?;
            if r.is_ok() {
                for d in sys.dev_ids.iter_mut().filter(|d| **d == Some(id)) {
                    *d = None;
                }
            }
        }
        Op::HwptAlloc {
            dev,
            pt,
            flags,
            fault,
            data_type,
            data,
        } => {
            let r = sys.ictx.hwpt_alloc(
                sys.id(*dev),
                sys.id(*pt),
                *flags,
                sys.id(*fault),
                *data_type,
                data,
            );
            check("hwpt_alloc", &r, before, sys)?;
            if let Ok(id) = r {
                sys.record_id(Kind::Hwpt, id)?;
            }
        }
        Op::IoctlHwptAlloc { cmd, data } => {
            let mut cmd = cmd.clone();
            // Point the struct's IDs at live objects often enough to get past the lookups.
            if cmd.len() >= 16 && !sys.ids.is_empty() {
                let pick = |i: u8| sys.ids[usize::from(i) % sys.ids.len()].to_ne_bytes();
                let (d, p) = (pick(cmd[8]), pick(cmd[12]));
                cmd[8..12].copy_from_slice(&d);
                cmd[12..16].copy_from_slice(&p);
            }
            let r = sys.ictx.ioctl_hwpt_alloc(&mut cmd, data);
            check("ioctl_hwpt_alloc", &r, before, sys)?;
            if let Ok(id) = r {
                sys.record_id(Kind::Hwpt, id)?;
            }
        }
        &Op::FaultAlloc { flags } => {
            let r = sys.ictx.fault_queue_alloc(flags);
            check("fault_queue_alloc", &r, before, sys)?;
            if let Ok((id, fd)) = r {
                sys.record_id(Kind::Fault, id)?;
                sys.fds.push(Some(fd));
            }
        }
        Op::IoctlFaultAlloc { cmd } => {
            let mut cmd = cmd.clone();
            let r = sys.ictx.ioctl_fault_queue_alloc(&mut cmd);
            check("ioctl_fault_queue_alloc", &r, before, sys)?;
            if let Ok(fd) = r {
                let id = u32::from_ne_bytes(cmd[8..12].try_into().unwrap());
                sys.record_id(Kind::Fault, id)?;
                sys.fds.push(Some(fd));
            }
        }
        &Op::Attach { dev, pasid, pt } => {
            let r = sys.ictx.device_attach(sys.id(dev), pasid, sys.id(pt));
            check("device_attach", &r, before, sys)?;
        }
        &Op::Replace { dev, pasid, pt } => {
            let r = sys.ictx.device_replace(sys.id(dev), pasid, sys.id(pt));
            check("device_replace", &r, before, sys)?;
        }
        &Op::Detach { dev, pasid } => {
            let r = sys.ictx.device_detach(sys.id(dev), pasid);
            check("device_detach", &r, before, sys)?;
        }
        &Op::Destroy { id } => {
            let id = sys.id(id);
            let r = sys.ictx.destroy(id);
            check("destroy", &r, before, sys)?;
            if r.is_ok() {
                prop_assert_eq!(sys.ictx.object_type(id).unwrap_err().errno_name(), "ENOENT");
            }
        }
        &Op::Report {
            dev,
            pasid,
            partials,
        } => {
            let grpid = b.next_grpid.max(1);
            b.next_grpid = grpid + 1;
            let pv = if pasid != IOMMU_NO_PASID { PV } else { 0 };
            for i in 0..=partials {
                let last = if i == partials { LAST } else { 0 };
                let req = PageRequest {
                    flags: pv | last,
                    pasid,
                    grpid,
                    perm: IOMMU_FAULT_PERM_READ,
                    addr: 0x1000 * i as u64,
                };
                match report_device_fault(&sys.devs[dev], req) {
                    Ok(()) if last != 0 => {
                        b.taken.insert(grpid);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        prop_assert_eq!(e.errno_name(), "EINVAL");
                        *b.refused.entry(grpid).or_default() += 1;
                    }
                }
            }
        }
        &Op::Read { fd, len, offset } => {
            let Some(Some(f)) = sys.fds.get(fd % sys.fds.len().max(1)) else {
                return Ok(());
            };
            let fd = fd % sys.fds.len();
            let mut buf = vec![0u8; len];
            let r = f.read_at(&mut buf, offset);
            check("fault fd read", &r, before, sys)?;
            let Ok(n) = r else { return Ok(()) };
            prop_assert!(
                n <= len && n % FAULT_RECORD_SIZE == 0,
                "read {} bytes into {}",
                n,
                len
            );
            let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
            for rec in buf[..n].chunks_exact(FAULT_RECORD_SIZE) {
                let rec = IommuHwptPgfault::read_from_bytes(rec).unwrap();
                prop_assert!(rec.cookie != 0, "cookie 0 handed out");
                prop_assert!(
                    b.taken.contains(&rec.grpid),
                    "record of group {} nobody took",
                    rec.grpid
                );
                match seen.insert(rec.grpid, rec.cookie) {
                    Some(c) => prop_assert_eq!(c, rec.cookie, "one group, two cookies"),
                    None => {
                        prop_assert!(b.read.insert(rec.grpid), "group {} read twice", rec.grpid)
                    }
                }
            }
            // A cookie may come back once its group was answered (by a write or auto-response).
            b.cookies
                .entry(fd)
                .or_default()
                .extend(seen.into_iter().map(|(g, c)| (c, g)));
        }
        Op::Write { fd, offset, what } => {
            let Some(Some(f)) = sys.fds.get(fd % sys.fds.len().max(1)) else {
                return Ok(());
            };
            let fd = fd % sys.fds.len();
            let cookies = b.cookies.entry(fd).or_default();
            let nth = |pick: usize| cookies.keys().nth(pick % cookies.len().max(1)).copied();
            let bytes = match what {
                &Write::Answer { pick, invalid } => {
                    let Some(c) = nth(pick) else { return Ok(()) };
                    let code = if invalid {
                        IOMMUFD_PAGE_RESP_INVALID
                    } else {
                        IOMMUFD_PAGE_RESP_SUCCESS
                    };
                    answer_bytes(c, code)
                }
                &Write::Bad { cookie, code } => answer_bytes(cookie, code),
                Write::Random(bytes) => bytes.clone(),
                &Write::Truncated { pick, len } => {
                    let mut v = answer_bytes(nth(pick).unwrap_or(1), IOMMUFD_PAGE_RESP_SUCCESS);
                    v.truncate(len);
                    v
                }
                &Write::Oversize { answers, junk } => {
                    let mut v: Vec<u8> = cookies
                        .keys()
                        .take(answers)
                        .flat_map(|&c| answer_bytes(c, 0))
                        .collect();
                    v.extend((0..junk).map(|i| i as u8));
                    v
                }
            };
            let r = f.write_at(&bytes, *offset);
            check("fault fd write", &r, before, sys)?;
            if let Ok(n) = r {
                prop_assert!(
                    n <= bytes.len() && n % 8 == 0 && (n > 0 || bytes.is_empty()),
                    "wrote {} of {} bytes",
                    n,
                    bytes.len()
                );
                for rec in bytes[..n].chunks_exact(8) {
                    let rec = IommuHwptPageResponse::read_from_bytes(rec).unwrap();
                    // Applied records retire their cookie.
                    cookies.remove(&rec.cookie);
                }
            }
        }
        &Op::Close { fd } => {
            let n = sys.fds.len().max(1);
            if let Some(slot) = sys.fds.get_mut(fd % n) {
                slot.take();
            }
        }
    }
    Ok(())
}

/// Closes every fd, detaches and unbinds every device, destroys every object (in as many
/// rounds as references need); then nothing may be left and every group must be answered.
fn teardown(mut sys: System, b: Books) -> Result<(), TestCaseError> {
    sys.fds.clear();
    for d in sys.dev_ids.iter().flatten() {
        sys.ictx
            .unbind_device(*d)
            .map_err(|e| TestCaseError::fail(format!("unbind {d}: {e}")))?;
    }
    sys.dev_ids = [None; N_DEV];
    let mut live: Vec<u32> = sys
        .ids
        .iter()
        .copied()
        .filter(|&i| sys.ictx.object_type(i).is_ok())
        .collect();
    while !live.is_empty() {
        let n = live.len();
        live.retain(|&i| sys.ictx.destroy(i).is_err());
        prop_assert!(live.len() < n, "objects {:?} can never be destroyed", live);
    }
    for &i in &sys.ids {
        prop_assert_eq!(sys.ictx.object_type(i).unwrap_err().errno_name(), "ENOENT");
    }
    check_responses(&sys, &b, true)?;
    let System {
        mock,
        ictx,
        devs,
        _groups,
        ..
    } = sys;
    drop(ictx);
    prop_assert_eq!(mock.contract_violations(), Vec::<String>::new());
    prop_assert!(
        devs.iter().all(|d| iopf_stats(d).is_none()),
        "fault reporting left enabled"
    );
    Ok(())
}

/// A common start, so that most sequences reach the fault path: device 0 bound, an IOAS, a
/// fault queue, a fault-capable HWPT (PASID-compatible) on it attached at the RID, and device 2
/// bound too. Each step is an ordinary op, checked like any other.
fn setup_ops() -> Vec<Op> {
    let (ioas, dev0, fault, hwpt) = (
        Id::Of(Kind::Ioas, 0),
        Id::Of(Kind::Dev, 0),
        Id::Of(Kind::Fault, 0),
        Id::Of(Kind::Hwpt, 0),
    );
    vec![
        Op::Bind { dev: 0 },
        Op::IoasAlloc,
        Op::FaultAlloc { flags: 0 },
        Op::HwptAlloc {
            dev: dev0,
            pt: ioas,
            flags: IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID,
            fault,
            data_type: 0,
            data: Vec::new(),
        },
        Op::Attach {
            dev: dev0,
            pasid: IOMMU_NO_PASID,
            pt: hwpt,
        },
        Op::Bind { dev: 2 },
    ]
}

fn run(setup: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut sys = System::new();
    let mut b = Books {
        next_grpid: 1,
        ..Books::default()
    };
    let prefix = if setup { setup_ops() } else { Vec::new() };
    for op in prefix.iter().chain(ops) {
        step(&mut sys, &mut b, op)?;
        check_responses(&sys, &b, false)?;
    }
    teardown(sys, b)
}

/// `PROPTEST_CASES`, else the CI budget: 10,000 sequences in release builds (`.ci/run`'s fuzz
/// step), a tenth of that in the debug build of `cargo test --workspace`.
fn cases() -> u32 {
    let default = if cfg!(debug_assertions) {
        1_000
    } else {
        10_000
    };
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(Config { cases: cases(), max_shrink_iters: 4096, ..Config::default() })]
    #[test]
    fn iommufd_objects_and_fault_fd_survive_any_sequence(
        setup in prop::bool::weighted(0.8),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(setup, &ops)?;
    }
}

/// Found by the fuzzer: an IOAS mapping of a hostile length pushed into a HWPT made the mock
/// IOMMU record one entry per page (2^35 entries for 2^47 bytes: the process was killed for
/// memory), and a physical address near `u64::MAX` wrapped (a panic in debug builds, a mapping
/// at a wrapped address in release). The mock now refuses both with an errno, changing nothing.
#[test]
fn hostile_map_lengths_and_physical_addresses_are_refused_without_state_change() {
    let mut sys = System::new();
    let mut b = Books {
        next_grpid: 1,
        ..Books::default()
    };
    for op in setup_ops() {
        step(&mut sys, &mut b, &op).unwrap();
    }
    let ioas = sys.id(Id::Of(Kind::Ioas, 0));
    let before = sys.observable();
    let wrap = sys
        .ictx
        .ioas_map(ioas, Some(0), !0xfff, 0x2000, 1)
        .unwrap_err();
    // Linux's `iopt_map_pages`: a range past 2^64 is EOVERFLOW (as hostile_input checks).
    assert_eq!(wrap.errno_name(), "EOVERFLOW", "{wrap}");
    let huge = sys.ictx.ioas_map(ioas, Some(0), 0, 1 << 47, 1).unwrap_err();
    assert_eq!(huge.errno_name(), "ENOMEM", "{huge}");
    assert_eq!(sys.observable(), before);
    assert_eq!(
        sys.ictx.ioas_map(ioas, Some(0), 0x1000, 0x2000, 1).unwrap(),
        0
    );
}
