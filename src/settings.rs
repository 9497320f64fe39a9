//! flowinit's own environment settings, the `FLOWINIT_*` variables: each
//! one is read here, once, and parsed like the flag it stands for. A bad
//! value is an error naming the variable, the value and what is accepted,
//! never a silent fallback (a typo in an ECS task definition must stop the
//! container, not send unparseable logs). An empty value means unset.
//! Also `NO_COLOR` (<https://no-color.org>), read by the client commands.

use crate::logs::LogFormat;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

pub const LOG_FORMAT: &str = "FLOWINIT_LOG_FORMAT";
pub const LOG_LEVEL: &str = "FLOWINIT_LOG_LEVEL";
pub const SHUTDOWN_TIMEOUT: &str = "FLOWINIT_SHUTDOWN_TIMEOUT";
pub const UNITS: &str = "FLOWINIT_UNITS";
pub const PROFILES: &str = "FLOWINIT_PROFILES";
pub const SOCKET: &str = "FLOWINIT_SOCKET";
pub const METRICS: &str = "FLOWINIT_METRICS";

/// Every setting flowinit reads, for the "did you mean" of an unknown one.
pub const KNOWN: [&str; 7] = [LOG_FORMAT, LOG_LEVEL, SHUTDOWN_TIMEOUT, UNITS, PROFILES, SOCKET, METRICS];

/// `FLOWINIT_*` names flowinit sets in its services' environment (see
/// `supervisor::unit_task::child`): seen by a nested flowinit, not settings.
const SET_FOR_SERVICES: [&str; 2] = ["FLOWINIT_UNIT", "FLOWINIT_RUN"];

/// The default shutdown budget (inside `docker stop`'s 10 s).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(9);

/// The parsed settings; `None` where the variable is unset (or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub log_format: LogFormat,
    pub log_level: tracing::Level,
    pub shutdown_timeout: Option<Duration>,
    pub units: Option<PathBuf>,
    pub profiles: Option<Vec<String>>,
    pub socket: Option<PathBuf>,
    /// Where `GET /metrics` is served (off when unset).
    pub metrics: Option<std::net::SocketAddr>,
    /// `FLOWINIT_*` variables that are no setting (typos, most likely).
    pub unknown: Vec<String>,
}

/// A setting whose value is not one it accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?}: {why} (accepted: {accepted}; an empty value means unset)")]
pub struct BadSetting {
    pub var: &'static str,
    /// The value as given (lossy when it is not UTF-8).
    pub value: String,
    pub why: String,
    pub accepted: &'static str,
}

const LOG_FORMATS: &str = "plain, json";
const LOG_LEVELS: &str = "error, warn, info, debug, trace";
const DURATIONS: &str = "a duration such as \"9s\", \"1m 30s\", \"500ms\"";
const PROFILE_LIST: &str = "profile names separated by commas, e.g. \"dev\" or \"dev,debug\"";

impl Settings {
    /// Reads flowinit's own environment.
    pub fn from_env() -> Result<Settings, Vec<BadSetting>> {
        Settings::from_vars(std::env::vars_os())
    }

    /// Parses `vars` (name, value) pairs; every bad value is reported.
    pub fn from_vars(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Settings, Vec<BadSetting>> {
        let vars: Vec<(OsString, OsString)> = vars.into_iter().collect();
        let get =
            |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_os_str()).filter(|v| !v.is_empty());
        let log_format = log_format(get(LOG_FORMAT));
        let log_level = log_level(get(LOG_LEVEL));
        let shutdown_timeout = shutdown_timeout(get(SHUTDOWN_TIMEOUT));
        let profiles = profiles(get(PROFILES));
        let units = get(UNITS).map(PathBuf::from);
        let socket = get(SOCKET).map(PathBuf::from);
        let metrics = metrics(get(METRICS));
        let mut unknown: Vec<String> = vars
            .iter()
            .filter_map(|(k, _)| k.to_str())
            .filter(|k| k.starts_with("FLOWINIT_") && !KNOWN.contains(k) && !SET_FOR_SERVICES.contains(k))
            .map(String::from)
            .collect();
        unknown.sort();
        match (log_format, log_level, shutdown_timeout, profiles, metrics) {
            (Ok(log_format), Ok(log_level), Ok(shutdown_timeout), Ok(profiles), Ok(metrics)) => {
                Ok(Settings { log_format, log_level, shutdown_timeout, units, profiles, socket, metrics, unknown })
            }
            (a, b, c, d, e) => Err([a.err(), b.err(), c.err(), d.err(), e.err()].into_iter().flatten().collect()),
        }
    }

    /// One warning per unknown `FLOWINIT_*` variable, naming the known ones.
    pub fn unknown_warnings(&self) -> Vec<String> {
        self.unknown
            .iter()
            .map(|name| format!("{name} is not a flowinit setting; ignored (known: {})", KNOWN.join(", ")))
            .collect()
    }
}

fn utf8(var: &'static str, value: &OsStr, accepted: &'static str) -> Result<String, BadSetting> {
    value.to_str().map(String::from).ok_or_else(|| BadSetting {
        var,
        value: value.to_string_lossy().into_owned(),
        why: "not valid UTF-8".into(),
        accepted,
    })
}

fn log_format(value: Option<&OsStr>) -> Result<LogFormat, BadSetting> {
    let Some(value) = value else { return Ok(LogFormat::Plain) };
    let text = utf8(LOG_FORMAT, value, LOG_FORMATS)?;
    match text.to_ascii_lowercase().as_str() {
        "plain" => Ok(LogFormat::Plain),
        "json" => Ok(LogFormat::Json),
        _ => Err(BadSetting { var: LOG_FORMAT, value: text, why: "not a log format".into(), accepted: LOG_FORMATS }),
    }
}

fn log_level(value: Option<&OsStr>) -> Result<tracing::Level, BadSetting> {
    use tracing::Level;
    let Some(value) = value else { return Ok(Level::INFO) };
    let text = utf8(LOG_LEVEL, value, LOG_LEVELS)?;
    // Not `Level::from_str`: it also takes numbers, which nobody documents.
    match text.to_ascii_lowercase().as_str() {
        "error" => Ok(Level::ERROR),
        "warn" => Ok(Level::WARN),
        "info" => Ok(Level::INFO),
        "debug" => Ok(Level::DEBUG),
        "trace" => Ok(Level::TRACE),
        _ => Err(BadSetting { var: LOG_LEVEL, value: text, why: "not a log level".into(), accepted: LOG_LEVELS }),
    }
}

fn shutdown_timeout(value: Option<&OsStr>) -> Result<Option<Duration>, BadSetting> {
    let Some(value) = value else { return Ok(None) };
    let text = utf8(SHUTDOWN_TIMEOUT, value, DURATIONS)?;
    match humantime::parse_duration(&text) {
        Ok(d) => Ok(Some(d)),
        Err(e) => Err(BadSetting { var: SHUTDOWN_TIMEOUT, value: text, why: e.to_string(), accepted: DURATIONS }),
    }
}

const ADDRESSES: &str = "an address and port such as \"127.0.0.1:9100\" or \"[::]:9100\"";

fn metrics(value: Option<&OsStr>) -> Result<Option<std::net::SocketAddr>, BadSetting> {
    let Some(value) = value else { return Ok(None) };
    let text = utf8(METRICS, value, ADDRESSES)?;
    match text.parse() {
        Ok(addr) => Ok(Some(addr)),
        Err(e) => {
            Err(BadSetting { var: METRICS, value: text, why: format!("not an address: {e}"), accepted: ADDRESSES })
        }
    }
}

fn profiles(value: Option<&OsStr>) -> Result<Option<Vec<String>>, BadSetting> {
    let Some(value) = value else { return Ok(None) };
    let text = utf8(PROFILES, value, PROFILE_LIST)?;
    Ok(Some(split_profiles(&text)))
}

/// `a, b,,c` → a, b, c (the form of both `--profile` and the variable).
pub fn split_profiles(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect()
}

/// Whether colour is allowed at all: `NO_COLOR` set to anything but the
/// empty string turns it off (<https://no-color.org>).
pub fn color_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Settings, Vec<BadSetting>> {
        Settings::from_vars(pairs.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))))
    }

    #[test]
    fn defaults_and_empty_values() {
        for env in [&[][..], &[(LOG_FORMAT, ""), (LOG_LEVEL, ""), (SHUTDOWN_TIMEOUT, ""), (PROFILES, "")][..]] {
            let s = parse(env).unwrap();
            assert_eq!(s.log_format, LogFormat::Plain);
            assert_eq!(s.log_level, tracing::Level::INFO);
            assert_eq!(s.shutdown_timeout, None);
            assert_eq!(s.profiles, None);
        }
    }

    #[test]
    fn good_values() {
        let s = parse(&[
            (LOG_FORMAT, "JSON"),
            (LOG_LEVEL, "debug"),
            (SHUTDOWN_TIMEOUT, "1m 30s"),
            (PROFILES, "dev, debug,"),
            (UNITS, "u"),
            ("FLOWINIT_UNIT", "web"),
        ])
        .unwrap();
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.log_level, tracing::Level::DEBUG);
        assert_eq!(s.shutdown_timeout, Some(Duration::from_secs(90)));
        assert_eq!(s.profiles, Some(vec!["dev".to_string(), "debug".to_string()]));
        assert_eq!(s.units, Some(PathBuf::from("u")));
        assert!(s.unknown.is_empty());
    }

    #[test]
    fn every_bad_value_is_reported() {
        let errors = parse(&[(LOG_FORMAT, "jsn"), (LOG_LEVEL, "3"), (SHUTDOWN_TIMEOUT, "9")]).unwrap_err();
        let vars: Vec<&str> = errors.iter().map(|e| e.var).collect();
        assert_eq!(vars, [LOG_FORMAT, LOG_LEVEL, SHUTDOWN_TIMEOUT]);
        assert_eq!(
            errors[0].to_string(),
            "FLOWINIT_LOG_FORMAT=\"jsn\": not a log format (accepted: plain, json; an empty value means unset)"
        );
    }

    #[test]
    fn non_utf8_is_bad() {
        use std::os::unix::ffi::OsStringExt;
        let errors =
            Settings::from_vars([(OsString::from(PROFILES), OsString::from_vec(b"d\xffv".to_vec()))]).unwrap_err();
        assert_eq!(errors[0].why, "not valid UTF-8");
    }

    #[test]
    fn unknown_names_are_listed() {
        let s = parse(&[("FLOWINIT_LOG_FMT", "json"), ("FLOWINITX", "1")]).unwrap();
        assert_eq!(s.unknown, ["FLOWINIT_LOG_FMT"]);
    }
}
