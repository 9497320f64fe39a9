//! The shim that lets cargo-fuzz reach flowinit's pure modules.
//!
//! flowinit is a binary crate with no library target, and the fuzz targets
//! need something to link against. Rather than restructure the crate, this
//! library compiles the files under test straight from `../src` with
//! `#[path]`, inside a module tree that mirrors the crate's own paths so
//! that their `crate::…` and `super::…` references resolve unchanged:
//!
//! - `config::{expand, raw, unit, validate}`: the unit-file loader.
//!   `validate` uses `crate::graph` (cycle detection) and `unit` uses
//!   `crate::process::signal::Signal`, so `graph` and `process::signal`
//!   come along; nothing else of `process` does. `config/mod.rs` itself is
//!   not included (it only re-exports).
//! - `control::protocol`: the control socket's wire types.
//! - `router::routes`: route matching and header rewriting.
//! - `router::framing`: upstream response heads, body lengths, chunked
//!   decoding.
//! - `logs::split`: the line splitter.
//!
//! Nothing here is a copy: a change in `../src` is fuzzed as is. When a
//! fuzzed file starts using another module of the crate, add that module
//! here at the same path. Each inline module carries a `#[path]` naming its
//! directory under `../src`, so the files inside it are named as in the
//! crate (an inline module without one would resolve under
//! `fuzz/src/<module>/`, which does not exist).
#![allow(dead_code, unused_imports, reason = "only the parts of each module that the targets call are used")]

#[path = "../../src/config"]
pub mod config {
    #[path = "expand.rs"]
    pub mod expand;
    #[path = "raw.rs"]
    pub mod raw;
    #[path = "unit.rs"]
    pub mod unit;
    #[path = "validate.rs"]
    pub mod validate;
}

#[path = "../../src/graph.rs"]
pub mod graph;

#[path = "../../src/process"]
pub mod process {
    #[path = "signal.rs"]
    pub mod signal;
}

#[path = "../../src/control"]
pub mod control {
    #[path = "protocol.rs"]
    pub mod protocol;
}

#[path = "../../src/router"]
pub mod router {
    #[path = "framing.rs"]
    pub mod framing;
    #[path = "routes.rs"]
    pub mod routes;
}

#[path = "../../src/logs"]
pub mod logs {
    #[path = "split.rs"]
    pub mod split;
}
