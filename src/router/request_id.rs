//! The ids the router gives requests that came without a sane
//! `X-Request-Id` of their own: 32 lowercase hex digits (128 bits, the
//! shape of nginx's `$request_id`). A per-process counter makes them unique
//! within the process; a 128-bit key read once from `/dev/urandom` makes
//! them differ between processes (containers, restarts) and look random,
//! so that nothing can be read from them (not the request count). No
//! system call per id.

use hyper::header::HeaderValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Ids made so far by this process (every router of it).
static MADE: AtomicU64 = AtomicU64::new(0);

/// The process's random key, read on first use.
fn key() -> &'static [u64; 2] {
    static KEY: OnceLock<[u64; 2]> = OnceLock::new();
    KEY.get_or_init(random_key)
}

/// 128 bits from `/dev/urandom`; without it (a container without /dev),
/// the standard library's hash keys (also taken from the kernel's
/// randomness) mixed with the time and the pid.
fn random_key() -> [u64; 2] {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_ok() {
        let (a, b) = bytes.split_at(8);
        let word = |s: &[u8]| s.iter().fold(0u64, |w, &b| w << 8 | u64::from(b));
        return [word(a), word(b)];
    }
    use std::hash::{BuildHasher, Hasher};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now);
    h.write_u32(std::process::id());
    let a = h.finish();
    h.write_u64(a);
    [a, h.finish()]
}

/// Reads the key now, so that the first request does not.
pub fn init() {
    key();
}

/// splitmix64's finaliser: a bijection on u64 (xor-shifts and odd
/// multipliers are invertible), so distinct inputs give distinct outputs,
/// and neighbouring inputs outputs that share nothing visible.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `n`th id of a process with `key`: the low half is a bijection of
/// `n` (so ids never repeat within a process), the high half follows from
/// it under the key's other half.
fn nth(n: u64, key: &[u64; 2]) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let lo = mix(n ^ key[0]);
    let hi = mix(lo ^ key[1]);
    let mut out = [0u8; 32];
    for (pair, byte) in out.chunks_exact_mut(2).zip(hi.to_be_bytes().into_iter().chain(lo.to_be_bytes())) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    out
}

/// A new id. Its bytes are shared from the start (one allocation), so the
/// copies for the upstream request, the response and the log line cost a
/// reference count each.
pub fn fresh() -> HeaderValue {
    let id = nth(MADE.fetch_add(1, Ordering::Relaxed), key());
    // Hex digits are always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
        .unwrap_or_else(|_| HeaderValue::from_static("00000000000000000000000000000000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_hex_digits_and_never_repeat() {
        let key = [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210];
        let mut seen = std::collections::HashSet::new();
        for n in (0..100_000).chain([u64::MAX - 1, u64::MAX]) {
            let id = nth(n, &key);
            assert!(id.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)), "{id:?}");
            assert!(seen.insert(id), "id {n} repeats");
        }
    }

    #[test]
    fn other_keys_give_other_ids() {
        let (a, b) = ([1, 2], [1, 3]);
        assert_ne!(nth(0, &a), nth(0, &b), "the high half follows the key");
        assert_ne!(nth(0, &[1, 2]), nth(0, &[2, 2]));
    }

    #[test]
    fn fresh_ids_are_header_values_of_32_bytes() {
        let (x, y) = (fresh(), fresh());
        assert_eq!(x.len(), 32);
        assert_ne!(x, y);
    }
}
