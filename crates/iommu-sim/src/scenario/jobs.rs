//! Validation of a `[[job]]`: its device, its target (owner IOVA or process VMA), size, access.

use toml::Spanned;

use super::fields::Ctx;
use super::limits::{IOVA_END, MAX_JOB_LEN, MAX_REPEAT};
use super::parse::{Built, Names};
use super::raw::RawJob;
use super::spec::{JobOp, JobSpec, JobTarget, ProcessSpec};
use super::ScenarioError;

/// One validation step per table.
impl Ctx<'_> {
    /// A `[[job]]`: a known device, one target, a length in `1..=MAX_JOB_LEN` inside its
    /// target, a repeat count in `1..=MAX_REPEAT`, and memory it may write if it writes.
    pub(super) fn job(
        &self,
        j: &RawJob,
        names: &Names,
        built: &Built<'_>,
    ) -> Result<JobSpec, ScenarioError> {
        let device = self.lookup(&names.devices, &j.device, "job.device", "device")?;
        let len = self.size(&j.len, "job.len", false)?;
        if len == 0 {
            return self.err(&j.len.span(), "job.len", "expected a length above 0");
        }
        if len > MAX_JOB_LEN {
            return self.err(
                &j.len.span(),
                "job.len",
                format!("{len} bytes: a job moves at most {MAX_JOB_LEN} bytes (1 GiB) per run"),
            );
        }
        if *j.op.get_ref() == JobOp::Copy && len < 2 {
            return self.err(
                &j.len.span(),
                "job.len",
                "a copy moves the first half of its range onto the second: expected len of 2 or more",
            );
        }
        let repeat = match &j.repeat {
            Some(r) => u64::from(self.range(r, "job.repeat", 1, MAX_REPEAT)?),
            None => 1,
        };
        let offset = j
            .offset
            .as_ref()
            .map_or(Ok(0), |o| self.size(o, "job.offset", false))?;
        let target = match (&j.process, &j.owner) {
            (Some(p), None) => {
                if let Some(i) = &j.iova {
                    return self.err(
                        &i.span(),
                        "job.iova",
                        "a process job addresses its VMA with offset; iova is for owner jobs",
                    );
                }
                let (pi, vi) = self.process_target(j, p, names, built.processes, (offset, len))?;
                if !built.bonds.contains(&(device, pi)) {
                    return self.err(
                        &j.device.span(),
                        "job.device",
                        format!(
                            "device '{}' is not bonded to process '{}': add a [[bond]]",
                            j.device.get_ref(),
                            p.get_ref()
                        ),
                    );
                }
                let vma = &built.processes[pi].vmas[vi];
                if *j.op.get_ref() != JobOp::Read && !vma.prot.write {
                    return self.err(
                        &j.op.span(),
                        "job.op",
                        format!(
                            "job '{}' writes, but VMA '{}' of process '{}' is read-only: expected op = \"read\" or a VMA with prot \"rw\"",
                            j.name.get_ref(),
                            vma.name,
                            p.get_ref()
                        ),
                    );
                }
                JobTarget::Process(pi, vi)
            }
            (None, Some(o)) => self.owner_target(j, o, names, built, device, len)?,
            _ => {
                return self.err(
                    &j.name.span(),
                    "job",
                    "expected exactly one of process (with vma) or owner",
                )
            }
        };
        Ok(JobSpec {
            name: j.name.get_ref().clone(),
            device,
            op: *j.op.get_ref(),
            target,
            offset,
            len,
            repeat,
        })
    }

    /// An owner job's target: the owner's own device, no VMA fields, and
    /// `iova + len` inside the IOVA space ([`IOVA_END`]).
    pub(super) fn owner_target(
        &self,
        j: &RawJob,
        o: &Spanned<String>,
        names: &Names,
        built: &Built<'_>,
        device: usize,
        len: u64,
    ) -> Result<JobTarget, ScenarioError> {
        let oi = self.lookup(&names.owners, o, "job.owner", "owner")?;
        for (field, given) in [
            ("vma", j.vma.as_ref().map(Spanned::span)),
            ("offset", j.offset.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = given {
                return self.err(
                    &span,
                    &format!("job.{field}"),
                    format!("an owner job addresses its owner's IOVA space with iova; {field} is for process jobs"),
                );
            }
        }
        let owner_dev = built.owners[oi].1;
        if owner_dev != device {
            return self.err(
                &j.device.span(),
                "job.device",
                format!(
                    "owner '{}' owns device '{}', not '{}': an owner job runs on its owner's device",
                    o.get_ref(),
                    built.devices[owner_dev].name,
                    j.device.get_ref()
                ),
            );
        }
        let iova = j
            .iova
            .as_ref()
            .map_or(Ok(0), |i| self.size(i, "job.iova", false))?;
        if iova.checked_add(len).is_none_or(|end| end > IOVA_END) {
            let span = j.iova.as_ref().map_or(j.len.span(), Spanned::span);
            return self.err(
                &span,
                "job.iova",
                format!(
                    "iova {iova:#x} + len {len:#x} runs past the end of the IOVA space ({IOVA_END:#x}, 48 bits)"
                ),
            );
        }
        Ok(JobTarget::Owner(oi, iova))
    }

    /// A process job's (process, VMA) indices: the VMA named, `offset + len` inside it.
    pub(super) fn process_target(
        &self,
        j: &RawJob,
        p: &Spanned<String>,
        names: &Names,
        processes: &[ProcessSpec],
        (offset, len): (u64, u64),
    ) -> Result<(usize, usize), ScenarioError> {
        let pi = self.lookup(&names.processes, p, "job.process", "process")?;
        let Some(v) = &j.vma else {
            return self.err(&p.span(), "job.vma", "a process job needs a vma");
        };
        let vi = self.lookup(&names.vmas[pi], v, "job.vma", "VMA")?;
        let size = processes[pi].vmas[vi].size;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return self.err(
                &j.len.span(),
                "job.len",
                format!(
                    "offset {offset} + len {len} runs past VMA '{}' ({size} bytes)",
                    v.get_ref()
                ),
            );
        }
        Ok((pi, vi))
    }
}
