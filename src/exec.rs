//! `flowinit exec UNIT -- CMD [ARG]...`: runs CMD the way UNIT's process
//! runs, for an operator inside the container (ECS Exec, `docker exec`,
//! `kubectl exec`). The running flowinit is asked over its control socket
//! for the unit's resolved environment, credentials and working directory
//! (the `exec_spec` request: the daemon's environment and the unit's
//! env_files are what count, not the caller's); then this process becomes
//! CMD (`process::exec`). No child, no proxy: CMD keeps the caller's
//! stdin, stdout, stderr and terminal, session and process group, signals
//! sent to this pid or typed at the terminal reach CMD itself, and CMD's
//! exit status is the one the caller sees.

use crate::control::client::call;
use crate::control::protocol::{ExecSpec, Request};
use crate::control::socket_path;
use crate::process::exec::{exec_as, ExecAs};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

const HELP: &str = "\
CMD gets exactly what the unit's own process gets: its environment (flowinit's
environment, env_file, env, with ${VAR} expanded as at load, and
FLOWINIT_UNIT=UNIT; not FLOWINIT_RUN: CMD is not part of a run of the unit),
its user, group and supplementary groups, its working_dir, and default signal
dispositions with nothing blocked. It works for stopped and disabled units too:
it uses the unit's definition, not its process.

flowinit exec asks the running flowinit over the control socket (owner-only,
so run it as root), then replaces itself with CMD: stdin, stdout, stderr and
the terminal are yours, Ctrl-C, SIGTERM, SIGHUP and window size changes reach
CMD directly, and the exit status is CMD's (a shell shows 128+N when CMD dies
of signal N).

Exit codes: CMD's; 1 unknown unit or refused; 4 flowinit not reachable;
126 cannot become the unit's user, enter its working_dir or run CMD;
127 CMD not found on the unit's PATH.

Examples, with ECS Exec (aws ecs execute-command --interactive):
  aws ecs execute-command --cluster C --task T --container flowstack --interactive \\
    --command \"flowinit exec flowise -- node /opt/flowstack/node_modules/flowise/bin/run user\"
      (reset a Flowise password, as the flowise unit with its DATABASE_* settings)
  flowinit exec postgres -- psql
      (an interactive psql as the postgres user)";

/// `flowinit exec`'s arguments.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP)]
pub struct ExecArgs {
    /// The unit whose environment, user, groups and working_dir CMD gets.
    pub unit: String,
    /// The command and its arguments (after `--`; looked up on the unit's PATH).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
    /// Control socket [default: $FLOWINIT_SOCKET, else /run/flowinit.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// Returns only when CMD could not be started: the exit code then.
pub fn run(args: ExecArgs) -> u8 {
    let spec = match ask(&args) {
        Ok(spec) => spec,
        Err(code) => return code,
    };
    let user = match &spec.user {
        Some(name) => format!("user {name} (uid {})", spec.uid),
        None => format!("uid {}", spec.uid),
    };
    let env = spec
        .env
        .into_iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .chain(spec.env_bytes.into_iter().map(|(k, v)| (OsString::from_vec(k), OsString::from_vec(v))))
        .collect();
    let err = exec_as(ExecAs {
        argv: args.command,
        env,
        credentials: (spec.uid, spec.gid, spec.groups),
        working_dir: spec.working_dir,
    });
    let hint = if err.not_permitted() {
        format!("; only root may run a command as the unit's {user}: run flowinit exec as root")
    } else {
        String::new()
    };
    errln!("flowinit exec {}: {err}{hint}", args.unit);
    err.exit_code()
}

/// The unit's spec from the daemon, or the exit code after saying why not.
fn ask(args: &ExecArgs) -> Result<ExecSpec, u8> {
    let (mut spec, mut refused) = (None, None);
    let asked = call(&socket_path(args.socket.clone()), Request::ExecSpec { unit: args.unit.clone() }, |r| {
        spec = r.exec;
        refused = r.error;
        false
    });
    if let Err(e) = asked {
        errln!("flowinit: {e}");
        return Err(e.exit_code());
    }
    match (spec, refused) {
        (Some(spec), _) => Ok(spec),
        (None, Some(e)) => {
            errln!("flowinit: {e}");
            Err(1)
        }
        (None, None) => {
            errln!("flowinit: the daemon closed the connection without answering");
            Err(1)
        }
    }
}
