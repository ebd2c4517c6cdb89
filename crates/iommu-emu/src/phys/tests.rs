use super::*;
use vm_memory::GuestMemoryBackend;

#[test]
fn frames_are_zeroed_and_exhaustion_is_enomem() {
    let mem = PhysMem::new(2).unwrap();
    let a = mem.alloc_frame().unwrap();
    mem.write(a.addr(), &[0xab; 4096]).unwrap();
    mem.free_frame(a).unwrap();
    let b = mem.alloc_frame().unwrap();
    let _c = mem.alloc_frame().unwrap();
    let mut buf = [1u8; 4096];
    mem.read(b.addr(), &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
    assert_eq!(mem.alloc_frame().unwrap_err().errno_name(), "ENOMEM");
}

#[test]
fn unaligned_writes_keep_neighbouring_bytes() {
    let mem = PhysMem::new(2).unwrap();
    let f = mem.alloc_frame().unwrap();
    let g = mem.alloc_frame().unwrap();
    assert_eq!(g.0, f.0 + 1, "frames are consecutive");
    mem.fill(f.addr(), 8192, 0x11).unwrap();
    let data: Vec<u8> = (0..37u8).collect();
    let at = PhysAddr(f.addr().0 + 4090);
    mem.write(at, &data).unwrap();
    let mut back = vec![0u8; 41];
    mem.read(PhysAddr(at.0 - 2), &mut back).unwrap();
    assert_eq!(&back[..2], &[0x11, 0x11]);
    assert_eq!(&back[2..39], &data[..]);
    assert_eq!(&back[39..], &[0x11, 0x11]);
}

#[test]
fn fills_of_every_size_write_their_own_byte_whatever_was_filled_before() {
    // The fill keeps a page of the last byte per thread: a change of byte must rebuild it,
    // and a zero fill must not use it.
    let mem = PhysMem::new(3).unwrap();
    let f = mem.alloc_frame().unwrap();
    let _ = (mem.alloc_frame().unwrap(), mem.alloc_frame().unwrap());
    let base = f.addr().0;
    let steps: [(u64, usize, u8); 6] = [
        (0, 3 * 4096, 0x11),
        (100, 5000, 0x22),
        (7, 40, 0x33),
        (4096, 4096, 0),
        (1, 9000, 0x22),
        (8192, 64, 0x44),
    ];
    let mut model = vec![0u8; 3 * 4096];
    for (off, len, byte) in steps {
        mem.fill(PhysAddr(base + off), len, byte).unwrap();
        model[off as usize..off as usize + len].fill(byte);
        let mut back = vec![0xeeu8; 3 * 4096];
        mem.read(f.addr(), &mut back).unwrap();
        assert!(
            back == model,
            "after filling {len} bytes of {byte:#x} at {off}"
        );
    }
}

#[test]
fn access_outside_memory_is_efault_and_changes_nothing() {
    let mem = PhysMem::new(1).unwrap();
    let f = mem.alloc_frame().unwrap();
    let err = mem
        .write(PhysAddr(f.addr().0 + 4000), &[7; 200])
        .unwrap_err();
    assert_eq!(err.errno_name(), "EFAULT");
    let mut b = [9u8; 96];
    mem.read(PhysAddr(f.addr().0 + 4000), &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    assert_eq!(
        mem.read(PhysAddr(f.addr().0 - 1), &mut b)
            .unwrap_err()
            .errno_name(),
        "EFAULT"
    );
}

#[test]
fn guest_memory_addresses_are_physical_addresses() {
    let mem = PhysMem::new(4).unwrap();
    let f = mem.alloc_frame().unwrap();

    mem.write(PhysAddr(f.addr().0 + 8), b"shared").unwrap();

    let gm = mem.guest_memory();
    assert_eq!(gm.num_regions(), 1);
    let mut back = [0u8; 6];
    gm.read_slice(&mut back, GuestAddress(f.addr().0 + 8))
        .unwrap();
    assert_eq!(&back, b"shared");
}

#[test]
fn table_entries_are_atomic_words_of_the_frame() {
    let mem = PhysMem::new(2).unwrap();
    let f = mem.alloc_table().unwrap();
    let t = mem.table(f).unwrap();

    t.store(3, 0x1234_5000);

    assert_eq!(t.compare_exchange(3, 0x1234_5000, 7), Ok(0x1234_5000));
    assert_eq!(t.compare_exchange(3, 0, 9), Err(7));
    let mut word = [0u8; 8];
    mem.read(PhysAddr(f.addr().0 + 24), &mut word).unwrap();
    assert_eq!(u64::from_le_bytes(word), 7);
    assert!(mem.table(Pfn(f.0 + 2)).is_none());
    assert!(mem.table(Pfn(0)).is_none());
}

#[test]
fn double_and_foreign_frees_are_einval_and_change_nothing() {
    let mem = PhysMem::new(2).unwrap();
    let f = mem.alloc_frame().unwrap();
    mem.free_frame(f).unwrap();
    assert_eq!(mem.free_frame(f).unwrap_err().errno_name(), "EINVAL");
    assert_eq!(mem.free_frame(Pfn(7)).unwrap_err().errno_name(), "EINVAL");
    assert_eq!(mem.frames_in_use(), 0);
}

#[test]
fn too_many_frames_is_einval() {
    assert_eq!(PhysMem::new(usize::MAX).unwrap_err().errno_name(), "EINVAL");
}

#[test]
fn an_empty_memory_hands_out_nothing() {
    let mem = PhysMem::new(0).unwrap();
    assert_eq!(mem.alloc_frame().unwrap_err().errno_name(), "ENOMEM");
    assert!(mem.table(ArenaTableMem::DEFAULT_BASE).is_none());
}

#[test]
fn frames_released_together_come_back_lowest_first_and_zeroed() {
    for zeroing in [Zeroing::OnAlloc, Zeroing::OnFree] {
        let m = PhysMem::with_zeroing(8, zeroing).unwrap();
        let frames: Vec<Pfn> = (0..6).map(|_| m.alloc_frame().unwrap()).collect();
        for f in &frames {
            m.fill(f.addr(), 4096, 0xa5).unwrap();
        }
        // Released in a scrambled order (as a range whose frames were handed out downwards).
        let released = vec![
            frames[3], frames[0], frames[5], frames[1], frames[4], frames[2],
        ];

        m.release_frames(released);

        let again: Vec<Pfn> = (0..6).map(|_| m.alloc_frame().unwrap()).collect();
        assert_eq!(
            again, frames,
            "{zeroing:?}: lowest first, in ascending order"
        );
        for f in &again {
            let mut page = [1u8; 4096];
            m.read(f.addr(), &mut page).unwrap();
            assert!(
                page.iter().all(|&b| b == 0),
                "{zeroing:?}: a reused frame is zero"
            );
        }
    }
}

/// Backing more memory than the host has available is refused before a frame is touched (it
/// used to get the process killed by the out-of-memory killer); what fits is backed. The
/// refusal is tested on the check itself: a memory just above what is free could fit a moment
/// later, when other tests free theirs, and would then be backed whole.
#[test]
fn prefault_refuses_more_memory_than_the_host_has() {
    let small = PhysMem::new(16).unwrap();
    small.prefault().unwrap();
    assert!(host::memory_available().is_some_and(|a| a.bytes() > 0));
    assert!(backable(4096, Some(4096)));
    assert!(!backable(8192, Some(4096)));
    assert!(backable(u64::MAX, None));
    // A memory far larger than any host here (1 TiB, reserved but never touched) is refused.
    let huge = PhysMem::new(PhysMem::MAX_FRAMES).unwrap();
    if host::memory_available().is_some_and(|a| a.bytes() < huge.capacity() as u64 * PAGE_SIZE) {
        assert_eq!(huge.prefault().unwrap_err().errno_name(), "ENOMEM");
    }
}
