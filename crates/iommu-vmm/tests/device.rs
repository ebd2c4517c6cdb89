//! The virtio device and its driver on bare guest memory (no IOMMU): the queue logic on its
//! own, so a failure in the IOMMU tests is not a device bug.

use iommu_vmm::{DeviceError, Driver, DriverMemory, RingLayout};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

struct Bare(GuestMemoryMmap);

impl DriverMemory for Bare {
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), String> {
        self.0
            .write_slice(data, GuestAddress(addr))
            .map_err(|e| e.to_string())
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), String> {
        self.0
            .read_slice(buf, GuestAddress(addr))
            .map_err(|e| e.to_string())
    }
}

fn bare() -> Bare {
    Bare(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap())
}

#[test]
fn device_inverts_every_chain_and_the_driver_verifies_every_byte() {
    let mem = bare();
    let layout = RingLayout::new(0x1000, 5, 4099).unwrap();
    let driver = Driver::new(layout);
    driver.publish(&mem).unwrap();
    let mut dev = layout.program().unwrap();

    let done = dev.process(&mem.0).unwrap();
    let v = driver.verify(&mem).unwrap();

    assert_eq!(
        (done.chains, done.bytes_in, done.bytes_out),
        (5, 5 * 4099, 5 * 4107)
    );
    assert_eq!((v.chains, v.bytes_ok, v.bytes_bad), (5, 5 * 4107, 0));
    assert_eq!(
        dev.process(&mem.0).unwrap().chains,
        0,
        "nothing new available"
    );
}

#[test]
fn a_chain_without_writable_buffers_is_a_bad_chain() {
    let mem = bare();
    let layout = RingLayout::new(0x1000, 1, 64).unwrap();
    Driver::new(layout).publish(&mem).unwrap();
    // Clear the WRITE flag of the chain's last two descriptors (flags at byte 12 of each).
    mem.write(layout.desc_table + 2 * 16 + 12, &1u16.to_le_bytes())
        .unwrap();
    mem.write(layout.desc_table + 3 * 16 + 12, &0u16.to_le_bytes())
        .unwrap();
    let mut dev = layout.program().unwrap();

    let err = dev.process(&mem.0).unwrap_err();

    assert!(
        matches!(err, DeviceError::BadChain { head: 0, .. }),
        "{err}"
    );
}

#[test]
fn ring_layout_rejects_bad_parameters() {
    assert!(RingLayout::new(0x1000, 0, 64).is_err());
    assert!(RingLayout::new(0x1000, 1, 1).is_err());
    assert!(RingLayout::new(0x1001, 1, 64).is_err());
    assert!(RingLayout::new(!0xfff, 64, 4096).is_err());
}
