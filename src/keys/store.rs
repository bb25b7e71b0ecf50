//! The in-memory key set of one snapshot: lookup by SHA-256, compiled permissions
//! (a level per category index), per-key limiters and last-used cells.
//!
//! Limiters and last-used cells are `Arc`s carried over from the previous set for keys
//! that still exist, so a reload keeps rate-limit state (when the rate is unchanged)
//! and last-used times; removed keys' state is dropped with the old set.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use http::HeaderValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::file::KeysFile;
use super::{KeyHash, KeyId, Level, validate_name, validate_operator_secret};
use crate::config::LoadError;
use crate::policy::{CategoryId, Policy};
use crate::ratelimit::{KeyLimiter, Rate, key_limiter};

/// One key as the request path sees it.
#[derive(Debug)]
pub(crate) struct KeyRecord {
    pub(crate) id: KeyId,
    pub(crate) name: Arc<str>,
    /// `X-Keygate-Key-Name` value (non-ASCII percent-encoded), made once.
    pub(crate) name_header: HeaderValue,
    pub(crate) id_header: HeaderValue,
    /// Level per category index.
    levels: Box<[Level]>,
    /// The `"*"` level: for categories not named, and unmatched paths with
    /// `routes.unmatched: allow_any_key`.
    pub(crate) star: Level,
    pub(crate) expires_at: Option<OffsetDateTime>,
    pub(crate) rate: Rate,
    pub(crate) limiter: Arc<KeyLimiter>,
    /// Unix milliseconds of the last request with this key (0 = never).
    pub(crate) last_used: Arc<AtomicI64>,
}

impl KeyRecord {
    pub(crate) fn level(&self, category: CategoryId) -> Level {
        self.levels
            .get(usize::from(category.0))
            .copied()
            .unwrap_or(Level::None)
    }

    pub(crate) fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }
}

/// A hasher for maps keyed by SHA-256 values: the bytes are already uniform.
#[derive(Default, Clone, Copy)]
pub(crate) struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
}

type DigestMap<V> = HashMap<KeyHash, V, std::hash::BuildHasherDefault<DigestHasher>>;

/// The keys of one snapshot.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    by_hash: DigestMap<Arc<KeyRecord>>,
    by_id: HashMap<KeyId, Arc<KeyRecord>>,
    pub(crate) api_enabled: bool,
}

impl KeySet {
    /// Validates `file` against the config's categories and builds the set.
    pub(crate) fn build(
        path: &Path,
        file: &KeysFile,
        policy: &Policy,
        default_rate: &Rate,
        previous: Option<&KeySet>,
    ) -> Result<Self, LoadError> {
        let mut set = KeySet {
            by_hash: DigestMap::default(),
            by_id: HashMap::with_capacity(file.keys.len()),
            api_enabled: file.api_enabled,
        };
        let mut names: HashMap<String, usize> = HashMap::with_capacity(file.keys.len());
        for (i, e) in file.keys.iter().enumerate() {
            let err = |m: String| LoadError {
                file: path.to_path_buf(),
                line: file.entry_positions.get(i).copied(),
                message: format!("keys[{i}] (id {}): {m}", e.id),
                unreadable: false,
            };
            let id = KeyId::parse(&e.id).map_err(err)?;
            if set.by_id.contains_key(&id) {
                return Err(err("id is used by an earlier key".into()));
            }
            validate_name(&e.name).map_err(|m| err(format!("name: {m}")))?;
            if let Some(j) = names.insert(e.name.to_lowercase(), i) {
                return Err(err(format!(
                    "name {:?} is already used by keys[{j}] (names are unique ignoring case)",
                    e.name
                )));
            }
            let hash = match (&e.sha256, &e.secret) {
                (Some(h), None) => KeyHash::from_hex(h.trim_start_matches("sha256:"))
                    .ok_or_else(|| err("sha256: must be 64 hexadecimal characters".into()))?,
                (None, Some(s)) => {
                    validate_operator_secret(s).map_err(|m| err(format!("secret: {m}")))?;
                    KeyHash::of(s.as_bytes())
                }
                (Some(_), Some(_)) => {
                    return Err(err("give sha256 or secret, not both".into()));
                }
                (None, None) => return Err(err("needs sha256 or secret".into())),
            };
            if set.by_hash.contains_key(&hash) {
                return Err(err("the same key value is used by an earlier key".into()));
            }
            let mut levels = vec![Level::None; policy.category_count()];
            let mut star = Level::None;
            for (cat, lvl) in &e.permissions {
                let level = lvl
                    .parse::<Level>()
                    .map_err(|e| err(format!("permissions.{cat}: {e}")))?;
                if cat == "*" {
                    star = level;
                } else {
                    let cid = policy.category_id(cat).ok_or_else(|| {
                        let hint = policy
                            .closest_category(cat)
                            .map(|c| format!("; did you mean {c:?}?"))
                            .unwrap_or_default();
                        err(format!(
                            "permissions.{cat}: unknown category ({} routes.categories has no {cat:?}{hint})",
                            policy.config_name
                        ))
                    })?;
                    levels[usize::from(cid.0)] = level;
                }
            }
            // Categories not named take the "*" level.
            for (idx, l) in levels.iter_mut().enumerate() {
                let named = policy.category_name(CategoryId(idx as u16)).as_ref();
                if !e.permissions.contains_key(named) {
                    *l = star;
                }
            }
            let rate = match &e.rate_limit {
                Some(r) => Rate::from_parts(r.per_second, r.per_minute, r.burst)
                    .map_err(|m| err(format!("rate_limit: {m}")))?,
                None => *default_rate,
            };
            let expires_at = e
                .expires_at
                .as_deref()
                .map(|s| parse_time(s).map_err(|m| err(format!("expires_at: {m}"))))
                .transpose()?;
            if let Some(c) = e.created_at.as_deref() {
                parse_time(c).map_err(|m| err(format!("created_at: {m}")))?;
            }
            let prev = previous.and_then(|p| p.by_id.get(&id));
            let limiter = match prev {
                Some(p) if p.rate == rate => p.limiter.clone(),
                _ => Arc::new(key_limiter(&rate)),
            };
            let last_used = prev
                .map(|p| p.last_used.clone())
                .unwrap_or_else(|| Arc::new(AtomicI64::new(0)));
            let record = Arc::new(KeyRecord {
                name_header: name_header(&e.name),
                id_header: HeaderValue::from_str(id.as_str())
                    .map_err(|_| err("id is not a valid header value".into()))?,
                id: id.clone(),
                name: e.name.as_str().into(),
                levels: levels.into_boxed_slice(),
                star,
                expires_at,
                rate,
                limiter,
                last_used,
            });
            set.by_hash.insert(hash, record.clone());
            set.by_id.insert(id, record);
        }
        Ok(set)
    }

    pub(crate) fn lookup(&self, hash: &KeyHash) -> Option<&Arc<KeyRecord>> {
        self.by_hash.get(hash)
    }

    pub(crate) fn get(&self, id: &KeyId) -> Option<&Arc<KeyRecord>> {
        self.by_id.get(id)
    }

    pub(crate) fn get_str(&self, id: &str) -> Option<&Arc<KeyRecord>> {
        self.by_id.get(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<KeyRecord>> {
        self.by_id.values()
    }
}

/// RFC 3339 time, or a plain date (`2027-01-01`, midnight UTC).
pub(crate) fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| format!("{s:?} is not a time such as 2027-01-01T00:00:00Z or 2027-01-01"))
}

/// The `X-Keygate-Key-Name` value: ASCII as is, `%` and everything else
/// percent-encoded, so two names never give the same header (`café` ≠ `caf%C3%A9`).
fn name_header(name: &str) -> HeaderValue {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii() && !b.is_ascii_control() && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // Only visible ASCII and spaces remain, which is always a valid header value.
    HeaderValue::from_str(&out).unwrap_or(HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Preflight, Unmatched};
    use std::collections::BTreeMap;

    fn policy() -> Policy {
        let mut c = BTreeMap::new();
        c.insert("candidates".to_string(), vec!["/c/**".to_string()]);
        c.insert("jobs".to_string(), vec!["/j/**".to_string()]);
        Policy::compile(&[], &c, Unmatched::Deny, Preflight::Deny, false, false).unwrap()
    }

    fn build(yaml: &str) -> Result<KeySet, LoadError> {
        let p = Path::new("keys.yaml");
        let f = KeysFile::parse(p, yaml)?;
        let rate = Rate::from_parts(Some(10), None, None).unwrap();
        KeySet::build(p, &f, &policy(), &rate, None)
    }

    const SECRET: &str = "operator-supplied-secret-of-32-chars-or-more";

    #[test]
    fn star_fills_unnamed_categories() {
        let s = build(&format!(
            "keys:\n- id: a\n  name: A\n  secret: {SECRET}\n  permissions: {{'*': read, jobs: write}}\n"
        ))
        .unwrap();
        let k = s.lookup(&KeyHash::of(SECRET.as_bytes())).unwrap();
        let pol = policy();
        assert_eq!(k.level(pol.category_id("candidates").unwrap()), Level::Read);
        assert_eq!(k.level(pol.category_id("jobs").unwrap()), Level::Write);
        assert_eq!(k.star, Level::Read);
    }

    #[test]
    fn errors_name_the_entry() {
        let e = build(&format!(
            "keys:\n- id: k7f3a9c1e\n  name: Z\n  secret: {SECRET}\n  permissions: {{jobs: admin}}\n"
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "keys.yaml:2:1: keys[0] (id k7f3a9c1e): permissions.jobs: unknown level \"admin\" (use none, read or write)"
        );
        let e = build(&format!(
            "keys:\n- id: a\n  name: Z\n  secret: {SECRET}\n  permissions: {{nope: read}}\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("permissions.nope: unknown category"));
        let e = build(&format!(
            "keys:\n- id: a\n  name: Zap\n  secret: {SECRET}\n- id: b\n  name: zAP\n  secret: {SECRET}x\n"
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("keys[1] (id b): name \"zAP\" is already used")
        );
        let e = build("keys:\n- id: a\n  name: Z\n  secret: short\n").unwrap_err();
        assert!(e.to_string().contains("secret: "), "{e}");
    }

    #[test]
    fn parse_errors_never_quote_a_secret() {
        // The parser's own message is replaced for key fields, whatever it says.
        let e = build(
            "keys:\n- id: a\n  name: A\n  secret: {part: hunter2-xxxxxxxxxxxxxxxxxxxxxxxxxxxx}\n",
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("keys[0].secret: must be a quoted string (the value is not shown)"),
            "{s}"
        );
        assert!(s.contains(":4:"), "{s}");
        assert!(!s.contains("hunter2"), "{s}");
    }

    #[test]
    fn yaml_errors_have_lines() {
        let e = build("keys:\n- id: a\n  name: [oops\n").unwrap_err();
        assert!(e.line.is_some(), "{e}");
    }

    #[test]
    fn name_header_encodes_non_ascii() {
        assert_eq!(name_header("Zapier").to_str().unwrap(), "Zapier");
        assert_eq!(name_header("100%").to_str().unwrap(), "100%25");
        assert_ne!(name_header("café"), name_header("caf%C3%A9"));
        assert_eq!(name_header("Café").to_str().unwrap(), "Caf%C3%A9");
    }
}
