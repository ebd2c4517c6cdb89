//! How much memory the host can still give this process: the smaller of the machine's
//! `MemAvailable` and the headroom left under the memory limit of every cgroup the process sits
//! in. [`super::PhysMem::prefault`] touches all of the emulated memory at once, and past either
//! bound the kernel's OOM killer ends the process instead of an allocation failing. In a
//! container the machine's `MemAvailable` may be many times the container's limit.
//!
//! A cgroup's headroom is its limit minus its usage, where usage leaves out the inactive file
//! pages (page cache the kernel reclaims before it kills anything), as container runtimes
//! count it: otherwise a limit filled with old build output would look full. Cgroup v2 is
//! walked up to the top, each level's limit against its own usage; v1 gives one hierarchical
//! limit, set against the process's own cgroup's usage, which overstates the headroom when the
//! limit is an ancestor's that siblings share. Whatever cannot be read counts as unlimited: the
//! check is a guard against certain death, not an accounting.

use std::path::{Path, PathBuf};

/// Limits at or above this are "no limit" (cgroup v1 writes `PAGE_COUNTER_MAX` pages in bytes,
/// 0x7FFF_FFFF_FFFF_F000 on x86-64).
const UNLIMITED: u64 = 1 << 62;

/// What bounds the memory the host can still give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bound {
    /// The machine's `MemAvailable`.
    Machine(u64),
    /// The memory limit of one of the process's cgroups, less what the cgroup uses.
    Cgroup(u64),
}

impl Bound {
    pub(super) fn bytes(self) -> u64 {
        match self {
            Bound::Machine(b) | Bound::Cgroup(b) => b,
        }
    }
}

/// The tighter bound on what the host can still back for this process; `None` where nothing
/// could be read.
pub(super) fn memory_available() -> Option<Bound> {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| meminfo_available(&t))
        .map(Bound::Machine);
    let cgroups = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| cgroup_headroom(&t, Path::new("/sys/fs/cgroup")))
        .map(Bound::Cgroup);
    match (machine, cgroups) {
        (Some(m), Some(c)) => Some(if c.bytes() < m.bytes() { c } else { m }),
        (m, c) => m.or(c),
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub(super) fn meminfo_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The smallest headroom of the cgroups of a `/proc/self/cgroup` text, with the cgroup file
/// systems mounted under `root`: the v2 hierarchy (`root` itself, or `root/unified` on a
/// hybrid host) from the process's cgroup up to the top, and the v1 memory controller's
/// hierarchical limit.
pub(super) fn cgroup_headroom(self_cgroup: &str, root: &Path) -> Option<u64> {
    let mut least: Option<u64> = None;
    let mut take = |h: Option<u64>| {
        if let Some(h) = h {
            least = Some(least.map_or(h, |l| l.min(h)));
        }
    };
    for line in self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        // A cgroup outside the reader's cgroup namespace shows as a path up out of its root
        // ("/../x"): nothing under the mount is that cgroup.
        if path.split('/').any(|p| p == "..") {
            continue;
        }
        if id == "0" && controllers.is_empty() {
            let mount = if root.join("cgroup.controllers").exists() {
                root.to_path_buf()
            } else {
                root.join("unified")
            };
            for dir in ancestors(&mount, path) {
                take(v2_dir(&dir));
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            let mount = root.join("memory");
            // The innermost directory that exists: in a cgroup namespace the path is "/" and
            // the mount is the process's own cgroup already.
            if let Some(dir) = ancestors(&mount, path).into_iter().find(|d| d.is_dir()) {
                take(v1_dir(&dir));
            }
        }
    }
    least
}

/// `mount/path` and each of its parents up to `mount`, innermost first.
fn ancestors(mount: &Path, path: &str) -> Vec<PathBuf> {
    let mut dirs = vec![];
    let mut dir = mount.to_path_buf();
    dirs.push(dir.clone());
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        dir.push(part);
        dirs.push(dir.clone());
    }
    dirs.reverse();
    dirs
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// The headroom of one cgroup v2 directory; `None` without a memory limit there.
fn v2_dir(dir: &Path) -> Option<u64> {
    headroom_v2(
        &read(dir, "memory.max")?,
        &read(dir, "memory.current")?,
        &read(dir, "memory.stat").unwrap_or_default(),
    )
}

/// The headroom of the cgroup v1 memory controller's directory `dir` (its limit is
/// hierarchical already).
fn v1_dir(dir: &Path) -> Option<u64> {
    headroom_v1(
        &read(dir, "memory.limit_in_bytes")?,
        &read(dir, "memory.usage_in_bytes")?,
        &read(dir, "memory.stat").unwrap_or_default(),
    )
}

/// Headroom from cgroup v2's `memory.max` (`max`: none), `memory.current` and `memory.stat`.
pub(super) fn headroom_v2(max: &str, current: &str, stat: &str) -> Option<u64> {
    let limit: u64 = max.trim().parse().ok()?;
    let current: u64 = current.trim().parse().ok()?;
    let reclaimable = stat_value(stat, "inactive_file").unwrap_or(0);
    headroom(limit, current, reclaimable)
}

/// Headroom from cgroup v1's `memory.limit_in_bytes`, `memory.usage_in_bytes` and
/// `memory.stat` (whose `hierarchical_memory_limit` includes the ancestors' limits).
pub(super) fn headroom_v1(limit: &str, usage: &str, stat: &str) -> Option<u64> {
    let own: u64 = limit.trim().parse().ok()?;
    let limit = stat_value(stat, "hierarchical_memory_limit").map_or(own, |h| h.min(own));
    let usage: u64 = usage.trim().parse().ok()?;
    let reclaimable = stat_value(stat, "total_inactive_file")
        .or_else(|| stat_value(stat, "inactive_file"))
        .unwrap_or(0);
    headroom(limit, usage, reclaimable)
}

fn headroom(limit: u64, usage: u64, reclaimable: u64) -> Option<u64> {
    (limit < UNLIMITED).then(|| limit.saturating_sub(usage.saturating_sub(reclaimable)))
}

/// The value of `key` in a `memory.stat` text ("key value" lines).
fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn meminfo_gives_mem_available_in_bytes() {
        let text = "MemTotal:       24684096 kB\nMemFree: 1 kB\nMemAvailable:   23714428 kB\n";
        assert_eq!(meminfo_available(text), Some(23_714_428 * 1024));
        assert_eq!(meminfo_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn headroom_leaves_reclaimable_page_cache_out_of_the_usage() {
        let stat = "anon 1\ninactive_file 209715200\nactive_file 5\n";
        assert_eq!(headroom_v2("max\n", "1000", stat), None);
        assert_eq!(
            headroom_v2("1073741824\n", "629145600\n", stat),
            Some(1024 * MIB - 400 * MIB)
        );
        // Over the limit (the kernel is reclaiming): nothing left, not an underflow.
        assert_eq!(headroom_v2("1048576", "9999999999", ""), Some(0));
        assert_eq!(headroom_v2("garbage", "1", ""), None);
        // v1: "unlimited" is a huge page-aligned number; the hierarchical limit wins when
        // smaller.
        assert_eq!(headroom_v1("9223372036854771712\n", "5", ""), None);
        let v1 = "cache 1\nhierarchical_memory_limit 536870912\ntotal_inactive_file 104857600\n";
        assert_eq!(
            headroom_v1("9223372036854771712", "314572800", v1),
            Some(512 * MIB - 200 * MIB)
        );
    }

    /// A scratch directory laid out as `/sys/fs/cgroup`, removed on drop.
    struct FakeRoot(PathBuf);

    impl FakeRoot {
        fn new(name: &str) -> FakeRoot {
            let dir = std::env::temp_dir()
                .join(format!("iommu-emu-cgroup-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            FakeRoot(dir)
        }

        fn file(&self, rel: &str, text: &str) {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_tightest_cgroup_on_the_way_up_sets_the_headroom() {
        let root = FakeRoot::new("v2");
        root.file("cgroup.controllers", "cpu memory\n");
        // The parent has the limit, the process's own cgroup none.
        root.file("a/memory.max", &format!("{}\n", 1024 * MIB));
        root.file("a/memory.current", &format!("{}\n", 100 * MIB));
        root.file("a/b/memory.max", "max\n");
        root.file("a/b/memory.current", &format!("{}\n", 50 * MIB));
        assert_eq!(cgroup_headroom("0::/a/b\n", &root.0), Some(924 * MIB));
        // Nothing limited: no figure.
        assert_eq!(cgroup_headroom("0::/elsewhere\n", &root.0), None);
    }

    #[test]
    fn a_v1_memory_cgroup_counts_and_a_namespaced_path_falls_back_to_the_mount() {
        let root = FakeRoot::new("v1");
        root.file(
            "memory/x/memory.limit_in_bytes",
            &format!("{}\n", 300 * MIB),
        );
        root.file(
            "memory/x/memory.usage_in_bytes",
            &format!("{}\n", 100 * MIB),
        );
        let text = "9:name=systemd:/\n4:cpuacct,memory:/x\n0::/\n";
        assert_eq!(cgroup_headroom(text, &root.0), Some(200 * MIB));
        // In a cgroup namespace the host's path does not exist under the mount, which is the
        // process's own cgroup.
        root.file("memory/memory.limit_in_bytes", &format!("{}\n", 64 * MIB));
        root.file("memory/memory.usage_in_bytes", "0\n");
        assert_eq!(
            cgroup_headroom("4:memory:/not/here\n", &root.0),
            Some(64 * MIB)
        );
        // A cgroup outside the namespace is not looked for under the mount.
        assert_eq!(cgroup_headroom("4:memory:/../x\n", &root.0), None);
    }

    #[test]
    fn a_hybrid_host_reads_the_v2_hierarchy_under_unified() {
        let root = FakeRoot::new("hybrid");
        root.file("memory/memory.limit_in_bytes", "9223372036854771712\n");
        root.file("memory/memory.usage_in_bytes", "0\n");
        root.file("unified/svc/memory.max", &format!("{}\n", 128 * MIB));
        root.file("unified/svc/memory.current", &format!("{}\n", 28 * MIB));
        let text = "4:memory:/\n0::/svc\n";
        assert_eq!(cgroup_headroom(text, &root.0), Some(100 * MIB));
        // Its top has no memory controller: no limit.
        assert_eq!(cgroup_headroom("4:memory:/\n0::/\n", &root.0), None);
    }
}
