//! `flowinit up` and `flowinit check`: load and validate the units dir,
//! take what must be taken before any unit starts (the control socket, the
//! router ports), then run the supervisor until shutdown. Returns exit
//! codes; `main` only maps them.

use crate::cli::{print_bad_settings, UnitsArgs, UnitsDirSource, UpArgs};
use crate::settings::Settings;
use crate::{config, control, logs, process, router, supervisor};
use std::path::Path;

/// The units dir loaded and validated; a dir without unit files is an
/// error too (a mistyped path must not give an init that runs nothing).
fn load(
    dir: &Path,
    source: UnitsDirSource,
    args: &UnitsArgs,
    settings: &Settings,
    offline: bool,
) -> Result<config::UnitSet, Vec<config::ConfigError>> {
    let ctx = config::LoadContext::from_process(args.profiles(settings), offline);
    let set = config::load_dir(dir, &ctx)?;
    if set.units.is_empty() {
        return Err(vec![config::no_units(dir, &source.to_string())]);
    }
    Ok(set)
}

fn print_errors(errors: &[config::ConfigError]) {
    for e in errors {
        errln!("{e}");
    }
    errln!("flowinit: {} error(s) in the unit files", errors.len());
}

/// Exit code of `check` for an invalid configuration (unit files or
/// `FLOWINIT_*` settings alike).
const CHECK_INVALID: u8 = 1;

pub fn check(args: &UnitsArgs) -> u8 {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(errors) => {
            print_bad_settings(&errors);
            return CHECK_INVALID;
        }
    };
    // A typo is worth a word here too (`check` vets a task definition's
    // environment before it runs), but it is no error: `up` runs with it.
    for w in settings.unknown_warnings() {
        errln!("flowinit: warning: {w}");
    }
    let (dir, source) = args.units_dir_and_source(&settings);
    match load(&dir, source, args, &settings, true) {
        Ok(set) => {
            let enabled = set.units.iter().filter(|u| u.enabled).count();
            outln!(
                "{}: {} units OK ({} enabled, {} disabled by profile)",
                args.units_dir(&settings).display(),
                set.units.len(),
                enabled,
                set.units.len() - enabled
            );
            0
        }
        Err(errors) => {
            print_errors(&errors);
            CHECK_INVALID
        }
    }
}

pub fn up(args: UpArgs) -> u8 {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(errors) => {
            print_bad_settings(&errors);
            return 2;
        }
    };
    let shutdown_timeout = args.shutdown_timeout(&settings);
    // flowinit leaves its start directory below: every path it still needs
    // afterwards (the units dir for a reload, the socket to remove at exit)
    // is made absolute now; relative paths inside unit files are resolved
    // against the start directory by the load itself.
    let (dir, source) = args.units.units_dir_and_source(&settings);
    let units_dir = process::cwd::absolute_from_start(&dir);
    let set = match load(&units_dir, source, &args.units, &settings, false) {
        Ok(set) => set,
        Err(errors) => {
            print_errors(&errors);
            return 2;
        }
    };
    let socket = control::socket_path(args.socket.socket.clone().or_else(|| settings.socket.clone()));
    let socket = process::cwd::absolute_from_start(&socket);
    let bound = match control::server::bind(&socket) {
        Ok(b) => b,
        Err(e) => {
            errln!("flowinit: {e}");
            return 2;
        }
    };
    // So is the metrics address.
    let metrics = match args.metrics.or(settings.metrics).map(|addr| (addr, crate::metrics::bind(addr))) {
        None => None,
        Some((_, Ok(l))) => Some(l),
        Some((addr, Err(e))) => {
            errln!(
                "flowinit: cannot serve metrics on {addr}: {e} (--metrics or $FLOWINIT_METRICS; choose a free address)"
            );
            return 2;
        }
    };
    // Router ports are taken before anything starts: a busy port is a
    // start-up error, not a unit that fails later.
    let mut listeners = std::collections::HashMap::new();
    for unit in set.units.iter().filter(|u| u.enabled) {
        let Some(spec) = &unit.router else { continue };
        match router::bind(spec.listen) {
            Ok(l) => {
                listeners.insert(spec.listen, l);
            }
            Err(e) => {
                let err = config::ConfigError {
                    file: unit.file.clone(),
                    line: spec.listen_at.line,
                    column: spec.listen_at.column,
                    unit: Some(unit.name.clone()),
                    message: format!("cannot listen on {}: {e}", spec.listen),
                };
                errln!("{err}");
                return 2;
            }
        }
    }
    process::become_subreaper_unless_pid1();
    process::signal::ignore_stray_signals();
    if let Err(e) = process::signal::ignore_sent_fault_signals() {
        errln!("flowinit: cannot set up the fault signal watcher: {e}");
        return 1;
    }
    // Services without a working_dir still start in the start directory.
    process::cwd::leave_start_dir();
    let opts = supervisor::manager::Options {
        shutdown_timeout,
        units_dir,
        profiles: args.units.profiles(&settings),
        listeners,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            errln!("flowinit: cannot start the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let sink = match logs::LogSink::start(settings.log_format) {
            Ok(s) => s,
            Err(e) => {
                errln!("flowinit: cannot start the log writers: {e}");
                return 1;
            }
        };
        logs::events::init(sink.clone(), settings.log_level);
        for w in settings.unknown_warnings() {
            tracing::warn!("{w}");
        }
        let mut guard = None;
        let code = supervisor::run(set, opts, sink.clone(), |handle, snapshot| {
            if let Some(l) = metrics {
                crate::metrics::serve(l, snapshot.clone());
            }
            guard = control::server::serve(bound, handle, snapshot);
        })
        .await;
        drop(guard);
        // Lines still queued reach the output before we exit, unless the
        // reader is stuck: PID 1 must still exit.
        sink.drain(std::time::Duration::from_secs(1)).await;
        code
    })
}
