//! `pragma project init|check`: the research project file (`pragma_research::project`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use pragma_research::project::Project;

#[derive(Subcommand)]
pub enum ProjectCommand {
    /// Write a commented pragma.toml here: the north star, the proxy tasks (tasks of an
    /// eval suite), the techniques under test and the baselines they must beat, the time
    /// box and the decision rule. Runs made in this folder are then recorded in
    /// .pragma/runs.db.
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
    },
    /// Check pragma.toml (here or in a parent folder) against its suite and print it.
    Check {
        /// The project file (default: the nearest pragma.toml at or above this folder).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

fn find() -> Result<PathBuf> {
    let cwd = std::env::current_dir()?;
    cwd.ancestors()
        .map(|d| d.join("pragma.toml"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no pragma.toml in {} or above: make one with `pragma project init --time-box YYYY-MM-DD`",
                cwd.display()
            )
        })
}

fn print(p: &Project) {
    println!("project    {}", p.path.display());
    println!("north star {}", p.north_star);
    println!(
        "time box   {} ({} days left)",
        p.time_box,
        p.time_box_day - pragma_research::project::today()
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

pub fn cmd_project(c: ProjectCommand) -> Result<()> {
    match c {
        ProjectCommand::Init {
            north_star,
            time_box,
            suite,
        } => {
            let dir = std::env::current_dir()?;
            let suite_path = dir.join(&suite);
            if !suite_path.is_file() {
                // The default suite is written on demand, as `pragma eval run` does.
                if suite == "eval/suite/default.toml" {
                    pragma_eval::suite::Suite::write_default(&dir.join("eval/suite"))?;
                } else {
                    anyhow::bail!("--suite {suite}: no such file");
                }
            }
            let p = Project::init(&dir, &north_star, &time_box, &suite)?;
            print(&p);
            println!(
                "wrote {}: edit the [[proxy]] tasks, then check it with `pragma project check`",
                p.path.display()
            );
            Ok(())
        }
        ProjectCommand::Check { file } => {
            let path = match file {
                Some(f) => f,
                None => find()?,
            };
            let p = Project::load(&path)?;
            print(&p);
            println!("ok");
            Ok(())
        }
    }
}
