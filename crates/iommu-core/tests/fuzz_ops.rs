//! Operation-sequence fuzzer over the core's configuration and fault API (issue 11, item 5a).
//!
//! Random sequences of PASID attach/detach/replace, RID attach (with and without a handle),
//! SVA bind/unbind, partial and last page requests, answers and drops of delivered groups,
//! IOPF enable/disable/flush/run on a manual queue, and device removal run against a deliberately
//! simple reference model: who owns each (group, PASID) slot, which groups a handler or the
//! queue still holds, and the list of page responses the driver must have seen. After every
//! step (DESIGN §4): `attach_handle_get` returns exactly the model's owner (and `EBUSY` for the
//! other owner type), the driver saw exactly the expected responses in order, no handler got a
//! group for an attachment it no longer owns, queued SVA work never runs after its unbind
//! returned, and a rejected call returned the model's errno and changed nothing.
//!
//! Cases: `PROPTEST_CASES` (default below, sized for CI); see docs/fuzzing.md.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use iommu_core::mock::{HwState, MockDriver};
use iommu_core::{
    attach_device_pasid, attach_group, attach_group_handle, attach_handle_get, detach_device_pasid,
    detach_group, detach_group_handle, iopf_disable, iopf_discard_partial, iopf_enable,
    iopf_queue_add_device, iopf_queue_flush_dev, replace_device_pasid, replace_group_handle,
    report_device_fault, sva_bind_device, AddressSpace, AttachHandle, Device, DeviceId, Domain,
    DomainRequest, Error, Group, GroupSnapshot, IommuDriver, IopfGroup, IopfHandler, IopfQueue,
    MmIommuData, PageRequest, PageResponse, PageResponseCode, SvaBond, SvaHandleData,
    IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE as LAST, IOMMU_FAULT_PAGE_REQUEST_PASID_VALID as PV,
    IOMMU_FAULT_PERM_READ, PASID_LIMIT,
};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Owner data of the fuzzer's own attachments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag(u64);

/// A fault handler that keeps every group it is given until the fuzzer answers or drops it.
struct Keeper {
    groups: Mutex<Vec<IopfGroup>>,
}

impl IopfHandler for Keeper {
    fn name(&self) -> &str {
        "fuzz-keeper"
    }
    fn handle_iopf(&self, group: IopfGroup) -> Result<(), IopfGroup> {
        self.groups.lock().unwrap().push(group);
        Ok(())
    }
}

const FAULT_LIMIT: u64 = 1 << 30;

/// An address space resolving every fault below [`FAULT_LIMIT`].
struct Mm {
    id: u64,
    iommu: MmIommuData,
}

impl AddressSpace for Mm {
    fn mm_id(&self) -> u64 {
        self.id
    }
    fn iommu_mm(&self) -> &MmIommuData {
        &self.iommu
    }
    fn handle_mm_fault(&self, addr: u64, _perm: u32) -> iommu_core::Result<()> {
        if addr < FAULT_LIMIT {
            Ok(())
        } else {
            Err(iommu_core::error::efault_v("no VMA", addr))
        }
    }
}

/// Devices: group of each, and each one's `max_pasids` (0: no PASID capability).
const DEVS: [(usize, u32); 4] = [(0, 32), (0, 8), (1, 64), (1, 0)];
const N_MM: usize = 3;
/// Domains: 0 and 1 fault capable (kept groups), 2 plain paging, 3 of another IOMMU.
const N_DOM: usize = 4;
const FAULT_DOMS: usize = 2;
const FOREIGN: usize = 3;

#[derive(Debug, Clone, Copy)]
enum PasidSel {
    Fixed(u32),
    /// The PASID mm `n` has (1 if none yet): collides SVA and plain attachments.
    OfMm(usize),
}

fn pasid_sel() -> impl Strategy<Value = PasidSel> {
    prop_oneof![
        6 => (1u32..5).prop_map(PasidSel::Fixed),
        2 => (0..N_MM).prop_map(PasidSel::OfMm),
        1 => prop::sample::select(vec![0, 7, 8, 31, 32, 63, 64, PASID_LIMIT - 1, PASID_LIMIT, u32::MAX])
            .prop_map(PasidSel::Fixed),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    Success,
    Invalid,
    Failure,
}

impl Code {
    fn code(self) -> PageResponseCode {
        match self {
            Code::Success => PageResponseCode::Success,
            Code::Invalid => PageResponseCode::Invalid,
            Code::Failure => PageResponseCode::Failure,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Attach {
        dom: usize,
        dev: usize,
        pasid: PasidSel,
    },
    Detach {
        dom: usize,
        dev: usize,
        pasid: PasidSel,
    },
    Replace {
        dom: usize,
        dev: usize,
        pasid: PasidSel,
    },
    GroupAttach {
        dom: usize,
        group: usize,
    },
    GroupDetach {
        dom: usize,
        group: usize,
    },
    GroupAttachHandle {
        dom: usize,
        group: usize,
    },
    GroupDetachHandle {
        dom: usize,
        group: usize,
    },
    GroupReplaceHandle {
        dom: usize,
        group: usize,
    },
    Bind {
        dev: usize,
        mm: usize,
    },
    Unbind {
        pick: usize,
    },
    /// A partial request, of a new group or another one of an open group.
    Partial {
        dev: usize,
        pasid: PasidSel,
        pv: bool,
        addr_ok: bool,
        open: Option<usize>,
    },
    /// A last request: completes an open group, or a group of one.
    Last {
        dev: usize,
        pasid: PasidSel,
        pv: bool,
        addr_ok: bool,
        open: Option<usize>,
    },
    Respond {
        keeper: usize,
        pick: usize,
        code: Code,
    },
    DropGroup {
        keeper: usize,
        pick: usize,
    },
    EnableIopf {
        dev: usize,
        queued: bool,
    },
    DisableIopf {
        dev: usize,
    },
    DiscardPartial {
        dev: usize,
    },
    Flush {
        dev: usize,
    },
    RunOne,
    ShutdownQueue,
    RemoveDevice {
        group: usize,
        dev: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let dom = 0..N_DOM;
    let dev = 0..DEVS.len();
    let open = prop::option::of(0usize..4);
    prop_oneof![
        4 => (dom.clone(), dev.clone(), pasid_sel()).prop_map(|(dom, dev, pasid)| Op::Attach { dom, dev, pasid }),
        2 => (dom.clone(), dev.clone(), pasid_sel()).prop_map(|(dom, dev, pasid)| Op::Detach { dom, dev, pasid }),
        2 => (dom.clone(), dev.clone(), pasid_sel()).prop_map(|(dom, dev, pasid)| Op::Replace { dom, dev, pasid }),
        1 => (dom.clone(), 0..2usize).prop_map(|(dom, group)| Op::GroupAttach { dom, group }),
        1 => (dom.clone(), 0..2usize).prop_map(|(dom, group)| Op::GroupDetach { dom, group }),
        2 => (dom.clone(), 0..2usize).prop_map(|(dom, group)| Op::GroupAttachHandle { dom, group }),
        1 => (dom.clone(), 0..2usize).prop_map(|(dom, group)| Op::GroupDetachHandle { dom, group }),
        1 => (dom.clone(), 0..2usize).prop_map(|(dom, group)| Op::GroupReplaceHandle { dom, group }),
        3 => (dev.clone(), 0..N_MM).prop_map(|(dev, mm)| Op::Bind { dev, mm }),
        2 => (0usize..8).prop_map(|pick| Op::Unbind { pick }),
        3 => (dev.clone(), pasid_sel(), prop::bool::weighted(0.8), prop::bool::weighted(0.8), open.clone())
            .prop_map(|(dev, pasid, pv, addr_ok, open)| Op::Partial { dev, pasid, pv, addr_ok, open }),
        5 => (dev.clone(), pasid_sel(), prop::bool::weighted(0.8), prop::bool::weighted(0.8), open)
            .prop_map(|(dev, pasid, pv, addr_ok, open)| Op::Last { dev, pasid, pv, addr_ok, open }),
        3 => (0..FAULT_DOMS, 0usize..8, prop::sample::select(vec![Code::Success, Code::Invalid, Code::Failure]))
            .prop_map(|(keeper, pick, code)| Op::Respond { keeper, pick, code }),
        1 => (0..FAULT_DOMS, 0usize..8).prop_map(|(keeper, pick)| Op::DropGroup { keeper, pick }),
        2 => (dev.clone(), any::<bool>()).prop_map(|(dev, queued)| Op::EnableIopf { dev, queued }),
        1 => dev.clone().prop_map(|dev| Op::DisableIopf { dev }),
        1 => dev.clone().prop_map(|dev| Op::DiscardPartial { dev }),
        1 => dev.clone().prop_map(|dev| Op::Flush { dev }),
        // Shutting the queue down is rare: it makes every later SVA group run inline.
        2 => (0u8..16).prop_map(|r| if r == 0 { Op::ShutdownQueue } else { Op::RunOne }),
        1 => (0..2usize, dev).prop_map(|(group, dev)| Op::RemoveDevice { group, dev }),
    ]
}

/// Who holds a slot, in the model.
#[derive(Clone)]
enum Owner {
    Plain {
        dom: usize,
        handle: Arc<AttachHandle<Tag>>,
    },
    Sva {
        bond: u64,
        mm: usize,
    },
}

/// A fault-reporting state of one device (a `FaultParam`), by generation.
#[derive(Default)]
struct Param {
    generation: u64,
    queued: bool,
    /// Partial requests kept: (grpid, addr_ok, pasid_valid).
    partials: Vec<(u32, bool, bool)>,
}

/// SVA work on the manual queue.
struct Work {
    dev: usize,
    generation: u64,
    pasid: u32,
    grpid: u32,
    ok: bool,
    bond: u64,
}

/// A group a keeper holds, as the model expects it.
struct Kept {
    dev: usize,
    pasid: u32,
    grpid: u32,
}

struct Model {
    slots: BTreeMap<(usize, u32), Owner>,
    /// The RID domain of each group when not the core (default) domain.
    rid: [Option<usize>; 2],
    removed: [bool; 4],
    params: [Option<Param>; 4],
    next_generation: u64,
    queue: VecDeque<Work>,
    queue_shut: bool,
    kept: [Vec<Kept>; FAULT_DOMS],
    /// Live bonds: id → users; bonds whose last unbind returned.
    bond_users: BTreeMap<u64, u32>,
    unbound: Vec<u64>,
    next_bond: u64,
    expected: Vec<(DeviceId, PageResponse)>,
    /// Open page request groups: (grpid, device, PASID, PASID valid).
    open: Vec<(u32, usize, u32, bool)>,
    next_grpid: u32,
    next_tag: u64,
    /// Groups handed to a handler (answered once), and requests refused per group (each
    /// answered at once).
    routed: std::collections::BTreeSet<u32>,
    refused: BTreeMap<u32, usize>,
}

struct System {
    mock: Arc<MockDriver>,
    groups: Vec<Arc<Group>>,
    devs: Vec<Arc<Device>>,
    doms: Vec<Arc<Domain>>,
    keepers: Vec<Arc<Keeper>>,
    mms: Vec<Arc<dyn AddressSpace>>,
    queue: Arc<IopfQueue>,
    /// SVA tokens with the model's bond id.
    bonds: Vec<(SvaBond, u64)>,
}

/// Everything a rejected call must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Observable {
    groups: Vec<GroupSnapshot>,
    hw: HwState,
    responses: usize,
    kept: Vec<usize>,
    queued: usize,
    users: Vec<u32>,
}

impl System {
    fn new() -> Self {
        let mock = MockDriver::new("fuzz-iommu");
        let groups: Vec<Arc<Group>> = (0..2)
            .map(|g| Group::new(mock.clone() as Arc<dyn IommuDriver>, format!("g{g}")))
            .collect();
        let devs: Vec<Arc<Device>> = DEVS
            .iter()
            .enumerate()
            .map(|(i, &(g, max))| groups[g].add_device(format!("d{i}"), max).unwrap())
            .collect();
        let keepers: Vec<Arc<Keeper>> = (0..FAULT_DOMS)
            .map(|_| {
                Arc::new(Keeper {
                    groups: Mutex::new(Vec::new()),
                })
            })
            .collect();
        let paging = || DomainRequest::Paging { dma_api: false };
        let mut doms: Vec<Arc<Domain>> = keepers
            .iter()
            .map(|k| {
                Domain::alloc(&devs[0], paging(), Some(k.clone() as Arc<dyn IopfHandler>)).unwrap()
            })
            .collect();
        doms.push(Domain::alloc_paging(&devs[0]).unwrap());
        let other = MockDriver::new("foreign");
        let og = Group::new(other as Arc<dyn IommuDriver>, "foreign");
        let odev = og.add_device("foreign-dev", 64).unwrap();
        doms.push(Domain::alloc_paging(&odev).unwrap());
        let mms = (0..N_MM as u64)
            .map(|id| {
                Arc::new(Mm {
                    id: id + 1,
                    iommu: MmIommuData::default(),
                }) as Arc<dyn AddressSpace>
            })
            .collect();
        System {
            mock,
            groups,
            devs,
            doms,
            keepers,
            mms,
            queue: IopfQueue::new_manual("fuzz"),
            bonds: Vec::new(),
        }
    }

    fn observable(&self) -> Observable {
        Observable {
            groups: self.groups.iter().map(|g| g.snapshot()).collect(),
            hw: self.mock.hw(),
            responses: self.mock.responses().len(),
            kept: self
                .keepers
                .iter()
                .map(|k| k.groups.lock().unwrap().len())
                .collect(),
            queued: self.queue.pending(),
            users: self.bonds.iter().map(|(b, _)| b.data().users()).collect(),
        }
    }
}

impl Model {
    fn new() -> Self {
        Model {
            slots: BTreeMap::new(),
            rid: [None; 2],
            removed: [false; 4],
            params: Default::default(),
            next_generation: 1,
            queue: VecDeque::new(),
            queue_shut: false,
            kept: Default::default(),
            bond_users: BTreeMap::new(),
            unbound: Vec::new(),
            next_bond: 1,
            expected: Vec::new(),
            open: Vec::new(),
            next_grpid: 1,
            next_tag: 1,
            routed: Default::default(),
            refused: BTreeMap::new(),
        }
    }

    fn group_of(dev: usize) -> usize {
        DEVS[dev].0
    }

    fn members(&self, group: usize) -> impl Iterator<Item = usize> + '_ {
        (0..DEVS.len()).filter(move |&d| DEVS[d].0 == group && !self.removed[d])
    }

    fn respond(
        &mut self,
        sys: &System,
        dev: usize,
        pasid: u32,
        grpid: u32,
        code: PageResponseCode,
    ) {
        self.expected
            .push((sys.devs[dev].id(), PageResponse { pasid, grpid, code }));
    }

    fn pending(&self, dev: usize, generation: u64) -> usize {
        self.queue
            .iter()
            .filter(|w| w.dev == dev && w.generation == generation)
            .count()
    }

    /// Runs the oldest SVA work item, as the manual queue does.
    fn run_one(&mut self, sys: &System) -> Result<bool, TestCaseError> {
        let Some(w) = self.queue.pop_front() else {
            return Ok(false);
        };
        prop_assert!(
            !self.unbound.contains(&w.bond),
            "SVA work for bond {} ran after its unbind returned (grpid {})",
            w.bond,
            w.grpid
        );
        let code = if w.ok {
            PageResponseCode::Success
        } else {
            PageResponseCode::Invalid
        };
        self.respond(sys, w.dev, w.pasid, w.grpid, code);
        Ok(true)
    }

    /// `iopf_queue_flush_dev` on a device whose fault reporting is enabled.
    fn flush(&mut self, sys: &System, dev: usize) -> Result<(), TestCaseError> {
        let Some(p) = &self.params[dev] else {
            return Ok(());
        };
        let (generation, queued) = (p.generation, p.queued);
        if queued {
            while self.pending(dev, generation) != 0 && self.run_one(sys)? {}
        }
        Ok(())
    }
}

fn resolve(sel: PasidSel, sys: &System) -> u32 {
    match sel {
        PasidSel::Fixed(p) => p,
        PasidSel::OfMm(m) => sys.mms[m].iommu_mm().pasid().unwrap_or(1),
    }
}

/// The errno a PASID attach/replace must fail with, before looking at the slot.
fn pasid_preflight(m: &Model, dom: usize, dev: usize, pasid: u32) -> Option<&'static str> {
    if m.removed[dev] {
        return Some("ENODEV");
    }
    if dom == FOREIGN || pasid == 0 || pasid >= PASID_LIMIT {
        return Some("EINVAL");
    }
    None
}

/// Checks a call's outcome against the model's verdict; a rejection must change nothing.
fn check_outcome<T>(
    what: &str,
    res: &Result<T, Error>,
    want: Option<&'static str>,
    before: Observable,
    sys: &System,
) -> Result<(), TestCaseError> {
    match (res, want) {
        (Ok(_), None) => {}
        (Err(e), Some(errno)) => {
            prop_assert_eq!(e.errno_name(), errno, "{}: {}", what, e);
            prop_assert!(e.errno() > 0 && !e.to_string().is_empty());
            prop_assert_eq!(
                &sys.observable(),
                &before,
                "{} was rejected ({}) but changed state",
                what,
                e
            );
        }
        (Ok(_), Some(errno)) => prop_assert!(false, "{what} succeeded; the model expected {errno}"),
        (Err(e), None) => prop_assert!(false, "{what} failed ({e}); the model expected success"),
    }
    Ok(())
}

/// DESIGN §4.3 and §4.6 after every step: the slots hold exactly the model's owners, the driver
/// saw exactly the model's responses, and nobody broke the driver contract.
fn check_invariants(m: &Model, sys: &System) -> Result<(), TestCaseError> {
    let mut pasids: Vec<u32> = (0..12).chain([31, 32, 63, 64, PASID_LIMIT - 1]).collect();
    pasids.extend(sys.mms.iter().filter_map(|mm| mm.iommu_mm().pasid()));
    pasids.extend(m.slots.keys().map(|&(_, p)| p));
    for (g, group) in sys.groups.iter().enumerate() {
        let snap: Vec<u32> = group.snapshot().pasids.iter().map(|s| s.pasid).collect();
        let want: Vec<u32> = m.slots.keys().filter(|k| k.0 == g).map(|k| k.1).collect();
        prop_assert_eq!(snap, want, "occupied slots of group {}", g);
        for &p in &pasids {
            let plain = attach_handle_get::<Tag>(group, p);
            let sva = attach_handle_get::<SvaHandleData>(group, p);
            match m.slots.get(&(g, p)) {
                None => {
                    prop_assert_eq!(plain.unwrap_err().errno_name(), "ENOENT");
                    prop_assert_eq!(sva.unwrap_err().errno_name(), "ENOENT");
                }
                Some(Owner::Plain { handle, dom }) => {
                    let h = plain.map_err(|e| TestCaseError::fail(format!("({g}, {p}): {e}")))?;
                    prop_assert!(
                        Arc::ptr_eq(&h, handle),
                        "({}, {}) holds another handle",
                        g,
                        p
                    );
                    prop_assert!(Arc::ptr_eq(h.domain(), &sys.doms[*dom]));
                    prop_assert_eq!(sva.unwrap_err().errno_name(), "EBUSY");
                }
                Some(Owner::Sva { bond, mm }) => {
                    let h = sva.map_err(|e| TestCaseError::fail(format!("({g}, {p}): {e}")))?;
                    prop_assert_eq!(h.data().mm().mm_id(), sys.mms[*mm].mm_id());
                    prop_assert_eq!(h.data().users(), m.bond_users[bond]);
                    prop_assert_eq!(plain.unwrap_err().errno_name(), "EBUSY");
                }
            }
        }
    }
    prop_assert_eq!(&sys.mock.responses(), &m.expected, "page responses");
    prop_assert_eq!(sys.mock.contract_violations(), Vec::<String>::new());
    for (k, keeper) in sys.keepers.iter().enumerate() {
        prop_assert_eq!(keeper.groups.lock().unwrap().len(), m.kept[k].len());
    }
    prop_assert_eq!(sys.queue.pending(), m.queue.len());
    Ok(())
}

fn step(m: &mut Model, sys: &mut System, op: &Op) -> Result<(), TestCaseError> {
    let before = sys.observable();
    match *op {
        Op::Attach { dom, dev, pasid } => {
            let p = resolve(pasid, sys);
            let g = Model::group_of(dev);
            let want = pasid_preflight(m, dom, dev, p).or_else(|| {
                if m.members(g).any(|d| DEVS[d].1 != 0 && p >= DEVS[d].1) {
                    Some("EINVAL")
                } else if m.slots.contains_key(&(g, p)) {
                    Some("EBUSY")
                } else {
                    None
                }
            });
            let tag = Tag(m.next_tag);
            m.next_tag += 1;
            let res = attach_device_pasid(&sys.doms[dom], &sys.devs[dev], p, tag);
            check_outcome("attach_device_pasid", &res, want, before, sys)?;
            if let Ok(h) = res {
                prop_assert_eq!(*h.data(), tag);
                m.slots.insert((g, p), Owner::Plain { dom, handle: h });
            }
        }
        Op::Detach { dom, dev, pasid } => {
            let p = resolve(pasid, sys);
            let g = Model::group_of(dev);
            let want = if m.removed[dev] {
                Some("ENODEV")
            } else if p == 0 {
                Some("EINVAL")
            } else {
                match m.slots.get(&(g, p)) {
                    None => Some("ENOENT"),
                    Some(Owner::Plain { dom: d, .. }) if *d == dom => None,
                    Some(_) => Some("EINVAL"),
                }
            };
            let res = detach_device_pasid(&sys.doms[dom], &sys.devs[dev], p);
            check_outcome("detach_device_pasid", &res, want, before, sys)?;
            if res.is_ok() {
                m.slots.remove(&(g, p));
            }
        }
        Op::Replace { dom, dev, pasid } => {
            let p = resolve(pasid, sys);
            let g = Model::group_of(dev);
            let want = pasid_preflight(m, dom, dev, p)
                .or_else(|| (!m.slots.contains_key(&(g, p))).then_some("EINVAL"));
            let tag = Tag(m.next_tag);
            m.next_tag += 1;
            let res = replace_device_pasid(&sys.doms[dom], &sys.devs[dev], p, tag);
            check_outcome("replace_device_pasid", &res, want, before, sys)?;
            if let Ok(r) = res {
                let old = r.old.expect("a PASID replace displaces a handle");
                match m.slots.get(&(g, p)) {
                    Some(Owner::Plain { handle, .. }) => prop_assert!(old.is_handle(handle)),
                    Some(Owner::Sva { .. }) => prop_assert!(old.is::<SvaHandleData>()),
                    None => unreachable!("checked above"),
                }
                m.slots.insert((g, p), Owner::Plain { dom, handle: r.new });
            }
        }
        Op::GroupAttach { dom, group } => {
            let want = group_preflight(m, dom, group)
                .or_else(|| m.rid[group].is_some().then_some("EBUSY"));
            let res = attach_group(&sys.doms[dom], &sys.groups[group]);
            check_outcome("attach_group", &res, want, before, sys)?;
            if res.is_ok() {
                m.rid[group] = Some(dom);
            }
        }
        Op::GroupDetach { dom, group } => {
            let want = if m.rid[group] != Some(dom) {
                Some("EINVAL")
            } else if m.slots.contains_key(&(group, 0)) {
                Some("EBUSY")
            } else {
                None
            };
            let res = detach_group(&sys.doms[dom], &sys.groups[group]);
            check_outcome("detach_group", &res, want, before, sys)?;
            if res.is_ok() {
                m.rid[group] = None;
            }
        }
        Op::GroupAttachHandle { dom, group } => {
            let want = group_preflight(m, dom, group).or_else(|| {
                (m.slots.contains_key(&(group, 0)) || m.rid[group].is_some()).then_some("EBUSY")
            });
            let tag = Tag(m.next_tag);
            m.next_tag += 1;
            let res = attach_group_handle(&sys.doms[dom], &sys.groups[group], tag);
            check_outcome("attach_group_handle", &res, want, before, sys)?;
            if let Ok(h) = res {
                m.rid[group] = Some(dom);
                m.slots.insert((group, 0), Owner::Plain { dom, handle: h });
            }
        }
        Op::GroupDetachHandle { dom, group } => {
            let want = match m.slots.get(&(group, 0)) {
                None => Some("ENOENT"),
                Some(Owner::Plain { dom: d, .. }) if *d == dom => None,
                Some(_) => Some("EINVAL"),
            };
            let res = detach_group_handle(&sys.doms[dom], &sys.groups[group]);
            check_outcome("detach_group_handle", &res, want, before, sys)?;
            if res.is_ok() {
                m.rid[group] = None;
                m.slots.remove(&(group, 0));
            }
        }
        Op::GroupReplaceHandle { dom, group } => {
            let want = group_preflight(m, dom, group);
            let tag = Tag(m.next_tag);
            m.next_tag += 1;
            let res = replace_group_handle(&sys.doms[dom], &sys.groups[group], tag);
            check_outcome("replace_group_handle", &res, want, before, sys)?;
            if let Ok(r) = res {
                match (m.slots.get(&(group, 0)), &r.old) {
                    (Some(Owner::Plain { handle, .. }), Some(old)) => {
                        prop_assert!(old.is_handle(handle))
                    }
                    (None, None) => {}
                    _ => prop_assert!(false, "replace_group_handle returned the wrong old handle"),
                }
                m.rid[group] = Some(dom);
                m.slots
                    .insert((group, 0), Owner::Plain { dom, handle: r.new });
            }
        }
        Op::Bind { dev, mm } => bind(m, sys, dev, mm, before)?,
        Op::Unbind { pick } => {
            if sys.bonds.is_empty() {
                return Ok(());
            }
            let (bond, id) = sys.bonds.remove(pick % sys.bonds.len());
            let pasid = bond.pasid();
            let dev = sys
                .devs
                .iter()
                .position(|d| Arc::ptr_eq(d, bond.data().device()))
                .unwrap();
            let g = Model::group_of(dev);
            bond.unbind();
            let users = m.bond_users.get_mut(&id).unwrap();
            *users -= 1;
            if *users == 0 {
                m.bond_users.remove(&id);
                // The last unbind detaches (if the slot is still the bond's) and flushes the
                // queue of every device in the group before it returns.
                if matches!(m.slots.get(&(g, pasid)), Some(Owner::Sva { bond, .. }) if *bond == id)
                {
                    m.slots.remove(&(g, pasid));
                }
                // A removed device has no group: unbind finds no queue to flush.
                let members: Vec<usize> = if m.removed[dev] {
                    Vec::new()
                } else {
                    m.members(g).collect()
                };
                for d in members {
                    m.flush(sys, d)?;
                }
                m.unbound.push(id);
            }
        }
        Op::Partial {
            dev,
            pasid,
            pv,
            addr_ok,
            open,
        }
        | Op::Last {
            dev,
            pasid,
            pv,
            addr_ok,
            open,
        } => {
            let last = matches!(op, Op::Last { .. });
            let (grpid, dev, p, pv) = match open.filter(|_| !m.open.is_empty()) {
                Some(i) => {
                    let i = i % m.open.len();
                    let o = m.open[i];
                    if last {
                        m.open.remove(i);
                    }
                    o
                }
                None => {
                    let g = m.next_grpid;
                    m.next_grpid += 1;
                    let p = resolve(pasid, sys);
                    if !last {
                        m.open.push((g, dev, p, pv));
                    }
                    (g, dev, p, pv)
                }
            };
            report(m, sys, dev, p, pv, grpid, addr_ok, last)?;
        }
        Op::Respond { keeper, pick, .. } | Op::DropGroup { keeper, pick } => {
            let mut held = sys.keepers[keeper].groups.lock().unwrap();
            if held.is_empty() {
                return Ok(());
            }
            let i = pick % held.len();
            let group = held.remove(i);
            drop(held);
            let k = m.kept[keeper].remove(i);
            prop_assert_eq!(group.last().grpid, k.grpid);
            let code = match *op {
                Op::Respond { code, .. } => {
                    group.respond(code.code());
                    code.code()
                }
                _ => {
                    drop(group);
                    PageResponseCode::Invalid
                }
            };
            m.respond(sys, k.dev, k.pasid, k.grpid, code);
        }
        Op::EnableIopf { dev, queued } => {
            let want = if queued && m.queue_shut {
                Some("EINVAL")
            } else if m.params[dev].is_some() {
                Some("EBUSY")
            } else {
                None
            };
            let res = if queued {
                iopf_queue_add_device(&sys.queue, &sys.devs[dev])
            } else {
                iopf_enable(&sys.devs[dev])
            };
            check_outcome("iopf enable", &res, want, before, sys)?;
            if res.is_ok() {
                m.params[dev] = Some(Param {
                    generation: m.next_generation,
                    queued,
                    partials: Vec::new(),
                });
                m.next_generation += 1;
            }
        }
        Op::DisableIopf { dev } => {
            let want = m.params[dev].is_none().then_some("ENODEV");
            let res = iopf_disable(&sys.devs[dev]);
            check_outcome("iopf_disable", &res, want, before, sys)?;
            // Queued handler work of the device runs before disable returns.
            m.flush(sys, dev)?;
            m.params[dev] = None;
        }
        Op::DiscardPartial { dev } => {
            let want = m.params[dev].is_none().then_some("ENODEV");
            let res = iopf_discard_partial(&sys.devs[dev]);
            check_outcome("iopf_discard_partial", &res, want, before, sys)?;
            if let (Ok(n), Some(p)) = (res, m.params[dev].as_mut()) {
                prop_assert_eq!(n, p.partials.len());
                p.partials.clear();
            }
        }
        Op::Flush { dev } => {
            let want = m.params[dev].is_none().then_some("ENODEV");
            let res = iopf_queue_flush_dev(&sys.devs[dev]);
            if res.is_ok() {
                m.flush(sys, dev)?;
            }
            check_outcome("iopf_queue_flush_dev", &res, want, before, sys)?;
        }
        Op::RunOne => {
            let ran = sys.queue.run_one();
            prop_assert_eq!(ran, m.run_one(sys)?);
        }
        Op::ShutdownQueue => {
            sys.queue.shutdown();
            m.queue_shut = true;
            while m.run_one(sys)? {}
        }
        Op::RemoveDevice { group, dev } => {
            let want = if Model::group_of(dev) != group || m.removed[dev] {
                Some("EINVAL")
            } else if m.slots.keys().any(|k| k.0 == group) {
                Some("EBUSY")
            } else {
                None
            };
            let res = sys.groups[group].remove_device(&sys.devs[dev]);
            check_outcome("remove_device", &res, want, before, sys)?;
            if res.is_ok() {
                m.removed[dev] = true;
                if m.members(group).next().is_none() {
                    m.rid[group] = None;
                }
            }
        }
    }
    Ok(())
}

/// The errno of the group-handle preflight (empty group, foreign domain), if any.
fn group_preflight(m: &Model, dom: usize, group: usize) -> Option<&'static str> {
    if m.members(group).next().is_none() {
        Some("ENODEV")
    } else if dom == FOREIGN {
        Some("EINVAL")
    } else {
        None
    }
}

fn bind(
    m: &mut Model,
    sys: &mut System,
    dev: usize,
    mm: usize,
    before: Observable,
) -> Result<(), TestCaseError> {
    let g = Model::group_of(dev);
    let max = DEVS[dev].1;
    let had = sys.mms[mm].iommu_mm().pasid();
    let res = sva_bind_device(&sys.devs[dev], &sys.mms[mm]);
    let now = sys.mms[mm].iommu_mm().pasid();
    if let Some(h) = had {
        prop_assert_eq!(now, Some(h), "an mm keeps its PASID");
    }
    // The model's verdict, knowing the PASID the call settled on.
    let want = if m.removed[dev] {
        Some("ENODEV")
    } else {
        match (had, now) {
            (Some(p), _) if p >= max => Some("EOVERFLOW"),
            (_, None) => Some("ENOSPC"),
            (_, Some(p)) => match m.slots.get(&(g, p)) {
                Some(Owner::Sva { mm: o, .. }) if *o == mm => None,
                Some(_) => Some("EBUSY"),
                None if m.members(g).any(|d| DEVS[d].1 != 0 && p >= DEVS[d].1) => Some("EINVAL"),
                None => None,
            },
        }
    };
    check_outcome("sva_bind_device", &res, want, before, sys)?;
    let Ok(bond) = res else { return Ok(()) };
    let p = now.unwrap();
    prop_assert_eq!(bond.pasid(), p);
    let id = match m.slots.get(&(g, p)) {
        Some(Owner::Sva { bond: id, .. }) => {
            let id = *id;
            *m.bond_users.get_mut(&id).unwrap() += 1;
            id
        }
        _ => {
            let id = m.next_bond;
            m.next_bond += 1;
            m.bond_users.insert(id, 1);
            m.slots.insert((g, p), Owner::Sva { bond: id, mm });
            id
        }
    };
    sys.bonds.push((bond, id));
    Ok(())
}

/// One page request: routed like `find_fault_handler`, kept as a partial, delivered to a
/// keeper, queued for SVA work, handled inline, or answered Invalid on the bad path.
#[allow(clippy::too_many_arguments, reason = "one request's fields")]
fn report(
    m: &mut Model,
    sys: &mut System,
    dev: usize,
    pasid: u32,
    pv: bool,
    grpid: u32,
    addr_ok: bool,
    last: bool,
) -> Result<(), TestCaseError> {
    let req = PageRequest {
        flags: if pv { PV } else { 0 } | if last { LAST } else { 0 },
        pasid,
        grpid,
        perm: IOMMU_FAULT_PERM_READ,
        addr: if addr_ok {
            0x1000
        } else {
            FAULT_LIMIT + 0x1000
        },
    };
    let g = Model::group_of(dev);
    let key = if pv { pasid } else { 0 };
    let route = if m.removed[dev] {
        None
    } else {
        m.slots.get(&(g, key)).cloned()
    };
    let route = route.filter(|o| matches!(o, Owner::Sva { .. } | Owner::Plain { dom: 0 | 1, .. }));
    let kept_before: Vec<usize> = sys
        .keepers
        .iter()
        .map(|k| k.groups.lock().unwrap().len())
        .collect();
    let res = report_device_fault(&sys.devs[dev], req);
    let (Some(owner), Some(param)) = (route, m.params[dev].as_mut()) else {
        prop_assert_eq!(
            res.map_err(|e| e.errno_name()),
            Err("EINVAL"),
            "unrouted request"
        );
        m.respond(sys, dev, pasid, grpid, PageResponseCode::Invalid);
        *m.refused.entry(grpid).or_default() += 1;
        return Ok(());
    };
    prop_assert!(res.is_ok(), "routed request refused: {:?}", res);
    if !last {
        param.partials.push((grpid, addr_ok, pv));
        return Ok(());
    }
    let mut ok = addr_ok && pv;
    param.partials.retain(|&(g, a, v)| {
        if g == grpid {
            ok &= a && v;
        }
        g != grpid
    });
    let (generation, queued) = (param.generation, param.queued);
    m.routed.insert(grpid);
    match owner {
        Owner::Plain { dom, handle } => {
            let held = sys.keepers[dom].groups.lock().unwrap();
            prop_assert_eq!(held.len(), kept_before[dom] + 1);
            let got = held.last().unwrap();
            // No delivery to anyone but the attachment the model says owns the slot.
            prop_assert!(
                got.attachment().is_handle(&handle),
                "group delivered to a stale attachment"
            );
            prop_assert_eq!(got.last().grpid, grpid);
            drop(held);
            m.kept[dom].push(Kept { dev, pasid, grpid });
        }
        Owner::Sva { bond, .. } => {
            if queued && !m.queue_shut {
                m.queue.push_back(Work {
                    dev,
                    generation,
                    pasid,
                    grpid,
                    ok,
                    bond,
                });
            } else {
                let code = if ok {
                    PageResponseCode::Success
                } else {
                    PageResponseCode::Invalid
                };
                m.respond(sys, dev, pasid, grpid, code);
            }
        }
    }
    Ok(())
}

/// Tears a case down: answers everything held, unbinds every bond, shuts the queue; then every
/// group reported with its last request has exactly one response.
fn finish(mut m: Model, mut sys: System) -> Result<(), TestCaseError> {
    for (k, keeper) in sys.keepers.iter().enumerate() {
        let held = std::mem::take(&mut *keeper.groups.lock().unwrap());
        for (group, kept) in held.into_iter().zip(std::mem::take(&mut m.kept[k])) {
            drop(group);
            m.respond(
                &sys,
                kept.dev,
                kept.pasid,
                kept.grpid,
                PageResponseCode::Invalid,
            );
        }
    }
    while !sys.bonds.is_empty() {
        step(&mut m, &mut sys, &Op::Unbind { pick: 0 })?;
    }
    step(&mut m, &mut sys, &Op::ShutdownQueue)?;
    check_invariants(&m, &sys)?;
    prop_assert_eq!(sys.queue.pending(), 0);
    // Exactly one response per group a handler took, plus one per request the bad path refused.
    let mut per_group: BTreeMap<u32, usize> = BTreeMap::new();
    for (_, r) in sys.mock.responses() {
        *per_group.entry(r.grpid).or_default() += 1;
    }
    for (g, n) in per_group {
        let want = usize::from(m.routed.contains(&g)) + m.refused.get(&g).copied().unwrap_or(0);
        prop_assert_eq!(n, want, "responses for group {}", g);
    }
    for g in &m.routed {
        prop_assert!(
            sys.mock.responses().iter().any(|(_, r)| r.grpid == *g),
            "group {} never answered",
            g
        );
    }
    Ok(())
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut sys = System::new();
    let mut m = Model::new();
    for op in ops {
        step(&mut m, &mut sys, op)?;
        check_invariants(&m, &sys)?;
    }
    finish(m, sys)
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
    fn core_operations_match_the_reference_model(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops)?;
    }
}

/// Found by the fuzzer: SVA work queued for a device whose fault reporting was then disabled
/// ran after the bond's unbind returned (unbind's flush found no fault state and returned at
/// once; the queue ran the work later). `iopf_disable` now runs the device's queued work first.
#[test]
fn queued_sva_work_never_runs_after_unbind_when_iopf_was_disabled_first() {
    let sys = System::new();
    let bond = sva_bind_device(&sys.devs[0], &sys.mms[0]).unwrap();
    iopf_queue_add_device(&sys.queue, &sys.devs[0]).unwrap();
    let req = PageRequest {
        flags: PV | LAST,
        pasid: bond.pasid(),
        grpid: 1,
        perm: IOMMU_FAULT_PERM_READ,
        addr: 0x1000,
    };
    report_device_fault(&sys.devs[0], req).unwrap();
    assert_eq!(sys.queue.pending(), 1);
    iopf_disable(&sys.devs[0]).unwrap();
    bond.unbind();
    assert_eq!(
        sys.queue.pending(),
        0,
        "work left to run after unbind returned"
    );
    let codes: Vec<_> = sys
        .mock
        .responses()
        .iter()
        .map(|(_, r)| (r.grpid, r.code))
        .collect();
    assert_eq!(codes, [(1, PageResponseCode::Success)]);
}

/// Found by the fuzzer: after a replace displaced an SVA bond and the mm was bound again at the
/// same PASID (sharing the old SVA domain), unbinding the displaced bond detached the new bond
/// (the detach compared domains only), leaving it with two users and no attachment. Unbind now
/// detaches only its own handle.
#[test]
fn unbinding_a_displaced_bond_leaves_the_bond_bound_since_in_place() {
    let sys = System::new();
    let old = sva_bind_device(&sys.devs[0], &sys.mms[0]).unwrap();
    let p = old.pasid();
    replace_device_pasid(&sys.doms[2], &sys.devs[0], p, Tag(1)).unwrap();
    detach_device_pasid(&sys.doms[2], &sys.devs[0], p).unwrap();
    let new = sva_bind_device(&sys.devs[0], &sys.mms[0]).unwrap();
    assert_eq!(new.pasid(), p);
    old.unbind();
    let h = attach_handle_get::<SvaHandleData>(&sys.groups[0], p).expect("the new bond stays");
    assert_eq!(h.data().users(), 1);
    let err = attach_device_pasid(&sys.doms[0], &sys.devs[0], p, Tag(2)).unwrap_err();
    assert_eq!(err.errno_name(), "EBUSY");
    new.unbind();
    assert!(attach_handle_get::<SvaHandleData>(&sys.groups[0], p).is_err());
    assert_eq!(sys.mock.contract_violations(), Vec::<String>::new());
}
