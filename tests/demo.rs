//! `keygate demo` runs on free ports, and each of the curl commands it prints gets
//! exactly the status printed above it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// The demo's Reporting key refills one token a second; its burst of three is back
/// after this long. A fixed wait: polling with requests would spend the tokens.
const BURST_REFILL: Duration = Duration::from_millis(3500);
/// How long Ctrl-C may take to stop the demo.
const EXIT_WITHIN: Duration = Duration::from_secs(5);

/// Splits a shell command line into words, honouring single quotes (what the demo
/// prints uses nothing else).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Performs what one `curl` invocation asks for; returns the status.
fn emulate_curl(args: &[String]) -> u16 {
    let mut method = "GET".to_string();
    let mut headers = Vec::new();
    let mut body = String::new();
    let mut url = String::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-X" => {
                method = args[i + 1].clone();
                i += 1;
            }
            "-H" => {
                headers.push(args[i + 1].clone());
                i += 1;
            }
            "-d" => {
                body = args[i + 1].clone();
                if method == "GET" {
                    method = "POST".into();
                }
                i += 1;
            }
            "-o" | "-w" => i += 1,
            a if a.starts_with("http://") => url = a.to_string(),
            _ => {}
        }
        i += 1;
    }
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(&format!("{h}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    Reply::parse(&raw_exchange(host.parse().unwrap(), req.as_bytes())).status
}

/// Runs one printed command; returns the status it shows (the last one for a loop).
fn run(line: &str) -> u16 {
    if line.starts_with("for ") {
        // for i in 1 2 3 4; do curl …; done
        let n = line.split(';').next().unwrap().split_whitespace().count() - 3;
        let inner = line
            .split("; do ")
            .nth(1)
            .unwrap()
            .trim_end_matches("; done");
        let args = words(inner);
        let mut last = 0;
        for _ in 0..n {
            last = emulate_curl(&args[1..]);
        }
        last
    } else {
        emulate_curl(&words(line)[1..])
    }
}

fn curl_available() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the command itself with sh and curl; returns the status it prints.
fn run_with_curl(line: &str) -> u16 {
    let out = Command::new("sh").arg("-c").arg(line).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if line.starts_with("for ") {
        text.lines().last().unwrap().trim().parse().unwrap()
    } else {
        text.lines()
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    }
}

fn start_demo() -> (std::process::Child, Vec<(u16, String)>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["demo", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut commands = Vec::new();
    let mut expect: Option<u16> = None;
    let mut text = String::new();
    for line in out.lines() {
        let line = line.unwrap();
        text.push_str(&line);
        text.push('\n');
        if let Some(rest) = line.strip_prefix("# ") {
            expect = rest.get(..3).and_then(|s| s.parse().ok());
        } else if line.starts_with("curl ") || line.starts_with("for ") {
            commands.push((
                expect.take().expect("a status above each command"),
                line.clone(),
            ));
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    (child, commands, text)
}

fn interrupt_and_wait(mut child: std::process::Child) -> Option<i32> {
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + EXIT_WITHIN;
    while std::time::Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    None
}

#[test]
fn demo_commands_get_the_statuses_they_print() {
    let (child, commands, text) = start_demo();
    let statuses: Vec<u16> = commands.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [200, 403, 401, 429], "{text}");
    for (want, line) in &commands {
        assert!(!line.contains('\n'));
        assert_eq!(run(line), *want, "{line}");
    }
    // With curl on the machine, run them literally too (the rate limit refills
    // a token per second; wait for the burst to come back first).
    if curl_available() {
        std::thread::sleep(BURST_REFILL);
        for (want, line) in &commands {
            assert_eq!(run_with_curl(line), *want, "{line}");
        }
    }
    assert!(text.contains("/metrics"));
    assert_eq!(interrupt_and_wait(child), Some(0), "Ctrl-C stops cleanly");
}

#[test]
fn demo_sample_api_answers_like_an_app() {
    let (child, commands, _) = start_demo();
    // The first command holds the base URL and the Zapier key.
    let w = words(&commands[0].1);
    let url = w.last().unwrap().clone();
    let key = w
        .iter()
        .find(|a| a.starts_with("X-API-Key: "))
        .unwrap()
        .clone();
    let base = url
        .trim_end_matches("/api/v1/candidates")
        .trim_start_matches("http://")
        .to_string();
    let addr = base.parse().unwrap();
    let get = |path: &str| {
        Reply::parse(&raw_exchange(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{key}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        ))
    };
    let r = get("/api/v1/candidates/1");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "Ada Lovelace");
    assert_eq!(
        get("/api/v1/candidates/999").status,
        404,
        "upstream 404 passes through"
    );
    assert_eq!(get("/api/v1/applications").status, 200);
    assert_eq!(interrupt_and_wait(child), Some(0));
}
