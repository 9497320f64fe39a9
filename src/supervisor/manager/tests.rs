//! Table tests of the plan: each row is a set of unit files and a script
//! of events (`>`) with the exact commands the plan must answer (`<`) and
//! checks of what it shows (`=`). No processes, no clock: time moves only
//! by `> +2s`.
//!
//! Events: `begin`; `NAME STATE [restarts=N] [killed] [runs=N]` (a unit
//! task's report; `runs=N`: it failed for good by itself after N runs); `start|stop|restart NAMES…` (control requests, numbered #1,
//! #2, … in order); `reload` (the row's second set of files), `reload
//! invalid`; `sigterm`; `budget` (the budget ran out); `+DURATION`.
//! Commands: `attach NAME`, `detach NAME`, `start NAME`, `stop NAME` (no
//! deadline), `stop NAME in D`, `hurry NAME in D`, `reconfigure NAME`,
//! `reply #N: TEXT`, `reply #N error: TEXT` (lines joined by ` | `), `kill all`,
//! `diagnose NAME` (print its failed-for-good block); `-` for none.
//! Checks: `= NAME STATE [REASON]`, `= exit CODE`, `= running`, `= budget
//! spent|kept` (whether the "shutdown budget spent" error was reported),
//! `= ended by NAME|none` (whose block comes before the farewell line).

use super::plan::{Command, Event, Plan, RequestId, UnitRequest, NO_DEADLINE};
use crate::api::{Failure, RunSummary};
use crate::config::validate::load_files;
use crate::config::{LoadContext, UnitSet};
use crate::process::Signal;
use crate::supervisor::state::{KillReason, State};
use crate::supervisor::unit_task::{UnitCmd, UnitStatus};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BUDGET: Duration = Duration::from_secs(9);

fn load(files: &[(&str, &str)]) -> Result<UnitSet, Vec<String>> {
    let ctx =
        LoadContext { env: std::env::vars_os().collect(), profiles: vec![], can_switch_user: true, base_dir: None };
    let files: Vec<_> = files.iter().map(|(n, t)| (PathBuf::from(format!("u/{n}.toml")), Ok(t.to_string()))).collect();
    load_files(&files, &ctx).map_err(|e| e.iter().map(|e| e.to_string()).collect())
}

struct World {
    plan: Plan,
    now: Instant,
    names: HashMap<u64, String>,
    requests: u64,
    reloaded: Vec<(&'static str, &'static str)>,
}

impl World {
    fn new(files: &[(&'static str, &'static str)], reloaded: &[(&'static str, &'static str)]) -> World {
        let set = load(files).unwrap_or_else(|e| panic!("bad row units: {e:?}"));
        let mut w = World {
            plan: Plan::new(set, BUDGET),
            now: Instant::now(),
            names: HashMap::new(),
            requests: 0,
            reloaded: reloaded.to_vec(),
        };
        w.learn_names();
        w
    }

    fn learn_names(&mut self) {
        for s in self.plan.slots() {
            self.names.insert(s.id, s.unit.name.clone());
        }
    }

    fn slot(&self, name: &str) -> u64 {
        self.plan.slots().iter().find(|s| s.unit.name == name).map(|s| s.id).unwrap_or_else(|| panic!("no unit {name}"))
    }

    fn event(&mut self, line: &str) -> Vec<Command> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let names = || words[1..].iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let request = |w: &mut World, request: UnitRequest| {
            w.requests += 1;
            let id = RequestId(w.requests);
            w.plan.handle(w.now, Event::Request { id, request })
        };
        let cmds = match words.as_slice() {
            ["begin"] => self.plan.begin(self.now),
            [d] if d.starts_with('+') => {
                self.now += humantime::parse_duration(&d[1..]).unwrap();
                Vec::new()
            }
            ["sigterm"] => self.plan.handle(self.now, Event::StopSignal(Signal::TERM)),
            ["budget"] => self.plan.handle(self.now, Event::BudgetSpent),
            ["start", ..] => request(self, UnitRequest::Start(names())),
            ["stop", ..] => request(self, UnitRequest::Stop(names())),
            ["restart", ..] => request(self, UnitRequest::Restart(names())),
            ["reload", rest @ ..] => {
                self.requests += 1;
                let id = RequestId(self.requests);
                let loaded = if rest == ["invalid"] {
                    Err(vec!["u/a.toml:1:1: bad".to_string(), "u/b.toml:2:1: worse".to_string()])
                } else {
                    load(&self.reloaded)
                };
                self.plan.handle(self.now, Event::Reload { id, loaded })
            }
            [name, state, extra @ ..] => {
                let state = parse_state(state);
                let mut status = UnitStatus::new(state, None);
                for e in extra {
                    if let Some(n) = e.strip_prefix("restarts=") {
                        status.restarts = n.parse().unwrap();
                    } else if *e == "killed" {
                        status.killed = Some(KillReason::Budget);
                    } else if let Some(n) = e.strip_prefix("runs=") {
                        let run = RunSummary { ran: Some(Duration::from_secs(1)), end: "exited 1".into() };
                        status.failure = Some(Arc::new(Failure {
                            runs: vec![run; n.parse().unwrap()],
                            span: Duration::from_secs(3),
                            start_limit_burst: 5,
                            start_limit_interval: Duration::from_secs(120),
                            no_restart: false,
                        }));
                    } else {
                        status.reason = Some(e.to_string());
                    }
                }
                let slot = self.slot(name);
                self.plan.handle(self.now, Event::Status { slot, status })
            }
            _ => panic!("bad event line {line:?}"),
        };
        for c in &cmds {
            if let Command::Attach { slot, unit } = c {
                self.names.insert(*slot, unit.name.clone());
            }
        }
        self.learn_names();
        cmds
    }

    fn show(&self, cmds: &[Command]) -> String {
        let name = |id: &u64| self.names.get(id).cloned().unwrap_or_else(|| format!("slot{id}"));
        let within = |d: Instant| {
            let left = d.saturating_duration_since(self.now);
            humantime::format_duration(Duration::from_millis(left.as_millis() as u64)).to_string()
        };
        let shown: Vec<String> = cmds
            .iter()
            .map(|c| match c {
                Command::Attach { slot, .. } => format!("attach {}", name(slot)),
                Command::Detach { slot } => format!("detach {}", name(slot)),
                Command::Send { slot, cmd: UnitCmd::Start } => format!("start {}", name(slot)),
                Command::Send { slot, cmd: UnitCmd::Stop { deadline } } => {
                    if deadline.saturating_duration_since(self.now) > NO_DEADLINE / 2 {
                        format!("stop {}", name(slot))
                    } else {
                        format!("stop {} in {}", name(slot), within(*deadline))
                    }
                }
                Command::Send { slot, cmd: UnitCmd::Hurry { deadline } } => {
                    format!("hurry {} in {}", name(slot), within(*deadline))
                }
                Command::Send { slot, cmd } => format!("{cmd:?} {}", name(slot)),
                Command::Reconfigure { slot, .. } => format!("reconfigure {}", name(slot)),
                Command::Reply { id, reply: Ok(m) } => format!("reply #{}: {m}", id.0),
                Command::Reply { id, reply: Err(e) } => {
                    format!("reply #{} error: {}", id.0, e.to_string().replace('\n', " | "))
                }
                Command::KillAll => "kill all".into(),
                Command::Diagnose { slot } => format!("diagnose {}", name(slot)),
            })
            .collect();
        if shown.is_empty() {
            "-".into()
        } else {
            shown.join("; ")
        }
    }

    fn check(&mut self, line: &str) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["exit", code] => {
                let got = self.plan.finished();
                (got == Some(code.parse().unwrap())).then_some(()).ok_or(format!("finished() = {got:?}"))
            }
            ["budget", was] => {
                let spent = self.plan.budget_reported();
                (spent == (*was == "spent")).then_some(()).ok_or(format!("budget_reported() = {spent}"))
            }
            ["running"] => {
                let got = self.plan.finished();
                got.is_none().then_some(()).ok_or(format!("finished() = {got:?}"))
            }
            ["ended", "by", name] => {
                let got = self.plan.ended_by().map(|id| self.names[&id].clone());
                let want = (*name != "none").then(|| name.to_string());
                (got == want).then_some(()).ok_or(format!("ended_by() = {got:?}"))
            }
            [name, state, reason @ ..] => {
                let s = self.plan.slots().iter().find(|s| s.unit.name == *name).ok_or(format!("no unit {name}"))?;
                let want_reason = reason.join(" ");
                let got_reason = s.status.reason.clone().unwrap_or_default();
                if s.status.state != parse_state(state) || (!reason.is_empty() && got_reason != want_reason) {
                    return Err(format!("{name} is {} ({got_reason:?})", s.status.state));
                }
                Ok(())
            }
            _ => Err(format!("bad check line {line:?}")),
        }
    }
}

fn parse_state(s: &str) -> State {
    match s {
        "inactive" => State::Inactive,
        "starting" => State::Starting,
        "ready" => State::Ready,
        "running" => State::Running,
        "stopping" => State::Stopping,
        "exited" => State::Exited,
        "failed" => State::Failed,
        "stopped" => State::Stopped,
        "disabled" => State::Disabled,
        _ => panic!("bad state {s:?}"),
    }
}

/// Runs one row's script; the first difference fails with the row's name.
fn run(row: &Row) {
    let mut w = World::new(row.units, row.reloaded);
    let mut last: Option<(String, Vec<Command>)> = None;
    for raw in row.script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (kind, rest) = raw.split_at(1);
        let rest = rest.trim();
        match kind {
            ">" => {
                let cmds = w.event(rest);
                last = Some((rest.to_string(), cmds));
            }
            "<" => {
                let (after, cmds) = last.take().unwrap_or_else(|| panic!("{}: `< {rest}` without an event", row.name));
                let got = w.show(&cmds);
                assert_eq!(got, rest, "\nrow {:?}, after `> {after}`", row.name);
            }
            "=" => {
                if let Err(e) = w.check(rest) {
                    panic!("\nrow {:?}: `= {rest}` failed: {e}", row.name);
                }
            }
            _ => panic!("{}: bad script line {raw:?}", row.name),
        }
    }
}

struct Row {
    name: &'static str,
    units: &'static [(&'static str, &'static str)],
    reloaded: &'static [(&'static str, &'static str)],
    script: &'static str,
}

const SVC: &str = "[service]\ncommand = [\"true\"]\n";

macro_rules! unit {
    ($($line:expr),* $(,)?) => { concat!($($line, "\n"),*) };
}

const A_B: &[(&str, &str)] =
    &[("a", SVC), ("b", unit!("[unit]", "requires = [\"a\"]", "[service]", "command = [\"true\"]"))];

const A_B_C: &[(&str, &str)] = &[
    ("a", SVC),
    ("b", unit!("[unit]", "requires = [\"a\"]", "[service]", "command = [\"true\"]")),
    ("c", unit!("[unit]", "requires = [\"b\"]", "[service]", "command = [\"true\"]")),
];

const FLOWSTACK: &[(&str, &str)] = &[
    ("db", unit!("[service]", "command = [\"true\"]", "stop_signal = \"SIGINT\"", "stop_timeout = \"10s\"")),
    ("core", unit!("[unit]", "requires = [\"db\"]", "[service]", "command = [\"true\"]", "stop_timeout = \"10s\"")),
    (
        "router",
        unit!(
            "[router]",
            "listen = \"127.0.0.1:1\"",
            "stop_timeout = \"5s\"",
            "[[router.routes]]",
            "prefix = \"/\"",
            "upstream = \"http://127.0.0.1:2\"",
            "unit = \"core\""
        ),
    ),
];

const ROUTER_CHANGED: &[(&str, &str)] = &[
    ("db", unit!("[service]", "command = [\"true\"]", "stop_signal = \"SIGINT\"", "stop_timeout = \"10s\"")),
    ("core", unit!("[unit]", "requires = [\"db\"]", "[service]", "command = [\"true\"]", "stop_timeout = \"10s\"")),
    (
        "router",
        unit!(
            "[router]",
            "listen = \"127.0.0.1:1\"",
            "stop_timeout = \"5s\"",
            "upstream_timeout = \"7s\"",
            "[[router.routes]]",
            "prefix = \"/\"",
            "upstream = \"http://127.0.0.1:2\"",
            "unit = \"core\""
        ),
    ),
    ("extra", SVC),
];

const ROUTER_ONLY_CHANGED: &[(&str, &str)] = &[ROUTER_CHANGED[0], ROUTER_CHANGED[1], ROUTER_CHANGED[2]];

const ROWS: &[Row] = &[
    // ---- start order
    Row {
        name: "independent units start together",
        units: &[("a", SVC), ("b", SVC)],
        reloaded: &[],
        script: "
            > begin
            < attach a; attach b; start a; start b
            = a starting
        ",
    },
    Row {
        name: "requires: starts after the required unit is up",
        units: A_B,
        reloaded: &[],
        script: "
            > begin
            < attach a; attach b; start a
            = b inactive waiting for a
            > a starting
            < -
            > a running
            < start b
        ",
    },
    Row {
        name: "requires: a unit with readiness counts once ready",
        units: A_B,
        reloaded: &[],
        script: "
            > begin
            < attach a; attach b; start a
            > a ready
            < start b
        ",
    },
    Row {
        name: "requires: a chain starts one by one",
        units: A_B_C,
        reloaded: &[],
        script: "
            > begin
            < attach a; attach b; attach c; start a
            > a running
            < start b
            > b running
            < start c
        ",
    },
    Row {
        name: "wants: a failed wanted unit does not hold a start back",
        units: &[("a", SVC), ("b", unit!("[unit]", "wants = [\"a\"]", "[service]", "command = [\"true\"]"))],
        reloaded: &[],
        script: "
            > begin
            < attach a; attach b; start a
            > a failed
            < start b
        ",
    },
    Row {
        name: "wants: a disabled wanted unit does not hold a start back",
        units: &[
            ("a", unit!("[unit]", "profiles = [\"dev\"]", "[service]", "command = [\"true\"]")),
            ("b", unit!("[unit]", "wants = [\"a\"]", "[service]", "command = [\"true\"]")),
        ],
        reloaded: &[],
        script: "
            > begin
            < attach b; start b
            = a disabled disabled (profile dev)
        ",
    },
    Row {
        name: "after: ordering only, when both start",
        units: &[("a", SVC), ("b", unit!("[unit]", "after = [\"a\"]", "[service]", "command = [\"true\"]"))],
        reloaded: &[],
        script: "
            > begin
            < attach a; attach b; start a
            > a exited
            < start b
        ",
    },
    Row {
        name: "oneshot: dependents start once it exited 0",
        units: &[
            ("setup", unit!("[service]", "type = \"oneshot\"", "command = [\"true\"]")),
            ("app", unit!("[unit]", "requires = [\"setup\"]", "[service]", "command = [\"true\"]")),
        ],
        reloaded: &[],
        script: "
            > begin
            < attach app; attach setup; start setup
            > setup exited
            < start app
        ",
    },
    Row {
        name: "oneshot: a failed oneshot fails its requirers without starting them",
        units: &[
            ("setup", unit!("[service]", "type = \"oneshot\"", "command = [\"true\"]")),
            ("app", unit!("[unit]", "requires = [\"setup\"]", "[service]", "command = [\"true\"]")),
        ],
        reloaded: &[],
        script: "
            > begin
            < attach app; attach setup; start setup
            > setup failed
            < -
            = app failed required unit setup failed
        ",
    },
    Row {
        name: "profiles: a unit whose profile is off gets no task",
        units: &[("a", unit!("[unit]", "profiles = [\"dev\"]", "[service]", "command = [\"true\"]")), ("b", SVC)],
        reloaded: &[],
        script: "
            > begin
            < attach b; start b
        ",
    },
    Row {
        name: "router: starts at once, routed units stop after it",
        units: FLOWSTACK,
        reloaded: &[],
        script: "
            > begin
            < attach core; attach db; attach router; start db; start router
            > db ready
            < start core
        ",
    },
    // ---- failures
    Row {
        name: "a required unit that fails for good stops and fails its requirers",
        units: A_B,
        reloaded: &[],
        script: "
            > begin
            > a running
            < start b
            > b running
            > a failed
            < stop b
            > b stopped
            < -
            = b failed required unit a failed
            = running
        ",
    },
    Row {
        name: "a critical failure stops everything and exits 1",
        units: &[("a", unit!("[unit]", "critical = true", "[service]", "command = [\"true\"]")), ("b", SVC)],
        reloaded: &[],
        script: "
            > begin
            > a running
            > b running
            > a failed
            < stop b in 9s
            > b stopped
            = exit 1
        ",
    },
    Row {
        name: "a critical failure in the same pass as a start starts nothing",
        units: &[
            ("a", unit!("[unit]", "critical = true", "[service]", "command = [\"true\"]")),
            ("b", unit!("[unit]", "wants = [\"a\"]", "[service]", "command = [\"true\"]")),
        ],
        reloaded: &[],
        script: "
            > begin
            < attach a; attach b; start a
            > a failed
            < -
            = b inactive
            = exit 1
        ",
    },
    // ---- the block about a unit that failed for good
    Row {
        name: "diagnose: a unit that fails for good by itself gets its block at once",
        units: &[("a", SVC), ("b", SVC)],
        reloaded: &[],
        script: "
            > begin
            > a running
            > a failed runs=3
            < diagnose a
            = running
            = ended by none
            > a failed runs=3
            < -
        ",
    },
    Row {
        name: "diagnose: the critical unit that ends the container gets its block last, not at once",
        units: &[("a", unit!("[unit]", "critical = true", "[service]", "command = [\"true\"]")), ("b", SVC)],
        reloaded: &[],
        script: "
            > begin
            > a running
            > b running
            > a failed runs=1
            < stop b in 9s
            = ended by a
            > b stopped
            < -
            = exit 1
            = ended by a
        ",
    },
    Row {
        name: "diagnose: a failure imposed by a required unit's has no block of its own",
        units: A_B,
        reloaded: &[],
        script: "
            > begin
            > a running
            < start b
            > b running
            > a failed runs=2
            < diagnose a; stop b
            > b stopped
            < -
            = b failed required unit a failed
        ",
    },
    Row {
        name: "diagnose: a critical unit failed by its requirement ends the container with its block",
        units: &[
            ("a", SVC),
            ("b", unit!("[unit]", "critical = true", "requires = [\"a\"]", "[service]", "command = [\"true\"]")),
        ],
        reloaded: &[],
        script: "
            > begin
            > a running
            < start b
            > b running
            > a failed runs=1
            < diagnose a; stop b
            > b stopped
            < -
            = b failed required unit a failed
            = ended by b
            = exit 1
        ",
    },
    Row {
        name: "diagnose: a second critical failure during the shutdown is printed at once",
        units: &[
            ("a", unit!("[unit]", "critical = true", "[service]", "command = [\"true\"]")),
            ("b", unit!("[unit]", "critical = true", "[service]", "command = [\"true\"]")),
        ],
        reloaded: &[],
        script: "
            > begin
            > a running
            > b running
            > a failed runs=1
            < stop b in 9s
            > b failed runs=2
            < diagnose b
            = ended by a
            = exit 1
        ",
    },
    Row {
        name: "a unit restarting by itself is not started again",
        units: &[("a", SVC)],
        reloaded: &[],
        script: "
            > begin
            > a running
            > a starting restarts=1
            < -
            > a running restarts=1
            < -
        ",
    },
    Row {
        name: "a non-critical failure touches nothing else",
        units: &[("a", SVC), ("b", SVC)],
        reloaded: &[],
        script: "
            > begin
            > a failed
            < -
            = running
            = b starting
        ",
    },
    // ---- control requests
    Row {
        name: "stop: requirers stop first; the answer waits for both",
        units: A_B,
        reloaded: &[],
        script: "
            > begin
            > a running
            > b running
            > stop a
            < stop b
            > b stopped
            < stop a
            > a stopped
            < reply #1: stopped a, b
        ",
    },
    Row {
        name: "start: an operator's stopped unit starts again",
        units: &[("a", SVC)],
        reloaded: &[],
        script: "
            > begin
            > a running
            > stop a
            < stop a
            > a stopped
            < reply #1: stopped a
            > start a
            < start a
            > a running
            < reply #2: started a
        ",
    },
    Row {
        name: "start: what a unit requires starts first",
        units: A_B,
        reloaded: &[],
        script: "
            > begin
            > a running
            > b running
            > stop a
            > b stopped
            > a stopped
            = b stopped
            > start b
            < start a
            > a running
            < start b
            > b running
            < reply #2: started b
        ",
    },
    Row {
        name: "waiting on an operator's stop is shown",
        units: A_B,
        reloaded: &[],
        script: "
            > begin
            > a running
            > b running
            > stop a
            > b stopped
            > a stopped
            > restart b
            < -
            = b inactive waiting for a (stopped by an operator)
        ",
    },
    Row {
        name: "restart: stop dependents first, then start all, answer once up",
        units: A_B,
        reloaded: &[],
        script: "
            > begin
            > a running
            > b running
            > restart a
            < stop b
            > b stopped
            < stop a
            > a stopped
            < start a
            > a running
            < start b
            > b running
            < reply #1: restarted a, b
        ",
    },
    Row {
        name: "start: unknown unit names the known ones",
        units: &[("a", SVC), ("b", SVC)],
        reloaded: &[],
        script: "
            > begin
            > start nope
            < reply #1 error: unknown unit \"nope\" (units: a, b)
        ",
    },
    Row {
        name: "start: a disabled unit is refused",
        units: &[("a", unit!("[unit]", "profiles = [\"dev\"]", "[service]", "command = [\"true\"]"))],
        reloaded: &[],
        script: "
            > begin
            > start a
            < reply #1 error: unit a is disabled (profile dev)
        ",
    },
    Row {
        name: "start: no names",
        units: &[("a", SVC)],
        reloaded: &[],
        script: "
            > begin
            > start
            < reply #1 error: name at least one unit
        ",
    },
    Row {
        name: "start: a unit that fails answers with its reason",
        units: &[("a", SVC)],
        reloaded: &[],
        script: "
            > begin
            > a failed boom
            > start a
            < start a
            > a failed crashed
            < reply #1 error: unit a failed: crashed
        ",
    },
    Row {
        name: "start: a unit that restarted before it came up did not come up",
        units: &[("a", SVC)],
        reloaded: &[],
        script: "
            > begin
            > a failed
            > start a
            < start a
            > a starting restarts=1 exited
            < reply #1 error: unit a did not come up: exited
        ",
    },
    Row {
        name: "requests during shutdown are refused",
        units: &[("a", SVC)],
        reloaded: &[],
        script: "
            > begin
            > a running
            > sigterm
            < stop a in 9s
            > start a
            < reply #1 error: flowinit is shutting down
            > reload
            < reply #2 error: flowinit is shutting down
        ",
    },
    Row {
        name: "a waiting request is answered when shutdown begins",
        units: &[("a", SVC)],
        reloaded: &[],
        script: "
            > begin
            > start a
            < -
            > sigterm
            < stop a in 9s; reply #1 error: flowinit is shutting down
        ",
    },
    // ---- reload
    Row {
        name: "reload: a new unit is started, the answer waits for it",
        units: &[("a", SVC)],
        reloaded: &[("a", SVC), ("c", SVC)],
        script: "
            > begin
            > a running
            > reload
            < attach c; start c
            > c running
            < reply #1: added: c; removed: none; changed: none; unchanged: 1
        ",
    },
    Row {
        name: "reload: a removed unit is stopped, then forgotten",
        units: &[("a", SVC), ("c", SVC)],
        reloaded: &[("a", SVC)],
        script: "
            > begin
            > a running
            > c running
            > reload
            < stop c
            > c stopped
            < detach c; reply #1: added: none; removed: c; changed: none; unchanged: 1
        ",
    },
    Row {
        name: "reload: a changed unit is stopped and started with its new definition",
        units: &[("a", SVC)],
        reloaded: &[("a", unit!("[service]", "command = [\"true\"]", "stop_timeout = \"3s\""))],
        script: "
            > begin
            > a running
            > reload
            < stop a
            > a stopped
            < attach a; start a
            > a running
            < reply #1: added: none; removed: none; changed: a; unchanged: 0
        ",
    },
    Row {
        name: "reload: a changed unit an operator stopped stays stopped",
        units: &[("a", SVC)],
        reloaded: &[("a", unit!("[service]", "command = [\"true\"]", "stop_timeout = \"3s\""))],
        script: "
            > begin
            > a running
            > stop a
            > a stopped
            < reply #1: stopped a
            > reload
            < attach a; reply #2: added: none; removed: none; changed: a; unchanged: 0
            = a stopped stopped by an operator
        ",
    },
    Row {
        name: "reload: invalid files change nothing and name every error",
        units: &[("a", SVC)],
        reloaded: &[],
        script: "
            > begin
            > a running
            > reload invalid
            < reply #1 error: u/a.toml:1:1: bad | u/b.toml:2:1: worse
            = a running
        ",
    },
    Row {
        name: "reload: nothing changed",
        units: &[("a", SVC), ("b", SVC)],
        reloaded: &[("a", SVC), ("b", SVC)],
        script: "
            > begin
            > reload
            < reply #1: added: none; removed: none; changed: none; unchanged: 2
        ",
    },
    Row {
        name: "reload: a router change goes to the running router, never a stop",
        units: FLOWSTACK,
        reloaded: ROUTER_ONLY_CHANGED,
        script: "
            > begin
            > db ready
            > core ready
            > router running
            > reload
            < reconfigure router; reply #1: added: none; removed: none; changed: router; unchanged: 2
            = router running
        ",
    },
    Row {
        name: "reload: adding a unit and changing the router (the outage of the operations issue)",
        units: FLOWSTACK,
        reloaded: ROUTER_CHANGED,
        script: "
            > begin
            > db ready
            > core ready
            > router running
            > reload
            < reconfigure router; attach extra; start extra
            > extra running
            < reply #1: added: extra; removed: none; changed: router; unchanged: 2
            = router running
        ",
    },
    Row {
        name: "reload: a router moved to another address is reconfigured too",
        units: FLOWSTACK,
        reloaded: &[
            FLOWSTACK[0],
            FLOWSTACK[1],
            (
                "router",
                unit!(
                    "[router]",
                    "listen = \"127.0.0.1:3\"",
                    "[[router.routes]]",
                    "prefix = \"/\"",
                    "upstream = \"http://127.0.0.1:2\""
                ),
            ),
        ],
        script: "
            > begin
            > router running
            > reload
            < reconfigure router; reply #1: added: none; removed: none; changed: router; unchanged: 2
        ",
    },
    Row {
        name: "reload: a unit now disabled by profile is stopped and its task dropped",
        units: &[("a", SVC)],
        reloaded: &[("a", unit!("[unit]", "profiles = [\"dev\"]", "[service]", "command = [\"true\"]"))],
        script: "
            > begin
            > a running
            > reload
            < stop a
            > a stopped
            < detach a; reply #1: added: none; removed: none; changed: a; unchanged: 0
            = a disabled
        ",
    },
    Row {
        name: "reload: a changed required unit restarts, its requirer keeps running",
        units: A_B,
        reloaded: &[A_B[1], ("a", unit!("[service]", "command = [\"true\"]", "stop_timeout = \"3s\""))],
        script: "
            > begin
            > a running
            > b running
            > reload
            < stop a
            > a stopped
            < attach a; start a
            = b running
        ",
    },
    // ---- shutdown
    Row {
        name: "shutdown: dependents first, each with its share of the budget",
        units: A_B,
        reloaded: &[],
        script: "
            > begin
            > a running
            > b running
            > sigterm
            < stop b in 4s 500ms
            > +1s
            > b stopped
            < stop a in 8s
            > a stopped
            = exit 0
        ",
    },
    Row {
        name: "shutdown: the router's drain gets its share, not the whole budget",
        units: FLOWSTACK,
        reloaded: &[],
        script: "
            > begin
            > db ready
            > core ready
            > router running
            > sigterm
            < stop router in 1s 800ms
        ",
    },
    Row {
        name: "shutdown: after a cut drain the routed unit and then Postgres get theirs",
        units: FLOWSTACK,
        reloaded: &[],
        script: "
            > begin
            > db ready
            > core ready
            > router running
            > sigterm
            < stop router in 1s 800ms
            > +1800ms
            > router stopped
            < stop core in 3s 600ms
            > +3600ms
            > core stopped killed
            < stop db in 3s 600ms
            > db stopped
            = exit 0
            = budget kept
        ",
    },
    Row {
        name: "shutdown: the shipped FlowStack units (router's default drain) in the default 9s budget",
        units: &[
            ("db", unit!("[service]", "command = [\"true\"]", "stop_signal = \"SIGINT\"", "stop_timeout = \"8s\"")),
            (
                "core",
                unit!("[unit]", "requires = [\"db\"]", "[service]", "command = [\"true\"]", "stop_timeout = \"5s\""),
            ),
            (
                "router",
                unit!(
                    "[router]",
                    "listen = \"127.0.0.1:1\"",
                    "[[router.routes]]",
                    "prefix = \"/\"",
                    "upstream = \"http://127.0.0.1:2\"",
                    "unit = \"core\""
                ),
            ),
        ],
        reloaded: &[],
        script: "
            > begin
            > db ready
            > core ready
            > router running
            > sigterm
            < stop router in 2s 500ms
            > +2500ms
            > router stopped
            < stop core in 2s 500ms
            > +2500ms
            > core stopped killed
            < stop db in 4s
            > +30ms
            > db stopped
            = exit 0
            = budget kept
        ",
    },
    Row {
        name: "shutdown: the last unit killed at the budget's end reports the budget spent",
        units: &[("a", unit!("[service]", "command = [\"true\"]", "stop_timeout = \"60s\""))],
        reloaded: &[],
        script: "
            > begin
            > a running
            > sigterm
            < stop a in 9s
            > +9s
            > a stopped killed
            = exit 0
            = budget spent
        ",
    },
    Row {
        name: "shutdown: a chain that fits gives every unit the whole budget left",
        units: &[("a", unit!("[service]", "command = [\"true\"]", "stop_timeout = \"2s\""))],
        reloaded: &[],
        script: "
            > begin
            > a running
            > sigterm
            < stop a in 9s
        ",
    },
    Row {
        name: "shutdown: a finished oneshot passes the order on",
        units: &[
            ("db", SVC),
            (
                "setup",
                unit!("[unit]", "requires = [\"db\"]", "[service]", "type = \"oneshot\"", "command = [\"true\"]"),
            ),
            ("app", unit!("[unit]", "requires = [\"setup\"]", "[service]", "command = [\"true\"]")),
        ],
        reloaded: &[],
        script: "
            > begin
            > db running
            > setup exited
            > app running
            > sigterm
            < stop app in 4s 500ms
            > app stopped
            < stop db in 9s
        ",
    },
    Row {
        name: "shutdown: units never started are down at once",
        units: A_B,
        reloaded: &[],
        script: "
            > begin
            > sigterm
            < stop a in 9s
            > a stopped
            = exit 0
        ",
    },
    Row {
        name: "shutdown: a second SIGTERM hurries the stops under way and caps the later ones",
        units: A_B,
        reloaded: &[],
        script: "
            > begin
            > a running
            > b running
            > sigterm
            < stop b in 4s 500ms
            > +500ms
            > sigterm
            < hurry b in 1s
            > b stopped
            < stop a in 1s
        ",
    },
    Row {
        name: "shutdown: the budget spent kills what is left, stopped or waiting",
        units: A_B,
        reloaded: &[],
        script: "
            > begin
            > a running
            > b running
            > sigterm
            > +9s
            > budget
            < stop a in 0s; hurry a in 0s; stop b in 0s; hurry b in 0s; kill all
            > b stopped killed
            > a stopped
            = exit 0
            = budget spent
        ",
    },
    Row {
        name: "shutdown: a critical failure's stops share the budget too",
        units: &[
            ("db", unit!("[unit]", "critical = true", "[service]", "command = [\"true\"]")),
            ("app", unit!("[unit]", "wants = [\"db\"]", "[service]", "command = [\"true\"]")),
        ],
        reloaded: &[],
        script: "
            > begin
            > db running
            > app running
            > db failed
            < stop app in 9s
            > app stopped
            = exit 1
        ",
    },
];

#[test]
fn plan_table() {
    assert!(ROWS.len() >= 40, "{} rows", ROWS.len());
    for row in ROWS {
        run(row);
    }
}

#[test]
fn reload_diff_sorts_router_changes_apart() {
    let old = load(FLOWSTACK).unwrap();
    let new = load(ROUTER_CHANGED).unwrap();
    let d = super::reload::diff(&old.units, new);
    assert_eq!(d.summary(), "added: extra; removed: none; changed: router; unchanged: 2");
    assert_eq!(d.reconfigured.len(), 1);
    assert!(d.replaced.is_empty());
}
