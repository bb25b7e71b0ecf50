//! Reading the access log (current and rotated files), newest first, reading
//! backwards so the newest records of a multi-GB log come at once; filters. Used by
//! `keygate logs` and the admin API.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::units::parse_duration;

/// The fields of a record that `logs` shows or filters on.
#[derive(Debug, Deserialize)]
pub(crate) struct Line {
    pub(crate) ts: String,
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
    now.checked_sub(time::Duration::seconds(secs))
        .ok_or_else(err)
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
            .is_none_or(|p| contains_ignoring_case(&l.path, p))
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

/// Whether `needle` occurs in `hay`, ignoring ASCII case (routing ignores case too).
fn contains_ignoring_case(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
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

/// Calls `each` with every line of `file` and the offset where it starts, last line
/// first, reading backwards in blocks from `end` (the file's length when `None`).
/// Stops when `each` returns false.
fn lines_backwards(
    file: &mut File,
    end: Option<u64>,
    mut each: impl FnMut(&[u8], u64) -> bool,
) -> std::io::Result<bool> {
    const BLOCK: u64 = 64 * 1024;
    let len = file.metadata()?.len();
    let mut pos = end.map_or(len, |e| e.min(len));
    let mut carry: Vec<u8> = Vec::new(); // the start of a line whose beginning is further back
    while pos > 0 {
        let start = pos.saturating_sub(BLOCK);
        let mut block = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&carry);
        let mut end = block.len();
        // Every complete line in this block, last first.
        while let Some(nl) = block[..end].iter().rposition(|&b| b == b'\n') {
            let line = &block[nl + 1..end];
            if !line.is_empty() && !each(line, start + nl as u64 + 1) {
                return Ok(false);
            }
            end = nl;
        }
        carry = block[..end].to_vec();
        pos = start;
    }
    if !carry.is_empty() && !each(&carry, 0) {
        return Ok(false);
    }
    Ok(true)
}

/// Where a record starts: the file (by inode, which survives rotation's renames) and
/// the byte offset. Shown to clients only as an opaque [`Cursor::encode`] string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    ino: u64,
    offset: u64,
}

impl Cursor {
    /// The opaque form: `c` + 32 hex digits.
    pub(crate) fn encode(self) -> String {
        format!("c{:016x}{:016x}", self.ino, self.offset)
    }

    pub(crate) fn decode(s: &str) -> Option<Self> {
        let hex = s.strip_prefix('c').filter(|h| h.len() == 32)?;
        Some(Self {
            ino: u64::from_str_radix(hex.get(..16)?, 16).ok()?,
            offset: u64::from_str_radix(hex.get(16..)?, 16).ok()?,
        })
    }
}

/// One record found: its raw line, the parsed fields, and where it starts.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) raw: String,
    pub(crate) line: Line,
    pub(crate) at: Cursor,
}

/// The newest `limit` records that pass `filter`, newest first; with `before` (the
/// [`Cursor`] of a record from an earlier page), only records older than that one.
/// A cursor whose file has been rotated away finds nothing.
pub(crate) fn newest(
    path: &Path,
    filter: &Filter,
    limit: usize,
    before: Option<Cursor>,
) -> std::io::Result<Vec<Found>> {
    let mut out = Vec::new();
    // With a cursor, files newer than the cursor's one are skipped.
    let mut waiting = before.is_some();
    for name in files(path) {
        let mut file = match File::open(&name) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let ino = file.metadata()?.ino();
        let mut end = None;
        if waiting {
            match before {
                Some(c) if c.ino == ino => {
                    waiting = false;
                    end = Some(c.offset);
                }
                _ => continue,
            }
        }
        let go_on = lines_backwards(&mut file, end, |raw, offset| {
            let Ok(line) = serde_json::from_slice::<Line>(raw) else {
                return true; // not a record (a torn line): skip it
            };
            match filter.check(&line) {
                None => false,
                Some(true) => {
                    out.push(Found {
                        raw: String::from_utf8_lossy(raw).into_owned(),
                        line,
                        at: Cursor { ino, offset },
                    });
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
    fn path_filter_ignores_case_and_cursors_round_trip() {
        assert!(contains_ignoring_case("/API/v1/Jobs", "api/v1/jobs"));
        assert!(!contains_ignoring_case("/api", "/api/v1"));
        let c = Cursor { ino: 42, offset: 7 };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("01JD3-request-id"), None);
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
        let mut f = File::open(&p).unwrap();
        lines_backwards(&mut f, None, |l, at| {
            let line = String::from_utf8_lossy(l).into_owned();
            assert!(text[at as usize..].starts_with(&line));
            got.push(line);
            true
        })
        .unwrap();
        let want: Vec<String> = text.lines().rev().map(String::from).collect();
        assert_eq!(got, want);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
