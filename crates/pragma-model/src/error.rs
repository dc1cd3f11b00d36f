//! One error type for the model crate. Every variant says what was expected
//! and what was found, so the CLI can print it as a single line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path} is not a GGUF file: expected magic bytes \"GGUF\", found {found:?}")]
    NotGguf { path: PathBuf, found: String },

    #[error("{path} is a corrupt or truncated GGUF file: {reason}")]
    CorruptGguf { path: PathBuf, reason: String },

    #[error(
        "{path}: a tensor has dtype {found}, which pragma cannot read (supported: {supported})"
    )]
    UnsupportedDtype {
        path: PathBuf,
        found: String,
        supported: &'static str,
    },

    #[error(
        "{path}: its weights need {need_mb:.0} MB in memory ({mode}), but {available_mb:.0} MB {why}; \
         use a smaller or more quantized file{hint}"
    )]
    TooLarge {
        path: PathBuf,
        need_mb: f64,
        available_mb: f64,
        mode: &'static str,
        why: &'static str,
        hint: &'static str,
    },

    #[error("unsupported architecture '{found}': expected one of {expected}")]
    UnknownArchitecture { found: String, expected: String },

    #[error("{source_name}: missing tensor '{name}'")]
    MissingTensor { source_name: String, name: String },

    #[error("{source_name}: tensor '{name}' has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        source_name: String,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("{source_name}: missing metadata '{key}'")]
    MissingMetadata { source_name: String, key: String },

    #[error("invalid model config: {0}")]
    Config(String),

    #[error("unknown hook point '{name}'{}", did_you_mean(.suggestions))]
    UnknownHook {
        name: String,
        suggestions: Vec<String>,
    },

    #[error("hook '{hook}': {reason}")]
    BadHook { hook: String, reason: String },

    #[error(
        "{name}: values reach |x| = {max_abs:.4e}, beyond {dtype}'s range: storing them as {dtype} \
         would write infinities; use a dtype that holds them ({holds})"
    )]
    LossyWrite {
        name: String,
        max_abs: f32,
        dtype: String,
        holds: String,
    },

    #[error("input has {len} tokens but the model's context length is {ctx}")]
    ContextOverflow { len: usize, ctx: usize },

    #[error("invalid sampling parameter: {0}")]
    InvalidSampling(String),

    #[error("invalid input: {0}")]
    InvalidInput(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}")]
    ChatTemplate(String),

    #[error("model fetch: {0}")]
    Fetch(String),

    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

fn did_you_mean(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", suggestions.join(", "))
    }
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
