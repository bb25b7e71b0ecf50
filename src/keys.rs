//! API keys: identifiers, names, permission levels, and the `kg_` key format.
//!
//! A key made by keygate is `kg_`, then 32 base62 characters of randomness (≈190.5
//! bits), then 6 base62 characters of checksum: the CRC-32 (ISO-HDLC) of the 32
//! random characters, most significant digit first, zero-padded. Keys are found by their
//! SHA-256 and never stored or logged in the clear; [`Secret`] prints `<redacted>`.

pub(crate) mod file;
pub(crate) mod seal;
pub(crate) mod store;
pub(crate) mod write;

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The base62 alphabet, in the order docs/security.md ("Key format") gives.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub(crate) const KG_PREFIX: &str = "kg_";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
/// Total length of a `kg_` key.
pub(crate) const KG_KEY_LEN: usize = KG_PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// Length of the display prefix (`kg_3Xb8`).
pub(crate) const DISPLAY_PREFIX_LEN: usize = 7;

pub(crate) use crate::policy::Level;

/// A key's stable identifier (`k7f3a9c1e`): 1–64 of `[A-Za-z0-9._-]`. Compared,
/// ordered and hashed as its text.
#[derive(Clone)]
pub(crate) struct KeyId(IdText);

/// An id's text: inline up to [`INLINE_ID`] bytes (keygate's own ids are 11, so no
/// allocation per key), else behind one thin pointer; 16 bytes either way.
#[derive(Clone)]
enum IdText {
    Inline(u8, [u8; INLINE_ID]),
    Heap(Arc<Box<str>>),
}

const INLINE_ID: usize = 14;

impl IdText {
    fn new(s: &str) -> Self {
        if s.len() <= INLINE_ID {
            let mut a = [0; INLINE_ID];
            a[..s.len()].copy_from_slice(s.as_bytes());
            Self::Inline(s.len() as u8, a)
        } else {
            Self::Heap(Arc::new(s.into()))
        }
    }
}

impl PartialEq for KeyId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for KeyId {}

impl std::hash::Hash for KeyId {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h);
    }
}

impl PartialOrd for KeyId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyId {
    /// Byte order is the text's order (sorting 100,000 ids checks no UTF-8).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyId").field(&self.as_str()).finish()
    }
}

impl KeyId {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        if (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            Ok(Self(IdText::new(s)))
        } else {
            Err(format!(
                "key id {s:?} must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
            ))
        }
    }

    /// A new random id: `k` + 10 base62 characters.
    pub(crate) fn generate() -> Result<Self, getrandom::Error> {
        let mut s = String::from("k");
        s.push_str(&random_base62(10)?);
        Ok(Self(IdText::new(&s)))
    }

    fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            IdText::Inline(n, a) => &a[..usize::from(*n)],
            IdText::Heap(s) => s.as_bytes(),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match &self.0 {
            // Made from a whole `&str` (ASCII) of at most INLINE_ID bytes.
            IdText::Inline(n, a) => std::str::from_utf8(&a[..usize::from(*n)]).unwrap_or(""),
            IdText::Heap(s) => s,
        }
    }
}

impl std::borrow::Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a key name: 1–64 printable characters, no control or bidirectional
/// formatting characters.
pub(crate) fn validate_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 || n > 64 {
        return Err(format!("name must be 1-64 characters (it has {n})"));
    }
    if name.trim() != name || name.trim().is_empty() {
        return Err("name must not start or end with white space".into());
    }
    if let Some(c) = name.chars().find(|c| c.is_control() || is_bidi_control(*c)) {
        return Err(format!(
            "name contains the control or bidirectional character U+{:04X}",
            u32::from(c)
        ));
    }
    if let Some(c) = name.chars().find(|c| is_invisible(*c)) {
        return Err(format!(
            "name contains the invisible or line-breaking character U+{:04X} (two names must not look alike)",
            u32::from(c)
        ));
    }
    Ok(())
}

/// Zero-width characters and line/paragraph separators: they make two names look
/// alike (or break a table line) in the console and the CLI.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'
            ..='\u{200D}'
                | '\u{2060}'
                | '\u{FEFF}'
                | '\u{180E}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{00AD}'
    )
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A key value in the clear. Never printed: `Debug` and `Display` say `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn new(s: String) -> Self {
        Self(s)
    }
    /// The value itself, for the one place that shows it (key creation, reveal).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// SHA-256 of a presented key: the lookup handle.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn of(key: &[u8]) -> Self {
        Self(Sha256::digest(key).into())
    }

    pub(crate) fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hi = (chunk[0] as char).to_digit(16)?;
            let lo = (chunk[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Self(out))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(<redacted>)")
    }
}

/// Why a presented `kg_` key cannot be right, found without a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KgFormatError {
    Length,
    Alphabet,
    Checksum,
}

/// Checks a presented value that starts with `kg_`.
pub(crate) fn check_kg(value: &str) -> Result<(), KgFormatError> {
    let b = value.as_bytes();
    if b.len() != KG_KEY_LEN {
        return Err(KgFormatError::Length);
    }
    let body = &b[KG_PREFIX.len()..];
    if !body.iter().all(u8::is_ascii_alphanumeric) {
        return Err(KgFormatError::Alphabet);
    }
    let (random, sum) = body.split_at(RANDOM_LEN);
    if checksum(random) != sum {
        return Err(KgFormatError::Checksum);
    }
    Ok(())
}

/// The checksum characters (docs/security.md, "Key format") for the 32 random characters.
pub(crate) fn checksum(random: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(random);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// Mints a new `kg_` key from the operating system's random source.
pub fn mint() -> Result<Secret, getrandom::Error> {
    let random = random_base62(RANDOM_LEN)?;
    let sum = checksum(random.as_bytes());
    let mut key = String::with_capacity(KG_KEY_LEN);
    key.push_str(KG_PREFIX);
    key.push_str(&random);
    key.extend(sum.iter().map(|&c| c as char));
    Ok(Secret(key))
}

/// `n` uniformly random base62 characters (rejection sampling, no modulo bias).
fn random_base62(n: usize) -> Result<String, getrandom::Error> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf)?;
        for &b in &buf {
            // 248 = 4 × 62: bytes at or above it would bias the low digits.
            if b < 248 && out.len() < n {
                out.push(ALPHABET[usize::from(b % 62)] as char);
            }
        }
    }
    Ok(out)
}

/// The shown part of a key (`kg_3Xb8`).
pub(crate) fn display_prefix(key: &str) -> String {
    key.chars().take(DISPLAY_PREFIX_LEN).collect()
}

/// The masked form shown in lists: `kg_3Xb8••••••••`.
pub(crate) fn masked(prefix: &str) -> String {
    format!("{prefix}••••••••")
}

/// Checks an operator-supplied `secret:`: `[A-Za-z0-9._~+/=-]{32,256}`, not `kg_…`.
pub(crate) fn validate_operator_secret(s: &str) -> Result<(), String> {
    if s.starts_with(KG_PREFIX) {
        return Err("an operator-supplied secret must not start with 'kg_' (that prefix is for keys keygate makes)".into());
    }
    if s.len() != s.trim().len() {
        let which = if s.trim_end().len() != s.len() {
            "a trailing"
        } else {
            "a leading"
        };
        return Err(format!(
            "the operator-supplied secret has {which} space or other white space; remove it (spaces are not allowed in a secret)"
        ));
    }
    if !(32..=256).contains(&s.len()) {
        return Err(format!(
            "an operator-supplied secret must be 32-256 characters (it has {})",
            s.len()
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b))
    {
        return Err(
            "an operator-supplied secret may only contain A-Z a-z 0-9 and . _ ~ + / = -".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_check() {
        for _ in 0..200 {
            let k = mint().unwrap();
            assert_eq!(k.expose().len(), KG_KEY_LEN);
            assert!(k.expose().starts_with("kg_"));
            assert_eq!(check_kg(k.expose()), Ok(()));
        }
    }

    #[test]
    fn checksum_matches_spec_definition() {
        // The example key of docs/security.md, and a vector computed with Python's zlib.crc32.
        assert_eq!(
            check_kg("kg_3Xb8u2KQw0pV9sLrT4mZcY1nE6fH7jAd0ukXzw"),
            Ok(())
        );
        assert_eq!(&checksum(b"3Xb8u2KQw0pV9sLrT4mZcY1nE6fH7jAd"), b"0ukXzw");
        assert_eq!(&checksum("0".repeat(32).as_bytes()), b"2wjyrI");
        assert_eq!(
            check_kg("kg_3Xb8u2KQw0pV9sLrT4mZcY1nE6fH7jAd0ukXzx"),
            Err(KgFormatError::Checksum)
        );
    }

    #[test]
    fn damaged_keys_are_caught() {
        let k = mint().unwrap().expose().to_string();
        assert_eq!(check_kg(&k[..k.len() - 1]), Err(KgFormatError::Length));
        let mut flipped = k.clone().into_bytes();
        flipped[5] = if flipped[5] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            check_kg(std::str::from_utf8(&flipped).unwrap()),
            Err(KgFormatError::Checksum)
        );
        let mut bad = k.into_bytes();
        bad[10] = b'-';
        assert_eq!(
            check_kg(std::str::from_utf8(&bad).unwrap()),
            Err(KgFormatError::Alphabet)
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("kg_super".into());
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
    }

    #[test]
    fn names() {
        assert!(validate_name("Zapier").is_ok());
        assert!(validate_name("Reporting Dashboard ✓").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
        assert!(validate_name("a\u{202E}b").is_err());
        assert!(validate_name("a\nb").is_err());
    }

    #[test]
    fn operator_secrets() {
        assert!(validate_operator_secret("operator-supplied-secret-of-32-chars-or-more").is_ok());
        assert!(validate_operator_secret("short").is_err());
        assert!(validate_operator_secret(&format!("kg_{}", "a".repeat(40))).is_err());
        assert!(validate_operator_secret(&format!("{} x", "a".repeat(40))).is_err());
    }

    #[test]
    fn hex_round_trip() {
        let h = KeyHash::of(b"abc");
        assert_eq!(
            h.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(KeyHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(KeyHash::from_hex("zz"), None);
    }
}
