//! Errors of the transcripts crate: what was expected and what was found, and where (file,
//! line or sample, field).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: a file, a record, a field, a name.
    #[error("{0}")]
    Input(String),
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Methods(#[from] pragma_methods::Error),
    #[error(transparent)]
    Model(#[from] pragma_model::Error),
    #[error(transparent)]
    Store(#[from] pragma_store::Error),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
