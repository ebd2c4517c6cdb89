//! What a run reports: a readable summary, the same figures as JSON, latency histograms per
//! stage as an SVG plot, and a Chrome trace-event file for a timeline viewer
//! (`chrome://tracing`, Perfetto).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::invariants::CheckReport;

/// Latencies of one pipeline stage, in nanoseconds (1 ns to 100 s, 3 significant digits).
#[derive(Debug, Clone)]
pub struct StageLatency(Histogram<u64>);

impl Default for StageLatency {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static bounds are valid"))
    }
}

impl StageLatency {
    /// Records one sample; values beyond the range are clamped into it.
    pub fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.max(1));
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value at quantile `q` (0.0-1.0), in ns.
    pub fn quantile(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }

    /// Merges another stage's samples.
    pub fn merge(&mut self, other: &StageLatency) {
        self.0.add(&other.0).expect("same bounds");
    }

    /// (bucket upper bound in ns, count) over power-of-two buckets, for plotting.
    fn log2_buckets(&self) -> Vec<(u32, u64)> {
        let mut b = BTreeMap::new();
        for v in self.0.iter_recorded() {
            let bucket = 64 - v.value_iterated_to().leading_zeros();
            *b.entry(bucket).or_insert(0) += v.count_at_value();
        }
        b.into_iter().collect()
    }
}

/// One span of the trace, on the track of the agent that did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSpan {
    /// What happened, as the scenario file spells it (a job's name, an event's action).
    pub name: String,
    /// Category (`"job"`, `"event"`, `"iommufd"`).
    pub category: String,
    /// The agent it ran on (`"device gpu0"`, `"scenario events"`, `"owner vmm0"`); one
    /// track per agent.
    pub track: String,
    /// Start, ns from the start of the run.
    pub start_ns: u64,
    /// Duration, ns.
    pub duration_ns: u64,
}

/// Where every page request group a device sent went, from the trace points (each group's
/// first conclusion at its device), cross-checked against the devices' own counters.
///
/// `sent = handler + auto_iommufd + auto_dropped + no_handler + iommu_overflow +
/// abandoned_reset + abandoned_dma + unattributed + outstanding`; the run fails unless it
/// holds and `unattributed` and `outstanding` are 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupLedger {
    /// Groups the devices sent (written to a page request queue, or answered by the IOMMU).
    pub sent: u64,
    /// Answered by a fault handler (the SVA handler, an iommufd owner): Success, Invalid,
    /// Failure.
    pub handler: [u64; 3],
    /// Answered Invalid by iommufd on user space's behalf (detach, replace, close).
    pub auto_iommufd: u64,
    /// Dropped unanswered (an IOPF queue shut down, a handler let it go): answered Invalid
    /// by the core.
    pub auto_dropped: u64,
    /// No fault-capable attachment took it: answered Invalid on the core's bad path.
    pub no_handler: u64,
    /// Answered Success by the IOMMU itself: its page request queue was full.
    pub iommu_overflow: u64,
    /// Given up by a device reset: never answered, by design.
    pub abandoned_reset: u64,
    /// Given up by its DMA (response timeout, or the waiting job was dropped).
    pub abandoned_dma: u64,
    /// Answered by a response no responder traced (a bug in the accounting).
    pub unattributed: u64,
    /// Still unanswered at the end (a lost response).
    pub outstanding: u64,
    /// Responses a device discarded because no group was outstanding at that index: late
    /// answers to abandoned groups, and the bad path's answers to a group's partial requests.
    pub stray_responses: u64,
    /// Answers the IOMMU gave itself (queue full) to groups a reset had already abandoned.
    pub stray_iommu_responses: u64,
}

impl GroupLedger {
    /// Groups answered by a handler.
    pub fn handler_total(&self) -> u64 {
        self.handler.iter().sum()
    }

    /// Groups answered on the handler's behalf (iommufd, dropped, no handler).
    pub fn auto_total(&self) -> u64 {
        self.auto_iommufd + self.auto_dropped + self.no_handler
    }

    /// Groups abandoned.
    pub fn abandoned_total(&self) -> u64 {
        self.abandoned_reset + self.abandoned_dma
    }

    /// Every group's fate, summed.
    pub fn accounted(&self) -> u64 {
        self.handler_total()
            + self.auto_total()
            + self.iommu_overflow
            + self.abandoned_total()
            + self.unattributed
            + self.outstanding
    }

    /// Whether every group sent went exactly one known way and none is left unanswered.
    pub fn reconciles(&self) -> bool {
        self.accounted() == self.sent && self.unattributed == 0 && self.outstanding == 0
    }
}

/// Replaces control characters (an ANSI escape, a newline) in a name or message with their
/// Rust escapes, so printed text cannot forge report lines or drive a terminal.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Everything a run reports.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// The scenario's name.
    pub scenario: String,
    /// `"threads"` or `"deterministic"`.
    pub mode: String,
    /// Seed, in deterministic mode only (threads mode has none).
    pub seed: Option<u64>,
    /// Wall-clock seconds; threads mode only (a deterministic report is all virtual time, so
    /// the same seed gives the same report).
    pub elapsed_s: Option<f64>,
    /// Whether latencies are virtual time (deterministic mode: one scheduler step is 1 µs).
    pub virtual_time: bool,
    /// DMA jobs completed.
    pub jobs: u64,
    /// Bytes moved by DMA.
    pub bytes: u64,
    /// Page requests sent by devices.
    pub page_requests: u64,
    /// Where every group went.
    pub groups_ledger: GroupLedger,
    /// Counters named `what/which` (`requests/sva`, `prq/overflows`, `events/fired`, ...; see
    /// docs/scenarios.md).
    pub counters: BTreeMap<String, u64>,
    /// Latency per pipeline stage.
    pub latency: BTreeMap<String, StageLatency>,
    /// The invariant checks.
    pub invariants: Option<CheckReport>,
    /// Hash of the event log (deterministic mode).
    pub event_log_hash: Option<u64>,
    /// Trace spans (kept only when a trace was asked for).
    pub trace: Vec<TraceSpan>,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl RunReport {
    /// The readable summary; every name in it escaped.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario '{}' ({} mode{})",
            escape(&self.scenario),
            self.mode,
            self.seed.map_or(String::new(), |x| format!(", seed {x}"))
        );
        if let Some(e) = self.elapsed_s {
            let _ = writeln!(s, "  elapsed        {e:.3} s (wall clock)");
        }
        let _ = writeln!(
            s,
            "  jobs           {} ({:.1} MiB)",
            self.jobs,
            self.bytes as f64 / (1 << 20) as f64
        );
        let _ = writeln!(s, "  page requests  {}", self.page_requests);
        self.ledger_text(&mut s);
        for (name, n) in &self.counters {
            let _ = writeln!(s, "  {:<28} {n}", escape(name));
        }
        let shown: Vec<_> = self.latency.iter().filter(|(_, h)| !h.is_empty()).collect();
        if !shown.is_empty() {
            let unit = if self.virtual_time {
                "virtual µs, 1 step = 1 µs"
            } else {
                "µs, wall clock"
            };
            let _ = writeln!(
                s,
                "  latency ({unit})\n    {:<18} {:>10} {:>10} {:>10} {:>10}",
                "stage", "p50", "p99", "p99.9", "samples"
            );
            for (stage, h) in shown {
                let _ = writeln!(
                    s,
                    "    {:<18} {:>10.2} {:>10.2} {:>10.2} {:>10}",
                    escape(stage),
                    us(h.quantile(0.5)),
                    us(h.quantile(0.99)),
                    us(h.quantile(0.999)),
                    h.len()
                );
            }
        }
        if let Some(hash) = self.event_log_hash {
            let _ = writeln!(s, "  event log hash {hash:016x}");
        }
        match &self.invariants {
            Some(r) if r.passed() && r.events == 0 => {
                // "All held" over nothing would read as a verdict.
                let _ = writeln!(
                    s,
                    "  invariants     nothing to check: the checker saw no event"
                );
            }
            Some(r) if r.passed() => {
                let _ = writeln!(s, "  invariants     all held over {} events", r.events);
            }
            Some(r) => {
                let _ = writeln!(s, "  invariants     VIOLATED");
                for (inv, n) in r.counts.iter().filter(|(_, n)| *n > 0) {
                    let _ = writeln!(s, "    {}: {n}", inv.name());
                }
                for v in &r.violations {
                    let _ = writeln!(s, "    {}", escape(&v.to_string()));
                }
            }
            None => {
                let _ = writeln!(s, "  invariants     not checked");
            }
        }
        s
    }

    /// The reconciliation block: every group sent, by where it went.
    fn ledger_text(&self, s: &mut String) {
        let l = &self.groups_ledger;
        let [ok, inv, fail] = l.handler;
        let verdict = if l.reconciles() {
            "reconciles"
        } else {
            "DOES NOT RECONCILE"
        };
        let _ = writeln!(
            s,
            "  page request groups: {} sent = {} answered by a handler + {} auto-answered + {} answered by the IOMMU + {} abandoned + {} unattributed + {} outstanding ({verdict})",
            l.sent,
            l.handler_total(),
            l.auto_total(),
            l.iommu_overflow,
            l.abandoned_total(),
            l.unattributed,
            l.outstanding
        );
        let _ = writeln!(
            s,
            "    answered by a handler   {:>8}  ({ok} success, {inv} invalid, {fail} failure)",
            l.handler_total()
        );
        let _ = writeln!(
            s,
            "    auto-answered           {:>8}  ({} iommufd auto-response, {} dropped unanswered, {} no fault handler)",
            l.auto_total(),
            l.auto_iommufd,
            l.auto_dropped,
            l.no_handler
        );
        let _ = writeln!(
            s,
            "    answered by the IOMMU   {:>8}  (page request queue full)",
            l.iommu_overflow
        );
        let _ = writeln!(
            s,
            "    abandoned               {:>8}  ({} on device reset, {} by their DMA: timeout or job dropped; never answered)",
            l.abandoned_total(),
            l.abandoned_reset,
            l.abandoned_dma
        );
        let _ = writeln!(
            s,
            "  responses discarded      {:>8}  ({} stray at a device: late answers to abandoned groups, bad-path answers to partial requests; {} IOMMU answers to groups a reset abandoned)",
            l.stray_responses + l.stray_iommu_responses,
            l.stray_responses,
            l.stray_iommu_responses
        );
    }

    /// The reconciliation block as JSON.
    fn ledger_json(&self) -> Value {
        let l = &self.groups_ledger;
        json!({
            "sent": l.sent,
            "answered_by_handler": {
                "total": l.handler_total(),
                "success": l.handler[0], "invalid": l.handler[1], "failure": l.handler[2],
            },
            "auto_answered": {
                "total": l.auto_total(),
                "iommufd_auto_response": l.auto_iommufd,
                "dropped_unanswered": l.auto_dropped,
                "no_fault_handler": l.no_handler,
            },
            "answered_by_iommu": {"prq_overflow": l.iommu_overflow},
            "abandoned": {
                "total": l.abandoned_total(),
                "device_reset": l.abandoned_reset,
                "dma_gave_up": l.abandoned_dma,
            },
            "unattributed": l.unattributed,
            "outstanding": l.outstanding,
            "reconciles": l.reconciles(),
            "discarded_responses": {
                "stray_at_device": l.stray_responses,
                "iommu_answer_to_abandoned": l.stray_iommu_responses,
            },
        })
    }

    /// The same figures as JSON, with an `invariants` object of one counter per invariant.
    /// Deterministic mode carries no wall-clock figure, so one seed gives one JSON text.
    pub fn json(&self) -> Value {
        let latency: serde_json::Map<String, Value> = self
            .latency
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(k, h)| {
                (
                    k.clone(),
                    json!({
                        "samples": h.len(),
                        "p50_ns": h.quantile(0.5),
                        "p99_ns": h.quantile(0.99),
                        "p999_ns": h.quantile(0.999),
                    }),
                )
            })
            .collect();
        let invariants: serde_json::Map<String, Value> = self
            .invariants
            .iter()
            .flat_map(|r| {
                r.counts
                    .iter()
                    .map(|(i, n)| (i.name().to_string(), json!(n)))
            })
            .collect();
        let mut v = json!({
            "scenario": self.scenario,
            "mode": self.mode,
            "jobs": self.jobs,
            "bytes": self.bytes,
            "page_requests": self.page_requests,
            "page_request_groups": self.ledger_json(),
            "counters": self.counters,
            "latency_time": if self.virtual_time { "virtual" } else { "wall_clock" },
            "latency": latency,
            "invariants": invariants,
            "passed": self.invariants.as_ref().is_some_and(CheckReport::passed),
        });
        if let Some(e) = self.elapsed_s {
            v["elapsed_s"] = json!(e);
        }
        if let Some(seed) = self.seed {
            v["seed"] = json!(seed);
        }
        if let Some(hash) = self.event_log_hash {
            v["event_log_hash"] = json!(format!("{hash:016x}"));
        }
        v
    }

    /// The trace in Chrome trace-event format (complete events, µs timestamps), one named
    /// track per agent.
    pub fn chrome_trace(&self) -> Value {
        let mut tracks: BTreeMap<&str, u64> = BTreeMap::new();
        for t in &self.trace {
            let next = tracks.len() as u64 + 1;
            tracks.entry(t.track.as_str()).or_insert(next);
        }
        let mut events: Vec<Value> = vec![json!({
            "name": "process_name", "ph": "M", "pid": 1,
            "args": {"name": format!("scenario {}", self.scenario)},
        })];
        events.extend(tracks.iter().map(|(name, tid)| {
            json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": name}})
        }));
        events.extend(self.trace.iter().map(|t| {
            json!({
                "name": t.name, "cat": t.category, "ph": "X", "pid": 1, "tid": tracks[t.track.as_str()],
                "ts": us(t.start_ns), "dur": us(t.duration_ns),
            })
        }));
        json!({ "traceEvents": events, "displayTimeUnit": "ns" })
    }

    /// Latency histograms per stage, one panel each, as SVG text: power-of-two buckets on a
    /// logarithmic µs axis, the same axis for every panel.
    pub fn svg(&self) -> Result<String, String> {
        use plotters::prelude::*;
        let stages: Vec<_> = self.latency.iter().filter(|(_, h)| !h.is_empty()).collect();
        let panels = stages.len().max(1) as u32;
        let buckets: Vec<Vec<(u32, u64)>> = stages.iter().map(|(_, h)| h.log2_buckets()).collect();
        // One x range for all: from the lowest bucket's lower edge to the highest's upper edge.
        let lo_b = buckets.iter().flatten().map(|b| b.0).min().unwrap_or(1);
        let hi_b = buckets.iter().flatten().map(|b| b.0).max().unwrap_or(1);
        let edge_us = |b: u32| (1u64 << b.min(63)) as f64 / 1000.0;
        let (x_lo, x_hi) = (edge_us(lo_b.saturating_sub(1)), edge_us(hi_b));
        let unit = if self.virtual_time {
            "virtual µs"
        } else {
            "µs"
        };
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, (720, 220 * panels)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| e.to_string())?;
            let areas = root.split_evenly((panels as usize, 1));
            for (((stage, h), b), area) in stages.iter().zip(&buckets).zip(areas.iter()) {
                let max_count = b.iter().map(|b| b.1).max().unwrap_or(1);
                let mut chart = ChartBuilder::on(area)
                    .caption(
                        format!(
                            "{}: p50 {:.2} {unit}, p99 {:.2} {unit}",
                            escape(stage),
                            us(h.quantile(0.5)),
                            us(h.quantile(0.99))
                        ),
                        ("sans-serif", 16),
                    )
                    .margin(8)
                    .x_label_area_size(28)
                    .y_label_area_size(48)
                    .build_cartesian_2d(
                        (x_lo..x_hi).log_scale(),
                        0u64..max_count + max_count / 10 + 1,
                    )
                    .map_err(|e| e.to_string())?;
                chart
                    .configure_mesh()
                    .x_desc(format!("latency ({unit}, log scale)"))
                    .y_desc("samples")
                    .draw()
                    .map_err(|e| e.to_string())?;
                chart
                    .draw_series(b.iter().map(|&(bucket, n)| {
                        Rectangle::new(
                            [(edge_us(bucket.saturating_sub(1)), 0), (edge_us(bucket), n)],
                            BLUE.filled(),
                        )
                    }))
                    .map_err(|e| e.to_string())?;
            }
            root.present().map_err(|e| e.to_string())?;
        }
        Ok(out)
    }

    /// Writes `--json`, `--plot` and `--trace` outputs where paths are given.
    pub fn write_outputs(
        &self,
        json_path: Option<&Path>,
        plot: Option<&Path>,
        trace: Option<&Path>,
    ) -> Result<(), String> {
        let write = |p: &Path, text: String| {
            std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))
        };
        if let Some(p) = json_path {
            write(
                p,
                serde_json::to_string_pretty(&self.json()).expect("values serialise"),
            )?;
        }
        if let Some(p) = plot {
            write(p, self.svg()?)?;
        }
        if let Some(p) = trace {
            write(
                p,
                serde_json::to_string(&self.chrome_trace()).expect("values serialise"),
            )?;
        }
        Ok(())
    }
}
