//! Key lifecycle with a running gateway: CLI changes apply within 2 s, the keys file
//! is followed through every way it can change, concurrent writers lose nothing, and
//! last-used times move and survive restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::{Gateway, GatewayOptions};
use support::stdout_ok as ok;
use support::*;

/// A "not yet" window: a deleted keys file stays absent this long (over two
/// periods of the watcher's 300 ms stat), so the watcher sees the delete before the
/// re-create; there is no event to wait for from outside.
const ABSENT_FOR: Duration = Duration::from_millis(700);
/// last-used times are shown to the second: a restart this much later must show a
/// later time.
const NEXT_SECOND: Duration = Duration::from_millis(1100);

fn status(addr: std::net::SocketAddr, path: &str, key: &str) -> (u16, Option<String>) {
    let r = Reply::parse(&raw_exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: a\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    ));
    (r.status, r.code())
}

/// Polls until the request gets `want` (status) or 2 s pass; returns the time taken.
async fn within_2s(addr: std::net::SocketAddr, path: &str, key: &str, want: u16) -> Duration {
    let t = Instant::now();
    let (path, key) = (path.to_string(), key.to_string());
    loop {
        let (p, k) = (path.clone(), key.clone());
        let (s, _) = tokio::task::spawn_blocking(move || status(addr, &p, &k))
            .await
            .unwrap();
        if s == want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{path}: still {s}, want {want}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_changes_apply_to_a_running_gateway_within_2s() {
    let h = Harness::start().await;
    let cfg = h.dir.path().join("config.yaml");
    let addr = h.addr();
    let key = ok(&cli(
        &cfg,
        &[
            "keys",
            "create",
            "--name",
            "Interview Tool",
            "--perm",
            "candidates=write",
            "--quiet",
        ],
    ))
    .trim()
    .to_string();
    assert!(key.starts_with("kg_") && key.len() == 41, "{key}");
    let t = within_2s(addr, "/api/v1/candidates", &key, 200).await;
    eprintln!("create applied after {t:?}");

    ok(&cli(
        &cfg,
        &[
            "keys",
            "edit",
            "Interview Tool",
            "--perm",
            "candidates=none",
        ],
    ));
    within_2s(addr, "/api/v1/candidates", &key, 403).await;

    ok(&cli(
        &cfg,
        &[
            "keys",
            "edit",
            "interview tool",
            "--perm",
            "candidates=read",
        ],
    ));
    within_2s(addr, "/api/v1/candidates", &key, 200).await;

    ok(&cli(&cfg, &["api", "off"]));
    within_2s(addr, "/api/v1/candidates", &key, 401).await;
    assert_eq!(
        status(addr, "/api/v1/candidates", &key).1.as_deref(),
        Some("api_disabled")
    );
    assert!(ok(&cli(&cfg, &["api", "status"])).contains("off"));
    ok(&cli(&cfg, &["api", "on"]));
    within_2s(addr, "/api/v1/candidates", &key, 200).await;

    ok(&cli(&cfg, &["keys", "delete", "Interview Tool", "--yes"]));
    within_2s(addr, "/api/v1/candidates", &key, 401).await;
    assert_eq!(
        status(addr, "/api/v1/candidates", &key).1.as_deref(),
        Some("invalid_api_key")
    );

    // Every change is in the audit log, without secrets.
    let audit = std::fs::read_to_string(h.dir.path().join("data/audit.log")).unwrap();
    let actions: Vec<String> = audit
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        actions,
        [
            "key.create",
            "key.edit",
            "key.edit",
            "api.off",
            "api.on",
            "key.delete"
        ]
    );
    assert!(!audit.contains(&key));
    assert!(audit.contains("\"actor\":\"cli:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_show_and_the_keys_file_after_cli_writes() {
    let h = Harness::start().await;
    let cfg = h.dir.path().join("config.yaml");
    let out = ok(&cli(
        &cfg,
        &[
            "keys",
            "create",
            "--name",
            "Zapier 2",
            "--all",
            "read",
            "--rate",
            "5/s:10",
            "--expires",
            "2099-01-01",
        ],
    ));
    assert!(
        out.contains("Created key 'Zapier 2'") && out.contains("kg_"),
        "{out}"
    );
    let mode_before = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(h.dir.path().join("keys.yaml"))
            .unwrap()
            .permissions(),
    );
    let list = ok(&cli(&cfg, &["keys", "list"]));
    // Operator-supplied secrets show nothing of themselves.
    let zapier = list.lines().find(|l| l.starts_with("Zapier ")).unwrap();
    assert!(
        zapier.split_whitespace().any(|c| c == "••••••••"),
        "{zapier}"
    );
    assert!(list.lines().next().unwrap().starts_with("NAME"), "{list}");
    assert!(
        list.contains("Zapier 2") && list.contains("*:read") && list.contains("••••"),
        "{list}"
    );
    assert!(
        !list.contains(
            out.split_whitespace()
                .find(|w| w.starts_with("kg_"))
                .unwrap()
        )
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&cli(&cfg, &["keys", "list", "--json"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 7);
    let show: serde_json::Value =
        serde_json::from_str(&ok(&cli(&cfg, &["keys", "show", "zapier 2", "--json"]))).unwrap();
    assert_eq!(show["rate_limit"]["per_second"], 5);
    assert_eq!(show["expires_at"], "2099-01-01T00:00:00Z");
    // Errors are one line and a non-zero exit.
    for args in [
        vec!["keys", "create", "--name", "zapier 2"],
        vec!["keys", "create", "--name", "X", "--perm", "reports=read"],
        vec![
            "keys",
            "create",
            "--name",
            "X",
            "--perm",
            "candidates=admin",
        ],
        vec!["keys", "edit", "nobody", "--all", "read"],
        vec!["keys", "delete", "nobody", "--yes"],
        vec!["keys", "create", "--name", "X", "--rate", "fast"],
    ] {
        let out = cli(&cfg, &args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    // The file keeps its other keys and its mode.
    let path = h.dir.path().join("keys.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("kzapier") && text.contains("Zapier 2"));
    let mode_after =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode_after, mode_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_creates_all_land() {
    let h = Harness::start().await;
    let cfg = h.dir.path().join("config.yaml");
    // Twenty one after another, then twenty at the same time.
    for i in 0..20 {
        ok(&cli(
            &cfg,
            &[
                "keys",
                "create",
                "--name",
                &format!("Parallel {i}"),
                "--all",
                "read",
                "--quiet",
            ],
        ));
    }
    let spawned: Vec<_> = (0..20)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_keygate"))
                .arg("-c")
                .arg(&cfg)
                .args([
                    "keys",
                    "create",
                    "--name",
                    &format!("Concurrent {i}"),
                    "--all",
                    "read",
                    "--quiet",
                ])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let keys: Vec<String> = spawned
        .into_iter()
        .map(|c| ok(&c.wait_with_output().unwrap()).trim().to_string())
        .collect();
    let file: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(h.dir.path().join("keys.yaml")).unwrap())
            .unwrap();
    let names: Vec<&str> = file["keys"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    for i in 0..20 {
        assert!(
            names.contains(&format!("Concurrent {i}").as_str()),
            "Concurrent {i} lost"
        );
        assert!(
            names.contains(&format!("Parallel {i}").as_str()),
            "Parallel {i} lost"
        );
    }
    assert_eq!(names.len(), 6 + 40);
    // And every one of them works on the running gateway.
    let addr = h.addr();
    for k in keys.iter().take(3) {
        within_2s(addr, "/api/v1/jobs", k, 200).await;
    }
}

/// Writes `text` as the keys file in each of the ways the watcher must follow.
enum Change {
    InPlace,
    Rename,
    DeleteRecreate,
}

fn apply(dir: &Path, how: &Change, text: &str) {
    let path = dir.join("keys.yaml");
    match how {
        Change::InPlace => std::fs::write(&path, text).unwrap(),
        Change::Rename => {
            std::fs::write(dir.join("keys.yaml.new"), text).unwrap();
            std::fs::rename(dir.join("keys.yaml.new"), &path).unwrap();
        }
        Change::DeleteRecreate => {
            std::fs::remove_file(&path).unwrap();
            std::thread::sleep(ABSENT_FOR);
            std::fs::write(&path, text).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_watcher_follows_every_kind_of_change_and_survives_garbage() {
    let h = Harness::start().await;
    let addr = h.addr();
    let base = keys_yaml(&h.kg_key);
    for (n, how) in [Change::InPlace, Change::Rename, Change::DeleteRecreate]
        .iter()
        .enumerate()
    {
        // Zapier loses candidates, then gets it back.
        apply(
            h.dir.path(),
            how,
            &base.replace("{ candidates: read }", "{ candidates: none }"),
        );
        within_2s(addr, "/api/v1/candidates", SECRET_READ, 403).await;
        apply(h.dir.path(), how, &base);
        within_2s(addr, "/api/v1/candidates", SECRET_READ, 200).await;
        eprintln!("change form {n} followed");
    }
    // Garbage: the old keys keep working, the gateway stays up, the error is
    // counted in keygate_reloads_total (and logged once).
    let maddr = h.gateway.metrics_addr;
    let failures = move || {
        metric(
            maddr,
            "keygate_reloads_total{result=\"failure\",what=\"keys\"}",
        )
    };
    let before = failures();
    std::fs::write(
        h.dir.path().join("keys.yaml"),
        "keys: [ this is : not yaml\n",
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(2), || failures() > before).await);
    assert_eq!(status(addr, "/api/v1/candidates", SECRET_READ).0, 200);
    // A valid file that fails validation is refused the same way.
    std::fs::write(
        h.dir.path().join("keys.yaml"),
        base.replace("{ candidates: read }", "{ nothere: read }"),
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(2), || failures() > before + 1.0).await);
    assert_eq!(status(addr, "/api/v1/candidates", SECRET_READ).0, 200);
    // And a good file applies again.
    std::fs::write(
        h.dir.path().join("keys.yaml"),
        base.replace(SECRET_READ, "replaced-zapier-secret-0123456789abcdef"),
    )
    .unwrap();
    within_2s(addr, "/api/v1/candidates", SECRET_READ, 401).await;
    within_2s(
        addr,
        "/api/v1/candidates",
        "replaced-zapier-secret-0123456789abcdef",
        200,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_data_symlink_swaps_are_followed() {
    // Lay the keys file out as a mounted Secret: keys.yaml -> ..data/keys.yaml,
    // ..data -> ..<timestamp>/, swapped atomically by renaming a new symlink.
    let upstream = Upstream::start().await;
    let dir = TempDir::new();
    let secret = dir.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    let base = keys_yaml("kg_x");
    let write_version = |v: usize, text: &str| {
        let vdir = secret.join(format!("..2026_11_26_{v}"));
        std::fs::create_dir_all(&vdir).unwrap();
        std::fs::write(vdir.join("keys.yaml"), text).unwrap();
        let tmp = secret.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..2026_11_26_{v}"), &tmp).unwrap();
        std::fs::rename(&tmp, secret.join("..data")).unwrap();
    };
    write_version(0, &base);
    std::os::unix::fs::symlink("..data/keys.yaml", secret.join("keys.yaml")).unwrap();
    let cfg = dir.write(
        "config.yaml",
        &config_yaml(upstream.addr, ROUTES)
            .replace("keys_file: keys.yaml", "keys_file: secret/keys.yaml"),
    );
    let gw = Gateway::start(&cfg, GatewayOptions::default())
        .await
        .unwrap();
    let addr = gw.public_addr;
    for v in 1..=3 {
        let (text, want) = if v % 2 == 1 {
            (
                base.replace("{ candidates: read }", "{ candidates: none }"),
                403,
            )
        } else {
            (base.clone(), 200)
        };
        write_version(v, &text);
        // The old version directory goes away, as kubelet does.
        let _ = std::fs::remove_dir_all(secret.join(format!("..2026_11_26_{}", v - 1)));
        within_2s(addr, "/api/v1/candidates", SECRET_READ, want).await;
    }
    // Writes through keygate fail clearly on such a file? It is writable here, so
    // check the read-only case separately below.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_only_keys_file_gives_keys_file_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::start().await;
    let path = h.dir.path().join("keys.yaml");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let out = cli(
        &h.dir.path().join("config.yaml"),
        &["keys", "create", "--name", "Nope", "--all", "read"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keys_file_read_only"), "{err}");
    // The gateway still follows changes made by others (GitOps).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(
        &path,
        keys_yaml(&h.kg_key).replace("{ candidates: read }", "{ candidates: none }"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    within_2s(h.addr(), "/api/v1/candidates", SECRET_READ, 403).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reveal_with_and_without_a_seal_key() {
    let h = Harness::start().await;
    let cfg = h.dir.path().join("config.yaml");
    let seal = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // 32 bytes
    let with_seal = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .env("KEYGATE_SEAL_KEY", seal)
            .output()
            .unwrap()
    };
    let key = ok(&with_seal(&[
        "keys", "create", "--name", "Sealed", "--all", "read", "--quiet",
    ]))
    .trim()
    .to_string();
    assert_eq!(ok(&with_seal(&["keys", "reveal", "Sealed"])).trim(), key);
    let text = std::fs::read_to_string(h.dir.path().join("keys.yaml")).unwrap();
    assert!(text.contains("sealed: \"v1:") && !text.contains(&key));
    // Without the seal key: a clear refusal.
    let out = cli(&cfg, &["keys", "reveal", "Sealed"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEYGATE_SEAL_KEY"));
    // A key made without a seal key is not revealable.
    ok(&cli(
        &cfg,
        &["keys", "create", "--name", "Plain", "--all", "read"],
    ));
    let out = cli(&cfg, &["keys", "reveal", "Plain"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_revealable"));
    // Operator-supplied keys can always be revealed.
    assert_eq!(
        ok(&cli(&cfg, &["keys", "reveal", "kzapier"])).trim(),
        SECRET_READ
    );
    let audit = std::fs::read_to_string(h.dir.path().join("data/audit.log")).unwrap();
    assert_eq!(audit.matches("key.reveal").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_used_moves_and_survives_a_restart() {
    let h = Harness::start().await;
    let cfg = h.dir.path().join("config.yaml");
    assert_eq!(status(h.addr(), "/api/v1/candidates", SECRET_READ).0, 200);
    // A second gateway on the same state_dir refuses to start.
    let err = Gateway::start(&cfg, GatewayOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another keygate"), "{err}");
    let Harness {
        gateway,
        dir,
        upstream,
        ..
    } = h;
    gateway.drain(Duration::from_secs(1)).await; // flushes last-used
    let show = |who: &str| -> serde_json::Value {
        serde_json::from_str(&ok(&cli(
            &dir.path().join("config.yaml"),
            &["keys", "show", who, "--json"],
        )))
        .unwrap()
    };
    let first = show("kzapier")["last_used"].as_str().unwrap().to_string();
    assert!(show("kreporting")["last_used"].is_null(), "never used");
    assert!(ok(&cli(&cfg, &["keys", "list"])).contains("just now"));
    // Restart on the same state_dir: the time is still there, and moves on use.
    tokio::time::sleep(NEXT_SECOND).await;
    let gw = Gateway::start(&cfg, GatewayOptions::default())
        .await
        .unwrap();
    assert!(
        gw.key_last_used_ms("kzapier").is_some(),
        "seeded from last_used.json"
    );
    assert_eq!(
        status(gw.public_addr, "/api/v1/candidates", SECRET_READ).0,
        200
    );
    gw.drain(Duration::from_secs(1)).await;
    let second = show("kzapier")["last_used"].as_str().unwrap().to_string();
    assert!(second > first, "{first} -> {second}");
    drop(upstream);
}

/// Reload time for a 100,000-key file, with requests answered meanwhile.
/// `cargo test --release --test lifecycle -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run explicitly, with --release"]
async fn reload_of_100k_keys() {
    let h = Harness::start_with(&format!(
        "{ROUTES}rate_limit:\n  per_key: {{ per_second: 1000000, burst: 1000000 }}\n"
    ))
    .await;
    let mut text = keys_yaml(&h.kg_key);
    for i in 0..100_000 {
        text.push_str(&format!(
            "  - id: bulk{i}\n    name: Bulk {i}\n    sha256: \"{}\"\n    permissions: {{ candidates: read }}\n",
            sha256_hex(&format!("bulk-secret-{i}"))
        ));
    }
    let path = h.dir.path().join("keys.yaml");
    let addr = h.addr();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (s2, a2) = (stop.clone(), answered.clone());
    let load = std::thread::spawn(move || {
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            assert_eq!(status(addr, "/api/v1/candidates", SECRET_READ).0, 200);
            a2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    std::fs::write(h.dir.path().join("keys.yaml.new"), &text).unwrap();
    std::fs::rename(h.dir.path().join("keys.yaml.new"), &path).unwrap();
    let t = Instant::now();
    let before = answered.load(std::sync::atomic::Ordering::Relaxed);
    let (n, took) = tokio::task::block_in_place(|| {
        let t = Instant::now();
        let n = h.gateway.reload_keys().unwrap();
        (n, t.elapsed())
    });
    let during = answered.load(std::sync::atomic::Ordering::Relaxed) - before;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    eprintln!(
        "reloaded {n} keys in {took:?} ({:?} wall); {during} requests answered meanwhile",
        t.elapsed()
    );
    assert_eq!(n, 100_006);
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(during > 0);
    // The new keys (given by hash) work; a value that is not among them does not.
    assert_eq!(status(addr, "/api/v1/candidates", "bulk-secret-77").0, 200);
    assert_eq!(
        status(addr, "/api/v1/candidates", "bulk-secret-100000").0,
        401
    );
}
