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
