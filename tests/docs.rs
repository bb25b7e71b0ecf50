//! The documentation matches the repository and the code:
//!
//! * every relative link in README.md, CONTRIBUTING.md, CHANGELOG.md and docs/*.md
//!   resolves to a file (and heading) inside the repository;
//! * docs/configuration.md documents exactly the fields of the config's serde mirror
//!   (fields marked "(new)" may be missing from the code) with the code's defaults, and
//!   every field of config.example.yaml;
//! * docs/metrics.md names exactly the `keygate_*` families that the real binary
//!   exports, with their labels (families marked "(new)" may be missing; those marked
//!   "(cluster mode)" must be registered by the cluster, which this test does not run);
//! * the Grafana dashboard parses and every metric its queries (and the alerting
//!   rules) name is exported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    read_path(&root().join(rel))
}

fn read_path(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------
// Links

/// The Markdown files whose links are checked, relative to the repository root.
fn markdown_files() -> Vec<String> {
    let mut files: Vec<String> = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            files.push(format!("docs/{name}"));
        }
    }
    files.sort();
    files
}

/// Lines outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push(line);
        }
    }
    out
}

/// The targets of inline links `[text](target)`, outside code blocks.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose_lines(text) {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].trim().to_string());
            rest = &after[end..];
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose_lines(text)
        .iter()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

#[test]
fn links_resolve_inside_the_repository() {
    let root = root().canonicalize().unwrap();
    let mut problems = Vec::new();
    for file in markdown_files() {
        let text = read(&file);
        for bad in ["../shared", "SPEC §", "SPEC.md", "STYLE.md"] {
            if text.contains(bad) {
                problems.push(format!(
                    "{file}: mentions {bad:?}, which is not in the repository"
                ));
            }
        }
        let dir = root.join(&file).parent().unwrap().to_path_buf();
        for target in link_targets(&text) {
            if target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            // `/x` is relative to the repository root (as code hosts render it).
            let resolved = if path.is_empty() {
                root.join(&file)
            } else if let Some(from_root) = path.strip_prefix('/') {
                root.join(from_root)
            } else {
                dir.join(path)
            };
            let Ok(real) = resolved.canonicalize() else {
                problems.push(format!("{file}: link {target:?} does not resolve"));
                continue;
            };
            if !real.starts_with(&root) {
                problems.push(format!("{file}: link {target:?} leaves the repository"));
                continue;
            }
            if let Some(a) = anchor
                && real.extension().is_some_and(|e| e == "md")
            {
                let heads = anchors(&std::fs::read_to_string(&real).unwrap());
                if !heads.contains(a) {
                    problems.push(format!("{file}: link {target:?}: no heading #{a}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_link_checker_sees_links() {
    let t = "see [a](docs/x.md) and [b](#y)\n```\n[c](z)\n```\n";
    assert_eq!(link_targets(t), vec!["docs/x.md", "#y"]);
    assert_eq!(slug("keygate's own answers"), "keygates-own-answers");
    assert_eq!(slug("The `serde_yaml` crate"), "the-serde_yaml-crate");
}

// ---------------------------------------------------------------------------------
// Config fields

/// Fields documented in docs/configuration.md: dotted name → marked "(new)".
fn documented_fields() -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    for line in read("docs/configuration.md").lines() {
        let Some(rest) = line.strip_prefix("| `") else {
            continue;
        };
        let Some(end) = rest.find('`') else { continue };
        let name = &rest[..end];
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
        {
            let new = line.contains("**(new)**");
            assert!(
                out.insert(name.to_string(), new).is_none(),
                "{name} documented twice"
            );
        }
    }
    out
}

/// The file of the config's serde mirror (`struct ConfigFile`), wherever it lives.
fn serde_mirror() -> (PathBuf, String) {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(&p, found);
            } else if p.extension().is_some_and(|e| e == "rs")
                && std::fs::read_to_string(&p)
                    .unwrap()
                    .contains("struct ConfigFile {")
            {
                found.push(p);
            }
        }
    }
    let mut found = Vec::new();
    walk(&root().join("src"), &mut found);
    assert_eq!(
        found.len(),
        1,
        "one file defines struct ConfigFile: {found:?}"
    );
    let text = std::fs::read_to_string(&found[0]).unwrap();
    (found[0].clone(), text)
}

/// Struct name → its fields (name, type) in a serde mirror.
fn structs(src: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Vec<(String, String)>)> = None;
    for line in src.lines() {
        let t = line.trim();
        if let Some((name, fields)) = &mut current {
            if t == "}" {
                out.insert(name.clone(), std::mem::take(fields));
                current = None;
            } else if let Some(f) = t
                .strip_prefix("pub(crate) ")
                .or_else(|| t.strip_prefix("pub "))
                && let Some((field, ty)) = f.split_once(':')
            {
                fields.push((
                    field.trim().to_string(),
                    ty.trim().trim_end_matches(',').to_string(),
                ));
            }
            continue;
        }
        if let Some(rest) = t
            .strip_prefix("pub(crate) struct ")
            .or_else(|| t.strip_prefix("pub struct "))
            && let Some(name) = rest.strip_suffix(" {")
        {
            current = Some((name.trim().to_string(), Vec::new()));
        }
    }
    out
}

/// Leaf fields of the serde mirror, as dotted names.
fn code_fields() -> BTreeSet<String> {
    let (mirror, src) = serde_mirror();
    let mut structs = structs(&src);
    // A section may live in a sibling module (a field of type
    // `super::webhooks::WebhooksFile`): read that module's structs too, and name types
    // by their last path segment.
    let dir = mirror.parent().unwrap();
    let modules: BTreeSet<String> = structs
        .values()
        .flatten()
        .filter_map(|(_, ty)| ty.split("super::").nth(1)?.split_once("::"))
        .map(|(module, _)| module.to_string())
        .collect();
    for module in modules {
        let text = read_path(&dir.join(format!("{module}.rs")));
        for (name, fields) in self::structs(&text) {
            structs.entry(name).or_insert(fields);
        }
    }
    fn leaves(
        structs: &BTreeMap<String, Vec<(String, String)>>,
        name: &str,
        prefix: &str,
        out: &mut BTreeSet<String>,
    ) {
        for (field, ty) in &structs[name] {
            let path = format!("{prefix}{field}");
            let inner = ty
                .strip_prefix("Option<")
                .and_then(|t| t.strip_suffix('>'))
                .unwrap_or(ty);
            let inner = inner.rsplit("::").next().unwrap_or(inner);
            if structs.contains_key(inner) {
                leaves(structs, inner, &format!("{path}."), out);
            } else {
                out.insert(path);
            }
        }
    }
    let mut out = BTreeSet::new();
    leaves(&structs, "ConfigFile", "", &mut out);
    out
}

/// Leaf fields of config.example.yaml (the category names are the user's).
fn example_fields() -> BTreeSet<String> {
    fn walk(v: &serde_yaml::Value, prefix: &str, out: &mut BTreeSet<String>) {
        match v.as_mapping() {
            Some(m) if prefix != "routes.categories" => {
                for (k, v) in m {
                    let k = k.as_str().unwrap();
                    let path = if prefix.is_empty() {
                        k.to_string()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(v, &path, out);
                }
            }
            _ => {
                out.insert(prefix.to_string());
            }
        }
    }
    let v: serde_yaml::Value = serde_yaml::from_str(&read("config.example.yaml")).unwrap();
    let mut out = BTreeSet::new();
    walk(&v, "", &mut out);
    out
}

#[test]
fn configuration_reference_matches_the_code() {
    let documented = documented_fields();
    let code = code_fields();
    assert!(code.len() > 30, "the serde mirror was read: {code:?}");
    let (mirror, _) = serde_mirror();
    let undocumented: Vec<&String> = code
        .iter()
        .filter(|f| !documented.contains_key(*f))
        .collect();
    assert!(
        undocumented.is_empty(),
        "fields of {} missing from docs/configuration.md: {undocumented:?}",
        mirror.display()
    );
    let unknown: Vec<&String> = documented
        .iter()
        .filter(|(f, new)| !**new && !code.contains(*f))
        .map(|(f, _)| f)
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents fields the code does not have (mark them **(new)** \
         if they are being added): {unknown:?}"
    );
    let example = example_fields();
    let missing: Vec<&String> = example
        .iter()
        .filter(|f| !documented.contains_key(*f))
        .collect();
    assert!(
        missing.is_empty(),
        "fields of config.example.yaml missing from docs/configuration.md: {missing:?}"
    );
}

/// The default each current field of docs/configuration.md documents, as YAML text:
/// the first `value` of the default column (rows without one have no default).
fn documented_defaults() -> Vec<(String, String)> {
    let new = documented_fields();
    let mut out = Vec::new();
    for line in read("docs/configuration.md").lines() {
        let cells: Vec<&str> = line.split(" | ").collect();
        let Some(field) = cells
            .first()
            .and_then(|c| c.strip_prefix("| `"))
            .and_then(|c| c.strip_suffix('`'))
        else {
            continue;
        };
        if new.get(field) != Some(&false) || cells.len() < 5 {
            continue;
        }
        let default = cells[2];
        if let Some(rest) = default.strip_prefix('`')
            && let Some(end) = rest.find('`')
        {
            out.push((field.to_string(), rest[..end].to_string()));
        }
    }
    out
}

// The config's serde mirror, compiled into this test from the crate's own source (the
// crate keeps it private): its defaults are the ones the docs must state. `file.rs`
// finds `units` as `super::units`, here the test's root.
#[allow(dead_code, unreachable_pub)]
#[path = "../src/config/file.rs"]
mod mirror;
#[allow(dead_code, unreachable_pub)]
#[path = "../src/config/units.rs"]
mod units;
#[allow(dead_code, unreachable_pub)]
#[path = "../src/config/webhooks.rs"]
mod webhooks;

/// A config.yaml that sets every documented default explicitly reads exactly as one
/// that relies on the code's defaults.
#[test]
fn documented_defaults_are_the_code_defaults() {
    let mut doc = serde_yaml::Mapping::new();
    let defaults = documented_defaults();
    assert!(defaults.len() > 30, "defaults were read: {defaults:?}");
    for (field, value) in &defaults {
        let value: serde_yaml::Value = serde_yaml::from_str(value)
            .unwrap_or_else(|e| panic!("{field}: default {value:?} is not YAML: {e}"));
        let parts: Vec<&str> = field.split('.').collect();
        let mut map = &mut doc;
        for part in &parts[..parts.len() - 1] {
            map = map
                .entry(serde_yaml::Value::from(*part))
                .or_insert_with(|| serde_yaml::Mapping::new().into())
                .as_mapping_mut()
                .unwrap();
        }
        map.insert(serde_yaml::Value::from(parts[parts.len() - 1]), value);
    }
    doc.insert("upstream".into(), "http://127.0.0.1:3000".into());
    // `cluster:` is optional and, once present, requires `redis_url` (which has no
    // default): compare both sides with a section holding only that field.
    let mut implicit_text = "upstream: http://127.0.0.1:3000\n".to_string();
    if let Some(cluster) = doc.get_mut("cluster").and_then(|c| c.as_mapping_mut()) {
        cluster.insert("redis_url".into(), "redis://127.0.0.1:6379/0".into());
        implicit_text.push_str("cluster:\n  redis_url: redis://127.0.0.1:6379/0\n");
    }
    let explicit_text = serde_yaml::to_string(&doc).unwrap();
    let explicit: mirror::ConfigFile = serde_yaml::from_str(&explicit_text)
        .unwrap_or_else(|e| panic!("the documented defaults do not parse: {e}\n{explicit_text}"));
    let implicit: mirror::ConfigFile = serde_yaml::from_str(&implicit_text).unwrap();
    assert_eq!(
        format!("{implicit:#?}"),
        format!("{explicit:#?}"),
        "docs/configuration.md's defaults differ from the code's:\n{explicit_text}"
    );
    // And they pass the full validation.
    let dir = std::env::temp_dir().join(format!("keygate-docs-defaults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.yaml"), &explicit_text).unwrap();
    std::fs::write(dir.join("keys.yaml"), "keys: []\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("-c")
        .arg(dir.join("config.yaml"))
        .arg("check")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "keygate check refuses the documented defaults: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------
// Metrics: the real binary's scrape

/// The spawned gateway; killed on drop.
struct Gateway {
    child: Child,
    public: SocketAddr,
    metrics: SocketAddr,
    dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const SECRET: &str = "docs-test-operator-secret-0123456789abcdef";

fn start_gateway() -> Gateway {
    let dir = std::env::temp_dir().join(format!(
        "keygate-docs-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // Nothing listens on the upstream's port (bound once, then closed): a request with
    // a key gets 502.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "listen: \"127.0.0.1:0\"\n\
             upstream: \"http://{closed}\"\n\
             metrics: {{ listen: \"127.0.0.1:0\" }}\n\
             admin: {{ listen: \"127.0.0.1:0\" }}\n\
             routes:\n  categories:\n    things: [\"/things\", \"/things/**\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("keys.yaml"),
        format!(
            "keys:\n  - id: kdocs\n    name: Docs\n    secret: \"{SECRET}\"\n    \
             permissions: {{ things: read }}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("-c")
        .arg(dir.join("config.yaml"))
        .arg("serve")
        .env_remove("KEYGATE_ADMIN_TOKEN")
        .env("KEYGATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let field = |name: &str| -> Option<SocketAddr> {
                let i = line.find(name)? + name.len();
                line[i..].split_whitespace().next()?.parse().ok()
            };
            if line.contains("keygate is serving")
                && let (Some(p), Some(m), Some(tx)) =
                    (field("public_addr="), field("metrics_addr="), tx.take())
            {
                let _ = tx.send((p, m));
            }
        }
    });
    let started = rx.recv_timeout(Duration::from_secs(20));
    let mut gw = Gateway {
        child,
        public: "127.0.0.1:1".parse().unwrap(),
        metrics: "127.0.0.1:1".parse().unwrap(),
        dir,
    };
    let (public, metrics) = started.expect("keygate did not start");
    gw.public = public;
    gw.metrics = metrics;
    gw
}

/// One HTTP/1.1 exchange; returns the whole response.
fn get(addr: SocketAddr, path: &str, headers: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// What a scrape says about each family: its type and the label names seen.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
}

fn scrape() -> BTreeMap<String, Family> {
    let gw = start_gateway();
    // Traffic, so that labelled families have series: a 401 and a 502 with a key.
    assert!(get(gw.public, "/things/1", "").starts_with("HTTP/1.1 401"));
    let with_key = get(gw.public, "/things/1", &format!("X-API-Key: {SECRET}\r\n"));
    assert!(with_key.starts_with("HTTP/1.1 502"), "{with_key}");
    let mut text = String::new();
    // The record is written when the response is complete; poll for it.
    for _ in 0..100 {
        text = get(gw.metrics, "/metrics", "");
        if text.contains("keygate_key_requests_total{") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.entry(name.to_string()).or_default().kind = kind.to_string();
        }
    }
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let sample = &line[..name_end];
        let family = [sample, base_name(sample)]
            .into_iter()
            .find(|n| families.contains_key(*n))
            .unwrap_or_else(|| panic!("sample {sample} of no family"));
        if let Some(labels) = line[name_end..].strip_prefix('{') {
            let labels = &labels[..labels.find('}').unwrap()];
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let label = pair.split('=').next().unwrap();
                if label != "le" {
                    families
                        .get_mut(family)
                        .unwrap()
                        .labels
                        .insert(label.to_string());
                }
            }
        }
    }
    families
}

/// A histogram's family name for one of its series.
fn base_name(sample: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| sample.strip_suffix(s))
        .unwrap_or(sample)
}

/// Metric names (`keygate_…` or `process_…`) in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["keygate_", "process_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let before = text.len() - rest.len() + i;
            let preceded_by_ident = text[..before]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            if !preceded_by_ident && name.len() > prefix.len() {
                out.insert(name);
            }
        }
    }
    out
}

/// A name as it appears in a query or the docs → the family it belongs to.
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, Family>) -> Option<&'a str> {
    if families.contains_key(name) {
        return Some(name);
    }
    let base = base_name(name);
    families
        .get(base)
        .filter(|f| f.kind == "histogram")
        .map(|_| base)
}

/// docs/metrics.md's table: family → (documented label names, marked "(new)").
fn documented_families() -> BTreeMap<String, (BTreeSet<String>, bool)> {
    let mut out = BTreeMap::new();
    for line in read("docs/metrics.md").lines() {
        let Some(rest) = line.strip_prefix("| `keygate_") else {
            continue;
        };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = format!("keygate_{}", &rest[..rest.find('`').unwrap()]);
        // Label cell: backticked names, with their values in parentheses.
        let mut labels = BTreeSet::new();
        let mut depth = 0;
        let mut in_tick = false;
        let mut cur = String::new();
        for c in cells[3].chars() {
            match c {
                '(' if !in_tick => depth += 1,
                ')' if !in_tick => depth -= 1,
                '`' => {
                    if in_tick && depth == 0 {
                        labels.insert(std::mem::take(&mut cur));
                    }
                    cur.clear();
                    in_tick = !in_tick;
                }
                c if in_tick => cur.push(c),
                _ => {}
            }
        }
        out.insert(name, (labels, line.contains("**(new)**")));
    }
    out
}

/// Families only a gateway with a `cluster:` section registers (the scraped binary
/// runs alone, without a Redis): the rows of docs/metrics.md marked "(cluster mode)",
/// each checked against the names src/control/cluster/metrics.rs registers, with the
/// type the table gives.
fn cluster_families() -> BTreeMap<String, Family> {
    let source = read("src/control/cluster/metrics.rs");
    let table = documented_families();
    let mut out = BTreeMap::new();
    for line in read("docs/metrics.md").lines() {
        if !line.starts_with("| `keygate_") || !line.contains("**(cluster mode)**") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`');
        let short = name.strip_prefix("keygate_").unwrap();
        assert!(
            source.contains(&format!("\"{short}\"")),
            "docs/metrics.md marks {name} as cluster mode, but the cluster does not register it"
        );
        out.insert(
            name.to_string(),
            Family {
                kind: cells[2].to_string(),
                labels: table[name].0.clone(),
            },
        );
    }
    out
}

#[test]
fn metrics_reference_and_dashboard_match_the_binary() {
    let mut families = scrape();
    let exported: BTreeSet<String> = families
        .keys()
        .filter(|n| n.starts_with("keygate_"))
        .cloned()
        .collect();
    assert!(exported.len() >= 15, "scrape: {families:?}");
    let cluster = cluster_families();
    assert!(
        cluster.len() >= 5,
        "cluster families were read: {cluster:?}"
    );
    for (name, family) in cluster {
        assert!(
            !exported.contains(&name),
            "{name} is exported without a cluster: do not mark it (cluster mode)"
        );
        families.insert(name, family);
    }
    let exported: BTreeSet<&str> = exported.iter().map(String::as_str).collect();

    // docs/metrics.md: the table names every family, with its labels.
    let table = documented_families();
    for name in &exported {
        let Some((labels, _)) = table.get(*name) else {
            panic!("{name} is exported but not in docs/metrics.md's table");
        };
        assert_eq!(
            labels, &families[*name].labels,
            "labels of {name} in docs/metrics.md"
        );
    }
    // Every name mentioned anywhere in docs/metrics.md is exported, except families
    // marked "(new)" (being added; this build may not have them yet).
    for name in metric_names(&read("docs/metrics.md")) {
        let new = table.get(&name).is_some_and(|(_, new)| *new);
        assert!(
            new || family_of(&name, &families).is_some(),
            "docs/metrics.md names {name}, which keygate does not export (mark it **(new)** \
             if it is being added)"
        );
    }

    // The dashboard: valid JSON; every metric in a query is exported.
    let dash: serde_json::Value = serde_json::from_str(&read("deploy/grafana/keygate.json"))
        .expect("deploy/grafana/keygate.json is JSON");
    let mut queries = Vec::new();
    fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match v {
                        serde_json::Value::String(s) if k == "expr" || k == "query" => {
                            out.push(s.clone());
                        }
                        _ => collect(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dash, &mut queries);
    assert!(queries.len() >= 8, "the dashboard has queries: {queries:?}");
    let mut used = BTreeSet::new();
    for q in &queries {
        for name in metric_names(q) {
            let family = family_of(&name, &families)
                .unwrap_or_else(|| panic!("dashboard query {q:?} uses {name}, not exported"));
            used.insert(family.to_string());
        }
    }
    for needed in [
        "keygate_requests_total",
        "keygate_request_duration_seconds",
        "keygate_upstream_duration_seconds",
        "keygate_rate_limited_total",
        "keygate_reloads_total",
        "keygate_access_log_dropped_total",
    ] {
        assert!(used.contains(needed), "the dashboard shows {needed}");
    }
    assert!(
        queries
            .iter()
            .any(|q| q.contains("decision=\"upstream_error\"")),
        "the dashboard shows upstream errors"
    );

    // The alerting rules name only exported metrics too.
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&read("deploy/prometheus/alerts.yaml")).unwrap();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                assert!(
                    family_of(&name, &families).is_some(),
                    "alert {:?} uses {name}, which keygate does not export",
                    rule["alert"]
                );
            }
        }
    }
}

#[test]
fn metric_names_are_found_in_text() {
    let names = metric_names("rate(keygate_requests_total[5m]) / my_keygate_x + process_open_fds");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["keygate_requests_total", "process_open_fds"]
    );
}
