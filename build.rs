//! Build script: records the git revision for `keygate --version` ("unknown" outside
//! a git checkout or without git; nothing here touches the network).

use std::process::Command;

fn main() {
    // An image build has no .git: it passes the revision as $KEYGATE_REVISION.
    println!("cargo:rerun-if-env-changed=KEYGATE_REVISION");
    let given = std::env::var("KEYGATE_REVISION")
        .ok()
        .filter(|r| !r.is_empty() && r != "unknown");
    let rev = given
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=KEYGATE_GIT_REV={rev}");
    watch_head();
    println!("cargo:rerun-if-changed=build.rs");
}

/// `git rev-parse --short HEAD`, when git and a checkout are there.
fn git_revision() -> Option<String> {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Rebuild when HEAD moves: `HEAD` changes on a checkout, `logs/HEAD` (the reflog)
/// on every commit. Paths that do not exist are not watched (cargo would rerun this
/// script on every build).
fn watch_head() {
    for name in ["HEAD", "logs/HEAD"] {
        let path = Command::new("git")
            .args(["rev-parse", "--git-path", name])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|p| p.trim().to_string());
        if let Some(p) = path.filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
