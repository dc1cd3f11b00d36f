//! `pragma transcripts score|rollout`: the model over a collection, or a collection from the model.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use pragma_transcripts::db::Db;

use super::DbArg;

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
    intervention: crate::run_cmd::InterventionArgs,
    #[command(flatten)]
    db: DbArg,
}

pub(super) fn cmd_rollout(a: RolloutArgs) -> Result<()> {
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
        &crate::run_cmd::build_hooks(&model, &a.intervention, pragma_model::InputRule::default())?,
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
    /// Padded tokens per forward pass: transcripts are sorted by length and grouped up to
    /// this (a longer one runs alone); 1 scores them one at a time. Same values either way.
    #[arg(long, default_value_t = 1024)]
    batch_tokens: usize,
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

pub(super) fn cmd_score(a: ScoreArgs) -> Result<()> {
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
    let opts = pragma_transcripts::score::ScoreOptions {
        batch_tokens: a.batch_tokens,
    };
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
    let r = pragma_transcripts::score::score(
        &mut db,
        &model,
        &a.collection,
        &scorers,
        &opts,
        &mut |d, t| {
            bar.set_length(t);
            bar.set_position(d);
        },
    );
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
