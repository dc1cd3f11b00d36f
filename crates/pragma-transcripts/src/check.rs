//! `check A B --latent J | --ngram TEXT | --scorer NAME`: one hypothesis from `diff`
//! turned into a detector and measured, on fresh collections (new rollouts, another
//! checkpoint) or on the held-out half of the split `diff` found it on.
//!
//! A unit is a transcript, read as `diff` reads it (messages of one role). The detector's
//! score of a unit is: for an SAE latent, its largest activation in those messages (0 when
//! it never fires); for an n-gram, whether the text contains it (the same lower-cased word
//! unigrams and bigrams as `diff`); for a probe or vector scorer, the largest (or mean) of
//! its per-message pooled values. B is the positive class. Reported: AUROC with a
//! stratified percentile bootstrap 95% interval, the one-sided permutation p-value of the
//! AUROC (labels shuffled; for a presence detector this is Fisher's exact test), and for
//! presence detectors the share of each side that has it.

use std::collections::HashMap;

use pragma_methods::linear::{auroc, bootstrap_metric};
use pragma_methods::stats::XorShift;
use rusqlite::params;
use serde::Serialize;

use crate::analysis::Pool;
use crate::db::Db;
use crate::diff::{sae_scorer, split, units, Unit};
use crate::error::{Error, Result};
use crate::model::Role;

/// The hypothesis to check, as a detector.
#[derive(Clone, Debug, PartialEq)]
pub enum Detector {
    /// An SAE latent of the collections' SAE scorer: its max activation per transcript.
    Latent(u32),
    /// A word unigram or bigram (lower-cased): present or not.
    Ngram(String),
    /// A probe or vector scorer (as `transcripts score` named it, e.g. `probe:animals`).
    Scorer(String),
}

impl Detector {
    /// `latent 1770`, `"cat"`, `probe:animals`: the names `diff` prints.
    pub fn name(&self) -> String {
        match self {
            Detector::Latent(j) => format!("latent {j}"),
            Detector::Ngram(g) => format!("\"{g}\""),
            Detector::Scorer(s) => s.clone(),
        }
    }
}

/// What to check.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    /// The negative collection.
    pub a: String,
    /// The positive collection: the side the hypothesis says has more of it.
    pub b: String,
    pub detector: Detector,
    /// Messages of this role make a unit (`None`: all messages).
    pub role: Option<Role>,
    /// SAE scorer for [`Detector::Latent`]; `None`: the only one both collections have.
    pub sae: Option<String>,
    /// How a probe or vector scorer's per-message values make one per transcript: the
    /// largest per-message max, or the mean of per-message means.
    pub pool: Pool,
    /// `Some((discovery, seed))`: only the held-out units of the split `diff --discovery
    /// D --seed S` made (the same collections, the units the hypothesis was not found on).
    pub heldout: Option<(f64, u64)>,
    /// Bootstrap resamples and label permutations.
    pub reps: usize,
    pub seed: u64,
}

impl CheckConfig {
    pub fn new(a: &str, b: &str, detector: Detector) -> Self {
        CheckConfig {
            a: a.into(),
            b: b.into(),
            detector,
            role: Some(Role::Assistant),
            sae: None,
            pool: Pool::Max,
            heldout: None,
            reps: 2000,
            seed: 0,
        }
    }
}

/// The detector measured.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub a: String,
    pub b: String,
    /// The detector's name (`latent 1770`, `"cat"`, `probe:animals`) and, for latents, the
    /// SAE scorer.
    pub detector: String,
    pub sae: Option<String>,
    /// Units scored per side, and whether they are the held-out half of a diff's split.
    pub units: (usize, usize),
    pub heldout: bool,
    /// AUROC with B as the positive class, and its bootstrap 95% interval.
    pub auroc: f64,
    pub ci: (f64, f64),
    /// One-sided permutation p-value that B scores higher (`(1 + #perm >= obs) / (1 +
    /// reps)`).
    pub p: f64,
    /// Share of each side where the detector is non-zero (a latent fires, an n-gram occurs).
    pub rate: Option<(f64, f64)>,
    /// Mean score per side.
    pub mean: (f64, f64),
}

/// Per-transcript pooled values of a probe or vector scorer over messages of `role`.
fn scorer_values(
    db: &Db,
    collection: &str,
    scorer: &str,
    role: Option<Role>,
    pool: Pool,
) -> Result<HashMap<i64, f64>> {
    let cid = db.collection_id_pub(collection)?;
    let (sid, kind) = crate::analysis::scorer_id(db, collection, scorer)?;
    if kind == "sae" {
        return Err(Error::Input(format!(
            "--scorer {scorer} is an SAE scorer: check one of its latents with --latent J"
        )));
    }
    let mut st = db.conn().prepare(
        "SELECT m.transcript_id, m.role, s.mean, s.max FROM message_scores s \
         JOIN messages m ON m.id = s.message_id \
         JOIN transcripts t ON t.id = m.transcript_id JOIN runs r ON r.id = t.run_id \
         WHERE s.scorer_id = ?1 AND r.collection_id = ?2",
    )?;
    let rows = st
        .query_map(params![sid, cid], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<f64>>(2)?,
                r.get::<_, Option<f64>>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut acc: HashMap<i64, (f64, f64, usize)> = HashMap::new();
    for (t, r, mean, max) in rows {
        if role.is_some_and(|want| want.name() != r) {
            continue;
        }
        let e = acc.entry(t).or_insert((f64::NEG_INFINITY, 0.0, 0));
        if let Some(m) = max {
            e.0 = e.0.max(m);
        }
        if let Some(m) = mean {
            e.1 += m;
            e.2 += 1;
        }
    }
    Ok(acc
        .into_iter()
        .filter(|(_, v)| v.2 > 0)
        .map(|(t, (mx, sum, n))| {
            (
                t,
                match pool {
                    Pool::Max => mx,
                    Pool::Mean => sum / n as f64,
                },
            )
        })
        .collect())
}

/// The one-sided permutation p-value that positives score higher than negatives: labels
/// shuffled `reps` times, `(1 + #(AUROC_perm >= AUROC_obs)) / (1 + reps)`.
pub fn permutation_p(scores: &[f64], labels: &[u8], reps: usize, seed: u64) -> f64 {
    let Some(obs) = auroc(scores, labels) else {
        return f64::NAN;
    };
    let mut rng = XorShift::mixed(seed, 0xC4EC);
    let mut l = labels.to_vec();
    let mut ge = 0usize;
    for _ in 0..reps {
        rng.shuffle(&mut l);
        if auroc(scores, &l).unwrap_or(0.5) >= obs - 1e-12 {
            ge += 1;
        }
    }
    (1 + ge) as f64 / (1 + reps) as f64
}

/// Measure one hypothesis as a detector of B against A.
///
/// Errors: a collection is missing; the latent's SAE or the scorer was not scored on both;
/// an n-gram of more than two words; fewer than 2 units on a side.
pub fn check(db: &Db, cfg: &CheckConfig) -> Result<CheckResult> {
    if cfg.reps < 100 {
        return Err(Error::Input(format!(
            "--reps {}: expected at least 100 resamples for a 95% interval and a p-value",
            cfg.reps
        )));
    }
    let sae = match &cfg.detector {
        Detector::Latent(j) => {
            let (s, note) = sae_scorer(db, &cfg.a, &cfg.b, cfg.sae.as_deref())?;
            let s = s.ok_or_else(|| Error::Input(note.unwrap_or_default()))?;
            let spec: String = db.conn().query_row(
                "SELECT spec FROM scorers WHERE id = ?1",
                params![s.0],
                |r| r.get(0),
            )?;
            let d_sae = serde_json::from_str::<serde_json::Value>(&spec)
                .ok()
                .and_then(|v| v["definition"]["d_sae"].as_u64());
            if let Some(d) = d_sae {
                if u64::from(*j) >= d {
                    return Err(Error::Input(format!(
                        "--latent {j}: {} has {d} latents (0..{})",
                        s.2,
                        d - 1
                    )));
                }
            }
            Some(s)
        }
        _ => None,
    };
    let ngram = match &cfg.detector {
        Detector::Ngram(g) => {
            let words: Vec<String> = g
                .split(|c: char| !(c.is_alphanumeric() || c == '\''))
                .filter(|w| !w.is_empty())
                .map(|w| w.to_lowercase())
                .collect();
            if words.is_empty() || words.len() > 2 {
                return Err(Error::Input(format!(
                    "--ngram {g:?}: expected one or two words (diff tests unigrams and bigrams)"
                )));
            }
            Some(words.join(" "))
        }
        _ => None,
    };
    let ua = units(db, &cfg.a, cfg.role, sae.as_ref().map(|s| s.0))?;
    let ub = units(db, &cfg.b, cfg.role, sae.as_ref().map(|s| s.1))?;
    let values = match &cfg.detector {
        Detector::Scorer(s) => {
            let mut v = scorer_values(db, &cfg.a, s, cfg.role, cfg.pool)?;
            v.extend(scorer_values(db, &cfg.b, s, cfg.role, cfg.pool)?);
            v
        }
        _ => HashMap::new(),
    };
    let (ia, ib): (Vec<usize>, Vec<usize>) = match cfg.heldout {
        Some((discovery, seed)) => {
            if !(discovery > 0.0 && discovery < 1.0) {
                return Err(Error::Input(format!(
                    "--discovery {discovery}: expected a share between 0 and 1"
                )));
            }
            if ua.len() < 4 || ub.len() < 4 {
                return Err(Error::Input(format!(
                    "'{}' and '{}' have {} and {} transcripts; a diff split needs at least 4 per side",
                    cfg.a,
                    cfg.b,
                    ua.len(),
                    ub.len()
                )));
            }
            let s = split((&ua, &cfg.a), (&ub, &cfg.b), discovery, seed);
            (s.ha, s.hb)
        }
        None => ((0..ua.len()).collect(), (0..ub.len()).collect()),
    };
    let score = |u: &Unit| -> Option<f64> {
        match &cfg.detector {
            Detector::Latent(j) => Some(u.latents.get(j).map_or(0.0, |v| *v as f64)),
            Detector::Ngram(_) => Some(f64::from(u8::from(
                u.grams.contains(ngram.as_deref().unwrap_or_default()),
            ))),
            Detector::Scorer(_) => values.get(&u.transcript_id).copied(),
        }
    };
    let mut s = Vec::new();
    let mut y = Vec::new();
    let mut n = (0usize, 0usize);
    for (units, ix, label) in [(&ua, &ia, 0u8), (&ub, &ib, 1u8)] {
        for &i in ix {
            if let Some(v) = score(&units[i]) {
                s.push(v);
                y.push(label);
                if label == 0 {
                    n.0 += 1;
                } else {
                    n.1 += 1;
                }
            }
        }
    }
    if n.0 < 2 || n.1 < 2 {
        return Err(Error::Input(format!(
            "{} scored {} transcripts of '{}' and {} of '{}'; a check needs at least 2 per side{}",
            cfg.detector.name(),
            n.0,
            cfg.a,
            n.1,
            cfg.b,
            if matches!(cfg.detector, Detector::Scorer(_)) {
                " (score both collections with it)"
            } else {
                ""
            }
        )));
    }
    let auc = auroc(&s, &y).unwrap_or(f64::NAN);
    let ci = bootstrap_metric(&s, &y, cfg.reps, cfg.seed, |s, l| {
        auroc(s, l).unwrap_or(f64::NAN)
    });
    let p = permutation_p(&s, &y, cfg.reps, cfg.seed);
    let side = |lab: u8| -> Vec<f64> {
        s.iter()
            .zip(&y)
            .filter(|(_, &l)| l == lab)
            .map(|(v, _)| *v)
            .collect()
    };
    let (sa, sb) = (side(0), side(1));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let rate = |v: &[f64]| v.iter().filter(|&&x| x > 0.0).count() as f64 / v.len() as f64;
    let presence = !matches!(cfg.detector, Detector::Scorer(_));
    Ok(CheckResult {
        a: cfg.a.clone(),
        b: cfg.b.clone(),
        detector: cfg.detector.name(),
        sae: sae.map(|s| s.2),
        units: n,
        heldout: cfg.heldout.is_some(),
        auroc: auc,
        ci,
        p,
        rate: presence.then(|| (rate(&sa), rate(&sb))),
        mean: (mean(&sa), mean(&sb)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pragma_eval::stats::{fisher_greater, ln_factorials};

    #[test]
    fn permutation_p_of_a_presence_detector_is_fishers_exact_test() {
        // 30 negatives with 4 present, 30 positives with 12 present. For 0/1 scores the
        // AUROC is monotone in the positives' count given the total, so the permutation
        // test is the hypergeometric tail: scipy.stats.fisher_exact([[12, 18], [4, 26]],
        // alternative="greater").
        let s: Vec<f64> = (0..60)
            .map(|i| f64::from(u8::from(i < 4 || (30..42).contains(&i))))
            .collect();
        let y: Vec<u8> = (0..60).map(|i| u8::from(i >= 30)).collect();
        let exact = fisher_greater(12, 30, 4, 30, &ln_factorials(60));
        let p = permutation_p(&s, &y, 20_000, 1);
        // Monte Carlo error: sd = sqrt(p (1 - p) / 20000) < 0.002.
        assert!(
            (p - exact).abs() < 0.008,
            "permutation {p} vs Fisher {exact}"
        );
        assert!(exact < 0.05 && exact > 0.001, "{exact}");
    }

    #[test]
    fn detector_names_match_diffs() {
        assert_eq!(Detector::Latent(17).name(), "latent 17");
        assert_eq!(Detector::Ngram("cat".into()).name(), "\"cat\"");
    }
}
