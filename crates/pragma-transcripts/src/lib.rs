//! pragma-transcripts: transcripts joined with the model's internals.
//!
//! Fifth stage of the data flow (model -> store -> methods -> eval -> **transcripts** ->
//! front ends). The data model ([`model`]) is Docent's (collection -> run -> transcript ->
//! message) with Inspect AI's sample identity on the run; [`import`] reads OpenAI and
//! ShareGPT JSONL, Inspect AI logs and Docent JSON; [`db`] stores them in SQLite with an
//! FTS5 index; [`spans`] maps each message to its tokens under the model's chat template.
//!
//! ```no_run
//! use pragma_transcripts::{db::Db, import};
//! let mut db = Db::open(std::path::Path::new("transcripts.db"))?;
//! let path = std::path::Path::new("runs.jsonl");
//! let (format, runs) = import::read(path, None)?;
//! db.import("my-runs", "runs.jsonl", "sha256-of-the-file", format.name(), &runs)?;
//! for hit in db.search("my-runs", "refund policy", &[], None, 10)? {
//!     println!("{} message {}: {}", hit.run, hit.message, hit.snippet);
//! }
//! # Ok::<(), pragma_transcripts::Error>(())
//! ```

pub mod analysis;
pub mod check;
pub mod db;
pub mod diff;
pub mod error;
pub mod export;
pub mod import;
pub mod model;
pub mod rollout;
pub mod score;
pub mod spans;
pub mod view;

pub use error::{Error, Result};
