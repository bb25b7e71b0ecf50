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

fn text(out: &std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_config_lists_every_place_searched() {
    let dir = TempDir::new();
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("check")
        .current_dir(dir.path())
        .env_remove("KEYGATE_CONFIG")
        .output()
        .unwrap();
    let (code, _, err) = text(&out);
    assert_eq!(code, 1, "{err}");
    for want in [
        "-c/--config",
        "$KEYGATE_CONFIG",
        "./config.yaml",
        "/etc/keygate/config.yaml",
        "cp config.example.yaml config.yaml",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
    // $KEYGATE_CONFIG is read by the argument parser; an empty one is unset.
    dir.write(
        "gw.yaml",
        &config_yaml("127.0.0.1:3000".parse().unwrap(), ROUTES),
    );
    dir.write("keys.yaml", &keys_yaml("kg_x"));
    let run = |value: &str| {
        Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("check")
            .current_dir(dir.path())
            .env("KEYGATE_CONFIG", value)
            .output()
            .unwrap()
    };
    let (code, out, err) = text(&run("gw.yaml"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("gw.yaml"), "{out}");
    let (code, _, err) = text(&run(""));
    assert_eq!(code, 1);
    assert!(err.contains("no config found"), "{err}");
}

#[test]
fn missing_keys_file_says_how_to_create_one() {
    let dir = setup(&keys_yaml("kg_x"));
    std::fs::remove_file(dir.path().join("keys.yaml")).unwrap();
    let cfg = dir.path().join("config.yaml");
    for cmd in ["check", "serve"] {
        let (code, _, err) = text(&keygate(&["-c", cfg.to_str().unwrap(), cmd]));
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(
            err.contains("keys.yaml") && err.contains("create one with: keygate keys create"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn check_counts_in_the_singular() {
    let dir = setup(&format!(
        "keys:\n  - id: kone\n    name: One\n    secret: \"{SECRET_READ}\"\n    permissions: {{ candidates: read }}\n"
    ));
    let (code, out, err) = check(&dir);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(1 key, API on)"), "{out}");
}

#[test]
fn secret_with_a_trailing_space_is_named() {
    let dir = setup(&keys_yaml("kg_x").replace(SECRET_READ, &format!("{SECRET_READ} ")));
    let (code, _, err) = check(&dir);
    assert_eq!(code, 1);
    assert!(err.contains("trailing space"), "{err}");
}

#[test]
fn unknown_category_names_the_file_and_suggests() {
    let dir = TempDir::new();
    dir.write(
        "gateway.yaml",
        &config_yaml("127.0.0.1:3000".parse().unwrap(), ROUTES),
    );
    dir.write(
        "keys.yaml",
        &keys_yaml("kg_x").replace("{ candidates: read }", "{ candidate: read }"),
    );
    let cfg = dir.path().join("gateway.yaml");
    let (code, _, err) = text(&keygate(&["-c", cfg.to_str().unwrap(), "check"]));
    assert_eq!(code, 1);
    assert!(err.contains("gateway.yaml routes.categories"), "{err}");
    assert!(err.contains("did you mean \"candidates\"?"), "{err}");
}

#[test]
fn delete_without_a_terminal_needs_yes() {
    let dir = setup(&keys_yaml("kg_x"));
    let cfg = dir.path().join("config.yaml");
    // `output()` gives the child no terminal on standard input.
    let (code, _, err) = text(&cli(&cfg, &["keys", "delete", "Zapier"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert!(
        std::fs::read_to_string(dir.path().join("keys.yaml"))
            .unwrap()
            .contains("Zapier"),
        "not deleted"
    );
    let out = stdout_ok(&cli(&cfg, &["keys", "delete", "Zapier", "--yes"]));
    assert!(out.contains("Deleted key 'Zapier'"), "{out}");
}

#[test]
fn api_off_says_when_it_applies() {
    let dir = setup(&keys_yaml("kg_x"));
    let cfg = dir.path().join("config.yaml");
    let out = stdout_ok(&cli(&cfg, &["api", "off"]));
    assert!(out.contains("written to"), "{out}");
    assert!(out.contains("401 api_disabled within 2 s"), "{out}");
    assert!(
        std::fs::read_to_string(dir.path().join("keys.yaml"))
            .unwrap()
            .contains("api_enabled: false")
    );
}

#[test]
fn audit_actor_is_the_user_name_without_user() {
    let dir = setup(&keys_yaml("kg_x"));
    let cfg = dir.path().join("config.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "keys",
            "create",
            "--name",
            "Audited",
        ])
        .env_remove("USER")
        .env_remove("LOGNAME")
        .env_remove("KEYGATE_SEAL_KEY")
        .env_remove("KEYGATE_SEAL_KEY_FILE")
        .output()
        .unwrap();
    stdout_ok(&out);
    // The name /etc/passwd gives this process's uid.
    let uid = Command::new("id").arg("-u").output().unwrap();
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let name = passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2) == Some(&uid.as_str())).then(|| f[0].to_string())
        })
        .expect("this user is in /etc/passwd");
    let audit = std::fs::read_to_string(dir.path().join("data/audit.log")).unwrap();
    assert!(
        audit.contains(&format!("\"actor\":\"cli:{name}\"")),
        "{audit}"
    );
}

#[test]
fn cli_conventions() {
    let (code, out, _) = text(&keygate(&["--version"]));
    assert_eq!(code, 0);
    // `keygate 0.1.0 (abc1234)`, or `(unknown)` outside a git checkout.
    assert!(
        out.starts_with(&format!("keygate {} (", env!("CARGO_PKG_VERSION")))
            && out.trim_end().ends_with(')'),
        "{out}"
    );
    let (code, out, err) = text(&keygate(&["completions", "bash"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("_keygate"), "{out}");
    let (code, out, err) = text(&keygate(&["man"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".TH keygate 1"), "{out}");
    let (code, out, err) = text(&keygate(&["help", "--help"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Usage: keygate help"), "{out}");
    let (code, out, err) = text(&keygate(&["help", "keys", "create"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("--name"), "{out}");
    let (code, out, _) = text(&keygate(&["demo", "--help"]));
    assert_eq!(code, 0);
    assert!(!out.contains("--config"), "{out}");
    // The fatal error as one JSON line, by flag or by $KEYGATE_LOG_FORMAT.
    let (code, _, err) = text(&keygate(&[
        "--log-format",
        "json",
        "-c",
        "/nonexistent/keygate.yaml",
        "check",
    ]));
    assert_eq!(code, 1);
    let line: serde_json::Value = serde_json::from_str(err.trim()).expect("one JSON line");
    assert_eq!(line["level"], "ERROR");
    assert!(
        line["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/keygate.yaml")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["-c", "/nonexistent/keygate.yaml", "check"])
        .env("KEYGATE_LOG_FORMAT", "json")
        .output()
        .unwrap();
    let (_, _, err) = text(&out);
    assert!(err.trim().starts_with('{'), "{err}");
}

#[test]
fn serve_says_what_is_wrong_once() {
    // An upstream nobody listens on, a short admin token, /readyz checking upstream.
    let dir = TempDir::new();
    let cfg = dir.write(
        "config.yaml",
        &config_yaml("127.0.0.1:1".parse().unwrap(), ROUTES)
            .replace("metrics:\n", "metrics:\n  readyz_checks_upstream: true\n"),
    );
    dir.write("keys.yaml", &keys_yaml("kg_x"));
    let gw = Spawned::start_with_env(&cfg, &[("KEYGATE_ADMIN_TOKEN", "short")]);
    let ready = http_get(gw.metrics, "/readyz", None);
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains("upstream unreachable"), "{ready}");
    for _ in 0..3 {
        let r = http_get(gw.public, "/api/v1/candidates", Some(SECRET_READ));
        assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = gw.stderr.lock().unwrap().clone();
        if log.contains("not reachable at start") && log.contains("not answering")
            || std::time::Instant::now() > deadline
        {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(log.contains("not reachable at start"), "{log}");
    assert_eq!(
        log.matches("the upstream is not answering").count(),
        1,
        "rate-limited: {log}"
    );
    let admin: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("admin API off"))
        .collect();
    assert_eq!(admin.len(), 1, "one line about the admin API: {log}");
    assert!(
        admin[0].contains("the admin token is 5 characters, at least 16"),
        "{log}"
    );
}

fn http_get(addr: std::net::SocketAddr, path: &str, auth: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: Bearer {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn per_key_series_can_be_turned_off() {
    let metrics_of = |per_key: bool| -> String {
        let dir = TempDir::new();
        let cfg = dir.write(
            "config.yaml",
            &config_yaml("127.0.0.1:1".parse().unwrap(), ROUTES).replace(
                "metrics:\n",
                &format!("metrics:\n  per_key_series: {per_key}\n"),
            ),
        );
        dir.write("keys.yaml", &keys_yaml("kg_x"));
        let gw = Spawned::start(&cfg);
        // A key's request (502: nobody listens upstream) and one with no key (401).
        assert!(http_get(gw.public, "/api/v1/candidates", Some(SECRET_READ)).contains(" 502 "));
        assert!(http_get(gw.public, "/api/v1/candidates", None).contains(" 401 "));
        http_get(gw.metrics, "/metrics", None)
    };
    let on = metrics_of(true);
    assert!(on.contains("keygate_key_info{"), "{on}");
    assert!(on.contains("keygate_key_requests_total{"), "{on}");
    let off = metrics_of(false);
    assert!(!off.contains("keygate_key_info{"), "{off}");
    assert!(!off.contains("keygate_key_requests_total{"), "{off}");
    // No category is an empty label value: a category may be called "none".
    assert!(off.contains("category=\"\""), "{off}");
    assert!(!off.contains("category=\"none\""), "{off}");
}
