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
    /// Output folder (created; an interrupted run with the same settings resumes).
    #[arg(long, short)]
    out: PathBuf,
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
    Info {
        store: PathBuf,
        #[arg(long)]
        verify: bool,
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
    let model = Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
    let data = pragma_store::datasets::resolve(&a.data, &mut |m| eprintln!("{m}"))?;
    let split = if a.lines {
        TextSplit::Lines
    } else {
        TextSplit::Blocks
    };
    let long_docs = match a.long.as_str() {
        "truncate" => LongDocs::Truncate,
        "split" => LongDocs::Split,
        other => bail!("--long '{other}': expected truncate or split"),
    };
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

pub fn cmd_store(c: StoreCommand) -> Result<()> {
    match c {
        StoreCommand::Info { store, verify } => {
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
