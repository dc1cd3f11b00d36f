//! The detection family's rows: AUROC per technique over seeds with the two-level
//! bootstrap, pooling chosen per seed on validation, paired tests against the best.

use std::collections::BTreeMap;

use super::{OwnedSeeds, Row};
use crate::detection::Pooling;
use crate::run::Cell;
use crate::stats::{Draws, SeedScores};

/// Detection rows of one task, best first, with paired comparisons against the best;
/// cells whose test set differs from the first technique's are moved to `missing`.
/// Returns the rows and the mean number of test examples per seed.
pub(super) fn detection_rows(
    order: &[String],
    by_tech: &mut BTreeMap<String, Vec<Cell>>,
    missing: &mut Vec<(String, u64)>,
    plan_seeds: u64,
    reps: usize,
) -> (Vec<Row>, f64) {
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
        (0..plan_seeds)
            .filter(|seed| by_tech.values().all(|v| v.iter().any(|c| c.seed == *seed)))
            .collect()
    };
    if seeds.is_empty() {
        return (Vec::new(), 0.0);
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
        poolings: Vec<(Pooling, usize)>,
        technique: String,
        pooling: Pooling,
        val: Option<f64>,
        choice: String,
        scores: Vec<Vec<f64>>,
        by_pooling: Vec<(Pooling, f64)>,
    }
    let mut pending: Vec<Pending> = Vec::new();
    for tech in order {
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
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
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
            poolings: counts.clone(),
            val: (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64),
            // One choice when the seeds agree, else each seed's.
            choice: if cells.iter().all(|c| c.choice == cells[0].choice) {
                cells[0].choice.clone()
            } else {
                cells
                    .iter()
                    .map(|c| format!("seed {}: {}", c.seed, c.choice))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
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
                    poolings: p.poolings.clone(),
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
    let test_examples = labels.iter().map(|l| l.len() as f64).sum::<f64>() / labels.len() as f64;
    (rows.into_iter().map(|(r, _)| r).collect(), test_examples)
}
