//! `pragma eval run|report`: parse, call `pragma_eval`, present.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pragma_eval::report::Report;
use pragma_eval::run::{self, Event, Plan, RunConfig};
use pragma_eval::suite::Suite;
use pragma_methods::sae::Sae;
use pragma_model::{Model, DEFAULT_MODEL};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Run a benchmark suite: every task x technique x split seed, each result a cached
    /// cell under OUT/cells (an interrupted run resumes; a re-run computes only what is
    /// new), then the report (OUT/report.md, report.html with the heatmap, report.json).
    ///
    /// The default suite: concept detection on 12 concepts (AxBench's protocol: linear
    /// probe, difference of means, PCA, SAE best latent and sparse probes (the preset SAE,
    /// trained on first use, or --sae DIR),
    /// prompting, bag-of-words and a random direction; test AUROC, per-token scores pooled
    /// by mean or max, chosen on validation), and hypothesis generation on 4 planted
    /// differences and a null pair (SAE latent frequencies, n-grams, difference of means
    /// through the unembedding). Suite format and definitions: docs/EVAL.md.
    Run(RunArgs),
    /// Rebuild and print the report of a run folder from its cells (no model needed).
    Report(ReportArgs),
}

/// What every proxy-task run takes (`eval run`, `checkin`).
#[derive(Args)]
pub struct SuiteRunArgs {
    /// Bootstrap replicates of the intervals (>= 100).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..))]
    pub bootstrap: u64,
    /// Run even if the time estimate is over the suite's budget.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Args)]
pub struct RunArgs {
    /// Model: .gguf file, HF folder, or built-in name.
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
    /// `default` (shipped; written to OUT/suite/) or a suite .toml file.
    #[arg(long, default_value = "default")]
    suite: String,
    /// SAE for the SAE techniques: `preset` (default: the preset SAE at the suite's hook,
    /// trained on first use into OUT/sae-preset/ — ~8 minutes for the default model — and
    /// reused after), a SAELens or sparsify folder trained on the suite's hook, or `none`
    /// (the SAE techniques are listed as not run).
    #[arg(long, default_value = "preset")]
    sae: String,
    /// Use an SAE whose metadata names other model weights (e.g. a base model's SAE on
    /// its instruct model).
    #[arg(long)]
    sae_other_model: bool,
    /// Split seeds (overrides the suite's `seeds`).
    #[arg(long)]
    seeds: Option<u64>,
    #[command(flatten)]
    run: crate::eval_cmd::SuiteRunArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Run folder (cells, report; reusing it resumes).
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args)]
pub struct ReportArgs {
    /// A folder made by `pragma eval run`.
    dir: PathBuf,
    /// Bootstrap replicates of the intervals (>= 100).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..))]
    bootstrap: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn cmd_eval(c: EvalCommand) -> Result<()> {
    match c {
        EvalCommand::Run(a) => cmd_run(a),
        EvalCommand::Report(a) => {
            let plan = Plan::load(&a.dir)?;
            let report = Report::build(&a.dir, &plan, a.bootstrap as usize)?;
            report.save(&a.dir)?;
            present(&report, a.json)?;
            Ok(())
        }
    }
}

fn present(report: &Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{}", report.markdown());
    }
    Ok(())
}

fn cmd_run(a: RunArgs) -> Result<()> {
    let path = if a.suite == "default" {
        Suite::write_default(&a.out.join("suite"))?
    } else {
        PathBuf::from(&a.suite)
    };
    let mut suite = Suite::load(&path)?;
    if let Some(s) = a.seeds {
        anyhow::ensure!(s >= 1, "--seeds must be >= 1");
        suite.seeds = s;
    }
    let sae = match a.sae.as_str() {
        "preset" | "none" => None,
        p => Some(Sae::load(std::path::Path::new(p)).with_context(|| format!("--sae {p}"))?),
    };
    let model = Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
    let cfg = RunConfig {
        sae_preset: (a.sae == "preset").then(|| suite.sae.clone()),
        suite,
        out: a.out.clone(),
        bootstrap: a.run.bootstrap as usize,
        yes: a.run.yes,
        sae_other_model: a.sae_other_model,
    };
    let res = with_progress(|events| run::run(&model, sae.as_ref(), &cfg, events));
    let res = res?;
    present(&res.report, a.json)?;
    eprintln!(
        "{} cells computed, {} cached, in {:.0} s; report: {}",
        res.computed,
        res.cached,
        res.seconds,
        a.out.join("report.html").display()
    );
    Ok(())
}

/// Call `f` with an event handler that shows an eval run's progress: the plan (cells to
/// compute and the estimate), then a bar with ETA per task step.
pub fn with_progress<R>(f: impl FnOnce(&mut dyn FnMut(Event)) -> R) -> R {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:40} {bar:30} {pos}/{len}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut cells_done, mut cells_todo) = (0usize, 0usize);
    let started = std::time::Instant::now();
    let res = f(&mut |e| match e {
        Event::Plan {
            todo,
            cached,
            seconds,
        } => {
            cells_todo = todo;
            bar.suspend(|| {
                eprintln!(
                    "{todo} cells to compute, {cached} cached; estimated {:.1} minutes",
                    seconds / 60.0
                )
            });
        }
        Event::Step {
            task,
            what,
            done,
            total,
        } => {
            bar.set_message(format!("{task}: {what} [cells {cells_done}/{cells_todo}]"));
            bar.set_length(total);
            bar.set_position(done);
        }
        Event::Cell { done, todo } => {
            cells_done = done;
            // Without a terminal the bar is hidden: a line per cell says how far it is.
            if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                let s = started.elapsed().as_secs_f64();
                let eta = s / done.max(1) as f64 * todo.saturating_sub(done) as f64;
                eprintln!("cell {done}/{todo} done, {s:.0} s elapsed, ETA {eta:.0} s");
            }
        }
    });
    bar.finish_and_clear();
    res
}
