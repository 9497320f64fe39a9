//! The command line (clap types) and the commands that need no daemon.

use crate::control::client::{call, ClientError};
use crate::control::protocol::{Request, Response};
use crate::control::{render, socket_path};
use crate::settings::{split_profiles, BadSetting, Settings, DEFAULT_SHUTDOWN_TIMEOUT};
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "flowinit", version, about = "A container init and service supervisor driven by TOML unit files")]
#[command(args_conflicts_with_subcommands = true)]
#[command(
    after_help = "Single-command mode (a drop-in for tini / docker --init):\n  flowinit -- CMD [ARG]...   run CMD, forward signals, reap zombies, exit with its status"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `flowinit` alone means `flowinit up`.
    #[command(flatten)]
    pub up: UpArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Supervise the units in the units dir (the default command).
    Up(UpArgs),
    /// Validate the unit files offline; exit 0 when valid, 1 otherwise.
    Check(UnitsArgs),
    /// Show the units (exit 0 when every active unit is ready or done, 3 otherwise, 4 without a daemon).
    Status(StatusArgs),
    /// Start units (and what they require); returns once they are up.
    Start(TargetArgs),
    /// Stop units (and the units that require them first); they stay stopped until started.
    Stop(TargetArgs),
    /// Stop, then start units (and the units that require them).
    Restart(TargetArgs),
    /// Re-read the units dir: start new units, stop removed ones, restart changed ones.
    Reload(SocketArgs),
    /// Show recent log lines kept in memory.
    Logs(LogsArgs),
    /// Run a command as a unit's process runs: its environment, user, groups and working_dir.
    Exec(crate::exec::ExecArgs),
}

#[derive(Debug, Args)]
pub struct SocketArgs {
    /// Control socket [default: $FLOWINIT_SOCKET, else /run/flowinit.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show details and the last log lines of these units.
    pub units: Vec<String>,
    /// Print the status as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Print nothing; only the exit code (for health checks).
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub socket: SocketArgs,
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    #[arg(required = true)]
    pub units: Vec<String>,
    #[command(flatten)]
    pub socket: SocketArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only these units (default: all).
    pub units: Vec<String>,
    /// How many recent lines.
    #[arg(short = 'n', long = "lines", default_value_t = 50)]
    pub lines: usize,
    /// Keep printing new lines until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    #[command(flatten)]
    pub socket: SocketArgs,
}

#[derive(Debug, Args)]
pub struct UnitsArgs {
    /// Units dir [default: $FLOWINIT_UNITS, else /etc/flowinit/units].
    #[arg(long, value_name = "DIR")]
    pub units: Option<PathBuf>,
    /// Turn on a profile (repeatable) [default: $FLOWINIT_PROFILES, comma separated].
    #[arg(long = "profile", value_name = "P")]
    pub profiles: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub units: UnitsArgs,
    /// The whole shutdown fits in this [default: $FLOWINIT_SHUTDOWN_TIMEOUT, else 9s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9100)
    /// [default: $FLOWINIT_METRICS, else off].
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Where the units dir came from, for messages about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitsDirSource {
    Flag,
    Env,
    Default,
}

impl std::fmt::Display for UnitsDirSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnitsDirSource::Flag => "given with --units",
            UnitsDirSource::Env => "taken from $FLOWINIT_UNITS",
            UnitsDirSource::Default => "the default: neither --units nor $FLOWINIT_UNITS is set",
        })
    }
}

impl UnitsArgs {
    /// `--units`, else `$FLOWINIT_UNITS`, else /etc/flowinit/units.
    pub fn units_dir(&self, settings: &Settings) -> PathBuf {
        self.units_dir_and_source(settings).0
    }

    /// The units dir and how it was chosen (for the message when it holds
    /// no unit files).
    pub fn units_dir_and_source(&self, settings: &Settings) -> (PathBuf, UnitsDirSource) {
        if let Some(dir) = &self.units {
            return (dir.clone(), UnitsDirSource::Flag);
        }
        match &settings.units {
            Some(dir) => (dir.clone(), UnitsDirSource::Env),
            None => (PathBuf::from("/etc/flowinit/units"), UnitsDirSource::Default),
        }
    }

    /// `--profile` (each may be a comma list), else `$FLOWINIT_PROFILES`.
    pub fn profiles(&self, settings: &Settings) -> Vec<String> {
        if self.profiles.is_empty() {
            return settings.profiles.clone().unwrap_or_default();
        }
        self.profiles.iter().flat_map(|p| split_profiles(p)).collect()
    }
}

impl UpArgs {
    /// `--shutdown-timeout`, else `$FLOWINIT_SHUTDOWN_TIMEOUT`, else 9s.
    pub fn shutdown_timeout(&self, settings: &Settings) -> Duration {
        self.shutdown_timeout.or(settings.shutdown_timeout).unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT)
    }
}

/// Prints every bad `FLOWINIT_*` value; the caller exits with its usage code.
pub fn print_bad_settings(errors: &[BadSetting]) {
    for e in errors {
        errln!("flowinit: {e}");
    }
}

/// Exit code when no daemon answers.
const NO_DAEMON: u8 = 4;

fn fail(e: ClientError) -> u8 {
    match e {
        ClientError::NoDaemon(m) => {
            errln!("flowinit: {m}");
            NO_DAEMON
        }
        ClientError::Broken(m) => {
            errln!("flowinit: {m}");
            1
        }
    }
}

/// One request, one answer.
fn ask(socket: &SocketArgs, request: Request) -> Result<Response, ClientError> {
    let mut answer = None;
    call(&socket_path(socket.socket.clone()), request, |r| {
        answer = Some(r);
        false
    })?;
    answer.ok_or_else(|| ClientError::Broken("the daemon closed the connection without answering".into()))
}

pub fn status(args: &StatusArgs) -> u8 {
    let answer = match ask(&args.socket, Request::Status { units: args.units.clone() }) {
        Ok(a) => a,
        Err(e) if args.quiet => match e {
            ClientError::NoDaemon(_) => return NO_DAEMON,
            ClientError::Broken(_) => return 1,
        },
        Err(e) => return fail(e),
    };
    let Some(report) = answer.status else {
        if !args.quiet {
            errln!("flowinit: {}", answer.error.unwrap_or_else(|| "unexpected answer".into()));
        }
        return 1;
    };
    let code = render::health_code(&report);
    if args.quiet {
        return code;
    }
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => outln!("{j}"),
            Err(e) => errln!("flowinit: {e}"),
        };
        return code;
    }
    let color = std::io::stdout().is_terminal() && crate::settings::color_allowed();
    let now = std::time::SystemTime::now();
    if args.units.is_empty() {
        out!("{}", render::table(&report, now, color));
    } else {
        let parts: Vec<String> = report.units.iter().map(|u| render::details(u, now, color)).collect();
        out!("{}", parts.join("\n"));
    }
    code
}

pub fn act(socket: &SocketArgs, request: Request) -> u8 {
    match ask(socket, request) {
        Ok(Response { ok: true, message, .. }) => {
            outln!("{}", message.unwrap_or_else(|| "done".into()));
            0
        }
        Ok(r) => {
            errln!("flowinit: {}", r.error.unwrap_or_else(|| "failed".into()));
            1
        }
        Err(e) => fail(e),
    }
}

pub fn logs(args: &LogsArgs) -> u8 {
    let request = Request::Logs { units: args.units.clone(), lines: args.lines, follow: args.follow };
    let mut code = 0;
    let result = call(&socket_path(args.socket.socket.clone()), request, |r| {
        // Stop following once nobody reads (e.g. `| head`).
        if let Some(l) = &r.log {
            if !outln!("{}", render::log_line(l, true)) {
                return false;
            }
        }
        if let Some(e) = &r.error {
            errln!("flowinit: {e}");
            code = 1;
        }
        !r.end && r.error.is_none()
    });
    match result {
        Ok(()) => code,
        Err(e) => fail(e),
    }
}
