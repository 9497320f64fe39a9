//! Control protocol decoder: any bytes a client may send on the socket.
//! Decoding never panics, and whatever decodes re-encodes to something that
//! decodes to the same value (the daemon's `Envelope` and the client's
//! `Response` alike).
#![no_main]

use flowinit::control::protocol::{Envelope, Response, MAX_REQUEST};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The server reads at most MAX_REQUEST bytes of a line.
    if data.len() > MAX_REQUEST {
        return;
    }
    if let Ok(env) = serde_json::from_slice::<Envelope>(data) {
        let line = serde_json::to_vec(&env).expect("an Envelope always serializes");
        assert!(!line.contains(&b'\n'), "a request must stay on one line");
        let back: Envelope = serde_json::from_slice(&line).expect("re-encoded Envelope must decode");
        assert_eq!(back, env, "Envelope round trip");
    }
    if let Ok(res) = serde_json::from_slice::<Response>(data) {
        let line = serde_json::to_vec(&res).expect("a Response always serializes");
        assert!(!line.contains(&b'\n'), "a response must stay on one line");
        let back: Response = serde_json::from_slice(&line).expect("re-encoded Response must decode");
        assert_eq!(back, res, "Response round trip");
    }
});
