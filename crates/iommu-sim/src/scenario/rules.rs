//! Checks across a whole table or several: how many of each table a file may have, what the
//! jobs move in total, and jobs whose ranges overlap while one of them writes (the data of
//! either could not be verified, so the run would report a violation the stack did not cause).

use std::ops::Range;

use super::fields::Ctx;
use super::limits::{
    MAX_BONDS, MAX_DEVICES, MAX_DMA_BYTES, MAX_EVENTS, MAX_IOMMUS, MAX_JOBS, MAX_JOB_LEN_TOTAL,
    MAX_OWNERS, MAX_PROCESSES, MAX_VMAS_PER_PROCESS,
};
use super::parse::Built;
use super::raw::{RawFile, RawJob};
use super::spec::{EventSpec, JobOp, JobSpec, JobTarget};
use super::ScenarioError;

impl Ctx<'_> {
    /// Each table at most its limit; the error is at the first one past it.
    pub(super) fn counts(&self, raw: &RawFile) -> Result<(), ScenarioError> {
        let tables: [(&str, usize, usize, Option<Range<usize>>); 7] = [
            (
                "iommu",
                raw.iommu.len(),
                MAX_IOMMUS,
                raw.iommu.get(MAX_IOMMUS).map(|x| x.name.span()),
            ),
            (
                "device",
                raw.device.len(),
                MAX_DEVICES,
                raw.device.get(MAX_DEVICES).map(|x| x.name.span()),
            ),
            (
                "process",
                raw.process.len(),
                MAX_PROCESSES,
                raw.process.get(MAX_PROCESSES).map(|x| x.name.span()),
            ),
            (
                "bond",
                raw.bond.len(),
                MAX_BONDS,
                raw.bond.get(MAX_BONDS).map(|x| x.device.span()),
            ),
            (
                "owner",
                raw.owner.len(),
                MAX_OWNERS,
                raw.owner.get(MAX_OWNERS).map(|x| x.name.span()),
            ),
            (
                "job",
                raw.job.len(),
                MAX_JOBS,
                raw.job.get(MAX_JOBS).map(|x| x.name.span()),
            ),
            (
                "event",
                raw.event.len(),
                MAX_EVENTS,
                raw.event.get(MAX_EVENTS).map(|x| x.action.span()),
            ),
        ];
        for (table, n, max, first_over) in tables {
            if let Some(span) = first_over {
                return self.err(
                    &span,
                    table,
                    format!("{n} [[{table}]] tables: a scenario has at most {max}"),
                );
            }
        }
        for p in &raw.process {
            if let Some(v) = p.vma.get(MAX_VMAS_PER_PROCESS) {
                return self.err(
                    &v.name.span(),
                    "process.vma",
                    format!(
                        "process '{}' has {} VMAs: a process has at most {MAX_VMAS_PER_PROCESS}",
                        p.name.get_ref(),
                        p.vma.len()
                    ),
                );
            }
        }
        Ok(())
    }

    /// The jobs' lengths add up to at most [`MAX_JOB_LEN_TOTAL`] (the run holds a buffer per
    /// job), and their bytes moved (length, half of it for copies, times repeat) to at most
    /// [`MAX_DMA_BYTES`].
    pub(super) fn job_totals(&self, raw: &[RawJob], jobs: &[JobSpec]) -> Result<(), ScenarioError> {
        let mut held = 0u64;
        let mut moved = 0u64;
        for (k, (r, j)) in raw.iter().zip(jobs).enumerate() {
            held = held.saturating_add(j.len);
            if held > MAX_JOB_LEN_TOTAL {
                return self.err(
                    &r.len.span(),
                    "job.len",
                    format!(
                        "[[job]] #{} '{}': the jobs' lengths add up to more than {MAX_JOB_LEN_TOTAL} bytes (4 GiB), the limit of one run",
                        k + 1,
                        j.name
                    ),
                );
            }
            moved = moved.saturating_add(j.span(j.len).saturating_mul(j.repeat));
            if moved > MAX_DMA_BYTES {
                let at = r.repeat.as_ref().map_or(r.len.span(), |s| s.span());
                return self.err(
                    &at,
                    "job.repeat",
                    format!(
                        "[[job]] #{} '{}': the jobs move more than {MAX_DMA_BYTES} bytes (64 GiB) in all (len x repeat, half the len for copies), the limit of one run",
                        k + 1,
                        j.name
                    ),
                );
            }
        }
        Ok(())
    }

    /// No two jobs on one memory (a process's VMA, an owner's IOVA space) whose byte ranges
    /// overlap while either writes, unless an event cuts both short (their data is then not
    /// compared).
    pub(super) fn overlapping_jobs(
        &self,
        raw: &[RawJob],
        jobs: &[JobSpec],
        events: &[EventSpec],
        built: &Built<'_>,
    ) -> Result<(), ScenarioError> {
        // Per job, the events that cut it short, as a bit set.
        let words = events.len().div_ceil(64);
        let cut: Vec<Vec<u64>> = jobs
            .iter()
            .map(|j| {
                let mut bits = vec![0u64; words];
                for (k, e) in events.iter().enumerate() {
                    if e.cuts_short(j) {
                        bits[k / 64] |= 1 << (k % 64);
                    }
                }
                bits
            })
            .collect();
        for (b, jb) in jobs.iter().enumerate() {
            for (a, ja) in jobs[..b].iter().enumerate() {
                if ja.op == JobOp::Read && jb.op == JobOp::Read {
                    continue;
                }
                let (Some(ra), Some(rb)) = (extent(ja, jb), extent(jb, ja)) else {
                    continue;
                };
                if ra.start >= rb.end || rb.start >= ra.end {
                    continue;
                }
                if cut[a].iter().zip(&cut[b]).any(|(x, y)| x & y != 0) {
                    continue;
                }
                let (lo, hi) = (ra.start.max(rb.start), ra.end.min(rb.end));
                return self.err(
                    &raw[b].name.span(),
                    "job",
                    format!(
                        "[[job]] #{} '{}' {} bytes {lo:#x}..{hi:#x} of {}, which [[job]] #{} '{}' (line {}) {} while it runs: neither's data could be verified; give them disjoint ranges, or an event that cuts both short",
                        b + 1,
                        jb.name,
                        verb(jb.op),
                        memory(ja, built),
                        a + 1,
                        ja.name,
                        self.line(&raw[a].name.span()),
                        verb(ja.op),
                    ),
                );
            }
        }
        Ok(())
    }
}

/// Job `j`'s byte range, if `other` works on the same memory.
fn extent(j: &JobSpec, other: &JobSpec) -> Option<Range<u64>> {
    let start = match (&j.target, &other.target) {
        (JobTarget::Process(p, v), JobTarget::Process(q, w)) if (p, v) == (q, w) => j.offset,
        (JobTarget::Owner(o, iova), JobTarget::Owner(q, _)) if o == q => *iova,
        _ => return None,
    };
    Some(start..start + j.len)
}

/// What an operation does to its range.
fn verb(op: JobOp) -> &'static str {
    match op {
        JobOp::Read => "reads",
        JobOp::Write => "writes",
        JobOp::Fill => "fills",
        JobOp::Copy => "copies within",
    }
}

/// The memory a job works on, for messages.
fn memory(j: &JobSpec, built: &Built<'_>) -> String {
    match j.target {
        JobTarget::Process(p, v) => format!(
            "VMA '{}' of process '{}'",
            built.processes[p].vmas[v].name, built.processes[p].name
        ),
        JobTarget::Owner(o, _) => format!("owner '{}''s IOVA space", built.owners[o].0),
    }
}
