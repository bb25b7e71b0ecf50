//! The access log (docs/http.md, "The access-log record"): one JSON object per line for every request.
//!
//! The request path formats its record into a buffer its thread keeps and appends
//! the line to a bounded in-memory queue (a mutex held for one copy, never across
//! I/O): it never waits on the disk and never wakes another thread. A dedicated writer thread takes the whole queue
//! every 20 ms, writes it in one batch, rotates by size (`access.log` →
//! `access.log.1` … `.N`), reopens on demand (SIGHUP, for logrotate) and flushes on
//! shutdown. When the queue is full or a write fails (full or broken disk), records
//! are dropped and counted, with a warning at most every 10 s; writing resumes when
//! the disk recovers.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::config::{AccessLogConfig, LogTarget};
use crate::observe::metrics::Metrics;
use crate::observe::record::{Record, ip_text};

/// Records queued for the writer at most (a few MB of lines).
const QUEUE: usize = 16_384;
/// How often the writer takes the queue.
const TICK: Duration = Duration::from_millis(20);
/// `user_agent` is cut to this many characters.
const MAX_UA: usize = 256;
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Queue bytes kept between batches at most (a burst can leave more).
const SPARE_BYTES: usize = 1 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records waiting for the writer: their lines back to back, and where each ends.
#[derive(Default)]
struct Lines {
    bytes: Vec<u8>,
    /// The offset just past each line's newline.
    ends: Vec<usize>,
}

/// What the request path and the writer share.
struct Queue {
    lines: Mutex<Lines>,
    reopen: Mutex<Option<AccessLogConfig>>,
    /// Flush requests: `asked` is bumped by `flush`, `done` by the writer.
    asked: AtomicU64,
    done: Mutex<u64>,
    done_cv: Condvar,
    wake: Condvar,
    wake_lock: Mutex<()>,
    stop: AtomicBool,
}

/// The request path's handle on the access log.
pub(crate) struct AccessLog {
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    last_warn: AtomicU64,
    started: Instant,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.queue.stop.store(true, Ordering::Release);
        self.queue.wake.notify_all();
    }
}

/// The bytes [`push_json_str`] looks at twice: control characters, `"`, `\\`,
/// DEL and 0xE2 (the first byte of U+2028 and U+2029).
static ESCAPE_OR_CHECK: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0x7f] = true;
    t[0xe2] = true;
    t
};

/// Appends `n` in decimal (as `Display` writes it, without the formatter).
fn push_u64(out: &mut String, mut n: u64) {
    let mut b = [0u8; 20];
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&b[i..]).unwrap_or_default());
}

/// Appends `s` as a JSON string (quotes, backslashes and control characters
/// escaped), so a record is always exactly one line.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    // Nearly always nothing needs escaping: copy the whole text at once. (0xE2
    // starts U+2028 and U+2029, which are escaped, and other characters too.)
    if !s.bytes().any(|b| ESCAPE_OR_CHECK[usize::from(b)]) {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_json_str(out, s),
        None => out.push_str("null"),
    }
}

fn push_ts(out: &mut String, t: OffsetDateTime) {
    if let Ok(year) = u16::try_from(t.year())
        && year <= 9999
    {
        // The same text as the `write!` below, digit by digit.
        let mut b = *b"\"0000-00-00T00:00:00.000Z\"";
        let mut put = |at: usize, width: usize, mut v: u32| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(1, 4, u32::from(year));
        put(6, 2, u32::from(u8::from(t.month())));
        put(9, 2, u32::from(t.day()));
        put(12, 2, u32::from(t.hour()));
        put(15, 2, u32::from(t.minute()));
        put(18, 2, u32::from(t.second()));
        put(21, 3, u32::from(t.millisecond()));
        out.push_str(std::str::from_utf8(&b).unwrap_or_default());
        return;
    }
    let _ = write!(
        out,
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\"",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    );
}

/// A duration in milliseconds, rounded to microseconds, as `f64`'s `Display` writes
/// it: the shortest text that reads back as the same number, which for a whole
/// number of thousandths is that number with its trailing zeros dropped (exact
/// while the ulp is far below 0.001: below 10^12 µs, about 11 days).
fn push_ms(o: &mut String, d: Duration) {
    let us = (d.as_secs_f64() * 1000.0 * 1000.0).round();
    if !(0.0..1e12).contains(&us) {
        let _ = write!(o, "{}", us / 1000.0);
        return;
    }
    let us = us as u64;
    push_u64(o, us / 1000);
    let frac = us % 1000;
    if frac != 0 {
        let digits = [
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        // Trailing zeros dropped; `frac` is not 0, so a digit stays.
        let mut keep = digits.len();
        while digits[keep - 1] == b'0' {
            keep -= 1;
        }
        o.push_str(std::str::from_utf8(&digits[..keep]).unwrap_or_default());
    }
}

/// Hands `f` the record as a JSON line (with the trailing newline), formatted into
/// a buffer the thread keeps: one formatting per request, for every reader of the
/// line (the access log, the cluster's shared stream), and no allocation. Never the
/// query string, the key or its hash: the record holds none of them.
pub(crate) fn with_line<T>(r: &Record, f: impl FnOnce(&str) -> T) -> T {
    thread_local! {
        static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(512));
    }
    LINE.with(|line| match line.try_borrow_mut() {
        Ok(mut line) => {
            line.clear();
            format_into(&mut line, r);
            f(&line)
        }
        // Re-entered from `f` (not done today): a buffer of its own.
        Err(_) => {
            let mut own = String::with_capacity(512);
            format_into(&mut own, r);
            f(&own)
        }
    })
}

/// [`with_line`]'s line, appended to `o`.
fn format_into(o: &mut String, r: &Record) {
    o.push_str("{\"ts\":");
    push_ts(o, r.ts);
    o.push_str(",\"request_id\":");
    push_json_str(o, r.request_id.to_str().unwrap_or(""));
    o.push_str(",\"method\":");
    push_json_str(o, r.method.as_str());
    o.push_str(",\"path\":");
    push_json_str(o, &r.path);
    o.push_str(",\"status\":");
    push_u64(o, u64::from(r.status));
    o.push_str(",\"decision\":\"");
    o.push_str(r.decision.as_str());
    o.push('"');
    o.push_str(",\"reason\":");
    push_opt_str(o, r.reason);
    o.push_str(",\"key_id\":");
    push_opt_str(o, r.key.as_ref().map(|k| k.id.as_str()));
    o.push_str(",\"key_name\":");
    push_opt_str(o, r.key.as_ref().map(|k| &*k.name));
    o.push_str(",\"category\":");
    push_opt_str(o, r.category.as_deref());
    let mut ip = [0u8; 48];
    o.push_str(",\"ip\":\"");
    o.push_str(ip_text(r.ip, &mut ip));
    o.push_str("\",\"duration_ms\":");
    push_ms(o, r.duration);
    match r.upstream {
        Some(u) => {
            o.push_str(",\"upstream_ms\":");
            push_ms(o, u);
        }
        None => o.push_str(",\"upstream_ms\":null"),
    }
    o.push_str(",\"bytes_in\":");
    push_u64(o, r.bytes_in);
    o.push_str(",\"bytes_out\":");
    push_u64(o, r.bytes_out);
    o.push_str(",\"user_agent\":");
    match &r.user_agent {
        Some(ua) => {
            let text = String::from_utf8_lossy(ua.as_bytes());
            // The first MAX_UA characters, without copying them out.
            let end = text
                .char_indices()
                .nth(MAX_UA)
                .map_or(text.len(), |(i, _)| i);
            push_json_str(o, &text[..end]);
        }
        None => o.push_str("null"),
    }
    o.push_str("}\n");
}

impl AccessLog {
    /// Opens the log and starts the writer thread.
    pub(crate) fn start(cfg: &AccessLogConfig, metrics: Arc<Metrics>) -> io::Result<Self> {
        let sink = Sink::open(cfg.clone())?;
        let queue = Arc::new(Queue {
            lines: Mutex::new(Lines::default()),
            reopen: Mutex::new(None),
            asked: AtomicU64::new(0),
            done: Mutex::new(0),
            done_cv: Condvar::new(),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
            stop: AtomicBool::new(false),
        });
        let (q, m) = (queue.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("keygate-access-log".into())
            .spawn(move || writer(sink, &q, &m))?;
        Ok(Self {
            queue,
            metrics,
            last_warn: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    fn warn_dropped(&self) {
        let now = self.started.elapsed().as_secs() + WARN_EVERY.as_secs();
        let last = self.last_warn.load(Ordering::Relaxed);
        if now >= last + WARN_EVERY.as_secs()
            && self
                .last_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                "access log queue is full: records are being dropped (keygate_access_log_dropped_total)"
            );
        }
    }

    /// Queues one line of [`with_line`]; never blocks on I/O. The line is copied
    /// onto the queue: no allocation per record.
    pub(crate) fn push_line(&self, line: &str) {
        let queued = {
            let mut q = lock(&self.queue.lines);
            if q.ends.len() >= QUEUE {
                false
            } else {
                q.bytes.extend_from_slice(line.as_bytes());
                let end = q.bytes.len();
                q.ends.push(end);
                true
            }
        };
        if !queued {
            self.metrics.access_log_dropped.inc();
            self.warn_dropped();
        }
    }

    /// Reopens the file (after logrotate moved it, or with a new config).
    pub(crate) fn reopen(&self, cfg: &AccessLogConfig) {
        *lock(&self.queue.reopen) = Some(cfg.clone());
        self.queue.wake.notify_all();
    }

    /// Waits up to `timeout` for every record queued so far to be written.
    pub(crate) fn flush(&self, timeout: Duration) {
        let ticket = self.queue.asked.fetch_add(1, Ordering::AcqRel) + 1;
        self.queue.wake.notify_all();
        let deadline = Instant::now() + timeout;
        let mut done = lock(&self.queue.done);
        while *done < ticket {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            done = match self.queue.done_cv.wait_timeout(done, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// Where lines go, with the size for rotation.
struct Sink {
    cfg: AccessLogConfig,
    out: Option<Box<dyn Write + Send>>,
    size: u64,
    rotates: bool,
    /// A short write (a full disk) left a record without its newline: the next
    /// write starts on a fresh line, so every line stays one whole record.
    torn: bool,
}

impl Sink {
    fn open(cfg: AccessLogConfig) -> io::Result<Self> {
        let mut s = Self {
            cfg,
            out: None,
            size: 0,
            rotates: false,
            torn: false,
        };
        s.reopen()?;
        Ok(s)
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.out = None;
        match &self.cfg.target {
            LogTarget::Stdout => {
                self.out = Some(Box::new(io::stdout()));
                self.rotates = false;
            }
            LogTarget::File(path) => {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir)?;
                }
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .open(path)?;
                let meta = f.metadata()?;
                self.rotates = meta.is_file();
                self.size = meta.len();
                self.out = Some(Box::new(f));
            }
        }
        Ok(())
    }

    fn path(&self) -> Option<&Path> {
        match &self.cfg.target {
            LogTarget::File(p) => Some(p),
            LogTarget::Stdout => None,
        }
    }

    /// `access.log` → `.1`, `.1` → `.2` … keeping `max_files`.
    fn rotate(&mut self) -> io::Result<()> {
        let Some(path) = self.path().map(Path::to_path_buf) else {
            return Ok(());
        };
        self.out = None;
        let n = self.cfg.max_files;
        let name = |i: u32| -> PathBuf { PathBuf::from(format!("{}.{i}", path.display())) };
        let _ = fs::remove_file(name(n));
        for i in (1..n).rev() {
            let _ = fs::rename(name(i), name(i + 1));
        }
        fs::rename(&path, name(1))?;
        self.reopen()
    }

    /// Writes whole lines (`ends` are the offsets just past each line's newline).
    /// Returns how many lines reached the file whole, and the error that stopped
    /// the rest.
    fn write_batch(&mut self, batch: &[u8], ends: &[usize]) -> (u64, Option<io::Error>) {
        if self.rotates
            && self.size > 0
            && self.size + batch.len() as u64 > self.cfg.max_size
            && let Err(e) = self.rotate()
        {
            return (0, Some(e));
        }
        if self.out.is_none()
            && let Err(e) = self.reopen()
        {
            return (0, Some(e));
        }
        let Some(out) = self.out.as_mut() else {
            return (0, Some(io::Error::other("access log not open")));
        };
        if self.torn {
            match out.write(b"\n") {
                Ok(1) => {
                    self.torn = false;
                    self.size += 1;
                }
                Ok(_) => return (0, Some(io::ErrorKind::WriteZero.into())),
                Err(e) => return (0, Some(e)),
            }
        }
        let mut pos = 0;
        let mut error = None;
        while pos < batch.len() {
            match out.write(&batch[pos..]) {
                Ok(0) => {
                    error = Some(io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => pos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if error.is_none()
            && let Err(e) = out.flush()
        {
            error = Some(e);
        }
        self.size += pos as u64;
        let whole = ends.iter().take_while(|&&e| e <= pos).count();
        // Part of a line reached the file: end it before the next record.
        self.torn = pos > 0 && !ends.contains(&pos);
        (whole as u64, error)
    }
}

fn writer(mut sink: Sink, q: &Queue, metrics: &Metrics) {
    let mut spare = Lines::default();
    let mut last_warn: Option<Instant> = None;
    loop {
        let stopping = q.stop.load(Ordering::Acquire);
        let asked = q.asked.load(Ordering::Acquire);
        if let Some(cfg) = lock(&q.reopen).take() {
            sink.cfg = cfg;
            if let Err(e) = sink.reopen() {
                tracing::warn!(error = %e, "access log reopen failed");
            }
        }
        // Take everything queued, leaving an empty vector in its place.
        std::mem::swap(&mut *lock(&q.lines), &mut spare);
        if !spare.ends.is_empty() {
            let n = spare.ends.len() as u64;
            let (written, error) = sink.write_batch(&spare.bytes, &spare.ends);
            spare.bytes.clear();
            spare.ends.clear();
            // After a burst, do not keep megabytes around for good.
            if spare.bytes.capacity() > SPARE_BYTES {
                spare.bytes.shrink_to(SPARE_BYTES);
                spare.ends.shrink_to(SPARE_BYTES / 256);
            }
            metrics.access_log_records.inc_by(written);
            match error {
                None => {}
                Some(e) => {
                    // Exactly the records that did not reach the file whole.
                    metrics.access_log_dropped.inc_by(n - written);
                    // Reopen next time: the file may have been removed or the disk fixed.
                    sink.out = None;
                    if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                        tracing::warn!(error = %e, "access log write failed; records are being dropped (keygate_access_log_dropped_total)");
                        last_warn = Some(Instant::now());
                    }
                }
            }
        }
        {
            let mut done = lock(&q.done);
            if *done < asked {
                *done = asked;
                q.done_cv.notify_all();
            }
        }
        if stopping {
            return;
        }
        let g = lock(&q.wake_lock);
        let _ = q.wake.wait_timeout(g, TICK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A disk that takes `room` more bytes, then answers ENOSPC (a short write
    /// first, as a full filesystem does); `room` can be raised to free space.
    #[derive(Clone)]
    struct Disk(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut g = self.0.lock().unwrap();
            let room = g.1;
            if room == 0 {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            let n = buf.len().min(room);
            g.0.extend_from_slice(&buf[..n]);
            g.1 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn sink(disk: &Disk) -> Sink {
        Sink {
            cfg: AccessLogConfig {
                target: LogTarget::Stdout,
                max_size: u64::MAX,
                max_files: 1,
            },
            out: Some(Box::new(disk.clone())),
            size: 0,
            rotates: false,
            torn: false,
        }
    }

    fn batch(lines: &[&str]) -> (Vec<u8>, Vec<usize>) {
        let mut b = Vec::new();
        let mut ends = Vec::new();
        for l in lines {
            b.extend_from_slice(l.as_bytes());
            b.push(b'\n');
            ends.push(b.len());
        }
        (b, ends)
    }

    #[test]
    fn milliseconds_are_written_as_f64_display_writes_them() {
        let display =
            |d: Duration| format!("{}", (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0);
        let mut nanos: Vec<u64> = (0..300_000).map(|i| i * 997).collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            nanos.push(x % 2_000_000_000_000_000);
        }
        for n in nanos {
            let d = Duration::from_nanos(n);
            let mut o = String::new();
            push_ms(&mut o, d);
            assert_eq!(o, display(d), "{n} ns");
        }
    }

    #[test]
    fn integers_are_written_as_display_writes_them() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            499,
            65_535,
            1 << 32,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut o = String::from("x");
            push_u64(&mut o, n);
            assert_eq!(o, format!("x{n}"));
        }
    }

    #[test]
    fn the_escape_table_marks_exactly_the_bytes_to_look_at() {
        for b in 0..=255u8 {
            let want = b < 0x20 || matches!(b, b'"' | b'\\' | 0x7f | 0xe2);
            assert_eq!(ESCAPE_OR_CHECK[usize::from(b)], want, "byte {b:#x}");
        }
    }

    #[test]
    fn a_full_disk_never_joins_two_records_on_one_line_and_counts_exactly() {
        let disk = Disk(Arc::new(Mutex::new((Vec::new(), 30))));
        let mut s = sink(&disk);
        let (b, e) = batch(&[r#"{"n":1,"pad":"xxxx"}"#, r#"{"n":2,"pad":"yyyy"}"#]);
        // 21 bytes a line: the first fits, the second is torn after 9 bytes.
        let (written, err) = s.write_batch(&b, &e);
        assert_eq!(written, 1, "only the whole record counts as written");
        assert!(err.is_some());
        // Space comes back: the next record starts on a fresh line.
        disk.0.lock().unwrap().1 = 1000;
        let (b, e) = batch(&[r#"{"n":3}"#]);
        let (written, err) = s.write_batch(&b, &e);
        assert_eq!(written, 1);
        assert!(err.is_none(), "{err:?}");
        let text = String::from_utf8(disk.0.lock().unwrap().0.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text:?}");
        assert!(serde_json::from_str::<serde_json::Value>(lines[0]).is_ok());
        assert!(
            serde_json::from_str::<serde_json::Value>(lines[1]).is_err(),
            "the torn one"
        );
        assert_eq!(lines[2], r#"{"n":3}"#, "not glued to the torn record");
    }
}
