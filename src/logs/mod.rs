//! Log forwarding: services' stdout/stderr pipes → flowinit's stdout/stderr,
//! one prefixed (or JSON) line at a time, with back-pressure and bounded
//! memory; a ring buffer of recent lines per unit; flowinit's own tracing
//! events through the same writers so lines never mix. Knows nothing of
//! units beyond a name and a prefix.

pub mod events;
pub mod file;
pub mod forward;
pub mod ring;
pub mod sink;
pub mod split;
pub mod watch;

pub use ring::RingLog;
pub use sink::{LogFormat, LogSink, Stream};
