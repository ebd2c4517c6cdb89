//! The peer's contract: map, translate and unmap at both sizes, every input error, running
//! out of frames, and dropping with mappings alive.

use super::*;

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
const BASE: u64 = 0x40_0000_0000;
const DATA: u64 = 0x1_0000_0000;

#[test]
fn map_translate_unmap_4k() {
    let mut p = X86Peer::new(8).unwrap();
    assert_eq!(p.frames_used(), 1);
    p.map_4k(BASE, DATA).unwrap();
    p.map_4k(BASE + K4, DATA + 7 * K4).unwrap();
    assert_eq!(p.frames_used(), 4, "root + PDPT + PD + PT");
    assert_eq!(p.translate(BASE + 0x123), Some(DATA + 0x123));
    assert_eq!(p.translate(BASE + K4 + 5), Some(DATA + 7 * K4 + 5));
    assert_eq!(p.translate(BASE + 2 * K4), None);
    assert_eq!(
        p.map_4k(BASE, DATA),
        Err(PeerError::AlreadyMapped { va: BASE })
    );
    assert_eq!(p.unmap_4k(BASE), Ok(DATA));
    assert_eq!(p.translate(BASE), None);
    assert_eq!(p.unmap_4k(BASE), Err(PeerError::NotMapped { va: BASE }));
    assert_eq!(p.unmap_4k(BASE + K4), Ok(DATA + 7 * K4));
    // Steady state: remapping reuses the tables.
    p.map_4k(BASE, DATA).unwrap();
    assert_eq!(p.frames_used(), 4);
}

#[test]
fn map_translate_unmap_2m() {
    let mut p = X86Peer::new(8).unwrap();
    p.map_2m(BASE, DATA).unwrap();
    assert_eq!(p.frames_used(), 3, "root + PDPT + PD, no PT");
    assert_eq!(p.translate(BASE + M2 - 1), Some(DATA + M2 - 1));
    assert_eq!(p.translate(BASE + M2), None);
    assert_eq!(
        p.map_4k(BASE + K4, DATA),
        Err(PeerError::SizeConflict { va: BASE + K4 })
    );
    assert_eq!(p.unmap_4k(BASE), Err(PeerError::SizeConflict { va: BASE }));
    assert_eq!(
        p.map_2m(BASE, DATA),
        Err(PeerError::AlreadyMapped { va: BASE })
    );
    assert_eq!(p.unmap_2m(BASE), Ok(DATA));
    assert_eq!(p.translate(BASE), None);
    assert_eq!(p.unmap_2m(BASE), Err(PeerError::NotMapped { va: BASE }));
    // A 4 KiB table in a slot blocks a 2 MiB leaf there, even once emptied.
    p.map_4k(BASE + M2, DATA).unwrap();
    assert_eq!(
        p.unmap_2m(BASE + M2),
        Err(PeerError::SizeConflict { va: BASE + M2 })
    );
    p.unmap_4k(BASE + M2).unwrap();
    assert_eq!(
        p.map_2m(BASE + M2, DATA),
        Err(PeerError::AlreadyMapped { va: BASE + M2 })
    );
}

#[test]
fn misaligned_and_out_of_range_input_errors() {
    let mut p = X86Peer::new(8).unwrap();
    assert_eq!(
        p.map_4k(BASE + 1, DATA),
        Err(PeerError::MisalignedVirt {
            va: BASE + 1,
            align: K4
        })
    );
    assert_eq!(
        p.map_4k(BASE, DATA + 8),
        Err(PeerError::MisalignedPhys {
            pa: DATA + 8,
            align: K4
        })
    );
    assert_eq!(
        p.map_2m(BASE + K4, DATA),
        Err(PeerError::MisalignedVirt {
            va: BASE + K4,
            align: M2
        })
    );
    assert_eq!(
        p.map_2m(BASE, DATA + K4),
        Err(PeerError::MisalignedPhys {
            pa: DATA + K4,
            align: M2
        })
    );
    assert_eq!(
        p.unmap_4k(BASE + 3),
        Err(PeerError::MisalignedVirt {
            va: BASE + 3,
            align: K4
        })
    );
    assert_eq!(
        p.unmap_2m(BASE + K4),
        Err(PeerError::MisalignedVirt {
            va: BASE + K4,
            align: M2
        })
    );
    let bad = 0x0000_8000_0000_0000;
    assert_eq!(
        p.map_4k(bad, DATA),
        Err(PeerError::NonCanonical { va: bad })
    );
    assert_eq!(p.unmap_2m(bad), Err(PeerError::NonCanonical { va: bad }));
    assert_eq!(p.translate(bad), None);
    assert_eq!(
        p.map_4k(BASE, 1 << 52),
        Err(PeerError::PhysOutOfRange { pa: 1 << 52 })
    );
    assert_eq!(p.frames_used(), 1, "nothing was built for bad input");
    assert_eq!(X86Peer::new(0).unwrap_err(), PeerError::ZeroFrames);
    // Errors display.
    assert!(PeerError::OutOfFrames.to_string().contains("frames"));
    // Higher-half addresses are canonical and work.
    let high = 0xffff_8000_0000_0000;
    p.map_4k(high, DATA).unwrap();
    assert_eq!(p.translate(high + 1), Some(DATA + 1));
}

#[test]
fn running_out_of_frames_errors() {
    let mut p = X86Peer::new(3).unwrap();
    assert_eq!(p.map_4k(BASE, DATA), Err(PeerError::OutOfFrames));
    assert_eq!(
        p.frames_used(),
        3,
        "the PDPT and PD made before running out stay"
    );
    assert_eq!(p.translate(BASE), None);
    // A 2 MiB leaf needs no more tables than those.
    p.map_2m(BASE + M2, DATA).unwrap();
    assert_eq!(p.translate(BASE + M2 + 9), Some(DATA + 9));
    assert_eq!(p.map_4k(BASE, DATA), Err(PeerError::OutOfFrames));
    let mut one = X86Peer::new(1).unwrap();
    assert_eq!(one.map_2m(BASE, DATA), Err(PeerError::OutOfFrames));
    assert_eq!(one.translate(BASE), None);
}

#[test]
fn drop_with_mappings_alive() {
    let mut p = X86Peer::new(64).unwrap();
    for i in 0..16 {
        p.map_4k(BASE + i * M2 / 4, DATA + i * K4).unwrap();
        p.map_2m(BASE + (32 + i) * M2, DATA).unwrap();
    }
    // Map a frame that is one of the peer's own tables: still never dereferenced.
    p.map_4k(BASE + 100 * M2, 0).unwrap();
    let moved = p; // moving the peer does not move the buffer
    assert!(format!("{moved:?}").contains("frames_used"));
    drop(moved);
    // Many peers, some never used: nothing leaks (a leak or a double free here shows under
    // `RUSTFLAGS=-Zsanitizer=address cargo +nightly test -p pt-peer --lib`; miri is not
    // installed on the project's machines).
    for n in 1..8 {
        let mut q = X86Peer::new(n).unwrap();
        let _ = q.map_4k(BASE, DATA);
    }
}
