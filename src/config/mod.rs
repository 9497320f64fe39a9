//! Unit files: parsing (raw), `${VAR}` expansion, validation into the model.
//! Pure apart from reading the files it is given; no tokio, no spawning.

pub mod expand;
pub mod raw;
pub mod schema;
pub mod size;
pub mod unit;
pub mod validate;

pub use unit::{Unit, UnitSet};
pub use validate::{load_dir, load_unit_enabled, no_units, ConfigError, LoadContext};
