//! The command line (clap types) and the commands that need no daemon.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "flowinit",
    version,
    about = "A container init and service supervisor driven by TOML unit files"
)]
#[command(args_conflicts_with_subcommands = true)]
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
}

impl UnitsArgs {
    pub fn units_dir(&self) -> PathBuf {
        self.units
            .clone()
            .or_else(|| {
                std::env::var_os("FLOWINIT_UNITS")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("/etc/flowinit/units"))
    }

    pub fn profiles(&self) -> Vec<String> {
        let from_env;
        let list: &[String] = if self.profiles.is_empty() {
            from_env = std::env::var("FLOWINIT_PROFILES")
                .map(|v| vec![v])
                .unwrap_or_default();
            &from_env
        } else {
            &self.profiles
        };
        list.iter()
            .flat_map(|p| p.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect()
    }
}

impl UpArgs {
    pub fn shutdown_timeout(&self) -> Result<Duration, String> {
        if let Some(d) = self.shutdown_timeout {
            return Ok(d);
        }
        match std::env::var("FLOWINIT_SHUTDOWN_TIMEOUT") {
            Ok(v) if !v.is_empty() => humantime::parse_duration(&v).map_err(|e| {
                format!("FLOWINIT_SHUTDOWN_TIMEOUT={v:?}: {e} (examples: \"9s\", \"1m\")")
            }),
            _ => Ok(Duration::from_secs(9)),
        }
    }
}
