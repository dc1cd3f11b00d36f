//! `pragma transcripts import|list|search|show|export|delete`: the database side.

use anyhow::{Context, Result};
use clap::Args;
use pragma_transcripts::db::Db;
use pragma_transcripts::import::{self, Format};
use pragma_transcripts::model::Role;
use std::path::PathBuf;

use super::{filters, DbArg};

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

pub(super) fn import(a: ImportArgs) -> Result<()> {
    let mut db = Db::open(&a.db.db)?;
    // Read every file first: a bad one stops the import before anything is written.
    let mut read = Vec::new();
    for f in &a.files {
        let format = match &a.format {
            Some(s) => {
                let fmt = parse_format(s)?;
                // `inspect` names both log kinds: the extension picks.
                if fmt == Format::InspectEval && f.extension().is_some_and(|e| e == "json") {
                    Some(Format::InspectJson)
                } else {
                    Some(fmt)
                }
            }
            None => None,
        };
        let (fmt, runs) = import::read(f, format)?;
        let sha =
            pragma_model::fetch::sha256_file(f).with_context(|| format!("{}", f.display()))?;
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

pub(super) fn list(a: ListArgs) -> Result<()> {
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

pub(super) fn search(a: SearchArgs) -> Result<()> {
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

pub(super) fn show(a: ShowArgs) -> Result<()> {
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

pub(super) fn export(a: ExportArgs) -> Result<()> {
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
        None => pragma_transcripts::export::write_jsonl(&runs, &mut std::io::stdout().lock())?,
    };
    eprintln!("{n} transcripts exported");
    Ok(())
}

pub(super) fn delete(a: DeleteArgs) -> Result<()> {
    let mut db = Db::open(&a.db.db)?;
    db.delete(&a.collection)?;
    eprintln!("deleted {}", a.collection);
    Ok(())
}
