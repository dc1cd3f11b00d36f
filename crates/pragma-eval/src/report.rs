//! The benchmark's report: per task the techniques ranked by test AUROC with 95%
//! intervals over examples and seeds, paired comparisons with the best, a heatmap of
//! tasks x techniques, and one line per task family saying which technique won and by
//! how much, or that the difference is within noise. Written as `report.json`,
//! `report.md`, `report.html` (self-contained, the heatmap inline) and `heatmap.svg`.

use std::collections::BTreeMap;
use std::path::Path;

use pragma_methods::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::detection::Pooling;
use crate::run::{cached_cell, Cell, Plan};
use crate::stats::{mean_ci, Draws, Estimate, Paired, SeedScores};

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
    /// Steering tasks: per technique, best combined score first.
    #[serde(default)]
    pub steering: Vec<SteerRow>,
    /// The study task: its arms on the report half.
    #[serde(default)]
    pub study: Option<StudyRow>,
}

/// The steering study in one row: the chosen point and each arm's effect on the
/// report half (log-odds of "yes, a test" vs the unsteered evaluation framing).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudyRow {
    pub layer: usize,
    pub scale: f32,
    /// Evaluation minus deployment framing, all tasks.
    pub gap: Estimate,
    /// (arm, effect vs unsteered)
    pub arms: Vec<(String, Estimate)>,
    /// Steered minus random control, paired per report task.
    pub vector_minus_control: Estimate,
}

fn est(e: &pragma_methods::study::Estimate) -> Estimate {
    Estimate {
        mean: e.mean,
        lo: e.ci.0,
        hi: e.ci.1,
    }
}

/// A steering technique on one task, over seeds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SteerRow {
    pub technique: String,
    /// Mean combined score over the report instructions of every seed, with a percentile
    /// bootstrap interval over those (instruction, seed) scores.
    pub combined: Estimate,
    pub concept: f64,
    pub relevance: f64,
    pub fluency: f64,
    /// The factor each seed chose on its selection half.
    pub factors: Vec<Option<f64>>,
    /// The first seed's first report instruction and continuation.
    pub example: (String, String),
    pub seeds: usize,
}

/// A planted-difference technique on one task, per plant rate, over seeds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlantedRow {
    pub technique: String,
    pub rates: Vec<PlantedRate>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlantedRate {
    pub rate: f64,
    pub seeds: usize,
    /// Seeds with a hit within the top 1, 5 and 10 candidates (recall@k = this / seeds).
    pub hit_at: [usize; 3],
    /// Median over seeds with a hit of the first hit's rank.
    pub median_first_hit: Option<f64>,
    /// Mean over seeds of the candidates significant at FDR 0.05.
    pub mean_discoveries: f64,
    /// The first seed's top 3 candidates.
    pub top: Vec<crate::planted::Candidate>,
}

impl PlantedRate {
    /// Recovered: a hit within the top 10 in a majority of seeds.
    pub fn recovered(&self) -> bool {
        2 * self.hit_at[2] > self.seeds
    }
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
            if t.family == "study" {
                let row = by_tech
                    .values()
                    .flatten()
                    .find_map(|c| c.study.as_ref())
                    .map(|st| StudyRow {
                        layer: st.best_layer,
                        scale: st.best_scale,
                        gap: est(&st.gap),
                        arms: st
                            .arms
                            .iter()
                            .filter(|a| !a.name.contains("unsteered") || a.name.contains("deploy"))
                            .map(|a| (a.name.clone(), est(&a.effect)))
                            .collect(),
                        vector_minus_control: est(&st.vector_minus_control),
                    });
                tasks.push(TaskReport {
                    task: t.name.clone(),
                    family: t.family.clone(),
                    dataset: t.dataset.clone(),
                    examples: t.examples,
                    test_examples: 0.0,
                    classes: t.classes.clone(),
                    rows: Vec::new(),
                    missing,
                    kind: t.kind.clone(),
                    planted: Vec::new(),
                    steering: Vec::new(),
                    study: row,
                });
                continue;
            }
            if t.family == "steering" {
                let mut rows: Vec<SteerRow> = order
                    .iter()
                    .map(|tech| {
                        let rs: Vec<&crate::steering::SteerResult> = by_tech[tech]
                            .iter()
                            .filter_map(|c| c.steering.as_ref())
                            .collect();
                        let all: Vec<f64> = rs
                            .iter()
                            .flat_map(|r| r.per_instruction.iter().copied())
                            .collect();
                        let avg = |f: &dyn Fn(&crate::steering::SteerResult) -> f64| {
                            rs.iter().map(|r| f(r)).sum::<f64>() / rs.len().max(1) as f64
                        };
                        SteerRow {
                            technique: tech.clone(),
                            combined: mean_ci(&all, reps.max(100), 0),
                            concept: avg(&|r| r.concept),
                            relevance: avg(&|r| r.relevance),
                            fluency: avg(&|r| r.fluency),
                            factors: rs.iter().map(|r| r.factor).collect(),
                            example: rs.first().map(|r| r.example.clone()).unwrap_or_default(),
                            seeds: rs.len(),
                        }
                    })
                    .collect();
                rows.sort_by(|a, b| b.combined.mean.total_cmp(&a.combined.mean));
                tasks.push(TaskReport {
                    task: t.name.clone(),
                    family: t.family.clone(),
                    dataset: t.dataset.clone(),
                    examples: t.examples,
                    test_examples: 0.0,
                    classes: t.classes.clone(),
                    rows: Vec::new(),
                    missing,
                    kind: t.kind.clone(),
                    planted: Vec::new(),
                    steering: rows,
                    study: None,
                });
                continue;
            }
            if t.family == "planted" {
                let mut rows = Vec::new();
                for tech in &order {
                    let cells = &by_tech[tech];
                    let per_rate: Vec<Vec<&crate::planted::RateResult>> = {
                        let n = cells
                            .iter()
                            .filter_map(|c| c.planted.as_ref().map(Vec::len))
                            .max()
                            .unwrap_or(0);
                        (0..n)
                            .map(|r| {
                                cells
                                    .iter()
                                    .filter_map(|c| c.planted.as_ref().and_then(|v| v.get(r)))
                                    .collect()
                            })
                            .collect()
                    };
                    let rates = per_rate
                        .iter()
                        .map(|rs| {
                            let hit = |k: usize| {
                                rs.iter()
                                    .filter(|r| r.first_hit.is_some_and(|h| h <= k))
                                    .count()
                            };
                            let mut firsts: Vec<f64> = rs
                                .iter()
                                .filter_map(|r| r.first_hit.map(|h| h as f64))
                                .collect();
                            firsts.sort_by(f64::total_cmp);
                            PlantedRate {
                                rate: rs.first().map_or(0.0, |r| r.rate),
                                seeds: rs.len(),
                                hit_at: [hit(1), hit(5), hit(10)],
                                median_first_hit: (!firsts.is_empty()).then(|| {
                                    let m = firsts.len();
                                    if m % 2 == 1 {
                                        firsts[m / 2]
                                    } else {
                                        0.5 * (firsts[m / 2 - 1] + firsts[m / 2])
                                    }
                                }),
                                mean_discoveries: rs
                                    .iter()
                                    .map(|r| r.discoveries as f64)
                                    .sum::<f64>()
                                    / rs.len().max(1) as f64,
                                top: rs
                                    .first()
                                    .map(|r| r.candidates.iter().take(3).cloned().collect())
                                    .unwrap_or_default(),
                            }
                        })
                        .collect();
                    rows.push(PlantedRow {
                        technique: tech.clone(),
                        rates,
                    });
                }
                tasks.push(TaskReport {
                    task: t.name.clone(),
                    family: t.family.clone(),
                    dataset: t.dataset.clone(),
                    examples: t.examples,
                    test_examples: 0.0,
                    classes: t.classes.clone(),
                    rows: Vec::new(),
                    missing,
                    kind: t.kind.clone(),
                    planted: rows,
                    steering: Vec::new(),
                    study: None,
                });
                continue;
            }
            // Cells must share their seed's test set with the first technique's; any other
            // is treated as missing (a stale cell from another split).
            if let Some(first_tech) = order.first().cloned() {
                let reference: Vec<(u64, Vec<usize>)> = by_tech[&first_tech]
                    .iter()
                    .map(|c| (c.seed, c.test.clone()))
                    .collect();
                for (tech, cells) in by_tech.iter_mut() {
                    cells.retain(|c| {
                        let ok = reference
                            .iter()
                            .find(|r| r.0 == c.seed)
                            .is_none_or(|r| r.1 == c.test);
                        if !ok {
                            missing.push((tech.clone(), c.seed));
                        }
                        ok
                    });
                }
            }
            // The seeds every present technique has (so paired draws line up).
            let seeds: Vec<u64> = if by_tech.is_empty() {
                Vec::new()
            } else {
                (0..plan.seeds)
                    .filter(|seed| by_tech.values().all(|v| v.iter().any(|c| c.seed == *seed)))
                    .collect()
            };
            if seeds.is_empty() {
                tasks.push(TaskReport {
                    task: t.name.clone(),
                    family: t.family.clone(),
                    dataset: t.dataset.clone(),
                    examples: t.examples,
                    test_examples: 0.0,
                    classes: t.classes.clone(),
                    rows: Vec::new(),
                    missing,
                    kind: t.kind.clone(),
                    planted: Vec::new(),
                    steering: Vec::new(),
                    study: None,
                });
                continue;
            }
            let first = &by_tech[&order[0]];
            let seed_cell = |s: u64| first.iter().find(|c| c.seed == s);
            let labels: Vec<&[u8]> = seeds
                .iter()
                .map(|s| seed_cell(*s).map(|c| c.labels.as_slice()).unwrap_or(&[]))
                .collect();
            // With given splits every seed has the same test examples: resample them once
            // per replicate for all seeds (seeds then add only the techniques' own randomness).
            let shared = seeds
                .iter()
                .all(|s| seed_cell(*s).map(|c| &c.test) == seed_cell(seeds[0]).map(|c| &c.test));
            let draws = Draws::new(&labels, reps, 0, shared && seeds.len() > 1);
            // Rows: one per technique; each seed's pooling is the one with the higher
            // validation AUROC (ties: mean). Both poolings' test AUROCs are kept beside.
            struct Pending {
                technique: String,
                pooling: Pooling,
                val: Option<f64>,
                choice: String,
                scores: Vec<Vec<f64>>,
                by_pooling: Vec<(Pooling, f64)>,
            }
            let mut pending: Vec<Pending> = Vec::new();
            for tech in &order {
                let cells = &by_tech[tech];
                let cells: Vec<&Cell> = seeds
                    .iter()
                    .filter_map(|s| cells.iter().find(|c| c.seed == *s))
                    .collect();
                let chosen: Vec<usize> = cells
                    .iter()
                    .map(|c| {
                        let mut best = 0;
                        for (k, r) in c.results.iter().enumerate() {
                            let v = r.val_auroc.unwrap_or(f64::NEG_INFINITY);
                            let bv = c.results[best].val_auroc.unwrap_or(f64::NEG_INFINITY);
                            if v > bv {
                                best = k;
                            }
                        }
                        best
                    })
                    .collect();
                let vals: Vec<f64> = cells
                    .iter()
                    .zip(&chosen)
                    .filter_map(|(c, &k)| c.results.get(k).and_then(|r| r.val_auroc))
                    .collect();
                let mut counts: Vec<(Pooling, usize)> = Vec::new();
                for (c, &k) in cells.iter().zip(&chosen) {
                    if let Some(r) = c.results.get(k) {
                        match counts.iter_mut().find(|x| x.0 == r.pooling) {
                            Some(x) => x.1 += 1,
                            None => counts.push((r.pooling, 1)),
                        }
                    }
                }
                counts.sort_by(|a, b| b.1.cmp(&a.1));
                let by_pooling = cells[0]
                    .results
                    .iter()
                    .enumerate()
                    .map(|(k, r)| {
                        let m = cells
                            .iter()
                            .filter_map(|c| c.results.get(k).map(|x| x.auroc))
                            .sum::<f64>()
                            / cells.len() as f64;
                        (r.pooling, m)
                    })
                    .collect();
                pending.push(Pending {
                    technique: tech.clone(),
                    pooling: counts.first().map_or(Pooling::Text, |c| c.0),
                    val: (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64),
                    choice: cells[0].choice.clone(),
                    scores: cells
                        .iter()
                        .zip(&chosen)
                        .map(|(c, &k)| {
                            c.results
                                .get(k)
                                .map(|x| x.scores.clone())
                                .unwrap_or_default()
                        })
                        .collect(),
                    by_pooling,
                });
            }
            let as_seeds = |p: &Pending| -> OwnedSeeds {
                p.scores
                    .iter()
                    .zip(&labels)
                    .map(|(s, l)| (s.clone(), l.to_vec()))
                    .collect()
            };
            let mut rows: Vec<(Row, OwnedSeeds)> = pending
                .iter()
                .map(|p| {
                    let sv = as_seeds(p);
                    let refs: Vec<SeedScores> = sv.iter().map(|(s, l)| (&s[..], &l[..])).collect();
                    (
                        Row {
                            name: p.technique.clone(),
                            technique: p.technique.clone(),
                            pooling: p.pooling,
                            auroc: draws.auroc(&refs),
                            val_auroc: p.val,
                            vs_best: None,
                            choice: p.choice.clone(),
                            seeds: seeds.len(),
                            by_pooling: p.by_pooling.clone(),
                        },
                        sv,
                    )
                })
                .collect();
            rows.sort_by(|a, b| b.0.auroc.mean.total_cmp(&a.0.auroc.mean));
            let best: OwnedSeeds = rows[0].1.clone();
            let best_refs: Vec<SeedScores> = best.iter().map(|(s, l)| (&s[..], &l[..])).collect();
            for (row, sv) in rows.iter_mut().skip(1) {
                let refs: Vec<SeedScores> = sv.iter().map(|(s, l)| (&s[..], &l[..])).collect();
                row.vs_best = Some(draws.paired(&best_refs, &refs));
            }
            tasks.push(TaskReport {
                task: t.name.clone(),
                family: t.family.clone(),
                dataset: t.dataset.clone(),
                examples: t.examples,
                test_examples: labels.iter().map(|l| l.len() as f64).sum::<f64>()
                    / labels.len() as f64,
                classes: t.classes.clone(),
                rows: rows.into_iter().map(|(r, _)| r).collect(),
                missing,
                kind: t.kind.clone(),
                planted: Vec::new(),
                steering: Vec::new(),
                study: None,
            });
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

    /// The rows every task has, in order of mean AUROC over tasks (heatmap columns).
    fn columns(&self) -> Vec<String> {
        let mut cols: Vec<(String, f64)> = Vec::new();
        for f in self.families.iter().filter(|f| f.family == "detection") {
            for (n, m, _) in &f.techniques {
                if !cols.iter().any(|c| &c.0 == n) {
                    cols.push((n.clone(), *m));
                }
            }
        }
        cols.into_iter().map(|c| c.0).collect()
    }

    /// Tasks x techniques, cells coloured by test AUROC (0.5 white -> 1.0 dark blue;
    /// below 0.5 in orange), each with its value.
    pub fn heatmap_svg(&self) -> String {
        let cols = self.columns();
        let tasks: Vec<&TaskReport> = self
            .tasks
            .iter()
            .filter(|t| t.family == "detection")
            .collect();
        let (cw, ch, left, top) = (74.0, 24.0, 150.0, 120.0);
        let w = left + cw * cols.len() as f64 + 20.0;
        let h = top + ch * tasks.len() as f64 + 40.0;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
             font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{left}\" y=\"16\" font-size=\"13\">test AUROC, mean over {} seeds ({})</text>\n",
            self.seeds,
            esc(&self.model)
        );
        for (c, name) in cols.iter().enumerate() {
            let x = left + cw * c as f64 + cw / 2.0;
            s += &format!(
                "<text transform=\"translate({x},{}) rotate(-45)\">{}</text>\n",
                top - 6.0,
                esc(name)
            );
        }
        for (r, t) in tasks.iter().enumerate() {
            let y = top + ch * r as f64;
            s += &format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
                left - 6.0,
                y + ch / 2.0 + 4.0,
                esc(&t.task)
            );
            for (c, name) in cols.iter().enumerate() {
                let x = left + cw * c as f64;
                match t.rows.iter().find(|row| &row.name == name) {
                    Some(row) => {
                        let v = row.auroc.mean;
                        let best = t.rows.first().is_some_and(|b| &b.name == name);
                        s += &format!(
                            "<rect x=\"{x}\" y=\"{y}\" width=\"{cw}\" height=\"{ch}\" fill=\"{}\" \
                             stroke=\"{}\" stroke-width=\"{}\"><title>{} / {}: {:.3} [{:.3}, {:.3}]</title></rect>\n\
                             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{}\">{:.2}</text>\n",
                            colour(v),
                            if best { "black" } else { "#ddd" },
                            if best { 2 } else { 1 },
                            esc(&t.task),
                            esc(name),
                            v,
                            row.auroc.lo,
                            row.auroc.hi,
                            x + cw / 2.0,
                            y + ch / 2.0 + 4.0,
                            if v > 0.85 { "white" } else { "black" },
                            v
                        );
                    }
                    None => {
                        s += &format!(
                            "<rect x=\"{x}\" y=\"{y}\" width=\"{cw}\" height=\"{ch}\" fill=\"#f4f4f4\" stroke=\"#ddd\"/>\n"
                        );
                    }
                }
            }
        }
        s += &format!(
            "<text x=\"{left}\" y=\"{}\" fill=\"#555\">best per task outlined; hover a cell for its 95% interval</text>\n</svg>\n",
            h - 14.0
        );
        s
    }

    pub fn markdown(&self) -> String {
        let mut m = format!(
            "# pragma eval: {}\n\nModel {}, hook `{}`, {} split seeds{}. Test AUROC: mean over seeds, \
             95% interval from a two-level bootstrap (seeds, then examples within seed). \
             \"vs best\": the best row minus this one, paired on the same draws, with its \
             interval and p-value; \"noise\" when the interval includes 0.\n\n",
            self.suite,
            self.model,
            self.hook,
            self.seeds,
            self.sae
                .as_ref()
                .map(|s| format!(", SAE {s}"))
                .unwrap_or_default()
        );
        for f in &self.families {
            m += &format!("**{}**: {}\n\n", f.family, f.line);
        }
        m += "![heatmap](heatmap.svg)\n\n";
        for t in &self.tasks {
            if t.family == "planted" {
                m += &format!("## {} (planted: {} base documents)\n\n", t.task, t.examples);
            } else if t.family == "study" {
                m += &format!("## {} (study: {} tasks)\n\n", t.task, t.examples);
            } else if t.family == "steering" {
                m += &format!(
                    "## {} (steering: {} concept examples)\n\n",
                    t.task, t.examples
                );
            } else {
                m += &format!(
                    "## {} ({}: {} examples, ~{:.0} test per seed; positive = {})\n\n",
                    t.task, t.family, t.examples, t.test_examples, t.classes[1]
                );
            }
            if !t.rows.is_empty() {
                m += "| technique | test AUROC [95% CI] | vs best | p | val AUROC | pooling (test AUROC mean / max) | chose |\n|---|---|---|---|---|---|---|\n";
                for r in &t.rows {
                    let vs = r
                        .vs_best
                        .map(|p| {
                            (
                                format!(
                                    "{:+.3} [{:+.3}, {:+.3}]{}",
                                    p.diff.mean,
                                    p.diff.lo,
                                    p.diff.hi,
                                    if p.within_noise() { " noise" } else { "" }
                                ),
                                format!("{:.3}", p.p),
                            )
                        })
                        .unwrap_or(("best".into(), String::new()));
                    let pool = if r.pooling == Pooling::Text {
                        "-".to_string()
                    } else {
                        format!(
                            "{} ({})",
                            format!("{:?}", r.pooling).to_lowercase(),
                            r.by_pooling
                                .iter()
                                .map(|(_, a)| format!("{a:.3}"))
                                .collect::<Vec<_>>()
                                .join(" / ")
                        )
                    };
                    m += &format!(
                        "| {} | {:.3} [{:.3}, {:.3}] | {} | {} | {} | {} | {} |\n",
                        r.name,
                        r.auroc.mean,
                        r.auroc.lo,
                        r.auroc.hi,
                        vs.0,
                        vs.1,
                        r.val_auroc.map(|v| format!("{v:.3}")).unwrap_or_default(),
                        pool,
                        r.choice.replace('|', "/")
                    );
                }
                m += "\n";
            }
            if let Some(st) = &t.study {
                m += &format!(
                    "The evaluation-awareness study (`pragma steer study`'s defaults): a \
                     difference-of-means vector from contrastive pairs, layer {} and scale {} \
                     chosen on half of the tasks; effects on the other half, in log-odds of \
                     \"yes, this is a test\" against the unsteered evaluation-framed prompts \
                     (negative = less sure it is a test). Gap between framings over all tasks: \
                     {:+.2} [{:+.2}, {:+.2}].\n\n| arm | effect [95% CI] |\n|---|---|\n",
                    st.layer, st.scale, st.gap.mean, st.gap.lo, st.gap.hi
                );
                for (name, e) in &st.arms {
                    m += &format!("| {name} | {:+.2} [{:+.2}, {:+.2}] |\n", e.mean, e.lo, e.hi);
                }
                m += &format!(
                    "| steered minus random control (paired) | {:+.2} [{:+.2}, {:+.2}] |\n\n",
                    st.vector_minus_control.mean,
                    st.vector_minus_control.lo,
                    st.vector_minus_control.hi
                );
            }
            if !t.steering.is_empty() {
                m += &format!(
                    "Steering toward \"{}\". Scores in [0, 1] on the report half of the \
                     instructions (concept: a held-out bag-of-words classifier; relevance: \
                     log-probability gain from the instruction, relative to the unsteered \
                     answer's; fluency: relative perplexity x (1 - repeated trigrams)); \
                     combined = their harmonic mean, 95% interval over instructions and \
                     seeds.\n\n| technique | combined [95% CI] | concept | relevance | fluency | factor per seed | example |\n|---|---|---|---|---|---|---|\n",
                    t.classes[1]
                );
                for r in &t.steering {
                    m += &format!(
                        "| {} | {:.3} [{:.3}, {:.3}] | {:.3} | {:.3} | {:.3} | {} | {}: {} |\n",
                        r.technique,
                        r.combined.mean,
                        r.combined.lo,
                        r.combined.hi,
                        r.concept,
                        r.relevance,
                        r.fluency,
                        r.factors
                            .iter()
                            .map(|f| f.map_or("-".into(), |x| format!("{x}")))
                            .collect::<Vec<_>>()
                            .join(", "),
                        r.example.0.replace('|', "/"),
                        r.example.1.replace('|', "/").replace('\n', " ")
                    );
                }
                m += "\n";
            }
            if !t.planted.is_empty() {
                let rates = &t.planted[0].rates;
                m += &format!(
                    "Plant: {} ({}). Per rate: seeds with a hit in the top 1 / 5 / 10 \
                     candidates (a hit detects held-out planted documents with AUROC >= {}), \
                     median rank of the first hit, mean discoveries at FDR {}.\n\n| technique |{}\n|---|{}\n",
                    t.task,
                    t.kind.as_deref().unwrap_or("?"),
                    crate::planted::HIT_AUROC,
                    crate::planted::FDR_Q,
                    rates
                        .iter()
                        .map(|r| if t.kind.as_deref() == Some("null") {
                            " null pair |".to_string()
                        } else {
                            format!(" p = {}% |", r.rate * 100.0)
                        })
                        .collect::<String>(),
                    "---|".repeat(rates.len())
                );
                for row in &t.planted {
                    m += &format!("| {} |", row.technique);
                    for r in &row.rates {
                        m += &format!(
                            " {}/{}/{} of {}, rank {}, disc {:.1} |",
                            r.hit_at[0],
                            r.hit_at[1],
                            r.hit_at[2],
                            r.seeds,
                            r.median_first_hit.map_or("-".into(), |v| format!("{v}")),
                            r.mean_discoveries
                        );
                    }
                    m += "\n";
                }
                m += "\nTop candidates (first seed, highest rate): ";
                let highest = |row: &PlantedRow| {
                    row.rates
                        .iter()
                        .max_by(|a, b| a.rate.total_cmp(&b.rate))
                        .cloned()
                };
                m += &t
                    .planted
                    .iter()
                    .map(|row| {
                        format!(
                            "{}: {}",
                            row.technique,
                            highest(row)
                                .map(|r| r
                                    .top
                                    .iter()
                                    .map(|c| format!("{} ({:.2})", c.name, c.heldout_auroc))
                                    .collect::<Vec<_>>()
                                    .join(", "))
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                m += "\n\n";
            }
            if !t.missing.is_empty() {
                m += &format!("Not computed yet: {} cells.\n\n", t.missing.len());
            }
        }
        if !self.skipped.is_empty() {
            m += "## Not run\n\n";
            let mut seen = std::collections::BTreeSet::new();
            for (t, tech, why) in &self.skipped {
                if seen.insert((t, tech)) {
                    m += &format!("- {t} / {tech}: {why}\n");
                }
            }
        }
        m
    }

    pub fn html(&self, svg: &str) -> String {
        let md = self.markdown();
        let mut body = String::new();
        let mut in_table = false;
        for line in md.lines() {
            if line.starts_with("|---") {
                continue;
            }
            if let Some(row) = line.strip_prefix('|') {
                let cells: Vec<&str> = row
                    .trim_end_matches('|')
                    .split('|')
                    .map(str::trim)
                    .collect();
                if !in_table {
                    body += "<table><tr>";
                    body += &cells
                        .iter()
                        .map(|c| format!("<th>{}</th>", esc(c)))
                        .collect::<String>();
                    body += "</tr>\n";
                    in_table = true;
                } else {
                    body += "<tr>";
                    body += &cells
                        .iter()
                        .map(|c| format!("<td>{}</td>", esc(c)))
                        .collect::<String>();
                    body += "</tr>\n";
                }
                continue;
            }
            if in_table {
                body += "</table>\n";
                in_table = false;
            }
            if let Some(h) = line.strip_prefix("## ") {
                body += &format!("<h2>{}</h2>\n", esc(h));
            } else if let Some(h) = line.strip_prefix("# ") {
                body += &format!("<h1>{}</h1>\n", esc(h));
            } else if line.starts_with("![heatmap]") {
                body += svg;
            } else if !line.is_empty() {
                body += &format!("<p>{}</p>\n", esc(line).replace("**", ""));
            }
        }
        if in_table {
            body += "</table>\n";
        }
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>pragma eval: {}</title>\
             <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}\
             table{{border-collapse:collapse;font-size:13px;margin-bottom:1em}}\
             td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
             th{{background:#f0f0f0}}svg{{max-width:100%;height:auto}}</style></head><body>\n{body}</body></html>\n",
            esc(&self.suite)
        )
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// 0.5 -> white, 1.0 -> dark blue; below 0.5 shades of orange (worse than chance).
fn colour(v: f64) -> String {
    if !v.is_finite() {
        return "#eeeeee".into();
    }
    let t = ((v - 0.5) * 2.0).clamp(-1.0, 1.0);
    let (r, g, b) = if t >= 0.0 {
        (
            255.0 - t * (255.0 - 8.0),
            255.0 - t * (255.0 - 48.0),
            255.0 - t * (255.0 - 107.0),
        )
    } else {
        let u = -t;
        (255.0, 255.0 - u * 120.0, 255.0 - u * 200.0)
    };
    format!("#{:02x}{:02x}{:02x}", r as u8, g as u8, b as u8)
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
                let st = tasks.iter().find_map(|t| t.study.as_ref());
                return FamilySummary {
                    family,
                    techniques: Vec::new(),
                    tasks: usize::from(st.is_some()),
                    margin: st.map(|s| s.vector_minus_control),
                    line: match st {
                        Some(s) => format!(
                            "the vector (layer {}, scale {}) minus a random control of the same \
                             norm: {:+.2} [{:+.2}, {:+.2}] log-odds{}; effects vs unsteered: {}",
                            s.layer,
                            s.scale,
                            s.vector_minus_control.mean,
                            s.vector_minus_control.lo,
                            s.vector_minus_control.hi,
                            if s.vector_minus_control.lo <= 0.0 && s.vector_minus_control.hi >= 0.0
                            {
                                " (within noise)"
                            } else {
                                ""
                            },
                            s.arms
                                .iter()
                                .map(|(n, e)| format!(
                                    "{n} {:+.2} [{:+.2}, {:+.2}]",
                                    e.mean, e.lo, e.hi
                                ))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                        None => "no results yet".into(),
                    },
                };
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

/// The planted family in one line: per technique, plants recovered (a hit in the top 10 in
/// a majority of seeds) at each rate, the smallest rate it recovers per plant, and the false
/// discoveries on the null pair.
fn planted_summary(tasks: &[TaskReport]) -> FamilySummary {
    let plants: Vec<&TaskReport> = tasks
        .iter()
        .filter(|t| {
            t.family == "planted" && t.kind.as_deref() != Some("null") && !t.planted.is_empty()
        })
        .collect();
    let nulls: Vec<&TaskReport> = tasks
        .iter()
        .filter(|t| t.family == "planted" && t.kind.as_deref() == Some("null"))
        .collect();
    let mut techs: Vec<String> = Vec::new();
    for t in plants.iter().chain(&nulls) {
        for r in &t.planted {
            if !techs.contains(&r.technique) {
                techs.push(r.technique.clone());
            }
        }
    }
    let mut parts = Vec::new();
    let mut scored = Vec::new();
    for tech in &techs {
        let mut per_rate: Vec<(f64, usize)> = Vec::new();
        let mut smallest: Vec<String> = Vec::new();
        for t in &plants {
            if let Some(row) = t.planted.iter().find(|r| &r.technique == tech) {
                for r in &row.rates {
                    match per_rate.iter_mut().find(|x| x.0 == r.rate) {
                        Some(x) => x.1 += usize::from(r.recovered()),
                        None => per_rate.push((r.rate, usize::from(r.recovered()))),
                    }
                }
                let min = row
                    .rates
                    .iter()
                    .filter(|r| r.recovered())
                    .map(|r| r.rate)
                    .fold(f64::INFINITY, f64::min);
                smallest.push(format!(
                    "{} {}",
                    t.task,
                    if min.is_finite() {
                        format!("{}%", min * 100.0)
                    } else {
                        "none".into()
                    }
                ));
            }
        }
        per_rate.sort_by(|a, b| a.0.total_cmp(&b.0));
        let fd: Vec<f64> = nulls
            .iter()
            .filter_map(|t| t.planted.iter().find(|r| &r.technique == tech))
            .flat_map(|r| r.rates.iter().map(|x| x.mean_discoveries))
            .collect();
        let total: usize = per_rate.iter().map(|x| x.1).sum();
        scored.push((tech.clone(), total as f64, total));
        parts.push(format!(
            "{tech} recovers {} of {} plants at {} (smallest rate: {}){}",
            per_rate
                .iter()
                .map(|(_, k)| k.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
            plants.len(),
            per_rate
                .iter()
                .map(|(r, _)| format!("{}%", r * 100.0))
                .collect::<Vec<_>>()
                .join(" / "),
            smallest.join(", "),
            if fd.is_empty() {
                String::new()
            } else {
                format!(
                    "; {:.1} false discoveries on the null pair",
                    fd.iter().sum::<f64>() / fd.len() as f64
                )
            }
        ));
    }
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    FamilySummary {
        family: "planted".into(),
        tasks: plants.len() + nulls.len(),
        techniques: scored,
        margin: None,
        line: if parts.is_empty() {
            "no results yet".into()
        } else {
            format!(
                "a hypothesis is recovered when one of the top 10 detects held-out planted \
                 documents with AUROC >= {} in a majority of seeds. {}.",
                crate::planted::HIT_AUROC,
                parts.join("; ")
            )
        },
    }
}

/// The steering family in one line: the technique with the highest combined score over
/// tasks, and its margin over the runner-up (bootstrap over tasks).
fn steering_summary(tasks: &[TaskReport], reps: usize) -> FamilySummary {
    let ts: Vec<&TaskReport> = tasks
        .iter()
        .filter(|t| t.family == "steering" && !t.steering.is_empty())
        .collect();
    let mut names: Vec<String> = ts
        .first()
        .map(|t| t.steering.iter().map(|r| r.technique.clone()).collect())
        .unwrap_or_default();
    names.retain(|n| {
        ts.iter()
            .all(|t| t.steering.iter().any(|r| &r.technique == n))
    });
    let score = |t: &TaskReport, n: &str| {
        t.steering
            .iter()
            .find(|r| r.technique == n)
            .map_or(f64::NAN, |r| r.combined.mean)
    };
    let mut techniques: Vec<(String, f64, usize)> = names
        .iter()
        .map(|n| {
            let mean = ts.iter().map(|t| score(t, n)).sum::<f64>() / ts.len().max(1) as f64;
            let wins = ts
                .iter()
                .filter(|t| t.steering.first().is_some_and(|r| &r.technique == n))
                .count();
            (n.clone(), mean, wins)
        })
        .collect();
    techniques.sort_by(|a, b| b.1.total_cmp(&a.1));
    let margin = (techniques.len() >= 2).then(|| {
        let d: Vec<f64> = ts
            .iter()
            .map(|t| score(t, &techniques[0].0) - score(t, &techniques[1].0))
            .collect();
        mean_ci(&d, reps.max(1000), 0)
    });
    let line = match (&techniques[..], margin) {
        ([a, b, ..], Some(m)) => format!(
            "over {} concepts, {} has the highest combined steering score ({:.3}; best on {}); \
             the runner-up {} ({:.3}) trails by {:.3} [{:.3}, {:.3}] (bootstrap over concepts){}. \
             All: {}",
            ts.len(),
            a.0,
            a.1,
            a.2,
            b.0,
            b.1,
            m.mean,
            m.lo,
            m.hi,
            if m.lo <= 0.0 { ": within noise" } else { "" },
            techniques
                .iter()
                .map(|(n, v, _)| format!("{n} {v:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => "no results yet".into(),
    };
    FamilySummary {
        family: "steering".into(),
        tasks: ts.len(),
        techniques,
        margin,
        line,
    }
}
