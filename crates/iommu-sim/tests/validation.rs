//! One validation for `check` and `run`: every configuration the engine would fail on, or run
//! into an invariant violation the stack did not cause, is refused by `Scenario::parse` first
//! (what `check` runs), naming the line, the field, the value and the limit; everything a file
//! can size is bounded; the input itself is read with a size cap.

mod common;

use std::ffi::OsStr;

use common::{iommu_sim, refused, run_scenario, scenarios_dir, scratch_dir, ScenarioText};
use iommu_sim::engine::Mode;
use iommu_sim::invariants::Invariant;
use iommu_sim::scenario::{limits, read_text, Scenario};

/// One IOMMU `i0`, device `d0` bonded to process `p` (VMA `v`, 1 MiB, rw), and device `d1`
/// alone in its group: the file every test adds to.
fn minimal() -> String {
    ScenarioText::new("t", "i0")
        .device("d0", "i0", &[])
        .device("d1", "i0", &[])
        .process("p", &[("v", "1MiB")])
        .bond("d0", "p")
        .text()
        .to_string()
}

/// `extra` appended to [`minimal`] must be refused at the line holding `at` (its first
/// occurrence in `extra`), in `field`, with a message containing every one of `fragments`.
#[track_caller]
fn rejects(extra: &str, at: &str, field: &str, fragments: &[&str]) {
    let src = format!("{}{extra}", minimal());
    let line = minimal().lines().count()
        + extra
            .lines()
            .position(|l| l.contains(at))
            .expect("marker in the snippet")
        + 1;
    let err = Scenario::parse(&src).expect_err("the configuration must be refused");
    assert_eq!((err.line, err.field.as_str()), (line, field), "{err}");
    for f in fragments {
        assert!(
            err.message.contains(f),
            "message {:?} lacks {f:?}",
            err.message
        );
    }
}

/// `extra` appended to [`minimal`] is accepted.
#[track_caller]
fn accepts(extra: &str) -> Scenario {
    Scenario::parse(&format!("{}{extra}", minimal())).unwrap_or_else(|e| panic!("{e}"))
}

/// A write job of device `d0` on `p`/`v`: its name, then its other lines.
fn write_job(name: &str, lines: &str) -> String {
    format!(
        "\n[[job]]\nname = \"{name}\"\ndevice = \"d0\"\nop = \"write\"\nprocess = \"p\"\nvma = \"v\"\n{lines}"
    )
}

// --- ownership: groups, owners and bonds ---

#[test]
fn two_owners_on_one_device_are_refused() {
    rejects(
        "\n[[owner]]\nname = \"o1\"\ndevice = \"d1\"\n\n[[owner]]\nname = \"o2\"\ndevice = \"d1\" # 2nd\n",
        "# 2nd",
        "owner.device",
        &["[[owner]] #2 'o2'", "already owned by [[owner]] #1 'o1'", "at most one owner"],
    );
}

#[test]
fn two_owners_in_one_group_are_refused() {
    rejects(
        "\n[[device]]\nname = \"d2\"\niommu = \"i0\"\ngroup = \"d1\"\n\n[[owner]]\nname = \"o1\"\ndevice = \"d1\"\n\n[[owner]]\nname = \"o2\"\ndevice = \"d2\"\n",
        "device = \"d2\"",
        "owner.device",
        &["in group 'd1' with device 'd1'", "at most one owner"],
    );
}

#[test]
fn owner_of_a_bonded_device_is_refused() {
    rejects(
        "\n[[owner]]\nname = \"o\"\ndevice = \"d0\"\n",
        "device = \"d0\"",
        "owner.device",
        &["[[bond]] #1", "binds device 'd0' to process 'p'", "EBUSY"],
    );
}

#[test]
fn owner_in_a_group_with_a_bond_is_refused() {
    rejects(
        "\n[[device]]\nname = \"d2\"\niommu = \"i0\"\ngroup = \"d0\"\n\n[[owner]]\nname = \"o\"\ndevice = \"d2\"\n",
        "device = \"d2\"",
        "owner.device",
        &["device 'd2' is in group 'd0'", "binds device 'd0'"],
    );
}

#[test]
fn more_bonds_than_the_device_pasid_width_are_refused() {
    // p holds PASID 1; q is the second process bonded, so it gets PASID 2 >= 2^1.
    rejects(
        "\n[[device]]\nname = \"d2\"\niommu = \"i0\"\npasid_bits = 1\n\n[[process]]\nname = \"q\"\nvma = [{ name = \"v\", size = \"4K\", prot = \"rw\" }]\n\n[[bond]]\ndevice = \"d2\"\nprocess = \"q\"\n",
        "process = \"q\"",
        "bond.process",
        &["gets PASID 2", "device 'd2' takes PASIDs below 2", "pasid_bits 1"],
    );
    // One process on a 1-bit device is fine.
    accepts("\n[[device]]\nname = \"d2\"\niommu = \"i0\"\npasid_bits = 1\n\n[[bond]]\ndevice = \"d2\"\nprocess = \"p\"\n");
}

#[test]
fn more_bonds_than_the_iommu_pasid_width_are_refused() {
    rejects(
        "\n[[iommu]]\nname = \"i1\"\npasid_bits = 1\n\n[[device]]\nname = \"d2\"\niommu = \"i1\"\n\n[[process]]\nname = \"q\"\nvma = [{ name = \"v\", size = \"4K\", prot = \"rw\" }]\n\n[[bond]]\ndevice = \"d2\"\nprocess = \"q\"\n",
        "process = \"q\"",
        "bond.process",
        &["gets PASID 2", "device 20 bits, IOMMU 'i1' 1 bits"],
    );
}

#[test]
fn fault_capable_owner_on_a_device_without_pri_is_refused() {
    rejects(
        "\n[[device]]\nname = \"d2\"\niommu = \"i0\"\npri = false\n\n[[owner]]\nname = \"o\"\ndevice = \"d2\" # here\n",
        "# here",
        "owner.fault",
        &["[[owner]] #1 'o'", "device 'd2' has pri = false", "fault = false"],
    );
    rejects(
        "\n[[device]]\nname = \"d2\"\niommu = \"i0\"\nats = false\n\n[[owner]]\nname = \"o\"\ndevice = \"d2\"\nfault = true\n",
        "fault = true",
        "owner.fault",
        &["ats = false"],
    );
    // Without a fault queue the owner pins its jobs' IOVAs: no PRI needed.
    accepts("\n[[device]]\nname = \"d2\"\niommu = \"i0\"\npri = false\n\n[[owner]]\nname = \"o\"\ndevice = \"d2\"\nfault = false\n");
}

#[test]
fn bond_on_a_device_without_pri_or_ats_is_refused() {
    for (flag, says) in [
        ("pri = false", "pri = false"),
        ("ats = false", "ats = false"),
    ] {
        rejects(
            &format!("\n[[device]]\nname = \"d2\"\niommu = \"i0\"\n{flag}\n\n[[bond]]\ndevice = \"d2\"\nprocess = \"p\"\n"),
            "device = \"d2\"",
            "bond.device",
            &[says, "needs pri = true and ats = true"],
        );
    }
}

// --- jobs ---

#[test]
fn zero_repeat_is_refused() {
    rejects(
        &write_job("j", "len = \"64K\"\nrepeat = 0\n"),
        "repeat",
        "job.repeat",
        &["0 is out of range", "1 to 1000000"],
    );
}

#[test]
fn repeat_above_its_limit_is_refused() {
    rejects(
        &write_job("j", "len = \"4K\"\nrepeat = 1000001\n"),
        "repeat",
        "job.repeat",
        &["1000001", "1 to 1000000"],
    );
}

#[test]
fn zero_length_job_is_refused() {
    rejects(
        &write_job("j", "len = \"0K\"\n"),
        "len",
        "job.len",
        &["above 0"],
    );
}

#[test]
fn job_len_above_its_limit_is_refused() {
    rejects(
        "\n[[process]]\nname = \"big\"\nvma = [{ name = \"v\", size = \"2GiB\", prot = \"rw\" }]\n\n[[bond]]\ndevice = \"d0\"\nprocess = \"big\"\n\n[[job]]\nname = \"j\"\ndevice = \"d0\"\nop = \"read\"\nprocess = \"big\"\nvma = \"v\"\nlen = \"2GiB\"\n",
        "len = \"2GiB\"",
        "job.len",
        &["2147483648 bytes", "at most 1073741824"],
    );
}

#[test]
fn jobs_moving_more_than_the_run_limit_are_refused() {
    rejects(
        "\n[[process]]\nname = \"big\"\nvma = [{ name = \"v\", size = \"1GiB\", prot = \"rw\" }]\n\n[[bond]]\ndevice = \"d0\"\nprocess = \"big\"\n\n[[job]]\nname = \"j\"\ndevice = \"d0\"\nop = \"read\"\nprocess = \"big\"\nvma = \"v\"\nlen = \"1GiB\"\nrepeat = 65\n",
        "repeat",
        "job.repeat",
        &["[[job]] #1 'j'", "68719476736 bytes (64 GiB)"],
    );
}

#[test]
fn jobs_holding_more_than_the_run_limit_are_refused() {
    let mut extra = String::from(
        "\n[[process]]\nname = \"big\"\nvma = [{ name = \"v\", size = \"8GiB\", prot = \"rw\" }]\n\n[[bond]]\ndevice = \"d0\"\nprocess = \"big\"\n",
    );
    for k in 0..5 {
        extra.push_str(&format!(
            "\n[[job]]\nname = \"j{k}\"\ndevice = \"d0\"\nop = \"read\"\nprocess = \"big\"\nvma = \"v\"\noffset = \"{k}GiB\"\nlen = \"1GiB\" # {k}\n"
        ));
    }
    rejects(
        &extra,
        "# 4",
        "job.len",
        &["[[job]] #5 'j4'", "4294967296 bytes (4 GiB)"],
    );
}

#[test]
fn copy_shorter_than_two_bytes_is_refused() {
    rejects(
        "\n[[job]]\nname = \"j\"\ndevice = \"d0\"\nop = \"copy\"\nprocess = \"p\"\nvma = \"v\"\nlen = 1\n",
        "len = 1",
        "job.len",
        &["len of 2 or more"],
    );
}

#[test]
fn job_whose_offset_plus_len_overflows_is_refused() {
    rejects(
        &write_job("j", "offset = \"18446744073709547520\"\nlen = \"8K\"\n"),
        "len = \"8K\"",
        "job.len",
        &["runs past VMA 'v'"],
    );
}

#[test]
fn write_job_on_a_read_only_vma_is_refused() {
    rejects(
        "\n[[process]]\nname = \"q\"\nvma = [{ name = \"ro\", size = \"64K\", prot = \"r\" }]\n\n[[bond]]\ndevice = \"d0\"\nprocess = \"q\"\n\n[[job]]\nname = \"j\"\ndevice = \"d0\"\nop = \"fill\"\nprocess = \"q\"\nvma = \"ro\"\nlen = \"64K\"\n",
        "op = \"fill\"",
        "job.op",
        &["VMA 'ro' of process 'q' is read-only"],
    );
}

#[test]
fn overlapping_writers_in_a_vma_are_refused() {
    let extra = format!(
        "{}{}",
        write_job("j1", "len = \"64K\"\n"),
        "\n[[job]]\nname = \"j2\"\ndevice = \"d0\"\nop = \"fill\"\nprocess = \"p\"\nvma = \"v\"\noffset = \"32K\"\nlen = \"64K\"\n"
    );
    rejects(
        &extra,
        "name = \"j2\"",
        "job",
        &[
            "[[job]] #2 'j2' fills bytes 0x8000..0x10000 of VMA 'v' of process 'p'",
            "[[job]] #1 'j1'",
            "writes",
        ],
    );
}

#[test]
fn overlapping_writers_in_an_owner_iova_space_are_refused() {
    rejects(
        "\n[[owner]]\nname = \"o\"\ndevice = \"d1\"\n\n[[job]]\nname = \"j1\"\ndevice = \"d1\"\nop = \"write\"\nowner = \"o\"\niova = \"1G\"\nlen = \"64K\"\n\n[[job]]\nname = \"j2\"\ndevice = \"d1\"\nop = \"write\"\nowner = \"o\"\niova = \"1G\"\nlen = \"4K\"\n",
        "name = \"j2\"",
        "job",
        &["owner 'o''s IOVA space", "0x40000000..0x40001000"],
    );
}

#[test]
fn reader_overlapping_a_writer_is_refused() {
    let extra = format!(
        "{}{}",
        write_job("w", "len = \"1M\"\n"),
        "\n[[job]]\nname = \"r\"\ndevice = \"d0\"\nop = \"read\"\nprocess = \"p\"\nvma = \"v\"\nlen = \"4K\"\n"
    );
    rejects(
        &extra,
        "name = \"r\"",
        "job",
        &["'r' reads bytes 0x0..0x1000"],
    );
}

#[test]
fn overlapping_jobs_are_accepted_when_disjoint_read_only_or_cut_short() {
    // Disjoint writers; two readers on the same bytes.
    accepts(&format!(
        "{}{}\n[[job]]\nname = \"r1\"\ndevice = \"d0\"\nop = \"read\"\nprocess = \"p\"\nvma = \"v\"\nlen = \"1M\"\n\n[[job]]\nname = \"r2\"\ndevice = \"d0\"\nop = \"read\"\nprocess = \"p\"\nvma = \"v\"\nlen = \"1M\"\n",
        write_job("a", "len = \"4K\"\n"),
        write_job("b", "offset = \"4K\"\nlen = \"4K\"\n"),
    ).replace("len = \"1M\"", "offset = \"8K\"\nlen = \"64K\""));
    // An mprotect of the VMA cuts both short: their data is not compared (the default
    // scenario's web-fill and web-read).
    accepts(&format!(
        "{}{}\n[[event]]\naction = \"mprotect\"\nafter_groups = 4\nprocess = \"p\"\nvma = \"v\"\nprot = \"r\"\n",
        write_job("a", "len = \"64K\"\n"),
        write_job("b", "len = \"64K\"\n"),
    ));
}

#[test]
fn owner_job_near_the_top_of_the_address_space_is_refused() {
    let owner = "\n[[owner]]\nname = \"o\"\ndevice = \"d1\"\n\n[[job]]\nname = \"j\"\ndevice = \"d1\"\nop = \"write\"\nowner = \"o\"\n";
    // Past the 48-bit IOVA space.
    rejects(
        &format!("{owner}iova = \"256TiB\"\nlen = \"64K\"\n"),
        "iova",
        "job.iova",
        &[
            "iova 0x1000000000000 + len 0x10000",
            "0x1000000000000, 48 bits",
        ],
    );
    // iova + len wraps around 2^64.
    rejects(
        &format!("{owner}iova = \"18446744073709486080\"\nlen = \"128K\"\n"),
        "iova",
        "job.iova",
        &["iova 0xffffffffffff0000 + len 0x20000", "runs past the end"],
    );
}

#[test]
fn owner_job_on_another_device_is_refused() {
    rejects(
        "\n[[owner]]\nname = \"o\"\ndevice = \"d1\"\n\n[[job]]\nname = \"j\"\ndevice = \"d0\"\nop = \"read\"\nowner = \"o\"\nlen = \"4K\"\n",
        "device = \"d0\"",
        "job.device",
        &["owner 'o' owns device 'd1', not 'd0'"],
    );
}

#[test]
fn fields_of_the_other_kind_of_job_are_refused() {
    rejects(
        "\n[[owner]]\nname = \"o\"\ndevice = \"d1\"\n\n[[job]]\nname = \"j\"\ndevice = \"d1\"\nop = \"read\"\nowner = \"o\"\noffset = \"4K\"\nlen = \"4K\"\n",
        "offset",
        "job.offset",
        &["offset is for process jobs"],
    );
    rejects(
        &write_job("j", "iova = \"4K\"\nlen = \"4K\"\n"),
        "iova",
        "job.iova",
        &["iova is for owner jobs"],
    );
}

// --- events ---

#[test]
fn unbind_of_a_pair_never_bonded_is_refused() {
    rejects(
        "\n[[event]]\naction = \"unbind\"\nat_ms = 1\ndevice = \"d1\"\nprocess = \"p\"\n",
        "unbind",
        "event.process",
        &["unbind of device 'd1' from process 'p'", "no [[bond]]"],
    );
}

#[test]
fn overflow_of_an_iommu_with_no_bonded_device_is_refused() {
    rejects(
        "\n[[iommu]]\nname = \"i1\"\n\n[[event]]\naction = \"overflow\"\nat_ms = 1\niommu = \"i1\"\n",
        "iommu = \"i1\"",
        "event.iommu",
        &["IOMMU 'i1'", "nothing would flood"],
    );
}

#[test]
fn event_time_beyond_its_limit_is_refused() {
    rejects(
        "\n[[event]]\naction = \"exit\"\nat_ms = 9223372036854775807\nprocess = \"p\"\n",
        "at_ms",
        "event.at_ms",
        &["9223372036854775807 ms", "at most 600000 ms"],
    );
    rejects(
        "\n[[event]]\naction = \"exit\"\nafter_groups = 1099511627777\nprocess = \"p\"\n",
        "after_groups",
        "event.after_groups",
        &["1099511627777", "limit is 1099511627776"],
    );
}

// --- names and sizes ---

#[test]
fn empty_names_are_refused() {
    let err = Scenario::parse("[scenario]\nname = \"\"\n[[iommu]]\nname = \"i\"\n").unwrap_err();
    assert_eq!(
        (err.line, err.field.as_str()),
        (2, "scenario.name"),
        "{err}"
    );
    rejects(
        "\n[[device]]\nname = \"d2\"\niommu = \"i0\"\ngroup = \"\"\n",
        "group",
        "device.group",
        &["empty name"],
    );
}

#[test]
fn names_with_control_characters_are_refused() {
    rejects(
        &write_job("j\\u001b[31mOK", "len = \"4K\"\n"),
        "name = ",
        "job.name",
        &["control character U+001B", "'j\\u{1b}[31mOK'"],
    );
    let err = Scenario::parse("[scenario]\nname = \"a\\nb\"\n").unwrap_err();
    assert_eq!(err.field, "scenario.name", "{err}");
    // A reference is echoed escaped, never raw.
    let err = Scenario::parse(&format!(
        "{}\n[[device]]\nname = \"d9\"\niommu = \"\\u001b[2J\"\n",
        minimal()
    ))
    .unwrap_err();
    assert!(!err.to_string().contains('\u{1b}'), "{err}");
    assert!(err.message.contains("\\u{1b}[2J"), "{err}");
}

#[test]
fn size_overflowing_64_bits_is_refused() {
    rejects(
        "\n[[process]]\nname = \"q\"\nvma = [{ name = \"v\", size = \"99999999999TiB\", prot = \"rw\" }]\n",
        "99999999999TiB",
        "process.vma.size",
        &["'99999999999TiB' does not fit in 64 bits", "16777215 TiB"],
    );
}

#[test]
fn address_space_of_a_process_beyond_its_limit_is_refused() {
    rejects(
        "\n[[process]]\nname = \"q\"\nvma = [{ name = \"a\", size = \"32TiB\", prot = \"rw\" }, { name = \"b\", size = \"33TiB\", prot = \"rw\" }]\n",
        "33TiB",
        "process.vma.size",
        &["more than 70368744177664 bytes (64 TiB)"],
    );
    // A large lazy VMA inside the limit is fine.
    accepts(
        "\n[[process]]\nname = \"q\"\nvma = [{ name = \"a\", size = \"64TiB\", prot = \"rw\" }]\n",
    );
}

#[test]
fn tables_beyond_their_count_limit_are_refused() {
    let mut extra = String::new();
    for k in 1..=limits::MAX_IOMMUS {
        extra.push_str(&format!("\n[[iommu]]\nname = \"x{k}\"\n"));
    }
    rejects(
        &extra,
        &format!("x{}\"", limits::MAX_IOMMUS),
        "iommu",
        &["17 [[iommu]] tables: a scenario has at most 16"],
    );
    let vmas: Vec<String> = (0..=limits::MAX_VMAS_PER_PROCESS)
        .map(|k| format!("{{ name = \"v{k}\", size = 4096, prot = \"rw\" }}"))
        .collect();
    rejects(
        &format!("\n[[process]]\nname = \"q\"\nvma = [{}]\n", vmas.join(", ")),
        "vma = ",
        "process.vma",
        &["65 VMAs", "at most 64"],
    );
}

// --- reading the file ---

#[test]
fn text_larger_than_the_cap_is_refused() {
    let mut src = minimal();
    src.push_str(&"#".repeat(limits::MAX_FILE_BYTES as usize));
    let err = Scenario::parse(&src).unwrap_err();
    assert_eq!(err.field, "(file)");
    assert!(err.message.contains("at most 4194304 bytes"), "{err}");
}

#[test]
fn reading_refuses_device_files_and_oversized_files() {
    let err = read_text(std::path::Path::new("/dev/zero")).unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
    let dir = scratch_dir("validation-read");
    let big = dir.join("big.toml");
    let mut text = minimal();
    text.push_str(&"#".repeat(limits::MAX_FILE_BYTES as usize));
    std::fs::write(&big, &text).unwrap();
    let err = read_text(&big).unwrap_err();
    assert!(err.contains("more than 4194304 bytes"), "{err}");
    let ok = dir.join("ok.toml");
    std::fs::write(&ok, minimal()).unwrap();
    assert_eq!(read_text(&ok).unwrap(), minimal());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_and_run_refuse_a_device_file_as_input() {
    for cmd in ["check", "run"] {
        let stderr = refused([OsStr::new(cmd), OsStr::new("/dev/urandom")]);
        assert!(
            stderr.contains("/dev/urandom: cannot read: not a regular file"),
            "{stderr}"
        );
    }
}

#[test]
fn every_shipped_scenario_passes_check() {
    let mut files: Vec<_> = std::fs::read_dir(scenarios_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3);
    let out =
        iommu_sim(std::iter::once(OsStr::new("check")).chain(files.iter().map(|p| p.as_os_str())));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches(": ok: scenario").count(),
        files.len(),
        "{stdout}"
    );
}

#[test]
fn a_world_that_cannot_be_built_is_reported_not_a_panic() {
    // Past validation (a spec changed after parsing), the world's construction fails; the run
    // reports why, with nothing run, instead of panicking in an `expect`.
    let mut s = Scenario::parse(&minimal()).unwrap();
    s.iommus[0].pasid_bits = 21;
    for mode in [Mode::Threads, Mode::Deterministic { seed: 1 }] {
        let r = run_scenario(&s, 1, mode);
        let inv = r.invariants.as_ref().expect("invariants");
        assert_eq!(inv.count(Invariant::DataVerified), 1, "{}", r.text());
        let msg = &inv.violations[0].message;
        assert!(msg.starts_with("nothing ran: IOMMU 'i0'"), "{msg}");
        assert!(msg.contains("EINVAL"), "{msg}");
    }
}
