//! The shipped deployment examples are valid keygate configuration: the config in the
//! Kubernetes ConfigMap with the keys in the Secret, and the compose folder's files,
//! pass `keygate check`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::TempDir;

fn manifest(name: &str) -> serde_yaml::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes")
        .join(name);
    serde_yaml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn check(dir: &TempDir) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("-c")
        .arg(dir.path().join("config.yaml"))
        .arg("check")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn configmap_and_secret_pass_check() {
    let cm = manifest("configmap.yaml");
    let secret = manifest("secret.yaml");
    let config = cm["data"]["config.yaml"].as_str().unwrap();
    let keys = secret["stringData"]["keys.yaml"].as_str().unwrap();
    // The pod paths become paths in a temporary folder; nothing else changes.
    let dir = TempDir::new();
    let root = dir.path().display().to_string();
    dir.write(
        "config.yaml",
        &config
            .replace("/etc/keygate/keys/keys.yaml", &format!("{root}/keys.yaml"))
            .replace("/var/lib/keygate/state", &format!("{root}/state"))
            .replace("/var/log/keygate", &format!("{root}/logs")),
    );
    dir.write("keys.yaml", keys);
    let (ok, out) = check(&dir);
    assert!(ok, "{out}");
    assert!(
        out.contains("3 categories") && out.contains("2 keys"),
        "{out}"
    );
    // The deployment mounts what the config names.
    let deploy = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/deployment.yaml"),
    )
    .unwrap();
    assert!(
        deploy.contains("mountPath: /etc/keygate/keys")
            && config.contains("/etc/keygate/keys/keys.yaml")
    );
    assert!(deploy.contains("/etc/keygate/config/config.yaml"));
}

#[test]
fn compose_files_pass_check() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/keygate");
    let dir = TempDir::new();
    let root = dir.path().display().to_string();
    let config = std::fs::read_to_string(src.join("config.yaml")).unwrap();
    dir.write(
        "config.yaml",
        &config
            .replace("/etc/keygate/keys.yaml", &format!("{root}/keys.yaml"))
            .replace("/var/lib/keygate", &format!("{root}/state"))
            .replace("/var/log/keygate", &format!("{root}/logs")),
    );
    dir.write(
        "keys.yaml",
        &std::fs::read_to_string(src.join("keys.yaml")).unwrap(),
    );
    let (ok, out) = check(&dir);
    assert!(ok, "{out}");
}
