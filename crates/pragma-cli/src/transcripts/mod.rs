//! `pragma transcripts ...`: parse, call `pragma_transcripts`, present.

use std::path::PathBuf;

mod analysis;
mod score;
mod store;

use anyhow::Result;
use clap::{Args, Subcommand};
use pragma_transcripts::db::Filter;

/// Where transcripts live unless `--db` says otherwise.
pub const DEFAULT_DB: &str = "transcripts.db";

#[derive(Args)]
pub struct DbArg {
    /// Transcript database (SQLite; created if missing).
    #[arg(long, global = true, default_value = DEFAULT_DB, env = "PRAGMA_TRANSCRIPTS_DB")]
    db: PathBuf,
}

#[derive(Subcommand)]
pub enum TranscriptsCommand {
    /// Import transcript files into a collection (created if new). Formats are detected:
    /// OpenAI chat JSONL ({"messages": [...], "metadata": {...}} per line), ShareGPT JSONL
    /// ({"conversations": [{"from", "value"}]}), Inspect AI logs (.eval and .json) and
    /// Docent AgentRun JSON. Each file is imported whole or not at all.
    Import(store::ImportArgs),
    /// List collections with their runs, transcripts, messages and imported files.
    List(store::ListArgs),
    /// Full-text search over a collection's messages (SQLite FTS5; plain words must all
    /// occur; "a phrase", a OR b, NOT c, pre* for more), runs filtered by metadata or scores.
    Search(store::SearchArgs),
    /// Print one run's transcripts.
    Show(store::ShowArgs),
    /// Export a collection to OpenAI chat JSONL (one line per transcript, metadata kept).
    Export(store::ExportArgs),
    /// Run the model over every transcript of a collection (under its chat template) and
    /// store, per token, probe scores, steering-vector projections and SAE top latents,
    /// pooled per message and transcript. Resumable: a re-run scores only what is missing.
    Score(score::ScoreArgs),
    /// What distinguishes collection B from A: SAE latents (if both were scored with one)
    /// and n-grams that are more frequent on one side, each with a p-value (Fisher exact,
    /// or the sign test when runs pair up by sample id and epoch), found on half of the
    /// transcripts and checked as a detector (AUROC) on the other half, with examples.
    Diff(analysis::DiffArgs),
    /// Check one hypothesis from `diff` as a detector: AUROC of B against A with a bootstrap
    /// interval and a permutation p-value, on fresh collections (new rollouts, another
    /// checkpoint) or, with --heldout, on the half of the diff's split it was not found on.
    Check(analysis::CheckArgs),
    /// Have the model answer chat prompts (JSONL: {"user", "system"?, "id"?, "metadata"?}
    /// per line) and import the answers as a collection: transcripts of your model to
    /// explore, or an example collection with a planted quirk.
    Rollout(score::RolloutArgs),
    /// Transcripts (or messages) far from the rest of the collection on a scorer: a probe's
    /// or vector's pooled value (robust z-score), or an SAE's rare latents; with the reason.
    Outliers(analysis::OutliersArgs),
    /// Group a collection's transcripts (k-means on SAE latent presence, or on words
    /// without --sae), each group described by its most over-represented latents and words.
    Cluster(analysis::ClusterArgs),
    /// Delete a collection.
    Delete(store::DeleteArgs),
}

pub(super) fn filters(v: &[String]) -> Result<Vec<Filter>> {
    Ok(v.iter()
        .map(|s| Filter::parse(s))
        .collect::<Result<_, _>>()?)
}

pub fn cmd_transcripts(c: TranscriptsCommand) -> Result<()> {
    match c {
        TranscriptsCommand::Import(a) => store::import(a),
        TranscriptsCommand::List(a) => store::list(a),
        TranscriptsCommand::Search(a) => store::search(a),
        TranscriptsCommand::Show(a) => store::show(a),
        TranscriptsCommand::Export(a) => store::export(a),
        TranscriptsCommand::Delete(a) => store::delete(a),
        TranscriptsCommand::Score(a) => score::cmd_score(a),
        TranscriptsCommand::Rollout(a) => score::cmd_rollout(a),
        TranscriptsCommand::Diff(a) => analysis::cmd_diff(a),
        TranscriptsCommand::Check(a) => analysis::cmd_check(a),
        TranscriptsCommand::Outliers(a) => analysis::cmd_outliers(a),
        TranscriptsCommand::Cluster(a) => analysis::cmd_cluster(a),
    }
}
