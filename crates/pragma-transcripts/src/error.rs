//! Errors of the transcripts crate: what was expected and what was found, and where (file,
//! line or sample, field). Other crates' errors are boxed to keep `Result` small.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: a file, a record, a field, a name.
    #[error("{0}")]
    Input(String),
    #[error("database: {0}")]
    Db(Box<rusqlite::Error>),
    #[error(transparent)]
    Methods(Box<pragma_methods::Error>),
    #[error(transparent)]
    Model(Box<pragma_model::Error>),
    #[error(transparent)]
    Store(Box<pragma_store::Error>),
    #[error("tensor error: {0}")]
    Candle(Box<candle_core::Error>),
}

macro_rules! boxed_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::$v(Box::new(e))
            }
        }
    )*};
}

boxed_from!(
    rusqlite::Error => Db,
    pragma_methods::Error => Methods,
    pragma_model::Error => Model,
    pragma_store::Error => Store,
    candle_core::Error => Candle
);

pub type Result<T, E = Error> = std::result::Result<T, E>;
