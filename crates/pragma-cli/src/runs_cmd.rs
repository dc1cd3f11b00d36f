//! Every workflow run recorded (`pragma_research::runs`), and `pragma runs list|show`.
//!
//! The CLI records; the library keeps the database. A run's inputs are the files named on
//! its command line (for a folder: its `manifest.json` or `cfg.json`), hashed; its
//! artifacts are the files under its `--out`/`-o`; its headline metrics come from the
//! result files the workflow writes (probe sweeps: `results.json`; SAE training: the last
//! line of `log.jsonl`). A recording failure is a warning, never the run's failure.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;
use pragma_research::runs::{Artifact, Filter, NewRun, RunDb};

/// Workflows recorded: the command and, for command groups, the subcommand.
const WORKFLOWS: &[&str] = &[
    "cache",
    "probe train",
    "steer train",
    "steer sweep",
    "steer study",
    "sae train",
    "sae eval",
    "eval run",
    "transcripts diff",
    "patch",
    "lens",
    "counterfactual",
    "resample",
];

#[derive(Subcommand)]
pub enum RunsCommand {
    /// Recorded runs, newest first: id, start (UTC), workflow, status, seconds, metrics.
    /// Runs are recorded in $PRAGMA_RUNS_DB, else .pragma/runs.db of the nearest folder
    /// with a pragma.toml, else ~/.local/share/pragma/runs.db (`--no-record` or
    /// PRAGMA_NO_RECORD=1 turns recording off).
    List {
        /// Only workflows starting with this, e.g. `probe` or `sae train`.
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs with this tag.
        #[arg(long)]
        tag: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One run in full: command line, version, inputs with sha256, metrics, artifacts;
    /// --check says which inputs and artifacts are missing or changed since.
    Show {
        id: i64,
        #[arg(long)]
        check: bool,
        #[arg(long)]
        json: bool,
    },
}

fn db() -> Result<RunDb> {
    let cwd = std::env::current_dir()?;
    Ok(RunDb::open(&RunDb::default_path(&cwd))?)
}

/// A run being recorded (if recording is on and the command is a workflow).
pub struct Recording {
    db: RunDb,
    id: i64,
    out: Option<PathBuf>,
    workflow: String,
}

/// The workflow name of a command line (`probe train`), if it is one.
fn workflow(argv: &[String]) -> Option<String> {
    let words: Vec<&str> = argv
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .take(2)
        .map(String::as_str)
        .collect();
    let two = words.join(" ");
    WORKFLOWS
        .iter()
        .find(|w| **w == two || Some(**w) == words.first().copied())
        .map(|w| w.to_string())
}

/// Files a command line names, hashed: existing files, and the manifest or config of
/// existing folders.
fn inputs(argv: &[String], out: Option<&Path>) -> Vec<Artifact> {
    let mut found = Vec::new();
    for a in argv.iter().skip(1) {
        let value = a.split_once('=').map_or(a.as_str(), |(_, v)| v);
        let p = Path::new(value);
        if out.is_some_and(|o| o == p) {
            continue;
        }
        if p.is_file() {
            found.extend(Artifact::of(p));
        } else if p.is_dir() {
            for f in ["manifest.json", "cfg.json"] {
                found.extend(Artifact::of(&p.join(f)));
            }
        }
    }
    found
}

fn out_arg(argv: &[String]) -> Option<PathBuf> {
    argv.iter().enumerate().find_map(|(i, a)| {
        if a == "--out" || a == "-o" {
            argv.get(i + 1).map(PathBuf::from)
        } else {
            a.strip_prefix("--out=").map(PathBuf::from)
        }
    })
}

impl Recording {
    /// Start recording this process's run, unless `off` or it is not a workflow.
    pub fn start(off: bool) -> Option<Recording> {
        let off = off || std::env::var("PRAGMA_NO_RECORD").is_ok_and(|v| !v.is_empty() && v != "0");
        let argv: Vec<String> = std::env::args().collect();
        let workflow = workflow(&argv).filter(|_| !off)?;
        let out = out_arg(&argv);
        let rec = (|| -> Result<Recording> {
            let db = db()?;
            let id = db.start(&NewRun {
                workflow: workflow.clone(),
                inputs: inputs(&argv, out.as_deref()),
                argv,
                cwd: std::env::current_dir()?.display().to_string(),
                pragma_version: env!("CARGO_PKG_VERSION").to_string(),
                tags: vec![],
            })?;
            Ok(Recording {
                db,
                id,
                out,
                workflow,
            })
        })();
        match rec {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("warning: not recording this run: {e}");
                None
            }
        }
    }

    /// Complete the record with the outcome, headline metrics and artifacts.
    pub fn finish(self, outcome: &Result<()>) {
        let status = match outcome {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        let artifacts = self
            .out
            .as_deref()
            .filter(|p| !p.to_string_lossy().contains("://"))
            .map(Artifact::under)
            .unwrap_or_default();
        let metrics = self
            .out
            .as_deref()
            .map(|o| headline(&self.workflow, o))
            .unwrap_or(serde_json::Value::Null);
        if let Err(e) = self.db.finish(self.id, &status, &metrics, &artifacts) {
            eprintln!("warning: could not complete run record {}: {e}", self.id);
        }
    }
}

/// The few numbers a workflow's result files say most about it.
fn headline(workflow: &str, out: &Path) -> serde_json::Value {
    let read = |f: &str| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(out.join(f)).ok()?).ok()
    };
    match workflow {
        "probe train" => read("results.json")
            .map(|r| {
                let best = r["best_logistic_layer"].clone();
                let layer = r["layers"]
                    .as_array()
                    .and_then(|ls| ls.iter().find(|l| l["layer"] == best).cloned())
                    .unwrap_or_default();
                serde_json::json!({
                    "best_logistic_layer": best,
                    "test_auroc": layer["logistic"]["test_auroc"],
                    "test_auroc_ci": layer["logistic"]["test_auroc_ci"],
                    "baselines": r["baselines"].as_array().map(|bs| bs.iter().map(|b| {
                        serde_json::json!({"name": b["name"], "test_auroc": b["scored"]["test_auroc"]})
                    }).collect::<Vec<_>>()),
                })
            })
            .unwrap_or_default(),
        "sae train" => std::fs::read_to_string(out.join("log.jsonl"))
            .ok()
            .and_then(|t| t.lines().last().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok()))
            .map(|l| serde_json::json!({"step": l["step"], "fvu": l["fvu"], "l0": l["l0"], "dead_fraction": l["dead_fraction"]}))
            .unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}

fn short(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(_, v)| v.is_number())
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_f64().map_or(v.to_string(), |x| format!("{x:.4}"))
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

pub fn cmd_runs(c: RunsCommand) -> Result<()> {
    let db = db()?;
    match c {
        RunsCommand::List {
            workflow,
            tag,
            limit,
            json,
        } => {
            let runs = db.list(&Filter {
                workflow,
                tag,
                since: None,
                limit: Some(limit),
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
                return Ok(());
            }
            println!("runs in {}", db.path().display());
            println!(
                "{:>5}  {:19}  {:16}  {:>8}  {:8}  metrics",
                "id", "started (UTC)", "workflow", "seconds", "status"
            );
            for r in &runs {
                let status: String = r.status.chars().take(40).collect();
                println!(
                    "{:>5}  {:19}  {:16}  {:>8}  {:8}  {}",
                    r.id,
                    r.started_utc,
                    r.workflow,
                    r.seconds.map_or("-".into(), |s| format!("{s:.1}")),
                    status,
                    short(&r.metrics)
                );
            }
            if runs.is_empty() {
                println!("(no runs recorded yet: workflows such as `pragma probe train` record themselves)");
            }
            Ok(())
        }
        RunsCommand::Show { id, check, json } => {
            let r = db.get(id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            println!("run {}: {} ({})", r.id, r.workflow, r.status);
            println!("command  {}", r.argv.join(" "));
            println!("in       {}", r.cwd);
            println!("pragma   {}", r.pragma_version);
            println!(
                "started  {} UTC, {}",
                r.started_utc,
                r.seconds
                    .map_or("still running or killed".into(), |s| format!("{s:.1} s"))
            );
            for a in &r.inputs {
                println!(
                    "input    {} ({} bytes, sha256 {})",
                    a.path,
                    a.bytes,
                    a.sha256.as_deref().unwrap_or("-")
                );
            }
            if !r.metrics.is_null() {
                println!("metrics  {}", r.metrics);
            }
            println!("artifacts {}", r.artifacts.len());
            for a in r.artifacts.iter().take(20) {
                println!("  {} ({} bytes)", a.path, a.bytes);
            }
            if check {
                let problems: Vec<String> = r
                    .inputs
                    .iter()
                    .map(|a| ("input", a))
                    .chain(r.artifacts.iter().map(|a| ("artifact", a)))
                    .filter_map(|(k, a)| a.check().err().map(|e| format!("{k} {e}")))
                    .collect();
                if problems.is_empty() {
                    println!("check    every input and artifact is as recorded");
                } else {
                    for p in &problems {
                        println!("CHANGED  {p}");
                    }
                    anyhow::bail!(
                        "{} of run {id}'s files are missing or changed",
                        problems.len()
                    );
                }
            }
            Ok(())
        }
    }
}
