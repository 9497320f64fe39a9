//! What the processes of a unit's run use, from `/proc`: resident memory,
//! CPU time and how many processes there are. Read only when someone asks
//! (`flowinit status`) or a consumer needs it (a unit's `memory_max`
//! check): nothing here runs by itself.
//!
//! A run's processes are its main process's session (flowinit starts every
//! service with `setsid`, so the session id is the main pid: every process
//! group the run made inside it counts), the descendants of those that left
//! the session (a `setsid` child whose parent is still there), and what
//! escaped entirely: an orphan re-parented to flowinit, found by the run's
//! tag in its environment (`FLOWINIT_RUN`, see [`super::tree`]). One
//! [`sample`] reads every `/proc/PID/stat` once, whatever the number of
//! runs asked about, and the environment only of flowinit's own children
//! that are no unit's main process.
//!
//! The figures, per run: `rss_bytes` is the sum of the processes' resident
//! set sizes (pages shared between them are counted in each, as `ps` and
//! `top` do); `cpu_seconds` is user + system time of the live processes
//! plus the time of the children each of them has waited for (`cutime`,
//! `cstime`), so a shell's finished commands count; a process that exited
//! and was reaped by flowinit (an orphan) takes its time with it, so the
//! figure can drop. Zombies count for their CPU time, not as processes.

use super::signal::Pid;
use super::tree::RUN_TAG_VAR;
use std::collections::HashMap;

/// What one run uses, summed over its processes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    pub rss_bytes: u64,
    /// User + system, of live processes and the children they reaped.
    pub cpu_seconds: f64,
    /// Live (not zombie) processes.
    pub processes: u32,
}

/// A run to measure: its main process (the leader of its session) and the
/// tag in its environment, if it has one.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    pub pid: Pid,
    pub tag: Option<&'a str>,
}

/// The fields of `/proc/PID/stat` used here; times in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    pub session: i32,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
    pub rss_pages: u64,
}

impl Stat {
    fn live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }

    fn ticks(&self) -> u64 {
        self.utime.saturating_add(self.stime).saturating_add(self.cutime).saturating_add(self.cstime)
    }
}

/// Parses a `/proc/PID/stat` line (proc(5)): the command name is in
/// parentheses and may hold anything, spaces and `)` included, so the
/// fields are counted from its last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (head, rest) = text.rsplit_once(')')?;
    let pid = head.split_once('(')?.0.trim().parse().ok()?;
    // Field 3 (state) is the first after the name; n is proc(5)'s number.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let at = |n: usize| f.get(n - 3).copied();
    let num = |n: usize| at(n)?.parse::<u64>().ok();
    let int = |n: usize| at(n)?.parse::<i32>().ok();
    Some(Stat {
        pid,
        state: at(3)?.chars().next()?,
        ppid: int(4)?,
        session: int(6)?,
        utime: num(14)?,
        stime: num(15)?,
        // Signed in the kernel's format; never negative in practice.
        cutime: at(16)?.parse::<i64>().ok()?.max(0) as u64,
        cstime: at(17)?.parse::<i64>().ok()?.max(0) as u64,
        rss_pages: at(24)?.parse::<i64>().ok()?.max(0) as u64,
    })
}

/// The value of `FLOWINIT_RUN` in a `/proc/PID/environ` block.
pub fn run_tag(environ: &[u8]) -> Option<&str> {
    let key = RUN_TAG_VAR.as_bytes();
    environ.split(|&b| b == 0).find_map(|entry| {
        let value = entry.strip_prefix(key)?.strip_prefix(b"=")?;
        std::str::from_utf8(value).ok()
    })
}

/// The system's clock ticks per second and page size.
#[derive(Debug, Clone, Copy)]
pub struct Units {
    pub ticks_per_second: u64,
    pub page_bytes: u64,
}

impl Units {
    pub fn of_this_system() -> Units {
        use nix::unistd::{sysconf, SysconfVar};
        let get = |v, default: u64| match sysconf(v) {
            Ok(Some(n)) if n > 0 => n as u64,
            _ => default,
        };
        Units { ticks_per_second: get(SysconfVar::CLK_TCK, 100), page_bytes: get(SysconfVar::PAGE_SIZE, 4096) }
    }
}

/// Sums `stats` per run (pure). `me`: flowinit's pid, whose children that
/// are no run's main process are looked up by tag with `tag_of`. A run
/// whose main process is not among `stats` is None.
pub fn attribute(
    stats: &[Stat],
    me: i32,
    runs: &[Run<'_>],
    units: Units,
    mut tag_of: impl FnMut(i32) -> Option<String>,
) -> Vec<Option<Usage>> {
    let by_pid: HashMap<i32, &Stat> = stats.iter().map(|s| (s.pid, s)).collect();
    let by_session: HashMap<i32, usize> = runs.iter().enumerate().map(|(i, r)| (r.pid.raw(), i)).collect();
    let by_tag: HashMap<&str, usize> =
        runs.iter().enumerate().filter_map(|(i, r)| Some((r.tag?, i))).collect::<HashMap<_, _>>();
    let mut owner: HashMap<i32, Option<usize>> = HashMap::new();
    let mut ticks = vec![0u64; runs.len()];
    let mut pages = vec![0u64; runs.len()];
    let mut count = vec![0u32; runs.len()];
    let mut path = Vec::new();
    for s in stats {
        // Walk up until something decides: a run's session, flowinit's
        // child (by its tag), a process seen before, or outside our tree.
        path.clear();
        let mut cur = s;
        let found = loop {
            if let Some(&o) = owner.get(&cur.pid) {
                break o;
            }
            path.push(cur.pid);
            if let Some(&i) = by_session.get(&cur.session) {
                break Some(i);
            }
            if cur.ppid == me {
                break if by_tag.is_empty() {
                    None
                } else {
                    tag_of(cur.pid).and_then(|t| by_tag.get(t.as_str()).copied())
                };
            }
            match by_pid.get(&cur.ppid) {
                Some(parent) if parent.pid != cur.pid && path.len() <= stats.len() => cur = parent,
                _ => break None,
            }
        };
        for p in &path {
            owner.insert(*p, found);
        }
        if let Some(i) = found {
            ticks[i] = ticks[i].saturating_add(s.ticks());
            if s.live() {
                pages[i] = pages[i].saturating_add(s.rss_pages);
                count[i] += 1;
            }
        }
    }
    runs.iter()
        .enumerate()
        .map(|(i, r)| {
            by_pid.get(&r.pid.raw())?;
            Some(Usage {
                rss_bytes: pages[i].saturating_mul(units.page_bytes),
                cpu_seconds: ticks[i] as f64 / units.ticks_per_second as f64,
                processes: count[i],
            })
        })
        .collect()
}

/// What each of `runs` uses now: one pass over `/proc`.
pub fn sample(runs: &[Run<'_>]) -> Vec<Option<Usage>> {
    if runs.is_empty() {
        return Vec::new();
    }
    let mut stats = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            if let Some(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(parse_stat) {
                stats.push(s);
            }
        }
    }
    let me = std::process::id() as i32;
    let tag_of =
        |pid: i32| std::fs::read(format!("/proc/{pid}/environ")).ok().and_then(|e| run_tag(&e).map(String::from));
    attribute(&stats, me, runs, Units::of_this_system(), tag_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNITS: Units = Units { ticks_per_second: 100, page_bytes: 4096 };

    /// A stat line as the kernel writes it (52 fields).
    fn line(pid: i32, comm: &str, state: char, ppid: i32, sid: i32, times: [i64; 4], rss: i64) -> String {
        let [u, s, cu, cs] = times;
        format!(
            "{pid} ({comm}) {state} {ppid} {pgrp} {sid} 34816 {pid} 4194560 1162 0 0 0 {u} {s} {cu} {cs} 20 0 1 0 \
             12345 {vsize} {rss} 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0",
            pgrp = sid,
            vsize = rss * 4096 * 2,
        )
    }

    fn stat(pid: i32, ppid: i32, sid: i32, ticks: i64, rss: i64) -> Stat {
        parse_stat(&line(pid, "p", 'S', ppid, sid, [ticks, 0, 0, 0], rss)).unwrap()
    }

    #[test]
    fn parses_a_real_stat_line() {
        let text = "4242 (python3) S 1 4242 4242 0 -1 4194560 17853 0 0 0 210 31 7 3 20 0 1 0 \
                    1234567 100000000 16700 18446744073709551615 94000000000000 94000000100000 \
                    140730000000000 0 0 0 0 16781312 134217730 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let s = parse_stat(text).unwrap();
        assert_eq!(
            s,
            Stat {
                pid: 4242,
                state: 'S',
                ppid: 1,
                session: 4242,
                utime: 210,
                stime: 31,
                cutime: 7,
                cstime: 3,
                rss_pages: 16700
            }
        );
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_is_skipped_whole() {
        let s = parse_stat(&line(77, "a) b (c", 'R', 5, 70, [1, 2, 3, 4], 9)).unwrap();
        assert_eq!((s.pid, s.state, s.ppid, s.session, s.rss_pages), (77, 'R', 5, 70, 9));
        assert_eq!(s.ticks(), 10);
    }

    #[test]
    fn bad_lines_are_none() {
        for bad in ["", "12 (x", "12 (x) S 1 2", "x (y) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23"]
        {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_the_run_tag() {
        assert_eq!(run_tag(b"PATH=/bin\0FLOWINIT_RUN=web/3\0HOME=/\0"), Some("web/3"));
        assert_eq!(run_tag(b"FLOWINIT_RUNX=web/3\0"), None);
        assert_eq!(run_tag(b"X=FLOWINIT_RUN=web/3\0"), None);
        assert_eq!(run_tag(b""), None);
    }

    fn run(pid: i32, tag: Option<&str>) -> Run<'_> {
        Run { pid: Pid::new(pid).unwrap(), tag }
    }

    #[test]
    fn a_session_its_escapees_and_tagged_orphans_count_for_their_run() {
        let me = 10;
        let stats = [
            stat(10, 1, 1, 999, 999), // flowinit itself: nobody's
            // web: main 100 (session 100), a child in another group of the
            // session, a setsid child of that child, its own child.
            stat(100, me, 100, 50, 1000),
            stat(101, 100, 100, 20, 500),
            stat(102, 101, 102, 10, 100),
            stat(103, 102, 102, 5, 100),
            // An orphan of web's run, re-parented to flowinit, tagged.
            stat(104, me, 104, 3, 50),
            // An orphan of an earlier run of web: not this run's.
            stat(105, me, 105, 1000, 1000),
            // db: main 200 with a zombie child.
            parse_stat(&line(200, "db", 'S', me, 200, [7, 3, 0, 0], 300)).unwrap(),
            parse_stat(&line(201, "db", 'Z', 200, 200, [4, 0, 0, 0], 0)).unwrap(),
            // Outside flowinit's tree.
            stat(300, 1, 300, 1000, 1000),
        ];
        let tags = HashMap::from([(104, "web/2"), (105, "web/1"), (100, "web/2")]);
        let mut asked = Vec::new();
        let got =
            attribute(&stats, me, &[run(100, Some("web/2")), run(200, Some("db/1")), run(400, None)], UNITS, |p| {
                asked.push(p);
                tags.get(&p).map(|t| t.to_string())
            });
        let web = got[0].unwrap();
        assert_eq!(web.processes, 5);
        assert_eq!(web.rss_bytes, (1000 + 500 + 100 + 100 + 50) * 4096);
        assert!((web.cpu_seconds - 0.88).abs() < 1e-9, "{web:?}");
        let db = got[1].unwrap();
        assert_eq!((db.processes, db.rss_bytes), (1, 300 * 4096));
        assert!((db.cpu_seconds - 0.14).abs() < 1e-9, "zombies count for CPU: {db:?}");
        assert_eq!(got[2], None, "a run whose main process is gone");
        asked.sort();
        assert_eq!(asked, [104, 105], "only flowinit's children outside every run's session are read");
    }

    #[test]
    fn without_tags_no_environment_is_read() {
        let stats = [stat(100, 10, 100, 1, 1), stat(104, 10, 104, 1, 1)];
        let got = attribute(&stats, 10, &[run(100, None)], UNITS, |_| panic!("read an environment"));
        assert_eq!(got[0].unwrap().processes, 1);
    }

    #[test]
    fn a_parent_loop_ends() {
        // Impossible in a consistent /proc, possible across a racy read.
        let stats = [stat(5, 6, 5, 1, 1), stat(6, 5, 6, 1, 1)];
        assert_eq!(attribute(&stats, 10, &[run(100, None)], UNITS, |_| None), [None]);
    }

    #[test]
    fn a_main_process_that_is_gone_is_none() {
        // Above pid_max (at most 2^22): never a live process.
        assert_eq!(sample(&[run(i32::MAX - 1, None)]), [None]);
        assert_eq!(sample(&[]), []);
    }
}
