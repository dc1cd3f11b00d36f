//! pragma-research: the research loop's records. Last stage before the front ends
//! (model -> store -> methods -> eval -> transcripts -> **research** -> CLI).
//!
//! [`runs`]: every workflow run (probe sweep, steering, SAE training, eval, patching, ...)
//! recorded in a SQLite database with its provenance: command line, pragma version,
//! sha256 of every input file, start and end, status, headline metrics and the artifacts
//! it wrote (paths, sizes, sha256), so a number can be traced to what made it.
//!
//! [`reproduce`]: headline metrics from result files, and whether a rerun reproduced its
//! run (artifacts byte-identical, metrics identical or inside the recorded CI).
//!
//! [`project`]: the research project file (`pragma.toml`: north star, proxy tasks,
//! techniques and baselines, time box, decision rule) and the decision rule's verdicts.
//!
//! [`checkin`]: run the proxy tasks, judge each technique against its baselines and the
//! last check-in, and keep the dated verdicts (runs database and `CHECKINS.md`).

pub mod checkin;
pub mod project;
pub mod reproduce;
pub mod runs;

pub use project::{verdict, Project, Score, Standing, Verdict};
pub use runs::{Artifact, Filter, NewRun, Run, RunDb};

/// Errors: each says what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("runs database {path}: {reason}")]
    Db { path: String, reason: String },
    #[error("run {0} is not in the runs database (see `pragma runs list`)")]
    NoSuchRun(i64),
    #[error("{0}")]
    Input(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
