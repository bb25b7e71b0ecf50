//! The one writer of keys.yaml (docs/keys-file.md): an exclusive lock on a lock file in
//! `state_dir`, read–modify–validate, a temporary file (mode 0600, or the existing
//! file's mode and owner) in the target's directory, fsync, rename over the real file
//! (through a symlink to its target), fsync of the directory. Comments and fields
//! outside the `keys:` list are kept.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::file::{KeyEntry, KeysFile};
use crate::config::LoadError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// The keys file cannot be written (a mounted Secret, a read-only file).
    #[error(
        "keys_file_read_only: {0} cannot be written (is it a mounted Secret? change it where it comes from)"
    )]
    ReadOnly(PathBuf),
    #[error("{0}")]
    Invalid(#[from] LoadError),
    /// The request does not fit the keys (duplicate name, bad value…).
    #[error("{0}")]
    Rejected(String),
    /// Another key already has this name (names are unique ignoring case).
    #[error("a key named {0} already exists")]
    NameTaken(String),
    /// No key with this id or name.
    #[error("no key with id or name {0:?} (see `keygate keys list`)")]
    NotFound(String),
    // cluster: a write the cluster store refused (409 revision_conflict, 503).
    #[error("{0}")]
    Cluster(Refusal),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_read_only(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
    ) || e.raw_os_error() == Some(30) // EROFS on older std mappings
}

/// Serialises writers of one keys file.
#[derive(Debug, Clone)]
pub(crate) struct KeysWriter {
    keys_file: PathBuf,
    lock_file: PathBuf,
}

impl KeysWriter {
    pub(crate) fn new(keys_file: &Path, state_dir: &Path) -> Self {
        Self {
            keys_file: keys_file.to_path_buf(),
            lock_file: state_dir.join("keys.lock"),
        }
    }

    pub(crate) fn keys_file(&self) -> &Path {
        &self.keys_file
    }

    /// Reads the file under the lock, lets `change` edit it, and writes the result.
    /// `change` validates (it knows the config) and returns what the caller needs.
    pub(crate) fn update<T>(
        &self,
        change: impl FnOnce(&mut KeysFile) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        if let Some(dir) = self.lock_file.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock_file)
            .map_err(io(&self.lock_file))?;
        lock.lock().map_err(io(&self.lock_file))?;
        let result = self.update_locked(change);
        let _ = lock.unlock();
        result
    }

    fn update_locked<T>(
        &self,
        change: impl FnOnce(&mut KeysFile) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let old = match fs::read_to_string(&self.keys_file) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(&self.keys_file)(e)),
        };
        if let Ok(m) = fs::metadata(&self.keys_file)
            && m.permissions().mode() & 0o222 == 0
        {
            return Err(WriteError::ReadOnly(self.keys_file.clone()));
        }
        let mut file = KeysFile::parse(&self.keys_file, &old)?;
        let out = change(&mut file)?;
        let text = splice(&old, file.api_enabled, &render_keys(&file.keys));
        write_atomic(&self.keys_file, &text)?;
        Ok(out)
    }
}

/// Writes `text` to `path` atomically (see the module docs).
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<(), WriteError> {
    write_atomic_with(path, |w| w.write_all(text.as_bytes()))
}

/// As [`write_atomic`], the content written by `fill` (through a buffer), so a
/// large file need not be built in memory first.
pub(crate) fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), WriteError> {
    // Follow a symlink to the file it names: that file is what gets replaced.
    let target = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(io(path)(e)),
    };
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let existing = fs::metadata(&target).ok();
    let mode = existing.as_ref().map_or(0o600, |m| m.mode() & 0o7777);
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| io(&dir)(std::io::Error::other(e)))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "keys.yaml".into());
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
    {
        Ok(f) => f,
        Err(e) if is_read_only(&e) => return Err(WriteError::ReadOnly(path.to_path_buf())),
        Err(e) => return Err(io(&tmp)(e)),
    };
    let cleanup = |e: WriteError| {
        let _ = fs::remove_file(&tmp);
        e
    };
    if let Some(m) = &existing {
        // Same owner as before (only possible as root or the owner; best effort).
        let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
    }
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io(&tmp))
        .map_err(cleanup)?;
    let mut buf = std::io::BufWriter::with_capacity(64 * 1024, f);
    fill(&mut buf)
        .and_then(|()| {
            buf.into_inner()
                .map_err(std::io::IntoInnerError::into_error)
        })
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))
        .map_err(cleanup)?;
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(if is_read_only(&e) {
            WriteError::ReadOnly(path.to_path_buf())
        } else {
            io(&target)(e)
        });
    }
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))?;
    Ok(())
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The `keys:` block for these entries.
pub(crate) fn render_keys(keys: &[KeyEntry]) -> String {
    if keys.is_empty() {
        return "keys: []\n".into();
    }
    let mut out = String::from("keys:\n");
    for k in keys {
        out.push_str(&format!("  - id: {}\n    name: {}\n", q(&k.id), q(&k.name)));
        for (field, value) in [
            ("sha256", &k.sha256),
            ("prefix", &k.prefix),
            ("secret", &k.secret),
            ("sealed", &k.sealed),
            ("created_at", &k.created_at),
        ] {
            if let Some(v) = value {
                out.push_str(&format!("    {field}: {}\n", q(v)));
            }
        }
        let perms: Vec<String> = k
            .permissions
            .iter()
            .map(|(c, l)| format!("{}: {}", q(c), q(l)))
            .collect();
        out.push_str(&format!("    permissions: {{ {} }}\n", perms.join(", ")));
        if let Some(r) = &k.rate_limit {
            let mut parts = Vec::new();
            if let Some(n) = r.per_second {
                parts.push(format!("per_second: {n}"));
            }
            if let Some(n) = r.per_minute {
                parts.push(format!("per_minute: {n}"));
            }
            if let Some(n) = r.burst {
                parts.push(format!("burst: {n}"));
            }
            out.push_str(&format!("    rate_limit: {{ {} }}\n", parts.join(", ")));
        }
        if let Some(e) = &k.expires_at {
            out.push_str(&format!("    expires_at: {}\n", q(e)));
        }
    }
    out
}

/// Is this line the start of a top-level YAML key (column 0, not a comment or list)?
fn is_top_level_key(line: &str) -> bool {
    line.chars()
        .next()
        .is_some_and(|c| !c.is_whitespace() && c != '#' && c != '-')
}

/// Replaces the `keys:` block and the `api_enabled:` line of `old`, keeping every
/// other line (comments included).
pub(crate) fn splice(old: &str, api_enabled: bool, keys_block: &str) -> String {
    let lines: Vec<&str> = old.lines().collect();
    let api_line = format!("api_enabled: {api_enabled}");
    let mut out = String::with_capacity(old.len() + keys_block.len());
    let mut i = 0;
    let mut wrote_keys = false;
    // An existing `api_enabled:` line is replaced where it stands.
    let mut wrote_api = false;
    let has_api = lines.iter().any(|l| l.starts_with("api_enabled:"));
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with("api_enabled:") {
            out.push_str(&api_line);
            out.push('\n');
            wrote_api = true;
            i += 1;
        } else if line.starts_with("keys:") {
            if !has_api && !wrote_api {
                out.push_str(&api_line);
                out.push('\n');
                wrote_api = true;
            }
            out.push_str(keys_block);
            wrote_keys = true;
            // Skip the old block up to the next top-level key; comments and blank
            // lines just before that key belong to it and are kept.
            let mut j = i + 1;
            while j < lines.len() && !is_top_level_key(lines[j]) {
                j += 1;
            }
            let mut k = j;
            while k > i + 1 && {
                let l = lines[k - 1].trim_start();
                l.is_empty() || (lines[k - 1].starts_with('#'))
            } {
                k -= 1;
            }
            for l in &lines[k..j] {
                out.push_str(l);
                out.push('\n');
            }
            i = j;
        } else {
            out.push_str(line);
            out.push('\n');
            i += 1;
        }
    }
    if !wrote_api {
        out.insert_str(0, &format!("{api_line}\n"));
    }
    if !wrote_keys {
        out.push_str(keys_block);
    }
    out
}

/// A write the shared store (cluster mode) refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error(
        "revision_conflict: key {id:?} is at revision {current}, not {expected}: it was changed meanwhile; read it again and retry"
    )]
    RevisionConflict {
        id: String,
        expected: u64,
        current: u64,
    },
    #[error("cluster_unavailable: {0}; nothing was changed")]
    Unavailable(String),
}

impl Refusal {
    /// Status and code for the admin API.
    pub(crate) fn status_code(&self) -> (http::StatusCode, &'static str) {
        match self {
            Self::RevisionConflict { .. } => (http::StatusCode::CONFLICT, "revision_conflict"),
            Self::Unavailable(_) => (http::StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn entry(id: &str, name: &str) -> KeyEntry {
        let mut permissions = BTreeMap::new();
        permissions.insert("*".to_string(), "read".to_string());
        KeyEntry {
            id: id.into(),
            name: name.into(),
            sha256: Some("ab".repeat(32)),
            prefix: Some("kg_abcd".into()),
            secret: None,
            sealed: None,
            created_at: Some("2026-11-26T03:00:00Z".into()),
            permissions,
            rate_limit: None,
            expires_at: None,
            revision: None, // cluster:
        }
    }

    #[test]
    fn splice_keeps_comments_outside_the_list() {
        let old = "# managed by keygate\n\n# the keys\nkeys:\n  - id: a\n    name: A # old\n    secret: x\n\n# the switch, last\napi_enabled: true\n";
        let new = splice(old, false, &render_keys(&[entry("b", "B \"quoted\" ✓")]));
        assert!(
            new.starts_with("# managed by keygate\n\n# the keys\nkeys:\n  - id: \"b\"\n"),
            "{new}"
        );
        assert!(
            new.ends_with("\n# the switch, last\napi_enabled: false\n"),
            "{new}"
        );
        assert!(!new.contains("# old"));
        let parsed = KeysFile::parse(Path::new("k"), &new).unwrap();
        assert!(!parsed.api_enabled);
        assert_eq!(parsed.keys[0].name, "B \"quoted\" ✓");
        assert_eq!(parsed.keys[0].permissions["*"], "read");
    }

    /// Files as keygate writes them, with names and values that need escapes or
    /// not: read piecewise (the fast path where it can) they are the keys the whole
    /// document gives.
    #[test]
    fn written_files_read_the_same_piecewise_and_whole() {
        // Written without escapes (read directly), and with (that piece by serde_yaml).
        let plain = [
            "Zapier",
            "café ✓",
            "100%",
            "null",
            "~",
            "yes",
            "a: b",
            "# not",
            "{x}",
            "'s'",
        ];
        let escaped = ["B \"quoted\"", "back\\slash", "tab\there"];
        let mut keys = Vec::new();
        for i in 0..700 {
            let name = if (300..310).contains(&i) {
                escaped[i % escaped.len()]
            } else {
                plain[i % plain.len()]
            };
            let mut e = entry(&format!("k{i:05}"), &format!("{name} {i}"));
            if i % 3 == 0 {
                e.permissions.insert("jobs".into(), "write".into());
            }
            if i % 10 == 0 {
                e.rate_limit = Some(crate::keys::file::KeyRateFile {
                    per_second: Some(5),
                    per_minute: None,
                    burst: (i % 20 == 0).then_some(10),
                });
            }
            if i % 7 == 0 {
                e.expires_at = Some("2027-01-01".into());
                e.sha256 = None;
                e.secret = Some(format!("operator-supplied-secret-{i:08}-xxxxxxxx"));
            }
            keys.push(e);
        }
        let text = splice("# mine\nrevision: 4\n", false, &render_keys(&keys));
        let show = |f: KeysFile| format!("{:?}", (f.api_enabled, f.revision, f.keys));
        let piecewise = KeysFile::parse(Path::new("k"), &text).unwrap();
        let whole = KeysFile::parse_whole(Path::new("k"), &text).unwrap();
        assert_eq!(piecewise.entry_positions, whole.entry_positions);
        assert_eq!(show(piecewise), show(whole));
    }

    #[test]
    fn splice_into_empty_file() {
        let new = splice("", true, &render_keys(&[]));
        assert_eq!(new, "api_enabled: true\nkeys: []\n");
        let parsed = KeysFile::parse(Path::new("k"), &new).unwrap();
        assert!(parsed.keys.is_empty());
    }

    #[test]
    fn atomic_write_keeps_mode_and_follows_symlinks() {
        let dir = std::env::temp_dir().join(format!("kg-write-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("real")).unwrap();
        let real = dir.join("real/keys.yaml");
        fs::write(&real, "keys: []\n").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.join("keys.yaml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link, "api_enabled: false\n").unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&real).unwrap(), "api_enabled: false\n");
        assert_eq!(fs::metadata(&real).unwrap().mode() & 0o777, 0o640);
        // A new file is 0600.
        let fresh = dir.join("fresh.yaml");
        write_atomic(&fresh, "x: 1\n").unwrap();
        assert_eq!(fs::metadata(&fresh).unwrap().mode() & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }
}
