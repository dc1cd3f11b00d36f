//! `pragma cache` and `pragma store ...`: the activation store from the command line.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pragma_model::hooks::HookPoint;
use pragma_model::{Model, DEFAULT_MODEL};
use pragma_store::corpus::{Format, TextSplit};
use pragma_store::manifest::LongDocs;
use pragma_store::writer::{cache, parse_dtype, CacheOptions, Progress};
use pragma_store::Store;

use crate::input_args::InputArgs;

#[derive(Args)]
pub struct CacheArgs {
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
    /// Corpus: a .txt file (documents separated by blank lines; --lines for one per
    /// line), a .jsonl file ({"text": ...} or {"messages": [...]}, rendered with the
    /// chat template), or the built-in name `fortunes` (fetched from Debian).
    #[arg(long, default_value = "fortunes")]
    data: String,
    /// Hook points to store, e.g. 'blocks.*.hook_resid_post' or 'blocks.6.hook_resid_post,blocks.6.mlp.hook_post'.
    #[arg(long, default_value = "blocks.*.hook_resid_post")]
    hooks: String,
    /// Output folder, or an object-store URL `s3://BUCKET/PREFIX` (any S3-compatible
    /// service; endpoint and keys from AWS_ENDPOINT(_URL), AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, and AWS_ALLOW_HTTP=true for plain HTTP).
    /// An interrupted run with the same settings resumes.
    #[arg(long, short)]
    out: PathBuf,
    /// Write only part I of N of the store (0-based), for array jobs on a cluster:
    /// `auto/N` takes I from SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX (Kubernetes
    /// Indexed Jobs) or PRAGMA_SHARD_INDEX. Parts write the shards a single run would,
    /// byte for byte; `pragma store finalize OUT` merges them once all are done. Every
    /// part of a job uses the same N and the same other flags; `pragma store info OUT`
    /// shows each part's progress.
    #[arg(long, value_name = "I/N", allow_hyphen_values = true)]
    shard: Option<String>,
    /// Context length: tokens per sequence at most.
    #[arg(long, default_value_t = 128)]
    ctx: usize,
    /// Tokens per forward pass, in full-length sequences: each pass holds at most
    /// batch x ctx tokens (shorter documents go more to a pass).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Stop at the first document boundary at or past this many tokens.
    #[arg(long)]
    max_tokens: Option<u64>,
    /// Skip this many documents of the corpus first (e.g. a held-out store after the
    /// documents a training store used).
    #[arg(long, default_value_t = 0)]
    skip_docs: u64,
    /// Storage dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f16")]
    dtype: String,
    #[command(flatten)]
    input: InputArgs,
    /// In .txt corpora, every non-empty line is a document.
    #[arg(long)]
    lines: bool,
    /// Documents longer than --ctx: `truncate` (keep the start) or `split` (several sequences).
    #[arg(long, default_value = "truncate")]
    long: String,
    /// Tokens per shard: a shard closes (and is safe from a kill) at the first document
    /// boundary at or past this many tokens (default: about 128 MiB of activations).
    #[arg(long)]
    shard_tokens: Option<usize>,
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Summarise a store: model, hooks, tokens, shards, bytes; --verify checks checksums.
    /// For a sharded job (`pragma cache --shard I/N`), each part's progress and which
    /// array indexes to rerun. STORE is a folder or an s3:// URL.
    Info {
        store: PathBuf,
        #[arg(long)]
        verify: bool,
        /// Print JSON (the sharded job's status, when there is one).
        #[arg(long)]
        json: bool,
    },
    /// Merge the parts of a sharded job into one store (writes manifest.json). Refuses
    /// missing or incomplete parts (naming the indexes to rerun) and parts of another
    /// model, hooks, settings or dataset. Idempotent: safe to run twice or concurrently.
    Finalize {
        store: PathBuf,
        /// Also check every shard's sha256 (reads, or downloads, every shard); sizes are
        /// always checked.
        #[arg(long)]
        verify: bool,
        #[arg(long)]
        json: bool,
    },
}

struct Bar {
    bar: ProgressBar,
    start: Instant,
    resumed_tokens: u64,
}

impl Progress for Bar {
    fn start(&mut self, total: u64, docs: u64, tokens: u64) {
        self.bar.set_length(total);
        self.bar.set_position(docs);
        self.resumed_tokens = tokens;
        if docs > 0 {
            self.bar.println(format!(
                "resuming after {docs} documents ({tokens} tokens already stored)"
            ));
        }
    }
    fn batch(&mut self, docs: u64, tokens: u64) {
        self.bar.set_position(docs);
        let rate =
            (tokens - self.resumed_tokens) as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        self.bar
            .set_message(format!("{tokens} tokens, {rate:.0} tok/s"));
    }
}

pub fn cmd_cache(a: CacheArgs) -> Result<()> {
    let part = a
        .shard
        .as_deref()
        .map(pragma_store::parts::Part::parse)
        .transpose()?;
    pragma_store::Location::parse(&a.out.to_string_lossy())?;
    let model = Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
    let data = pragma_store::datasets::resolve(&a.data, &mut |m| eprintln!("{m}"))?;
    let split = if a.lines {
        TextSplit::Lines
    } else {
        TextSplit::Blocks
    };
    let long_docs = LongDocs::parse(&a.long)?;
    // Resuming: the store's own rule is the default (an explicit contradiction is refused).
    let existing: Vec<(String, pragma_model::InputRule)> =
        pragma_store::manifest::Manifest::read(&a.out)
            .map(|m| {
                vec![(
                    format!("the store in {}", a.out.display()),
                    m.settings.input_rule(),
                )]
            })
            .unwrap_or_default();
    let input = a.input.rule(&model, &existing)?;
    let opts = CacheOptions {
        format: Format::detect(&data, split),
        data,
        hooks: HookPoint::resolve_pattern(&a.hooks, model.cfg().n_layers)?,
        out: a.out.clone(),
        ctx: a.ctx,
        batch: a.batch,
        dtype: parse_dtype(&a.dtype)?,
        input,
        long_docs,
        max_tokens: a.max_tokens,
        skip_docs: a.skip_docs,
        shard_tokens: a.shard_tokens,
        stop_after_shards: None,
        dry_run: false,
        part,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} docs  {msg}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut p = Bar {
        bar,
        start: Instant::now(),
        resumed_tokens: 0,
    };
    let t = Instant::now();
    let man = cache(&model, &opts, &mut p)?;
    p.bar.finish_and_clear();
    if let Some(part) = man.part {
        let n = part.end_shard - part.first_shard;
        println!(
            "part {}/{} of {}: {}{} ({} tokens, {:.1}s){}",
            part.index,
            part.count,
            a.out.display(),
            if man.complete { "done, " } else { "" },
            match n {
                0 => "no shards (more parts than shards)".to_string(),
                1 => format!("1 shard (shard {})", part.first_shard),
                _ => format!(
                    "{n} shards (shards {} to {})",
                    part.first_shard,
                    part.end_shard - 1
                ),
            },
            man.shards.iter().map(|s| s.n_tokens).sum::<u64>(),
            t.elapsed().as_secs_f64(),
            if man.complete {
                ""
            } else {
                " (incomplete: rerun to resume)"
            }
        );
        return Ok(());
    }
    let bytes: u64 = man.shards.iter().map(|s| s.bytes).sum();
    println!(
        "cached {} tokens from {} documents ({} sequences) into {}: {} shards, {:.1} MiB, {:.1}s",
        man.n_tokens,
        man.n_docs_done,
        man.n_seqs,
        a.out.display(),
        man.shards.len(),
        bytes as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    if man.truncated_docs > 0 {
        println!("note: {} documents longer than --ctx {} were truncated (use --long split to keep all tokens)", man.truncated_docs, a.ctx);
    }
    if man.split_docs > 0 {
        println!(
            "note: {} documents longer than --ctx {} were split into several sequences",
            man.split_docs, a.ctx
        );
    }
    Ok(())
}

fn print_job(st: &pragma_store::parts::JobStatus) {
    println!(
        "sharded job {}: {} shards, {} tokens planned, {} parts{}",
        st.url,
        st.shards_planned,
        st.tokens_planned,
        st.parts.len(),
        if st.finalized { ", finalized" } else { "" }
    );
    for p in &st.parts {
        let state = if p.complete {
            "complete".to_string()
        } else if p.missing {
            "not started".to_string()
        } else {
            "running or stopped (rerun to resume)".to_string()
        };
        println!(
            "  part {:>4}/{}: {}/{} shards, {} tokens, {state}",
            p.index, p.count, p.shards_done, p.shards_planned, p.tokens_done
        );
    }
    let todo = st.unfinished();
    if todo.is_empty() {
        if !st.finalized {
            println!("all parts complete: run `pragma store finalize {}`", st.url);
        }
    } else {
        println!(
            "unfinished parts: {} (rerun `pragma cache ... --shard I/{}` for these I)",
            todo.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(","),
            st.parts.len()
        );
    }
}

pub fn cmd_store(c: StoreCommand) -> Result<()> {
    match c {
        StoreCommand::Finalize {
            store,
            verify,
            json,
        } => {
            let loc = pragma_store::Location::parse(&store.to_string_lossy())?;
            let f = pragma_store::parts::finalize(&loc, verify)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&f)?);
            } else {
                println!(
                    "{} {}: {} parts, {} shards, {} tokens ({:.2}s){}",
                    if f.already {
                        "already finalized"
                    } else {
                        "finalized"
                    },
                    loc.url(),
                    f.parts,
                    f.shards,
                    f.n_tokens,
                    f.seconds,
                    if verify {
                        ", every shard's sha256 checked"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        StoreCommand::Info {
            store,
            verify,
            json,
        } => {
            let loc = pragma_store::Location::parse(&store.to_string_lossy())?;
            let job = if loc.get(pragma_store::parts::PLAN)?.is_some() {
                Some(pragma_store::parts::status(&loc)?)
            } else {
                None
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
                return Ok(());
            }
            if let Some(st) = &job {
                print_job(st);
                if !st.finalized {
                    return Ok(());
                }
            }
            let s = Store::open(&store)?;
            let m = &s.manifest;
            println!("store      {}", store.display());
            println!(
                "model      {} (sha256 {}…, {} layers, d_model {})",
                m.model.spec,
                &m.model.sha256[..12],
                m.model.n_layers,
                m.model.d_model
            );
            println!(
                "dataset    {} (sha256 {}…, {} documents)",
                m.dataset.path,
                &m.dataset.sha256[..12],
                m.dataset.n_docs
            );
            println!(
                "settings   ctx {}, batch {}, dtype {}, long docs {:?}, input: {}",
                m.settings.ctx,
                m.settings.batch,
                m.settings.dtype,
                m.settings.long_docs,
                m.settings.input_rule().describe()
            );
            println!(
                "contents   {} tokens, {} sequences, {} of {} documents{}",
                m.n_tokens,
                m.n_seqs,
                m.n_docs_done,
                m.dataset.n_docs,
                if m.complete {
                    ""
                } else {
                    " (incomplete: rerun the same `pragma cache` to resume)"
                }
            );
            let bytes: u64 = m.shards.iter().map(|x| x.bytes).sum();
            println!(
                "shards     {} ({:.1} MiB, {:.0} bytes/token)",
                m.shards.len(),
                bytes as f64 / (1 << 20) as f64,
                bytes as f64 / m.n_tokens.max(1) as f64
            );
            println!(
                "hooks      {}",
                m.hooks
                    .iter()
                    .map(|h| format!("{} {:?}", h.name, h.shape))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if verify {
                s.verify()?;
                println!("verified   all shard checksums match the manifest");
                let bad = s.nonfinite_counts()?;
                let total: u64 = bad.iter().map(|b| b.1).sum();
                if total == 0 {
                    println!("finite     every stored value is finite");
                } else {
                    for (hook, n) in bad.iter().filter(|b| b.1 > 0) {
                        println!("NON-FINITE {hook}: {n} values (NaN or inf)");
                    }
                    bail!(
                        "{}: {total} non-finite values in the store",
                        store.display()
                    );
                }
            }
            Ok(())
        }
    }
}
