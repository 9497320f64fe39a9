//! The sd_notify protocol for `type = "notify"` units: one abstract-
//! namespace datagram socket per unit (no file, so it works for any user),
//! credentials passed by the kernel (SO_PASSCRED) so every message carries
//! its sender's pid. Which senders to believe is the unit task's decision.

use crate::config::unit::notify_socket_name;
use crate::process::Pid;
use nix::sys::socket::{
    bind, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr, UnixCredentials,
};
use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest message accepted; longer datagrams are truncated by the kernel.
const MAX_MESSAGE: usize = 4096;

pub struct NotifySocket {
    socket: tokio::net::UnixDatagram,
    /// The value for NOTIFY_SOCKET (`@` marks the abstract namespace).
    pub env_value: String,
}

/// One datagram: the sender's pid (from the kernel) and its KEY=VALUE lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyMessage {
    pub sender: Option<Pid>,
    pub fields: Vec<(String, String)>,
}

impl NotifyMessage {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

impl NotifySocket {
    pub fn bind(unit: &str) -> io::Result<NotifySocket> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = notify_socket_name(std::process::id(), unit, SEQ.fetch_add(1, Ordering::Relaxed));
        let fd =
            socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)?;
        setsockopt(&fd, sockopt::PassCred, &true)?;
        bind(fd.as_raw_fd(), &UnixAddr::new_abstract(name.as_bytes())?)?;
        let std_socket = std::os::unix::net::UnixDatagram::from(fd);
        let socket = tokio::net::UnixDatagram::from_std(std_socket)?;
        Ok(NotifySocket { socket, env_value: format!("@{name}") })
    }

    pub async fn recv(&self) -> io::Result<NotifyMessage> {
        loop {
            self.socket.readable().await?;
            let fd = &self.socket;
            let result = self.socket.try_io(tokio::io::Interest::READABLE, || {
                let mut buf = [0u8; MAX_MESSAGE];
                let mut cmsg = nix::cmsg_space!(UnixCredentials);
                let mut iov = [IoSliceMut::new(&mut buf)];
                let msg = recvmsg::<()>(fd.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
                    .map_err(io::Error::from)?;
                let sender = msg.cmsgs().ok().into_iter().flatten().find_map(|c| match c {
                    ControlMessageOwned::ScmCredentials(cred) => Pid::new(cred.pid()),
                    _ => None,
                });
                let len = msg.bytes;
                Ok((sender, buf[..len].to_vec()))
            });
            match result {
                Ok((sender, bytes)) => return Ok(NotifyMessage { sender, fields: parse(&bytes) }),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Newline-separated KEY=VALUE assignments; anything else is ignored.
pub fn parse(bytes: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The process group of a live (or not yet reaped) process.
pub fn process_group_of(pid: Pid) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the comm: state ppid pgrp …
    stat.rsplit_once(')')?.1.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_assignments() {
        let fields = parse(b"READY=1\nSTATUS=Listening on 5432\ngarbage\n=x\nlower=1\nMAINPID=42");
        assert_eq!(
            fields,
            [
                ("READY".to_string(), "1".to_string()),
                ("STATUS".into(), "Listening on 5432".into()),
                ("MAINPID".into(), "42".into())
            ]
        );
    }
}
