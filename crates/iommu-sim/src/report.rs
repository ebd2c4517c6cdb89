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

/// One span of the trace: a stage of one page request group, on one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSpan {
    /// What happened (`"fault-in"`, `"dma"`).
    pub name: String,
    /// Category (`"sva"`, `"iommufd"`, `"prq"`).
    pub category: String,
    /// The thread (actor) it ran on.
    pub thread: u64,
    /// Start, ns from the start of the run.
    pub start_ns: u64,
    /// Duration, ns.
    pub duration_ns: u64,
}

/// Everything a run reports.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// The scenario's name.
    pub scenario: String,
    /// `"threads"` or `"deterministic"`.
    pub mode: String,
    /// Seed, in deterministic mode.
    pub seed: Option<u64>,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
    /// DMA jobs completed.
    pub jobs: u64,
    /// Bytes moved by DMA.
    pub bytes: u64,
    /// Page requests sent by devices.
    pub page_requests: u64,
    /// Page request groups.
    pub groups: u64,
    /// Responses by code: Success, Invalid, Failure.
    pub responses: [u64; 3],
    /// Faults by the stage that resolved them (`"sva"`, `"iommufd"`, `"no-handler"`, ...).
    pub faults_by_stage: BTreeMap<String, u64>,
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
    /// The readable summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario '{}' ({} mode{})",
            self.scenario,
            self.mode,
            self.seed.map_or(String::new(), |x| format!(", seed {x}"))
        );
        let _ = writeln!(s, "  elapsed        {:.3} s", self.elapsed_s);
        let _ = writeln!(
            s,
            "  jobs           {} ({:.1} MiB)",
            self.jobs,
            self.bytes as f64 / (1 << 20) as f64
        );
        let _ = writeln!(
            s,
            "  page requests  {} in {} groups",
            self.page_requests, self.groups
        );
        let [ok, inv, fail] = self.responses;
        let _ = writeln!(
            s,
            "  responses      {ok} success, {inv} invalid, {fail} failure"
        );
        for (stage, n) in &self.faults_by_stage {
            let _ = writeln!(s, "  faults/{stage:<8} {n}");
        }
        if !self.latency.is_empty() {
            let _ = writeln!(
                s,
                "  latency (µs)         {:>10} {:>10} {:>10} {:>10}",
                "p50", "p99", "p99.9", "samples"
            );
            for (stage, h) in &self.latency {
                let _ = writeln!(
                    s,
                    "    {stage:<18} {:>10.2} {:>10.2} {:>10.2} {:>10}",
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
            Some(r) if r.passed() => {
                let _ = writeln!(s, "  invariants     all held over {} events", r.events);
            }
            Some(r) => {
                let _ = writeln!(s, "  invariants     VIOLATED");
                for (inv, n) in r.counts.iter().filter(|(_, n)| *n > 0) {
                    let _ = writeln!(s, "    {}: {n}", inv.name());
                }
                for v in &r.violations {
                    let _ = writeln!(s, "    {v}");
                }
            }
            None => {
                let _ = writeln!(s, "  invariants     not checked");
            }
        }
        s
    }

    /// The same figures as JSON, with an `invariants` object of one counter per invariant.
    pub fn json(&self) -> Value {
        let latency: serde_json::Map<String, Value> = self
            .latency
            .iter()
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
            "elapsed_s": self.elapsed_s,
            "jobs": self.jobs,
            "bytes": self.bytes,
            "page_requests": self.page_requests,
            "groups": self.groups,
            "responses": {"success": self.responses[0], "invalid": self.responses[1], "failure": self.responses[2]},
            "faults_by_stage": self.faults_by_stage,
            "latency": latency,
            "invariants": invariants,
            "passed": self.invariants.as_ref().is_some_and(CheckReport::passed),
        });
        if let Some(seed) = self.seed {
            v["seed"] = json!(seed);
        }
        if let Some(hash) = self.event_log_hash {
            v["event_log_hash"] = json!(format!("{hash:016x}"));
        }
        v
    }

    /// The trace in Chrome trace-event format (complete events, µs timestamps).
    pub fn chrome_trace(&self) -> Value {
        let events: Vec<Value> = self
            .trace
            .iter()
            .map(|t| {
                json!({
                    "name": t.name, "cat": t.category, "ph": "X", "pid": 1, "tid": t.thread,
                    "ts": us(t.start_ns), "dur": us(t.duration_ns),
                })
            })
            .collect();
        json!({ "traceEvents": events, "displayTimeUnit": "ns" })
    }

    /// Latency histograms per stage, one panel each, log2 buckets, as SVG text.
    pub fn svg(&self) -> Result<String, String> {
        use plotters::prelude::*;
        let stages: Vec<_> = self.latency.iter().filter(|(_, h)| !h.is_empty()).collect();
        let panels = stages.len().max(1) as u32;
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, (720, 220 * panels)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| e.to_string())?;
            let areas = root.split_evenly((panels as usize, 1));
            for ((stage, h), area) in stages.iter().zip(areas.iter()) {
                let buckets = h.log2_buckets();
                let max_bucket = buckets.last().map_or(1, |b| b.0) + 1;
                let max_count = buckets.iter().map(|b| b.1).max().unwrap_or(1);
                let mut chart = ChartBuilder::on(area)
                    .caption(
                        format!(
                            "{stage}: p50 {:.2} µs, p99 {:.2} µs",
                            us(h.quantile(0.5)),
                            us(h.quantile(0.99))
                        ),
                        ("sans-serif", 16),
                    )
                    .margin(8)
                    .x_label_area_size(28)
                    .y_label_area_size(48)
                    .build_cartesian_2d(
                        (0u32..max_bucket).into_segmented(),
                        0u64..max_count + max_count / 10 + 1,
                    )
                    .map_err(|e| e.to_string())?;
                chart
                    .configure_mesh()
                    .x_desc("latency ≤ 2^x ns")
                    .y_desc("samples")
                    .draw()
                    .map_err(|e| e.to_string())?;
                chart
                    .draw_series(
                        Histogram::vertical(&chart)
                            .style(BLUE.filled())
                            .data(buckets.iter().copied()),
                    )
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
