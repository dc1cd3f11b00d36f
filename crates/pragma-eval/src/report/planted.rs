//! The planted family's rows and its one-line summary.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{FamilySummary, TaskReport};
use crate::run::Cell;

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
    /// `prompt`: the model's answer on the first seed.
    #[serde(default)]
    pub answer: Option<String>,
}

impl PlantedRate {
    /// Recovered: a hit within the top 10 in a majority of seeds.
    pub fn recovered(&self) -> bool {
        2 * self.hit_at[2] > self.seeds
    }
}

/// One row per planted-difference technique, per rate over seeds.
pub(super) fn planted_rows(
    order: &[String],
    by_tech: &BTreeMap<String, Vec<Cell>>,
) -> Vec<PlantedRow> {
    let mut rows = Vec::new();
    for tech in order {
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
        // `prompt` keeps its answers (one per rate) in the cell's `choice`.
        let answers: Vec<String> = cells
            .first()
            .and_then(|c| serde_json::from_str(&c.choice).ok())
            .unwrap_or_default();
        let rates = per_rate
            .iter()
            .enumerate()
            .map(|(ri, rs)| {
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
                    mean_discoveries: rs.iter().map(|r| r.discoveries as f64).sum::<f64>()
                        / rs.len().max(1) as f64,
                    top: rs
                        .first()
                        .map(|r| r.candidates.iter().take(3).cloned().collect())
                        .unwrap_or_default(),
                    answer: answers.get(ri).cloned(),
                }
            })
            .collect();
        rows.push(PlantedRow {
            technique: tech.clone(),
            rates,
        });
    }
    rows
}

/// The planted family in one line: per technique, plants recovered (a hit in the top 10 in
/// a majority of seeds) at each rate, the smallest rate it recovers per plant, and the false
/// discoveries on the null pair.
pub(super) fn planted_summary(tasks: &[TaskReport]) -> FamilySummary {
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
