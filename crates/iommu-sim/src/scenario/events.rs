//! Validation of an `[[event]]`: its trigger, its action and exactly the targets it needs.

use toml::Spanned;

use super::fields::Ctx;
use super::limits::{MAX_AFTER_GROUPS, MAX_AT_MS};
use super::parse::{Built, Names};
use super::raw::RawEvent;
use super::spec::{Action, EventSpec, Trigger};
use super::ScenarioError;

/// One validation step per table.
impl Ctx<'_> {
    /// An `[[event]]`: one trigger within its limit, exactly the targets its action needs,
    /// each resolvable; an unbind names a bonded pair, an overflow an IOMMU with a bonded
    /// device (the devices that flood).
    pub(super) fn event(
        &self,
        e: &RawEvent,
        names: &Names,
        built: &Built<'_>,
    ) -> Result<EventSpec, ScenarioError> {
        let action = *e.action.get_ref();
        let trigger = match (&e.at_ms, &e.after_groups) {
            (Some(t), None) => {
                if *t.get_ref() > MAX_AT_MS {
                    return self.err(
                        &t.span(),
                        "event.at_ms",
                        format!(
                            "{} ms: a timed event fires at most {MAX_AT_MS} ms (10 minutes) after the start",
                            t.get_ref()
                        ),
                    );
                }
                Trigger::AtMs(*t.get_ref())
            }
            (None, Some(n)) => {
                if *n.get_ref() > MAX_AFTER_GROUPS {
                    return self.err(
                        &n.span(),
                        "event.after_groups",
                        format!("{} groups: the limit is {MAX_AFTER_GROUPS}", n.get_ref()),
                    );
                }
                Trigger::AfterGroups(*n.get_ref())
            }
            _ => {
                return self.err(
                    &e.action.span(),
                    "event",
                    "expected exactly one trigger: at_ms or after_groups",
                )
            }
        };
        self.event_fields(e)?;
        let process = e
            .process
            .as_ref()
            .map(|p| self.lookup(&names.processes, p, "event.process", "process"))
            .transpose()?;
        let vma = match (&e.vma, process) {
            (Some(v), Some(pi)) => Some(self.lookup(&names.vmas[pi], v, "event.vma", "VMA")?),
            _ => None,
        };
        let spec = EventSpec {
            action,
            trigger,
            device: e
                .device
                .as_ref()
                .map(|d| self.lookup(&names.devices, d, "event.device", "device"))
                .transpose()?,
            process,
            vma,
            owner: e
                .owner
                .as_ref()
                .map(|o| self.lookup(&names.owners, o, "event.owner", "owner"))
                .transpose()?,
            iommu: e
                .iommu
                .as_ref()
                .map(|i| self.lookup(&names.iommus, i, "event.iommu", "IOMMU"))
                .transpose()?,
            prot: e
                .prot
                .as_ref()
                .map(|p| self.prot(p, "event.prot"))
                .transpose()?,
        };
        self.event_target(e, &spec, built)?;
        Ok(spec)
    }

    /// An unbind's pair is bonded; an overflow's IOMMU has a bonded device to flood with.
    pub(super) fn event_target(
        &self,
        e: &RawEvent,
        spec: &EventSpec,
        built: &Built<'_>,
    ) -> Result<(), ScenarioError> {
        match (spec.action, spec.device, spec.process, spec.iommu) {
            (Action::Unbind, Some(d), Some(p), _) if !built.bonds.contains(&(d, p)) => self.err(
                &e.action.span(),
                "event.process",
                format!(
                    "unbind of device '{}' from process '{}', which no [[bond]] binds",
                    built.devices[d].name, built.processes[p].name
                ),
            ),
            (Action::Overflow, _, _, Some(io))
                if !built
                    .bonds
                    .iter()
                    .any(|&(d, _)| built.devices[d].iommu == io) =>
            {
                self.err(
                    &e.iommu.as_ref().map_or(e.action.span(), Spanned::span),
                    "event.iommu",
                    format!(
                        "overflow of IOMMU '{}', which has no device bonded to a process: nothing would flood its page request queue",
                        e.iommu.as_ref().map_or("", |i| i.get_ref().as_str())
                    ),
                )
            }
            _ => Ok(()),
        }
    }

    /// An event gives every target field its action needs, and no other.
    pub(super) fn event_fields(&self, e: &RawEvent) -> Result<(), ScenarioError> {
        let action = *e.action.get_ref();
        let given: [(&str, bool); 6] = [
            ("device", e.device.is_some()),
            ("process", e.process.is_some()),
            ("vma", e.vma.is_some()),
            ("owner", e.owner.is_some()),
            ("iommu", e.iommu.is_some()),
            ("prot", e.prot.is_some()),
        ];
        for (field, present) in given {
            let needed = action.needs().contains(&field);
            if needed && !present {
                return self.err(
                    &e.action.span(),
                    &format!("event.{field}"),
                    format!("action {action:?} needs {}", action.needs().join(", ")),
                );
            }
            if !needed && present {
                return self.err(
                    &e.action.span(),
                    &format!("event.{field}"),
                    format!(
                        "action {action:?} takes no {field} (it needs {})",
                        action.needs().join(", ")
                    ),
                );
            }
        }
        Ok(())
    }
}
