//! [`InvertDevice`]: a small virtio device built on virtio-queue's split [`Queue`], whose
//! every access goes through whatever [`GuestMemory`] it is given — here an `IommuMemory` over
//! an [`AtsIommu`](crate::AtsIommu), so descriptors, rings and buffers are IOVAs.
//!
//! For each descriptor chain it reads the device-readable buffers, writes their bytes
//! inverted (`!b`) into the device-writable buffers followed by the 8-byte FNV-1a checksum of
//! the input (little endian), and adds the chain to the used ring with the length written.
//! Simple enough to verify byte by byte, and it touches every kind of memory a virtio device
//! touches: the available ring (read), the descriptor table (read), readable and writable
//! buffers, the used ring (written).

use std::fmt;
use std::sync::atomic::Ordering;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError};

/// The largest chain input the device accepts (it buffers the input to checksum it).
pub const MAX_CHAIN_INPUT: u32 = 1 << 20;

/// FNV-1a over `data`: the checksum the device appends.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Why the device stopped.
#[derive(Debug)]
pub enum DeviceError {
    /// A chain is malformed: no readable or no writable buffer, a readable buffer after a
    /// writable one, too much input, or too little room for the output. virtio-queue ends a
    /// chain quietly when a descriptor cannot be read, so a translation failure while
    /// walking the chain shows up here too.
    BadChain {
        /// The chain's head descriptor.
        head: u16,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A buffer could not be read or written (the IOMMU refused the translation).
    Memory {
        /// The chain's head descriptor.
        head: u16,
        /// vm-memory's error (an `IommuError` for a failed translation).
        err: GuestMemoryError,
    },
    /// The queue could not be used: not ready, rings unreadable, bad available index.
    Queue(virtio_queue::Error),
    /// Fewer chains were read from the available ring than it announced (an entry of the ring
    /// could not be read: virtio-queue ends the iteration quietly then).
    AvailRing {
        /// Chains announced.
        announced: u16,
        /// Chains read.
        read: u16,
    },
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadChain { head, why } => write!(f, "chain {head}: {why}"),
            Self::Memory { head, err } => write!(f, "chain {head}: {err}"),
            Self::Queue(e) => write!(f, "queue: {e}"),
            Self::AvailRing { announced, read } => write!(
                f,
                "available ring announced {announced} chains, {read} could be read"
            ),
        }
    }
}

impl std::error::Error for DeviceError {}

/// What one [`InvertDevice::process`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Processed {
    /// Chains completed (added to the used ring).
    pub chains: u64,
    /// Bytes read from readable buffers.
    pub bytes_in: u64,
    /// Bytes written to writable buffers (input plus checksums).
    pub bytes_out: u64,
}

/// The device: one split virtqueue.
#[derive(Debug)]
pub struct InvertDevice {
    queue: Queue,
}

impl InvertDevice {
    /// A device whose queue of `size` entries (a power of two, at most 32,768) has its
    /// descriptor table, available ring and used ring at these addresses (IOVAs of the memory
    /// [`InvertDevice::process`] gets), and is ready. virtio-queue's errors for a bad size or
    /// misaligned rings.
    pub fn new(
        size: u16,
        desc_table: u64,
        avail_ring: u64,
        used_ring: u64,
    ) -> Result<InvertDevice, DeviceError> {
        let mut queue = Queue::new(size).map_err(DeviceError::Queue)?;
        queue
            .try_set_desc_table_address(GuestAddress(desc_table))
            .map_err(DeviceError::Queue)?;
        queue
            .try_set_avail_ring_address(GuestAddress(avail_ring))
            .map_err(DeviceError::Queue)?;
        queue
            .try_set_used_ring_address(GuestAddress(used_ring))
            .map_err(DeviceError::Queue)?;
        queue.set_ready(true);
        Ok(InvertDevice { queue })
    }

    /// The queue (its indices, for checks).
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Processes every chain the driver has made available, through `mem`. Stops at the first
    /// error; chains completed before it stay in the used ring.
    pub fn process<M: GuestMemory>(&mut self, mem: &M) -> Result<Processed, DeviceError> {
        let announced = self
            .queue
            .avail_idx(mem, Ordering::Acquire)
            .map_err(DeviceError::Queue)?;
        let start = self.queue.next_avail();
        let chains: Vec<_> = self.queue.iter(mem).map_err(DeviceError::Queue)?.collect();
        let read = self.queue.next_avail().wrapping_sub(start);
        let expected = announced.0.wrapping_sub(start);
        if read != expected {
            return Err(DeviceError::AvailRing {
                announced: expected,
                read,
            });
        }
        let mut done = Processed::default();
        for chain in chains {
            let head = chain.head_index();
            let (bytes_in, bytes_out) = invert_chain(mem, chain)?;
            self.queue
                .add_used(mem, head, bytes_out)
                .map_err(DeviceError::Queue)?;
            done.chains += 1;
            done.bytes_in += u64::from(bytes_in);
            done.bytes_out += u64::from(bytes_out);
        }
        Ok(done)
    }
}

/// One chain: reads the readable buffers, writes the inverted bytes and the checksum into the
/// writable ones. Returns (bytes read, bytes written).
fn invert_chain<M: GuestMemory>(
    mem: &M,
    chain: DescriptorChain<&M>,
) -> Result<(u32, u32), DeviceError> {
    let head = chain.head_index();
    let bad = |why| DeviceError::BadChain { head, why };
    let mem_err = |err| DeviceError::Memory { head, err };
    let mut input = Vec::new();
    let mut out_descs = Vec::new();
    for desc in chain {
        if desc.is_write_only() {
            out_descs.push((desc.addr(), desc.len()));
            continue;
        }
        if !out_descs.is_empty() {
            return Err(bad("readable buffer after a writable one"));
        }
        if input.len() as u64 + u64::from(desc.len()) > u64::from(MAX_CHAIN_INPUT) {
            return Err(bad("input larger than the device accepts"));
        }
        let at = input.len();
        input.resize(at + desc.len() as usize, 0);
        mem.read_slice(&mut input[at..], desc.addr())
            .map_err(mem_err)?;
    }
    if input.is_empty() || out_descs.is_empty() {
        return Err(bad("needs readable and writable buffers"));
    }
    let mut output: Vec<u8> = input.iter().map(|b| !b).collect();
    output.extend_from_slice(&fnv1a(&input).to_le_bytes());
    let mut off = 0usize;
    for (addr, len) in out_descs {
        if off == output.len() {
            break;
        }
        let n = (len as usize).min(output.len() - off);
        mem.write_slice(&output[off..off + n], addr)
            .map_err(mem_err)?;
        off += n;
    }
    if off != output.len() {
        return Err(bad("writable buffers too small for the output"));
    }
    // Both fit in u32: input is bounded by MAX_CHAIN_INPUT.
    Ok((input.len() as u32, output.len() as u32))
}
