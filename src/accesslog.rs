//! The access log (SPEC §6): one JSON object per line for every request.
//!
//! The request path serialises its record and hands it to a bounded queue with
//! `try_send`: it never waits on the disk. A dedicated thread batches lines into
//! writes, rotates by size (`access.log` → `access.log.1` … `.N`), reopens on
//! demand (SIGHUP, for logrotate) and flushes on shutdown. When the queue is full or
//! a write fails (full or broken disk), records are dropped and counted, with a
//! warning at most every 10 s; writing resumes when the disk recovers.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::config::{AccessLogConfig, LogTarget};
use crate::metrics::Metrics;
use crate::record::Record;

/// Records queued for the writer at most (about 3 MB of lines).
const QUEUE: usize = 16_384;
/// `user_agent` is cut to this many characters.
const MAX_UA: usize = 256;
const WARN_EVERY: Duration = Duration::from_secs(10);

enum Msg {
    Line(String),
    Reopen(AccessLogConfig),
    Flush(SyncSender<()>),
}

/// The request path's handle on the access log.
pub struct AccessLog {
    tx: SyncSender<Msg>,
    metrics: Arc<Metrics>,
    last_warn: AtomicU64,
    started: Instant,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json's escaping: quotes, backslashes, control characters; always one line.
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("\"\""),
    }
}

fn push_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_json_str(out, s),
        None => out.push_str("null"),
    }
}

fn push_ts(out: &mut String, t: OffsetDateTime) {
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

/// One record as a JSON line (with the trailing newline). Never the query string,
/// the key or its hash: the record holds none of them.
pub fn format_record(r: &Record) -> String {
    let mut o = String::with_capacity(320);
    o.push_str("{\"ts\":");
    push_ts(&mut o, r.ts);
    o.push_str(",\"request_id\":");
    push_json_str(&mut o, r.request_id.to_str().unwrap_or(""));
    o.push_str(",\"method\":");
    push_json_str(&mut o, r.method.as_str());
    o.push_str(",\"path\":");
    push_json_str(&mut o, &r.path);
    let _ = write!(
        o,
        ",\"status\":{},\"decision\":\"{}\"",
        r.status,
        r.decision.as_str()
    );
    o.push_str(",\"key_id\":");
    push_opt_str(&mut o, r.key.as_ref().map(|k| k.id.as_str()));
    o.push_str(",\"key_name\":");
    push_opt_str(&mut o, r.key.as_ref().map(|k| &*k.name));
    o.push_str(",\"category\":");
    push_opt_str(&mut o, r.category.as_deref());
    let _ = write!(o, ",\"ip\":\"{}\"", r.ip);
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let _ = write!(o, ",\"duration_ms\":{}", ms(r.duration));
    match r.upstream {
        Some(u) => {
            let _ = write!(o, ",\"upstream_ms\":{}", ms(u));
        }
        None => o.push_str(",\"upstream_ms\":null"),
    }
    let _ = write!(
        o,
        ",\"bytes_in\":{},\"bytes_out\":{}",
        r.bytes_in, r.bytes_out
    );
    o.push_str(",\"user_agent\":");
    match &r.user_agent {
        Some(ua) => {
            let text = String::from_utf8_lossy(ua.as_bytes());
            let cut: String = text.chars().take(MAX_UA).collect();
            push_json_str(&mut o, &cut);
        }
        None => o.push_str("null"),
    }
    o.push_str("}\n");
    o
}

impl AccessLog {
    /// Opens the log and starts the writer thread.
    pub fn start(cfg: &AccessLogConfig, metrics: Arc<Metrics>) -> io::Result<Self> {
        let sink = Sink::open(cfg.clone())?;
        let (tx, rx) = sync_channel(QUEUE);
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("keygate-access-log".into())
            .spawn(move || writer(sink, rx, m))?;
        Ok(Self {
            tx,
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

    /// Queues a record; never blocks.
    pub fn record(&self, r: &Record) {
        match self.tx.try_send(Msg::Line(format_record(r))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.access_log_dropped.inc();
                self.warn_dropped();
            }
        }
    }

    /// Reopens the file (after logrotate moved it, or with a new config).
    pub fn reopen(&self, cfg: &AccessLogConfig) {
        let _ = self.tx.send(Msg::Reopen(cfg.clone()));
    }

    /// Waits up to `timeout` for every queued record to be written.
    pub fn flush(&self, timeout: Duration) {
        let (ack, done) = sync_channel(1);
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(timeout);
        }
    }
}

/// Where lines go, with the size for rotation.
struct Sink {
    cfg: AccessLogConfig,
    out: Option<Box<dyn Write + Send>>,
    size: u64,
    rotates: bool,
}

impl Sink {
    fn open(cfg: AccessLogConfig) -> io::Result<Self> {
        let mut s = Self {
            cfg,
            out: None,
            size: 0,
            rotates: false,
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

    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        if self.rotates && self.size > 0 && self.size + batch.len() as u64 > self.cfg.max_size {
            self.rotate()?;
        }
        if self.out.is_none() {
            self.reopen()?;
        }
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("access log not open"))?;
        out.write_all(batch)?;
        out.flush()?;
        self.size += batch.len() as u64;
        Ok(())
    }
}

/// Lines per write at most; a batch never spans a rotation by more than this.
const BATCH_LINES: usize = 256;

fn writer(mut sink: Sink, rx: Receiver<Msg>, metrics: Arc<Metrics>) {
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut lines = 0u64;
    let mut last_warn: Option<Instant> = None;
    let mut flush = |sink: &mut Sink, batch: &mut Vec<u8>, lines: &mut u64| {
        if batch.is_empty() {
            return;
        }
        match sink.write_batch(batch) {
            Ok(()) => metrics.access_log_records.inc_by(*lines),
            Err(e) => {
                metrics.access_log_dropped.inc_by(*lines);
                // Reopen next time: the file may have been removed or the disk fixed.
                sink.out = None;
                if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    tracing::warn!(error = %e, "access log write failed; records are being dropped (keygate_access_log_dropped_total)");
                    last_warn = Some(Instant::now());
                }
            }
        }
        batch.clear();
        *lines = 0;
    };
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(l) => {
                    batch.extend_from_slice(l.as_bytes());
                    lines += 1;
                    if lines as usize >= BATCH_LINES {
                        flush(&mut sink, &mut batch, &mut lines);
                    }
                }
                Msg::Reopen(cfg) => {
                    flush(&mut sink, &mut batch, &mut lines);
                    sink.cfg = cfg;
                    if let Err(e) = sink.reopen() {
                        tracing::warn!(error = %e, "access log reopen failed");
                    }
                }
                Msg::Flush(ack) => {
                    flush(&mut sink, &mut batch, &mut lines);
                    let _ = ack.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        flush(&mut sink, &mut batch, &mut lines);
    }
    flush(&mut sink, &mut batch, &mut lines);
}
