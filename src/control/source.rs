//! Where keys come from: the seam between "a new set of keys" and the reloader.
//! Today one source, the keys file; a second one (a shared store) is one more
//! variant here, its config, and its wiring in the gateway.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::config::LoadError;
use crate::config::identity::{Identity, identity};
use crate::keys::file::KeysFile;

/// One source of keys and the API switch.
#[derive(Debug, Clone)]
pub(crate) enum KeySource {
    /// keys.yaml (watched, reloaded within 2 s of any change).
    File(PathBuf),
    /// Cluster mode: the keys live in the shared store; between syncs a replica
    /// starts from its last-good copy in `state_dir`, else from the keys file.
    Cluster {
        keys_file: PathBuf,
        state_dir: PathBuf,
        name: String,
    },
}

/// Keys as a source gives them: keys.yaml text (built entry by entry, see
/// [`crate::keys::store::KeySet::build_from_text`]) or an already parsed set.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeysInput<'a> {
    /// keys.yaml, read a line at a time while the set is built.
    File(&'a std::path::Path),
    Text(&'a str),
    Parsed(&'a KeysFile),
}

/// What [`KeySource::load`] read.
#[derive(Debug)]
pub(crate) enum Read {
    File(PathBuf),
    Parsed(KeysFile),
}

impl Read {
    pub(crate) fn input(&self) -> KeysInput<'_> {
        match self {
            Self::File(p) => KeysInput::File(p),
            Self::Parsed(f) => KeysInput::Parsed(f),
        }
    }
}

/// A set of keys read from a source, with the version it was read at.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) keys: Read,
    /// Taken before reading, so a change racing the read is seen as a new version.
    pub(crate) version: Option<Identity>,
    /// SHA-256 of the content read: catches a change no timestamp shows (a
    /// same-size edit within one mtime tick, a restored mtime). For a file it is
    /// taken while the set is built from it (the snapshot's `keys_digest`).
    pub(crate) digest: Option<[u8; 32]>,
}

impl KeySource {
    /// The source a config names.
    pub(crate) fn from_config(config: &crate::config::Config) -> Self {
        match &config.cluster {
            Some(c) => Self::Cluster {
                keys_file: config.keys_file.clone(),
                state_dir: config.state_dir.clone(),
                name: c.name.clone(),
            },
            None => Self::File(config.keys_file.clone()),
        }
    }

    /// The version the source is at now, cheaply (a `stat` for a file).
    pub(crate) fn version(&self) -> Option<Identity> {
        match self {
            Self::File(path)
            | Self::Cluster {
                keys_file: path, ..
            } => identity(path),
        }
    }

    /// Reads the whole set.
    pub(crate) fn load(&self) -> Result<Loaded, LoadError> {
        match self {
            Self::Cluster {
                keys_file,
                state_dir,
                name,
            } => match super::cluster::source::read(state_dir, name) {
                Some(last_good) => Ok(Loaded {
                    keys: Read::Parsed(last_good.file),
                    version: None,
                    digest: Some([0; 32]),
                }),
                None => Self::File(keys_file.clone()).load(),
            },
            Self::File(path) => Ok(Loaded {
                version: identity(path),
                keys: Read::File(path.clone()),
                digest: None,
            }),
        }
    }

    /// The digest of the content now, without parsing it.
    pub(crate) fn digest(&self) -> Result<[u8; 32], LoadError> {
        match self {
            Self::File(path)
            | Self::Cluster {
                keys_file: path, ..
            } => std::fs::read(path)
                .map(|b| Sha256::digest(&b).into())
                .map_err(|e| LoadError::unreadable(path, &e)),
        }
    }
}
