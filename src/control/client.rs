//! The client side of the control commands: connect, send one request,
//! read the answer lines. Synchronous: a CLI call needs no runtime.

use super::protocol::{Envelope, Request, Response, VERSION};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon answers on the socket (exit code 4).
    #[error("{0}")]
    NoDaemon(String),
    /// Talking to it failed half-way.
    #[error("{0}")]
    Broken(String),
}

impl ClientError {
    /// The client commands' exit code: 4 when no daemon answers, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::NoDaemon(_) => 4,
            ClientError::Broken(_) => 1,
        }
    }
}

/// Sends `request`; calls `each` for every response line until it returns
/// false or the daemon closes the connection.
pub fn call(path: &Path, request: Request, mut each: impl FnMut(Response) -> bool) -> Result<(), ClientError> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no control socket".to_string(),
            std::io::ErrorKind::ConnectionRefused => "nothing listens on the control socket".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied (the control socket is owner-only)".to_string(),
            _ => e.to_string(),
        };
        ClientError::NoDaemon(format!(
            "flowinit is not running or not reachable at {} ({why}); set --socket or FLOWINIT_SOCKET if it uses another path",
            path.display()
        ))
    })?;
    let mut line =
        serde_json::to_vec(&Envelope { v: VERSION, request }).map_err(|e| ClientError::Broken(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| ClientError::Broken(format!("sending the request: {e}")))?;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(|e| ClientError::Broken(format!("reading the answer: {e}")))?;
        let response: Response =
            serde_json::from_str(&line).map_err(|e| ClientError::Broken(format!("unreadable answer {line:?}: {e}")))?;
        if !each(response) {
            break;
        }
    }
    Ok(())
}
