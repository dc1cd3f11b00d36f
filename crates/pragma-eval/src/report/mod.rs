//! The benchmark's report: per task the techniques ranked by test AUROC with 95%
//! intervals over examples and seeds, paired comparisons with the best, a heatmap of
//! tasks x techniques, and one line per task family saying which technique won and by
//! how much, or that the difference is within noise. Written as `report.json`,
//! `report.md`, `report.html` (self-contained, the heatmap inline) and `heatmap.svg`.

mod detection;
mod planted;
mod proxy;
mod render;
mod steering;

use std::collections::BTreeMap;
use std::path::Path;

use pragma_methods::{Error, Result};
use serde::{Deserialize, Serialize};

use planted::planted_summary;
pub use planted::{PlantedRate, PlantedRow};
pub use proxy::{check_name, ProxyScores, STUDY_ARMS};
use steering::steering_summary;
pub use steering::{SteerRow, StudyRow};

use crate::detection::Pooling;
use crate::run::{cached_cell, Cell, Plan};
use crate::stats::{mean_ci, Estimate, Paired};

/// Per seed: test scores and labels.
type OwnedSeeds = Vec<(Vec<f64>, Vec<u8>)>;

/// One technique (with its pooling) on one task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// The technique's name, e.g. `probe`, `bow`.
    pub name: String,
    pub technique: String,
    /// The pooling most seeds chose on validation (`text` for one score per text).
    pub pooling: Pooling,
    pub auroc: Estimate,
    /// Mean validation AUROC over seeds (mean pooling), where the technique has one.
    pub val_auroc: Option<f64>,
    /// The best row minus this one (paired), for every row but the best.
    pub vs_best: Option<Paired>,
    /// What it chose on the first seed.
    pub choice: String,
    pub seeds: usize,
    /// Mean test AUROC over seeds under each pooling (shown beside; the row's own AUROC
    /// uses each seed's validation-chosen pooling).
    #[serde(default)]
    pub by_pooling: Vec<(Pooling, f64)>,
    /// How many seeds chose each pooling on validation.
    #[serde(default)]
    pub poolings: Vec<(Pooling, usize)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskReport {
    pub task: String,
    pub family: String,
    pub dataset: String,
    pub examples: usize,
    /// Test examples per seed (mean).
    pub test_examples: f64,
    pub classes: [String; 2],
    /// Best first.
    pub rows: Vec<Row>,
    /// Cells not (yet) computed: (technique, seed).
    pub missing: Vec<(String, u64)>,
    /// Planted tasks: the plant's kind (`lexical`, `semantic`, `null`).
    #[serde(default)]
    pub kind: Option<String>,
    /// Planted tasks: per technique, per rate.
    #[serde(default)]
    pub planted: Vec<PlantedRow>,
    /// Planted tasks: documents per set (A, B) and held-out base documents (each checked
    /// as it is and planted).
    #[serde(default)]
    pub planted_sets: Option<(usize, usize)>,
    /// Steering tasks: per technique, best combined score first.
    #[serde(default)]
    pub steering: Vec<SteerRow>,
    /// The study task: its arms on the report half.
    #[serde(default)]
    pub study: Option<StudyRow>,
}

/// One task family over its tasks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FamilySummary {
    pub family: String,
    /// Per row name: mean over tasks of its AUROC, and on how many tasks it is the best
    /// or within noise of the best. Best first.
    pub techniques: Vec<(String, f64, usize)>,
    pub tasks: usize,
    /// The best row minus the runner-up, per task, averaged over tasks with a bootstrap
    /// interval over tasks.
    pub margin: Option<Estimate>,
    pub line: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub suite: String,
    pub model: String,
    pub hook: String,
    pub seeds: u64,
    pub sae: Option<String>,
    pub tasks: Vec<TaskReport>,
    pub families: Vec<FamilySummary>,
    pub skipped: Vec<(String, String, String)>,
    /// Seconds spent computing the cells (sum over cells).
    pub cell_seconds: f64,
}

impl Report {
    /// Build the report from the cells the plan lists (cells missing or with another key
    /// are listed as missing, not used).
    pub fn build(out: &Path, plan: &Plan, reps: usize) -> Result<Report> {
        let mut tasks = Vec::new();
        let mut cell_seconds = 0.0;
        for t in &plan.tasks {
            // technique -> cells by seed
            let mut by_tech: BTreeMap<String, Vec<Cell>> = BTreeMap::new();
            let mut order: Vec<String> = Vec::new();
            let mut missing = Vec::new();
            for (task, tech, seed, key) in plan.cells.iter().filter(|c| c.0 == t.name) {
                match cached_cell(&Plan::cell_path(out, task, tech, *seed), key) {
                    Some(c) => {
                        cell_seconds += c.seconds;
                        if !order.contains(tech) {
                            order.push(tech.clone());
                        }
                        by_tech.entry(tech.clone()).or_default().push(c);
                    }
                    None => missing.push((tech.clone(), *seed)),
                }
            }
            let mut r = TaskReport {
                task: t.name.clone(),
                family: t.family.clone(),
                dataset: t.dataset.clone(),
                examples: t.examples,
                test_examples: 0.0,
                classes: t.classes.clone(),
                rows: Vec::new(),
                missing: Vec::new(),
                kind: t.kind.clone(),
                planted: Vec::new(),
                planted_sets: None,
                steering: Vec::new(),
                study: None,
            };
            match t.family.as_str() {
                "study" => r.study = steering::study_row(&by_tech),
                "steering" => r.steering = steering::steer_rows(&order, &by_tech, reps),
                "planted" => {
                    r.planted = planted::planted_rows(&order, &by_tech);
                    r.planted_sets = plan.suite["tasks"]
                        .as_array()
                        .and_then(|ts| ts.iter().find(|x| x["name"] == t.name.as_str()))
                        .and_then(|x| {
                            let p = &x["planted"];
                            Some((
                                p["items"].as_u64()? as usize,
                                p["heldout"].as_u64()? as usize,
                            ))
                        });
                }
                _ => {
                    (r.rows, r.test_examples) = detection::detection_rows(
                        &order,
                        &mut by_tech,
                        &mut missing,
                        plan.seeds,
                        reps,
                    )
                }
            }
            r.missing = missing;
            tasks.push(r);
        }
        let families = family_summaries(&tasks, reps);
        Ok(Report {
            suite: plan.suite_name.clone(),
            model: plan.model.clone(),
            hook: plan.hook.clone(),
            seeds: plan.seeds,
            sae: plan.sae_sha256.as_ref().map(|s| s[..12].to_string()),
            tasks,
            families,
            skipped: plan.skipped.clone(),
            cell_seconds,
        })
    }

    /// `report.json`, `report.md`, `report.html`, `heatmap.svg` under `out`.
    pub fn save(&self, out: &Path) -> Result<()> {
        pragma_model::io::write_json(&out.join("report.json"), self)?;
        let svg = self.heatmap_svg();
        pragma_model::io::write_atomic(&out.join("heatmap.svg"), svg.as_bytes())?;
        pragma_model::io::write_atomic(&out.join("report.md"), self.markdown().as_bytes())?;
        pragma_model::io::write_atomic(&out.join("report.html"), self.html(&svg).as_bytes())?;
        Ok(())
    }

    pub fn load(out: &Path) -> Result<Report> {
        pragma_model::io::read_json(&out.join("report.json"), "an eval report").map_err(Error::from)
    }
}

fn family_summaries(tasks: &[TaskReport], reps: usize) -> Vec<FamilySummary> {
    let mut fams: Vec<String> = Vec::new();
    for t in tasks {
        if !fams.contains(&t.family) {
            fams.push(t.family.clone());
        }
    }
    fams.into_iter()
        .map(|family| {
            if family == "planted" {
                return planted_summary(tasks);
            }
            if family == "steering" {
                return steering_summary(tasks, reps);
            }
            if family == "study" {
                return steering::study_summary(tasks);
            }
            let ts: Vec<&TaskReport> = tasks
                .iter()
                .filter(|t| t.family == family && !t.rows.is_empty())
                .collect();
            // Rows present on every task of the family.
            let mut names: Vec<String> = ts
                .first()
                .map(|t| t.rows.iter().map(|r| r.name.clone()).collect())
                .unwrap_or_default();
            names.retain(|n| ts.iter().all(|t| t.rows.iter().any(|r| &r.name == n)));
            let auroc = |t: &TaskReport, n: &str| {
                t.rows
                    .iter()
                    .find(|r| r.name == n)
                    .map(|r| r.auroc.mean)
                    .unwrap_or(f64::NAN)
            };
            let mut techniques: Vec<(String, f64, usize)> = names
                .iter()
                .map(|n| {
                    let mean = ts.iter().map(|t| auroc(t, n)).sum::<f64>() / ts.len().max(1) as f64;
                    let wins = ts
                        .iter()
                        .filter(|t| {
                            t.rows.first().is_some_and(|b| &b.name == n)
                                || t.rows
                                    .iter()
                                    .find(|r| &r.name == n)
                                    .and_then(|r| r.vs_best)
                                    .is_some_and(|p| p.within_noise())
                        })
                        .count();
                    (n.clone(), mean, wins)
                })
                .collect();
            techniques.sort_by(|a, b| b.1.total_cmp(&a.1));
            let margin = (techniques.len() >= 2 && !ts.is_empty()).then(|| {
                let d: Vec<f64> = ts
                    .iter()
                    .map(|t| auroc(t, &techniques[0].0) - auroc(t, &techniques[1].0))
                    .collect();
                mean_ci(&d, reps.max(1000), 0)
            });
            let line = match (&techniques[..], margin) {
                ([a, b, ..], Some(m)) => format!(
                    "over {} tasks, {} has the highest mean test AUROC ({:.3}; best or within \
                     noise of the best on {} of {}); the runner-up {} ({:.3}) trails by {:.3} \
                     [{:.3}, {:.3}] (bootstrap over tasks){}",
                    ts.len(),
                    a.0,
                    a.1,
                    a.2,
                    ts.len(),
                    b.0,
                    b.1,
                    m.mean,
                    m.lo,
                    m.hi,
                    if m.lo <= 0.0 { ": within noise" } else { "" }
                ),
                ([a], _) => format!("only {} ran ({:.3})", a.0, a.1),
                _ => "no results yet".into(),
            };
            FamilySummary {
                family,
                tasks: ts.len(),
                techniques,
                margin,
                line,
            }
        })
        .collect()
}
