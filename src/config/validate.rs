//! Raw unit files → the validated [`UnitSet`]. Collects every error of every
//! file, each with file:line:column, instead of stopping at the first.

use super::expand::{expand, ExpandError};
use super::raw::{self, RawService, RawSize, RawUnitFile, UserRef};
use super::schema::dropped_near;
use super::unit::*;
use crate::graph;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{CString, OsString};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// One problem in the configuration, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub unit: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if let Some(unit) = &self.unit {
            write!(f, "unit {unit}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// What loading depends on besides the files: passed in so that this module
/// stays free of global state.
pub struct LoadContext {
    pub env: Vec<(OsString, OsString)>,
    pub profiles: Vec<String>,
    /// Whether flowinit can switch users (it runs as root).
    pub can_switch_user: bool,
    /// What relative paths in unit files (`working_dir`, `env_file`, `[log]
    /// file`, a relative program without `working_dir`) are relative to:
    /// the directory flowinit was started in, which it leaves for `/` (see
    /// `process::cwd`), so a reload resolves them as the first load did.
    /// `None`: flowinit's current directory.
    pub base_dir: Option<PathBuf>,
}

impl LoadContext {
    /// `offline`: for `flowinit check`, which validates users and groups
    /// without needing the root rights to switch to them.
    pub fn from_process(profiles: Vec<String>, offline: bool) -> LoadContext {
        LoadContext {
            env: std::env::vars_os().collect(),
            profiles,
            can_switch_user: offline || nix::unistd::geteuid().is_root(),
            base_dir: crate::process::cwd::start_dir().map(Path::to_path_buf),
        }
    }

    /// `path` against [`LoadContext::base_dir`] when it is relative.
    fn absolute(&self, path: PathBuf) -> PathBuf {
        match &self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        }
    }

    fn var(&self, name: &str) -> Option<String> {
        self.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.to_string_lossy().into_owned())
    }
}

/// What every unit of one load shares.
struct LoadShared {
    /// flowinit's own environment.
    inherited: Inherited,
    programs: ProgramCache,
}

impl LoadShared {
    fn new(ctx: &LoadContext) -> LoadShared {
        LoadShared {
            inherited: std::sync::Arc::new(ctx.env.iter().filter(|(k, _)| k != "NOTIFY_SOCKET").cloned().collect()),
            programs: ProgramCache { base: ctx.base_dir.clone(), ..ProgramCache::default() },
        }
    }
}

/// The program lookups of one load. Units mostly share PATH and directory,
/// so each distinct lookup searches the file system once (200 units naming
/// `sleep` cost 1,800 stat calls and 200 getcwd without it). A new load
/// starts empty: a program installed since the last one is found.
#[derive(Default)]
struct ProgramCache {
    /// `LoadContext::base_dir`.
    base: Option<PathBuf>,
    cwd: std::cell::OnceCell<PathBuf>,
    found: std::cell::RefCell<HashMap<Lookup, Option<PathBuf>>>,
}

/// (program name, PATH, directory) of one lookup.
type Lookup = (String, OsString, Option<PathBuf>);

impl ProgramCache {
    /// `name` as `which` finds it on `search_path`, relative names against
    /// `dir` (default: the base dir, else flowinit's working directory).
    fn resolve(&self, name: &str, search_path: &OsString, dir: Option<&Path>) -> Option<PathBuf> {
        let key = (name.to_string(), search_path.clone(), dir.map(Path::to_path_buf));
        if let Some(hit) = self.found.borrow().get(&key) {
            return hit.clone();
        }
        let cwd = match dir {
            Some(d) => d,
            None => match &self.base {
                Some(base) => base,
                None => self.cwd.get_or_init(|| std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))),
            },
        };
        let found = which::which_in(name, Some(search_path), cwd).ok();
        self.found.borrow_mut().insert(key, found.clone());
        found
    }
}

/// Loads and validates every `*.toml` file of `dir`.
pub fn load_dir(dir: &Path, ctx: &LoadContext) -> Result<UnitSet, Vec<ConfigError>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            return Err(vec![ConfigError {
                file: dir.to_path_buf(),
                line: 1,
                column: 1,
                unit: None,
                message: format!("cannot read units dir: {e}"),
            }])
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let files: Vec<(PathBuf, std::io::Result<String>)> = paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p);
            (p, text)
        })
        .collect();
    load_files(&files, ctx)
}

/// The error for a units dir without unit files: a mistyped path or a
/// missing mount must not give an init that runs nothing. `how` says how
/// the directory was chosen (a flag, a variable, the default).
pub fn no_units(dir: &Path, how: &str) -> ConfigError {
    ConfigError {
        file: dir.to_path_buf(),
        line: 1,
        column: 1,
        unit: None,
        message: format!(
            "no unit files (*.toml) in the units dir ({how}); put NAME.toml files there, \
             or choose the directory with --units DIR or $FLOWINIT_UNITS"
        ),
    }
}

/// Validates already-read files (path, contents or the error reading
/// them); the unit name is the file stem.
pub fn load_files(
    files: &[(PathBuf, std::io::Result<String>)],
    ctx: &LoadContext,
) -> Result<UnitSet, Vec<ConfigError>> {
    let shared = LoadShared::new(ctx);
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    for (path, text) in files {
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let at_start =
            |message: String| ConfigError { file: path.clone(), line: 1, column: 1, unit: Some(name.clone()), message };
        if !valid_unit_name(&name) {
            errors.push(at_start(format!(
                "invalid unit name {name:?}: the file name must match [a-z0-9][a-z0-9_-]*.toml"
            )));
            continue;
        }
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                errors.push(at_start(format!("cannot read unit file: {e}")));
                continue;
            }
        };
        let file = FileCtx { path, name: name.clone(), text };
        let raw::Parsed { raw, problems } = raw::parse(text);
        errors.extend(problems.into_iter().map(|p| file.error(Some(p.span), p.message)));
        if let Some(pending) = raw.and_then(|raw| build_unit(&file, raw, ctx, &shared, &mut errors)) {
            parsed.push(pending);
        }
    }
    let present: HashSet<String> =
        files.iter().filter_map(|(p, _)| p.file_stem().map(|s| s.to_string_lossy().into_owned())).collect();
    check_graph(&parsed, &present, &mut errors);
    check_listen_addresses(&parsed, &mut errors);
    // File by file, in line order (stable: errors at one place keep theirs).
    errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    if errors.is_empty() {
        let mut units: Vec<Unit> = parsed.into_iter().map(|p| p.unit).collect();
        units.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(UnitSet { units })
    } else {
        Err(errors)
    }
}

/// One unit file validated as if one of its profiles were on, without the
/// checks that need the other units (dependencies, listen addresses):
/// `flowinit exec` of a disabled unit runs with its definition, resolved
/// now (its env_files read, its user looked up).
pub fn load_unit_enabled(path: &Path, ctx: &LoadContext) -> Result<Unit, Vec<ConfigError>> {
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            unit: Some(name.clone()),
            message: format!("cannot read unit file: {e}"),
        }]
    })?;
    let file = FileCtx { path, name, text: &text };
    let raw::Parsed { raw, problems } = raw::parse(&text);
    let mut errors: Vec<ConfigError> = problems.into_iter().map(|p| file.error(Some(p.span), p.message)).collect();
    let pending = raw.and_then(|raw| {
        // The profiles it names turned on; those that turn it off, not.
        let profiles = raw.unit.profiles.iter().map(|p| p.get_ref().clone()).filter(|p| !p.starts_with('!')).collect();
        let ctx = LoadContext {
            env: ctx.env.clone(),
            profiles,
            can_switch_user: ctx.can_switch_user,
            base_dir: ctx.base_dir.clone(),
        };
        build_unit(&file, raw, &ctx, &LoadShared::new(&ctx), &mut errors)
    });
    match pending {
        Some(p) if errors.is_empty() => Ok(p.unit),
        _ => {
            errors.sort_by_key(|e| (e.line, e.column));
            Err(errors)
        }
    }
}

fn valid_unit_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

struct FileCtx<'a> {
    path: &'a Path,
    name: String,
    text: &'a str,
}

impl FileCtx<'_> {
    fn error(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        let (line, column) = line_col(self.text, span.map_or(0, |s| s.start));
        ConfigError { file: self.path.to_path_buf(), line, column, unit: Some(self.name.clone()), message }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// A unit plus the spans of its dependency names, for graph errors.
struct Pending<'a> {
    unit: Unit,
    file: FileCtx<'a>,
    deps: Vec<(DepKind, Spanned<String>)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DepKind {
    Requires,
    Wants,
    After,
    /// A router route's `unit`: must exist, but orders nothing at start.
    Route,
}

impl DepKind {
    /// The key that names the dependency, for messages.
    fn key(self) -> &'static str {
        match self {
            DepKind::Requires => "requires",
            DepKind::Wants => "wants",
            DepKind::After => "after",
            DepKind::Route => "a route's `unit`",
        }
    }
}

type Inherited = std::sync::Arc<Vec<(OsString, OsString)>>;

fn build_unit<'a>(
    file: &FileCtx<'a>,
    mut raw: RawUnitFile,
    ctx: &LoadContext,
    shared: &LoadShared,
    errors: &mut Vec<ConfigError>,
) -> Option<Pending<'a>> {
    let dropped = std::mem::take(&mut raw.dropped);
    let u = raw.unit;
    let profiles: Vec<String> = u.profiles.iter().map(|p| p.get_ref().clone()).collect();
    check_profiles(file, &u.profiles, errors);
    if let Some(svc) = &raw.service {
        for p in svc.get_ref().profile_env.keys() {
            if profiles.iter().any(|q| q.strip_prefix('!') == Some(p.get_ref())) {
                errors.push(file.error(
                    Some(p.span()),
                    format!(
                        "profile_env.{0} never applies: profiles = [\"!{0}\"] turns the unit off when {0:?} is on; remove one of them",
                        p.get_ref()
                    ),
                ));
            }
        }
    }
    let enabled = super::unit::profiles_allow(&profiles, &ctx.profiles);
    let mut deps = Vec::new();
    for (kind, list) in [(DepKind::Requires, &u.requires), (DepKind::Wants, &u.wants), (DepKind::After, &u.after)] {
        for d in list {
            if *d.get_ref() == file.name {
                errors.push(file.error(Some(d.span()), "a unit cannot depend on itself".into()));
            }
            deps.push((kind, d.clone()));
        }
    }
    let log = build_log(file, raw.log, &dropped, ctx, errors);
    let mut router = None;
    let service =
        match (raw.service, raw.router) {
            (None, None) if dropped.contains("service") || dropped.contains("router") => None,
            (None, None) => {
                errors.push(file.error(None, "missing [service] table (command or shell), or [router]".into()));
                None
            }
            (Some(_), Some(r)) => {
                errors.push(file.error(Some(r.span()), "a unit has either [service] or [router], not both".into()));
                None
            }
            (Some(s), None) => {
                build_service(file, s, (raw.readiness, raw.liveness), enabled, ctx, shared, &dropped, errors)
            }
            (None, Some(r)) => {
                for p in [&raw.readiness, &raw.liveness].into_iter().flatten() {
                    errors.push(file.error(
                        Some(p.span()),
                        "a router is ready when it listens: remove [readiness]/[liveness]".into(),
                    ));
                }
                let lookup = |name: &str| ctx.var(name);
                router = build_router(file, r, &lookup, &mut deps, &dropped, errors);
                None
            }
        };
    // A unit with errors of its own still takes part in the graph checks,
    // so that every error is reported at once; the set is discarded anyway.
    let names = |l: &[Spanned<String>]| l.iter().map(|s| s.get_ref().clone()).collect();
    Some(Pending {
        unit: Unit {
            name: file.name.clone(),
            file: file.path.to_path_buf(),
            description: u.description,
            requires: names(&u.requires),
            wants: names(&u.wants),
            after: names(&u.after),
            profiles,
            critical: u.critical,
            enabled,
            service: if enabled { service.map(std::sync::Arc::new) } else { None },
            router,
            log,
        },
        file: FileCtx { path: file.path, name: file.name.clone(), text: file.text },
        deps,
    })
}

/// `profiles`: names or `!name`s, none empty, none both named and negated.
fn check_profiles(file: &FileCtx, profiles: &[Spanned<String>], errors: &mut Vec<ConfigError>) {
    for p in profiles {
        let name = p.get_ref().strip_prefix('!').unwrap_or(p.get_ref());
        let problem = if name.is_empty() {
            Some(format!(
                "key `profiles`: {:?} names no profile; write a name (\"dev\") or \"!name\" for \"off when that profile is on\"",
                p.get_ref()
            ))
        } else if name.starts_with('!') || name.chars().any(|c| c == ',' || c.is_whitespace()) {
            Some(format!(
                "key `profiles`: {:?} is not a profile name (letters, digits, - and _; one `!` in front to negate)",
                p.get_ref()
            ))
        } else if p.get_ref().starts_with('!') && profiles.iter().any(|q| q.get_ref() == name) {
            Some(format!(
                "key `profiles`: {name:?} both turns the unit on and (as {:?}) off; keep one of them",
                p.get_ref()
            ))
        } else {
            None
        };
        if let Some(message) = problem {
            errors.push(file.error(Some(p.span()), message));
        }
    }
}

/// A bound on `max_connections` that no fd limit reaches (each connection
/// needs at least one fd; Linux caps RLIMIT_NOFILE at about 2^30 but
/// nothing serves millions of connections from PID 1).
const MAX_ROUTER_CONNECTIONS: u32 = 10_000_000;

fn build_router(
    file: &FileCtx,
    raw: Spanned<raw::RawRouter>,
    lookup: &dyn Fn(&str) -> Option<String>,
    deps: &mut Vec<(DepKind, Spanned<String>)>,
    dropped: &BTreeSet<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<RouterSpec> {
    let table_span = raw.span();
    let r = raw.into_inner();
    let before = errors.len();
    // A missing `listen`, `prefix` or `upstream` was reported by the schema.
    let listen = r.listen.as_ref().and_then(|listen| {
        if !no_nul(file, "listen", listen, errors) {
            return None;
        }
        match expand(listen.get_ref(), lookup) {
            Ok(text) => match text.parse::<std::net::SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    errors.push(file.error(
                        Some(listen.span()),
                        format!("invalid listen address {text:?}: expected ip:port; write e.g. listen = \"0.0.0.0:3000\""),
                    ));
                    None
                }
            },
            Err(e) => {
                errors.push(file.error(Some(listen.span()), e.to_string()));
                None
            }
        }
    });
    let mut routes: Vec<Route> = Vec::new();
    let mut incomplete = false;
    for rt in &r.routes {
        let rt = rt.get_ref();
        let (Some(prefix_at), Some(upstream_at)) = (&rt.prefix, &rt.upstream) else {
            incomplete = true;
            continue;
        };
        let prefix = prefix_at.get_ref();
        if !prefix.starts_with('/') {
            errors.push(file.error(Some(prefix_at.span()), format!("route prefix {prefix:?} must start with /")));
        }
        if routes.iter().any(|x| x.prefix == *prefix) {
            errors.push(file.error(Some(prefix_at.span()), format!("duplicate route prefix {prefix:?}")));
        }
        let upstream = match expand(upstream_at.get_ref(), lookup).map_err(|e| e.to_string()).and_then(|u| {
            parse_http_url(&u).and_then(|(authority, _, path)| {
                if path == "/" {
                    Ok(authority)
                } else {
                    Err(format!("{u:?} must be http://host:port without a path"))
                }
            })
        }) {
            Ok(a) => a,
            Err(e) => {
                let fix = "write e.g. upstream = \"http://127.0.0.1:3001\"";
                errors.push(file.error(Some(upstream_at.span()), format!("key `upstream`: {e}; {fix}")));
                String::new()
            }
        };
        if let Some(u) = &rt.unit {
            deps.push((DepKind::Route, u.clone()));
        }
        routes.push(Route {
            prefix: prefix.clone(),
            upstream,
            unit: rt.unit.as_ref().map(|u| u.get_ref().clone()),
            strip_prefix: rt.strip_prefix,
        });
    }
    if r.routes.is_empty() && !dropped.contains("router.routes") {
        let at = r.listen.as_ref().map_or(table_span, |l| l.span());
        errors.push(file.error(
            Some(at),
            "a router needs at least one [[router.routes]]: add [[router.routes]] with prefix = \"/\" and upstream = \"http://127.0.0.1:PORT\"".into(),
        ));
    }
    let max_connections = r.max_connections.as_ref().and_then(|m| match u32::try_from(*m.get_ref()) {
        Ok(n) if (1..=MAX_ROUTER_CONNECTIONS).contains(&n) => Some(n),
        _ => {
            errors.push(file.error(
                Some(m.span()),
                format!("max_connections must be between 1 and {MAX_ROUTER_CONNECTIONS}, not {}", m.get_ref()),
            ));
            None
        }
    });
    let (line, column) = line_col(file.text, r.listen.as_ref().map_or(0, |l| l.span().start));
    let spec = RouterSpec {
        listen: listen?,
        listen_at: SourcePos { line, column },
        routes,
        stop_timeout: duration(file, "stop_timeout", &r.stop_timeout, DEFAULT_ROUTER_STOP_TIMEOUT, errors),
        connect_timeout: duration(file, "connect_timeout", &r.connect_timeout, DEFAULT_ROUTER_CONNECT_TIMEOUT, errors),
        header_timeout: duration(file, "header_timeout", &r.header_timeout, DEFAULT_ROUTER_HEADER_TIMEOUT, errors),
        upstream_timeout: duration(
            file,
            "upstream_timeout",
            &r.upstream_timeout,
            DEFAULT_ROUTER_UPSTREAM_TIMEOUT,
            errors,
        ),
        access_log: r.access_log.unwrap_or(true),
        access_log_skip: r.access_log_skip.unwrap_or_else(|| vec!["/api/v1/ping".into()]),
        trust_forwarded: r.trust_forwarded.unwrap_or(false),
        max_connections,
    };
    (errors.len() == before && !incomplete).then_some(spec)
}

fn build_log(
    file: &FileCtx,
    raw: Option<raw::RawLog>,
    dropped: &BTreeSet<String>,
    ctx: &LoadContext,
    errors: &mut Vec<ConfigError>,
) -> LogSpec {
    let Some(raw) = raw else {
        return LogSpec { prefix: file.name.clone(), file: None, rotate: Rotation::Never };
    };
    if raw.file.is_none() && !dropped.contains("log.file") {
        if let Some(r) = &raw.rotate {
            errors.push(file.error(Some(r.span()), "rotate needs [log] file".into()));
        }
    }
    LogSpec {
        prefix: raw.prefix.unwrap_or_else(|| file.name.clone()),
        file: raw.file.map(|f| ctx.absolute(PathBuf::from(f.into_inner()))),
        rotate: raw.rotate.map_or(Rotation::Never, |r| *r.get_ref()),
    }
}

/// `key`: the key's name, for the message.
fn duration(
    file: &FileCtx,
    key: &str,
    raw: &Option<Spanned<String>>,
    default: Duration,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    let Some(raw) = raw else { return default };
    match humantime::parse_duration(raw.get_ref()) {
        Ok(d) => d,
        Err(e) => {
            let example = humantime::format_duration(default);
            errors.push(file.error(
                Some(raw.span()),
                format!(
                    "invalid duration {:?} for `{key}`: {e}; write e.g. {key} = \"{example}\" (examples: \"500ms\", \"10s\", \"1m 30s\")",
                    raw.get_ref()
                ),
            ));
            default
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the parts of one unit file and its load; a struct would only rename them"
)]
fn build_service(
    file: &FileCtx,
    spanned: Spanned<RawService>,
    (raw_ready, raw_live): (Option<Spanned<raw::RawProbe>>, Option<Spanned<raw::RawProbe>>),
    enabled: bool,
    ctx: &LoadContext,
    shared: &LoadShared,
    dropped: &BTreeSet<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<Service> {
    let table_span = spanned.span();
    let s = spanned.into_inner();
    let kind = s.kind.as_ref().map_or(ServiceKind::Simple, |k| *k.get_ref());
    let restart = s.restart.as_ref().map_or(RestartPolicy::OnFailure, |r| *r.get_ref());
    if let (ServiceKind::Oneshot, Some(r)) = (kind, &s.restart) {
        if *r.get_ref() == RestartPolicy::Always {
            errors.push(file.error(
                Some(r.span()),
                "restart = \"always\" makes no sense for a oneshot (use \"on-failure\" or \"no\")".into(),
            ));
        }
    }
    let restart_delay = duration(file, "restart_delay", &s.restart_delay, DEFAULT_RESTART_DELAY, errors);
    let restart_delay_max =
        duration(file, "restart_delay_max", &s.restart_delay_max, DEFAULT_RESTART_DELAY_MAX, errors);
    let start_limit_interval =
        duration(file, "start_limit_interval", &s.start_limit_interval, DEFAULT_START_LIMIT_INTERVAL, errors);
    let stop_timeout = duration(file, "stop_timeout", &s.stop_timeout, DEFAULT_STOP_TIMEOUT, errors);
    let memory = memory_limit(file, &s, dropped, errors);
    // The schema keeps it within 1..=u32::MAX.
    let start_limit_burst = s.start_limit_burst.as_ref().map_or(DEFAULT_START_LIMIT_BURST, |b| *b.get_ref());
    let stop_signal = match &s.stop_signal {
        None => crate::process::signal::Signal::TERM,
        Some(sig) => match sig.get_ref().parse::<crate::process::signal::Signal>() {
            Ok(v) => v,
            Err(e) => {
                errors.push(file.error(Some(sig.span()), signal_error(sig.get_ref(), &e)));
                crate::process::signal::Signal::TERM
            }
        },
    };
    let raw_argv: Option<(Range<usize>, Vec<Spanned<String>>)> = match (&s.command, &s.shell) {
        (Some(_), Some(sh)) => {
            errors.push(file.error(Some(sh.span()), "set either command or shell, not both".into()));
            None
        }
        (None, None) if dropped_near(dropped, "service", &["command", "shell"]) => None,
        (None, None) => {
            errors.push(file.error(
                Some(table_span),
                "[service] needs command (argv list) or shell (a /bin/sh -c script); write e.g. command = [\"flowise\", \"start\"]".into(),
            ));
            None
        }
        (Some(c), None) if c.get_ref().is_empty() => {
            errors.push(file.error(Some(c.span()), "command must not be empty".into()));
            None
        }
        (Some(c), None) => Some((c.span(), c.get_ref().clone())),
        (None, Some(sh)) => Some((
            sh.span(),
            vec![Spanned::new(sh.span(), "/bin/sh".to_string()), Spanned::new(sh.span(), "-c".to_string()), sh.clone()],
        )),
    };
    match (kind, &raw_ready, &raw_live) {
        (ServiceKind::Oneshot, Some(p), _) | (ServiceKind::Oneshot, None, Some(p)) => errors.push(
            file.error(Some(p.span()), "a oneshot is ready when it exits 0: remove [readiness]/[liveness]".into()),
        ),
        (ServiceKind::Notify, Some(p), _) if p.get_ref().has_kind() || p.get_ref().has_timing() => {
            errors.push(file.error(
                Some(p.span()),
                "a notify unit is ready on READY=1: [readiness] may only set start_timeout".into(),
            ))
        }
        _ => {}
    }
    if let (ServiceKind::Notify, Some(k)) = (kind, &s.kind) {
        if file.name.len() > MAX_NOTIFY_UNIT_NAME {
            errors.push(file.error(
                Some(k.span()),
                format!(
                    "a notify unit's name is part of its notify socket address, which holds at most {} bytes: \
                     the name {:?} has {} bytes, at most {MAX_NOTIFY_UNIT_NAME} fit; rename {}.toml to a shorter name",
                    NOTIFY_ADDRESS_MAX,
                    file.name,
                    file.name.len(),
                    file.name
                ),
            ));
        }
    }
    let mut nul_free = true;
    if let Some(c) = &s.command {
        nul_free &= c.get_ref().iter().all(|a| no_nul(file, "command", a, errors));
    }
    for (key, v) in [("shell", &s.shell), ("working_dir", &s.working_dir)] {
        if let Some(v) = v {
            nul_free &= no_nul(file, key, v, errors);
        }
    }
    for (k, v) in &s.env {
        nul_free &= no_nul(file, &format!("env.{k}"), v, errors);
    }
    for (profile, vars) in &s.profile_env {
        for (k, v) in vars {
            nul_free &= no_nul(file, &format!("profile_env.{}.{k}", profile.get_ref()), v, errors);
        }
    }
    for (key, v) in [("user", &s.user), ("group", &s.group)] {
        if let Some(u) = v.as_ref().filter(|u| matches!(u.get_ref(), UserRef::Name(n) if n.contains('\0'))) {
            errors.push(file.error(Some(u.span()), nul_message(key)));
            nul_free = false;
        }
    }
    if !enabled || !nul_free {
        return None;
    }
    let lookup = |name: &str| ctx.var(name);
    let shell_at = s.shell.as_ref().map(|sh| sh.span());
    let mut expand_at = |v: &Spanned<String>| match expand(v.get_ref(), &lookup) {
        Ok(x) => Some(x),
        Err(e) => {
            let in_shell = shell_at.as_ref() == Some(&v.span());
            errors.push(file.error(Some(v.span()), expand_message(&e, in_shell, &s.env)));
            None
        }
    };
    let argv: Option<Vec<String>> = raw_argv
        .as_ref()
        .map(|(_, a)| a.iter().map(&mut expand_at).collect::<Vec<_>>())
        .and_then(|v| v.into_iter().collect());
    let working_dir = s.working_dir.as_ref().and_then(&mut expand_at).map(|d| ctx.absolute(PathBuf::from(d)));
    let mut unit_env: BTreeMap<String, Option<String>> = s.env.iter().map(|(k, v)| (k.clone(), expand_at(v))).collect();
    // The env of the profiles that are on, over `env`, in the order the
    // profiles were given; that of the others is checked for syntax only.
    let mut env_spans: BTreeMap<String, Range<usize>> = s.env.iter().map(|(k, v)| (k.clone(), v.span())).collect();
    for active in &ctx.profiles {
        let Some((_, vars)) = s.profile_env.iter().find(|(p, _)| p.get_ref() == active) else { continue };
        for (k, v) in vars {
            unit_env.insert(k.clone(), expand_at(v));
            env_spans.insert(k.clone(), v.span());
        }
    }
    for (profile, vars) in &s.profile_env {
        if ctx.profiles.contains(profile.get_ref()) {
            continue;
        }
        for (k, v) in vars {
            if let Err(e) = super::expand::check_syntax(v.get_ref()) {
                errors.push(file.error(Some(v.span()), expand_message(&e, false, &s.env)));
            }
            if !valid_env_key(k) {
                errors.push(file.error(Some(v.span()), format!("invalid environment variable name {k:?}")));
            }
        }
    }

    let credentials = resolve_credentials(file, &s.user, &s.group, ctx, errors);
    let mut env = Env { inherited: shared.inherited.clone(), own: Vec::new() };
    if let Some(c) = &credentials {
        if let Some(name) = &c.user_name {
            set_env(&mut env.own, "USER", name.into());
            set_env(&mut env.own, "LOGNAME", name.into());
        }
        if let Ok(Some(pw)) = nix::unistd::User::from_uid(c.uid.into()) {
            set_env(&mut env.own, "HOME", pw.dir.into_os_string());
            set_env(&mut env.own, "SHELL", pw.shell.into_os_string());
        }
    }
    for f in &s.env_file {
        let (optional, path) = match f.get_ref().strip_prefix('-') {
            Some(p) => (true, p),
            None => (false, f.get_ref().as_str()),
        };
        match std::fs::read_to_string(ctx.absolute(PathBuf::from(path))) {
            Ok(text) => match parse_env_file(&text) {
                Ok(pairs) => pairs.into_iter().for_each(|(k, v)| set_env(&mut env.own, &k, v.into())),
                Err((line, msg)) => {
                    errors.push(file.error(Some(f.span()), format!("env_file {path}: line {line}: {msg}")))
                }
            },
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(file.error(
                Some(f.span()),
                format!("cannot read env_file {path}: {e} (prefix the path with \"-\" to make it optional)"),
            )),
        }
    }
    for (k, v) in unit_env {
        if !valid_env_key(&k) {
            let span = env_spans.get(&k).cloned();
            errors.push(file.error(span, format!("invalid environment variable name {k:?}")));
        }
        if let Some(v) = v {
            set_env(&mut env.own, &k, v.into());
        }
    }
    let search_path = env.get("PATH").cloned().unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let resolve = |name: &str| shared.programs.resolve(name, &search_path, working_dir.as_deref());
    let probes = Probes { file, lookup: &lookup, resolve: &resolve, dropped };
    // A simple unit's start_timeout is read (and reported) with its probe.
    let notify_timeout = match (&raw_ready, kind) {
        (Some(r), ServiceKind::Notify) => {
            duration(file, "start_timeout", &r.get_ref().start_timeout, DEFAULT_START_TIMEOUT, errors)
        }
        _ => DEFAULT_START_TIMEOUT,
    };
    let readiness = match raw_ready {
        Some(r) if kind == ServiceKind::Simple => probes.readiness(r, errors),
        _ => None,
    };
    let liveness = match raw_live {
        Some(r) if kind != ServiceKind::Oneshot => probes.liveness(r, errors),
        _ => None,
    };
    let argv = argv?;
    let (cmd_span, _) = raw_argv?;
    let Some(program) = resolve(&argv[0]) else {
        errors.push(file.error(Some(cmd_span), format!("program {:?} not found on PATH (or not executable)", argv[0])));
        return None;
    };
    Some(Service {
        kind,
        argv,
        program,
        working_dir,
        credentials,
        env,
        restart,
        restart_delay,
        restart_delay_max,
        start_limit_burst,
        start_limit_interval,
        stop_signal,
        stop_timeout,
        readiness,
        liveness,
        notify_timeout,
        memory,
    })
}

/// `memory_max` and `memory_check`: a size above 0, a duration above 0,
/// and no `memory_check` without `memory_max`.
fn memory_limit(
    file: &FileCtx,
    s: &RawService,
    dropped: &BTreeSet<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<MemoryLimit> {
    let check_every = duration(file, "memory_check", &s.memory_check, DEFAULT_MEMORY_CHECK, errors);
    if let Some(c) = &s.memory_check {
        if check_every.is_zero() {
            errors.push(file.error(
                Some(c.span()),
                "key `memory_check`: must be more than 0; write e.g. memory_check = \"10s\"".into(),
            ));
        }
        if s.memory_max.is_none() && !dropped.contains("service.memory_max") {
            errors.push(file.error(
                Some(c.span()),
                "key `memory_check`: needs memory_max (what to check against); write e.g. memory_max = \"1GiB\" in [service], or remove memory_check".into(),
            ));
        }
    }
    let raw = s.memory_max.as_ref()?;
    let parsed = match raw.get_ref() {
        RawSize::Text(t) => crate::config::size::parse_size(t).map_err(|e| format!("invalid size {t:?}: {e}")),
        RawSize::Bytes(n) => match u64::try_from(*n) {
            Ok(0) | Err(_) => Err(format!("invalid size {n}: must be more than 0 bytes")),
            Ok(b) => Ok(b),
        },
    };
    match parsed {
        Ok(max_bytes) => Some(MemoryLimit { max_bytes, check_every }),
        Err(why) => {
            errors.push(file.error(
                Some(raw.span()),
                format!(
                    "key `memory_max`: {why}; write e.g. memory_max = \"1.5GiB\" (K, M, G or Ki, Mi, Gi or KiB, MiB, GiB: all powers of 1024; a bare number: bytes)"
                ),
            ));
            None
        }
    }
}

/// Whether `v` is free of NUL bytes (a TOML `\u0000`), which no argv
/// element, path, user name or environment value can hold; reports it if not.
fn no_nul(file: &FileCtx, key: &str, v: &Spanned<String>, errors: &mut Vec<ConfigError>) -> bool {
    if v.get_ref().contains('\0') {
        errors.push(file.error(Some(v.span()), nul_message(key)));
        return false;
    }
    true
}

fn nul_message(key: &str) -> String {
    format!(
        "key `{key}`: contains a NUL byte (\\u0000), which no program argument, path, user name or environment value can hold; remove it"
    )
}

/// An expansion error; in a `shell` script an unset `${NAME}` was most
/// likely meant for the shell, so the fix says how to leave it to it.
fn expand_message(e: &ExpandError, in_shell: bool, env: &BTreeMap<String, Spanned<String>>) -> String {
    let ExpandError::Unset(name) = e else { return e.to_string() };
    let from_env = if env.contains_key(name) {
        format!(" (the {name} in this unit's env is not used: ${{…}} is expanded from flowinit's own environment)")
    } else {
        String::new()
    };
    if in_shell {
        format!(
            "variable ${{{name}}} is not set and has no default{from_env}: flowinit expands ${{…}} when it loads the unit; \
             for the shell to expand it at run time write $${{{name}}} (or ${name}), else write ${{{name}:-default}}"
        )
    } else {
        format!("{e}{from_env}")
    }
}

/// An unknown `stop_signal`, with the closest signal name if one is close.
fn signal_error(given: &str, e: &crate::process::signal::UnknownSignal) -> String {
    let names: Vec<&str> = nix::sys::signal::Signal::iterator().map(|s| s.as_str()).collect();
    let upper = given.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let near = super::schema::closest(bare, names.iter().map(|n| n.strip_prefix("SIG").unwrap_or(n)));
    match near {
        Some(n) => format!("{e}; did you mean \"SIG{n}\"? write stop_signal = \"SIG{n}\""),
        None => format!("{e}; write e.g. stop_signal = \"SIGTERM\" (or SIGINT, SIGQUIT, SIGHUP, a number)"),
    }
}

impl raw::RawProbe {
    /// Keys that only make sense for a probe that is attempted.
    fn has_timing(&self) -> bool {
        self.interval.is_some() || self.timeout.is_some() || self.failures.is_some()
    }

    fn has_kind(&self) -> bool {
        self.http.is_some() || self.tcp.is_some() || self.exec.is_some() || self.log.is_some()
    }
}

/// Builds probes; targets are expanded like the service's strings and an
/// exec probe's program is resolved on the unit's PATH.
struct Probes<'a, 'f> {
    file: &'a FileCtx<'f>,
    dropped: &'a BTreeSet<String>,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    resolve: &'a dyn Fn(&str) -> Option<PathBuf>,
}

impl Probes<'_, '_> {
    fn readiness(&self, raw: Spanned<raw::RawProbe>, errors: &mut Vec<ConfigError>) -> Option<Readiness> {
        let span = raw.span();
        let r = raw.into_inner();
        if let Some(f) = &r.failures {
            errors.push(
                self.file
                    .error(Some(f.span()), "failures belongs in [liveness]; readiness fails at start_timeout".into()),
            );
        }
        let kind = self.kind(&r, span, "readiness", errors)?;
        Some(Readiness {
            kind,
            interval: duration(self.file, "interval", &r.interval, DEFAULT_PROBE_INTERVAL, errors),
            timeout: duration(self.file, "timeout", &r.timeout, DEFAULT_PROBE_TIMEOUT, errors),
            start_timeout: duration(self.file, "start_timeout", &r.start_timeout, DEFAULT_START_TIMEOUT, errors),
        })
    }

    fn liveness(&self, raw: Spanned<raw::RawProbe>, errors: &mut Vec<ConfigError>) -> Option<Liveness> {
        let span = raw.span();
        let r = raw.into_inner();
        if let Some(s) = &r.start_timeout {
            errors.push(self.file.error(Some(s.span()), "start_timeout belongs in [readiness]".into()));
        }
        if let Some(l) = &r.log {
            errors.push(self.file.error(
                Some(l.span()),
                "a log probe can only tell readiness; use http, tcp or exec for [liveness]".into(),
            ));
            return None;
        }
        // The schema keeps it within 1..=u32::MAX.
        let failures = r.failures.as_ref().map_or(DEFAULT_LIVENESS_FAILURES, |f| *f.get_ref());
        let kind = self.kind(&r, span, "liveness", errors)?;
        Some(Liveness {
            kind,
            interval: duration(self.file, "interval", &r.interval, DEFAULT_LIVENESS_INTERVAL, errors),
            timeout: duration(self.file, "timeout", &r.timeout, DEFAULT_PROBE_TIMEOUT, errors),
            failures,
        })
    }

    fn expand(&self, key: &str, v: &Spanned<String>, errors: &mut Vec<ConfigError>) -> Option<String> {
        if !no_nul(self.file, key, v, errors) {
            return None;
        }
        expand(v.get_ref(), self.lookup).map_err(|e| errors.push(self.file.error(Some(v.span()), e.to_string()))).ok()
    }

    fn kind(
        &self,
        r: &raw::RawProbe,
        span: Range<usize>,
        table: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<ProbeKind> {
        let count =
            [r.http.is_some(), r.tcp.is_some(), r.exec.is_some(), r.log.is_some()].iter().filter(|x| **x).count();
        if count == 0 && dropped_near(self.dropped, table, &["http", "tcp", "exec", "log"]) {
            return None;
        }
        if count != 1 {
            errors.push(self.file.error(
                Some(span),
                format!("[{table}] needs exactly one of http, tcp, exec, log; write e.g. tcp = \"127.0.0.1:5432\""),
            ));
            return None;
        }
        if let Some(url) = &r.http {
            let expanded = self.expand("http", url, errors)?;
            return match parse_http_url(&expanded) {
                Ok((authority, host, path)) => Some(ProbeKind::Http { url: expanded, authority, host, path }),
                Err(e) => {
                    let fix = "write e.g. http = \"http://127.0.0.1:3000/health\"";
                    errors.push(self.file.error(Some(url.span()), format!("key `http`: {e}; {fix}")));
                    None
                }
            };
        }
        if let Some(addr) = &r.tcp {
            let expanded = self.expand("tcp", addr, errors)?;
            if expanded
                .rsplit_once(':')
                .and_then(|(h, p)| (!h.is_empty()).then_some(p))
                .and_then(|p| p.parse::<u16>().ok())
                .is_none()
            {
                errors.push(
                    self.file.error(Some(addr.span()), format!("key `tcp`: invalid target {expanded:?}: expected host:port; write e.g. tcp = \"127.0.0.1:5432\"")),
                );
                return None;
            }
            return Some(ProbeKind::Tcp { addr: expanded });
        }
        if let Some(cmd) = &r.exec {
            if cmd.get_ref().is_empty() {
                errors.push(self.file.error(Some(cmd.span()), "exec probe command must not be empty".into()));
                return None;
            }
            let argv: Option<Vec<String>> = cmd.get_ref().iter().map(|a| self.expand("exec", a, errors)).collect();
            let argv = argv?;
            let Some(program) = (self.resolve)(&argv[0]) else {
                errors.push(self.file.error(
                    Some(cmd.span()),
                    format!("probe program {:?} not found on PATH (or not executable)", argv[0]),
                ));
                return None;
            };
            return Some(ProbeKind::Exec { program, argv });
        }
        let pattern = r.log.as_ref()?;
        match regex::Regex::new(pattern.get_ref()) {
            Ok(regex) => Some(ProbeKind::Log { regex }),
            Err(e) => {
                let last = e.to_string().lines().last().unwrap_or("").trim().to_string();
                let first = last.strip_prefix("error: ").unwrap_or(&last).to_string();
                errors.push(self.file.error(
                    Some(pattern.span()),
                    format!("key `log`: invalid regular expression {:?}: {first}", pattern.get_ref()),
                ));
                None
            }
        }
    }
}

/// `http://host[:port][/path]` → (host:port, host header, path).
fn parse_http_url(url: &str) -> Result<(String, String, String), String> {
    let rest = match url.strip_prefix("http://") {
        Some(r) => r,
        None if url.starts_with("https://") => {
            return Err(format!("{url:?}: https is not supported here; use the service's plain http port"))
        }
        None => return Err(format!("invalid URL {url:?}: expected http://host:port/path")),
    };
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host_port.is_empty() || host_port.contains('@') {
        return Err(format!("invalid URL {url:?}: expected http://host:port/path"));
    }
    let has_port = match host_port.rfind(':') {
        Some(i) => !host_port[i..].contains(']'),
        None => false,
    };
    let authority = if has_port { host_port.to_string() } else { format!("{host_port}:80") };
    if let Some(port) = authority.rsplit(':').next() {
        if port.parse::<u16>().is_err() {
            return Err(format!("invalid port in http probe URL {url:?}"));
        }
    }
    Ok((authority, host_port.to_string(), path.to_string()))
}

fn set_env(env: &mut Vec<(OsString, OsString)>, key: &str, value: OsString) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => env.push((key.into(), value)),
    }
}

fn valid_env_key(k: &str) -> bool {
    !k.is_empty() && !k.contains('=') && !k.contains('\0')
}

/// `KEY=VALUE` lines; blank lines and `#` comments skipped; an optional
/// `export ` prefix; one pair of matching quotes around the value removed.
/// Values are taken literally (no expansion). Errors carry the line number.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err((i + 1, "expected KEY=VALUE".into()));
        };
        let k = k.trim();
        if !valid_env_key(k) || k.contains(char::is_whitespace) {
            return Err((i + 1, format!("invalid variable name {k:?}")));
        }
        let v = v.trim();
        let v = ['"', '\''].iter().find_map(|q| v.strip_prefix(*q).and_then(|x| x.strip_suffix(*q))).unwrap_or(v);
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn resolve_credentials(
    file: &FileCtx,
    user: &Option<Spanned<UserRef>>,
    group: &Option<Spanned<UserRef>>,
    ctx: &LoadContext,
    errors: &mut Vec<ConfigError>,
) -> Option<Credentials> {
    if user.is_none() && group.is_none() {
        return None;
    }
    let span = user.as_ref().or(group.as_ref()).map(|s| s.span());
    if !ctx.can_switch_user {
        errors.push(file.error(span, "user/group need flowinit to run as root".into()));
        return None;
    }
    use nix::unistd::{Group, User};
    let mut creds = Credentials { user_name: None, uid: 0, gid: 0, groups: Vec::new() };
    if let Some(u) = user {
        let found = match u.get_ref() {
            UserRef::Name(n) => User::from_name(n).ok().flatten(),
            UserRef::Id(id) => User::from_uid((*id).into()).ok().flatten(),
        };
        match (found, u.get_ref()) {
            (Some(pw), _) => {
                creds.uid = pw.uid.as_raw();
                creds.gid = pw.gid.as_raw();
                if let Ok(cname) = CString::new(pw.name.clone()) {
                    if let Ok(groups) = nix::unistd::getgrouplist(&cname, pw.gid) {
                        creds.groups = groups.into_iter().map(|g| g.as_raw()).collect();
                    }
                }
                creds.user_name = Some(pw.name);
            }
            (None, UserRef::Id(id)) => {
                creds.uid = *id;
                creds.gid = *id;
            }
            (None, UserRef::Name(n)) => {
                errors.push(file.error(Some(u.span()), format!("unknown user {n:?} (not in /etc/passwd)")));
                return None;
            }
        }
    }
    if let Some(g) = group {
        let found = match g.get_ref() {
            UserRef::Name(n) => Group::from_name(n).ok().flatten().map(|g| g.gid.as_raw()),
            UserRef::Id(id) => Some(*id),
        };
        match found {
            Some(gid) => {
                creds.gid = gid;
                if user.is_none() {
                    creds.groups = vec![gid];
                }
            }
            None => {
                errors.push(file.error(Some(g.span()), format!("unknown group {} (not in /etc/group)", g.get_ref())));
                return None;
            }
        }
    }
    if !creds.groups.contains(&creds.gid) {
        creds.groups.insert(0, creds.gid);
    }
    Some(creds)
}

/// `present`: every unit file name, including files that failed to parse
/// (an error was reported for them already; depending on them is fine).
fn check_graph(units: &[Pending], present: &HashSet<String>, errors: &mut Vec<ConfigError>) {
    let by_name: HashMap<&str, &Pending> = units.iter().map(|p| (p.unit.name.as_str(), p)).collect();
    let mut known: Vec<&str> = present.iter().map(String::as_str).filter(|n| valid_unit_name(n)).collect();
    known.sort_unstable();
    for p in units {
        for (kind, dep) in &p.deps {
            match by_name.get(dep.get_ref().as_str()) {
                None if present.contains(dep.get_ref()) => {}
                None => {
                    let name = dep.get_ref();
                    let key = kind.key();
                    let candidates = known.iter().copied().filter(|n| *n != p.unit.name);
                    let fix = match super::schema::closest(name, candidates) {
                        Some(near) => format!("; did you mean {near:?}?"),
                        None if *kind == DepKind::Route => format!("; add {name}.toml or name a unit that exists"),
                        None => format!("; add {name}.toml or remove it from {key}"),
                    };
                    errors.push(p.file.error(
                        Some(dep.span()),
                        format!("unknown unit {name:?} in {key} (no {name}.toml in the units dir){fix}"),
                    ));
                }
                Some(d) if *kind == DepKind::Requires && p.unit.enabled && !d.unit.enabled => {
                    errors.push(p.file.error(
                        Some(dep.span()),
                        format!(
                            "requires {:?}, which is disabled (profiles: {}); use wants, or turn on its profile",
                            dep.get_ref(),
                            d.unit.profiles.join(", ")
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    let nodes: Vec<(&str, Vec<&str>)> = units
        .iter()
        .map(|p| {
            (
                p.unit.name.as_str(),
                p.unit.ordering_deps().filter(|d| by_name.contains_key(d) && *d != p.unit.name).collect(),
            )
        })
        .collect();
    for cycle in graph::find_cycles(&nodes) {
        let Some(first) = cycle.first().and_then(|n| by_name.get(n.as_str())) else {
            continue;
        };
        let next = cycle.get(1).cloned().unwrap_or_default();
        let span = first.deps.iter().find(|(_, d)| *d.get_ref() == next).map(|(_, d)| d.span());
        let mut shown = cycle.clone();
        shown.push(cycle[0].clone());
        errors.push(first.file.error(span, format!("dependency cycle: {}", shown.join(" → "))));
    }
}

/// Whether two listen addresses take the same port: same family and port,
/// and the same address or either the wildcard (on Linux 0.0.0.0:3000 and
/// 127.0.0.1:3000 cannot both be bound).
fn overlaps(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Two enabled routers on overlapping addresses: one error at the later
/// one's `listen`, naming both units and both places.
fn check_listen_addresses(units: &[Pending], errors: &mut Vec<ConfigError>) {
    let routers: Vec<(&Pending, &RouterSpec)> =
        units.iter().filter(|p| p.unit.enabled).filter_map(|p| p.unit.router.as_ref().map(|r| (p, r))).collect();
    for (i, (p, r)) in routers.iter().enumerate() {
        let Some((first, fr)) = routers[..i].iter().find(|(_, fr)| overlaps(fr.listen, r.listen)) else { continue };
        let here = format!("{}:{}:{}", p.unit.file.display(), r.listen_at.line, r.listen_at.column);
        let there = format!("{}:{}:{}", first.unit.file.display(), fr.listen_at.line, fr.listen_at.column);
        let same = if fr.listen == r.listen { "the same address as" } else { "an address that overlaps" };
        errors.push(ConfigError {
            file: p.unit.file.clone(),
            line: r.listen_at.line,
            column: r.listen_at.column,
            unit: Some(p.unit.name.clone()),
            message: format!(
                "key `listen`: {} ({here}) is {same} {} of unit {} ({there}); two routers cannot listen on one port: give one of them another port",
                r.listen, fr.listen, first.unit.name
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> LoadContext {
        LoadContext {
            env: vec![("PATH".into(), "/usr/bin:/bin".into()), ("HOST".into(), "h".into())],
            profiles: vec!["dev".into()],
            can_switch_user: true,
            base_dir: None,
        }
    }

    fn load(files: &[(&str, &str)]) -> Result<UnitSet, Vec<String>> {
        let files: Vec<_> =
            files.iter().map(|(n, t)| (PathBuf::from(format!("u/{n}.toml")), Ok(t.to_string()))).collect();
        load_files(&files, &ctx()).map_err(|e| e.iter().map(|e| e.to_string()).collect())
    }

    /// The env of the profiles that are on is laid over `env`, in the order
    /// the profiles were given; that of the others is not.
    #[test]
    fn profile_env_applies_only_when_its_profile_is_on() {
        let text = "[service]\ncommand = [\"true\"]\nenv = { MODE = \"main\", A = \"a\" }\n\
                    [service.profile_env.dev]\nMODE = \"dev-${HOST}\"\n\
                    [service.profile_env.queue]\nMODE = \"queue\"\nB = \"b\"\n";
        let files = [(PathBuf::from("u/web.toml"), Ok(text.to_string()))];
        let env_of = |profiles: &[&str]| {
            let mut c = ctx();
            c.profiles = profiles.iter().map(|p| p.to_string()).collect();
            let set = load_files(&files, &c).unwrap();
            let env = set.units[0].service.as_ref().unwrap().process_env("web", None);
            let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.to_string_lossy().into_owned());
            (get("MODE"), get("A"), get("B"))
        };
        assert_eq!(env_of(&[]), (Some("main".into()), Some("a".into()), None));
        assert_eq!(env_of(&["dev"]), (Some("dev-h".into()), Some("a".into()), None));
        assert_eq!(env_of(&["dev", "queue"]), (Some("queue".into()), Some("a".into()), Some("b".into())));
        assert_eq!(env_of(&["queue", "dev"]), (Some("dev-h".into()), Some("a".into()), Some("b".into())));
    }

    #[test]
    fn negated_profiles() {
        use crate::config::unit::profiles_allow;
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(profiles_allow(&v(&[]), &v(&[])));
        assert!(profiles_allow(&v(&["!worker"]), &v(&["dev", "queue"])));
        assert!(!profiles_allow(&v(&["!worker"]), &v(&["dev", "worker"])));
        assert!(profiles_allow(&v(&["queue", "worker"]), &v(&["worker"])));
        assert!(!profiles_allow(&v(&["queue", "worker"]), &v(&["dev"])));
        assert!(!profiles_allow(&v(&["dev", "!worker"]), &v(&["dev", "worker"])));
        assert!(!profiles_allow(&v(&["dev", "!worker"]), &v(&[])));
    }

    #[test]
    fn minimal_unit_gets_defaults() {
        let set = load(&[("web", "[service]\ncommand = [\"sh\", \"-c\", \"echo ${HOST}\"]\n")]).unwrap();
        let s = set.units[0].service.as_ref().unwrap();
        assert_eq!(s.argv, ["sh", "-c", "echo h"]);
        assert!(s.program.is_absolute());
        assert_eq!(s.restart, RestartPolicy::OnFailure);
        assert_eq!(s.stop_timeout, DEFAULT_STOP_TIMEOUT);
        assert_eq!(set.units[0].log.prefix, "web");
    }

    #[test]
    fn relative_paths_are_taken_against_the_base_dir() {
        let ctx = LoadContext { base_dir: Some(PathBuf::from("/base")), ..ctx() };
        let files = [
            (
                PathBuf::from("u/rel.toml"),
                Ok("[service]\ncommand = [\"sh\"]\nworking_dir = \"app\"\n[log]\nfile = \"logs/rel.log\"\n"
                    .to_string()),
            ),
            (PathBuf::from("u/abs.toml"), Ok("[service]\ncommand = [\"sh\"]\nworking_dir = \"/srv\"\n".to_string())),
        ];
        let set = load_files(&files, &ctx).unwrap();
        let (abs, rel) = (&set.units[0], &set.units[1]);
        assert_eq!(rel.service.as_ref().unwrap().working_dir.as_deref(), Some(Path::new("/base/app")));
        assert_eq!(rel.log.file.as_deref(), Some(Path::new("/base/logs/rel.log")));
        assert_eq!(abs.service.as_ref().unwrap().working_dir.as_deref(), Some(Path::new("/srv")));
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let errs = load(&[("a", "[service]\ncommand = [\"true\"]\nstop_timeout = \"ten\"\n")]).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("u/a.toml:3:16: unit a: invalid duration \"ten\""), "{}", errs[0]);
    }

    #[test]
    fn memory_max_and_its_check() {
        let unit = |keys: &str| format!("[service]\ncommand = [\"true\"]\n{keys}");
        let memory = |keys: &str| load(&[("m", &unit(keys))]).map(|set| set.units[0].service.as_ref().unwrap().memory);
        assert_eq!(memory(""), Ok(None));
        let limit = |max_bytes, secs| Ok(Some(MemoryLimit { max_bytes, check_every: Duration::from_secs(secs) }));
        assert_eq!(memory("memory_max = \"1.5GiB\"\n"), limit(3 << 29, 10));
        assert_eq!(memory("memory_max = 1048576\nmemory_check = \"2s\"\n"), limit(1 << 20, 2));
        let cases = [
            ("memory_max = \"lots\"\n", "u/m.toml:3:14: unit m: key `memory_max`: invalid size \"lots\": expected a number, then an optional unit; write e.g. memory_max = \"1.5GiB\""),
            ("memory_max = \"1gb\"\n", "invalid size \"1gb\": \"gb\" is ambiguous (1000 or 1024?): write \"GiB\" or \"G\""),
            ("memory_max = 0\n", "u/m.toml:3:14: unit m: key `memory_max`: invalid size 0: must be more than 0 bytes"),
            ("memory_max = \"1G\"\nmemory_check = \"0s\"\n", "u/m.toml:4:16: unit m: key `memory_check`: must be more than 0"),
            ("memory_check = \"1s\"\n", "u/m.toml:3:16: unit m: key `memory_check`: needs memory_max"),
            ("memory_max = \"1G\"\nmemory_check = \"often\"\n", "invalid duration \"often\" for `memory_check`"),
            ("memory_max = 1.5\n", "key `memory_max`: expected a size string such as \"512MiB\" or \"1.5GiB\", or a whole number of bytes, found the float 1.5; write memory_max = \"1.5GiB\""),
        ];
        for (keys, want) in cases {
            let errs = memory(keys).unwrap_err();
            assert_eq!(errs.len(), 1, "{keys}: {errs:?}");
            assert!(errs[0].contains(want), "{keys}:\n got {}\nwant {want}", errs[0]);
        }
    }

    #[test]
    fn max_connections_is_checked_with_its_position() {
        let router = |max: &str| {
            format!("[router]\nlisten = \"127.0.0.1:1\"\nmax_connections = {max}\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:2\"\n")
        };
        let set = load(&[("r", &router("500"))]).unwrap();
        assert_eq!(set.units[0].router.as_ref().unwrap().max_connections, Some(500));
        for bad in ["0", "-1", "99999999999"] {
            let errs = load(&[("r", &router(bad))]).unwrap_err();
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(
                errs[0].starts_with(&format!(
                    "u/r.toml:3:19: unit r: max_connections must be between 1 and 10000000, not {bad}"
                )),
                "{}",
                errs[0]
            );
        }
        let text = "[router]\nlisten = \"127.0.0.1:1\"\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:2\"\n";
        assert_eq!(load(&[("r", text)]).unwrap().units[0].router.as_ref().unwrap().max_connections, None);
    }

    #[test]
    fn cycle_is_printed_whole() {
        let unit = |dep: &str| format!("[unit]\nafter = [\"{dep}\"]\n[service]\ncommand = [\"true\"]\n");
        let errs = load(&[("a", &unit("b")), ("b", &unit("c")), ("c", &unit("a"))]).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("dependency cycle: a → b → c → a"), "{}", errs[0]);
        assert!(errs[0].starts_with("u/a.toml:2:10:"), "{}", errs[0]);
    }

    #[test]
    fn disabled_units_are_not_resolved() {
        let set =
            load(&[("pg", "[unit]\nprofiles = [\"prod-only\"]\n[service]\ncommand = [\"no-such-program-xyz\"]\n")])
                .unwrap();
        assert!(!set.units[0].enabled);
        assert!(set.units[0].service.is_none());
    }

    #[test]
    fn a_disabled_unit_loads_alone_as_if_its_profile_were_on() {
        let dir = std::env::temp_dir().join(format!("flowinit-enabled-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pg.toml");
        let text = "[unit]\nprofiles = [\"prod-only\"]\nrequires = [\"elsewhere\"]\n[service]\ncommand = [\"sh\"]\nenv = { X = \"${HOST}\" }\n";
        std::fs::write(&path, text).unwrap();
        let unit = load_unit_enabled(&path, &ctx()).unwrap();
        assert!(unit.enabled);
        let svc = unit.service.as_ref().unwrap();
        assert_eq!(svc.env.get("X"), Some(&OsString::from("h")));
        let env = svc.process_env("pg", None);
        assert!(env.contains(&("FLOWINIT_UNIT".into(), "pg".into())));
        assert!(!env.iter().any(|(k, _)| k == "FLOWINIT_RUN"));
        std::fs::write(&path, "[unit]\nprofiles = [\"prod-only\"]\n[service]\ncommand = [\"no-such-program-xyz\"]\n")
            .unwrap();
        let errs = load_unit_enabled(&path, &ctx()).unwrap_err();
        assert!(errs[0].to_string().contains("program \"no-such-program-xyz\" not found"), "{errs:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn notify_unit_names_up_to_the_socket_limit_load() {
        let unit = "[service]\ncommand = [\"true\"]\ntype = \"notify\"\n";
        let longest = "n".repeat(MAX_NOTIFY_UNIT_NAME);
        assert!(load(&[(&longest, unit)]).is_ok());
        // The longest name still fits with the largest pid and sequence number.
        assert_eq!(notify_socket_name(4_194_304, &longest, u64::MAX).len(), NOTIFY_ADDRESS_MAX - 1);
        let errs = load(&[(&format!("{longest}x"), unit)]).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("at most 69 fit"), "{}", errs[0]);
        // Only notify units have a notify socket.
        assert!(load(&[(&format!("{longest}x"), "[service]\ncommand = [\"true\"]\n")]).is_ok());
    }

    #[test]
    fn listen_addresses_overlap_on_the_same_port_and_family() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert!(overlaps(a("127.0.0.1:3000"), a("127.0.0.1:3000")));
        assert!(overlaps(a("0.0.0.0:3000"), a("127.0.0.1:3000")));
        assert!(overlaps(a("10.0.0.1:3000"), a("0.0.0.0:3000")));
        assert!(overlaps(a("[::]:3000"), a("[::1]:3000")));
        assert!(!overlaps(a("127.0.0.1:3000"), a("127.0.0.1:3001")));
        assert!(!overlaps(a("127.0.0.1:3000"), a("10.0.0.1:3000")));
        assert!(!overlaps(a("0.0.0.0:3000"), a("[::1]:3000")));
        let router = |addr: &str| {
            format!(
                "[router]\nlisten = \"{addr}\"\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\n"
            )
        };
        assert!(load(&[("a", &router("127.0.0.1:3000")), ("b", &router("127.0.0.1:3001"))]).is_ok());
        // A router disabled by profile binds nothing.
        let off = format!("[unit]\nprofiles = [\"off\"]\n{}", router("127.0.0.1:3000"));
        assert!(load(&[("a", &router("127.0.0.1:3000")), ("b", &off)]).is_ok());
    }

    #[test]
    fn nested_defaults_expand_like_compose() {
        let set =
            load(&[("web", "[service]\ncommand = [\"echo\", \"${NOPE:-${HOST}}\", \"${HOST:-${NOPE}}\"]\n")]).unwrap();
        assert_eq!(set.units[0].service.as_ref().unwrap().argv, ["echo", "h", "h"]);
    }

    #[test]
    fn env_file_parsing() {
        let pairs = parse_env_file("# c\n\nA=1\nexport B = \"two words\"\nC='x'\n").unwrap();
        assert_eq!(pairs, [("A".into(), "1".into()), ("B".into(), "two words".into()), ("C".into(), "x".into())]);
        assert_eq!(parse_env_file("A=1\nnonsense\n").unwrap_err().0, 2);
    }
}
