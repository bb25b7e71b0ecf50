//! `keygate demo`: a self-contained demo. A sample applicant-tracking API as the
//! upstream, keygate in front of it with a demo config and two freshly minted keys in
//! a temporary directory, and ready-to-paste curl commands. The keys are sealed under
//! a seal key made for the demo (so the console can reveal them), and the admin
//! listener has a token made for the demo: the console URL printed carries it in its
//! fragment, which the browser never sends. Ctrl-C stops everything and removes the
//! directory.

pub(crate) mod sample_api;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use base64::Engine;

use crate::cli::output;
use crate::gateway::{Gateway, GatewayOptions};
use crate::keys::seal::SealKey;
use crate::keys::{KeyHash, Secret, display_prefix, mint};

/// A temporary directory removed when dropped.
struct DemoDir(PathBuf);

impl DemoDir {
    fn create() -> std::io::Result<Self> {
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).map_err(std::io::Error::other)?;
        let name: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let p = std::env::temp_dir().join(format!("keygate-demo-{name}"));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config_text(port: u16, metrics_port: u16, admin_port: u16, upstream: SocketAddr) -> String {
    format!(
        r#"# keygate demo configuration (temporary)
listen: "127.0.0.1:{port}"
upstream: "http://{upstream}"
metrics:
  listen: "127.0.0.1:{metrics_port}"
admin:
  listen: "127.0.0.1:{admin_port}"
keys_file: keys.yaml
state_dir: data
routes:
  public: ["/healthz"]
  categories:
    candidates: ["/api/v1/candidates", "/api/v1/candidates/**"]
    jobs: ["/api/v1/jobs", "/api/v1/jobs/**"]
    applications: ["/api/v1/applications", "/api/v1/applications/**"]
timeouts:
  shutdown_delay: 0s
  shutdown: 2s
access_log:
  path: logs/access.log
"#
    )
}

fn keys_text(zapier: &Secret, reporting: &Secret, seal: &SealKey) -> Result<String, String> {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let entry = |id: &str, name: &str, key: &Secret, rest: &str| -> Result<String, String> {
        Ok(format!(
            "  - id: {id}\n    name: {name}\n    sha256: \"{}\"\n    sealed: \"{}\"\n    prefix: {}\n    created_at: {now}\n{rest}",
            KeyHash::of(key.expose().as_bytes()).to_hex(),
            seal.seal(id, key)?,
            display_prefix(key.expose()),
        ))
    };
    Ok(format!(
        "api_enabled: true\nkeys:\n{}{}",
        entry(
            "kdemozapier",
            "Zapier",
            zapier,
            "    permissions: { candidates: read, jobs: read, applications: read }\n"
        )?,
        entry(
            "kdemoreport",
            "Reporting Dashboard",
            reporting,
            "    permissions: { \"*\": read }\n    rate_limit: { per_second: 1, burst: 3 }\n"
        )?,
    ))
}

/// `n` random bytes as lowercase hex.
fn random_hex(n: usize) -> Result<String, String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A seal key for this demo only (base64 of 32 random bytes).
fn demo_seal_key_text() -> Result<String, String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(b))
}

fn print_intro(gw: &Gateway, zapier: &Secret, reporting: &Secret, token: &str) {
    let base = format!("http://{}", gw.public_addr);
    let z = zapier.expose();
    let r = reporting.expose();
    let lines = [
        "keygate demo is running: a gateway in front of a sample applicant-tracking API.".to_string(),
        String::new(),
        format!("  gateway   {base}"),
        format!("  metrics   http://{}/metrics", gw.metrics_addr),
        format!("  console   http://{}/#token={token}", gw.admin_addr),
        "            (open it in a browser: the token after # signs you in; it is made for this demo)".to_string(),
        String::new(),
        "  keys (made for this demo; they disappear when it stops)".to_string(),
        format!("    Zapier               read on candidates, jobs, applications   {z}"),
        format!("    Reporting Dashboard  read on everything, 1 request/s, burst 3  {r}"),
        String::new(),
        "Try it: each command is one line; the line above it says what it shows.".to_string(),
        String::new(),
        "# 200: Zapier may read candidates".to_string(),
        format!("curl -si -H 'X-API-Key: {z}' {base}/api/v1/candidates"),
        "# 403: Zapier may not create candidates (insufficient_permission)".to_string(),
        format!(
            "curl -si -X POST -H 'X-API-Key: {z}' -H 'Content-Type: application/json' -d '{{\"name\":\"Alan Turing\"}}' {base}/api/v1/candidates"
        ),
        "# 401: no key (missing_api_key)".to_string(),
        format!("curl -si {base}/api/v1/jobs"),
        "# 429: the Reporting Dashboard key allows a burst of 3, so the 4th request in a row is refused (rate_limited)".to_string(),
        format!(
            "for i in 1 2 3 4; do curl -s -o /dev/null -w '%{{http_code}}\\n' -H 'X-API-Key: {r}' {base}/api/v1/jobs; done"
        ),
        String::new(),
        "Press Ctrl-C to stop.".to_string(),
    ];
    for l in lines {
        output::line(&l);
    }
}

/// Runs the demo until SIGINT/SIGTERM.
pub(crate) async fn run(port: u16) -> Result<(), String> {
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("signal setup: {e}"))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("signal setup: {e}"))?;
    let upstream = sample_api::start()
        .await
        .map_err(|e| format!("cannot start the sample API: {e}"))?;
    let dir = DemoDir::create().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let zapier = mint().map_err(|e| format!("no randomness: {e}"))?;
    let reporting = mint().map_err(|e| format!("no randomness: {e}"))?;
    let metrics_port = if port == 0 { 0 } else { port.saturating_add(1) };
    let admin_port = if port == 0 { 0 } else { port.saturating_add(2) };
    let cfg = write(
        &dir.0,
        "config.yaml",
        &config_text(port, metrics_port, admin_port, upstream),
    )?;
    let seal_text = demo_seal_key_text()?;
    let seal = SealKey::from_base64(&seal_text)?;
    write(&dir.0, "keys.yaml", &keys_text(&zapier, &reporting, &seal)?)?;
    let token = random_hex(24)?;
    let options = GatewayOptions {
        admin_token: Some(token.clone()),
        seal_key: Some(seal_text),
        ..GatewayOptions::default()
    };
    let gw = Gateway::start(&cfg, options)
        .await
        .map_err(|e| format!("{e} (try another port with --port)"))?;
    print_intro(&gw, &zapier, &reporting, &token);
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    gw.drain(Duration::from_secs(2)).await;
    drop(dir);
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    let p = dir.join(name);
    std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    Ok(p)
}
