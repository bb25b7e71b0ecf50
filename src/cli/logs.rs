//! `keygate logs`: prints the access log newest first as a table or JSON lines;
//! `--follow` streams new records as they are written.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use crate::cli::output;
use crate::observe::logs::{Filter, Line, newest};

fn fmt_duration(ms: f64) -> String {
    let slow = if ms > 2000.0 { " (slow)" } else { "" };
    if ms >= 1000.0 {
        format!("{:.2} s{slow}", ms / 1000.0)
    } else {
        format!("{ms:.1} ms{slow}")
    }
}

fn row(l: &Line) -> Vec<String> {
    vec![
        l.path.clone(),
        l.ts.clone(),
        l.method.clone(),
        l.status.to_string(),
        l.key_name.clone().unwrap_or_else(|| "-".into()),
        l.ip.clone(),
        fmt_duration(l.duration_ms),
    ]
}

const HEADER: [&str; 7] = [
    "PATH",
    "CREATED AT",
    "METHOD",
    "RESPONSE",
    "API KEY",
    "IP ADDRESS",
    "DURATION",
];

fn table(lines: &[&Line]) {
    let mut rows = vec![HEADER.map(String::from).to_vec()];
    rows.extend(lines.iter().map(|l| row(l)));
    output::table(&rows);
}

/// Prints the newest records (newest first), or follows the log.
pub(crate) fn run(
    path: &Path,
    filter: &Filter,
    limit: usize,
    json: bool,
    follow: bool,
) -> Result<(), String> {
    let found =
        newest(path, filter, limit, None).map_err(|e| format!("{}: {e}", path.display()))?;
    if follow {
        // Recent records oldest first, then new ones as they come.
        for f in found.iter().rev() {
            print_one(&f.raw, &f.line, json);
        }
        return follow_file(path, filter, json);
    }
    if json {
        for f in &found {
            output::line(&f.raw);
        }
    } else if found.is_empty() {
        output::line("No matching requests.");
    } else {
        table(&found.iter().map(|f| &f.line).collect::<Vec<_>>());
    }
    Ok(())
}

fn print_one(raw: &str, line: &Line, json: bool) {
    if json {
        output::line(raw);
    } else {
        output::line(&row(line).join("  "));
    }
}

/// Streams new records; follows the file across rotation.
fn follow_file(path: &Path, filter: &Filter, json: bool) -> Result<(), String> {
    let open = || -> Option<(File, u64, u64)> {
        let f = File::open(path).ok()?;
        let m = f.metadata().ok()?;
        Some((f, m.ino(), m.len()))
    };
    let mut cur = open();
    let mut pos = cur.as_ref().map_or(0, |c| c.2);
    let mut partial: Vec<u8> = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        // Rotated or truncated: start on the new file from its beginning.
        let now = std::fs::metadata(path).ok();
        let rotated = match (&cur, &now) {
            (Some(c), Some(m)) => m.ino() != c.1 || m.len() < pos,
            (None, Some(_)) => true,
            _ => false,
        };
        if rotated {
            // Finish the old file first.
            if let Some((f, _, _)) = cur.as_mut() {
                drain(f, &mut pos, &mut partial, filter, json);
            }
            cur = open();
            pos = 0;
            partial.clear();
        }
        if let Some((f, _, _)) = cur.as_mut() {
            drain(f, &mut pos, &mut partial, filter, json);
        }
    }
}

fn drain(f: &mut File, pos: &mut u64, partial: &mut Vec<u8>, filter: &Filter, json: bool) {
    if f.seek(SeekFrom::Start(*pos)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    let Ok(n) = f.read_to_end(&mut buf) else {
        return;
    };
    *pos += n as u64;
    partial.extend_from_slice(&buf);
    while let Some(nl) = partial.iter().position(|&b| b == b'\n') {
        let raw: Vec<u8> = partial.drain(..=nl).collect();
        let raw = &raw[..raw.len() - 1];
        if let Ok(line) = serde_json::from_slice::<Line>(raw)
            && filter.check(&line) == Some(true)
        {
            print_one(&String::from_utf8_lossy(raw), &line, json);
        }
    }
}
