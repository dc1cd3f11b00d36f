//! Errors of the activation store: each says what was expected and what was found.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("corpus: {0}")]
    Corpus(String),

    /// A bad option value (e.g. a --shard spec), said in full.
    #[error("{0}")]
    Invalid(String),

    #[error("store {path}: {reason}")]
    Store { path: PathBuf, reason: String },

    #[error("store {path} was made with other settings ({what}: store has {found}, this run asks for {expected}); use another --out or delete the store")]
    Mismatch {
        path: PathBuf,
        what: String,
        expected: String,
        found: String,
    },

    #[error("shard {file} is corrupt: {reason}; the store cannot be read or resumed past it: recompute it with `pragma cache` into a new folder")]
    CorruptShard { file: PathBuf, reason: String },

    #[error("hook '{name}' is not in this store; it has: {available}")]
    UnknownHook { name: String, available: String },

    #[error("object store {url}: {reason}")]
    Remote { url: String, reason: String },

    #[error(transparent)]
    Model(#[from] pragma_model::Error),

    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
