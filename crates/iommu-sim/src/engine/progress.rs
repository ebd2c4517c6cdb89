//! The run's progress bar: bytes moved by the jobs, drawn on stderr only once the run has taken
//! [`Progress::AFTER`] (and only on a terminal; indicatif hides it otherwise), so short runs and
//! tests print nothing.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::world::World;

/// The progress bar of one run.
pub(super) struct Progress {
    bar: ProgressBar,
    enabled: bool,
    start: Instant,
    shown: AtomicBool,
}

impl Progress {
    /// How long a run goes before its progress bar appears.
    const AFTER: Duration = Duration::from_secs(1);

    pub(super) fn new(world: &World<'_>, enabled: bool) -> Self {
        let bar =
            ProgressBar::with_draw_target(Some(world.total_bytes()), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}) {msg}",
            )
            .expect("progress template")
            .progress_chars("=> "),
        );
        Progress {
            bar,
            enabled,
            start: Instant::now(),
            shown: AtomicBool::new(false),
        }
    }

    /// Shows the bar once the run has taken long enough.
    pub(super) fn tick(&self) {
        if self.enabled
            && !self.shown.load(Relaxed)
            && self.start.elapsed() >= Self::AFTER
            && !self.shown.swap(true, Relaxed)
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    /// `n` more bytes moved.
    pub(super) fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.tick();
    }

    /// Names what is happening (an event firing).
    pub(super) fn message(&self, m: String) {
        self.bar.set_message(m);
    }

    pub(super) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
