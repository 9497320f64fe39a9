//! The serde mirror of a unit file: exactly the TOML shape, unknown keys
//! rejected, every value that can be wrong kept with its span so that
//! validation can point at file:line:column.

use super::schema::{self, Problem};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnitFile {
    #[serde(default)]
    pub unit: RawUnitSection,
    pub service: Option<Spanned<RawService>>,
    pub router: Option<Spanned<RawRouter>>,
    pub readiness: Option<Spanned<RawProbe>>,
    pub liveness: Option<Spanned<RawProbe>>,
    pub log: Option<RawLog>,
    /// Dotted paths of the entries [`schema::check`] reported and removed
    /// (`service.command`): validation must not call them missing.
    #[serde(skip)]
    pub dropped: BTreeSet<String>,
}

impl RawUnitFile {
    pub fn dropped(&self, path: &str) -> bool {
        self.dropped.contains(path)
    }
}

/// `[router]`: the built-in HTTP router.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouter {
    /// Required; [`schema::check`] reports it missing.
    pub listen: Option<Spanned<String>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    pub stop_timeout: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub header_timeout: Option<Spanned<String>>,
    pub upstream_timeout: Option<Spanned<String>>,
    pub access_log: Option<bool>,
    pub access_log_skip: Option<Vec<String>>,
    pub trust_forwarded: Option<bool>,
    pub max_connections: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Required, like `upstream`; [`schema::check`] reports them missing.
    pub prefix: Option<Spanned<String>>,
    pub upstream: Option<Spanned<String>>,
    pub unit: Option<Spanned<String>>,
    #[serde(default)]
    pub strip_prefix: bool,
}

/// `[readiness]` and `[liveness]`: exactly one probe kind plus timing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub http: Option<Spanned<String>>,
    pub tcp: Option<Spanned<String>>,
    pub exec: Option<Spanned<Vec<Spanned<String>>>>,
    pub log: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub start_timeout: Option<Spanned<String>>,
    pub failures: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnitSection {
    pub description: Option<String>,
    #[serde(default)]
    pub requires: Vec<Spanned<String>>,
    #[serde(default)]
    pub wants: Vec<Spanned<String>>,
    #[serde(default)]
    pub after: Vec<Spanned<String>>,
    #[serde(default)]
    pub profiles: Vec<Spanned<String>>,
    #[serde(default)]
    pub critical: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    pub shell: Option<Spanned<String>>,
    #[serde(rename = "type")]
    pub kind: Option<Spanned<ServiceKind>>,
    pub working_dir: Option<Spanned<String>>,
    pub user: Option<Spanned<UserRef>>,
    pub group: Option<Spanned<UserRef>>,
    #[serde(default)]
    pub env: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub env_file: Vec<Spanned<String>>,
    /// `[service.profile_env.NAME]`: env set over `env` while profile
    /// NAME is on.
    #[serde(default)]
    pub profile_env: BTreeMap<Spanned<String>, BTreeMap<String, Spanned<String>>>,
    pub restart: Option<Spanned<RestartPolicy>>,
    pub restart_delay: Option<Spanned<String>>,
    pub restart_delay_max: Option<Spanned<String>>,
    pub start_limit_burst: Option<Spanned<u32>>,
    pub start_limit_interval: Option<Spanned<String>>,
    pub stop_signal: Option<Spanned<String>>,
    pub stop_timeout: Option<Spanned<String>>,
    pub memory_max: Option<Spanned<RawSize>>,
    pub memory_check: Option<Spanned<String>>,
}

/// A size as written: a string with a unit (`"1.5GiB"`) or a number of
/// bytes; [`super::size::parse_size`] reads the string at validation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(expecting = "a size string such as \"512MiB\" or a number of bytes")]
#[serde(try_from = "toml::Value")]
pub enum RawSize {
    Text(String),
    Bytes(i64),
}

impl TryFrom<toml::Value> for RawSize {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => Ok(RawSize::Text(s)),
            toml::Value::Integer(i) => Ok(RawSize::Bytes(i)),
            other => Err(format!("invalid type: {}, expected a size string or a number of bytes", other.type_str())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    Simple,
    Oneshot,
    Notify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    OnFailure,
    Always,
}

/// A user or group given by name or by numeric id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(expecting = "a user or group name (string) or a numeric id")]
#[serde(try_from = "toml::Value")]
pub enum UserRef {
    Name(String),
    Id(u32),
}

impl std::fmt::Display for UserRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserRef::Name(n) => write!(f, "{n:?}"),
            UserRef::Id(id) => write!(f, "{id}"),
        }
    }
}

impl TryFrom<toml::Value> for UserRef {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => Ok(UserRef::Name(s)),
            toml::Value::Integer(i) => {
                u32::try_from(i).map(UserRef::Id).map_err(|_| format!("invalid id {i}: expected 0..={}", u32::MAX))
            }
            other => Err(format!("invalid type: {}, expected a name (string) or a numeric id", other.type_str())),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub prefix: Option<String>,
    pub file: Option<Spanned<String>>,
    pub rotate: Option<Spanned<Rotation>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    Never,
    Hourly,
    Daily,
}

/// A unit file read as far as it can be: `raw` is None after a TOML
/// syntax error (which stops the file); otherwise every schema problem is
/// listed and `raw` holds the rest.
pub struct Parsed {
    pub raw: Option<RawUnitFile>,
    pub problems: Vec<Problem>,
}

pub fn parse(text: &str) -> Parsed {
    let mut root = match toml::de::DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => return Parsed { raw: None, problems: vec![syntax_problem(text, &e)] },
    };
    let (mut problems, dropped) = schema::check(&mut root);
    match RawUnitFile::deserialize(toml::de::Deserializer::from(root)) {
        Ok(mut raw) => {
            raw.dropped = dropped;
            Parsed { raw: Some(raw), problems }
        }
        // Only reached if the schema and these structs disagree.
        Err(e) => {
            problems.push(Problem { span: e.span().unwrap_or(0..0), message: e.message().trim_end().to_string() });
            Parsed { raw: None, problems }
        }
    }
}

fn syntax_problem(text: &str, e: &toml::de::Error) -> Problem {
    let span = e.span().unwrap_or(0..0);
    let mut message = e.message().trim_end().to_string();
    if message == "duplicate key" {
        if let Some(key) = text.get(span.clone()).map(str::trim).filter(|k| !k.is_empty() && !k.contains('\n')) {
            message = format!("duplicate key `{key}`: it is already set above in the same table; keep one of the two");
        }
    }
    Problem { span, message }
}
