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
use pragma_research::reproduce::{
    compare_artifacts, compare_metrics, compare_runs, headline, headline_of,
};
use pragma_research::runs::{inputs_of, out_of, workflow_of, Artifact, Filter, NewRun, RunDb};

/// The output folder a command declared while running (for commands without `--out`,
/// e.g. `checkin`): its files are the run's artifacts and its headline metrics' source.
static DECLARED_OUT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Declare this run's output folder (the first declaration wins).
pub fn set_out(out: &Path) {
    let _ = DECLARED_OUT.set(out.to_path_buf());
}

/// The result a command declared while running (for workflows that write no result
/// file, e.g. `patch`, `transcripts diff`, `steer train`): its headline metrics' source.
static DECLARED_RESULT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();

/// Declare this run's result, serialised (the first declaration wins); its headline
/// metrics are [`headline_of`] it.
pub fn set_result(result: impl serde::Serialize) {
    if let Ok(v) = serde_json::to_value(result) {
        let _ = DECLARED_RESULT.set(v);
    }
}

/// Input files a command declared while running (beside those its command line names,
/// e.g. a check-in's project file, suite and datasets).
static DECLARED_INPUTS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();

/// Declare this run's input files (the first declaration wins); they are hashed and
/// recorded when the run starts being recorded or, if it already has, when it ends.
pub fn set_inputs(files: Vec<PathBuf>) {
    let _ = DECLARED_INPUTS.set(files);
}

/// The run this process reruns (`pragma runs rerun ID` sets `PRAGMA_RERUN_OF=ID`), for
/// workflows that must recompute rather than reuse (a check-in's cached cells).
pub fn rerun_of() -> Option<i64> {
    std::env::var("PRAGMA_RERUN_OF").ok()?.parse().ok()
}

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
        /// Hash every input and artifact again and name those missing or changed (exit 1
        /// if any).
        #[arg(long)]
        check: bool,
        /// The record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Runs side by side: the command-line arguments that differ, versions, inputs whose
    /// sha256 differ, and each headline metric with its change from the first run.
    Compare {
        #[arg(required = true, num_args = 2..)]
        ids: Vec<i64>,
        /// The comparison as JSON (values, changes from the first run, argument and input
        /// differences).
        #[arg(long)]
        json: bool,
    },
    /// Run a recorded run again from its record (same arguments, in its folder, output to
    /// OUT.rerun-ID; a check-in recomputes every cell in .pragma/checkins/rerun-of-ID and
    /// is not added to the history) and say whether it reproduced: inputs unchanged
    /// (sha256), artifacts byte-identical, headline metrics equal or inside the recorded
    /// confidence interval. Refuses when an input changed since, naming it.
    Rerun {
        id: i64,
        /// Run even though inputs changed since (the comparison then says what moved).
        #[arg(long)]
        force: bool,
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

impl Recording {
    /// Start recording this process's run, unless `off` or it is not a workflow.
    pub fn start(off: bool) -> Option<Recording> {
        let off = off || std::env::var("PRAGMA_NO_RECORD").is_ok_and(|v| !v.is_empty() && v != "0");
        let argv: Vec<String> = std::env::args().collect();
        let workflow = workflow_of(&argv).filter(|_| !off)?;
        let out = out_of(&argv);
        let rec = (|| -> Result<Recording> {
            let db = db()?;
            let id = db.start(&NewRun {
                workflow: workflow.clone(),
                inputs: inputs_of(&argv, out.as_deref()),
                argv,
                cwd: std::env::current_dir()?.display().to_string(),
                pragma_version: env!("CARGO_PKG_VERSION").to_string(),
                tags: std::env::var("PRAGMA_RUN_TAGS")
                    .map(|t| {
                        t.split(',')
                            .map(str::to_string)
                            .filter(|t| !t.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
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

    /// The run's id in the runs database.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Complete the record with the outcome, headline metrics and artifacts.
    pub fn finish(mut self, outcome: &Result<()>) {
        if self.out.is_none() {
            self.out = DECLARED_OUT.get().cloned();
        }
        let status = match outcome {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        let artifacts = self
            .out
            .as_deref()
            .filter(|p| !p.to_string_lossy().contains("://"))
            .map(|o| Artifact::under(&std::env::current_dir().unwrap_or_default().join(o)))
            .unwrap_or_default();
        if let Some(files) = DECLARED_INPUTS.get() {
            let found: Vec<Artifact> = files.iter().filter_map(|f| Artifact::of(f)).collect();
            if let Err(e) = self.db.add_inputs(self.id, &found) {
                eprintln!("warning: could not record run {}'s inputs: {e}", self.id);
            }
        }
        let metrics = match (DECLARED_RESULT.get(), self.out.as_deref()) {
            (Some(r), _) => headline_of(&self.workflow, r),
            (None, Some(o)) => headline(&self.workflow, o),
            (None, None) => serde_json::Value::Null,
        };
        if let Err(e) = self.db.finish(self.id, &status, &metrics, &artifacts) {
            eprintln!("warning: could not complete run record {}: {e}", self.id);
        }
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

fn compare(db: &RunDb, ids: &[i64], json: bool) -> Result<()> {
    let runs = ids
        .iter()
        .map(|&i| db.get(i))
        .collect::<Result<Vec<_>, _>>()?;
    let c = compare_runs(&runs);
    if json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    let metric_rows: Vec<(String, Vec<String>)> = c
        .metrics
        .iter()
        .map(|m| {
            let vals = m
                .values
                .iter()
                .zip(&m.deltas)
                .map(|(v, d)| match (v, d) {
                    (Some(v), Some(d)) => format!("{v:.4} ({d:+.4})"),
                    (Some(v), None) => format!("{v:.4}"),
                    (None, _) => "-".into(),
                })
                .collect();
            (m.name.clone(), vals)
        })
        .collect();
    let col = |f: &dyn Fn(&pragma_research::reproduce::RunSummary) -> String| -> Vec<String> {
        c.runs.iter().map(f).collect()
    };
    let head_rows: Vec<(String, Vec<String>)> = vec![
        (String::new(), col(&|r| format!("run {}", r.id))),
        ("workflow".into(), col(&|r| r.workflow.clone())),
        ("started (UTC)".into(), col(&|r| r.started_utc.clone())),
        ("pragma".into(), col(&|r| r.pragma_version.clone())),
        (
            "status".into(),
            col(&|r| r.status.chars().take(30).collect()),
        ),
    ];
    // Columns as wide as their longest entry, so long metric names (a check-in's
    // `TASK/NAME_ci`) never run into the values.
    let all = || head_rows.iter().chain(&metric_rows);
    let name_w = all()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(16);
    let val_w = all()
        .flat_map(|(_, v)| v.iter().map(|x| x.chars().count()))
        .max()
        .unwrap_or(0)
        + 2;
    let row = |(name, vals): &(String, Vec<String>)| {
        println!(
            "{name:name_w$} {}",
            vals.iter()
                .map(|v| format!("{v:>val_w$}"))
                .collect::<String>()
        )
    };
    head_rows.iter().for_each(row);
    for d in &c.arguments {
        let diff: Vec<String> = d
            .added
            .iter()
            .map(|a| format!("+{a}"))
            .chain(d.removed.iter().map(|a| format!("-{a}")))
            .collect();
        println!(
            "arguments, run {} vs {}: {}",
            d.id,
            d.base,
            if diff.is_empty() {
                "same".into()
            } else {
                diff.join(" ")
            }
        );
        for i in c.changed_inputs.iter().filter(|i| i.id == d.id) {
            println!(
                "input {} differs (sha256) between run {} and {}",
                i.path, i.base, i.id
            );
        }
    }
    metric_rows.iter().for_each(row);
    Ok(())
}

/// The deepest folder holding every artifact (`None` without artifacts).
fn common_folder(artifacts: &[Artifact]) -> Option<PathBuf> {
    let mut it = artifacts.iter().map(|a| Path::new(&a.path));
    let mut root = it.next()?.parent()?.to_path_buf();
    for p in it {
        while !p.starts_with(&root) {
            root = root.parent()?.to_path_buf();
        }
    }
    Some(root)
}

fn rerun(db: &RunDb, id: i64, force: bool) -> Result<()> {
    let r = db.get(id)?;
    let changed: Vec<String> = r.inputs.iter().filter_map(|a| a.check().err()).collect();
    if !changed.is_empty() {
        for c in &changed {
            eprintln!("input {c}");
        }
        if !force {
            anyhow::bail!(
                "run {id}'s inputs changed since it ran ({}); rerun with --force to run on the new inputs",
                changed.len()
            );
        }
    }
    let mut argv: Vec<String> = r.argv[1..].to_vec();
    let out_at = argv
        .iter()
        .position(|a| a == "--out" || a == "-o")
        .map(|i| i + 1);
    let new_out = match out_at.and_then(|i| argv.get(i).cloned()) {
        Some(o) => {
            let mut n = 1;
            let mut p = format!("{o}.rerun-{id}");
            while Path::new(&r.cwd).join(&p).exists() {
                n += 1;
                p = format!("{o}.rerun-{id}-{n}");
            }
            if let Some(i) = out_at {
                argv[i] = p.clone();
            }
            Some(p)
        }
        None => None,
    };
    eprintln!("rerunning run {id} in {}: pragma {}", r.cwd, argv.join(" "));
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(&argv)
        .current_dir(&r.cwd)
        .env("PRAGMA_RUN_TAGS", format!("rerun-of:{id}"))
        .env("PRAGMA_RERUN_OF", id.to_string())
        .env_remove("PRAGMA_NO_RECORD")
        .status()?;
    let new = db
        .list(&Filter {
            tag: Some(format!("rerun-of:{id}")),
            limit: Some(1),
            ..Filter::default()
        })?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the rerun left no record in {}", db.path().display()))?;
    println!("rerun of run {id} is run {} ({})", new.id, new.status);
    if !status.success() {
        anyhow::bail!("the rerun failed: {}", new.status);
    }
    // Artifacts: the same relative names under the new output, byte for byte. Without
    // --out, the outputs are the folders the runs declared (their artifacts' common
    // folder).
    let roots = match out_at.and_then(|i| r.argv.get(i + 1)) {
        Some(o) => Some((
            Path::new(&r.cwd).join(o),
            Path::new(&r.cwd).join(new_out.as_deref().unwrap_or("")),
        )),
        None => common_folder(&r.artifacts).zip(common_folder(&new.artifacts)),
    };
    if let Some((old_root, new_root)) = roots {
        let c = compare_artifacts(&r, &old_root, &new_root);
        let list = |what: &str, v: &[String]| {
            if v.is_empty() {
                String::new()
            } else {
                format!("; {what}: {}", v.join(", "))
            }
        };
        println!(
            "artifacts: {} of {} byte-identical{}{}",
            c.identical,
            c.total,
            list(
                "equal except timings and run bookkeeping (*seconds, at, run_id, number, ...)",
                &c.equal_but_timings
            ),
            list("DIFFER", &c.different)
        );
    }
    // Headline metrics: identical, or inside the recorded CI when there is one.
    let checks = compare_metrics(&r.metrics, &new.metrics);
    for m in &checks {
        println!(
            "{}: recorded {:.6}, now {:.6}: {}",
            m.name, m.recorded, m.now, m.says
        );
    }
    if checks.iter().any(|m| !m.reproduced) {
        anyhow::bail!("run {id} did not reproduce: see the metrics above");
    }
    println!("run {id} reproduced");
    Ok(())
}

pub fn cmd_runs(c: RunsCommand) -> Result<()> {
    let db = db()?;
    match c {
        RunsCommand::Compare { ids, json } => compare(&db, &ids, json),
        RunsCommand::Rerun { id, force } => rerun(&db, id, force),
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
            if r.artifacts.len() > 20 {
                println!(
                    "  ... and {} more (--json lists all)",
                    r.artifacts.len() - 20
                );
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
