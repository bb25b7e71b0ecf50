//! Micro-benchmarks of the request path's hot functions (docs/performance.md,
//! "Micro-benchmarks"): path normalisation, the route match over a 50-pattern
//! table, the key lookup in a set of 100,000 keys, and the access-log line.
//!
//! `cargo bench` runs them; CI only compiles them (`cargo bench --no-run`). The
//! tables are built through the real config and keys types (`keygate::bench`), as
//! a load does, before any timing starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use divan::{Bencher, black_box};
use http::{HeaderValue, Method};
use keygate::bench::{Config, KeySet, Route};
use keygate::record::Decision;
use keygate::{KeyHash, Secret};

fn main() {
    // Build the tables first, so that no sample pays for them.
    LazyLock::force(&CONFIG);
    LazyLock::force(&KEYS);
    divan::main();
}

/// A named input, so divan's table shows the name rather than the value.
struct Case {
    name: &'static str,
    input: String,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

fn case(name: &'static str, input: impl Into<String>) -> Case {
    Case {
        name,
        input: input.into(),
    }
}

// ---------------------------------------------------------------- normalize_path

/// Request paths as clients send them, each with whether it is accepted (checked
/// before timing): already normal (the common case), escapes to rewrite and `/`
/// runs to merge, refused ones (an encoded `/`, a `..` segment), and a long one.
static PATHS: LazyLock<Vec<(Case, bool)>> = LazyLock::new(|| {
    let long = (0..40)
        .map(|i| format!("/segment-{i:02}"))
        .collect::<String>();
    vec![
        (case("plain", "/api/v1/candidates/12345"), true),
        (
            case(
                "escapes",
                "/api/v1/candidates/%6a%6fhn-doe//notes/%7e%C3%A9t%c3%a9",
            ),
            true,
        ),
        (case("encoded_slash", "/api/v1/files/a%2Fb"), false),
        (case("dot_segment", "/api/v1/jobs/../admin"), false),
        (case("long_440", long), true),
    ]
});

static PATH_CASES: LazyLock<Vec<&'static Case>> = LazyLock::new(|| {
    PATHS
        .iter()
        .map(|(c, ok)| {
            assert_eq!(
                keygate::normalize_path(&c.input, true).is_ok(),
                *ok,
                "{}",
                c.input
            );
            c
        })
        .collect()
});

/// `keygate::normalize_path` (non-ASCII allowed, as `routes.allow_non_ascii_paths`
/// permits; the `escapes` case decodes `é`).
#[divan::bench(args = PATH_CASES.iter().copied())]
fn normalize_path(case: &Case) -> bool {
    keygate::normalize_path(black_box(&case.input), true).is_ok()
}

// ------------------------------------------------------------------ route match

/// Twenty resources, each `/api/v1/<name>` and `/api/v1/<name>/**`.
const RESOURCES: [&str; 20] = [
    "applications",
    "assessments",
    "attachments",
    "candidates",
    "comments",
    "departments",
    "emails",
    "events",
    "interviews",
    "jobs",
    "locations",
    "notes",
    "offers",
    "pipelines",
    "reports",
    "scorecards",
    "sources",
    "tags",
    "templates",
    "users",
];

/// 3 public patterns + 20 × 2 + 7 = 50 patterns.
const PUBLIC: [&str; 3] = ["/healthz", "/readyz", "/docs/**"];
const EXTRA: [(&str, &str); 7] = [
    ("interview_notes", "/api/v1/jobs/*/interviews/*/notes"),
    ("candidate_files", "/api/v1/candidates/*/attachments/**"),
    ("v2", "/api/v2/**"),
    ("admin_reports", "/admin/reports/*"),
    ("internal", "/internal/**"),
    ("search", "/api/v1/search"),
    ("webhook_events", "/webhooks/*/events"),
];

fn config_yaml() -> String {
    let mut y = String::from("upstream: \"http://127.0.0.1:3000\"\nroutes:\n  public:\n");
    for p in PUBLIC {
        y.push_str(&format!("    - \"{p}\"\n"));
    }
    y.push_str("  categories:\n");
    for r in RESOURCES {
        y.push_str(&format!("    {r}: [\"/api/v1/{r}\", \"/api/v1/{r}/**\"]\n"));
    }
    for (name, p) in EXTRA {
        y.push_str(&format!("    {name}: [\"{p}\"]\n"));
    }
    y
}

static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    assert_eq!(PUBLIC.len() + 2 * RESOURCES.len() + EXTRA.len(), 50);
    Config::from_yaml(&config_yaml()).unwrap()
});

/// Normalised paths, each with the route it must get (checked before timing). The
/// table's order is the public patterns, then the categories by name: `hit_early`
/// matches the 6th pattern (`/api/v1/applications/**`), `hit_late` the 50th (`webhook_events`).
static ROUTES: LazyLock<Vec<(Case, Route<'static>)>> = LazyLock::new(|| {
    vec![
        (case("public", "/healthz"), Route::Public),
        (
            case("hit_early", "/api/v1/applications/17"),
            Route::Category("applications"),
        ),
        (
            case("hit_late", "/webhooks/github/events"),
            Route::Category("webhook_events"),
        ),
        (
            case("hit_most_specific", "/api/v1/jobs/7/interviews/3/notes"),
            Route::Category("interview_notes"),
        ),
        (
            case("hit_deep_double_star", "/api/v1/users/42/settings/a/b/c/d"),
            Route::Category("users"),
        ),
        (case("miss_api", "/api/v1/unknown/1"), Route::Unmatched),
        (case("miss_other", "/static/js/app.js"), Route::Unmatched),
    ]
});

static ROUTE_CASES: LazyLock<Vec<&'static Case>> = LazyLock::new(|| {
    ROUTES
        .iter()
        .map(|(c, want)| {
            assert_eq!(CONFIG.route(&c.input), *want, "{}", c.input);
            c
        })
        .collect()
});

/// The most-specific match over the 50 patterns (`Policy::route`).
#[divan::bench(args = ROUTE_CASES.iter().copied())]
fn route_match_50(case: &Case) -> bool {
    CONFIG.route(black_box(&case.input)) != Route::Unmatched
}

// ------------------------------------------------------------------- key lookup

const KEY_COUNT: usize = 100_000;

struct Keys {
    set: KeySet,
    /// Presented values in the set (spread over it) and not in it.
    hits: Vec<Secret>,
    misses: Vec<Secret>,
}

/// A keys file as keygate writes it: id, name, `sha256`, `prefix`, `created_at`,
/// two categories; every tenth key with a `rate_limit`, every seventh with an
/// `expires_at`.
static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let levels = ["read", "write", "none"];
    let mut text = String::with_capacity(KEY_COUNT * 260);
    text.push_str("api_enabled: true\nkeys:\n");
    let mut hits = Vec::new();
    for i in 0..KEY_COUNT {
        let key = keygate::mint().unwrap();
        let value = key.expose();
        text.push_str(&format!(
            "- id: k{i:010x}\n  name: Integration number {i}\n  sha256: {}\n  prefix: {}\n  created_at: 2026-11-01T10:00:00Z\n  permissions:\n    candidates: {}\n    jobs: {}\n",
            KeyHash::of(value.as_bytes()).to_hex(),
            &value[..7],
            levels[i % 3],
            levels[(i + 1) % 3],
        ));
        if i % 10 == 0 {
            text.push_str("  rate_limit:\n    per_second: 20\n    burst: 40\n");
        }
        if i % 7 == 0 {
            text.push_str("  expires_at: 2030-01-01T00:00:00Z\n");
        }
        if i % (KEY_COUNT / 64) == 0 {
            hits.push(key);
        }
    }
    let set = KeySet::from_yaml(&CONFIG, &text).unwrap();
    assert_eq!(set.len(), KEY_COUNT);
    let misses: Vec<Secret> = (0..64).map(|_| keygate::mint().unwrap()).collect();
    for k in &hits {
        assert!(set.lookup(&KeyHash::of(k.expose().as_bytes())).is_some());
    }
    for k in &misses {
        assert!(set.lookup(&KeyHash::of(k.expose().as_bytes())).is_none());
    }
    Keys { set, hits, misses }
});

fn hashes(keys: &[Secret]) -> Vec<KeyHash> {
    keys.iter()
        .map(|k| KeyHash::of(k.expose().as_bytes()))
        .collect()
}

/// The set's table lookup alone (`KeySet::lookup`), the hash already made; one
/// lookup per iteration, cycling over 64 keys spread over the set.
mod key_lookup_100k {
    use super::*;

    fn run(bencher: Bencher, hashes: Vec<KeyHash>) {
        let mut i = 0;
        bencher.bench_local(|| {
            i = (i + 1) % hashes.len();
            KEYS.set.lookup(black_box(&hashes[i])).is_some()
        });
    }

    #[divan::bench]
    fn hit(bencher: Bencher) {
        run(bencher, hashes(&KEYS.hits));
    }

    #[divan::bench]
    fn miss(bencher: Bencher) {
        run(bencher, hashes(&KEYS.misses));
    }
}

/// What the data plane does with a presented value: its SHA-256
/// (`KeyHash::of`), then the lookup.
mod hash_and_lookup_100k {
    use super::*;

    fn run(bencher: Bencher, keys: &[Secret]) {
        let mut i = 0;
        bencher.bench_local(|| {
            i = (i + 1) % keys.len();
            let hash = KeyHash::of(black_box(keys[i].expose().as_bytes()));
            KEYS.set.lookup(&hash).is_some()
        });
    }

    #[divan::bench]
    fn hit(bencher: Bencher) {
        run(bencher, &KEYS.hits);
    }

    #[divan::bench]
    fn miss(bencher: Bencher) {
        run(bencher, &KEYS.misses);
    }
}

// ------------------------------------------------------------- access-log line

/// An allowed request with a key, a category and a user agent.
fn allowed() -> keygate::record::Record {
    let ip: IpAddr = "10.20.30.40".parse().unwrap();
    let mut r = keygate::bench::record(
        Method::GET,
        HeaderValue::from_static("7f3a9c1e-5b2d-4e8f-9a6b-0c1d2e3f4a5b"),
        ip,
        Some(HeaderValue::from_static(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
        )),
    );
    r.path = "/api/v1/candidates/12345/notes".into();
    r.status = 200;
    r.decision = Decision::Allowed;
    r.category = Some("candidates".into());
    r.duration = Duration::from_micros(1_843);
    r.upstream = Some(Duration::from_micros(1_512));
    r.bytes_in = 312;
    r.bytes_out = 18_204;
    let hash = KeyHash::of(KEYS.hits[3].expose().as_bytes());
    assert!(keygate::bench::set_key(&mut r, &KEYS.set, &hash));
    r
}

/// A refused request: no key, no category, no user agent, an IPv6 client.
fn refused() -> keygate::record::Record {
    let ip: IpAddr = "2001:db8::8a2e:370:7334".parse().unwrap();
    let mut r = keygate::bench::record(
        Method::POST,
        HeaderValue::from_static("0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"),
        ip,
        None,
    );
    r.path = "/api/v1/jobs".into();
    r.status = 401;
    r.decision = Decision::Unauthenticated;
    r.reason = Some("invalid_api_key");
    r.duration = Duration::from_micros(61);
    r
}

/// The JSON line the access log writes per request (`accesslog::with_line`, into
/// the thread's buffer), its length returned.
mod access_log_line {
    use super::*;

    #[divan::bench]
    fn allowed(bencher: Bencher) {
        let r = super::allowed();
        bencher.bench_local(|| keygate::bench::access_log_line(black_box(&r), str::len));
    }

    #[divan::bench]
    fn refused(bencher: Bencher) {
        let r = super::refused();
        bencher.bench_local(|| keygate::bench::access_log_line(black_box(&r), str::len));
    }
}
