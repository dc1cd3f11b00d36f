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
    /// What distinguishes collection B from A: SAE latents (if both were scored with one)
    /// and n-grams that are more frequent on one side, each with a p-value (Fisher exact,
    /// or the sign test when runs pair up by sample id and epoch), found on half of the
    /// transcripts and checked as a detector (AUROC) on the other half, with examples.
    Diff(DiffArgs),
    /// Have the model answer chat prompts (JSONL: {"user", "system"?, "id"?, "metadata"?}
    /// per line) and import the answers as a collection: transcripts of your model to
    /// explore, or an example collection with a planted quirk.
    Rollout(RolloutArgs),
    /// Transcripts (or messages) far from the rest of the collection on a scorer: a probe's
    /// or vector's pooled value (robust z-score), or an SAE's rare latents; with the reason.
    Outliers(OutliersArgs),
    /// Group a collection's transcripts (k-means on SAE latent presence, or on words
    /// without --sae), each group described by its most over-represented latents and words.
    Cluster(ClusterArgs),
    /// Delete a collection.
    Delete(DeleteArgs),
}

#[derive(Args)]
pub struct OutliersArgs {
    collection: String,
    /// A scorer name as `score` made it (probe:NAME, vector:NAME@L, sae:NAME).
    #[arg(long)]
    scorer: String,
    /// Pooled value for probes and vectors: mean or max over tokens.
    #[arg(long, default_value = "max")]
    pool: String,
    /// Per message instead of per transcript (probes and vectors).
    #[arg(long)]
    messages: bool,
    #[arg(long, default_value_t = 10)]
    top: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArg,
}

#[derive(Args)]
pub struct ClusterArgs {
    collection: String,
    /// Number of clusters.
    #[arg(long, short, default_value_t = 8)]
    k: usize,
    /// Cluster on this SAE scorer's latents (default: words).
    #[arg(long)]
    sae: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArg,
}

fn cmd_outliers(a: OutliersArgs) -> Result<()> {
    use pragma_transcripts::analysis::{outliers, Pool};
    let pool = match a.pool.as_str() {
        "mean" => Pool::Mean,
        "max" => Pool::Max,
        p => anyhow::bail!("--pool {p}: expected mean or max"),
    };
    let db = Db::open(&a.db.db)?;
    let o = outliers(&db, &a.collection, &a.scorer, pool, a.messages, a.top)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&o)?);
        return Ok(());
    }
    for x in &o {
        println!(
            "{}{}: {}",
            x.run,
            x.message.map(|m| format!(" B{m}")).unwrap_or_default(),
            x.reason
        );
    }
    Ok(())
}

fn cmd_cluster(a: ClusterArgs) -> Result<()> {
    let db = Db::open(&a.db.db)?;
    let c =
        pragma_transcripts::analysis::clusters(&db, &a.collection, a.sae.as_deref(), a.k, a.seed)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    println!(
        "{}: {} clusters on {}",
        c.collection,
        c.clusters.len(),
        c.features
    );
    for (i, cl) in c.clusters.iter().enumerate() {
        let fmt = |v: &[(String, f64, f64)]| {
            v.iter()
                .map(|(w, s, l)| format!("{w} ({:.0}%, x{l:.1})", 100.0 * s))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("\ncluster {i}: {} transcripts", cl.size);
        println!("  over-represented: {}", fmt(&cl.top));
        if !cl.words.is_empty() {
            println!("  words: {}", fmt(&cl.words));
        }
        println!(
            "  e.g. {}",
            cl.examples
                .iter()
                .map(|e| e.1.clone())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct RolloutArgs {
    /// Prompts file (JSONL).
    prompts: PathBuf,
    #[arg(long, short)]
    collection: String,
    #[arg(long, default_value = pragma_model::DEFAULT_MODEL)]
    model: String,
    #[arg(long, default_value_t = 48)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Prompts per forward.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Steer or ablate while answering (as `pragma generate`).
    #[command(flatten)]
    intervention: crate::InterventionArgs,
    #[command(flatten)]
    db: DbArg,
}

fn cmd_rollout(a: RolloutArgs) -> Result<()> {
    use pragma_model::generate::{GenerateOptions, Sampling};
    let prompts = pragma_transcripts::rollout::read_prompts(&a.prompts)?;
    let mut db = Db::open(&a.db.db)?;
    let model = pragma_model::Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
    let bar = indicatif::ProgressBar::new(prompts.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} prompts  ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        sampling: Sampling {
            temperature: a.temperature,
            seed: a.seed,
            ..Sampling::default()
        },
        stop_tokens: model.tokenizer.info.stop_tokens.clone(),
    };
    let t = std::time::Instant::now();
    let runs = pragma_transcripts::rollout::rollouts(
        &model,
        &prompts,
        &opts,
        &crate::build_hooks(&model, &a.intervention, pragma_model::InputRule::default())?,
        a.batch,
        &mut |d, _| bar.set_position(d as u64),
    );
    bar.finish_and_clear();
    let runs = runs?;
    let sha = pragma_model::fetch::sha256_file(&a.prompts)?;
    let r = db.import(
        &a.collection,
        &a.prompts.display().to_string(),
        &format!(
            "rollout:{sha}:{}:{}:{}:{:?}:{:?}:{}:{}",
            a.model,
            a.max_tokens,
            a.temperature,
            a.intervention.actadd,
            a.intervention.ablate,
            a.intervention.actadd_layer,
            a.intervention.actadd_scale
        ),
        "rollout",
        &runs,
    )?;
    println!(
        "{}: {} answers from {} in {:.0} s -> {}",
        a.collection,
        r.runs,
        a.model,
        t.elapsed().as_secs_f64(),
        a.db.db.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct DiffArgs {
    a: String,
    b: String,
    /// Which messages make a transcript's text and latents: a role, or `all`.
    #[arg(long, default_value = "assistant")]
    role: String,
    /// The SAE scorer to compare (as `score` named it, e.g. sae:sae-l15); default: the
    /// one both collections have.
    #[arg(long)]
    sae: Option<String>,
    /// Hypotheses shown per family and direction.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Share of transcripts the hypotheses are found on (the rest checks them).
    #[arg(long, default_value_t = 0.5)]
    discovery: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Model whose tokenizer renders the latents' contexts.
    #[arg(long, default_value = pragma_model::DEFAULT_MODEL)]
    model: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArg,
}

fn cmd_diff(a: DiffArgs) -> Result<()> {
    use pragma_transcripts::diff::{decode_context, diff, DiffConfig};
    let db = Db::open(&a.db.db)?;
    let mut cfg = DiffConfig::new(&a.a, &a.b);
    cfg.role = match a.role.as_str() {
        "all" => None,
        r => Some(Role::parse(r).ok_or_else(|| {
            anyhow::anyhow!(
                "--role {r}: expected all or one of {}",
                Role::NAMES.join(", ")
            )
        })?),
    };
    cfg.sae = a.sae.clone();
    cfg.top = a.top;
    cfg.discovery = a.discovery;
    cfg.seed = a.seed;
    let mut r = diff(&db, &cfg)?;
    // Latent contexts are token ids until a tokenizer renders them.
    let has_ids = r
        .families
        .iter()
        .flat_map(|f| f.more_in_a.iter().chain(&f.more_in_b))
        .flat_map(|h| &h.examples)
        .any(|e| e.text.starts_with("ids:"));
    if has_ids {
        let model = pragma_model::Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
        for f in &mut r.families {
            for h in f.more_in_a.iter_mut().chain(f.more_in_b.iter_mut()) {
                for e in &mut h.examples {
                    e.text = decode_context(&model.tokenizer, &e.text);
                }
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "# {} vs {}: {} and {} transcripts{}; hypotheses found on {} + {}, checked on the rest\n",
        r.a,
        r.b,
        r.units.0,
        r.units.1,
        r.paired
            .map(|n| format!(", {n} paired by sample id and epoch (sign test)"))
            .unwrap_or_else(|| " (unpaired: Fisher exact test)".into()),
        r.discovery_units.0,
        r.discovery_units.1
    );
    if let Some(n) = &r.note {
        println!("({n})\n");
    }
    for f in &r.families {
        for (dir, hs, disc) in [
            (format!("more in {}", r.b), &f.more_in_b, f.discoveries.0),
            (format!("more in {}", r.a), &f.more_in_a, f.discoveries.1),
        ] {
            println!(
                "## {}: {dir} ({} tested, {disc} discoveries at FDR 0.05)\n",
                f.name, f.tested
            );
            if hs.is_empty() {
                println!("(none)\n");
                continue;
            }
            println!(
                "| hypothesis | {} | {} | log-odds | p | q | held-out AUROC | example |",
                r.a, r.b
            );
            println!("|---|---|---|---|---|---|---|---|");
            for h in hs {
                println!(
                    "| {} | {:.1}% | {:.1}% | {:+.2} | {:.2e} | {:.2e} | {} | {} |",
                    h.name,
                    100.0 * h.rate_a,
                    100.0 * h.rate_b,
                    h.log_odds,
                    h.p,
                    h.q,
                    h.heldout_auroc.map_or("-".into(), |v| format!("{v:.2}")),
                    h.examples
                        .first()
                        .map(|e| format!("{}: {}", e.side, e.text.replace('|', "/")))
                        .unwrap_or_default()
                );
            }
            println!();
        }
    }
    Ok(())
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
    let r =
        pragma_transcripts::score::score(&mut db, &model, &a.collection, &scorers, &mut |d, t| {
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
        TranscriptsCommand::Diff(a) => cmd_diff(a),
        TranscriptsCommand::Outliers(a) => cmd_outliers(a),
        TranscriptsCommand::Cluster(a) => cmd_cluster(a),
        TranscriptsCommand::Rollout(a) => cmd_rollout(a),
        TranscriptsCommand::Delete(a) => {
            let mut db = Db::open(&a.db.db)?;
            db.delete(&a.collection)?;
            eprintln!("deleted {}", a.collection);
            Ok(())
        }
    }
}
