//! `keygate logs`: reads the access log (current and rotated files), newest first,
//! reading backwards so the newest records of a multi-GB log come at once; filters;
//! `--follow` streams new records as they are written.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::units::parse_duration;
use crate::output;

/// The fields of a record that `logs` shows or filters on.
#[derive(Debug, Deserialize)]
pub struct Line {
    pub ts: String,
    #[serde(default)]
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub key_name: Option<String>,
    pub ip: String,
    pub duration_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Exact(u16),
    /// `4xx`: the hundreds digit.
    Class(u16),
}

/// What to show.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub path: Option<String>,
    pub method: Option<String>,
    pub status: Option<StatusFilter>,
    /// Key name (ignoring case) or id.
    pub key: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub slower_than_ms: Option<f64>,
}

pub fn parse_status(s: &str) -> Result<StatusFilter, String> {
    let err = || format!("--status {s:?}: write a status (404) or a class (4xx)");
    let lower = s.to_ascii_lowercase();
    if let Some(d) = lower.strip_suffix("xx") {
        let d: u16 = d.parse().map_err(|_| err())?;
        return (1..=5)
            .contains(&d)
            .then_some(StatusFilter::Class(d))
            .ok_or_else(err);
    }
    let n: u16 = s.parse().map_err(|_| err())?;
    (100..=599)
        .contains(&n)
        .then_some(StatusFilter::Exact(n))
        .ok_or_else(err)
}

/// `1h`, `30m`, `2d`, `1w`, or an RFC 3339 time.
pub fn parse_since(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let err = || format!("--since {s:?}: write e.g. 30m, 1h, 2d, or an RFC 3339 time");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let n: i64 = s[..split].parse().map_err(|_| err())?;
    let secs = match &s[split..] {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        "w" => n.saturating_mul(604_800),
        _ => return Err(err()),
    };
    Ok(now - time::Duration::seconds(secs))
}

pub fn parse_slower_than(s: &str) -> Result<f64, String> {
    parse_duration(s)
        .map(|d| d.value.as_secs_f64() * 1000.0)
        .map_err(|e| format!("--slower-than: {e}"))
}

impl Filter {
    /// `Some(true)` shown, `Some(false)` not, `None`: older than `since` (stop).
    // cluster: also filters the shared stream.
    pub(crate) fn check(&self, l: &Line) -> Option<bool> {
        if let Some(since) = self.since
            && OffsetDateTime::parse(&l.ts, &Rfc3339).is_ok_and(|t| t < since)
        {
            return None;
        }
        let ok = self
            .path
            .as_ref()
            .is_none_or(|p| l.path.contains(p.as_str()))
            && self
                .method
                .as_ref()
                .is_none_or(|m| l.method.eq_ignore_ascii_case(m))
            && self.status.is_none_or(|s| match s {
                StatusFilter::Exact(n) => l.status == n,
                StatusFilter::Class(d) => l.status / 100 == d,
            })
            && self.key.as_ref().is_none_or(|k| {
                l.key_id.as_deref() == Some(k.as_str())
                    || l.key_name
                        .as_ref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(k))
            })
            && self.slower_than_ms.is_none_or(|t| l.duration_ms > t);
        Some(ok)
    }
}

/// The current file, then `.1`, `.2`… while they exist.
fn files(path: &Path) -> Vec<PathBuf> {
    let mut v = vec![path.to_path_buf()];
    for i in 1.. {
        let p = PathBuf::from(format!("{}.{i}", path.display()));
        if !p.exists() {
            break;
        }
        v.push(p);
    }
    v
}

/// Calls `each` with every line of `file`, last line first, reading backwards in
/// blocks. Stops when `each` returns false.
fn lines_backwards(file: &Path, mut each: impl FnMut(&[u8]) -> bool) -> std::io::Result<bool> {
    const BLOCK: u64 = 64 * 1024;
    let mut f = match File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    let mut pos = f.metadata()?.len();
    let mut carry: Vec<u8> = Vec::new(); // the start of a line whose beginning is further back
    while pos > 0 {
        let start = pos.saturating_sub(BLOCK);
        let mut block = vec![0u8; (pos - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut block)?;
        block.extend_from_slice(&carry);
        let mut end = block.len();
        // Every complete line in this block, last first.
        while let Some(nl) = block[..end].iter().rposition(|&b| b == b'\n') {
            let line = &block[nl + 1..end];
            if !line.is_empty() && !each(line) {
                return Ok(false);
            }
            end = nl;
        }
        carry = block[..end].to_vec();
        pos = start;
    }
    if !carry.is_empty() && !each(&carry) {
        return Ok(false);
    }
    Ok(true)
}

/// The newest `limit` records that pass `filter`, newest first (raw line, parsed);
/// with `before` (a request id, the cursor), only records older than that one.
pub fn newest(
    path: &Path,
    filter: &Filter,
    limit: usize,
    before: Option<&str>,
) -> std::io::Result<Vec<(String, Line)>> {
    let mut out = Vec::new();
    let mut skipping = before.is_some();
    for file in files(path) {
        let go_on = lines_backwards(&file, |raw| {
            let Ok(line) = serde_json::from_slice::<Line>(raw) else {
                return true; // not a record (a torn line): skip it
            };
            if skipping {
                skipping = before != Some(line.request_id.as_str());
                return true;
            }
            match filter.check(&line) {
                None => false,
                Some(true) => {
                    out.push((String::from_utf8_lossy(raw).into_owned(), line));
                    out.len() < limit
                }
                Some(false) => true,
            }
        })?;
        if !go_on {
            break;
        }
    }
    Ok(out)
}

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
pub fn run(
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
        for (raw, line) in found.iter().rev() {
            print_one(raw, line, json);
        }
        return follow_file(path, filter, json);
    }
    if json {
        for (raw, _) in &found {
            output::line(raw);
        }
    } else if found.is_empty() {
        output::line("No matching requests.");
    } else {
        table(&found.iter().map(|(_, l)| l).collect::<Vec<_>>());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_filters() {
        assert_eq!(parse_status("404"), Ok(StatusFilter::Exact(404)));
        assert_eq!(parse_status("4xx"), Ok(StatusFilter::Class(4)));
        assert_eq!(parse_status("5XX"), Ok(StatusFilter::Class(5)));
        assert!(parse_status("9xx").is_err());
        assert!(parse_status("abc").is_err());
    }

    #[test]
    fn since() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            parse_since("1h", now).unwrap(),
            now - time::Duration::hours(1)
        );
        assert_eq!(
            parse_since("2d", now).unwrap(),
            now - time::Duration::days(2)
        );
        assert!(parse_since("2026-11-26T03:00:00Z", now).is_ok());
        assert!(parse_since("yesterday", now).is_err());
    }

    #[test]
    fn backwards_reading_handles_block_boundaries() {
        let dir = std::env::temp_dir().join(format!("kg-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.log");
        let mut text = String::new();
        for i in 0..20_000 {
            text.push_str(&format!("line {i} {}\n", "x".repeat(i % 50)));
        }
        std::fs::write(&p, &text).unwrap();
        let mut got = Vec::new();
        lines_backwards(&p, |l| {
            got.push(String::from_utf8_lossy(l).into_owned());
            true
        })
        .unwrap();
        let want: Vec<String> = text.lines().rev().map(String::from).collect();
        assert_eq!(got, want);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
