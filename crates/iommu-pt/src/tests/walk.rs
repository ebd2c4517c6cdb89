//! The walker: accessed/dirty bits and the fault kind and level of each denied access.

use super::*;

#[test]
fn read_walk_sets_accessed_on_every_level_and_not_dirty() {
    let mem = ArenaTableMem::new(8).unwrap();
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(0x40_0000, PhysAddr(0x9000), K4, Perms::READ_WRITE)
        .unwrap();
    assert!(path(&pt, 0x40_0000).iter().all(|pte| pte & fs::A == 0));

    let t = pt.walk(0x40_0010, Access::READ).unwrap();

    assert_eq!(
        t,
        Translation {
            pa: PhysAddr(0x9010),
            size: PageSize::Size4K,
            perms: Perms::READ_WRITE
        }
    );
    let entries = path(&pt, 0x40_0000);
    assert_eq!(entries.len(), 4);
    assert!(entries.iter().all(|pte| pte & fs::A != 0));
    assert!(entries.iter().all(|pte| pte & fs::D == 0));
}

#[test]
fn write_walk_sets_dirty_on_the_leaf_only() {
    let mem = ArenaTableMem::new(8).unwrap();
    let mut pt = PageTable::<SecondStage, _>::new(&mem).unwrap();
    pt.map(M2, PhysAddr(G1), M2, Perms::READ_WRITE).unwrap();

    pt.walk(M2 + 0x10, Access::WRITE).unwrap();

    let entries = path(&pt, M2);
    assert_eq!(entries.len(), 3, "2 MiB leaf at level 1");
    assert!(entries.iter().all(|pte| pte & ss::A != 0));
    assert_eq!(entries.iter().filter(|&&pte| pte & ss::D != 0).count(), 1);
    assert!(entries[2] & ss::D != 0);
}

#[test]
fn denied_access_sets_no_accessed_or_dirty_bit_on_the_leaf() {
    let mem = ArenaTableMem::new(8).unwrap();
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(0, PhysAddr(0x9000), K4, Perms::READ).unwrap();

    let fault = pt.walk(0x10, Access::WRITE).unwrap_err();

    assert_eq!(
        fault,
        WalkFault {
            kind: FaultKind::NotWritable,
            level: 0,
            va: 0x10
        }
    );
    let leaf = *path(&pt, 0).last().unwrap();
    assert_eq!(leaf & (fs::A | fs::D), 0);
}

#[test]
fn user_access_to_supervisor_page_faults() {
    let mem = ArenaTableMem::new(8).unwrap();
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(0, PhysAddr(M2), M2, Perms::READ_WRITE).unwrap();

    let fault = pt.walk(0, Access::READ.user()).unwrap_err();

    assert_eq!(
        fault,
        WalkFault {
            kind: FaultKind::SupervisorOnly,
            level: 1,
            va: 0
        }
    );
}

#[test]
fn fetch_from_no_execute_page_faults_and_executable_user_page_translates() {
    let mem = ArenaTableMem::new(8).unwrap();
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(0, PhysAddr(0x9000), K4, Perms::READ).unwrap();
    pt.map(
        K4,
        PhysAddr(0xa000),
        K4,
        Perms::READ.with_exec().with_user(),
    )
    .unwrap();

    let nx = pt.walk(0, Access::EXEC).unwrap_err();
    let ok = pt.walk(K4, Access::EXEC.user()).unwrap();

    assert_eq!(nx.kind, FaultKind::NotExecutable);
    assert_eq!(ok.pa, PhysAddr(0xa000));
}

#[test]
fn second_stage_read_of_write_only_page_faults() {
    let mem = ArenaTableMem::new(8).unwrap();
    let mut pt = PageTable::<SecondStage, _>::new(&mem).unwrap();
    let write_only = Perms {
        read: false,
        write: true,
        exec: false,
        user: false,
    };
    pt.map(0, PhysAddr(0x9000), K4, write_only).unwrap();

    let read = pt.walk(0, Access::READ).unwrap_err();
    let write = pt.walk(0, Access::WRITE.user()).unwrap();

    assert_eq!(read.kind, FaultKind::NotReadable);
    assert_eq!(write.pa, PhysAddr(0x9000));
}

#[test]
fn not_present_fault_reports_the_level_where_the_walk_stopped() {
    let mem = ArenaTableMem::new(8).unwrap();
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(0, PhysAddr(0x9000), K4, Perms::READ).unwrap();

    let empty_root = pt.walk(1 << 40, Access::READ).unwrap_err();
    let empty_pd = pt.walk(G1 / 2, Access::READ).unwrap_err();
    let empty_pt = pt.walk(K4, Access::READ).unwrap_err();
    let non_canonical = pt.walk(1 << 47, Access::READ).unwrap_err();

    assert_eq!(
        (empty_root.kind, empty_root.level),
        (FaultKind::NotPresent, 3)
    );
    assert_eq!((empty_pd.kind, empty_pd.level), (FaultKind::NotPresent, 1));
    assert_eq!((empty_pt.kind, empty_pt.level), (FaultKind::NotPresent, 0));
    assert_eq!(non_canonical.kind, FaultKind::NonCanonical);
}

#[test]
fn walk_through_a_corrupt_entry_reports_bad_table() {
    let mem = ArenaTableMem::new(8).unwrap();
    let pt = Fs4::new(&mem).unwrap();
    mem.table(pt.root()).unwrap().store(0, 0x5000 | fs::P);

    let fault = pt.walk(0, Access::READ).unwrap_err();

    assert_eq!((fault.kind, fault.level), (FaultKind::BadTable, 2));
}

/// A walk resumed at the last-level table a caching walk reached gives the full walk's answer
/// for every address below that table: translations, permission combination (a read-only
/// page, a supervisor-only page), faults of pages not present; and nothing is cached for a
/// fault above the last level or for a large leaf.
#[test]
fn a_walk_resumed_at_the_cached_last_level_table_agrees_with_the_full_walk() {
    let mem = ArenaTableMem::new(16).unwrap();
    let mut pt = Fs4::new(&mem).unwrap();
    let base = 0x7f00_0040_0000u64;
    pt.map(base, PhysAddr(0x10_0000), K4, Perms::READ_WRITE.with_user())
        .unwrap();
    pt.map(base + K4, PhysAddr(0x20_0000), K4, Perms::READ.with_user())
        .unwrap();
    pt.map(base + 2 * K4, PhysAddr(0x30_0000), K4, Perms::READ_WRITE)
        .unwrap();
    pt.map(G1, PhysAddr(G1), M2, Perms::READ_WRITE.with_user())
        .unwrap();

    // The directory entry above the pages grants less than the table flags: no write, no
    // user access, no execution. The resumed walk must carry that down to the leaf.
    let lin = FirstStage4::to_linear(base).unwrap();
    let mut pfn = pt.root();
    for level in (2..FirstStage4::LEVELS).rev() {
        pfn = FirstStage4::table_pfn(mem.table(pfn).unwrap().load(format::index(lin, level)));
    }
    let pde = mem.table(pfn).unwrap();
    let idx = format::index(lin, 1);
    pde.store(idx, (pde.load(idx) & !(fs::W | fs::US)) | fs::XD);

    // A page not present below an existing last-level table: the table is still cached.
    let mut cached = None;
    let miss = walk_caching::<FirstStage4, _>(&&mem, pt.root(), base + 5 * K4, Access::READ, |t| {
        cached = Some(t)
    });
    assert_eq!(miss.unwrap_err().kind, FaultKind::NotPresent);
    let at = cached.expect("the walk reached the last-level table");

    for page in 0..8 {
        let va = base + page * K4 + 0x18;
        for access in [
            Access::READ,
            Access::WRITE,
            Access::READ.user(),
            Access::WRITE.user(),
            Access::EXEC,
        ] {
            let full = pt.walk(va, access);
            let resumed = walk_leaf_table::<FirstStage4, _>(&&mem, at, va, access);
            assert_eq!(resumed, full, "page {page}, {access:?}");
        }
    }
    assert_eq!(
        pt.walk(base + 0x18, Access::READ).unwrap().perms,
        Perms::READ,
        "the directory entry's restriction applies"
    );

    // A fault above the last level, and a 2 MiB leaf: nothing to cache.
    for va in [base + G1, G1 + 0x1234] {
        let mut cached = None;
        let _ = walk_caching::<FirstStage4, _>(&&mem, pt.root(), va, Access::READ, |t| {
            cached = Some(t)
        });
        assert_eq!(cached, None, "{va:#x}");
    }
    // A non-canonical address is refused by the resumed walk too.
    let bad = 0x0000_8000_0000_0000;
    assert_eq!(
        walk_leaf_table::<FirstStage4, _>(&&mem, at, bad, Access::READ)
            .unwrap_err()
            .kind,
        FaultKind::NonCanonical
    );
}
