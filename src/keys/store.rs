//! The in-memory key set of one snapshot: lookup by SHA-256, compiled permissions
//! (a level per category index), per-key limiters and last-used cells.
//!
//! Limiters and last-used cells are `Arc`s carried over from the previous set for keys
//! that still exist, so a reload keeps rate-limit state (when the rate is unchanged)
//! and last-used times; removed keys' state is dropped with the old set.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use http::HeaderValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use sha2::Digest;

use super::file::{KeyEntry, KeyRateFile, KeysFile, Pieces, Stop, refuse_blank};
use super::{KeyHash, KeyId, Level, validate_name, validate_operator_secret};
use crate::config::LoadError;
use crate::policy::{CategoryId, Policy};
use crate::ratelimit::{KeyLimiter, Rate};

/// One key as the request path sees it.
#[derive(Debug)]
pub(crate) struct KeyRecord {
    pub(crate) id: KeyId,
    pub(crate) name: Arc<str>,
    /// `X-Keygate-Key-Name` value (non-ASCII percent-encoded), made once.
    pub(crate) name_header: HeaderValue,
    pub(crate) id_header: HeaderValue,
    /// Level per category index, with [`NAMED`] set where the keys file names the
    /// category (the others took the `"*"` level).
    levels: Levels,
    /// The `"*"` level: for categories not named, and unmatched paths with
    /// `routes.unmatched: allow_any_key`.
    pub(crate) star: Level,
    /// Does the file name `"*"`?
    star_named: bool,
    pub(crate) expires_at: Option<OffsetDateTime>,
    pub(crate) rate: Rate,
    /// The limiter when the rate changed while the key existed (its state was not
    /// carried over); `None`: the cell in [`KeyState`], the usual case (no
    /// allocation of its own).
    own_limiter: Option<Arc<KeyLimiter>>,
    /// Last used, request counts and the limiter cell: carried over by reloads
    /// while the key exists.
    pub(crate) state: Arc<KeyState>,
    /// What the admin API shows of the key, kept so that listing keys reads no file.
    pub(crate) view: KeyView,
}

/// What a key's requests leave behind.
#[derive(Debug, Default)]
pub(crate) struct KeyState {
    /// Unix milliseconds of the last request with this key (0 = never).
    pub(crate) last_used: AtomicI64,
    /// Requests by decision index (`keygate_key_requests_total`), made at the
    /// key's first request: a key never used costs one pointer.
    requests: OnceLock<Box<[AtomicU64]>>,
    /// The key's limiter while its rate stays what it was when the key appeared
    /// (see [`KeyRecord::limiter`]).
    limiter: KeyLimiter,
}

impl KeyState {
    /// Counts a request with decision index `decision` of `of` decisions.
    pub(crate) fn count(&self, decision: usize, of: usize) {
        let counts = self
            .requests
            .get_or_init(|| (0..of).map(|_| AtomicU64::new(0)).collect());
        if let Some(c) = counts.get(decision) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The count by decision index; empty before the first request.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.requests
            .get()
            .into_iter()
            .flat_map(|c| c.iter().map(|a| a.load(Ordering::Relaxed)).enumerate())
    }
}

/// A key's level bytes: inline for up to [`INLINE_LEVELS`] categories (no
/// allocation per key in the usual config), else on the heap.
#[derive(Debug)]
enum Levels {
    Inline(u8, [u8; INLINE_LEVELS]),
    Heap(Box<[u8]>),
}

const INLINE_LEVELS: usize = 22;

impl Levels {
    fn new(bytes: &[u8]) -> Self {
        if bytes.len() <= INLINE_LEVELS {
            let mut a = [0; INLINE_LEVELS];
            a[..bytes.len()].copy_from_slice(bytes);
            Self::Inline(bytes.len() as u8, a)
        } else {
            Self::Heap(bytes.into())
        }
    }
}

impl std::ops::Deref for Levels {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Inline(n, a) => &a[..usize::from(*n)],
            Self::Heap(b) => b,
        }
    }
}

/// A short string kept inline (display prefixes: `kg_3Xb8`), else behind one thin
/// pointer: 16 bytes either way.
#[derive(Debug)]
pub(crate) enum Short {
    Inline(u8, [u8; 14]),
    Heap(Box<Box<str>>),
}

impl Short {
    fn new(s: &str) -> Self {
        if s.len() <= 14 {
            let mut a = [0; 14];
            a[..s.len()].copy_from_slice(s.as_bytes());
            Self::Inline(s.len() as u8, a)
        } else {
            Self::Heap(Box::new(s.into()))
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Made from a whole `&str` of at most 14 bytes.
            Self::Inline(n, a) => std::str::from_utf8(&a[..usize::from(*n)]).unwrap_or(""),
            Self::Heap(b) => b,
        }
    }
}

/// Marks a category named in the file's permissions (bit 7 of a level byte).
const NAMED: u8 = 0x80;

fn level_of(b: u8) -> Level {
    match b & !NAMED {
        2 => Level::Write,
        1 => Level::Read,
        _ => Level::None,
    }
}

fn level_byte(l: Level) -> u8 {
    match l {
        Level::None => 0,
        Level::Read => 1,
        Level::Write => 2,
    }
}

/// The parts of a key only the admin API and console show.
#[derive(Debug)]
pub(crate) struct KeyView {
    /// Display prefix of a key keygate made (`kg_3Xb8`).
    pub(crate) prefix: Option<Short>,
    pub(crate) created_at: Option<OffsetDateTime>,
    /// `expires_at` was written as a date (`2027-01-01`).
    pub(crate) expires_is_date: bool,
    /// What the file's `rate_limit` gave (the numbers are the record's `rate`).
    rate_written: RateWritten,
    /// Operator-supplied or sealed: the full value can be shown again.
    pub(crate) revealable: bool,
    /// Cluster mode: the key's revision (for If-Match); [`NO_REVISION`] for none
    /// (revisions are Redis integers, at most `i64::MAX`): 8 bytes, not 16.
    revision: u64,
}

const NO_REVISION: u64 = u64::MAX;

impl KeyView {
    /// Cluster mode: the key's revision.
    pub(crate) fn revision(&self) -> Option<u64> {
        (self.revision != NO_REVISION).then_some(self.revision)
    }
}

/// Which parts of a `rate_limit` the keys file wrote: with the record's [`Rate`]
/// that is the whole of it (a valid one names exactly one of `per_second` and
/// `per_minute`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum RateWritten {
    #[default]
    No,
    Rate,
    RateAndBurst,
}

impl RateWritten {
    fn of(r: Option<&KeyRateFile>) -> Self {
        match r {
            None => Self::No,
            Some(r) if r.burst.is_some() => Self::RateAndBurst,
            Some(_) => Self::Rate,
        }
    }
}

impl KeyRecord {
    /// The key's limiter cell.
    pub(crate) fn limiter(&self) -> &KeyLimiter {
        self.own_limiter.as_deref().unwrap_or(&self.state.limiter)
    }

    /// The key's own `rate_limit` as the keys file wrote it (`None`: the default).
    pub(crate) fn rate_limit(&self) -> Option<KeyRateFile> {
        let count = Some(self.rate.count.get());
        let (per_second, per_minute) = match self.rate.per {
            crate::ratelimit::Per::Second => (count, None),
            crate::ratelimit::Per::Minute => (None, count),
        };
        let burst = match self.view.rate_written {
            RateWritten::No => return None,
            RateWritten::Rate => None,
            RateWritten::RateAndBurst => Some(self.rate.burst.get()),
        };
        Some(KeyRateFile {
            per_second,
            per_minute,
            burst,
        })
    }

    pub(crate) fn level(&self, category: CategoryId) -> Level {
        self.levels
            .get(usize::from(category.0))
            .map_or(Level::None, |b| level_of(*b))
    }

    /// The permissions as the keys file writes them: the categories it names, and
    /// `"*"` if named.
    pub(crate) fn permissions(&self, policy: &Policy) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (i, b) in self.levels.iter().enumerate() {
            if b & NAMED != 0 {
                let name = policy.category_name(CategoryId(i as u16));
                out.insert(name.to_string(), level_of(*b).as_str().to_string());
            }
        }
        if self.star_named {
            out.insert("*".to_string(), self.star.as_str().to_string());
        }
        out
    }

    /// Is what key events show of the two the same (name, effective levels, rate,
    /// expiry)? Both must come from configs with the same categories.
    pub(crate) fn same_view(&self, other: &KeyRecord) -> bool {
        self.name == other.name
            && self.star == other.star
            && self.rate == other.rate
            && self.expires_at == other.expires_at
            && self.levels.len() == other.levels.len()
            && self
                .levels
                .iter()
                .zip(other.levels.iter())
                .all(|(a, b)| level_of(*a) == level_of(*b))
    }

    /// The masked form shown in lists (see [`KeyEntry::masked`]).
    pub(crate) fn masked(&self) -> String {
        super::masked(self.view.prefix.as_ref().map_or("", Short::as_str))
    }

    pub(crate) fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }
}

/// Key sets this large give their memory back to the system when dropped.
const LARGE_SET: usize = 10_000;

/// Returns freed heap memory to the system (glibc keeps it otherwise: a
/// 100,000-key reload would leave the old set's pages resident). A no-op on
/// other allocators.
#[allow(unsafe_code)]
pub(crate) fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Drop for KeySet {
    /// A large set is freed off the dropping thread (which may be a request's:
    /// the last one holding an old snapshot), then the memory is given back.
    fn drop(&mut self) {
        if self.by_id.len() < LARGE_SET {
            return;
        }
        tracing::debug!(keys = self.by_id.len(), "freeing a replaced key set");
        let by_id = std::mem::take(&mut self.by_id);
        let by_hash = std::mem::take(&mut self.by_hash);
        let free = move || {
            drop(by_id);
            drop(by_hash);
            give_back_memory();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(free)),
            Err(_) => free(),
        }
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

/// Keys are found by the first 128 bits of their SHA-256: as unguessable as the
/// whole (a second preimage is 2^128 work) at half the table's key size.
type DigestMap<V> = HashMap<[u8; 16], V, std::hash::BuildHasherDefault<DigestHasher>>;

fn map_key(h: &KeyHash) -> [u8; 16] {
    let mut k = [0; 16];
    k.copy_from_slice(&h.0[..16]);
    k
}

/// The keys of one snapshot.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    by_hash: DigestMap<Arc<KeyRecord>>,
    /// Every key in id order: lookup by id (binary search) and the admin list's
    /// pages (a cursor is an id).
    by_id: Vec<Arc<KeyRecord>>,
    pub(crate) api_enabled: bool,
}

/// Builds a [`KeySet`] one entry at a time, validating as it goes, so a large file
/// never needs all of its parsed entries at once.
pub(crate) struct Builder<'a> {
    path: &'a Path,
    policy: &'a Policy,
    default_rate: &'a Rate,
    previous: Option<&'a KeySet>,
    positions: Vec<(usize, usize)>,
    set: KeySet,
    /// Ids so far (the set's own list is sorted only at the end).
    ids: HashSet<KeyId>,
    /// For the "unique ignoring case" rule: a hash of each lower-cased name → its
    /// entry (the name itself is the record's, compared on a hit), and the rare
    /// names whose hash another name already had.
    names: HashMap<u64, u32, std::hash::BuildHasherDefault<DigestHasher>>,
    names_hasher: std::hash::RandomState,
    names_collided: Vec<(Box<str>, usize)>,
}

impl<'a> Builder<'a> {
    pub(crate) fn new(
        path: &'a Path,
        policy: &'a Policy,
        default_rate: &'a Rate,
        previous: Option<&'a KeySet>,
        capacity: usize,
    ) -> Self {
        let mut by_hash = DigestMap::default();
        by_hash.reserve(capacity);
        Self {
            path,
            policy,
            default_rate,
            previous,
            positions: Vec::new(),
            set: KeySet {
                by_hash,
                by_id: Vec::with_capacity(capacity),
                api_enabled: true,
            },
            ids: HashSet::with_capacity(capacity),
            names: HashMap::with_capacity_and_hasher(capacity, Default::default()),
            names_hasher: std::hash::RandomState::new(),
            names_collided: Vec::new(),
        }
    }

    /// Where each entry starts, for errors that name a line.
    pub(crate) fn positions(&mut self, positions: &[(usize, usize)]) {
        self.positions = positions.to_vec();
    }

    /// Validates entry `i` and adds it.
    pub(crate) fn add(&mut self, i: usize, e: &KeyEntry) -> Result<(), LoadError> {
        self.add_at(i, self.positions.get(i).copied(), e)
    }

    /// As [`Self::add`], the entry starting at `at` (line, column).
    pub(crate) fn add_at(
        &mut self,
        i: usize,
        at: Option<(usize, usize)>,
        e: &KeyEntry,
    ) -> Result<(), LoadError> {
        let policy = self.policy;
        let err = |m: String| LoadError {
            file: self.path.to_path_buf(),
            line: at,
            message: format!("keys[{i}] (id {}): {m}", e.id),
            unreadable: false,
        };
        let id = KeyId::parse(&e.id).map_err(err)?;
        if !self.ids.insert(id.clone()) {
            return Err(err("id is used by an earlier key".into()));
        }
        validate_name(&e.name).map_err(|m| err(format!("name: {m}")))?;
        if let Some(j) = self.name_taken(&e.name, i) {
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
        if self.set.by_hash.contains_key(&map_key(&hash)) {
            return Err(err("the same key value is used by an earlier key".into()));
        }
        let mut star = Level::None;
        let mut star_named = false;
        let mut named = vec![None; policy.category_count()];
        for (cat, lvl) in &e.permissions {
            let level = lvl
                .parse::<Level>()
                .map_err(|e| err(format!("permissions.{cat}: {e}")))?;
            if cat == "*" {
                star = level;
                star_named = true;
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
                named[usize::from(cid.0)] = Some(level);
            }
        }
        // Categories not named take the "*" level.
        let levels: Vec<u8> = named
            .iter()
            .map(|n| n.map_or(level_byte(star), |l| level_byte(l) | NAMED))
            .collect();
        let levels = Levels::new(&levels);
        let rate = match &e.rate_limit {
            Some(r) => Rate::from_parts(r.per_second, r.per_minute, r.burst)
                .map_err(|m| err(format!("rate_limit: {m}")))?,
            None => *self.default_rate,
        };
        let expires_at = e
            .expires_at
            .as_deref()
            .map(|s| parse_time(s).map_err(|m| err(format!("expires_at: {m}"))))
            .transpose()?;
        let created_at = e
            .created_at
            .as_deref()
            .map(|c| parse_time(c).map_err(|m| err(format!("created_at: {m}"))))
            .transpose()?;
        let prev = self.previous.and_then(|p| p.get(&id));
        // Same cell as before while the rate is unchanged; a new one when it changed.
        let own_limiter = match prev {
            Some(p) if p.rate == rate => p.own_limiter.clone(),
            Some(_) => Some(Arc::new(KeyLimiter::default())),
            None => None,
        };
        let state = prev.map(|p| p.state.clone()).unwrap_or_default();
        let record = Arc::new(KeyRecord {
            name_header: name_header(&e.name),
            id_header: HeaderValue::from_str(id.as_str())
                .map_err(|_| err("id is not a valid header value".into()))?,
            id,
            name: e.name.as_str().into(),
            levels,
            star,
            star_named,
            expires_at,
            rate,
            own_limiter,
            state,
            view: KeyView {
                prefix: e.prefix.as_deref().map(Short::new),
                created_at,
                expires_is_date: e.expires_at.as_deref().is_some_and(is_date),
                rate_written: RateWritten::of(e.rate_limit.as_ref()),
                revealable: e.revealable(),
                revision: e.revision.unwrap_or(NO_REVISION),
            },
        });
        self.set.by_hash.insert(map_key(&hash), record.clone());
        self.set.by_id.push(record);
        Ok(())
    }

    /// The earlier entry with `name` ignoring case, else notes entry `i`'s name.
    fn name_taken(&mut self, name: &str, i: usize) -> Option<usize> {
        use std::hash::BuildHasher;
        let lower = name.to_lowercase();
        let h = self.names_hasher.hash_one(&lower);
        if let Some((_, j)) = self.names_collided.iter().find(|(n, _)| **n == *lower) {
            return Some(*j);
        }
        match self.names.get(&h) {
            None => {
                self.names.insert(h, i as u32);
                None
            }
            Some(&j) => {
                let j = j as usize;
                // Entries are pushed in file order while building.
                if self
                    .set
                    .by_id
                    .get(j)
                    .is_some_and(|r| r.name.to_lowercase() == lower)
                {
                    Some(j)
                } else {
                    self.names_collided.push((lower.into(), i));
                    None
                }
            }
        }
    }

    /// The set, once every entry is in.
    pub(crate) fn finish(mut self, api_enabled: bool) -> Result<KeySet, LoadError> {
        self.set.api_enabled = api_enabled;
        self.set.by_id.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        Ok(self.set)
    }
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
        let mut b = Builder::new(path, policy, default_rate, previous, file.keys.len());
        b.positions(&file.entry_positions);
        for (i, e) in file.keys.iter().enumerate() {
            b.add(i, e)?;
        }
        b.finish(file.api_enabled)
    }

    /// Parses keys.yaml text and builds the set, entry by entry where the file's
    /// layout allows ([`Pieces`]): the parsed entries are never all held at once.
    pub(crate) fn build_from_text(
        path: &Path,
        text: &str,
        policy: &Policy,
        default_rate: &Rate,
        previous: Option<&KeySet>,
    ) -> Result<(Self, Option<u64>), LoadError> {
        refuse_blank(path, text)?;
        let mut b = Builder::new(path, policy, default_rate, previous, 0);
        let read = Pieces::new(|i, at, e: KeyEntry| b.add_at(i, Some(at), &e)).text(text);
        match read {
            Ok(header) => {
                b.positions = header.entry_positions;
                b.finish(header.api_enabled).map(|s| (s, header.revision))
            }
            Err(Stop::Each(e)) => Err(e),
            Err(_) => Self::build_whole(path, text, policy, default_rate, previous),
        }
    }

    /// As [`Self::build_from_text`], reading the file a line at a time (the text
    /// is never held whole either). Also returns the content's SHA-256.
    pub(crate) fn build_from_file(
        path: &Path,
        policy: &Policy,
        default_rate: &Rate,
        previous: Option<&KeySet>,
    ) -> Result<(Self, Option<u64>, [u8; 32]), LoadError> {
        let file = std::fs::File::open(path).map_err(|e| LoadError::unreadable(path, &e))?;
        let r = std::io::BufReader::with_capacity(64 * 1024, file);
        let mut b = Builder::new(path, policy, default_rate, previous, 0);
        let read = Pieces::new(|i, at, e: KeyEntry| b.add_at(i, Some(at), &e)).reader(r);
        match read {
            Ok((header, digest)) if !header.entry_positions.is_empty() => {
                b.positions = header.entry_positions;
                b.finish(header.api_enabled)
                    .map(|s| (s, header.revision, digest))
            }
            Err(Stop::Each(e)) => Err(e),
            Err(Stop::Io(e)) => Err(LoadError::unreadable(path, &e)),
            // Read whole: an unusual layout, or a file with no items (blank?).
            Ok(_) | Err(Stop::Whole) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| LoadError::unreadable(path, &e))?;
                let digest = sha2::Sha256::digest(text.as_bytes()).into();
                let (set, rev) =
                    Self::build_from_text(path, &text, policy, default_rate, previous)?;
                Ok((set, rev, digest))
            }
        }
    }

    fn build_whole(
        path: &Path,
        text: &str,
        policy: &Policy,
        default_rate: &Rate,
        previous: Option<&KeySet>,
    ) -> Result<(Self, Option<u64>), LoadError> {
        let file = KeysFile::parse_whole(path, text)?;
        Self::build(path, &file, policy, default_rate, previous).map(|s| (s, file.revision))
    }

    pub(crate) fn lookup(&self, hash: &KeyHash) -> Option<&Arc<KeyRecord>> {
        self.by_hash.get(&map_key(hash))
    }

    pub(crate) fn get(&self, id: &KeyId) -> Option<&Arc<KeyRecord>> {
        self.get_str(id.as_str())
    }

    pub(crate) fn get_str(&self, id: &str) -> Option<&Arc<KeyRecord>> {
        self.by_id
            .binary_search_by(|k| k.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.by_id[i])
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Every key, in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<KeyRecord>> {
        self.by_id.iter()
    }

    /// The keys after id `after` (all when `None`), in id order.
    pub(crate) fn iter_after(&self, after: Option<&str>) -> impl Iterator<Item = &Arc<KeyRecord>> {
        let start = after.map_or(0, |a| self.by_id.partition_point(|k| k.id.as_str() <= a));
        self.by_id[start..].iter()
    }
}

fn is_date(s: &str) -> bool {
    s.len() == 10 && !s.contains('T')
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

    /// 100,000 keys: each record is one allocation of 232 bytes + the `Arc`'s
    /// counts, glibc's 256-byte class (a byte more and it is the 272-byte one).
    #[test]
    fn a_record_stays_in_its_allocation_class() {
        assert!(std::mem::size_of::<KeyRecord>() <= 232);
        assert_eq!(std::mem::size_of::<KeyId>(), 16);
        assert_eq!(std::mem::size_of::<Option<Short>>(), 16);
        let long = "k".repeat(40);
        assert_eq!(KeyId::parse(&long).unwrap().as_str(), long);
        assert_eq!(KeyId::parse("k7f3a9c1e").unwrap().as_str(), "k7f3a9c1e");
        assert_eq!(Short::new("kg_3Xb8").as_str(), "kg_3Xb8");
        assert_eq!(Short::new(&long).as_str(), long);
    }

    #[test]
    fn name_header_encodes_non_ascii() {
        assert_eq!(name_header("Zapier").to_str().unwrap(), "Zapier");
        assert_eq!(name_header("100%").to_str().unwrap(), "100%25");
        assert_ne!(name_header("café"), name_header("caf%C3%A9"));
        assert_eq!(name_header("Café").to_str().unwrap(), "Caf%C3%A9");
    }
}
