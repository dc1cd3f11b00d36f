//! `pragma transcripts ...`: parse, call `pragma_transcripts`, present.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use pragma_transcripts::db::{Db, Filter};
use pragma_transcripts::import::{self, Format};
use pragma_transcripts::model::Role;

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
    Import(ImportArgs),
    /// List collections with their runs, transcripts, messages and imported files.
    List(ListArgs),
    /// Full-text search over a collection's messages (SQLite FTS5; plain words must all
    /// occur; "a phrase", a OR b, NOT c, pre* for more), runs filtered by metadata or scores.
    Search(SearchArgs),
    /// Print one run's transcripts.
    Show(ShowArgs),
    /// Export a collection to OpenAI chat JSONL (one line per transcript, metadata kept).
    Export(ExportArgs),
    /// Run the model over every transcript of a collection (under its chat template) and
    /// store, per token, probe scores, steering-vector projections and SAE top latents,
    /// pooled per message and transcript. Resumable: a re-run scores only what is missing.
    Score(ScoreArgs),
    /// Delete a collection.
    Delete(DeleteArgs),
}

#[derive(Args)]
pub struct ScoreArgs {
    collection: String,
    /// Model: .gguf file, HF folder, or built-in name.
    #[arg(long, default_value = pragma_model::DEFAULT_MODEL)]
    model: String,
    /// A probe file (`pragma probe train`); NAME=FILE names its scores (default: the file
    /// stem). Repeatable.
    #[arg(long)]
    probe: Vec<String>,
    /// A steering vector and the layer to project on: FILE@LAYER or NAME=FILE@LAYER.
    #[arg(long)]
    vector: Vec<String>,
    /// An SAE folder (SAELens or sparsify); NAME=DIR names it. Repeatable.
    #[arg(long)]
    sae: Vec<String>,
    /// SAE latents kept per token (strongest first).
    #[arg(long, default_value_t = 16)]
    top_latents: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArg,
}

/// `NAME=VALUE` or `VALUE` (name from the file stem).
fn named(s: &str) -> (String, String) {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() && !n.contains('/') => (n.to_string(), v.to_string()),
        _ => {
            let stem = std::path::Path::new(s.split('@').next().unwrap_or(s))
                .file_stem()
                .map(|x| x.to_string_lossy().into_owned())
                .unwrap_or_else(|| s.to_string());
            (stem, s.to_string())
        }
    }
}

fn cmd_score(a: ScoreArgs) -> Result<()> {
    use pragma_transcripts::score::{Scorer, ScorerKind};
    let mut scorers = Vec::new();
    for p in &a.probe {
        let (name, file) = named(p);
        let probe = pragma_methods::probe::Probe::load(std::path::Path::new(&file))
            .with_context(|| format!("--probe {file}"))?;
        scorers.push(Scorer {
            name: format!("probe:{name}"),
            kind: ScorerKind::Probe(probe),
        });
    }
    for v in &a.vector {
        let (name, spec) = named(v);
        let (file, layer) = spec.rsplit_once('@').ok_or_else(|| {
            anyhow::anyhow!("--vector {v}: expected FILE@LAYER, e.g. vec.safetensors@12")
        })?;
        let layer: usize = layer
            .parse()
            .map_err(|_| anyhow::anyhow!("--vector {v}: layer '{layer}' is not a number"))?;
        let vector = pragma_methods::steering::SteeringVector::load(std::path::Path::new(file))
            .with_context(|| format!("--vector {file}"))?;
        scorers.push(Scorer {
            name: format!("vector:{name}@{layer}"),
            kind: ScorerKind::Vector { vector, layer },
        });
    }
    for d in &a.sae {
        let (name, dir) = named(d);
        let sae = pragma_methods::sae::Sae::load(std::path::Path::new(&dir))
            .with_context(|| format!("--sae {dir}"))?;
        scorers.push(Scorer {
            name: format!("sae:{name}"),
            kind: ScorerKind::Sae {
                sae,
                top_k: a.top_latents,
            },
        });
    }
    let mut db = Db::open(&a.db.db)?;
    // Check the collection before loading the model.
    db.transcript_count(&a.collection)?;
    let model = pragma_model::Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} transcripts  ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let r = pragma_transcripts::score::score(&mut db, &model, &a.collection, &scorers, &mut |d, t| {
        bar.set_length(t);
        bar.set_position(d);
    });
    bar.finish_and_clear();
    let r = r?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{}: scored {} transcripts ({} already scored) with {}: {} tokens in {:.1} s ({:.0} tok/s)",
            r.collection,
            r.transcripts,
            r.skipped,
            r.scorers.join(", "),
            r.tokens,
            r.seconds,
            r.tokens_per_second
        );
        if r.truncated > 0 {
            println!(
                "{} transcripts were longer than the model's context: scored up to it",
                r.truncated
            );
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ImportArgs {
    /// Files to import.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Collection to add them to.
    #[arg(long, short)]
    collection: String,
    /// Skip detection: openai, sharegpt, inspect or docent.
    #[arg(long)]
    format: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArg,
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArg,
}

#[derive(Args)]
pub struct SearchArgs {
    collection: String,
    query: String,
    /// Run filters: KEY=VALUE, KEY<X, KEY>X on metadata (`model=gpt-4`, `a.b=1`) or scores
    /// (`score.accuracy>0.5`); repeatable, all must hold.
    #[arg(long = "where", short = 'w')]
    filters: Vec<String>,
    /// Only messages of this role (system, user, assistant, tool).
    #[arg(long)]
    role: Option<String>,
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArg,
}

#[derive(Args)]
pub struct ShowArgs {
    collection: String,
    /// The run's key (as `search` and `export` print it).
    run: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArg,
}

#[derive(Args)]
pub struct ExportArgs {
    collection: String,
    /// Output file (default: stdout).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Run filters, as for search.
    #[arg(long = "where", short = 'w')]
    filters: Vec<String>,
    #[command(flatten)]
    db: DbArg,
}

#[derive(Args)]
pub struct DeleteArgs {
    collection: String,
    #[command(flatten)]
    db: DbArg,
}

fn parse_format(s: &str) -> Result<Format> {
    Ok(match s {
        "openai" => Format::OpenAi,
        "sharegpt" => Format::ShareGpt,
        "docent" => Format::Docent,
        "inspect" => Format::InspectEval,
        other => anyhow::bail!(
            "--format {other}: expected one of {}",
            Format::NAMES.join(", ")
        ),
    })
}

fn filters(v: &[String]) -> Result<Vec<Filter>> {
    Ok(v.iter()
        .map(|s| Filter::parse(s))
        .collect::<Result<_, _>>()?)
}

pub fn cmd_transcripts(c: TranscriptsCommand) -> Result<()> {
    match c {
        TranscriptsCommand::Import(a) => {
            let mut db = Db::open(&a.db.db)?;
            // Read every file first: a bad one stops the import before anything is written.
            let mut read = Vec::new();
            for f in &a.files {
                let format = match &a.format {
                    Some(s) => {
                        let fmt = parse_format(s)?;
                        // `inspect` names both log kinds: the extension picks.
                        if fmt == Format::InspectEval && f.extension().is_some_and(|e| e == "json")
                        {
                            Some(Format::InspectJson)
                        } else {
                            Some(fmt)
                        }
                    }
                    None => None,
                };
                let (fmt, runs) = import::read(f, format)?;
                let sha = pragma_model::fetch::sha256_file(f)
                    .with_context(|| format!("{}", f.display()))?;
                read.push((f, fmt, runs, sha));
            }
            let mut out = Vec::new();
            for (f, fmt, runs, sha) in read {
                let r = db.import(
                    &a.collection,
                    &f.display().to_string(),
                    &sha,
                    fmt.name(),
                    &runs,
                )?;
                if !a.json {
                    println!(
                        "{}: {} ({}): {} runs, {} transcripts, {} messages -> {}",
                        a.collection,
                        f.display(),
                        r.format,
                        r.runs,
                        r.transcripts,
                        r.messages,
                        a.db.db.display()
                    );
                }
                out.push(r);
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Ok(())
        }
        TranscriptsCommand::List(a) => {
            let db = Db::open(&a.db.db)?;
            let cs = db.collections()?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&cs)?);
            } else if cs.is_empty() {
                println!(
                    "{}: no collections (pragma transcripts import FILE --collection NAME)",
                    a.db.db.display()
                );
            } else {
                for c in cs {
                    println!(
                        "{}: {} runs, {} transcripts, {} messages (created {})",
                        c.name, c.runs, c.transcripts, c.messages, c.created
                    );
                    for (f, fmt, n) in c.imports {
                        println!("    {f} ({fmt}, {n} runs)");
                    }
                }
            }
            Ok(())
        }
        TranscriptsCommand::Search(a) => {
            let db = Db::open(&a.db.db)?;
            let role = a
                .role
                .as_deref()
                .map(|r| {
                    Role::parse(r).ok_or_else(|| {
                        anyhow::anyhow!("--role {r}: expected one of {}", Role::NAMES.join(", "))
                    })
                })
                .transpose()?;
            let hits = db.search(
                &a.collection,
                &a.query,
                &filters(&a.filters)?,
                role,
                a.limit,
            )?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&hits)?);
            } else {
                for h in &hits {
                    println!(
                        "{} T{}B{} {}: {}",
                        h.run,
                        h.transcript,
                        h.message,
                        h.role,
                        h.snippet.replace('\n', " ")
                    );
                }
                eprintln!("{} hits", hits.len());
            }
            Ok(())
        }
        TranscriptsCommand::Show(a) => {
            let db = Db::open(&a.db.db)?;
            let runs = db.runs(&a.collection, &[])?;
            let (_, run) = runs
                .into_iter()
                .find(|(_, r)| r.key == a.run)
                .ok_or_else(|| anyhow::anyhow!("{}: no run '{}'", a.collection, a.run))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&run)?);
                return Ok(());
            }
            println!("run {} ({})", run.key, run.source);
            if let Some(s) = &run.sample_id {
                println!(
                    "sample {s}, epoch {}",
                    run.epoch.map_or("-".into(), |e| e.to_string())
                );
            }
            if !run.metadata.is_empty() {
                println!(
                    "metadata: {}",
                    serde_json::Value::Object(run.metadata.clone())
                );
            }
            if !run.scores.is_empty() {
                println!("scores: {}", serde_json::Value::Object(run.scores.clone()));
            }
            for (ti, t) in run.transcripts.iter().enumerate() {
                println!(
                    "\n== transcript {ti}{}",
                    t.name
                        .as_ref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                );
                for (mi, m) in t.messages.iter().enumerate() {
                    println!("\n[T{ti}B{mi}] {}:", m.role.name());
                    if let Some(r) = &m.reasoning {
                        println!("  (reasoning) {r}");
                    }
                    println!("{}", m.content);
                    for c in &m.tool_calls {
                        println!("  -> {}({})", c.function, c.arguments);
                    }
                }
            }
            Ok(())
        }
        TranscriptsCommand::Export(a) => {
            let db = Db::open(&a.db.db)?;
            let runs: Vec<_> = db
                .runs(&a.collection, &filters(&a.filters)?)?
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            let n = match &a.out {
                Some(p) => {
                    // Atomic: written beside, renamed over.
                    let tmp = p.with_extension("jsonl.tmp");
                    let mut f = std::io::BufWriter::new(
                        std::fs::File::create(&tmp).with_context(|| tmp.display().to_string())?,
                    );
                    let n = pragma_transcripts::export::write_jsonl(&runs, &mut f)?;
                    use std::io::Write;
                    f.flush()?;
                    drop(f);
                    std::fs::rename(&tmp, p)?;
                    n
                }
                None => {
                    pragma_transcripts::export::write_jsonl(&runs, &mut std::io::stdout().lock())?
                }
            };
            eprintln!("{n} transcripts exported");
            Ok(())
        }
        TranscriptsCommand::Score(a) => cmd_score(a),
        TranscriptsCommand::Delete(a) => {
            let mut db = Db::open(&a.db.db)?;
            db.delete(&a.collection)?;
            eprintln!("deleted {}", a.collection);
            Ok(())
        }
    }
}
