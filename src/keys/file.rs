//! The serde mirror of keys.yaml. Validation against the config's categories happens
//! in [`crate::keys::store::KeySet::build`], whose errors name the entry
//! (`keys[3] (id k7f3a9c1e): permissions.jobs: unknown level "admin"`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{LoadError, parse_yaml};

mod canonical;

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
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyRateFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) burst: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
        refuse_blank(path, text)?;
        let mut keys = Vec::new();
        let read = Pieces::new(|_, _, e| {
            keys.push(e);
            Ok::<(), ()>(())
        })
        .text(text);
        match read {
            Ok(mut file) => {
                file.keys = keys;
                Ok(file)
            }
            Err(_) => Self::parse_whole(path, text),
        }
    }

    /// The whole document at once: the reference reading (and the one whose errors
    /// name the field and line), but the YAML parser holds every event of the
    /// document meanwhile — a few hundred MB for 100,000 keys.
    pub(crate) fn parse_whole(path: &Path, text: &str) -> Result<Self, LoadError> {
        refuse_blank(path, text)?;
        let mut file: Self = parse_yaml(path, text)?;
        file.entry_positions = entry_positions(text);
        if file.entry_positions.len() != file.keys.len() {
            file.entry_positions.clear();
        }
        Ok(file)
    }
}

/// An empty file is far more likely a failed write or a bad mount than an intent to
/// revoke every key: refuse it (fail safe: the last good keys stay).
pub(crate) fn refuse_blank(path: &Path, text: &str) -> Result<(), LoadError> {
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
    Ok(())
}

/// Entries parsed per YAML document when a keys file is read piecewise: large
/// enough to amortise the parser's set-up, small enough that its event buffer
/// stays well under a megabyte.
const ENTRIES_PER_PIECE: usize = 256;

/// Why a piecewise read stopped.
#[derive(Debug)]
pub(crate) enum Stop<E> {
    /// The layout is not one that is cut, or a piece did not parse alone: read
    /// the whole document instead (it gives the reference answer and its errors).
    Whole,
    /// The callback's error (reported once every piece has parsed).
    Each(E),
    /// The text could not be read.
    Io(std::io::Error),
}

/// keys.yaml read in pieces that parse alone, line by line: the top-level fields
/// (the `keys:` block blanked out) and runs of the block list's items, so neither
/// the whole text nor the whole parse is ever held.
///
/// YAML's block structure is indentation: the text from one `- ` at the list's
/// column to the next is exactly one item, so each run parses to the items the
/// whole document holds. What could make a piece mean something else makes it
/// fail instead (an alias to an anchor in another piece, a construct spanning a
/// cut), and any failure is [`Stop::Whole`]: the pieces are only ever a cheaper
/// route to the same answer. Layouts not cut at all: a flow list (`keys: [...]`),
/// more than one `keys:`, directives and document markers, a file without keys.
pub(crate) struct Pieces<E, F> {
    each: F,
    /// The document without the `keys:` block, lines kept (for error positions).
    header: String,
    /// The current run of items, and how many it holds.
    run: String,
    run_items: usize,
    /// Items handed to `each` so far.
    done: usize,
    positions: Vec<(usize, usize)>,
    keys_lines: usize,
    in_keys: bool,
    indent: Option<usize>,
    line_no: usize,
    failed: Option<E>,
}

impl<E, F: FnMut(usize, (usize, usize), KeyEntry) -> Result<(), E>> Pieces<E, F> {
    pub(crate) fn new(each: F) -> Self {
        Self {
            each,
            header: String::new(),
            run: String::new(),
            run_items: 0,
            done: 0,
            positions: Vec::new(),
            keys_lines: 0,
            in_keys: false,
            indent: None,
            line_no: 0,
            failed: None,
        }
    }

    /// Reads all of `text`.
    pub(crate) fn text(mut self, text: &str) -> Result<KeysFile, Stop<E>> {
        for line in text.split_inclusive('\n') {
            self.line(line)?;
        }
        self.finish()
    }

    /// Reads everything `r` gives, also returning the SHA-256 of the bytes read.
    pub(crate) fn reader(
        mut self,
        mut r: impl std::io::BufRead,
    ) -> Result<(KeysFile, [u8; 32]), Stop<E>> {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).map_err(Stop::Io)? == 0 {
                break;
            }
            digest.update(line.as_bytes());
            self.line(&line)?;
        }
        Ok((self.finish()?, digest.finalize().into()))
    }

    /// One line, with its line feed.
    fn line(&mut self, line: &str) -> Result<(), Stop<E>> {
        self.line_no += 1;
        let content = line.trim_end_matches(['\n', '\r']);
        let trimmed = content.trim_start();
        let col = content.len() - trimmed.len();
        if col == 0
            && (trimmed.starts_with('%')
                || trimmed.starts_with("---")
                || trimmed.starts_with("..."))
        {
            return Err(Stop::Whole);
        }
        let top_level = col == 0
            && !trimmed.is_empty()
            && !trimmed.starts_with('#')
            && !trimmed.starts_with('-');
        if top_level {
            self.in_keys = false;
            if let Some(rest) = trimmed.strip_prefix("keys:") {
                let rest = rest.trim_start();
                if !(rest.is_empty() || rest.starts_with('#')) {
                    return Err(Stop::Whole); // `keys: [...]`, `keys: []`
                }
                self.keys_lines += 1;
                if self.keys_lines > 1 {
                    return Err(Stop::Whole);
                }
                self.in_keys = true;
                self.header.push('\n');
                return Ok(());
            }
        }
        if !self.in_keys {
            self.header.push_str(content);
            self.header.push('\n');
            return Ok(());
        }
        self.header.push('\n');
        let item =
            (trimmed == "-" || trimmed.starts_with("- ")) && self.indent.is_none_or(|i| i == col);
        if item {
            self.indent = Some(col);
            if self.run_items == ENTRIES_PER_PIECE {
                self.parse_run()?;
            }
            self.run_items += 1;
            self.positions.push((self.line_no, col + 1));
        } else if self.run_items == 0 && self.done == 0 {
            if trimmed.is_empty() || trimmed.starts_with('#') {
                return Ok(());
            }
            return Err(Stop::Whole); // something between `keys:` and its first item
        }
        self.run.push_str(line);
        Ok(())
    }

    /// Parses the current run and hands its items on.
    fn parse_run(&mut self) -> Result<(), Stop<E>> {
        if self.run_items == 0 {
            return Ok(());
        }
        // The layout keygate writes is read directly; anything else by serde_yaml.
        let entries: Vec<KeyEntry> = match canonical::entries(&self.run, self.run_items) {
            Some(entries) => entries,
            None => serde_yaml::from_str(&self.run).map_err(|_| Stop::Whole)?,
        };
        if entries.len() != self.run_items {
            return Err(Stop::Whole);
        }
        for e in entries {
            let at = self.positions.get(self.done).copied().unwrap_or_default();
            if self.failed.is_none()
                && let Err(err) = (self.each)(self.done, at, e)
            {
                self.failed = Some(err);
            }
            self.done += 1;
        }
        self.run.clear();
        self.run_items = 0;
        Ok(())
    }

    fn finish(mut self) -> Result<KeysFile, Stop<E>> {
        if self.keys_lines != 1 {
            return Err(Stop::Whole);
        }
        self.parse_run()?;
        let header: Header = if self.header.trim().is_empty() {
            Header {
                api_enabled: true,
                revision: None,
            }
        } else {
            serde_yaml::from_str(&self.header).map_err(|_| Stop::Whole)?
        };
        if let Some(e) = self.failed {
            return Err(Stop::Each(e));
        }
        Ok(KeysFile {
            api_enabled: header.api_enabled,
            keys: Vec::new(),
            revision: header.revision,
            entry_positions: self.positions,
        })
    }
}

/// The top-level fields of keys.yaml (what [`Pieces`]'s header holds).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    #[serde(default = "yes")]
    api_enabled: bool,
    #[serde(default)]
    revision: Option<u64>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(t: &str) -> String {
        format!(
            "{:?}",
            KeysFile::parse_whole(Path::new("k"), t).map(|f| (f.api_enabled, f.revision, f.keys))
        )
    }

    fn piecewise(t: &str) -> Option<String> {
        let mut keys = Vec::new();
        let f = Pieces::new(|_, _, e| {
            keys.push(e);
            Ok::<(), ()>(())
        })
        .text(t)
        .ok()?;
        Some(format!(
            "{:?}",
            Ok::<_, LoadError>((f.api_enabled, f.revision, keys))
        ))
    }

    #[test]
    fn pieces_read_as_the_whole_document() {
        let mut many = String::from("# keys\napi_enabled: false\nkeys:\n");
        for i in 0..600 {
            many.push_str(&format!(
                "- id: k{i}\n  # a comment\n  name: \"N {i}\"\n  sha256: {:064x}\n  permissions: {{jobs: read}}\n\n",
                i
            ));
        }
        many.push_str("revision: 7\n");
        for t in [
            many.as_str(),
            "keys:\n  - id: a\n    name: A\n    secret: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'\n",
            "keys:\n-\n  id: a\n  name: |-\n    two\n    lines\n  sha256: x\r\n",
            "revision: 3\nkeys: # the list\n- {id: a, name: A}\n- id: b\n  name: B\n",
        ] {
            assert_eq!(piecewise(t).as_deref(), Some(whole(t).as_str()), "{t}");
        }
    }

    #[test]
    fn layouts_not_cut_or_failing_pieces_are_read_whole() {
        // Not cut at all.
        for t in [
            "keys: []\n",
            "keys: [{id: a, name: A}]\n",
            "%YAML 1.2\n---\nkeys:\n- id: a\n",
            "keys:\n- id: a\nkeys:\n- id: b\n",
        ] {
            assert!(piecewise(t).is_none(), "{t}");
        }
        // Cut, but a piece does not parse alone: the caller reads the whole.
        let mut alias = String::from("keys:\n- &k {id: a, name: A}\n");
        for i in 0..ENTRIES_PER_PIECE {
            alias.push_str(&format!("- {{id: b{i}, name: B{i}}}\n"));
        }
        alias.push_str("- *k\n");
        let alias = alias.as_str();
        assert!(piecewise(alias).is_none());
        let tab = "keys:\n- id: a\n  name: A\n-\tid: b\n";
        assert!(piecewise(tab).is_none() || piecewise(tab).as_deref() == Some(whole(tab).as_str()));
        // Through `parse`, the answer is always the whole document's.
        for t in [alias, tab, "api_enabled: nope\nkeys:\n- id: a\n  name: A\n"] {
            assert_eq!(
                format!(
                    "{:?}",
                    KeysFile::parse(Path::new("k"), t).map(|f| (f.api_enabled, f.revision, f.keys))
                ),
                whole(t)
            );
        }
    }
}
