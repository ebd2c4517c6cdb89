//! Load beside a measurement: `iommu-sim bench --load` and `lat_probe load` keep every other
//! CPU busy while they time the fault path, to see how its figures hold up on a busy machine.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Keeps every other CPU busy while it lives: one spinning thread per CPU but one (at least
/// one), sharing no data with the benchmark. Dropping it stops and joins the threads.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts the load threads. `Err` if one could not be spawned (those already started are
    /// stopped).
    pub fn start() -> Result<Load, String> {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for i in 0..cpus.saturating_sub(1).max(1) {
            let stop = load.stop.clone();
            let t = std::thread::Builder::new()
                .name(format!("load{i}"))
                .spawn(move || {
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..1000 {
                            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                        }
                    }
                })
                // `load` drops here: the threads started so far stop.
                .map_err(|e| format!("cannot start a load thread: {e}"))?;
            load.threads.push(t);
        }
        Ok(load)
    }

    /// Spinning threads running.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Load;

    #[test]
    fn load_starts_a_thread_per_other_cpu_and_stops_when_dropped() {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let load = Load::start().unwrap();
        assert_eq!(load.threads(), cpus.saturating_sub(1).max(1));
        // Dropping joins every thread: it returns only once they all stopped.
        drop(load);
    }
}
