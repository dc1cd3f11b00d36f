//! Errors of the methods crate: what was expected and what was found.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Model(#[from] pragma_model::Error),
    #[error(transparent)]
    Store(#[from] pragma_store::Error),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
