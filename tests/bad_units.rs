//! Bad unit files through the real binary (SPEC §2 `check` / `up`, §3).
//!
//! Table-driven: every case writes its unit file(s) into a fresh temp dir and
//! runs `flowinit check --units DIR` (must exit 1) and `flowinit up --units
//! DIR --shutdown-timeout 1s` (must exit 2 by itself, start nothing and print
//! nothing on stdout). stderr must hold exactly one line per expected error,
//! `PATH:LINE:COL: unit NAME: message`, followed by the summary line
//! `flowinit: N error(s) in the unit files`. The expected line:column is
//! computed from the fixture text (see [`At`]), never written by hand.
//!
//! Every dir of a bad case also holds a valid "witness" unit that would create
//! a file if it were ever started: `up` on an invalid configuration must not
//! start it.
//!
//! Each run of the binary has a deadline ([`RUN_TIMEOUT`]); past it the whole
//! process group of the run is killed by pid, so a regression cannot hang the
//! suite.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for one run of the binary. Loading a handful of files takes
/// milliseconds; `up` on an invalid configuration must exit before starting
/// anything, so this is only reached by a regression.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the output pipes to close once the binary exited.
/// Only a process started by flowinit (a regression) could hold them open.
const PIPE_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Environment variables of the test process that would change what
/// flowinit does; removed from every run.
const SCRUBBED_ENV: &[&str] = &[
    "FLOWINIT_UNITS",
    "FLOWINIT_PROFILES",
    "FLOWINIT_SOCKET",
    "FLOWINIT_SHUTDOWN_TIMEOUT",
    "NOPE",
    "FLOWINIT_TEST_UNSET",
];

const WITNESS_FILE: &str = "witness-started";

// ---------------------------------------------------------------------------
// the table
// ---------------------------------------------------------------------------

/// A minimal valid `[service]` table.
const SVC: &str = "[service]\ncommand = [\"true\"]\n";

/// A unit name one byte longer than a notify unit's socket address allows
/// (`MAX_NOTIFY_UNIT_NAME`, 69).
const LONG_NOTIFY_NAME: &str = "notify-0123456789012345678901234567890123456789012345678901234567890ab";
const LONG_NOTIFY_FILE: &str = "notify-0123456789012345678901234567890123456789012345678901234567890ab.toml";

/// A router unit listening on `addr` (`listen` on line 2, column 10).
fn router_on(addr: &str) -> String {
    format!("[router]\nlisten = \"{addr}\"\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\n")
}

fn cases() -> Vec<Case> {
    vec![
        // -- unknown keys, wrong types (serde) ------------------------------
        Case::new("unknown_key_in_service")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nstop_timout = \"5s\"\n",
            )
            .err("web.toml", At::Key("stop_timout"), "unknown field `stop_timout`"),
        Case::new("unknown_top_level_table")
            .unit(
                "web.toml",
                "[unit]\ndescription = \"web\"\n\n[service]\ncommand = [\"true\"]\n\n[logs]\nprefix = \"w\"\n",
            )
            .err("web.toml", At::Find("logs"), "unknown field `logs` in the top level; did you mean `log`?"),
        Case::new("unknown_table_near_miss")
            .unit("web.toml", &format!("{SVC}\n[readyness]\ntcp = \"127.0.0.1:1\"\n"))
            .err("web.toml", At::Find("readyness"), "unknown field `readyness` in the top level; did you mean `readiness`?"),
        Case::new("unknown_key_near_miss")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\nrestart_dealy = \"1s\"\n")
            .err("web.toml", At::Key("restart_dealy"), "unknown field `restart_dealy` in [service]; did you mean `restart_delay`?"),
        // The misspelt key is the one error: no "needs command or shell" too.
        Case::new("misspelt_command_is_one_error")
            .unit("web.toml", "[service]\ncomand = [\"true\"]\n")
            .err("web.toml", At::Key("comand"), "unknown field `comand` in [service]; did you mean `command`?"),
        Case::new("start_limit_burst_is_a_string")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\nstart_limit_burst = \"five\"\n")
            .err(
                "web.toml",
                At::Value("start_limit_burst"),
                "key `start_limit_burst`: expected a whole number, found the string \"five\"; write start_limit_burst = 5",
            ),
        Case::new("duration_is_a_number")
            .unit("web.toml", &format!("{SVC}[readiness]\ntcp = \"127.0.0.1:1\"\ninterval = 10\n"))
            .err(
                "web.toml",
                At::Value("interval"),
                "key `interval`: expected a duration string such as \"500ms\", \"10s\" or \"1m 30s\", found the integer 10; write interval = \"10s\"",
            ),
        Case::new("env_file_is_a_string")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\nenv_file = \"/run/app.env\"\n")
            .err(
                "web.toml",
                At::Value("env_file"),
                "key `env_file`: expected an array of strings, found the string \"/run/app.env\"; write env_file = [\"/run/app.env\"]",
            ),
        // One schema error no longer hides the other errors of its file.
        Case::new("every_error_of_a_file")
            .unit(
                "web.toml",
                "[unit]\ncritical = \"yes\"\n[readiness]\ntcp = \"127.0.0.1:1\"\ninterval = \"ten\"\n\n[service]\nrestart_dealy = \"1s\"\ncommand = [\"true\"]\nstart_limit_burst = \"five\"\nstop_signal = \"SIGFOO\"\n",
            )
            .err("web.toml", At::Value("critical"), "key `critical`: expected a boolean")
            .err("web.toml", At::Value("interval"), "invalid duration \"ten\" for `interval`")
            .err("web.toml", At::Key("restart_dealy"), "did you mean `restart_delay`?")
            .err("web.toml", At::Value("start_limit_burst"), "key `start_limit_burst`: expected a whole number")
            .err("web.toml", At::Value("stop_signal"), "unknown signal \"SIGFOO\""),
        Case::new("command_is_a_string")
            .unit("web.toml", "[service]\ncommand = \"flowise start\"\n")
            .err(
                "web.toml",
                At::Value("command"),
                "key `command`: expected an array of strings, found the string \"flowise start\"; write command = [\"flowise\", \"start\"]",
            ),
        Case::new("critical_is_a_string")
            .unit("web.toml", &format!("[unit]\ncritical = \"yes\"\n{SVC}"))
            .err(
                "web.toml",
                At::Value("critical"),
                "key `critical`: expected a boolean (true or false), found the string \"yes\"; write critical = true",
            ),
        Case::new("command_element_not_a_string")
            .unit("web.toml", "[service]\ncommand = [\"sleep\", 10]\n")
            .err(
                "web.toml",
                At::Find("10"),
                "key `command`: element 2 must be a string, found the integer 10; write \"10\"",
            ),
        Case::new("requires_is_a_string")
            .unit("web.toml", &format!("[unit]\nrequires = \"db\"\n{SVC}"))
            .err(
                "web.toml",
                At::Value("requires"),
                "key `requires`: expected an array of strings, found the string \"db\"; write requires = [\"db\"]",
            ),
        Case::new("env_value_not_a_string")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nenv = { PORT = 3001 }\n",
            )
            .err(
                "web.toml",
                At::Find("3001"),
                "key `env.PORT`: expected a string, found an integer; quote the value: PORT = \"…\"",
            ),
        Case::new("start_limit_burst_negative")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nstart_limit_burst = -1\n",
            )
            .err(
                "web.toml",
                At::Value("start_limit_burst"),
                "key `start_limit_burst`: must be at least 1, found -1; write start_limit_burst = 5",
            ),
        Case::new("user_id_negative")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\nuser = -1\n")
            .err("web.toml", At::Value("user"), "invalid id -1"),
        // -- values ---------------------------------------------------------
        Case::new("bad_duration")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nstop_timeout = \"ten\"\n",
            )
            .err("web.toml", At::Value("stop_timeout"), "invalid duration \"ten\""),
        Case::new("bad_duration_unit")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nrestart_delay = \"5 parsecs\"\n",
            )
            .err(
                "web.toml",
                At::Value("restart_delay"),
                "invalid duration \"5 parsecs\"",
            ),
        Case::new("bad_stop_signal")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nstop_signal = \"SIGFOO\"\n",
            )
            .err(
                "web.toml",
                At::Value("stop_signal"),
                "unknown signal \"SIGFOO\"",
            ),
        Case::new("unknown_restart_policy")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nrestart = \"sometimes\"\n",
            )
            .err(
                "web.toml",
                At::Value("restart"),
                "key `restart`: unknown value \"sometimes\"; write one of \"no\", \"on-failure\", \"always\"",
            ),
        Case::new("restart_policy_near_miss")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\nrestart = \"allways\"\n")
            .err(
                "web.toml",
                At::Value("restart"),
                "key `restart`: unknown value \"allways\"; did you mean \"always\"? (one of \"no\", \"on-failure\", \"always\")",
            ),
        Case::new("service_type_near_miss")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\ntype = \"notfy\"\n")
            .err("web.toml", At::Value("type"), "key `type`: unknown value \"notfy\"; did you mean \"notify\"?"),
        Case::new("stop_signal_near_miss")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\nstop_signal = \"SIGTREM\"\n")
            .err(
                "web.toml",
                At::Value("stop_signal"),
                "unknown signal \"SIGTREM\" (expected a name like \"SIGTERM\" or a number); did you mean \"SIGTERM\"? write stop_signal = \"SIGTERM\"",
            ),
        Case::new("unknown_service_type")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\ntype = \"forking\"\n",
            )
            .err("web.toml", At::Value("type"), "key `type`: unknown value \"forking\"; write one of \"simple\", \"oneshot\", \"notify\""),
        Case::new("restart_always_on_oneshot")
            .unit(
                "setup.toml",
                "[service]\ncommand = [\"true\"]\ntype = \"oneshot\"\nrestart = \"always\"\n",
            )
            .err(
                "setup.toml",
                At::Value("restart"),
                "restart = \"always\" makes no sense for a oneshot",
            ),
        Case::new("start_limit_burst_zero")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nstart_limit_burst = 0\n",
            )
            .err(
                "web.toml",
                At::Value("start_limit_burst"),
                "key `start_limit_burst`: must be at least 1, found 0; write start_limit_burst = 5",
            ),
        Case::new("rotate_without_log_file")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\n\n[log]\nrotate = \"daily\"\n",
            )
            .err("web.toml", At::Value("rotate"), "rotate needs [log] file"),
        Case::new("invalid_env_name")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nenv = { \"A=B\" = \"x\" }\n",
            )
            .err(
                "web.toml",
                At::Find("\"x\""),
                "invalid environment variable name \"A=B\"",
            ),
        // -- command / shell ------------------------------------------------
        Case::new("both_command_and_shell")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nshell = \"exec true\"\n",
            )
            .err(
                "web.toml",
                At::Value("shell"),
                "set either command or shell, not both",
            ),
        Case::new("neither_command_nor_shell")
            .unit(
                "web.toml",
                "[unit]\ndescription = \"nothing to run\"\n\n[service]\nrestart = \"no\"\n",
            )
            .err(
                "web.toml",
                At::Find("[service]"),
                "[service] needs command (argv list) or shell",
            ),
        Case::new("empty_command")
            .unit("web.toml", "[service]\ncommand = []\n")
            .err("web.toml", At::Value("command"), "command must not be empty"),
        Case::new("missing_service_table")
            .unit("web.toml", "[unit]\ndescription = \"no service\"\n")
            .err("web.toml", At::Start, "missing [service] table"),
        Case::new("missing_program")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"no-such-program-flowinit-test\", \"--port\", \"1\"]\n",
            )
            .err(
                "web.toml",
                At::Value("command"),
                "program \"no-such-program-flowinit-test\" not found on PATH",
            ),
        // -- users ----------------------------------------------------------
        Case::new("unknown_user")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nuser = \"no-such-user-flowinit\"\n",
            )
            .err(
                "web.toml",
                At::Value("user"),
                &root_or("unknown user \"no-such-user-flowinit\""),
            ),
        Case::new("unknown_group")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\ngroup = \"no-such-group-flowinit\"\n",
            )
            .err(
                "web.toml",
                At::Value("group"),
                &root_or("unknown group \"no-such-group-flowinit\""),
            ),
        // -- ${VAR} expansion -----------------------------------------------
        Case::new("unset_variable_in_command")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"echo\", \"${NOPE}\"]\n",
            )
            .err(
                "web.toml",
                At::Find("\"${NOPE}\""),
                "variable ${NOPE} is not set and has no default",
            ),
        // The non-ASCII value before the bad one checks that the column
        // counts characters, not bytes.
        Case::new("unset_variable_in_env")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nenv = { GREETING = \"héllo wörld\", URL = \"http://${NOPE}/x\" }\n",
            )
            .err(
                "web.toml",
                At::Find("\"http://${NOPE}/x\""),
                "variable ${NOPE} is not set and has no default",
            ),
        Case::new("unset_variable_in_working_dir")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nworking_dir = \"${NOPE}/app\"\n",
            )
            .err(
                "web.toml",
                At::Value("working_dir"),
                "variable ${NOPE} is not set and has no default",
            ),
        Case::new("unterminated_variable")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"echo\", \"${HOME\"]\n",
            )
            .err("web.toml", At::Find("\"${HOME\""), "unterminated ${"),
        Case::new("nested_default_unset")
            .unit("web.toml", "[service]\ncommand = [\"echo\", \"${NOPE:-${FLOWINIT_TEST_UNSET}}\"]\n")
            .err(
                "web.toml",
                At::Find("\"${NOPE:-"),
                "variable ${FLOWINIT_TEST_UNSET} is not set and has no default",
            ),
        Case::new("required_variable_unset")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nenv = { PASSWORD = \"${FLOWINIT_TEST_UNSET:?a secret, from the task definition}\" }\n",
            )
            .err(
                "web.toml",
                At::Find("\"${FLOWINIT_TEST_UNSET"),
                "variable ${FLOWINIT_TEST_UNSET} is required (not set or empty): a secret, from the task definition",
            ),
        Case::new("nested_default_unterminated")
            .unit("web.toml", "[service]\ncommand = [\"echo\", \"${NOPE:-${HOME}\"]\n")
            .err("web.toml", At::Find("\"${NOPE:-"), "unterminated ${"),
        Case::new("unset_variable_in_shell")
            .unit(
                "web.toml",
                "[service]\nshell = \"exec app --port ${FLOWINIT_TEST_UNSET}\"\nenv = { FLOWINIT_TEST_UNSET = \"3001\" }\n",
            )
            .err(
                "web.toml",
                At::Value("shell"),
                "variable ${FLOWINIT_TEST_UNSET} is not set and has no default (the FLOWINIT_TEST_UNSET in this unit's env is not used: ${…} is expanded from flowinit's own environment): flowinit expands ${…} when it loads the unit; for the shell to expand it at run time write $${FLOWINIT_TEST_UNSET} (or $FLOWINIT_TEST_UNSET), else write ${FLOWINIT_TEST_UNSET:-default}",
            ),
        // -- NUL bytes (TOML \u0000) -----------------------------------------
        Case::new("nul_bytes")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"echo\", \"a\\u0000b\"]\nworking_dir = \"/tmp\\u0000x\"\nenv = { A = \"1\\u0000\" }\nuser = \"no\\u0000body\"\n",
            )
            .err("web.toml", At::Find("\"a\\u0000b\""), "key `command`: contains a NUL byte (\\u0000)")
            .err("web.toml", At::Value("working_dir"), "key `working_dir`: contains a NUL byte")
            .err("web.toml", At::Find("\"1\\u0000\""), "key `env.A`: contains a NUL byte")
            .err("web.toml", At::Value("user"), "key `user`: contains a NUL byte"),
        Case::new("nul_byte_in_shell")
            .unit("web.toml", "[service]\nshell = \"echo a\\u0000b\"\n")
            .err("web.toml", At::Value("shell"), "key `shell`: contains a NUL byte (\\u0000), which no program argument, path, user name or environment value can hold; remove it"),
        // -- memory_max ---------------------------------------------------------
        Case::new("memory_max_unknown_unit")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\nmemory_max = \"1.5gb\"\n")
            .err(
                "web.toml",
                At::Value("memory_max"),
                "key `memory_max`: invalid size \"1.5gb\": \"gb\" is ambiguous (1000 or 1024?): write \"GiB\" or \"G\", both powers of 1024; write e.g. memory_max = \"1.5GiB\" (K, M, G or Ki, Mi, Gi or KiB, MiB, GiB: all powers of 1024; a bare number: bytes)",
            ),
        Case::new("memory_max_not_a_size")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\nmemory_max = \"lots\"\n")
            .err(
                "web.toml",
                At::Value("memory_max"),
                "key `memory_max`: invalid size \"lots\": expected a number, then an optional unit; write e.g. memory_max = \"1.5GiB\"",
            ),
        Case::new("memory_max_zero")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\nmemory_max = 0\n")
            .err("web.toml", At::Value("memory_max"), "key `memory_max`: invalid size 0: must be more than 0 bytes"),
        Case::new("memory_max_is_a_float")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\nmemory_max = 1.5\n")
            .err(
                "web.toml",
                At::Value("memory_max"),
                "key `memory_max`: expected a size string such as \"512MiB\" or \"1.5GiB\", or a whole number of bytes, found the float 1.5; write memory_max = \"1.5GiB\"",
            ),
        Case::new("memory_check_without_memory_max")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\nmemory_check = \"1s\"\n")
            .err(
                "web.toml",
                At::Value("memory_check"),
                "key `memory_check`: needs memory_max (what to check against); write e.g. memory_max = \"1GiB\" in [service], or remove memory_check",
            ),
        Case::new("memory_check_zero")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\nmemory_max = \"1GiB\"\nmemory_check = \"0s\"\n")
            .err("web.toml", At::Value("memory_check"), "key `memory_check`: must be more than 0; write e.g. memory_check = \"10s\""),
        Case::new("memory_check_bad_duration")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\nmemory_max = \"1GiB\"\nmemory_check = \"often\"\n")
            .err("web.toml", At::Value("memory_check"), "invalid duration \"often\" for `memory_check`"),
        // -- notify -------------------------------------------------------------
        Case::new("notify_name_too_long")
            .unit(LONG_NOTIFY_FILE, "[service]\ncommand = [\"true\"]\ntype = \"notify\"\n")
            .err(
                LONG_NOTIFY_FILE,
                At::Value("type"),
                &format!(
                    "a notify unit's name is part of its notify socket address, which holds at most 108 bytes: \
                     the name {LONG_NOTIFY_NAME:?} has 70 bytes, at most 69 fit; rename {LONG_NOTIFY_FILE} to a shorter name"
                ),
            ),
        Case::new("invalid_variable_name")
            .unit("web.toml", "[service]\ncommand = [\"echo\", \"${1X}\"]\n")
            .err(
                "web.toml",
                At::Find("\"${1X}\""),
                "invalid variable name \"1X\"",
            ),
        // -- env_file -------------------------------------------------------
        Case::new("env_file_missing")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nenv_file = [\"@AUX@/missing.env\"]\n",
            )
            .err(
                "web.toml",
                At::Find("\"@AUX@/missing.env\""),
                "cannot read env_file @AUX@/missing.env",
            ),
        Case::new("env_file_malformed_line")
            .aux("bad.env", "# comment\nA=1\nthis line has no equals sign\n")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nenv_file = [\"-@AUX@/none.env\", \"@AUX@/bad.env\"]\n",
            )
            .err(
                "web.toml",
                At::Find("\"@AUX@/bad.env\""),
                "env_file @AUX@/bad.env: line 3: expected KEY=VALUE",
            ),
        // -- unit names -----------------------------------------------------
        // `1x` matches [a-z0-9][a-z0-9_-]* and is a valid dependency target.
        Case::new("bad_unit_names")
            .unit("Bad_Name.toml", SVC)
            .unit("-dash.toml", SVC)
            .unit("dot.ted.toml", SVC)
            .unit("1x.toml", SVC)
            .unit("a_b-c.toml", SVC)
            .unit(
                "web.toml",
                &format!("[unit]\nrequires = [\"1x\", \"a_b-c\"]\n{SVC}"),
            )
            .err_unit(
                "Bad_Name.toml",
                "Bad_Name",
                At::Start,
                "invalid unit name \"Bad_Name\"",
            )
            .err_unit(
                "-dash.toml",
                "-dash",
                At::Start,
                "invalid unit name \"-dash\"",
            )
            .err_unit(
                "dot.ted.toml",
                "dot.ted",
                At::Start,
                "invalid unit name \"dot.ted\"",
            ),
        // -- dependencies ---------------------------------------------------
        Case::new("unknown_dependencies")
            .unit(
                "web.toml",
                &format!(
                    "[unit]\nrequires = [\"ghost\"]\nwants = [\"spook\"]\nafter = [\"phantom\"]\n{SVC}"
                ),
            )
            .err("web.toml", At::Find("\"ghost\""), "unknown unit \"ghost\"")
            .err("web.toml", At::Find("\"spook\""), "unknown unit \"spook\"")
            .err(
                "web.toml",
                At::Find("\"phantom\""),
                "unknown unit \"phantom\"",
            ),
        Case::new("dependency_near_miss")
            .unit("postgres.toml", SVC)
            .unit("web.toml", &format!("[unit]\nrequires = [\"postgress\"]\nafter = [\"ghost\"]\n{SVC}"))
            .err(
                "web.toml",
                At::Find("\"postgress\""),
                "unknown unit \"postgress\" in requires (no postgress.toml in the units dir); did you mean \"postgres\"?",
            )
            .err(
                "web.toml",
                At::Find("\"ghost\""),
                "unknown unit \"ghost\" in after (no ghost.toml in the units dir); add ghost.toml or remove it from after",
            ),
        Case::new("route_unit_near_miss")
            .unit("flowise.toml", SVC)
            .unit(
                "router.toml",
                "[router]\nlisten = \"127.0.0.1:1\"\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:2\"\nunit = \"flowse\"\n",
            )
            .err(
                "router.toml",
                At::Value("unit"),
                "unknown unit \"flowse\" in a route's `unit` (no flowse.toml in the units dir); did you mean \"flowise\"?",
            ),
        Case::new("route_unit_unknown")
            .unit(
                "router.toml",
                "[router]\nlisten = \"127.0.0.1:1\"\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:2\"\nunit = \"nosuch\"\n",
            )
            .err(
                "router.toml",
                At::Value("unit"),
                "unknown unit \"nosuch\" in a route's `unit` (no nosuch.toml in the units dir); add nosuch.toml or name a unit that exists",
            ),
        Case::new("route_upstream_with_a_path")
            .unit(
                "router.toml",
                "[router]\nlisten = \"127.0.0.1:1\"\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:2/v1\"\n",
            )
            .err(
                "router.toml",
                At::Value("upstream"),
                "key `upstream`: \"http://127.0.0.1:2/v1\" must be http://host:port without a path; write e.g. upstream = \"http://127.0.0.1:3001\"",
            ),
        // -- probe targets ----------------------------------------------------
        Case::new("http_probe_without_scheme")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\n[readiness]\nhttp = \"127.0.0.1:3001/ping\"\n")
            .err(
                "web.toml",
                At::Value("http"),
                "key `http`: invalid URL \"127.0.0.1:3001/ping\": expected http://host:port/path; write e.g. http = \"http://127.0.0.1:3000/health\"",
            ),
        Case::new("tcp_probe_without_host")
            .unit("db.toml", "[service]\ncommand = [\"true\"]\n[readiness]\ntcp = \"5432\"\n")
            .err(
                "db.toml",
                At::Value("tcp"),
                "key `tcp`: invalid target \"5432\": expected host:port; write e.g. tcp = \"127.0.0.1:5432\"",
            ),
        Case::new("log_probe_bad_regex")
            .unit("db.toml", "[service]\ncommand = [\"true\"]\n[readiness]\nlog = \"(ready\"\n")
            .err("db.toml", At::Value("log"), "key `log`: invalid regular expression \"(ready\": unclosed group"),
        // -- routers --------------------------------------------------------
        Case::new("routers_on_the_same_address")
            .unit("a.toml", &router_on("127.0.0.1:3000"))
            .unit("b.toml", &router_on("127.0.0.1:3000"))
            .err(
                "b.toml",
                At::Value("listen"),
                "key `listen`: 127.0.0.1:3000 (@ROOT@/units/b.toml:2:10) is the same address as 127.0.0.1:3000 of unit a (@ROOT@/units/a.toml:2:10); two routers cannot listen on one port: give one of them another port",
            ),
        Case::new("router_wildcard_overlaps_loopback")
            .unit("a.toml", &router_on("0.0.0.0:3000"))
            .unit("b.toml", &router_on("127.0.0.1:3000"))
            .err(
                "b.toml",
                At::Value("listen"),
                "key `listen`: 127.0.0.1:3000 (@ROOT@/units/b.toml:2:10) is an address that overlaps 0.0.0.0:3000 of unit a (@ROOT@/units/a.toml:2:10)",
            ),
        Case::new("self_dependency")
            .unit("web.toml", &format!("[unit]\nwants = [\"web\"]\n{SVC}"))
            .err(
                "web.toml",
                At::Find("\"web\""),
                "a unit cannot depend on itself",
            ),
        Case::new("two_cycle")
            .unit("a.toml", &format!("[unit]\nafter = [\"b\"]\n{SVC}"))
            .unit("b.toml", &format!("[unit]\nrequires = [\"a\"]\n{SVC}"))
            .err(
                "a.toml",
                At::Find("\"b\""),
                "dependency cycle: a → b → a",
            ),
        Case::new("three_cycle")
            .unit("a.toml", &format!("[unit]\nwants = [\"b\"]\n{SVC}"))
            .unit("b.toml", &format!("[unit]\nrequires = [\"c\"]\n{SVC}"))
            .unit("c.toml", &format!("[unit]\nafter = [\"a\"]\n{SVC}"))
            .err(
                "a.toml",
                At::Find("\"b\""),
                "dependency cycle: a → b → c → a",
            ),
        // Same shape, edges the other way round: the cycle is still printed
        // from its smallest name, in dependency direction.
        Case::new("three_cycle_reversed")
            .unit("a.toml", &format!("[unit]\nafter = [\"c\"]\n{SVC}"))
            .unit("b.toml", &format!("[unit]\nrequires = [\"a\"]\n{SVC}"))
            .unit("c.toml", &format!("[unit]\nwants = [\"b\"]\n{SVC}"))
            .err(
                "a.toml",
                At::Find("\"c\""),
                "dependency cycle: a → c → b → a",
            ),
        Case::new("requires_unit_disabled_by_profile")
            .unit("web.toml", &format!("[unit]\nrequires = [\"pg\"]\n{SVC}"))
            .unit("pg.toml", &format!("[unit]\nprofiles = [\"dev\"]\n{SVC}"))
            .err(
                "web.toml",
                At::Find("\"pg\""),
                "requires \"pg\", which is disabled (profiles: dev)",
            ),
        // A unit whose own file is invalid still exists: a dependent must not
        // be told that there is "no a.toml in the units dir".
        Case::new("dependency_on_invalid_unit")
            .unit(
                "a.toml",
                "[service]\ncommand = [\"true\"]\nstop_timeout = \"ten\"\n",
            )
            .unit("b.toml", &format!("[unit]\nrequires = [\"a\"]\n{SVC}"))
            .err("a.toml", At::Value("stop_timeout"), "invalid duration \"ten\""),
        // -- profiles: disabled units are not resolved, enabled ones are ------
        Case::new("profile_enabled_by_flag_resolves_program")
            .unit(
                "pg.toml",
                "[unit]\nprofiles = [\"dev\"]\n\n[service]\ncommand = [\"no-such-postgres-flowinit\"]\n",
            )
            .args(&["--profile", "dev"])
            .err(
                "pg.toml",
                At::Value("command"),
                "program \"no-such-postgres-flowinit\" not found on PATH",
            ),
        Case::new("profile_enabled_by_env_resolves_program")
            .unit(
                "pg.toml",
                "[unit]\nprofiles = [\"dev\"]\n\n[service]\ncommand = [\"no-such-postgres-flowinit\"]\n",
            )
            .env("FLOWINIT_PROFILES", "prod, dev")
            .err(
                "pg.toml",
                At::Value("command"),
                "program \"no-such-postgres-flowinit\" not found on PATH",
            ),
        // -- profiles: `!name` and profile_env ------------------------------
        Case::new("profile_bare_bang")
            .unit("web.toml", &format!("[unit]\nprofiles = [\"!\"]\n{SVC}"))
            .err("web.toml", At::Find("\"!\""), "key `profiles`: \"!\" names no profile"),
        Case::new("profile_on_and_off")
            .unit("web.toml", &format!("[unit]\nprofiles = [\"dev\", \"!dev\"]\n{SVC}"))
            .err("web.toml", At::Find("\"!dev\""), "key `profiles`: \"dev\" both turns the unit on and (as \"!dev\") off"),
        Case::new("profile_env_never_applies")
            .unit(
                "web.toml",
                "[unit]\nprofiles = [\"!worker\"]\n[service]\ncommand = [\"true\"]\n[service.profile_env.worker]\nMODE = \"x\"\n",
            )
            .err("web.toml", At::Find("worker]"), "profile_env.worker never applies"),
        Case::new("profile_env_not_a_table")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\nprofile_env = { queue = \"MODE=queue\" }\n")
            .err("web.toml", At::Find("\"MODE=queue\""), "key `profile_env.queue`: expected a table of strings"),
        Case::new("profile_env_value_not_a_string")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\n[service.profile_env.queue]\nWORKERS = 4\n")
            .err("web.toml", At::Find("4\n"), "key `profile_env.queue.WORKERS`: expected a string, found an integer"),
        Case::new("profile_env_syntax_checked_when_off")
            .unit("web.toml", "[service]\ncommand = [\"true\"]\n[service.profile_env.queue]\nURL = \"${REDIS\"\n")
            .err("web.toml", At::Find("\"${REDIS"), "unterminated ${"),
        Case::new("profile_env_required_when_on")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\n[service.profile_env.queue]\nREDIS_URL = \"${FLOWINIT_TEST_UNSET:?queue mode needs Redis}\"\n",
            )
            .args(&["--profile", "queue"])
            .err(
                "web.toml",
                At::Find("\"${FLOWINIT_TEST_UNSET"),
                "variable ${FLOWINIT_TEST_UNSET} is required (not set or empty): queue mode needs Redis",
            ),
        // -- TOML syntax ----------------------------------------------------
        Case::new("toml_unquoted_string")
            .unit(
                "web.toml",
                "[service]\ncommand = [\"true\"]\nstop_timeout = 10s\n",
            )
            .err(
                "web.toml",
                At::Value("stop_timeout"),
                "string values must be quoted",
            ),
        Case::new("toml_unclosed_table_header")
            .unit("web.toml", "[service\ncommand = [\"true\"]\n")
            .err("web.toml", At::EndOfLine(1), "unclosed table"),
        Case::new("toml_duplicate_key")
            .unit(
                "web.toml",
                "[unit]\ncritical = true\ncritical = false\n\n[service]\ncommand = [\"true\"]\n",
            )
            .err(
                "web.toml",
                At::KeyNth("critical", 1),
                "duplicate key `critical`: it is already set above in the same table; keep one of the two",
            ),
        Case::new("unit_file_not_utf8")
            .unit_bytes("web.toml", b"[service]\ncommand = [\"true\", \"\xff\"]\n")
            .err("web.toml", At::Start, "cannot read unit file"),
        Case::new("unit_file_is_a_directory")
            .unit_dir("web.toml")
            .err("web.toml", At::Start, "cannot read unit file"),
        // -- every error is collected ---------------------------------------
        Case::new("errors_in_two_files")
            .unit(
                "api.toml",
                "[service]\ncommand = [\"true\"]\nbogus = 1\n",
            )
            .unit("ok.toml", SVC)
            .unit(
                "worker.toml",
                "[service]\ncommand = [\"true\"]\nstop_signal = \"SIGNOPE\"\n",
            )
            .err("api.toml", At::Key("bogus"), "unknown field `bogus`")
            .err(
                "worker.toml",
                At::Value("stop_signal"),
                "unknown signal \"SIGNOPE\"",
            ),
        Case::new("many_errors_in_one_file")
            .unit(
                "web.toml",
                "[unit]\nrequires = [\"ghost\"]\n\n[service]\ncommand = [\"true\"]\ntype = \"oneshot\"\nrestart = \"always\"\nstop_timeout = \"ten\"\nstop_signal = \"SIGFOO\"\nstart_limit_burst = 0\n",
            )
            .err("web.toml", At::Find("\"ghost\""), "unknown unit \"ghost\"")
            .err(
                "web.toml",
                At::Value("restart"),
                "makes no sense for a oneshot",
            )
            .err("web.toml", At::Value("stop_timeout"), "invalid duration")
            .err("web.toml", At::Value("stop_signal"), "unknown signal")
            .err(
                "web.toml",
                At::Value("start_limit_burst"),
                "key `start_limit_burst`: must be at least 1, found 0; write start_limit_burst = 5",
            ),
    ]
}

/// One test function per case, so that a failure names its case. The
/// `every_case_has_a_test` test keeps this list and the table in sync.
macro_rules! case_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_named(stringify!($name));
            }
        )*
        const CASE_TESTS: &[&str] = &[$(stringify!($name)),*];
    };
}

case_tests!(
    unknown_key_in_service,
    unknown_top_level_table,
    command_is_a_string,
    critical_is_a_string,
    command_element_not_a_string,
    requires_is_a_string,
    env_value_not_a_string,
    start_limit_burst_negative,
    user_id_negative,
    bad_duration,
    bad_duration_unit,
    bad_stop_signal,
    unknown_restart_policy,
    unknown_service_type,
    restart_always_on_oneshot,
    start_limit_burst_zero,
    rotate_without_log_file,
    invalid_env_name,
    both_command_and_shell,
    neither_command_nor_shell,
    empty_command,
    missing_service_table,
    missing_program,
    unknown_user,
    unknown_group,
    unset_variable_in_command,
    unset_variable_in_env,
    unset_variable_in_working_dir,
    unterminated_variable,
    invalid_variable_name,
    env_file_missing,
    env_file_malformed_line,
    bad_unit_names,
    unknown_dependencies,
    self_dependency,
    two_cycle,
    three_cycle,
    three_cycle_reversed,
    requires_unit_disabled_by_profile,
    dependency_on_invalid_unit,
    profile_enabled_by_flag_resolves_program,
    profile_enabled_by_env_resolves_program,
    profile_bare_bang,
    profile_on_and_off,
    profile_env_never_applies,
    profile_env_not_a_table,
    profile_env_value_not_a_string,
    profile_env_syntax_checked_when_off,
    profile_env_required_when_on,
    toml_unquoted_string,
    toml_unclosed_table_header,
    toml_duplicate_key,
    unit_file_not_utf8,
    unit_file_is_a_directory,
    errors_in_two_files,
    many_errors_in_one_file,
    unknown_table_near_miss,
    unknown_key_near_miss,
    misspelt_command_is_one_error,
    start_limit_burst_is_a_string,
    duration_is_a_number,
    env_file_is_a_string,
    every_error_of_a_file,
    restart_policy_near_miss,
    service_type_near_miss,
    stop_signal_near_miss,
    dependency_near_miss,
    route_unit_near_miss,
    route_unit_unknown,
    route_upstream_with_a_path,
    http_probe_without_scheme,
    tcp_probe_without_host,
    log_probe_bad_regex,
    routers_on_the_same_address,
    router_wildcard_overlaps_loopback,
    nested_default_unset,
    required_variable_unset,
    nested_default_unterminated,
    unset_variable_in_shell,
    nul_bytes,
    nul_byte_in_shell,
    notify_name_too_long,
    memory_max_unknown_unit,
    memory_max_not_a_size,
    memory_max_zero,
    memory_max_is_a_float,
    memory_check_without_memory_max,
    memory_check_zero,
    memory_check_bad_duration,
);

#[test]
fn every_case_has_a_test() {
    let table: Vec<&str> = cases().iter().map(|c| c.name).collect();
    let unique: BTreeSet<&str> = table.iter().copied().collect();
    assert_eq!(unique.len(), table.len(), "duplicate case names in the table");
    let tests: BTreeSet<&str> = CASE_TESTS.iter().copied().collect();
    assert_eq!(unique, tests, "the case table and the case_tests! list differ");
    assert!(table.len() >= 20, "only {} cases", table.len());
}

// ---------------------------------------------------------------------------
// positive cases
// ---------------------------------------------------------------------------

#[test]
fn valid_dir_is_ok() {
    let dir = TempDir::new("valid");
    dir.aux("good.env", "# comment\nexport A=1\nB = \"two words\"\n");
    dir.unit(
        "web.toml",
        "[unit]\n\
         description = \"the web app\"\n\
         requires = [\"db-setup\"]\n\
         wants = [\"cache\", \"pg\"]\n\
         after = [\"1x\"]\n\
         critical = true\n\
         \n\
         [service]\n\
         command = [\"sh\", \"-c\", \"echo $$HOME $1 ${NOPE:-fallback} ${PATH}\"]\n\
         type = \"simple\"\n\
         env = { PORT = \"3001\", HOST = \"${NOPE:-127.0.0.1}\" }\n\
         env_file = [\"@AUX@/good.env\", \"-@AUX@/optional-missing.env\"]\n\
         restart = \"on-failure\"\n\
         restart_delay = \"500ms\"\n\
         restart_delay_max = \"1m 30s\"\n\
         start_limit_burst = 3\n\
         start_limit_interval = \"2m\"\n\
         stop_signal = \"SIGINT\"\n\
         stop_timeout = \"10s\"\n\
         \n\
         [log]\n\
         prefix = \"core\"\n\
         file = \"@AUX@/web.log\"\n\
         rotate = \"daily\"\n",
    );
    dir.unit("db-setup.toml", "[service]\nshell = \"exec true\"\ntype = \"oneshot\"\nrestart = \"no\"\n");
    dir.unit("cache.toml", "[service]\ncommand = [\"true\"]\nrestart = \"always\"\nstop_signal = \"15\"\n");
    dir.unit("1x.toml", SVC);
    // Disabled by profile: neither its program nor its user are resolved.
    dir.unit(
        "pg.toml",
        "[unit]\nprofiles = [\"dev\"]\n\n[service]\ncommand = [\"no-such-postgres-flowinit\"]\nuser = \"no-such-user-flowinit\"\n",
    );
    // Not a unit file: ignored.
    dir.unit("README.md", "not a unit\n");
    let out = run_flowinit(&dir, &["check"], &[]);
    out.assert_clean();
    assert_eq!(out.code(), Some(0), "check on a valid dir\n{}", out.describe());
    assert!(out.stdout.contains("5 units OK (4 enabled, 1 disabled by profile)"), "{}", out.describe());
    assert_eq!(out.stderr, "", "{}", out.describe());
}

#[test]
fn optional_env_file_may_be_missing() {
    let dir = TempDir::new("optional-env");
    dir.unit("web.toml", "[service]\ncommand = [\"true\"]\nenv_file = [\"-@AUX@/missing.env\"]\n");
    let out = run_flowinit(&dir, &["check"], &[]);
    out.assert_clean();
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert!(out.stdout.contains("1 units OK"), "{}", out.describe());
}

/// The positive twin of `profile_enabled_by_*`: without the profile the unit
/// is disabled and its missing program is not an error.
#[test]
fn disabled_unit_is_not_resolved() {
    let dir = TempDir::new("disabled");
    dir.unit("pg.toml", "[unit]\nprofiles = [\"dev\"]\n\n[service]\ncommand = [\"no-such-postgres-flowinit\"]\n");
    for (args, env) in [
        (&["check"][..], &[][..]),
        (&["check", "--profile", "prod"][..], &[][..]),
        (&["check"][..], &[("FLOWINIT_PROFILES", "prod")][..]),
    ] {
        let out = run_flowinit(&dir, args, env);
        out.assert_clean();
        assert_eq!(out.code(), Some(0), "{args:?} {env:?}\n{}", out.describe());
        assert!(
            out.stdout.contains("1 units OK (0 enabled, 1 disabled by profile)"),
            "{args:?} {env:?}\n{}",
            out.describe()
        );
    }
}

/// `!name` turns a unit off when that profile is on, and only then; the env
/// of a profile that is off is not looked up (its required variable is
/// not an error).
#[test]
fn negated_profiles_and_profile_env() {
    let dir = TempDir::new("negated");
    dir.unit(
        "web.toml",
        "[unit]\nprofiles = [\"!worker\"]\n[service]\ncommand = [\"true\"]\n\
         [service.profile_env.queue]\nREDIS_URL = \"${FLOWINIT_TEST_UNSET:?queue mode needs Redis}\"\n",
    );
    dir.unit("worker.toml", "[unit]\nprofiles = [\"worker\"]\n[service]\ncommand = [\"no-such-worker-flowinit\"]\n");
    dir.unit("either.toml", "[unit]\nprofiles = [\"queue\", \"worker\"]\n[service]\ncommand = [\"true\"]\n");
    for (profiles, summary) in [
        ("", "3 units OK (1 enabled, 2 disabled by profile)"),
        ("dev", "3 units OK (1 enabled, 2 disabled by profile)"),
    ] {
        let out = run_flowinit(&dir, &["check", "--profile", profiles], &[]);
        out.assert_clean();
        assert_eq!(out.code(), Some(0), "{profiles:?}\n{}", out.describe());
        assert!(out.stdout.contains(summary), "{profiles:?}\n{}", out.describe());
    }
    // worker on: web off (so its queue env is never read), the worker's
    // program is resolved (and missing).
    let out = run_flowinit(&dir, &["check", "--profile", "worker,queue"], &[]);
    out.assert_clean();
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(out.stderr.contains("unit worker: program \"no-such-worker-flowinit\" not found"), "{}", out.describe());
    assert!(!out.stderr.contains("unit web:"), "web is off under worker\n{}", out.describe());
    // queue on: web on, its queue env looked up, the value given.
    let out = run_flowinit(&dir, &["check", "--profile", "queue"], &[("FLOWINIT_TEST_UNSET", "redis://r:6379")]);
    out.assert_clean();
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert!(out.stdout.contains("3 units OK (2 enabled, 1 disabled by profile)"), "{}", out.describe());
}

#[test]
fn missing_units_dir() {
    let dir = TempDir::new("no-units-dir");
    std::fs::remove_dir(&dir.units).expect("remove units dir");
    let prefix = format!("{}:1:1: cannot read units dir", dir.units.display());
    let check = run_flowinit(&dir, &["check"], &[]);
    check.assert_clean();
    assert_eq!(check.code(), Some(1), "{}", check.describe());
    assert!(
        check.stderr.lines().any(|l| l.starts_with(&prefix)),
        "want a line starting with {prefix:?}\n{}",
        check.describe()
    );
    let up = run_flowinit(&dir, &["up", "--shutdown-timeout", "1s"], &[]);
    up.assert_clean();
    assert_eq!(up.code(), Some(2), "{}", up.describe());
    assert_eq!(up.stdout, "", "{}", up.describe());
}

/// A units dir without unit files: `check` exits 1, `up` exits 2, and the
/// message names the dir and how it was chosen (flag or environment).
#[test]
fn empty_units_dir() {
    let dir = TempDir::new("empty-units-dir");
    dir.unit("README.md", "not a unit\n");
    let units = dir.units.display().to_string();
    let want = |how: &str| {
        format!(
            "{units}:1:1: no unit files (*.toml) in the units dir ({how}); put NAME.toml files there, \
             or choose the directory with --units DIR or $FLOWINIT_UNITS"
        )
    };
    for (args, env, how, code) in [
        (&["check"][..], &[][..], "given with --units", 1),
        (&["up", "--shutdown-timeout", "1s"][..], &[][..], "given with --units", 2),
        (&["check"][..], &[("FLOWINIT_UNITS", units.as_str())][..], "taken from $FLOWINIT_UNITS", 1),
        (
            &["up", "--shutdown-timeout", "1s"][..],
            &[("FLOWINIT_UNITS", units.as_str())][..],
            "taken from $FLOWINIT_UNITS",
            2,
        ),
    ] {
        let with_flag = env.is_empty();
        let out = run_flowinit_with(&dir, args, env, with_flag);
        out.assert_clean();
        assert_eq!(out.code(), Some(code), "{args:?} {env:?}\n{}", out.describe());
        assert_eq!(out.stdout, "", "{}", out.describe());
        assert_eq!(
            out.stderr,
            format!("{}\nflowinit: 1 error(s) in the unit files\n", want(how)),
            "{args:?} {env:?}\n{}",
            out.describe()
        );
    }
}

// ---------------------------------------------------------------------------
// running a case
// ---------------------------------------------------------------------------

fn run_named(name: &str) {
    let case = cases().into_iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no case {name:?} in the table"));
    run_case(&case);
}

fn run_case(case: &Case) {
    let dir = TempDir::new(case.name);
    let subst = |s: &str| dir.subst(s);
    for (name, text) in &case.aux {
        dir.aux(name, text);
    }
    for name in &case.unit_dirs {
        std::fs::create_dir(dir.units.join(name)).expect("create dir");
    }
    for (name, bytes) in &case.units {
        let bytes = match std::str::from_utf8(bytes) {
            Ok(text) => subst(text).into_bytes(),
            Err(_) => bytes.clone(),
        };
        std::fs::write(dir.units.join(name), bytes).expect("write unit file");
    }
    // A valid unit that must never be started: the configuration is invalid.
    dir.unit(
        "zz-witness.toml",
        &format!(
            "[unit]\ndescription = \"must not start: the configuration is invalid\"\n\n\
             [service]\ntype = \"oneshot\"\nrestart = \"no\"\n\
             command = [\"/bin/sh\", \"-c\", \"echo started > @ROOT@/{WITNESS_FILE}\"]\n"
        ),
    );

    let expected: Vec<(String, String)> = case
        .errors
        .iter()
        .map(|e| {
            let path = dir.units.join(e.file);
            let (line, col) = match &e.at {
                At::Start => (1, 1),
                at => {
                    let text = case
                        .units
                        .iter()
                        .find(|(n, _)| *n == e.file)
                        .and_then(|(_, b)| std::str::from_utf8(b).ok())
                        .map(subst)
                        .unwrap_or_else(|| panic!("{}: no text for {}", case.name, e.file));
                    at.locate(&text, &subst).unwrap_or_else(|| panic!("{}: {at:?} not in {}", case.name, e.file))
                }
            };
            (format!("{}:{line}:{col}: unit {}: ", path.display(), e.unit), subst(&e.phrase))
        })
        .collect();

    let env: Vec<(&str, &str)> = case.env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let mut check_args = vec!["check"];
    check_args.extend(&case.args);
    let check = run_flowinit(&dir, &check_args, &env);
    check.assert_clean();
    assert_eq!(check.code(), Some(1), "{}: check must exit 1\n{}", case.name, check.describe());
    assert_eq!(check.stdout, "", "{}: check stdout\n{}", case.name, check.describe());
    assert_errors(case.name, "check", &check, &expected);

    let mut up_args = vec!["up", "--shutdown-timeout", "1s"];
    up_args.extend(&case.args);
    let up = run_flowinit(&dir, &up_args, &env);
    up.assert_clean();
    assert_eq!(up.code(), Some(2), "{}: up on an invalid configuration must exit 2\n{}", case.name, up.describe());
    assert_eq!(up.stdout, "", "{}: up stdout\n{}", case.name, up.describe());
    assert!(
        !dir.root.join(WITNESS_FILE).exists(),
        "{}: up started a unit although the configuration is invalid\n{}",
        case.name,
        up.describe()
    );
    assert_errors(case.name, "up", &up, &expected);
}

/// stderr must be exactly the expected error lines (in any order), then the
/// summary line.
fn assert_errors(case: &str, what: &str, out: &Output, expected: &[(String, String)]) {
    let lines: Vec<&str> = out.stderr.lines().collect();
    let summary = format!("flowinit: {} error(s) in the unit files", expected.len());
    let mut problems = Vec::new();
    match lines.last() {
        Some(last) if *last == summary => {}
        other => problems.push(format!("last line is {other:?}, want {summary:?}")),
    }
    let error_lines = &lines[..lines.len().saturating_sub(1)];
    let mut used = vec![false; error_lines.len()];
    for (prefix, phrase) in expected {
        let hit = error_lines.iter().enumerate().position(|(i, l)| {
            !used[i] && l.starts_with(prefix.as_str()) && l[prefix.len()..].contains(phrase.as_str())
        });
        match hit {
            Some(i) => used[i] = true,
            None => problems.push(format!("missing: {prefix}…{phrase}…")),
        }
    }
    for (i, l) in error_lines.iter().enumerate() {
        if !used[i] {
            problems.push(format!("unexpected: {l}"));
        }
    }
    assert!(problems.is_empty(), "{case} ({what}):\n  {}\n{}", problems.join("\n  "), out.describe());
}

// ---------------------------------------------------------------------------
// the table's types
// ---------------------------------------------------------------------------

struct Case {
    name: &'static str,
    /// File name in the units dir → contents (`@AUX@`, `@ROOT@` substituted
    /// when valid UTF-8).
    units: Vec<(&'static str, Vec<u8>)>,
    /// Directories created in the units dir.
    unit_dirs: Vec<&'static str>,
    /// Files written to the aux dir (outside the units dir).
    aux: Vec<(&'static str, String)>,
    args: Vec<&'static str>,
    env: Vec<(&'static str, String)>,
    errors: Vec<Expect>,
}

struct Expect {
    file: &'static str,
    unit: String,
    at: At,
    phrase: String,
}

/// Where an error must point, computed from the fixture text (after
/// placeholder substitution). Lines and columns are 1-based; columns count
/// characters.
#[derive(Debug)]
enum At {
    /// 1:1, for errors about the whole file.
    Start,
    /// The start of `needle` (placeholders substituted), which must occur
    /// exactly once.
    Find(&'static str),
    /// The key at the start of the only line beginning with `key =`.
    Key(&'static str),
    /// The `n`th (0-based) line beginning with `key =`.
    KeyNth(&'static str, usize),
    /// The value after `key = ` on the only line beginning with `key =`.
    Value(&'static str),
    /// Just past the last character of line `n` (where the parser sees the
    /// newline).
    EndOfLine(usize),
}

impl At {
    /// `subst` is applied to the needle as it was to the text.
    fn locate(&self, text: &str, subst: &dyn Fn(&str) -> String) -> Option<(usize, usize)> {
        let offset = match *self {
            At::Start => 0,
            At::Find(needle) => {
                let needle = subst(needle);
                let mut hits = text.match_indices(needle.as_str());
                let first = hits.next()?.0;
                assert!(hits.next().is_none(), "{needle:?} occurs more than once");
                first
            }
            At::Key(key) => key_line(text, key, 0, true)?,
            At::KeyNth(key, n) => key_line(text, key, n, false)?,
            At::Value(key) => {
                let start = key_line(text, key, 0, true)?;
                let eq = start + text[start..].find('=')?;
                let rest = &text[eq + 1..];
                eq + 1 + (rest.len() - rest.trim_start_matches([' ', '\t']).len())
            }
            At::EndOfLine(n) => {
                let mut offset = 0;
                for (i, line) in text.split_inclusive('\n').enumerate() {
                    if i + 1 == n {
                        return Some(line_col(text, offset + line.trim_end_matches('\n').len()));
                    }
                    offset += line.len();
                }
                return None;
            }
        };
        Some(line_col(text, offset))
    }
}

/// Byte offset of the `n`th line that starts with `key` followed by `=`.
fn key_line(text: &str, key: &str, n: usize, unique: bool) -> Option<usize> {
    let mut offset = 0;
    let mut hits = Vec::new();
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                hits.push(offset);
            }
        }
        offset += line.len();
    }
    if unique {
        assert!(hits.len() <= 1, "key {key:?} occurs more than once");
    }
    hits.get(n).copied()
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

impl Case {
    fn new(name: &'static str) -> Case {
        Case {
            name,
            units: Vec::new(),
            unit_dirs: Vec::new(),
            aux: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            errors: Vec::new(),
        }
    }
    fn unit(self, file: &'static str, text: &str) -> Case {
        self.unit_bytes(file, text.as_bytes())
    }
    fn unit_bytes(mut self, file: &'static str, bytes: &[u8]) -> Case {
        self.units.push((file, bytes.to_vec()));
        self
    }
    fn unit_dir(mut self, name: &'static str) -> Case {
        self.unit_dirs.push(name);
        self
    }
    fn aux(mut self, file: &'static str, text: &str) -> Case {
        self.aux.push((file, text.to_string()));
        self
    }
    fn args(mut self, args: &[&'static str]) -> Case {
        self.args.extend(args);
        self
    }
    fn env(mut self, key: &'static str, value: &str) -> Case {
        self.env.push((key, value.to_string()));
        self
    }
    /// An error in `file`, whose unit name is the file stem.
    fn err(self, file: &'static str, at: At, phrase: &str) -> Case {
        let unit = file.strip_suffix(".toml").unwrap_or(file);
        self.err_unit(file, unit, at, phrase)
    }
    fn err_unit(mut self, file: &'static str, unit: &str, at: At, phrase: &str) -> Case {
        self.errors.push(Expect { file, unit: unit.to_string(), at, phrase: phrase.to_string() });
        self
    }
}

/// Only root can switch users, so only root resolves user and group names;
/// anyone else gets told so, at the same place.
fn root_or(phrase: &str) -> String {
    if nix::unistd::geteuid().is_root() {
        phrase.to_string()
    } else {
        "user/group need flowinit to run as root".to_string()
    }
}

// ---------------------------------------------------------------------------
// temp dirs
// ---------------------------------------------------------------------------

/// `$TMPDIR/flowinit-bad-units-PID-N-TAG/{units,aux}`, removed on drop.
struct TempDir {
    root: PathBuf,
    units: PathBuf,
    aux: PathBuf,
}

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("flowinit-bad-units-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let units = root.join("units");
        let aux = root.join("aux");
        std::fs::create_dir_all(&units).expect("create units dir");
        std::fs::create_dir_all(&aux).expect("create aux dir");
        TempDir { root, units, aux }
    }

    fn subst(&self, text: &str) -> String {
        text.replace("@AUX@", &self.aux.to_string_lossy()).replace("@ROOT@", &self.root.to_string_lossy())
    }

    fn unit(&self, name: &str, text: &str) {
        std::fs::write(self.units.join(name), self.subst(text)).expect("write unit file");
    }

    fn aux(&self, name: &str, text: &str) {
        std::fs::write(self.aux.join(name), text).expect("write aux file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

// ---------------------------------------------------------------------------
// running the binary
// ---------------------------------------------------------------------------

struct Output {
    args: Vec<OsString>,
    status: Option<ExitStatus>,
    timed_out: bool,
    elapsed: Duration,
    stdout: String,
    stderr: String,
}

impl Output {
    fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    fn describe(&self) -> String {
        format!(
            "  args: {:?}\n  status: {:?}{} after {:?}\n  stdout: {:?}\n  stderr:\n{}",
            self.args,
            self.status,
            if self.timed_out { " (TIMED OUT, killed)" } else { "" },
            self.elapsed,
            self.stdout,
            self.stderr.lines().map(|l| format!("    | {l}\n")).collect::<String>()
        )
    }

    /// No hang, no panic.
    fn assert_clean(&self) {
        assert!(!self.timed_out, "flowinit did not exit\n{}", self.describe());
        assert!(
            !self.stderr.contains("panicked") && !self.stdout.contains("panicked"),
            "flowinit panicked\n{}",
            self.describe()
        );
    }
}

/// `flowinit ARGS... --units DIR` with a scrubbed environment plus `env`,
/// in its own process group; killed (the whole group) after [`RUN_TIMEOUT`].
fn run_flowinit(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Output {
    run_flowinit_with(dir, args, env, true)
}

/// `units_flag`: pass `--units DIR` (else the dir must come from `env`).
fn run_flowinit_with(dir: &TempDir, args: &[&str], env: &[(&str, &str)], units_flag: bool) -> Output {
    let mut all: Vec<OsString> = args.iter().map(OsString::from).collect();
    if units_flag {
        all.push("--units".into());
        all.push(dir.units.clone().into_os_string());
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowinit"));
    cmd.args(&all).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    for key in SCRUBBED_ENV {
        cmd.env_remove(key);
    }
    cmd.env("FLOWINIT_SOCKET", dir.root.join("ctl.sock"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn flowinit");
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let mut timed_out = false;
    let status = loop {
        match try_reap(&mut child) {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() >= RUN_TIMEOUT => {
                timed_out = true;
                kill_group_and_reap(&mut child);
                break None;
            }
            Ok(None) => thread::sleep(POLL_INTERVAL),
            Err(e) => panic!("waiting for flowinit: {e}"),
        }
    };
    let elapsed = start.elapsed();
    let collect = |rx: mpsc::Receiver<Vec<u8>>, what: &str| match rx.recv_timeout(PIPE_TIMEOUT) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => {
            format!("<{what} still open {PIPE_TIMEOUT:?} after exit: a started unit holds it>")
        }
    };
    Output {
        args: all,
        status,
        timed_out,
        elapsed,
        stdout: collect(stdout, "stdout"),
        stderr: collect(stderr, "stderr"),
    }
}

fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

/// Kills a run that overstayed, and every process it started. flowinit is
/// stopped first (SIGSTOP) so that it cannot start or reap anything while we
/// look: its descendants (units live in their own process groups) cannot be
/// reaped, so their pids cannot be reused before we kill them. The binary
/// itself is not reaped yet either, so its pid (= its process group id) is
/// still its own.
fn kill_group_and_reap(child: &mut Child) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        for d in descendants(pid) {
            let _ = kill(Pid::from_raw(d), Signal::SIGKILL);
        }
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
    let deadline = Instant::now() + RUN_TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(try_reap(child), Ok(None)) {
            return;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Every process below `pid`, from /proc/PID/task/TID/children.
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                if !out.contains(&c) {
                    out.push(c);
                    todo.push(c);
                }
            }
        }
    }
    out
}

/// Non-blocking wait for the binary this test spawned. The "only
/// process::reaper waits" rule is about flowinit's own children; here the
/// test harness is the parent and must collect the binary's exit status.
#[expect(clippy::disallowed_methods, reason = "the test harness is the parent of the process it runs")]
fn try_reap(child: &mut Child) -> std::io::Result<Option<ExitStatus>> {
    child.try_wait()
}
