//! Routing policy: `routes.public` and `routes.categories` compiled once per snapshot
//! into segment patterns, the most-specific-match rule, and the access level a method
//! needs.
//!
//! Patterns: segments split at `/`; `*` is exactly one segment, `**` any number
//! (including none); other segments match literally, ignoring ASCII case. Among
//! matching patterns the most specific wins: compare segment by segment from the left,
//! literal beats `*` beats `**`; when one pattern is a prefix of the other, the one
//! without `**` wins, else the longer one. Public patterns take part in the same
//! comparison, so `/docs/private` in a category beats a public `/docs/**`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use http::Method;

/// Access level on a category. Ordered: `None < Read < Write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Level {
    None,
    Read,
    /// "Write and Delete"; includes read.
    Write,
}

impl Level {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    /// Does this level grant `needed`?
    pub(crate) fn allows(self, needed: Level) -> bool {
        self >= needed
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one message for a level that is not one.
impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            _ => Err(format!("unknown level {s:?} (use none, read or write)")),
        }
    }
}

/// Index of a category in the snapshot's [`Policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CategoryId(pub(crate) u16);

/// At most this many `**` in one pattern (keeps matching cheap).
const MAX_DOUBLE_STARS: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(Box<str>),
    One,
    Many,
}

impl Seg {
    fn rank(&self) -> u8 {
        match self {
            Seg::Lit(_) => 0,
            Seg::One => 1,
            Seg::Many => 2,
        }
    }
}

/// One compiled path pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    text: Box<str>,
    segs: Vec<Seg>,
    has_many: bool,
    /// Segments other than `**`: the fewest a matching path has.
    fixed: usize,
}

impl Pattern {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("pattern {text:?} must start with '/'"));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segs = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let seg = match *p {
                "*" => Seg::One,
                "**" => Seg::Many,
                "" if i + 1 < parts.len() => {
                    return Err(format!("pattern {text:?} has an empty segment ('//')"));
                }
                "" if parts.len() > 1 => {
                    return Err(format!(
                        "pattern {text:?} ends with '/', which only '**' can match; write it without the '/' or end it with '/**'"
                    ));
                }
                lit => {
                    if lit.contains('*') {
                        return Err(format!(
                            "pattern {text:?}: '*' and '**' must be whole segments"
                        ));
                    }
                    if lit == "." || lit == ".." {
                        return Err(format!("pattern {text:?} has a dot segment"));
                    }
                    if let Some(c) = lit
                        .chars()
                        .find(|c| !c.is_ascii_graphic() || matches!(c, '?' | '#' | '\\' | ';'))
                    {
                        return Err(format!("pattern {text:?} contains {c:?}"));
                    }
                    Seg::Lit(lit.into())
                }
            };
            segs.push(seg);
        }
        let many = segs.iter().filter(|s| **s == Seg::Many).count();
        if many > MAX_DOUBLE_STARS {
            return Err(format!(
                "pattern {text:?} has more than {MAX_DOUBLE_STARS} '**' segments"
            ));
        }
        Ok(Self {
            text: text.into(),
            fixed: segs.len() - many,
            segs,
            has_many: many > 0,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Does this pattern match the normalised `path` (which starts with `/`)?
    #[cfg(test)]
    pub(crate) fn matches(&self, path: &str) -> bool {
        with_segments(path, |segs| segs.is_some_and(|p| self.matches_segs(p)))
    }

    /// Does this pattern match the path split at every `/` ([`with_segments`])?
    fn matches_segs(&self, path: &[&str]) -> bool {
        // Without `**` a pattern matches only a path of exactly its length.
        if self.has_many {
            path.len() >= self.fixed && match_segs(&self.segs, path)
        } else {
            path.len() == self.segs.len() && match_segs(&self.segs, path)
        }
    }

    /// Case-insensitive identity, for duplicate detection.
    fn key(&self) -> String {
        self.text.to_ascii_lowercase()
    }

    /// `Greater` when `self` is more specific than `other`.
    fn specificity(&self, other: &Pattern) -> Ordering {
        for (a, b) in self.segs.iter().zip(other.segs.iter()) {
            match b.rank().cmp(&a.rank()) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (self.has_many, other.has_many) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            _ => self.segs.len().cmp(&other.segs.len()),
        }
    }
}

/// The most segments a path is split into on the stack; longer ones use a `Vec`.
const STACK_SEGMENTS: usize = 24;

/// Calls `f` with `path` (which must start with `/`) split at every `/` after the
/// first: `/a/b` → `["a", "b"]`, `/a/` → `["a", ""]`, `/` → `[""]`; `None` when it
/// does not start with `/`. The path is split once for every pattern.
fn with_segments<R>(path: &str, f: impl FnOnce(Option<&[&str]>) -> R) -> R {
    let Some(rest) = path.strip_prefix('/') else {
        return f(None);
    };
    let mut stack = [""; STACK_SEGMENTS];
    let mut n = 0;
    for seg in rest.split('/') {
        if n == STACK_SEGMENTS {
            let all: Vec<&str> = rest.split('/').collect();
            return f(Some(&all));
        }
        stack[n] = seg;
        n += 1;
    }
    f(Some(&stack[..n]))
}

/// Does `segs` match `path` (a path's segments)? `**` matches any run of segments
/// (none too), a literal one segment (ASCII case-insensitive), `*` one non-empty
/// segment. Glob matching with one backtrack point, the last `**`: at most
/// `segs.len() × path.len()` steps whatever the pattern, so a long path cannot make
/// a pattern with several `**` expensive (the match runs before the key check).
fn match_segs(segs: &[Seg], path: &[&str]) -> bool {
    let (mut p, mut s) = (0, 0);
    // After the last `**` seen: the pattern index past it, and the path index it
    // has taken up to.
    let mut back: Option<(usize, usize)> = None;
    while s < path.len() {
        let step = match segs.get(p) {
            Some(Seg::Many) => {
                back = Some((p + 1, s));
                p += 1;
                continue;
            }
            Some(Seg::Lit(lit)) => path[s].eq_ignore_ascii_case(lit),
            // `*` is one non-empty segment: a trailing `/` is matched only by `**`.
            Some(Seg::One) => !path[s].is_empty(),
            None => false,
        };
        if step {
            p += 1;
            s += 1;
        } else if let Some((after, taken)) = back {
            // The last `**` takes one more segment; try again from there.
            back = Some((after, taken + 1));
            p = after;
            s = taken + 1;
        } else {
            return false;
        }
    }
    segs[p..].iter().all(|x| *x == Seg::Many)
}

/// What a normalised path is, by the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Public,
    Category(CategoryId),
    Unmatched,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unmatched {
    Deny,
    AllowAnyKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Preflight {
    Deny,
    Forward,
}

#[derive(Debug)]
struct Entry {
    pattern: Pattern,
    route: Route,
}

/// The compiled routing table of one snapshot.
#[derive(Debug)]
pub(crate) struct Policy {
    names: Vec<Arc<str>>,
    by_name: HashMap<String, CategoryId>,
    entries: Vec<Entry>,
    pub(crate) unmatched: Unmatched,
    pub(crate) preflight: Preflight,
    pub(crate) allow_non_ascii_paths: bool,
    /// `routes.allow_trailing_dots`: a path segment may end in `.`.
    pub(crate) allow_trailing_dots: bool,
    /// The file name of the config these routes came from (for error messages).
    pub(crate) config_name: String,
}

impl Policy {
    /// Compiles the routes; errors name the field (`routes.categories.jobs[1]`).
    pub(crate) fn compile(
        public: &[String],
        categories: &BTreeMap<String, Vec<String>>,
        unmatched: Unmatched,
        preflight: Preflight,
        allow_non_ascii_paths: bool,
        allow_trailing_dots: bool,
    ) -> Result<Self, String> {
        let mut names = Vec::new();
        let mut by_name = HashMap::new();
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut add = |field: String, text: &str, route: Route| -> Result<Entry, String> {
            let pattern = Pattern::parse(text).map_err(|e| format!("{field}: {e}"))?;
            if let Some(prev) = seen.insert(pattern.key(), field.clone()) {
                return Err(format!(
                    "{field}: pattern {text:?} is already used by {prev}; a pattern may appear only once"
                ));
            }
            Ok(Entry { pattern, route })
        };
        for (i, p) in public.iter().enumerate() {
            entries.push(add(format!("routes.public[{i}]"), p, Route::Public)?);
        }
        if categories.len() > usize::from(u16::MAX) {
            return Err("routes.categories: too many categories".into());
        }
        for (name, patterns) in categories {
            if !valid_category_name(name) {
                return Err(format!(
                    "routes.categories.{name}: a category name is 1-64 characters of a-z, A-Z, 0-9, '_', '-' or '.'"
                ));
            }
            let id = CategoryId(names.len() as u16);
            names.push(Arc::<str>::from(name.as_str()));
            by_name.insert(name.clone(), id);
            if patterns.is_empty() {
                return Err(format!(
                    "routes.categories.{name}: needs at least one pattern"
                ));
            }
            for (i, p) in patterns.iter().enumerate() {
                entries.push(add(
                    format!("routes.categories.{name}[{i}]"),
                    p,
                    Route::Category(id),
                )?);
            }
        }
        Ok(Self {
            names,
            by_name,
            entries,
            unmatched,
            preflight,
            allow_non_ascii_paths,
            allow_trailing_dots,
            config_name: "config.yaml".into(),
        })
    }

    /// The route for a normalised path: the most specific matching pattern.
    pub(crate) fn route(&self, path: &str) -> Route {
        with_segments(path, |segs| {
            let Some(segs) = segs else {
                return Route::Unmatched;
            };
            let mut best: Option<&Entry> = None;
            for e in &self.entries {
                if e.pattern.matches_segs(segs)
                    && best.is_none_or(|b| e.pattern.specificity(&b.pattern) == Ordering::Greater)
                {
                    best = Some(e);
                }
            }
            best.map_or(Route::Unmatched, |e| e.route)
        })
    }

    pub(crate) fn category_name(&self, id: CategoryId) -> &Arc<str> {
        // Ids are only made by `compile` for this policy's own table.
        &self.names[usize::from(id.0)]
    }

    pub(crate) fn category_id(&self, name: &str) -> Option<CategoryId> {
        self.by_name.get(name).copied()
    }

    /// The category whose name is closest to `name` (edit distance at most 2, or a
    /// third of its length), for "did you mean".
    pub(crate) fn closest_category(&self, name: &str) -> Option<&str> {
        let most = (name.chars().count() / 3).max(2);
        self.names
            .iter()
            .map(|n| (edit_distance(name, n), n))
            .filter(|(d, _)| *d <= most)
            .min_by_key(|(d, _)| *d)
            .map(|(_, n)| n.as_ref())
    }

    pub(crate) fn category_count(&self) -> usize {
        self.names.len()
    }

    /// Category names with their patterns, in name order.
    pub(crate) fn categories(&self) -> impl Iterator<Item = (&str, Vec<&str>)> {
        self.names.iter().enumerate().map(|(i, n)| {
            let pats = self
                .entries
                .iter()
                .filter(|e| e.route == Route::Category(CategoryId(i as u16)))
                .map(|e| e.pattern.as_str())
                .collect();
            (&**n, pats)
        })
    }
}

fn valid_category_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The level a method needs on the category; `None` means the method is not allowed
/// through the gateway (`405`).
pub(crate) fn required_level(method: &Method) -> Option<Level> {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => Some(Level::Read),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => Some(Level::Write),
        _ => None,
    }
}

/// The `Allow` header value sent with `405`.
pub(crate) const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Levenshtein distance, by characters, ignoring case.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(public: &[&str], cats: &[(&str, &[&str])]) -> Policy {
        let public: Vec<String> = public.iter().map(|s| s.to_string()).collect();
        let cats = cats
            .iter()
            .map(|(n, p)| (n.to_string(), p.iter().map(|s| s.to_string()).collect()))
            .collect();
        Policy::compile(
            &public,
            &cats,
            Unmatched::Deny,
            Preflight::Deny,
            false,
            false,
        )
        .unwrap()
    }

    fn cat(p: &Policy, path: &str) -> Option<String> {
        match p.route(path) {
            Route::Category(id) => Some(p.category_name(id).to_string()),
            Route::Public => Some("<public>".into()),
            Route::Unmatched => None,
        }
    }

    #[test]
    fn the_split_path_matcher_agrees_with_a_segment_by_segment_reading() {
        // The reading the matcher replaced: one segment split off at a time.
        fn reference(segs: &[Seg], rest: Option<&str>) -> bool {
            fn split(r: &str) -> (&str, Option<&str>) {
                match r.find('/') {
                    Some(i) => (&r[..i], Some(&r[i + 1..])),
                    None => (r, None),
                }
            }
            let Some((first, tail)) = segs.split_first() else {
                return rest.is_none();
            };
            match first {
                Seg::Lit(lit) => rest.is_some_and(|r| {
                    let (seg, n) = split(r);
                    seg.eq_ignore_ascii_case(lit) && reference(tail, n)
                }),
                Seg::One => rest.is_some_and(|r| {
                    let (seg, n) = split(r);
                    !seg.is_empty() && reference(tail, n)
                }),
                Seg::Many => {
                    let mut cur = rest;
                    loop {
                        if reference(tail, cur) {
                            return true;
                        }
                        match cur {
                            Some(r) => cur = split(r).1,
                            None => return false,
                        }
                    }
                }
            }
        }
        // Every path of 1..=max segments, each one of `parts` (and "/").
        fn every(parts: &[&str], max: u32) -> Vec<String> {
            let mut out = vec!["/".to_string()];
            for n in 1..=max {
                for code in 0..parts.len().pow(n) {
                    let mut c = code;
                    let mut p = String::new();
                    for _ in 0..n {
                        p.push('/');
                        p.push_str(parts[c % parts.len()]);
                        c /= parts.len();
                    }
                    out.push(p);
                }
            }
            out
        }
        let patterns = every(&["a", "B", "*", "**"], 4);
        let mut paths = every(&["a", "b", "", "x"], 5);
        // Longer than the stack split, too.
        paths.push("/a".repeat(STACK_SEGMENTS + 3));
        paths.push(format!("{}/b", "/a".repeat(STACK_SEGMENTS)));
        let mut compared = 0;
        for pat in &patterns {
            let Ok(p) = Pattern::parse(pat) else { continue };
            for path in &paths {
                let want = reference(&p.segs, path.strip_prefix('/'));
                assert_eq!(p.matches(path), want, "{pat} on {path}");
                compared += 1;
            }
        }
        assert!(compared > 100_000, "{compared}");
    }

    #[test]
    fn many_double_stars_on_a_long_path_stay_linear() {
        let p = Pattern::parse("/a/**/a/**/a/**/b").unwrap();
        let long = "/a".repeat(20_000);
        // Exponential backtracking would not finish; the glob match does at once.
        assert!(!p.matches(&long));
        assert!(p.matches(&format!("{long}/b")));
    }

    #[test]
    fn segment_matching() {
        let m = |pat: &str, path: &str| Pattern::parse(pat).unwrap().matches(path);
        assert!(m("/api/v1/jobs", "/api/v1/jobs"));
        assert!(m("/api/v1/jobs", "/API/V1/Jobs"));
        assert!(!m("/api/v1/jobs", "/api/v1/jobs/"));
        assert!(!m("/api/v1/jobs", "/api/v1/jobsx"));
        assert!(m("/api/v1/jobs/**", "/api/v1/jobs"));
        assert!(m("/api/v1/jobs/**", "/api/v1/jobs/"));
        assert!(m("/api/v1/jobs/**", "/api/v1/jobs/1/notes"));
        assert!(!m("/api/v1/jobs/**", "/api/v1/jobsx/1"));
        assert!(m("/api/*/jobs", "/api/v2/jobs"));
        assert!(!m("/api/*/jobs", "/api/jobs"));
        assert!(!m("/api/*/jobs", "/api/a/b/jobs"));
        assert!(m("/api/**/notes", "/api/notes"));
        assert!(m("/api/**/notes", "/api/a/b/notes"));
        assert!(!m("/api/**/notes", "/api/a/b/notes/x"));
        assert!(
            !m("/api/*", "/api/"),
            "a trailing '/' is matched only by **"
        );
        assert!(m("/", "/"));
        assert!(m("/**", "/"));
    }

    #[test]
    fn most_specific_wins() {
        let p = policy(
            &["/healthz", "/docs/**"],
            &[
                ("all", &["/**"]),
                ("jobs", &["/api/v1/jobs", "/api/v1/jobs/**"]),
                ("notes", &["/api/v1/jobs/*/notes"]),
                ("special", &["/api/v1/jobs/special"]),
                ("private", &["/docs/private"]),
            ],
        );
        assert_eq!(cat(&p, "/api/v1/jobs").as_deref(), Some("jobs"));
        assert_eq!(cat(&p, "/api/v1/jobs/7").as_deref(), Some("jobs"));
        assert_eq!(cat(&p, "/api/v1/jobs/7/notes").as_deref(), Some("notes"));
        assert_eq!(cat(&p, "/api/v1/jobs/special").as_deref(), Some("special"));
        assert_eq!(
            cat(&p, "/api/v1/jobs/special/notes").as_deref(),
            Some("notes")
        );
        assert_eq!(cat(&p, "/other").as_deref(), Some("all"));
        assert_eq!(cat(&p, "/healthz").as_deref(), Some("<public>"));
        assert_eq!(cat(&p, "/docs/a").as_deref(), Some("<public>"));
        assert_eq!(cat(&p, "/docs/private").as_deref(), Some("private"));
    }

    #[test]
    fn without_double_star_wins_a_prefix_tie() {
        let p = policy(&[], &[("a", &["/x/**"]), ("b", &["/x"])]);
        assert_eq!(cat(&p, "/x").as_deref(), Some("b"));
        assert_eq!(cat(&p, "/x/y").as_deref(), Some("a"));
    }

    #[test]
    fn unmatched() {
        let p = policy(&[], &[("jobs", &["/api/v1/jobs/**"])]);
        assert_eq!(cat(&p, "/api/v1/candidates"), None);
    }

    #[test]
    fn load_errors() {
        let cats = |c: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
            c.iter()
                .map(|(n, p)| (n.to_string(), p.iter().map(|s| s.to_string()).collect()))
                .collect()
        };
        let err = |c| {
            Policy::compile(&[], &c, Unmatched::Deny, Preflight::Deny, false, false).unwrap_err()
        };
        assert!(err(cats(&[("a", &["/x"]), ("b", &["/X"])])).contains("already used"));
        assert!(err(cats(&[("a", &["x"])])).contains("start with '/'"));
        assert!(err(cats(&[("a", &["/a*"])])).contains("whole segments"));
        assert!(err(cats(&[("a", &["/a//b"])])).contains("empty segment"));
        assert!(err(cats(&[("a b", &["/a"])])).contains("category name"));
        assert!(err(cats(&[("a", &["/a/"])])).contains("only '**'"));
    }

    #[test]
    fn levels_for_methods() {
        assert_eq!(required_level(&Method::GET), Some(Level::Read));
        assert_eq!(required_level(&Method::OPTIONS), Some(Level::Read));
        assert_eq!(required_level(&Method::DELETE), Some(Level::Write));
        assert_eq!(required_level(&Method::TRACE), None);
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("candidate", "candidates"), 1);
        assert_eq!(edit_distance("JOBS", "jobs"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
