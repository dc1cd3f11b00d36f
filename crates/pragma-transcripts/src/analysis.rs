//! Outliers and clusters of a scored collection.
//!
//! - [`outliers`] on a score: messages whose pooled value (mean or max over tokens), or
//!   transcripts whose assistant messages' (the max or mean of theirs), is far from the
//!   collection's, as a robust z-score `(x - median) / (1.4826 MAD)` (when the MAD is 0,
//!   1.2533 x the mean absolute deviation);
//!   on an SAE: transcripts whose assistant messages fire latents that are rare in the
//!   collection, scored by the mean of `-log2(share of transcripts where the latent fires)`
//!   over their 5 rarest latents.
//!   Each comes with its reason in words.
//! - [`clusters`]: spherical k-means (k-means++ seeding, cosine) over each transcript's
//!   latent-presence vector (an SAE scorer) or its word presence (without one), weighted by
//!   inverse document frequency; each cluster described by the latents and words most
//!   over-represented in it (lift = share in the cluster / share overall, shown above 1.2).
//!   Latents are those of the assistant messages, max-pooled.

use std::collections::HashMap;

use pragma_methods::stats::XorShift;
use rusqlite::params;
use serde::Serialize;

use crate::db::Db;
use crate::error::{Error, Result};

/// One outlier.
#[derive(Clone, Debug, Serialize)]
pub struct Outlier {
    pub transcript_id: i64,
    pub run: String,
    /// The message index, for message-level outliers.
    pub message: Option<i64>,
    pub value: f64,
    /// Robust z-score (score outliers) or mean rarity in bits (latent outliers).
    pub z: f64,
    pub reason: String,
}

/// Pooling for score outliers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Mean,
    Max,
}

/// A scorer's id and kind on a collection; a missing one is an error listing the
/// collection's scorers.
pub(crate) fn scorer_id(db: &Db, collection: &str, scorer: &str) -> Result<(i64, String)> {
    let cid = db.collection_id_pub(collection)?;
    db.conn()
        .query_row(
            "SELECT id, kind FROM scorers WHERE collection_id = ?1 AND name = ?2",
            params![cid, scorer],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|_| {
            let names: Vec<String> = db
                .conn()
                .prepare("SELECT name FROM scorers WHERE collection_id = ?1 ORDER BY id")
                .and_then(|mut st| {
                    st.query_map(params![cid], |r| r.get(0))
                        .and_then(|it| it.collect::<rusqlite::Result<Vec<String>>>())
                })
                .unwrap_or_default();
            Error::Input(format!(
                "no scorer '{scorer}' on '{collection}' (scorers: {}; `pragma transcripts score`)",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            ))
        })
}

/// (transcript id, run key, latents strongest first).
type UnitLatents = (i64, String, Vec<(u32, f32)>);

/// Each transcript's latents of `scorer_id`, max-pooled over its assistant messages (the
/// template's and the prompts' own latents left out), strongest first; with run keys.
fn assistant_latents(db: &Db, collection: &str, scorer_id: i64) -> Result<Vec<UnitLatents>> {
    let cid = db.collection_id_pub(collection)?;
    let mut st = db.conn().prepare(
        "SELECT t.id, r.key, s.latents FROM transcripts t JOIN runs r ON r.id = t.run_id \
         JOIN messages m ON m.transcript_id = t.id \
         LEFT JOIN message_scores s ON s.message_id = m.id AND s.scorer_id = ?2 \
         WHERE r.collection_id = ?1 AND m.role = 'assistant' ORDER BY t.id, m.idx",
    )?;
    let rows = st
        .query_map(params![cid, scorer_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out: Vec<UnitLatents> = Vec::new();
    for (tid, key, blob) in rows {
        if out.last().map(|x| x.0) != Some(tid) {
            out.push((tid, key, Vec::new()));
        }
        if let (Some(b), Some(last)) = (blob, out.last_mut()) {
            for row in crate::score::read_sparse_blob(&b) {
                last.2.extend(row);
            }
        }
    }
    for u in &mut out {
        u.2 = crate::score::max_pool(&[std::mem::take(&mut u.2)]);
    }
    Ok(out)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// The `top` transcripts (or messages, with `messages`) furthest from the collection on
/// `scorer`: a probe or vector (by its pooled value), or an SAE (by latent rarity).
pub fn outliers(
    db: &Db,
    collection: &str,
    scorer: &str,
    pool: Pool,
    messages: bool,
    top: usize,
) -> Result<Vec<Outlier>> {
    let (sid, kind) = scorer_id(db, collection, scorer)?;
    let conn = db.conn();
    if kind == "sae" {
        let rows = assistant_latents(db, collection, sid)?;
        let n = rows.len().max(1) as f64;
        let mut df: HashMap<u32, usize> = HashMap::new();
        for (_, _, l) in &rows {
            for (j, _) in l {
                *df.entry(*j).or_default() += 1;
            }
        }
        let mut out: Vec<Outlier> = rows
            .iter()
            .map(|(tid, run, l)| {
                // Its 5 rarest latents (of those that fire in its assistant messages).
                let mut bits: Vec<(u32, f64)> = l
                    .iter()
                    .map(|(j, _)| (*j, -(df[j] as f64 / n).log2()))
                    .collect();
                bits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                bits.truncate(5);
                let mean = bits.iter().map(|b| b.1).sum::<f64>() / bits.len().max(1) as f64;
                let reason = format!(
                    "its rarest latents (assistant messages): {}",
                    bits.iter()
                        .take(3)
                        .map(|(j, b)| format!(
                            "{j} (in {:.1}% of transcripts)",
                            100.0 * 2f64.powf(-b)
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                Outlier {
                    transcript_id: *tid,
                    run: run.clone(),
                    message: None,
                    value: mean,
                    z: mean,
                    reason,
                }
            })
            .collect();
        out.sort_by(|a, b| b.z.total_cmp(&a.z));
        out.truncate(top);
        return Ok(out);
    }
    let col = if pool == Pool::Mean { "mean" } else { "max" };
    let rows: Vec<(i64, String, Option<i64>, f64)> = if messages {
        let mut st = conn.prepare(&format!(
            "SELECT m.transcript_id, r.key, m.idx, s.{col} FROM message_scores s \
             JOIN messages m ON m.id = s.message_id JOIN transcripts t ON t.id = m.transcript_id \
             JOIN runs r ON r.id = t.run_id WHERE s.scorer_id = ?1 AND s.{col} IS NOT NULL"
        ))?;
        let v = st
            .query_map(params![sid], |r| {
                Ok((r.get(0)?, r.get(1)?, Some(r.get(2)?), r.get(3)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        v
    } else {
        // A transcript's value pools its assistant messages' (the system prompt and the
        // task are often the same in every transcript and would swamp the max).
        let agg = if pool == Pool::Mean { "avg" } else { "max" };
        let mut st = conn.prepare(&format!(
            "SELECT m.transcript_id, r.key, {agg}(s.{col}) FROM message_scores s \
             JOIN messages m ON m.id = s.message_id JOIN transcripts t ON t.id = m.transcript_id \
             JOIN runs r ON r.id = t.run_id WHERE s.scorer_id = ?1 AND s.{col} IS NOT NULL \
             AND m.role = 'assistant' GROUP BY m.transcript_id"
        ))?;
        let v = st
            .query_map(params![sid], |r| {
                Ok((r.get(0)?, r.get(1)?, None, r.get(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        v
    };
    if rows.is_empty() {
        return Err(Error::Input(format!(
            "no {} scored by {scorer}",
            if messages {
                "messages"
            } else {
                "assistant messages"
            }
        )));
    }
    let mut xs: Vec<f64> = rows.iter().map(|r| r.3).collect();
    let med = median(&mut xs);
    let mut dev: Vec<f64> = rows.iter().map(|r| (r.3 - med).abs()).collect();
    let mut mad = 1.4826 * median(&mut dev);
    let mut spread = "MAD-based SD";
    if mad <= 1e-12 {
        // Over half the values are the median: the MAD is 0. The mean absolute deviation
        // (x 1.2533, an SD under normality) still measures the spread.
        mad = 1.2533 * dev.iter().sum::<f64>() / dev.len().max(1) as f64;
        spread = "SD from the mean absolute deviation; over half the values equal the median";
    }
    if mad <= 1e-12 {
        return Err(Error::Input(format!(
            "every value of {scorer} ({col}) is {med:.4}: no spread to find outliers by"
        )));
    }
    let mut out: Vec<Outlier> = rows
        .into_iter()
        .map(|(tid, run, m, x)| {
            let z = (x - med) / mad;
            Outlier {
                transcript_id: tid,
                run,
                message: m,
                value: x,
                z,
                reason: format!(
                    "{scorer} {col} {x:.3}: {:.1} robust SDs {} the collection's median {med:.3} ({spread} {mad:.3})",
                    z.abs(),
                    if z >= 0.0 { "above" } else { "below" }
                ),
            }
        })
        .collect();
    out.sort_by(|a, b| b.z.abs().total_cmp(&a.z.abs()));
    out.truncate(top);
    Ok(out)
}

/// One cluster.
#[derive(Clone, Debug, Serialize)]
pub struct Cluster {
    pub size: usize,
    /// Latents (or words) most over-represented: (name, share in the cluster, lift).
    pub top: Vec<(String, f64, f64)>,
    /// Words most over-represented, when the features are latents.
    pub words: Vec<(String, f64, f64)>,
    /// A few member runs (closest to the centre first).
    pub examples: Vec<(i64, String)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Clustering {
    pub collection: String,
    /// `sae:NAME latents` or `words`.
    pub features: String,
    pub k: usize,
    pub clusters: Vec<Cluster>,
}

/// Cluster a collection's transcripts into `k` groups (see the module's description).
pub fn clusters(
    db: &Db,
    collection: &str,
    sae: Option<&str>,
    k: usize,
    seed: u64,
) -> Result<Clustering> {
    if k < 2 {
        return Err(Error::Input(format!(
            "k = {k}: expected at least 2 clusters"
        )));
    }
    let cid = db.collection_id_pub(collection)?;
    let conn = db.conn();
    // Units: transcripts with their word sets and latent sets.
    let mut st = conn.prepare(
        "SELECT t.id, r.key, (SELECT group_concat(m.content, ' ') FROM messages m WHERE m.transcript_id = t.id \
           AND m.role = 'assistant') FROM transcripts t JOIN runs r ON r.id = t.run_id \
         WHERE r.collection_id = ?1 ORDER BY t.id",
    )?;
    let units: Vec<(i64, String, String)> = st
        .query_map(params![cid], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if units.len() < k {
        return Err(Error::Input(format!(
            "'{collection}' has {} transcripts, fewer than k = {k}",
            units.len()
        )));
    }
    let words: Vec<Vec<String>> = units
        .iter()
        .map(|u| {
            let mut w: Vec<String> = pragma_eval::planted::grams(&u.2)
                .into_iter()
                .filter(|g| !g.contains(' ') && g.len() > 2)
                .collect();
            w.sort();
            w
        })
        .collect();
    let (feats, label): (Vec<Vec<String>>, String) = match sae {
        Some(name) => {
            let (sid, kind) = scorer_id(db, collection, name)?;
            if kind != "sae" {
                return Err(Error::Input(format!(
                    "'{name}' is a {kind} scorer: clusters need an SAE scorer (or none, for words)"
                )));
            }
            let lat = assistant_latents(db, collection, sid)?;
            let by_t: HashMap<i64, &Vec<(u32, f32)>> = lat.iter().map(|x| (x.0, &x.2)).collect();
            let f = units
                .iter()
                .map(|u| {
                    by_t.get(&u.0)
                        .map(|l| {
                            l.iter()
                                .take(32)
                                .map(|(j, _)| format!("latent {j}"))
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect();
            (f, format!("{name} latents"))
        }
        None => (words.clone(), "words".into()),
    };
    let n = units.len();
    let mut df: HashMap<&str, usize> = HashMap::new();
    for f in &feats {
        for x in f {
            *df.entry(x.as_str()).or_default() += 1;
        }
    }
    let mut vocab: Vec<&str> = df
        .iter()
        .filter(|(_, c)| **c >= 2)
        .map(|(w, _)| *w)
        .collect();
    vocab.sort_unstable();
    let index: HashMap<&str, usize> = vocab.iter().enumerate().map(|(i, w)| (*w, i)).collect();
    let idf: Vec<f64> = vocab
        .iter()
        .map(|w| ((n as f64) / df[w] as f64).ln())
        .collect();
    // Sparse unit vectors.
    let vecs: Vec<Vec<(usize, f64)>> = feats
        .iter()
        .map(|f| {
            let mut v: Vec<(usize, f64)> = f
                .iter()
                .filter_map(|x| index.get(x.as_str()).map(|&i| (i, idf[i])))
                .collect();
            v.sort_by_key(|x| x.0);
            v.dedup_by_key(|x| x.0);
            let norm = v.iter().map(|x| x.1 * x.1).sum::<f64>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| x.1 /= norm);
            v
        })
        .collect();
    let d = vocab.len().max(1);
    let dot = |v: &[(usize, f64)], c: &[f64]| v.iter().map(|(i, x)| x * c[*i]).sum::<f64>();
    // k-means++ seeding on cosine distance.
    let mut rng = XorShift::mixed(seed, 0xC1A5);
    let dense = |v: &[(usize, f64)]| {
        let mut c = vec![0.0; d];
        for (i, x) in v {
            c[*i] = *x;
        }
        c
    };
    let mut centres: Vec<Vec<f64>> = vec![dense(&vecs[rng.below(n)])];
    while centres.len() < k {
        let dist: Vec<f64> = vecs
            .iter()
            .map(|v| {
                centres
                    .iter()
                    .map(|c| 1.0 - dot(v, c))
                    .fold(f64::INFINITY, f64::min)
                    .max(0.0)
                    .powi(2)
            })
            .collect();
        let total: f64 = dist.iter().sum();
        let mut r = rng.next_f64() * total;
        let mut pick = n - 1;
        for (i, x) in dist.iter().enumerate() {
            if r < *x {
                pick = i;
                break;
            }
            r -= x;
        }
        centres.push(dense(&vecs[pick]));
    }
    let mut assign = vec![0usize; n];
    for _ in 0..50 {
        let mut changed = false;
        for (u, v) in vecs.iter().enumerate() {
            let best = (0..k)
                .max_by(|&a, &b| dot(v, &centres[a]).total_cmp(&dot(v, &centres[b])))
                .unwrap_or(0);
            if assign[u] != best {
                assign[u] = best;
                changed = true;
            }
        }
        for (c, centre) in centres.iter_mut().enumerate() {
            let mut s = vec![0.0; d];
            for (u, v) in vecs.iter().enumerate() {
                if assign[u] == c {
                    for (i, x) in v {
                        s[*i] += x;
                    }
                }
            }
            let norm = s.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 0.0 {
                s.iter_mut().for_each(|x| *x /= norm);
                *centre = s;
            }
        }
        if !changed {
            break;
        }
    }
    let describe = |members: &[usize], f: &[Vec<String>], min: usize| -> Vec<(String, f64, f64)> {
        let mut cnt: HashMap<&str, usize> = HashMap::new();
        for &u in members {
            for x in &f[u] {
                *cnt.entry(x.as_str()).or_default() += 1;
            }
        }
        let mut all: HashMap<&str, usize> = HashMap::new();
        for g in f {
            for x in g {
                *all.entry(x.as_str()).or_default() += 1;
            }
        }
        let mut v: Vec<(String, f64, f64)> = cnt
            .into_iter()
            .filter(|(w, c)| {
                *c >= min && (*c as f64 / members.len() as f64) > 1.2 * all[w] as f64 / n as f64
            })
            .map(|(w, c)| {
                let share = c as f64 / members.len() as f64;
                (w.to_string(), share, share / (all[w] as f64 / n as f64))
            })
            .collect();
        v.sort_by(|a, b| (b.2 * b.1).total_cmp(&(a.2 * a.1)).then(a.0.cmp(&b.0)));
        v.truncate(8);
        v
    };
    let mut clusters: Vec<Cluster> = (0..k)
        .map(|c| {
            let mut members: Vec<usize> = (0..n).filter(|&u| assign[u] == c).collect();
            members.sort_by(|&a, &b| {
                dot(&vecs[b], &centres[c]).total_cmp(&dot(&vecs[a], &centres[c]))
            });
            let min = (members.len() / 10).max(2);
            Cluster {
                size: members.len(),
                top: describe(&members, &feats, min),
                words: if sae.is_some() {
                    describe(&members, &words, min)
                } else {
                    Vec::new()
                },
                examples: members
                    .iter()
                    .take(3)
                    .map(|&u| (units[u].0, units[u].1.clone()))
                    .collect(),
            }
        })
        .filter(|c| c.size > 0)
        .collect();
    clusters.sort_by_key(|c| std::cmp::Reverse(c.size));
    Ok(Clustering {
        collection: collection.to_string(),
        features: label,
        k,
        clusters,
    })
}
