//! flowinit: PID 1 and service supervisor for containers, as a library.
//! The binary (`main.rs`) parses the command line and calls in here; the
//! fuzz targets and tests link the same modules.
//!
//! Dependencies point one way (checked by `tests/layers.rs`):
//! `term` ← everything; `config → graph, process::signal`; `api → config,
//! logs, process`; `router → config, api`; `control → config, logs, api`;
//! `supervisor → api, config, logs, probe, process, router`; `exec →
//! control, process`; `up` wires them. See docs/architecture.md.

#[macro_use]
pub mod term;

pub mod api;
pub mod cli;
pub mod config;
pub mod control;
pub mod exec;
pub mod graph;
pub mod logs;
pub mod metrics;
pub mod probe;
pub mod process;
pub mod router;
pub mod settings;
pub mod single;
pub mod supervisor;
pub mod up;
