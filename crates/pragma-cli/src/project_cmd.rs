//! `pragma project init|check|log` and `pragma checkin`: parse, call
//! `pragma_research::{project, checkin}`, present.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use pragma_research::checkin::{self, project_key, CheckinConfig};
use pragma_research::project::Project;
use pragma_research::runs::RunDb;

#[derive(Subcommand)]
pub enum ProjectCommand {
    /// Write a commented pragma.toml here: the north star, the proxy tasks (tasks of an
    /// eval suite), the techniques under test and the baselines they must beat, the time
    /// box and the decision rule. Runs made in this folder are then recorded in
    /// .pragma/runs.db. `--example eval-awareness` writes the worked case study instead.
    Init {
        /// What you want to be true, in words.
        #[arg(long, default_value = "models should not notice they are being tested")]
        north_star: String,
        /// The date (YYYY-MM-DD, UTC) by which a technique must beat its baselines.
        #[arg(long)]
        time_box: String,
        /// The eval suite file whose tasks are the proxy tasks (relative to this folder);
        /// `pragma eval run --suite default --out eval` writes eval/suite/default.toml.
        #[arg(long, default_value = "eval/suite/default.toml")]
        suite: String,
        /// A worked project instead of the template: `eval-awareness` (north star, the
        /// steering study and a detection task as proxy tasks, two techniques each
        /// beside their baselines).
        #[arg(long, conflicts_with_all = ["north_star", "suite"])]
        example: Option<String>,
    },
    /// Check pragma.toml (here or in a parent folder) against its suite and print it.
    Check {
        /// The project file (default: the nearest pragma.toml at or above this folder).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// The project's check-ins, oldest first: date, verdicts, the sentence of each.
    Log {
        /// The project file (default: the nearest pragma.toml at or above this folder).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print every check-in in full as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `pragma checkin`.
#[derive(Args)]
pub struct CheckinArgs {
    /// The project file (default: the nearest pragma.toml at or above this folder).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Model (default: the project's `model`, else pragma's default model).
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    run: crate::eval_cmd::SuiteRunArgs,
    /// Print the check-in as JSON.
    #[arg(long)]
    json: bool,
}

fn load(file: Option<PathBuf>) -> Result<Project> {
    let path = match file {
        Some(f) => f,
        None => Project::find(&std::env::current_dir()?)?,
    };
    Ok(Project::load(&path)?)
}

fn print(p: &Project) {
    println!("project    {}", p.path.display());
    println!("north star {}", p.north_star);
    let left = p.time_box_day - pragma_research::project::today();
    println!(
        "time box   {} ({})",
        p.time_box,
        match left {
            0 => "ends today".to_string(),
            l if l > 0 => format!("{l} days left"),
            l => format!("passed {} days ago", -l),
        }
    );
    println!("rule       {}", p.decision_rule);
    println!("suite      {}", p.suite.display());
    for x in &p.proxies {
        println!(
            "proxy      {}: techniques {} vs baselines {}",
            x.task,
            x.techniques.join(", "),
            x.baselines.join(", ")
        );
    }
}

/// The runs database of `p`: `$PRAGMA_RUNS_DB`, else `.pragma/runs.db` beside it.
fn db(p: &Project) -> Result<RunDb> {
    Ok(RunDb::open(&RunDb::default_path(p.dir()))?)
}

pub fn cmd_project(c: ProjectCommand) -> Result<()> {
    match c {
        ProjectCommand::Init {
            north_star,
            time_box,
            suite,
            example,
        } => {
            let dir = std::env::current_dir()?;
            let p = match example {
                Some(name) => Project::init_example(&dir, &name, &time_box)?,
                None => {
                    // Date and existing file checked before anything is written.
                    Project::writable(&dir, &time_box)?;
                    if !dir.join(&suite).is_file() {
                        // The default suite is written on demand, as `pragma eval run` does.
                        anyhow::ensure!(
                            suite == "eval/suite/default.toml",
                            "--suite {suite}: no such file"
                        );
                        pragma_eval::suite::Suite::write_default(&dir.join("eval/suite"))?;
                    }
                    Project::init(&dir, &north_star, &time_box, &suite)?
                }
            };
            print(&p);
            println!(
                "wrote {}: check it with `pragma project check`, then run `pragma checkin`",
                p.path.display()
            );
            Ok(())
        }
        ProjectCommand::Check { file } => {
            let p = load(file)?;
            print(&p);
            println!("ok");
            Ok(())
        }
        ProjectCommand::Log { file, json } => {
            let p = load(file)?;
            let db = db(&p)?;
            let all = db.checkins(&project_key(&p, &db))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            if all.is_empty() {
                println!("no check-ins yet: run `pragma checkin`");
            }
            for c in &all {
                println!("check-in {} ({} UTC): {}", c.number, c.at_utc, c.says);
                for x in &c.proxies {
                    for v in &x.verdicts {
                        println!("  {}: {}", x.task, v.verdict.says);
                    }
                }
            }
            Ok(())
        }
    }
}

pub fn cmd_checkin(a: CheckinArgs, run_id: Option<i64>) -> Result<()> {
    let p = load(a.file)?;
    // Every file the numbers depend on is an input of the run: `runs show --check` and
    // `runs rerun` name one that changed.
    crate::runs_cmd::set_inputs(checkin::input_files(&p)?);
    let spec = a
        .model
        .or_else(|| p.model.clone())
        .unwrap_or_else(|| pragma_model::DEFAULT_MODEL.to_string());
    let model = pragma_model::Model::load(&spec, &mut |m| eprintln!("{m}"))?;
    let db = db(&p)?;
    let mut cfg = CheckinConfig::new(&p);
    cfg.bootstrap = a.run.bootstrap as usize;
    cfg.yes = a.run.yes;
    cfg.run_id = run_id;
    cfg.rerun_of = crate::runs_cmd::rerun_of();
    if let Some(id) = cfg.rerun_of {
        eprintln!(
            "recomputing run {id}'s check-in from scratch (no cached cells); it is not added to the history"
        );
    }
    let run =
        crate::eval_cmd::with_progress(|events| checkin::checkin(&model, &p, &db, &cfg, events))?;
    crate::runs_cmd::set_out(&run.folder);
    let c = &run.checkin;
    if a.json {
        println!("{}", serde_json::to_string_pretty(c)?);
    } else {
        println!("{}", checkin::markdown(c));
    }
    if cfg.rerun_of.is_some() {
        eprintln!("rerun check-in written to {}", run.folder.display());
    } else {
        eprintln!(
            "check-in {} recorded in {}, {} and {}",
            c.number,
            db.path().display(),
            p.dir().join("CHECKINS.md").display(),
            run.folder.display()
        );
    }
    Ok(())
}
