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
pub struct KeysFile {
    #[serde(default = "yes")]
    pub api_enabled: bool,
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    // cluster: the file's revision; in cluster mode a file is applied only when this
    // is higher than the revision the cluster last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Where each entry of `keys:` starts in the text (line, column), for errors
    /// that name an entry. Empty for flow-style lists.
    #[serde(skip)]
    pub entry_positions: Vec<(usize, usize)>,
}

/// A per-key rate in keys.yaml.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyRateFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Operator-supplied key in the clear (typically from a Kubernetes Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// AES-256-GCM sealed copy of a key keygate made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default)]
    pub permissions: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<KeyRateFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    // cluster: the key's revision in the cluster store (for If-Match); never in a file.
    #[serde(skip)]
    pub revision: Option<u64>,
}

impl KeyEntry {
    /// The masked form shown in lists: the display prefix of a key keygate made
    /// (`kg_3Xb8••••••••`); nothing of an operator-supplied secret.
    pub fn masked(&self) -> String {
        super::masked(self.prefix.as_deref().unwrap_or(""))
    }

    /// Can the full value be shown again (operator-supplied, or sealed)?
    pub fn revealable(&self) -> bool {
        self.secret.is_some() || self.sealed.is_some()
    }
}

impl KeysFile {
    /// As [`KeysFile::load`], but a missing file is an empty one (for the CLI, which
    /// may create the first key).
    pub fn load_or_empty(path: &Path) -> Result<Self, LoadError> {
        match std::fs::read_to_string(path) {
            Ok(t) => Self::parse(path, &t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::parse(path, ""),
            Err(e) => Err(LoadError::new(path, format!("cannot read: {e}"))),
        }
    }

    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LoadError::new(path, format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, LoadError> {
        if text.trim().is_empty() {
            return Ok(Self {
                api_enabled: true,
                keys: Vec::new(),
                revision: None, // cluster:
                entry_positions: Vec::new(),
            });
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
