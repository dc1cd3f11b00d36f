//! The steering and study families' rows and their one-line summaries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{FamilySummary, TaskReport};
use crate::run::Cell;
use crate::stats::{mean_ci, Estimate};

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

/// One row per steering technique, best combined score first.
pub(super) fn steer_rows(
    order: &[String],
    by_tech: &BTreeMap<String, Vec<Cell>>,
    reps: usize,
) -> Vec<SteerRow> {
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
    rows
}

/// The steering family in one line: the technique with the highest combined score over
/// tasks, and its margin over the runner-up (bootstrap over tasks).
pub(super) fn steering_summary(tasks: &[TaskReport], reps: usize) -> FamilySummary {
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

/// The study task's row, from its one cell.
pub(super) fn study_row(by_tech: &BTreeMap<String, Vec<Cell>>) -> Option<StudyRow> {
    by_tech
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
        })
}

/// The study family in one line: the vector against its random control, and each arm.
pub(super) fn study_summary(tasks: &[TaskReport]) -> FamilySummary {
    let st = tasks.iter().find_map(|t| t.study.as_ref());
    FamilySummary {
        family: "study".into(),
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
                if s.vector_minus_control.lo <= 0.0 && s.vector_minus_control.hi >= 0.0 {
                    " (within noise)"
                } else {
                    ""
                },
                s.arms
                    .iter()
                    .map(|(n, e)| format!("{n} {:+.2} [{:+.2}, {:+.2}]", e.mean, e.lo, e.hi))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            None => "no results yet".into(),
        },
    }
}
