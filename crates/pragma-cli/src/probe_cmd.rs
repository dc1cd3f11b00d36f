//! `pragma probe ...`: linear probes from the command line, and per-token monitors.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle_core::Tensor;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pragma_methods::probe::{self, Dataset, Probe, ProbeConfig};
use pragma_methods::steering::{side_ids, Position, Side};
use pragma_model::hooks::Hooks;
use pragma_model::input::InputRule;
use pragma_model::llama::{Batch, Logits};
use pragma_model::{Model, DEFAULT_MODEL};

use crate::input_args::InputArgs;
use serde::Serialize;

#[derive(Subcommand)]
pub enum ProbeCommand {
    /// Per-layer probe sweep on a labelled JSONL dataset ({"text" or "messages", "label"}):
    /// logistic regression (L2, C chosen on validation) and difference of means at every
    /// layer, test AUROC/accuracy with bootstrap CIs, best layer chosen on validation, and
    /// the bag-of-words and prompting baselines on the same split. Writes report.md,
    /// results.json, sweep.svg, probe.safetensors (best logistic) and
    /// probe-diff-means.safetensors.
    Train(Box<TrainArgs>),
    /// Per-token scores of a probe over a text.
    Score(ScoreArgs),
}

#[derive(Args)]
pub struct TrainArgs {
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
    /// Labelled dataset, JSONL. A sidecar NAME.meta.json may give {"question", "positive"}.
    #[arg(long)]
    data: PathBuf,
    /// Hook points to probe, one per layer (pattern).
    #[arg(long, default_value = "blocks.*.hook_resid_post")]
    hooks: String,
    /// Which token represents a text: last, or the mean over tokens (BOS excluded).
    #[arg(long, default_value = "last")]
    position: String,
    /// Inverse L2 strengths tried for logistic regression (chosen on validation AUROC).
    #[arg(long, default_value = "0.0001,0.001,0.01,0.1,1")]
    c: String,
    /// Train and validation fractions (test gets the rest), stratified and seeded;
    /// ignored when the data gives a "split" per example.
    #[arg(long, default_value = "0.6,0.2")]
    split: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Bootstrap resamples for the CIs (0 skips them, e.g. to time the fits alone).
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// Yes/no question for the prompting baseline (default: from NAME.meta.json).
    #[arg(long)]
    question: Option<String>,
    /// The positive class's label (default: true / the larger integer / the later string,
    /// or NAME.meta.json's "positive").
    #[arg(long)]
    positive: Option<String>,
    #[arg(long, default_value = "Yes| Yes")]
    yes: String,
    #[arg(long, default_value = "No| No")]
    no: String,
    /// Reuse activations saved by an earlier run's --save-features (same data, hooks, position).
    #[arg(long)]
    features: Option<PathBuf>,
    /// Read the activations from an activation store made from this dataset
    /// (`pragma cache MODEL --data D.jsonl --hooks ...`, one document per line, in
    /// order), pooled per document at --position (last or mean), instead of running the
    /// model. The probe records the store's input rule (BOS, control tokens); the BOS
    /// position is never pooled.
    #[arg(long, conflicts_with = "features")]
    store: Option<PathBuf>,
    /// Save the activations to OUT/features.safetensors (float32; readable from numpy).
    #[arg(long)]
    save_features: bool,
    #[command(flatten)]
    input: InputArgs,
    /// Output folder.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args)]
pub struct ScoreArgs {
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
    /// Probe file from `pragma probe train`.
    #[arg(long)]
    probe: PathBuf,
    /// Text to score.
    #[arg(long)]
    text: String,
    /// Wrap the text as a user turn in the chat template.
    #[arg(long)]
    chat: bool,
    /// Also write the per-token scores as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    input: InputArgs,
}

/// Per-token monitor output.
#[derive(Serialize)]
pub struct Monitor {
    pub probe: String,
    pub hook: String,
    pub method: String,
    pub classes: [String; 2],
    pub tokens: Vec<TokenScore>,
}

#[derive(Serialize)]
pub struct TokenScore {
    pub position: usize,
    pub token: String,
    pub generated: bool,
    pub score: f64,
    pub probability: Option<f64>,
}

fn parse_fracs(s: &str) -> Result<(f64, f64)> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("--split '{s}': expected two fractions, e.g. 0.6,0.2"))?;
    match v.as_slice() {
        [a, b] if *a > 0.0 && *b > 0.0 && a + b < 1.0 => Ok((*a, *b)),
        _ => bail!("--split '{s}': expected train,validation fractions > 0 with sum < 1"),
    }
}

pub fn cmd_probe(c: ProbeCommand) -> Result<()> {
    match c {
        ProbeCommand::Train(a) => train(*a),
        ProbeCommand::Score(a) => score(a),
    }
}

fn train(a: TrainArgs) -> Result<()> {
    let ds: Dataset = probe::read_dataset(&a.data, a.positive.as_deref())?;
    let fractions = parse_fracs(&a.split)?;
    let c_grid: Vec<f64> =
        a.c.split(',')
            .map(|s| s.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| anyhow::anyhow!("--c '{}': expected numbers", a.c))?;
    if c_grid.is_empty() || c_grid.iter().any(|c| !(c.is_finite() && *c > 0.0)) {
        bail!("--c: expected positive numbers");
    }
    // Check the splits before loading the model.
    probe::splits(&ds, fractions, a.seed)?;
    let model = Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
    let (site, layers) = probe::site_layers(&a.hooks, model.cfg().n_layers)?;
    let position = Position::parse(&a.position)?;
    let stored: Vec<(String, InputRule)> = match &a.store {
        Some(dir) => vec![(
            format!("store {}", dir.display()),
            pragma_store::manifest::Manifest::read(dir)?
                .settings
                .input_rule(),
        )],
        None => vec![],
    };
    let cfg = ProbeConfig {
        site,
        layers,
        position,
        c_grid,
        fractions,
        seed: a.seed,
        bootstrap: a.bootstrap,
        question: a.question.clone().or(ds.question.clone()),
        yes: a.yes,
        no: a.no,
        input: a.input.rule(&model, &stored)?,
    };
    let files = probe::TrainFiles {
        source: match (&a.features, &a.store) {
            (Some(p), _) => probe::FeatureSource::File(p.clone()),
            (None, Some(dir)) => probe::FeatureSource::Store(dir.clone()),
            (None, None) => probe::FeatureSource::Model,
        },
        out: a.out.clone(),
        save_features: a.save_features,
    };
    let bar = ProgressBar::new(ds.examples.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "activations {bar:30} {pos}/{len} texts [{elapsed_precise}<{eta_precise}]",
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let out = probe::train_to_folder(
        &model,
        &ds,
        &cfg,
        &files,
        &mut |d| bar.set_position(d as u64),
        &mut |m| {
            bar.finish_and_clear();
            eprintln!("{m}")
        },
    )?;
    let r = out.report;
    print!("{}\n{}", r.markdown(), r.summary());
    println!(
        "activations {:.1}s, {} probe fits {:.2}s, baselines {:.1}s -> {}/report.md, results.json, sweep.svg, probe.safetensors",
        r.features_seconds,
        r.layers.len() * (r.c_grid.len() + 1),
        r.fit_seconds,
        r.baselines_seconds,
        a.out.display()
    );
    Ok(())
}

/// Per-token scores of `probes` over `ids`, given the activations captured at their hooks.
pub fn monitor_scores(
    model: &Model,
    probe: &Probe,
    path: &Path,
    acts: &Tensor,
    ids: &[u32],
    n_prompt: usize,
) -> Result<Monitor> {
    // The probe never saw the BOS/sink position: score from position 1 when there is a BOS.
    let skip = pragma_methods::steering::sink_len(model, ids);
    let t = acts.dim(0)?;
    let rows = acts.narrow(0, skip, t - skip)?;
    let scores = probe.score_rows(&rows)?;
    let tokens = scores
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let pos = k + skip;
            TokenScore {
                position: pos,
                token: model
                    .tokenizer
                    .decode(&ids[pos..pos + 1])
                    .unwrap_or_default(),
                generated: pos >= n_prompt,
                score: s,
                probability: probe.probability(s),
            }
        })
        .collect();
    Ok(Monitor {
        probe: path.display().to_string(),
        hook: probe.meta.hook.clone(),
        method: probe.meta.method.clone(),
        classes: probe.meta.classes.clone(),
        tokens,
    })
}

/// Print tokens coloured by probe score (blue = negative class, red = positive) on a
/// terminal, or as `token[p]` otherwise.
pub fn print_monitor(m: &Monitor, only_generated: bool) {
    let tty = std::io::stdout().is_terminal();
    let mut line = String::new();
    for t in m.tokens.iter().filter(|t| t.generated || !only_generated) {
        let p = t.probability.unwrap_or(1.0 / (1.0 + (-t.score).exp()));
        if tty {
            let (r, g, b) = (
                (40.0 + 200.0 * p) as u8,
                60u8,
                (40.0 + 200.0 * (1.0 - p)) as u8,
            );
            line.push_str(&format!("\x1b[48;2;{r};{g};{b}m\x1b[97m{}\x1b[0m", t.token));
        } else {
            line.push_str(&format!("{}[{p:.2}]", t.token));
        }
    }
    let scored: Vec<f64> = m
        .tokens
        .iter()
        .filter(|t| t.generated || !only_generated)
        .map(|t| t.probability.unwrap_or(t.score))
        .collect();
    let mean = scored.iter().sum::<f64>() / scored.len().max(1) as f64;
    let max = scored.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    println!(
        "monitor {} ({} at {}; {} = high): mean {mean:.3}, max {max:.3}",
        m.probe, m.method, m.hook, m.classes[1]
    );
    println!("{line}");
}

fn score(a: ScoreArgs) -> Result<()> {
    let p = Probe::load(&a.probe)?;
    let model = Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
    let point = p.hook_point(&model)?;
    let side = if a.chat {
        Side::Chat(vec![pragma_model::tokenizer::ChatMessage::new(
            "user", &a.text,
        )])
    } else {
        Side::Text(a.text.clone())
    };
    let rule = a
        .input
        .rule(&model, &[(a.probe.display().to_string(), p.meta.input)])?;
    let ids = side_ids(&model, &side, rule)?;
    let mut hooks = Hooks::new();
    hooks.capture(point);
    let (_, cache) =
        model
            .transformer
            .forward(&Batch::single(&ids, model.device())?, &hooks, Logits::None)?;
    let acts = cache.get_row(point, 0)?;
    let m = monitor_scores(&model, &p, &a.probe, &acts, &ids, ids.len())?;
    print_monitor(&m, false);
    let last = m.tokens.last().map(|t| (t.score, t.probability));
    if let Some((s, pr)) = last {
        match pr {
            Some(pr) => println!("last token: score {s:+.3}, P({}) = {pr:.3}", m.classes[1]),
            None => println!("last token: score {s:+.3} (> 0 means '{}')", m.classes[1]),
        }
    }
    if let Some(j) = &a.json {
        pragma_model::io::write_json(j, &m)?;
    }
    Ok(())
}
