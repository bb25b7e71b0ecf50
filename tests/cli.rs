//! The command line: `keygate check` on good and bad files, `--help`, and the
//! shipped config.example.yaml.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::*;

fn keygate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .env_remove("KEYGATE_CONFIG")
        .output()
        .unwrap()
}

fn check(dir: &TempDir) -> (i32, String, String) {
    let cfg = dir.path().join("config.yaml");
    let out = keygate(&["-c", cfg.to_str().unwrap(), "check"]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn setup(keys: &str) -> TempDir {
    let dir = TempDir::new();
    dir.write(
        "config.yaml",
        &config_yaml("127.0.0.1:3000".parse().unwrap(), ROUTES),
    );
    dir.write("keys.yaml", keys);
    dir
}

#[test]
fn check_accepts_valid_files() {
    let dir = setup(&keys_yaml("kg_x"));
    let (code, out, err) = check(&dir);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("6 keys"), "{out}");
}

#[test]
fn check_rejects_each_kind_of_bad_file() {
    let good = keys_yaml("kg_x");
    let cases = [
        (
            good.replace("{ candidates: read }", "{ candidates: admin }"),
            "permissions.candidates: unknown level \"admin\"",
        ),
        (
            good.replace("{ candidates: read }", "{ reports: read }"),
            "permissions.reports: unknown category",
        ),
        (
            good.replace("name: Slow Poke", "name: zapier"),
            "already used",
        ),
        (good.replace(SECRET_READ, "too-short"), "secret:"),
        ("keys:\n  - id: [broken\n".to_string(), "keys.yaml:"),
    ];
    for (keys, want) in cases {
        let dir = setup(&keys);
        let (code, _, err) = check(&dir);
        assert_eq!(code, 1, "{want}: {err}");
        assert!(err.contains(want), "want {want:?} in {err:?}");
        let at = err.find("keys.yaml:").expect("names the file");
        assert!(
            err[at + "keys.yaml:".len()..].starts_with(|c: char| c.is_ascii_digit()),
            "names the line: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn check_reports_config_line() {
    let dir = setup(&keys_yaml("kg_x"));
    dir.write(
        "config.yaml",
        "upstream: http://127.0.0.1:1\nlimits:\n  max_body_bytse: 5\n",
    );
    let (code, _, err) = check(&dir);
    assert_eq!(code, 1);
    assert!(err.contains("config.yaml:3:"), "{err}");
    assert!(err.contains("max_body_bytse"), "{err}");
}

#[test]
fn example_config_is_valid() {
    let dir = TempDir::new();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
            .unwrap();
    dir.write("config.yaml", &example);
    dir.write("keys.yaml", &keys_yaml("kg_x"));
    let (code, out, err) = check(&dir);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 categories"), "{out}");
}

#[test]
fn help_lists_commands() {
    let out = keygate(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "check", "--config"] {
        assert!(text.contains(cmd), "{cmd} in {text}");
    }
    let out = keygate(&["nonsense"]);
    assert!(!out.status.success());
}

#[test]
fn serve_with_missing_config_fails_clearly() {
    let out = keygate(&["-c", "/nonexistent/keygate.yaml", "serve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/keygate.yaml") && err.contains("cannot read"),
        "{err}"
    );
}
