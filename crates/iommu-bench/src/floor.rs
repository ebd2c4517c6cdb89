//! The floor of any cross-thread fault path: a round trip to another thread and back (spin
//! briefly, then park), with nothing else in it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

/// Spins for a while, then parks, until `v` differs from `old` (or `stop`).
fn wait_change(v: &AtomicU64, old: u64, stop: &AtomicBool) -> u64 {
    let mut spins = 0u32;
    loop {
        let x = v.load(Ordering::Acquire);
        if x != old || stop.load(Ordering::Acquire) {
            return x;
        }
        if spins < 2_000 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            thread::park_timeout(Duration::from_micros(50));
        }
    }
}

/// A peer thread that answers every ping with a pong.
pub struct Handoff {
    ping: Arc<AtomicU64>,
    pong: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    peer: Option<JoinHandle<()>>,
    peer_thread: Thread,
    n: u64,
}

impl Handoff {
    /// Starts the peer; the calling thread is the one it wakes.
    pub fn new() -> Self {
        let ping = Arc::new(AtomicU64::new(0));
        let pong = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let main = thread::current();
        let peer = {
            let (ping, pong, stop) = (ping.clone(), pong.clone(), stop.clone());
            thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(Ordering::Acquire) {
                    seen = wait_change(&ping, seen, &stop);
                    pong.store(seen, Ordering::Release);
                    main.unpark();
                }
            })
        };
        let peer_thread = peer.thread().clone();
        Self {
            ping,
            pong,
            stop,
            peer: Some(peer),
            peer_thread,
            n: 0,
        }
    }

    /// One round trip.
    #[inline]
    pub fn round_trip(&mut self) {
        self.n += 1;
        self.ping.store(self.n, Ordering::Release);
        self.peer_thread.unpark();
        wait_change(&self.pong, self.n - 1, &AtomicBool::new(false));
    }
}

impl Default for Handoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.ping.store(u64::MAX, Ordering::Release);
        self.peer_thread.unpark();
        if let Some(p) = self.peer.take() {
            let _ = p.join();
        }
    }
}

/// The floor of routing a fault group, with no iommu-rs code: the cheapest in-process pipeline
/// that does the same steps on one thread — a device misses in its translation table, writes a
/// page request into a ring; the reporter takes it, finds the handler of its PASID in a map;
/// the handler makes the page present and writes a response into the device's response slots;
/// the device takes the response, retries the translation (a hit now) and writes 64 bytes.
pub struct RoutingFloor {
    ring: std::collections::VecDeque<(u32, u32, u64)>,
    handlers: std::collections::HashMap<u32, usize>,
    /// Page → frame + 1 (0: not present), the translation table the device and handler share.
    table: Vec<u64>,
    responses: Vec<Option<bool>>,
    frames: Vec<[u8; 64]>,
    next_grpid: u32,
}

impl RoutingFloor {
    /// A translation table of `pages` pages and one PASID with a handler.
    pub fn new(pages: usize) -> Self {
        let mut handlers = std::collections::HashMap::new();
        handlers.insert(1, 0);
        Self {
            ring: std::collections::VecDeque::with_capacity(512),
            handlers,
            table: vec![0; pages],
            responses: vec![None; 512],
            frames: vec![[0; 64]; pages],
            next_grpid: 0,
        }
    }

    /// Faults `in_flight` pages starting at `first` as concurrent groups: every device miss is
    /// queued first, then reported and handled, then each retried. Returns a checksum so the
    /// work cannot be optimised away.
    pub fn groups(&mut self, first: usize, in_flight: usize) -> u64 {
        let pages = self.table.len();
        let mut outstanding = [(0usize, 0u32); 256];
        let n = in_flight.clamp(1, outstanding.len());
        for (k, slot) in outstanding.iter_mut().enumerate().take(n) {
            let page = (first + k) % pages;
            self.table[page] = 0;
            // Device: translation miss, page request.
            let grpid = self.next_grpid;
            self.next_grpid = (self.next_grpid + 1) & 511;
            self.ring.push_back((1, grpid, page as u64));
            *slot = (page, grpid);
        }
        // Reporter → handler → response.
        while let Some((pasid, grpid, page)) = self.ring.pop_front() {
            // The handler of the PASID maps the page (its frames start at `base`).
            let ok = match self.handlers.get(&pasid) {
                Some(&base) => {
                    self.table[page as usize] = base as u64 + page + 1;
                    true
                }
                None => false,
            };
            self.responses[grpid as usize] = Some(ok);
        }
        // Device: take each response, retry, write.
        let mut sum = 0;
        for &(page, grpid) in outstanding.iter().take(n) {
            if self.responses[grpid as usize].take() == Some(true) {
                let frame = self.table[page] - 1;
                let f = &mut self.frames[frame as usize];
                f.fill(0x5a);
                sum += u64::from(f[7]);
            }
        }
        sum
    }
}

/// The floor of a demand-zero fault's memory work: zero one 4 KiB frame (`memset`) and copy
/// 4 KiB of data into it (`memcpy`), over a pool of frames as large as the fault benchmark's.
pub struct MemoryFloor {
    frames: Vec<u8>,
    data: Vec<u8>,
}

impl MemoryFloor {
    /// A pool of `frames` frames.
    pub fn new(frames: usize) -> Self {
        Self {
            frames: vec![1; frames.max(1) * 4096],
            data: vec![0x5a; 4096],
        }
    }

    /// Zeroes frame `i` (modulo the pool) and copies a page into it.
    #[inline]
    pub fn page(&mut self, i: usize) -> u8 {
        let n = self.frames.len() / 4096;
        let f = &mut self.frames[(i % n) * 4096..][..4096];
        f.fill(0);
        std::hint::black_box(&mut *f);
        f.copy_from_slice(&self.data);
        f[i % 4096]
    }
}
