//! The scenario's events on a built world: firing one (unbind, exit, munmap, mprotect, HWPT
//! replacement, device reset; `overflow` floods are run by each mode), where an `overflow`
//! floods, and which job failures a fired event explains.

use std::sync::RwLock;

use iommufd::IOMMU_NO_PASID;

use super::world::{to_emu_prot, World};
use super::{FLOOD_PAGES, FLOOD_THREADS, PAGE};
use crate::invariants::Event;
use crate::scenario::{Action, EventSpec, Scenario};

impl World<'_> {
    /// Whether the fired events explain a failure of job `i`.
    pub(super) fn affected(&self, fired: &[usize], i: usize) -> bool {
        let j = &self.scenario.jobs[i];
        fired.iter().any(|&k| self.scenario.events[k].cuts_short(j))
    }

    /// Fires event `i`, except `overflow` (each mode floods its own way). With `dev_locks`
    /// (threads mode) an unbind first waits for the device's DMA chunks in flight, so a chunk
    /// completed before the unbind is recorded before it.
    pub(super) fn fire(&self, i: usize, dev_locks: Option<&[RwLock<()>]>) {
        let e = &self.scenario.events[i];
        match e.action {
            Action::Unbind => self.unbind(e, dev_locks),
            Action::Exit => {
                if let Some(p) = e.process {
                    self.mms[p].exit();
                }
            }
            Action::Munmap => {
                if let (Some(p), Some(v)) = (e.process, e.vma) {
                    let (a, len) = self.vma(p, v);
                    let _ = self.mms[p].munmap(a, len);
                }
            }
            Action::Mprotect => {
                if let (Some(p), Some(v), Some(prot)) = (e.process, e.vma, e.prot) {
                    let (a, len) = self.vma(p, v);
                    let _ = self.mms[p].mprotect(a, len, to_emu_prot(prot));
                }
            }
            Action::ReplaceHwpt => {
                if let Some(o) = e.owner.and_then(|o| self.owner(o)) {
                    if let Ok(h) = o.ictx.hwpt_alloc(o.dev_id, o.ioas, 0, 0, 0, &[]) {
                        let _ = o.ictx.device_replace(o.dev_id, IOMMU_NO_PASID, h);
                    }
                }
            }
            Action::ResetDevice => {
                if let Some(d) = e.device {
                    self.eps[d].reset();
                }
            }
            Action::Overflow => {}
        }
    }

    /// An `unbind` event: the bond is taken (so teardown does not unbind it again) and its
    /// unbind's return is observed.
    fn unbind(&self, e: &EventSpec, dev_locks: Option<&[RwLock<()>]>) {
        let (Some(d), Some(p)) = (e.device, e.process) else {
            return;
        };
        let Some(slot) = self.bonds.get(&(d, p)) else {
            return;
        };
        let _w = dev_locks.map(|l| l[d].write().expect("device lock"));
        if let Some(b) = slot.lock().expect("bond").take() {
            b.unbind();
            self.obs.observe(Event::UnbindReturned {
                dev: d as u64,
                pasid: self.pasids[&(d, p)],
            });
        }
    }

    /// The address and size of VMA `v` of process `p`.
    fn vma(&self, p: usize, v: usize) -> (u64, u64) {
        (self.vma_addr[p][v], self.scenario.processes[p].vmas[v].size)
    }

    /// The flood regions of an `overflow` event: (device, PASID, address) per flooding actor.
    pub(super) fn flood_targets(&self, i: usize) -> Vec<(usize, u32, u64)> {
        let e = &self.scenario.events[i];
        let Some(list) = e.iommu.and_then(|io| self.floods.get(&io)) else {
            return Vec::new();
        };
        list.iter()
            .flat_map(|&(d, pasid, base)| {
                (0..FLOOD_THREADS).map(move |t| (d, pasid, base + t * FLOOD_PAGES * PAGE))
            })
            .collect()
    }
}

/// An action's name as a scenario file spells it.
pub(crate) fn action_name(a: Action) -> &'static str {
    match a {
        Action::Unbind => "unbind",
        Action::Exit => "exit",
        Action::Munmap => "munmap",
        Action::Mprotect => "mprotect",
        Action::ReplaceHwpt => "replace_hwpt",
        Action::ResetDevice => "reset_device",
        Action::Overflow => "overflow",
    }
}

/// The agent an event acts on, as a trace track name: the device reset or unbound, the
/// process that exits or changes its memory, the owner whose HWPT is replaced, the IOMMU
/// queue flooded.
pub(super) fn event_agent(s: &Scenario, e: &EventSpec) -> String {
    match e.action {
        Action::Unbind | Action::ResetDevice => e
            .device
            .and_then(|d| s.devices.get(d))
            .map_or("device ?".into(), |d| format!("device {}", d.name)),
        Action::Exit | Action::Munmap | Action::Mprotect => e
            .process
            .and_then(|p| s.processes.get(p))
            .map_or("process ?".into(), |p| format!("process {}", p.name)),
        Action::ReplaceHwpt => e
            .owner
            .and_then(|o| s.owners.get(o))
            .map_or("owner ?".into(), |o| format!("owner {}", o.0)),
        Action::Overflow => e
            .iommu
            .and_then(|i| s.iommus.get(i))
            .map_or("queue ?".into(), |i| format!("queue {}", i.name)),
    }
}
