//! The driver's side of an [`InvertDevice`](crate::InvertDevice) queue: where the split ring
//! and the buffers go ([`RingLayout`]), publishing chains, and checking every byte the device
//! wrote ([`Driver::verify`]).
//!
//! The driver writes and reads with the CPU through [`DriverMemory`]: for SVA a process
//! [`Mm`] (its virtual addresses are the device's IOVAs, the PASID's address space); for an
//! iommufd HWPT the VMM's own view of guest RAM. It never goes through the IOMMU.

use iommu_emu::Mm;
use virtio_queue::desc::split::Descriptor;
use vm_memory::ByteValued;

use crate::device::{fnv1a, DeviceError, InvertDevice};

/// virtio `VIRTQ_DESC_F_NEXT`: the chain continues at `next`.
const DESC_F_NEXT: u16 = 1;
/// virtio `VIRTQ_DESC_F_WRITE`: the buffer is device-writable.
const DESC_F_WRITE: u16 = 2;
const PAGE: u64 = 4096;

/// CPU access to the memory the driver shares with the device, by the device's addresses.
pub trait DriverMemory {
    /// Writes `data` at `addr`.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), String>;
    /// Reads `buf.len()` bytes at `addr`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), String>;
}

impl DriverMemory for Mm {
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), String> {
        Mm::write(self, addr, data).map_err(|e| e.to_string())
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), String> {
        Mm::read(self, addr, buf).map_err(|e| e.to_string())
    }
}

/// Where a queue of `chains` chains, each with `input_len` bytes of input, lives in a region
/// starting at `base`: descriptor table, then the available ring, the used ring on its own
/// page, the inputs back to back, then the outputs back to back. Inputs and outputs are not
/// page aligned, so buffers straddle pages and translations come in several pieces. Each
/// chain is four descriptors: two readable halves of the input, two writable halves of the
/// output (input plus the 8-byte checksum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Start of the region (page aligned).
    pub base: u64,
    /// Chains.
    pub chains: u16,
    /// Input bytes per chain (at least 2).
    pub input_len: u32,
    /// Queue size: a power of two holding four descriptors per chain.
    pub size: u16,
    /// Descriptor table.
    pub desc_table: u64,
    /// Available ring.
    pub avail_ring: u64,
    /// Used ring.
    pub used_ring: u64,
    /// First input.
    pub inputs: u64,
    /// First output.
    pub outputs: u64,
    /// Bytes of the whole region (whole pages).
    pub len: u64,
}

impl RingLayout {
    /// The driver programs the device with this layout's queue (size and ring addresses), as
    /// it would write them to the device's queue registers.
    pub fn program(&self) -> Result<InvertDevice, DeviceError> {
        InvertDevice::new(self.size, self.desc_table, self.avail_ring, self.used_ring)
    }

    /// The layout, or why not: `chains` 1..=8,192 (four descriptors each in a queue of at most
    /// 32,768), `input_len` 2..=`MAX_CHAIN_INPUT`, `base` page aligned.
    pub fn new(base: u64, chains: u16, input_len: u32) -> Result<RingLayout, String> {
        if chains == 0 || chains > 8192 {
            return Err(format!("{chains} chains: 1 to 8,192"));
        }
        if !(2..=crate::device::MAX_CHAIN_INPUT).contains(&input_len) {
            return Err(format!("input of {input_len} bytes: 2 to 1 MiB"));
        }
        if !base.is_multiple_of(PAGE) {
            return Err(format!("base {base:#x} is not page aligned"));
        }
        let size = (4 * u32::from(chains)).next_power_of_two() as u16;
        // Offsets from `base` first (small numbers), then one checked addition.
        let avail = 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size)).next_multiple_of(PAGE);
        let inputs = (used + 6 + 8 * u64::from(size)).next_multiple_of(PAGE);
        let outputs = inputs + u64::from(chains) * u64::from(input_len);
        let len = (outputs + u64::from(chains) * (u64::from(input_len) + 8)).next_multiple_of(PAGE);
        if base.checked_add(len).is_none() {
            return Err(format!("region at {base:#x} of {len:#x} bytes wraps"));
        }
        Ok(RingLayout {
            base,
            chains,
            input_len,
            size,
            desc_table: base,
            avail_ring: base + avail,
            used_ring: base + used,
            inputs: base + inputs,
            outputs: base + outputs,
            len,
        })
    }

    /// Where chain `i`'s input starts.
    pub fn input(&self, i: u16) -> u64 {
        self.inputs + u64::from(i) * u64::from(self.input_len)
    }

    /// Where chain `i`'s output starts.
    pub fn output(&self, i: u16) -> u64 {
        self.outputs + u64::from(i) * (u64::from(self.input_len) + 8)
    }
}

/// The input byte `j` of chain `i`: distinct per chain and per page.
pub fn input_byte(i: u16, j: u32) -> u8 {
    (j as u8) ^ ((j >> 12) as u8).wrapping_mul(31) ^ (i as u8).wrapping_mul(0x5b) ^ 0x3c
}

/// What [`Driver::verify`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verified {
    /// Chains the used ring returned, in order, with the right length.
    pub chains: u64,
    /// Output bytes compared and found right.
    pub bytes_ok: u64,
    /// Output bytes wrong (or not written: counted from chains missing in the used ring).
    pub bytes_bad: u64,
}

/// The driver of one queue laid out by a [`RingLayout`].
#[derive(Debug, Clone, Copy)]
pub struct Driver {
    layout: RingLayout,
}

impl Driver {
    /// A driver for `layout`.
    pub fn new(layout: RingLayout) -> Driver {
        Driver { layout }
    }

    /// The layout.
    pub fn layout(&self) -> &RingLayout {
        &self.layout
    }

    /// Writes every input, every chain's four descriptors and the available ring (all chains
    /// available), and zeroes the used ring's index: the state in which the device is kicked.
    pub fn publish(&self, mem: &impl DriverMemory) -> Result<(), String> {
        let l = &self.layout;
        let half = l.input_len / 2;
        let out_len = l.input_len + 8;
        let out_half = out_len / 2;
        for i in 0..l.chains {
            let input: Vec<u8> = (0..l.input_len).map(|j| input_byte(i, j)).collect();
            mem.write(l.input(i), &input)?;
            let d = 4 * i;
            let descs = [
                Descriptor::new(l.input(i), half, DESC_F_NEXT, d + 1),
                Descriptor::new(
                    l.input(i) + u64::from(half),
                    l.input_len - half,
                    DESC_F_NEXT,
                    d + 2,
                ),
                Descriptor::new(l.output(i), out_half, DESC_F_NEXT | DESC_F_WRITE, d + 3),
                Descriptor::new(
                    l.output(i) + u64::from(out_half),
                    out_len - out_half,
                    DESC_F_WRITE,
                    0,
                ),
            ];
            for (k, desc) in descs.iter().enumerate() {
                mem.write(
                    l.desc_table + 16 * (u64::from(d) + k as u64),
                    desc.as_slice(),
                )?;
            }
            mem.write(l.avail_ring + 4 + 2 * u64::from(i), &d.to_le_bytes())?;
        }
        // flags 0 (interrupts wanted), then the index: the chains become visible.
        mem.write(l.avail_ring, &0u16.to_le_bytes())?;
        mem.write(l.avail_ring + 2, &l.chains.to_le_bytes())?;
        mem.write(l.used_ring, &[0u8; 4])
    }

    /// Reads the used ring and every output back and compares each byte with what the device
    /// must have written: the inverted input, then its FNV-1a checksum.
    pub fn verify(&self, mem: &impl DriverMemory) -> Result<Verified, String> {
        let l = &self.layout;
        let out_len = u64::from(l.input_len) + 8;
        let mut idx = [0u8; 2];
        mem.read(l.used_ring + 2, &mut idx)?;
        let used = u16::from_le_bytes(idx).min(l.chains);
        let mut v = Verified {
            bytes_bad: u64::from(l.chains - used) * out_len,
            ..Verified::default()
        };
        let mut out = vec![0u8; out_len as usize];
        for i in 0..used {
            let mut elem = [0u8; 8];
            mem.read(l.used_ring + 4 + 8 * u64::from(i), &mut elem)?;
            let id = u32::from_le_bytes([elem[0], elem[1], elem[2], elem[3]]);
            let len = u32::from_le_bytes([elem[4], elem[5], elem[6], elem[7]]);
            if id != 4 * u32::from(i) || u64::from(len) != out_len {
                v.bytes_bad += out_len;
                continue;
            }
            v.chains += 1;
            mem.read(l.output(i), &mut out)?;
            let input: Vec<u8> = (0..l.input_len).map(|j| input_byte(i, j)).collect();
            let expected = input.iter().map(|b| !b).chain(fnv1a(&input).to_le_bytes());
            let ok = out.iter().zip(expected).filter(|(a, b)| *a == b).count() as u64;
            v.bytes_ok += ok;
            v.bytes_bad += out_len - ok;
        }
        Ok(v)
    }
}
