//! The kernel OOM killer's counter of flowinit's own memory cgroup: the
//! `oom_kill` line of cgroup v2's `memory.events` (or, on a cgroup v1
//! host, of the memory controller's `memory.oom_control`). flowinit's
//! cgroup is the container's, and every unit runs in it, so the counter
//! rising over a run says the OOM killer struck while that run was alive.
//! As the count is the whole container's, each kill is put down to one
//! unit's death only ([`take_one`]). Read only, and only ever as a hint:
//! anything unreadable is `None`. The logic is pure ([`own_cgroups`],
//! [`oom_kill_line`], [`claim`]) and unit-tested.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where cgroup v2 is mounted, and v1's memory controller.
const V2_MOUNT: &str = "/sys/fs/cgroup";
const V1_MEMORY_MOUNT: &str = "/sys/fs/cgroup/memory";

/// The OOM killer's count in one file, named for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomKills {
    /// `memory.events` (cgroup v2) or `memory.oom_control` (v1).
    pub file: &'static str,
    pub count: u64,
}

/// flowinit's cgroup paths from the text of `/proc/self/cgroup`: the
/// unified (v2) one (`0::PATH`) and v1's memory controller's
/// (`N:...memory...:PATH`), each if present.
pub fn own_cgroups(proc_self_cgroup: &str) -> (Option<&str>, Option<&str>) {
    let (mut v2, mut v1) = (None, None);
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if controllers.is_empty() {
            v2 = Some(path);
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path);
        }
    }
    (v2, v1)
}

/// The number on the `oom_kill N` line (the same in `memory.events` and
/// `memory.oom_control`).
pub fn oom_kill_line(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

/// The files to try, best first: the cgroup's own file under the mount,
/// then the mount's root (inside a container with cgroup v1, or v2 and the
/// host's cgroup namespace, `/proc/self/cgroup` names the host's path while
/// the mount's root is the container's own cgroup).
fn candidates(proc_self_cgroup: &str) -> Vec<(PathBuf, &'static str)> {
    let (v2, v1) = own_cgroups(proc_self_cgroup);
    let under = |mount: &str, path: &str, file: &str| Path::new(mount).join(path.trim_start_matches('/')).join(file);
    let mut out = Vec::new();
    if let Some(p) = v2 {
        out.push((under(V2_MOUNT, p, "memory.events"), "memory.events"));
        out.push((Path::new(V2_MOUNT).join("memory.events"), "memory.events"));
    }
    if let Some(p) = v1 {
        out.push((under(V1_MEMORY_MOUNT, p, "memory.oom_control"), "memory.oom_control"));
        out.push((Path::new(V1_MEMORY_MOUNT).join("memory.oom_control"), "memory.oom_control"));
    }
    out
}

/// The count up to which OOM kills were put down to a unit's death.
static EXPLAINED: AtomicU64 = AtomicU64::new(0);

/// One OOM kill between the counts `before` and `after` of a run, for a
/// death of that run, if one is left that no other death was put down to
/// (with `explained` so far): the new `explained`.
pub fn claim(explained: u64, before: u64, after: u64) -> Option<u64> {
    let base = explained.max(before);
    (after > base).then_some(base + 1)
}

/// Puts one OOM kill that happened between `before` and `after` down to the
/// death of a unit's process; false when every such kill was already
/// another unit's (that one died of it, not this one).
pub fn take_one(before: u64, after: u64) -> bool {
    EXPLAINED.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |e| claim(e, before, after)).is_ok()
}

/// The OOM killer's count for flowinit's cgroup now, if it can be read.
pub fn oom_kills() -> Option<OomKills> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    candidates(&own).into_iter().find_map(|(path, file)| {
        let count = oom_kill_line(&std::fs::read_to_string(path).ok()?)?;
        Some(OomKills { file, count })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unified path and v1's memory path.
    type Paths = (Option<&'static str>, Option<&'static str>);

    #[test]
    fn finds_the_unified_and_the_v1_memory_paths() {
        let table: &[(&str, Paths)] = &[
            ("0::/\n", (Some("/"), None)),
            ("0::/system.slice/docker-ab12.scope\n", (Some("/system.slice/docker-ab12.scope"), None)),
            ("9:name=systemd:/\n4:memory:/process_api/e40c\n1:cpu:/\n0::/\n", (Some("/"), Some("/process_api/e40c"))),
            ("12:cpu,memory:/docker/xyz\n", (None, Some("/docker/xyz"))),
            ("5:memoryx:/no\n", (None, None)),
            ("", (None, None)),
            ("garbage\n", (None, None)),
        ];
        for (text, want) in table {
            assert_eq!(own_cgroups(text), *want, "{text:?}");
        }
    }

    #[test]
    fn reads_the_oom_kill_line() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 4\noom_kill 3\noom_group_kill 0\n";
        assert_eq!(oom_kill_line(v2), Some(3));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 17\n";
        assert_eq!(oom_kill_line(v1), Some(17));
        assert_eq!(oom_kill_line("oom 4\noom_group_kill 2\n"), None);
        assert_eq!(oom_kill_line("oom_kill x\n"), None);
        assert_eq!(oom_kill_line(""), None);
    }

    #[test]
    fn each_oom_kill_explains_one_death() {
        // (explained so far, before, after) → the new mark, or not this one's.
        let table = [
            ((0, 3, 4), Some(4)),
            ((0, 3, 3), None),
            ((4, 3, 4), None),
            ((4, 3, 5), Some(5)),
            ((3, 0, 5), Some(4)),
            ((0, 7, 2), None),
        ];
        for ((explained, before, after), want) in table {
            assert_eq!(claim(explained, before, after), want, "{explained} {before} {after}");
        }
        // Two units whose runs both saw the count go 0 → 2: one kill each;
        // a third, killed with kill -9 meanwhile, gets none.
        let mut e = 0;
        for want in [Some(1), Some(2), None] {
            let got = claim(e, 0, 2);
            assert_eq!(got, want);
            e = got.unwrap_or(e);
        }
    }

    #[test]
    fn tries_the_cgroups_own_file_then_the_mount_root() {
        let files: Vec<String> =
            candidates("4:memory:/a/b\n0::/c\n").into_iter().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(
            files,
            [
                "/sys/fs/cgroup/c/memory.events",
                "/sys/fs/cgroup/memory.events",
                "/sys/fs/cgroup/memory/a/b/memory.oom_control",
                "/sys/fs/cgroup/memory/memory.oom_control",
            ]
        );
        let root: Vec<PathBuf> = candidates("0::/\n").into_iter().map(|(p, _)| p).collect();
        assert_eq!(root[0], Path::new("/sys/fs/cgroup/memory.events"));
    }
}
