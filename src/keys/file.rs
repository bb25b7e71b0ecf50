//! The serde mirror of keys.yaml. Validation against the config's categories happens
//! in [`crate::keys::store::KeySet::build`], whose errors name the entry
//! (`keys[3] (id k7f3a9c1e): permissions.jobs: unknown level "admin"`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{LoadError, parse_yaml};

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeysFile {
    #[serde(default = "yes")]
    pub(crate) api_enabled: bool,
    #[serde(default)]
    pub(crate) keys: Vec<KeyEntry>,
    // cluster: the file's revision; in cluster mode a file is applied only when this
    // is higher than the revision the cluster last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) revision: Option<u64>,
    /// Where each entry of `keys:` starts in the text (line, column), for errors
    /// that name an entry. Empty for flow-style lists.
    #[serde(skip)]
    pub(crate) entry_positions: Vec<(usize, usize)>,
}

/// A per-key rate in keys.yaml.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyRateFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) burst: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyEntry {
    pub(crate) id: String,
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prefix: Option<String>,
    /// Operator-supplied key in the clear (typically from a Kubernetes Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) secret: Option<String>,
    /// AES-256-GCM sealed copy of a key keygate made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sealed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created_at: Option<String>,
    #[serde(default)]
    pub(crate) permissions: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rate_limit: Option<KeyRateFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expires_at: Option<String>,
    // cluster: the key's revision in the cluster store (for If-Match); never in a file.
    #[serde(skip)]
    pub(crate) revision: Option<u64>,
}

impl KeyEntry {
    /// The masked form shown in lists: the display prefix of a key keygate made
    /// (`kg_3Xb8••••••••`); nothing of an operator-supplied secret.
    pub(crate) fn masked(&self) -> String {
        super::masked(self.prefix.as_deref().unwrap_or(""))
    }

    /// Can the full value be shown again (operator-supplied, or sealed)?
    pub(crate) fn revealable(&self) -> bool {
        self.secret.is_some() || self.sealed.is_some()
    }
}

impl KeysFile {
    /// As [`KeysFile::load`], but a missing file is an empty one (for the CLI, which
    /// may create the first key).
    pub(crate) fn load_or_empty(path: &Path) -> Result<Self, LoadError> {
        match std::fs::read_to_string(path) {
            Ok(t) => Self::parse(path, &t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::empty()),
            Err(e) => Err(LoadError::unreadable(path, &e)),
        }
    }

    pub(crate) fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::unreadable(path, &e))?;
        Self::parse(path, &text)
    }

    /// A new file: the API on, no keys.
    pub(crate) fn empty() -> Self {
        Self {
            api_enabled: true,
            keys: Vec::new(),
            revision: None, // cluster:
            entry_positions: Vec::new(),
        }
    }

    pub(crate) fn parse(path: &Path, text: &str) -> Result<Self, LoadError> {
        // An empty file is far more likely a failed write or a bad mount than an
        // intent to revoke every key: refuse it (fail safe: the last good keys stay).
        let blank = text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#')
        });
        if blank {
            return Err(LoadError::new(
                path,
                "the keys file is empty; to have no keys, write `keys: []`",
            ));
        }
        let mut file: Self = parse_yaml(path, text)?;
        file.entry_positions = entry_positions(text);
        if file.entry_positions.len() != file.keys.len() {
            file.entry_positions.clear();
        }
        Ok(file)
    }
}

/// Line and column of each `- ` item of the top-level block list `keys:`.
fn entry_positions(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut in_keys = false;
    let mut indent: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let col = line.len() - trimmed.len();
        if col == 0 && !trimmed.is_empty() && !trimmed.starts_with('#') && !trimmed.starts_with('-')
        {
            in_keys = trimmed.starts_with("keys:");
            continue;
        }
        if in_keys
            && (trimmed == "-" || trimmed.starts_with("- "))
            && indent.is_none_or(|i| i == col)
        {
            indent = Some(col);
            out.push((n + 1, col + 1));
        }
    }
    out
}
