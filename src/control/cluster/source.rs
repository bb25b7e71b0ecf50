//! Where a replica's keys come from before (and between) syncs: the last-good copy
//! of the cluster's keys in `state_dir`, else the keys file. This is the key-source
//! seam of snapshot loading: without a `cluster:` section it reads the keys file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keys::file::KeysFile;
use crate::keys::write::write_atomic;

const LAST_GOOD: &str = "cluster_keys.json";

/// The last snapshot a replica applied, as written to `state_dir`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LastGood {
    pub(crate) name: String,
    pub(crate) epoch: String,
    pub(crate) version: u64,
    pub(crate) file: KeysFile,
}

pub(crate) fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(LAST_GOOD)
}

/// The last-good copy of cluster `name`, if there is a readable one.
pub(crate) fn read(state_dir: &Path, name: &str) -> Option<LastGood> {
    let p = path(state_dir);
    let text = std::fs::read_to_string(&p).ok()?;
    match serde_json::from_str::<LastGood>(&text) {
        Ok(lg) if lg.name == name => Some(lg),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(file = %p.display(), error = %e, "ignoring an unreadable last-good cluster copy");
            None
        }
    }
}

pub(crate) fn write(state_dir: &Path, lg: &LastGood) {
    let text = match serde_json::to_string(lg) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot serialise the last-good cluster copy");
            return;
        }
    };
    if let Err(e) = std::fs::create_dir_all(state_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| write_atomic(&path(state_dir), &text).map_err(|e| e.to_string()))
    {
        tracing::warn!(error = %e, "cannot write the last-good cluster copy");
    }
}
