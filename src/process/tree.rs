//! Finds flowinit's descendants through /proc, for the last step of
//! shutdown: whatever escaped its unit's process group (a daemon that
//! called setsid) still gets SIGTERM, then SIGKILL. Works the same as PID 1
//! and as a subreaper, and never touches processes outside our tree.

use super::signal::Pid;
use std::collections::HashMap;

/// Every live descendant of the current process (zombies excluded).
pub fn descendants() -> Vec<Pid> {
    let me = std::process::id() as i32;
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the last ')' (the comm may contain anything).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid = fields.next().and_then(|p| p.parse::<i32>().ok()).unwrap_or(0);
        if state != "Z" && state != "X" {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![me];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if c != me {
                out.extend(Pid::new(c));
                todo.push(c);
            }
        }
    }
    out
}
