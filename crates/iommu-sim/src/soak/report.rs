//! What a soak reports: the books, the responses, the disruptions, memory per tenth.

use super::*;

/// What a soak did and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Page request groups sent by the SVA device.
    pub groups_sva: u64,
    /// Groups sent by the iommufd-owned device.
    pub groups_iommufd: u64,
    /// Groups answered (by a handler, by auto-response or by the IOMMU on overflow).
    pub answered: u64,
    /// Groups the IOMMU answered itself because its queue was full.
    pub overflow_answered: u64,
    /// Groups abandoned by a device reset (never answered, by design).
    pub abandoned: u64,
    /// Groups neither answered nor abandoned when the soak ended.
    pub lost: u64,
    /// Responses to a group that was already answered (or never sent).
    pub doubled: u64,
    /// Deliveries after a detach returned, and DMA through a PASID after its unbind returned.
    pub late: u64,
    /// Disruptions done, by kind.
    pub disruptions: BTreeMap<&'static str, u64>,
    /// DMA jobs that completed, and that failed because of a disruption of their cycle.
    pub dma_ok: u64,
    /// DMA jobs failed in a disrupted cycle (expected).
    pub dma_failed_expected: u64,
    /// Problems that are not invariant violations: a DMA failing in an undisturbed cycle, a
    /// call that should have worked and did not. Must be empty.
    pub problems: Vec<String>,
    /// Resident set size, bytes, at the start.
    pub rss_start: u64,
    /// After warm-up (the first tenth of the groups), the highest RSS sampled (every 20 ms) in
    /// each following tenth (0: no sample fell into it): a leak shows as a rising sequence, a
    /// burst as one high window.
    pub rss_windows: Vec<u64>,
    /// RSS at the end, after teardown.
    pub rss_end: u64,
    /// With [`Config::heap_live`], the highest live heap bytes in each window, as
    /// `rss_windows` (empty without it).
    pub heap_windows: Vec<u64>,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Events the invariant checker saw.
    pub events: u64,
}

impl Report {
    /// Page request groups sent, both devices.
    pub fn groups(&self) -> u64 {
        self.groups_sva + self.groups_iommufd
    }

    /// Whether the soak passed: nothing lost, doubled or late, no problem, the books balance,
    /// and RSS after warm-up stayed within 10 % of its warm-up value.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.doubled == 0
            && self.late == 0
            && self.problems.is_empty()
            && self.groups() == self.answered + self.abandoned
            && self.rss_flat()
    }

    /// Memory did not grow after warm-up: the last window's highest RSS is within 10 % of
    /// the first window's (fewer than two windows: nothing to compare, flat).
    pub fn rss_flat(&self) -> bool {
        self.rss_compared().unwrap_or(true)
    }

    /// [`Report::rss_flat`] when at least two windows were sampled; `None` otherwise.
    fn rss_compared(&self) -> Option<bool> {
        // A window no sample fell into (a short soak) reads 0: skipped.
        let mut sampled = self.rss_windows.iter().filter(|&&b| b > 0);
        match (sampled.next(), sampled.next_back()) {
            (Some(&first), Some(&last)) => {
                Some(last.saturating_mul(10) <= first.saturating_mul(11))
            }
            _ => None,
        }
    }

    /// The readable summary.
    pub fn text(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut s = format!(
            "soak: {} groups in {:.1} s ({:.0} groups/s): {} SVA, {} iommufd\n",
            self.groups(),
            secs,
            self.groups() as f64 / secs,
            self.groups_sva,
            self.groups_iommufd
        );
        s += &format!(
            "  accounted      {} sent = {} answered ({} by the IOMMU on overflow) + {} abandoned by reset{}\n",
            self.groups(),
            self.answered,
            self.overflow_answered,
            self.abandoned,
            if self.groups() == self.answered + self.abandoned { "" } else { "  MISMATCH" }
        );
        s += &format!(
            "  responses      {} lost, {} doubled, {} late\n",
            self.lost, self.doubled, self.late
        );
        let d: Vec<String> = self
            .disruptions
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        s += &format!(
            "  disruptions    {}\n",
            if d.is_empty() {
                "none".into()
            } else {
                d.join(", ")
            }
        );
        s += &format!(
            "  dma jobs       {} ok, {} failed in disrupted cycles\n",
            self.dma_ok, self.dma_failed_expected
        );
        s += &format!(
            "  rss            {:.1} MiB at start; highest per tenth after warm-up: {} MiB ({}); {:.1} MiB at end\n",
            mib(self.rss_start),
            tenths(&self.rss_windows, 1),
            match self.rss_compared() {
                None => "fewer than two tenths sampled: too short to compare",
                Some(true) => "the last sampled tenth within 10 % of the first",
                Some(false) => "GREW more than 10 %",
            },
            mib(self.rss_end),
        );
        if !self.heap_windows.is_empty() {
            s += &format!(
                "  heap           highest live per tenth after warm-up: {} MiB\n",
                tenths(&self.heap_windows, 2)
            );
        }
        s += &format!("  checker        {} events\n", self.events);
        for p in self.problems.iter().take(20) {
            s += &format!("  problem: {p}\n");
        }
        s += if self.passed() {
            "  result         passed\n"
        } else {
            "  result         FAILED\n"
        };
        s
    }
}

/// `b` bytes in MiB.
fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Per-tenth figures in MiB with `decimals` decimals; a tenth no sample fell into (sampling is
/// every 20 ms) shows as "-", not as 0 MiB, and no tenths at all as "-".
fn tenths(windows: &[u64], decimals: usize) -> String {
    if windows.is_empty() {
        return "-".into();
    }
    let each: Vec<String> = windows
        .iter()
        .map(|&b| match b {
            0 => "-".into(),
            b => format!("{:.*}", decimals, mib(b)),
        })
        .collect();
    each.join(" ")
}

/// Resident set size of this process, bytes (0 where `/proc` is unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * PAGE)
}
