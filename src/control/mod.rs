//! The control socket: a versioned, newline-delimited JSON protocol
//! (protocol), the daemon side that answers from the published snapshot and
//! forwards actions through the manager's handle (server), and the client
//! side of `flowinit status|start|stop|restart|reload|logs` (client,
//! render); the CPU% of `status` (cpu).

pub mod client;
pub mod cpu;
pub mod protocol;
pub mod render;
pub mod server;

use std::path::PathBuf;

/// `--socket`, else `$FLOWINIT_SOCKET`, else /run/flowinit.sock.
pub fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("FLOWINIT_SOCKET").filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/run/flowinit.sock"))
}
