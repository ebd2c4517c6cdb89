//! Validation of the tables that build the machine: IOMMUs, devices, processes, bonds, owners.

use std::collections::BTreeMap;

use toml::Spanned;

use super::fields::Ctx;
use super::limits::MAX_PROCESS_VM;
use super::parse::NameMap;
use super::raw::{RawBond, RawDevice, RawFile, RawIommu, RawProcess};
use super::spec::{DeviceSpec, IommuSpec, ProcessSpec, VmaSpec};
use super::ScenarioError;

/// One validation step per table.
impl Ctx<'_> {
    /// An `[[iommu]]`: its sizes in range, defaults filled in.
    pub(super) fn iommu(&self, i: &RawIommu) -> Result<IommuSpec, ScenarioError> {
        Ok(IommuSpec {
            name: i.name.get_ref().clone(),
            prq_depth: self.opt_range(&i.prq_depth, "iommu.prq_depth", 1, 65_536, 2048)?,
            iotlb_entries: self.opt_range(
                &i.iotlb_entries,
                "iommu.iotlb_entries",
                1,
                1 << 20,
                1024,
            )?,
            pasid_bits: self.opt_range(&i.pasid_bits, "iommu.pasid_bits", 0, 20, 20)?,
            workers: self.opt_range(&i.workers, "iommu.workers", 1, 64, 2)?,
        })
    }

    /// The `[[device]]`s: at least one, each behind a known IOMMU, no group spanning IOMMUs.
    pub(super) fn devices(
        &self,
        raw: &[RawDevice],
        iommu_names: &NameMap,
        iommus: &[IommuSpec],
    ) -> Result<Vec<DeviceSpec>, ScenarioError> {
        if raw.is_empty() {
            return self.err(
                &(0..0),
                "device",
                "a scenario needs at least one [[device]]",
            );
        }
        let mut group_iommu: BTreeMap<String, usize> = BTreeMap::new();
        let mut devices = Vec::new();
        for d in raw {
            let iommu = self.lookup(iommu_names, &d.iommu, "device.iommu", "IOMMU")?;
            if let Some(g) = &d.group {
                self.name(g, "device.group")?;
            }
            let group = d.group.as_ref().unwrap_or(&d.name);
            if let Some(&other) = group_iommu.get(group.get_ref()) {
                if other != iommu {
                    return self.err(
                        &group.span(),
                        "device.group",
                        format!(
                            "group '{}' is behind IOMMU '{}'; a group cannot span IOMMUs",
                            group.get_ref(),
                            iommus[other].name
                        ),
                    );
                }
            }
            group_iommu.insert(group.get_ref().clone(), iommu);
            devices.push(DeviceSpec {
                name: d.name.get_ref().clone(),
                iommu,
                group: group.get_ref().clone(),
                pasid_bits: self.opt_range(&d.pasid_bits, "device.pasid_bits", 0, 20, 20)?,
                pri_credits: self.opt_range(&d.pri_credits, "device.pri_credits", 1, 512, 32)?,
                ats: d.ats.as_ref().is_none_or(|v| *v.get_ref()),
                pri: d.pri.as_ref().is_none_or(|v| *v.get_ref()),
            });
        }
        Ok(devices)
    }

    /// The `[[process]]`es and their VMAs, whose sizes add up to at most
    /// [`MAX_PROCESS_VM`]; returns them and each process's VMA names.
    pub(super) fn processes(
        &self,
        raw: &[RawProcess],
    ) -> Result<(Vec<ProcessSpec>, Vec<NameMap>), ScenarioError> {
        let mut vma_names = Vec::new();
        let mut processes = Vec::new();
        for p in raw {
            let names = self.names(p.vma.iter().map(|v| &v.name), "process.vma.name")?;
            let mut total = 0u64;
            let mut vmas = Vec::new();
            for v in &p.vma {
                let size = self.size(&v.size, "process.vma.size", true)?;
                total = match total.checked_add(size) {
                    Some(t) if t <= MAX_PROCESS_VM => t,
                    _ => {
                        return self.err(
                            &v.size.span(),
                            "process.vma.size",
                            format!(
                                "process '{}': its VMAs add up to more than {MAX_PROCESS_VM} bytes (64 TiB), the limit of one process's address space",
                                p.name.get_ref()
                            ),
                        )
                    }
                };
                vmas.push(VmaSpec {
                    name: v.name.get_ref().clone(),
                    size,
                    prot: self.prot(&v.prot, "process.vma.prot")?,
                });
            }
            vma_names.push(names);
            processes.push(ProcessSpec {
                name: p.name.get_ref().clone(),
                vmas,
            });
        }
        Ok((processes, vma_names))
    }

    /// The `[[bond]]`s: each (device, process) once; the device PASID-, PRI- and ATS-capable
    /// (SVA faults pages in); the process's PASID inside the device's PASID range. Processes
    /// get PASIDs 1, 2, ... in the order of their first bond, as the run's allocator gives
    /// them; a device's range is below 2^min(its pasid_bits, its IOMMU's).
    pub(super) fn bonds(
        &self,
        raw: &[RawBond],
        dev_names: &NameMap,
        proc_names: &NameMap,
        iommus: &[IommuSpec],
        devices: &[DeviceSpec],
    ) -> Result<Vec<(usize, usize)>, ScenarioError> {
        let mut bonds = Vec::new();
        let mut pasid_of: BTreeMap<usize, u32> = BTreeMap::new();
        for (k, b) in raw.iter().enumerate() {
            let d = self.lookup(dev_names, &b.device, "bond.device", "device")?;
            let p = self.lookup(proc_names, &b.process, "bond.process", "process")?;
            let dev = &devices[d];
            let iommu = &iommus[dev.iommu];
            if dev.pasid_bits == 0 || iommu.pasid_bits == 0 {
                return self.err(&b.device.span(), "bond.device", format!(
                    "device '{}' has no PASID support: SVA needs pasid_bits > 0 on the device and its IOMMU",
                    dev.name
                ));
            }
            if !dev.pri || !dev.ats {
                return self.err(
                    &b.device.span(),
                    "bond.device",
                    format!(
                        "device '{}' has {}: SVA memory is faulted in on demand, which needs pri = true and ats = true (PCIe PRI works through ATS)",
                        dev.name,
                        if dev.pri { "ats = false" } else { "pri = false" }
                    ),
                );
            }
            if bonds.contains(&(d, p)) {
                return self.err(
                    &b.device.span(),
                    "bond",
                    "the same (device, process) is bonded twice",
                );
            }
            let next = u32::try_from(pasid_of.len() + 1).unwrap_or(u32::MAX);
            let pasid = *pasid_of.entry(p).or_insert(next);
            let bits = dev.pasid_bits.min(iommu.pasid_bits);
            if u64::from(pasid) >= 1u64 << bits {
                return self.err(
                    &b.process.span(),
                    "bond.process",
                    format!(
                        "[[bond]] #{}: process '{}' gets PASID {pasid} (processes get PASIDs 1, 2, ... in the order of their first bond), but device '{}' takes PASIDs below {} (pasid_bits {bits}: device {} bits, IOMMU '{}' {} bits), so only the first {} processes bonded can be bonded to it: widen pasid_bits or bond it to processes bonded earlier",
                        k + 1,
                        b.process.get_ref(),
                        dev.name,
                        1u64 << bits,
                        dev.pasid_bits,
                        iommu.name,
                        iommu.pasid_bits,
                        (1u64 << bits) - 1
                    ),
                );
            }
            bonds.push((d, p));
        }
        Ok(bonds)
    }

    /// The `[[owner]]`s, (name, device index, fault-capable HWPT) each: a fault-capable one on
    /// a device with PRI (and ATS), at most one per group (iommufd claims the whole group), and
    /// none in a group with an SVA bond (a group with PASID attachments cannot change owner).
    pub(super) fn owners(
        &self,
        raw: &RawFile,
        dev_names: &NameMap,
        devices: &[DeviceSpec],
        bonds: &[(usize, usize)],
    ) -> Result<Vec<(String, usize, bool)>, ScenarioError> {
        let mut owners: Vec<(String, usize, bool)> = Vec::new();
        for (k, o) in raw.owner.iter().enumerate() {
            let d = self.lookup(dev_names, &o.device, "owner.device", "device")?;
            let dev = &devices[d];
            let fault = o.fault.as_ref().is_none_or(|f| *f.get_ref());
            if fault && (!dev.pri || !dev.ats) {
                let span = o.fault.as_ref().map_or(o.device.span(), Spanned::span);
                return self.err(
                    &span,
                    "owner.fault",
                    format!(
                        "[[owner]] #{} '{}': a fault-capable HWPT (fault = true, the default) needs a device that can report page faults, but device '{}' has {} (PRI needs pri = true and ats = true); set fault = false to pin the jobs' IOVAs instead",
                        k + 1,
                        o.name.get_ref(),
                        dev.name,
                        if dev.pri { "ats = false" } else { "pri = false" }
                    ),
                );
            }
            let same_group =
                |x: usize| devices[x].iommu == dev.iommu && devices[x].group == dev.group;
            if let Some(m) = owners.iter().position(|other| same_group(other.1)) {
                let od = &devices[owners[m].1].name;
                let why = if owners[m].1 == d {
                    format!("device '{}' is already owned", dev.name)
                } else {
                    format!(
                        "device '{}' is in group '{}' with device '{od}', owned",
                        dev.name, dev.group
                    )
                };
                return self.err(
                    &o.device.span(),
                    "owner.device",
                    format!(
                        "[[owner]] #{} '{}': {why} by [[owner]] #{} '{}' (line {}): iommufd claims a whole group, so a group has at most one owner",
                        k + 1,
                        o.name.get_ref(),
                        m + 1,
                        owners[m].0,
                        self.line(&raw.owner[m].name.span())
                    ),
                );
            }
            if let Some(bi) = bonds.iter().position(|&(bd, _)| same_group(bd)) {
                let bd = bonds[bi].0;
                return self.err(
                    &o.device.span(),
                    "owner.device",
                    format!(
                        "[[owner]] #{} '{}': device '{}' is in group '{}', where [[bond]] #{} (line {}) binds device '{}' to process '{}' by SVA: a group with PASID attachments cannot be owned through iommufd (EBUSY)",
                        k + 1,
                        o.name.get_ref(),
                        dev.name,
                        dev.group,
                        bi + 1,
                        self.line(&raw.bond[bi].device.span()),
                        devices[bd].name,
                        raw.bond[bi].process.get_ref(),
                    ),
                );
            }
            owners.push((o.name.get_ref().clone(), d, fault));
        }
        Ok(owners)
    }
}
