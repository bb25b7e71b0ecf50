//! The layout rule of the code map (README "Code map"): every import between
//! top-level modules points down the list of planes, and no two files import each
//! other, directly or through others. Read from the source text: every
//! `crate::a::b` path in a file is an import arrow to the file that defines it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, highest first: a module may import only those after it.
/// Modules on one line (a slice) are peers that must not import each other.
const ORDER: &[&[&str]] = &[
    // `bench`: wrappers for `benches/` (not API), a peer of `cli` at the top.
    &["cli", "bench"],
    &["gateway"],
    &["control"],
    &["proxy"],
    &["server"],
    &["observe"],
    &["keys"],
    &["config"],
    &["policy", "ratelimit", "pool"],
];

fn rank(top: &str) -> usize {
    ORDER
        .iter()
        .position(|l| l.contains(&top))
        .unwrap_or_else(|| panic!("module {top} is not in the layout order"))
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/proxy/pipeline.rs` → `["proxy", "pipeline"]`; `src/proxy.rs` → `["proxy"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect()
}

/// Every `crate::…` path in the text, as segments, and every `super::…` path
/// resolved against `module` (the file's own module path).
fn crate_paths(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out = paths_after(text, "crate::");
    if module.len() > 1 {
        let parent = &module[..module.len() - 1];
        for p in paths_after(text, "super::") {
            let mut full = parent.to_vec();
            full.extend(p);
            out.push(full);
        }
    }
    out
}

fn paths_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let segs: Vec<String> = rest[..end]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if !segs.is_empty() {
            out.push(segs);
        }
    }
    out
}

#[test]
fn imports_point_down_and_files_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files
        .iter()
        .map(|f| module_of(&src, f))
        .filter(|m| m != &["lib"] && m != &["main"])
        .collect();
    let mut bad = Vec::new();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for f in &files {
        let from = module_of(&src, f);
        if from == ["lib"] || from == ["main"] {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        for path in crate_paths(&text, &from) {
            // The longest prefix of the path that is a module file is the target.
            let Some(to) = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains(p))
            else {
                continue;
            };
            if to == from || from.starts_with(&to) {
                continue; // itself, or its own parent module's items
            }
            let (a, b) = (&from[0], &to[0]);
            if a != b && rank(a) >= rank(b) {
                bad.push(format!(
                    "{} imports {} (up or sideways)",
                    from.join("/"),
                    to.join("/")
                ));
            }
            edges.entry(from.clone()).or_default().insert(to);
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the layout:\n{}",
        bad.join("\n")
    );
    // No circle between files: depth-first search for a back edge.
    fn visit(
        n: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let i = stack.iter().position(|s| s == n).unwrap();
                let mut c = stack[i..].to_vec();
                c.push(n.clone());
                return Some(c);
            }
            _ => {}
        }
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        let mut stack = Vec::new();
        if let Some(c) = visit(n, &edges, &mut state, &mut stack) {
            let names: Vec<String> = c.iter().map(|m| m.join("/")).collect();
            panic!("import circle: {}", names.join(" → "));
        }
    }
}
