//! flowinit: PID 1 and service supervisor for containers. Thin entry point:
//! parse the command line, dispatch into the library, map the outcome to an
//! exit code.

use clap::Parser;
use flowinit::cli::{self, Cli, Command};
use flowinit::control::protocol::Request;
use flowinit::{exec, process, single, up};
use std::process::ExitCode;

fn main() -> ExitCode {
    process::limit_malloc_arenas();
    process::signal::reset_inherited_dispositions();
    // args_os: a command's arguments need not be UTF-8.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `flowinit -- CMD…` is handled before clap so that nothing in CMD's
    // arguments is ever taken for one of ours.
    if args.get(1).is_some_and(|a| a == "--") {
        return ExitCode::from(single::run(&args[2..]));
    }
    let cli = Cli::parse();
    let code = match cli.command {
        None => up::up(cli.up),
        Some(Command::Up(a)) => up::up(a),
        Some(Command::Check(a)) => up::check(&a),
        Some(Command::Status(a)) => cli::status(&a),
        Some(Command::Start(a)) => cli::act(&a.socket, Request::Start { units: a.units }),
        Some(Command::Stop(a)) => cli::act(&a.socket, Request::Stop { units: a.units }),
        Some(Command::Restart(a)) => cli::act(&a.socket, Request::Restart { units: a.units }),
        Some(Command::Reload(a)) => cli::act(&a, Request::Reload {}),
        Some(Command::Logs(a)) => cli::logs(&a),
        Some(Command::Exec(a)) => exec::run(a),
    };
    ExitCode::from(code)
}
