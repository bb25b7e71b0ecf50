//! Reading the access log (current and rotated files), newest first, reading
//! backwards so the newest records of a multi-GB log come at once; filters. Used by
//! `keygate logs` and the admin API.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::units::parse_duration;

/// The fields of a record that `logs` shows or filters on.
#[derive(Debug, Deserialize)]
pub(crate) struct Line {
    pub(crate) ts: String,
    #[serde(default)]
    pub(crate) request_id: String,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) status: u16,
    #[serde(default)]
    pub(crate) key_id: Option<String>,
    #[serde(default)]
    pub(crate) key_name: Option<String>,
    pub(crate) ip: String,
    pub(crate) duration_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusFilter {
    Exact(u16),
    /// `4xx`: the hundreds digit.
    Class(u16),
}

/// What to show.
#[derive(Debug, Default, Clone)]
pub(crate) struct Filter {
    pub(crate) path: Option<String>,
    pub(crate) method: Option<String>,
    pub(crate) status: Option<StatusFilter>,
    /// Key name (ignoring case) or id.
    pub(crate) key: Option<String>,
    pub(crate) since: Option<OffsetDateTime>,
    pub(crate) slower_than_ms: Option<f64>,
}

pub(crate) fn parse_status(s: &str) -> Result<StatusFilter, String> {
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
pub(crate) fn parse_since(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
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

pub(crate) fn parse_slower_than(s: &str) -> Result<f64, String> {
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
pub(crate) fn files(path: &Path) -> Vec<PathBuf> {
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
pub(crate) fn newest(
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
