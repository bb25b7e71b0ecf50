//! What identifies one version of a file on disk (device, inode, modification
//! time, length — through symlinks, so a Kubernetes `..data` swap is seen). The keys
//! watcher and the TLS watcher compare these to notice a change for one `stat`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What identifies one version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

/// The identity of the file at `path` now (through symlinks); `None` if missing.
pub(crate) fn identity(path: &Path) -> Option<Identity> {
    let m = std::fs::metadata(path).ok()?;
    Some(Identity {
        dev: m.dev(),
        ino: m.ino(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        len: m.len(),
    })
}
