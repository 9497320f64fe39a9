//! The access log: what the router knows of one request once its response
//! has ended (or was abandoned), and how that reads as the plain line and
//! as the members of a JSON log object. Pure; the router's log writer
//! (supervisor/router_task.rs) picks the rendering for the log format.

use super::routes::MAX_METHOD_LEN;
use crate::config::unit::RouterSpec;
use hyper::header::HeaderValue;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One request, as logged.
pub struct Access {
    /// The configuration the request took (its routes).
    pub(super) spec: Arc<RouterSpec>,
    pub(super) peer: SocketAddr,
    pub(super) method: hyper::Method,
    /// Without the query string, which may carry tokens.
    pub(super) path: String,
    /// The route chosen (an index into `spec.routes`), and whether the
    /// request went on to its upstream (or got the 503 of its unit).
    pub(super) route: Option<(usize, bool)>,
    pub(super) status: u16,
    /// Until the response head was ready (not the body: an SSE stream
    /// or a download would make it meaningless as a latency).
    pub(super) head: Duration,
    /// Body bytes sent to the client (headers not counted; a HEAD or 101
    /// sends none).
    pub(super) bytes: u64,
    pub(super) request_id: HeaderValue,
}

impl Access {
    fn method(&self) -> std::borrow::Cow<'_, str> {
        let m = self.method.as_str();
        match m.get(..MAX_METHOD_LEN) {
            Some(cut) if cut.len() < m.len() => format!("{cut}...").into(),
            _ => m.into(),
        }
    }

    fn route_prefix(&self) -> Option<&str> {
        self.route.and_then(|(i, _)| self.spec.routes.get(i)).map(|r| r.prefix.as_str())
    }

    fn upstream(&self) -> Option<&str> {
        match self.route {
            Some((i, true)) => self.spec.routes.get(i).map(|r| r.upstream.as_str()),
            _ => None,
        }
    }

    fn request_id(&self) -> &str {
        // Sane ids (routes::sane_request_id) and made ones are ASCII.
        self.request_id.to_str().unwrap_or("-")
    }

    fn ms(&self) -> f64 {
        self.head.as_secs_f64() * 1000.0
    }

    /// `127.0.0.1:44698 GET /api/echo 200 0.9ms bytes=52 rid=4f3c… -> 127.0.0.1:3001`
    pub fn text(&self) -> String {
        let mut s = String::with_capacity(96 + self.path.len() + self.request_id.len());
        let _ = write!(
            s,
            "{} {} {} {} {:.1}ms bytes={} rid={} -> {}",
            self.peer,
            self.method(),
            self.path,
            self.status,
            self.ms(),
            self.bytes,
            self.request_id(),
            self.upstream().unwrap_or("-")
        );
        s
    }

    /// The JSON object's members after `msg` (no braces, no leading
    /// comma): request_id, client, method, path, route (the configured
    /// prefix; null when none was chosen), status, bytes, duration_ms
    /// (until the response head, as in the plain line) and upstream (null
    /// when none).
    pub fn json_members(&self) -> String {
        let mut out = Vec::with_capacity(192 + self.path.len() + self.request_id.len());
        let string = |out: &mut Vec<u8>, key: &str, value: Option<&str>| {
            out.extend_from_slice(if out.is_empty() { b"\"" } else { b",\"" });
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            match value {
                // Writing a &str into a Vec cannot fail.
                Some(v) => drop(serde_json::to_writer(&mut *out, v)),
                None => out.extend_from_slice(b"null"),
            }
        };
        string(&mut out, "request_id", Some(self.request_id()));
        string(&mut out, "client", Some(&self.peer.to_string()));
        string(&mut out, "method", Some(&self.method()));
        string(&mut out, "path", Some(&self.path));
        string(&mut out, "route", self.route_prefix());
        let numbers = format!(",\"status\":{},\"bytes\":{},\"duration_ms\":{:.3}", self.status, self.bytes, self.ms());
        out.extend_from_slice(numbers.as_bytes());
        string(&mut out, "upstream", self.upstream());
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::unit::Route;

    fn spec() -> Arc<RouterSpec> {
        let route = |prefix: &str, upstream: &str| Route {
            prefix: prefix.into(),
            upstream: upstream.into(),
            unit: None,
            strip_prefix: false,
        };
        let secs = Duration::from_secs;
        Arc::new(RouterSpec {
            listen: "127.0.0.1:3000".parse().unwrap(),
            listen_at: Default::default(),
            routes: vec![route("/", "127.0.0.1:8080"), route("/api/", "127.0.0.1:3001")],
            stop_timeout: secs(5),
            connect_timeout: secs(5),
            header_timeout: secs(75),
            upstream_timeout: secs(300),
            access_log: true,
            access_log_skip: Vec::new(),
            trust_forwarded: false,
            max_connections: None,
        })
    }

    fn access(route: Option<(usize, bool)>, method: &str, path: &str) -> Access {
        Access {
            spec: spec(),
            peer: "10.0.0.7:41234".parse().unwrap(),
            method: hyper::Method::from_bytes(method.as_bytes()).unwrap(),
            path: path.into(),
            route,
            status: 200,
            head: Duration::from_micros(912),
            bytes: 52,
            request_id: HeaderValue::from_static("4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a99"),
        }
    }

    #[test]
    fn the_plain_line() {
        assert_eq!(
            access(Some((1, true)), "GET", "/api/echo").text(),
            "10.0.0.7:41234 GET /api/echo 200 0.9ms bytes=52 rid=4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a99 -> 127.0.0.1:3001"
        );
        let long = "A".repeat(40);
        let line = access(None, &long, "/x").text();
        assert!(line.starts_with(&format!("10.0.0.7:41234 {}... /x 200 ", &long[..32])), "{line}");
        assert!(line.ends_with(" -> -"), "{line}");
    }

    #[test]
    fn the_json_members() {
        let v: serde_json::Value =
            serde_json::from_str(&format!("{{{}}}", access(Some((1, true)), "GET", "/api/\"q\"").json_members()))
                .unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "request_id": "4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a99",
                "client": "10.0.0.7:41234",
                "method": "GET",
                "path": "/api/\"q\"",
                "route": "/api/",
                "status": 200,
                "bytes": 52,
                "duration_ms": 0.912,
                "upstream": "127.0.0.1:3001",
            })
        );
        // A route chosen but not forwarded (a bad target), and none (404).
        let v: serde_json::Value =
            serde_json::from_str(&format!("{{{}}}", access(Some((0, false)), "GET", "/x").json_members())).unwrap();
        assert_eq!((v["route"].as_str(), v["upstream"].is_null()), (Some("/"), true));
        let v: serde_json::Value =
            serde_json::from_str(&format!("{{{}}}", access(None, "GET", "/x").json_members())).unwrap();
        assert!(v["route"].is_null() && v["upstream"].is_null(), "{v}");
    }
}
