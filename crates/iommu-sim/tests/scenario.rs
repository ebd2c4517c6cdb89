//! Scenario files: the shipped examples validate, and every kind of bad input is refused with
//! the line, the field and what was expected.

mod common;

use std::ffi::OsStr;

use common::{refused, scratch_dir, ScenarioText};
use iommu_sim::scenario::{Action, JobOp, JobTarget, Scenario, Trigger};

/// One IOMMU, one device, one process with a 1 MiB VMA, the device bonded to it: the file
/// every test below adds to.
fn minimal() -> String {
    ScenarioText::new("t", "i0")
        .device("d0", "i0", &[])
        .process("p", &[("v", "1MiB")])
        .bond("d0", "p")
        .text()
        .to_string()
}

/// [`minimal`] with `extra` appended; asserts the error's line, field and a message fragment.
#[track_caller]
fn rejects(extra: &str, line: usize, field: &str, fragment: &str) {
    let src = format!("{}{extra}", minimal());
    let err = Scenario::parse(&src).expect_err("bad input must be refused");
    assert_eq!((err.line, err.field.as_str()), (line, field), "{err}");
    assert!(
        err.message.contains(fragment),
        "message {:?} lacks {fragment:?}",
        err.message
    );
}

/// Line of the first line of `extra` when appended to [`minimal`].
fn base() -> usize {
    minimal().lines().count() + 1
}

#[test]
fn shipped_scenarios_validate() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        Scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 3);
}

#[test]
fn default_scenario_has_what_the_issue_asks_for() {
    let text = include_str!("../../../scenarios/default.toml");
    let s = Scenario::parse(text).unwrap();
    assert_eq!(s.iommus.len(), 2);
    assert!(s.devices.iter().filter(|d| d.pri).count() >= 4);
    let nics: Vec<_> = s.devices.iter().filter(|d| d.group == "nics").collect();
    assert_eq!(nics.len(), 2, "one group of two devices");
    assert!(s.processes.len() >= 6);
    assert!(
        s.owners.iter().any(|o| o.2),
        "a VMM with a fault-capable HWPT"
    );
    for a in [
        Action::Unbind,
        Action::Exit,
        Action::Munmap,
        Action::Mprotect,
        Action::ReplaceHwpt,
        Action::ResetDevice,
        Action::Overflow,
    ] {
        assert!(s.events.iter().any(|e| e.action == a), "{a:?} missing");
    }
}

#[test]
fn valid_file_resolves_references_sizes_and_defaults() {
    let s = Scenario::parse(&format!(
        "{}\n[[job]]\nname = \"j\"\ndevice = \"d0\"\nop = \"copy\"\nprocess = \"p\"\nvma = \"v\"\noffset = \"4K\"\nlen = 8192\n\n[[event]]\naction = \"exit\"\nafter_groups = 3\nprocess = \"p\"\n",
        minimal()
    ))
    .unwrap();
    assert_eq!(
        (s.seed, s.iommus[0].prq_depth, s.iommus[0].pasid_bits),
        (1, 2048, 20)
    );
    assert_eq!(s.processes[0].vmas[0].size, 1 << 20);
    let j = &s.jobs[0];
    assert_eq!(
        (j.op, j.offset, j.len, &j.target),
        (JobOp::Copy, 4096, 8192, &JobTarget::Process(0, 0))
    );
    assert_eq!(s.events[0].trigger, Trigger::AfterGroups(3));
}

#[test]
fn toml_syntax_error_names_its_line() {
    rejects("[[device]\nname = \"x\"\n", base(), "(file)", "");
}

#[test]
fn unknown_field_is_refused() {
    rejects(
        "\n[[iommu]]\nname = \"i1\"\nqueue = 4\n",
        base() + 3,
        "(file)",
        "unknown field `queue`",
    );
}

#[test]
fn missing_required_field_is_refused() {
    rejects(
        "\n[[device]]\nname = \"d1\"\n",
        base() + 1,
        "(file)",
        "missing field `iommu`",
    );
}

#[test]
fn wrong_type_is_refused() {
    rejects(
        "\n[[iommu]]\nname = \"i1\"\nprq_depth = \"deep\"\n",
        base() + 3,
        "(file)",
        "invalid type",
    );
}

#[test]
fn duplicate_name_is_refused() {
    rejects(
        "\n[[device]]\nname = \"d0\"\niommu = \"i0\"\n",
        base() + 2,
        "device.name",
        "duplicate name 'd0'",
    );
}

#[test]
fn unknown_reference_lists_what_exists() {
    rejects(
        "\n[[device]]\nname = \"d1\"\niommu = \"i9\"\n",
        base() + 3,
        "device.iommu",
        "unknown IOMMU 'i9' (expected one of: i0)",
    );
}

#[test]
fn out_of_range_value_gives_the_range() {
    rejects(
        "\n[[device]]\nname = \"d1\"\niommu = \"i0\"\npasid_bits = 21\n",
        base() + 4,
        "device.pasid_bits",
        "expected 0 to 20",
    );
    rejects(
        "\n[[iommu]]\nname = \"i1\"\nprq_depth = 0\n",
        base() + 3,
        "iommu.prq_depth",
        "expected 1 to 65536",
    );
}

#[test]
fn bad_size_and_unaligned_size_are_refused() {
    rejects(
        "\n[[process]]\nname = \"q\"\nvma = [{ name = \"v\", size = \"64XB\", prot = \"rw\" }]\n",
        base() + 3,
        "process.vma.size",
        "not a size",
    );
    rejects(
        "\n[[process]]\nname = \"q\"\nvma = [{ name = \"v\", size = 100, prot = \"rw\" }]\n",
        base() + 3,
        "process.vma.size",
        "multiple of 4 KiB",
    );
}

#[test]
fn bad_protection_is_refused() {
    rejects(
        "\n[[process]]\nname = \"q\"\nvma = [{ name = \"v\", size = 4096, prot = \"wx\" }]\n",
        base() + 3,
        "process.vma.prot",
        "expected r, rw, rx or rwx",
    );
}

#[test]
fn group_spanning_two_iommus_is_refused() {
    rejects(
        "\n[[iommu]]\nname = \"i1\"\n\n[[device]]\nname = \"d1\"\niommu = \"i1\"\ngroup = \"d0\"\n",
        base() + 7,
        "device.group",
        "cannot span IOMMUs",
    );
}

#[test]
fn bond_to_device_without_pasid_is_refused() {
    rejects(
        "\n[[device]]\nname = \"d1\"\niommu = \"i0\"\npasid_bits = 0\n\n[[bond]]\ndevice = \"d1\"\nprocess = \"p\"\n",
        base() + 7,
        "bond.device",
        "no PASID support",
    );
}

#[test]
fn job_past_its_vma_is_refused() {
    rejects(
        "\n[[job]]\nname = \"j\"\ndevice = \"d0\"\nop = \"read\"\nprocess = \"p\"\nvma = \"v\"\noffset = \"1020K\"\nlen = \"8K\"\n",
        base() + 8,
        "job.len",
        "runs past VMA 'v'",
    );
}

#[test]
fn job_with_both_or_neither_target_is_refused() {
    rejects(
        "\n[[job]]\nname = \"j\"\ndevice = \"d0\"\nop = \"read\"\nlen = 4096\n",
        base() + 2,
        "job",
        "exactly one of",
    );
}

#[test]
fn job_on_an_unbonded_device_is_refused() {
    rejects(
        "\n[[device]]\nname = \"d1\"\niommu = \"i0\"\n\n[[job]]\nname = \"j\"\ndevice = \"d1\"\nop = \"read\"\nprocess = \"p\"\nvma = \"v\"\nlen = 4096\n",
        base() + 7,
        "job.device",
        "not bonded",
    );
}

#[test]
fn unknown_operation_or_action_is_refused() {
    rejects(
        "\n[[job]]\nname = \"j\"\ndevice = \"d0\"\nop = \"zap\"\nprocess = \"p\"\nvma = \"v\"\nlen = 4096\n",
        base() + 4,
        "(file)",
        "unknown variant `zap`",
    );
    rejects(
        "\n[[event]]\naction = \"explode\"\nat_ms = 1\n",
        base() + 2,
        "(file)",
        "unknown variant `explode`",
    );
}

#[test]
fn event_trigger_must_be_exactly_one() {
    rejects(
        "\n[[event]]\naction = \"exit\"\nprocess = \"p\"\n",
        base() + 2,
        "event",
        "exactly one trigger",
    );
    rejects(
        "\n[[event]]\naction = \"exit\"\nat_ms = 1\nafter_groups = 2\nprocess = \"p\"\n",
        base() + 2,
        "event",
        "exactly one trigger",
    );
}

#[test]
fn event_targets_must_match_the_action() {
    rejects(
        "\n[[event]]\naction = \"munmap\"\nat_ms = 1\nprocess = \"p\"\n",
        base() + 2,
        "event.vma",
        "needs process, vma",
    );
    rejects(
        "\n[[event]]\naction = \"exit\"\nat_ms = 1\nprocess = \"p\"\ndevice = \"d0\"\n",
        base() + 2,
        "event.device",
        "takes no device",
    );
}

#[test]
fn scenario_without_devices_is_refused() {
    let err = Scenario::parse("[scenario]\nname = \"empty\"\n").unwrap_err();
    assert_eq!(err.field, "device");
}

#[test]
fn check_subcommand_reports_file_and_line_and_exits_nonzero() {
    let dir = scratch_dir("check");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "{}\n[[device]]\nname = \"d1\"\niommu = \"nope\"\n",
            minimal()
        ),
    )
    .unwrap();
    let stderr = refused([OsStr::new("check"), bad.as_os_str()]);
    assert!(
        stderr.contains(&format!(
            "bad.toml:line {}: device.iommu: unknown IOMMU 'nope'",
            base() + 3
        )),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
