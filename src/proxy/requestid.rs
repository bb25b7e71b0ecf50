//! `X-Request-Id`: the client's when well formed (1–128 of `[A-Za-z0-9._-]`), else a
//! new ULID. ULIDs here need to be unique, not secret: a thread-local wyrand seeded
//! from the OS avoids a system call per request.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};

pub(crate) const HEADER: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The request id to use for a request with these headers.
pub(crate) fn for_request(headers: &HeaderMap) -> HeaderValue {
    for_request_at(headers, unix_ms())
}

/// [`for_request`] for a request that arrived at `ms` (Unix milliseconds): the
/// pipeline reads the clock once for the record, the key's expiry and the id.
pub(crate) fn for_request_at(headers: &HeaderMap, ms: u64) -> HeaderValue {
    let mut values = headers.get_all(HEADER).iter();
    if let (Some(v), None) = (values.next(), values.next())
        && is_well_formed(v.as_bytes())
    {
        return v.clone();
    }
    ulid_at(ms)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn is_well_formed(v: &[u8]) -> bool {
    (1..=128).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: fall back to the clock; ids stay unique enough in practice
        // because the time part differs.
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9);
        return t;
    }
    u64::from_le_bytes(b)
}

fn next_u64() -> u64 {
    RNG.with(|s| {
        let v = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(v);
        let t = u128::from(v) * u128::from(v ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new ULID: 48 bits of Unix milliseconds, 80 random bits, Crockford base32.
pub(crate) fn new_ulid() -> HeaderValue {
    ulid_at(unix_ms())
}

/// A new ULID for the time `ms` (Unix milliseconds).
fn ulid_at(ms: u64) -> HeaderValue {
    let ms = ms & ((1 << 48) - 1);
    let rand = (u128::from(next_u64()) << 16) ^ u128::from(next_u64() & 0xffff);
    let value: u128 = (u128::from(ms) << 80) | (rand & ((1u128 << 80) - 1));
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 125 - 5 * i as u32;
        *slot = CROCKFORD[((value >> shift) & 31) as usize];
    }
    // Owned by the `Bytes` itself: one allocation, and every clone (the record,
    // the upstream request, the response) is a reference count.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(out))
        .unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_are_well_formed_and_distinct() {
        let a = new_ulid();
        let b = new_ulid();
        assert_eq!(a.len(), 26);
        assert_ne!(a, b);
        assert!(is_well_formed(a.as_bytes()));
    }

    #[test]
    fn a_new_id_carries_the_arrival_time() {
        // The first 10 characters are the 48-bit milliseconds, Crockford base32.
        let ms: u64 = 1_796_000_000_123;
        let id = for_request_at(&HeaderMap::new(), ms);
        let decoded = id.as_bytes()[..10].iter().fold(0u64, |v, c| {
            let d = CROCKFORD.iter().position(|x| x == c).unwrap() as u64;
            v << 5 | d
        });
        assert_eq!(decoded, ms);
        // A client's well-formed id is kept whatever the time.
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(for_request_at(&h, ms), "abc-123");
    }

    #[test]
    fn client_ids() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("abc-123_X.y"));
        assert_eq!(for_request(&h), "abc-123_X.y");
        h.insert(HEADER, HeaderValue::from_static("bad id"));
        assert_eq!(for_request(&h).len(), 26);
        h.insert(HEADER, HeaderValue::from_str(&"a".repeat(129)).unwrap());
        assert_eq!(for_request(&h).len(), 26);
    }
}
