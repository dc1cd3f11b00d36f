//! `diff A B`: what distinguishes two collections, as ranked hypotheses with p-values,
//! example contexts from both sides, and each hypothesis checked as a detector on
//! held-out transcripts.
//!
//! Units are transcripts; each is read as the text of its messages of one role (default
//! `assistant`) and, when an SAE scorer has scored both collections, the set of latents that
//! fire in those messages (max-pooled). Two families of hypotheses, side by side:
//!
//! - **SAE latent frequency**: for each latent, the share of units where it fires in B vs A.
//! - **n-gram log-odds**: lower-cased word unigrams and bigrams, presence per unit; the
//!   effect is the log-odds ratio with Jeffreys smoothing (+0.5).
//!
//! Both are tested the same way: unpaired, a one-sided Fisher exact test (the exact
//! permutation test of the frequency difference); paired (both collections carry sample id
//! and epoch, matched), the exact sign-flip test over discordant pairs (McNemar's exact
//! test). Benjamini-Hochberg over every hypothesis of a family and direction. Hypotheses are
//! found on a seeded half of the units (of the pairs, when paired) and each is checked on
//! the other half: its detector (presence, or the latent's max activation) separating B's
//! units from A's, AUROC (for "more in A", A is the positive class). The same method as
//! the benchmark's planted-difference task (`pragma_eval::planted`).

use std::collections::{HashMap, HashSet};

use pragma_eval::stats::{bh_adjust, fisher_greater, ln_factorials};
use pragma_methods::linear::auroc;
use pragma_methods::stats::XorShift;
use rusqlite::params;
use serde::Serialize;

use crate::db::Db;
use crate::error::{Error, Result};
use crate::model::Role;

/// What to compare.
#[derive(Clone, Debug)]
pub struct DiffConfig {
    pub a: String,
    pub b: String,
    /// Messages of this role make a unit's text and latents (`None`: all messages).
    pub role: Option<Role>,
    /// The SAE scorer (as `transcripts score` named it, e.g. `sae:sae-l15`) whose latents
    /// to compare; `None`: the only SAE scorer both collections have, if any.
    pub sae: Option<String>,
    /// Hypotheses reported per family and direction.
    pub top: usize,
    /// Share of units (or pairs) that hypotheses are found on; the rest checks them.
    pub discovery: f64,
    pub seed: u64,
    /// n-grams seen in fewer units than this (both sets) are not tested.
    pub min_count: usize,
}

impl DiffConfig {
    pub fn new(a: &str, b: &str) -> Self {
        DiffConfig {
            a: a.into(),
            b: b.into(),
            role: Some(Role::Assistant),
            sae: None,
            top: 10,
            discovery: 0.5,
            seed: 0,
            min_count: 3,
        }
    }
}

/// One hypothesis.
#[derive(Clone, Debug, Serialize)]
pub struct Hypothesis {
    /// `latent 1234` or `"word"` / `"two words"`.
    pub name: String,
    /// Share of discovery units with it, in A and in B.
    pub rate_a: f64,
    pub rate_b: f64,
    /// n-grams: log-odds ratio (B over A, Jeffreys +0.5); latents: the same, for comparison.
    pub log_odds: f64,
    pub p: f64,
    /// Benjamini-Hochberg adjusted p (over the family and direction).
    pub q: f64,
    /// AUROC of its detector on the held-out units (the side it is more frequent in is the
    /// positive class); `None` when the held-out half lacks one side.
    pub heldout_auroc: Option<f64>,
    /// Up to two contexts from the side it is more frequent in, one from the other.
    pub examples: Vec<Example>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Example {
    /// `a` or `b`.
    pub side: String,
    pub run: String,
    pub text: String,
}

/// Hypotheses of one family, both directions.
#[derive(Clone, Debug, Serialize)]
pub struct Family {
    /// `sae latents (SCORER)` or `n-grams`.
    pub name: String,
    pub tested: usize,
    /// More frequent in B, best first.
    pub more_in_b: Vec<Hypothesis>,
    /// More frequent in A, best first.
    pub more_in_a: Vec<Hypothesis>,
    /// Significant at FDR 0.05, per direction (B, A).
    pub discoveries: (usize, usize),
}

#[derive(Clone, Debug, Serialize)]
pub struct DiffResult {
    pub a: String,
    pub b: String,
    /// Units (transcripts) per side, and whether they were paired by sample id and epoch.
    pub units: (usize, usize),
    pub paired: Option<usize>,
    pub discovery_units: (usize, usize),
    pub families: Vec<Family>,
    /// Why the SAE family is missing, when it is.
    pub note: Option<String>,
}

/// One unit: a transcript's text, its latents (max-pooled) and where its tokens are.
pub(crate) struct Unit {
    pub(crate) run: String,
    pub(crate) transcript_id: i64,
    pub(crate) key: Option<(String, i64)>,
    pub(crate) text: String,
    pub(crate) grams: HashSet<String>,
    pub(crate) latents: HashMap<u32, f32>,
}

pub(crate) fn units(
    db: &Db,
    collection: &str,
    role: Option<Role>,
    sae: Option<i64>,
) -> Result<Vec<Unit>> {
    let cid = db.collection_id_pub(collection)?;
    let conn = db.conn();
    let mut st = conn.prepare(
        "SELECT t.id, r.key, r.sample_id, r.epoch FROM transcripts t JOIN runs r ON t.run_id = r.id \
         WHERE r.collection_id = ?1 ORDER BY t.id",
    )?;
    let heads = st
        .query_map(params![cid], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut ms = conn.prepare(
        "SELECT m.id, m.role, m.content FROM messages m WHERE m.transcript_id = ?1 ORDER BY m.idx",
    )?;
    let mut lat = conn
        .prepare("SELECT latents FROM message_scores WHERE message_id = ?1 AND scorer_id = ?2")?;
    let mut out = Vec::with_capacity(heads.len());
    for (tid, run, sid, epoch) in heads {
        let msgs = ms
            .query_map(params![tid], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut text = String::new();
        let mut latents: HashMap<u32, f32> = HashMap::new();
        for (mid, r, c) in msgs {
            if role.is_some_and(|want| want.name() != r) {
                continue;
            }
            if !text.is_empty() {
                text.push('\n');
            }
            text += &c;
            if let Some(s) = sae {
                let blob: Option<Vec<u8>> =
                    lat.query_row(params![mid, s], |r| r.get(0)).ok().flatten();
                if let Some(b) = blob {
                    for row in crate::score::read_sparse_blob(&b) {
                        for (j, v) in row {
                            let e = latents.entry(j).or_insert(0.0);
                            *e = e.max(v);
                        }
                    }
                }
            }
        }
        out.push(Unit {
            run,
            transcript_id: tid,
            key: sid.map(|s| (s, epoch.unwrap_or(0))),
            grams: pragma_eval::planted::grams(&text),
            text,
            latents,
        });
    }
    Ok(out)
}

/// The SAE scorer both collections were scored with: (its id in A, in B, its name), or a
/// note saying why there is none.
pub(crate) type SaeChoice = (Option<(i64, i64, String)>, Option<String>);

/// The SAE scorer both collections were scored with.
pub(crate) fn sae_scorer(db: &Db, a: &str, b: &str, sae: Option<&str>) -> Result<SaeChoice> {
    let ids = |c: &str| -> Result<Vec<(i64, String)>> {
        let cid = db.collection_id_pub(c)?;
        let mut st = db.conn().prepare(
            "SELECT id, name FROM scorers WHERE collection_id = ?1 AND kind = 'sae' ORDER BY id",
        )?;
        let v = st
            .query_map(params![cid], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    };
    let (sa, sb) = (ids(a)?, ids(b)?);
    let common: Vec<&String> = sa
        .iter()
        .map(|x| &x.1)
        .filter(|n| sb.iter().any(|y| &y.1 == *n))
        .collect();
    let name = match sae {
        Some(n) => {
            if !common.iter().any(|c| c.as_str() == n) {
                return Err(Error::Input(format!(
                    "--sae {n}: not an SAE scorer of both '{}' and '{}' (common SAE scorers: {}); \
                     run `pragma transcripts score COLLECTION --sae DIR` on both",
                    a,
                    b,
                    if common.is_empty() { "none".to_string() } else { common.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ") }
                )));
            }
            n.to_string()
        }
        None => match common.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Ok((
                    None,
                    Some("no SAE scorer common to both collections: n-grams only (score both with --sae)".into()),
                ))
            }
            many => {
                return Err(Error::Input(format!(
                    "both collections have several SAE scorers ({}): choose one with --sae",
                    many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )))
            }
        },
    };
    let find = |v: &[(i64, String)]| v.iter().find(|x| x.1 == name).map(|x| x.0).unwrap_or(0);
    Ok((Some((find(&sa), find(&sb), name)), None))
}

/// The discovery / held-out split of two unit lists, as `diff` makes it and `check
/// --heldout` repeats it: indices into A's and B's units.
pub(crate) struct Split {
    /// Whether units were paired by (sample id, epoch), and how many pairs there are.
    pub paired: bool,
    pub pairs: usize,
    pub da: Vec<usize>,
    pub db: Vec<usize>,
    pub ha: Vec<usize>,
    pub hb: Vec<usize>,
    /// Discovery pairs (A index, B index) when paired.
    pub dpairs: Vec<(usize, usize)>,
}

/// Split units into a seeded discovery share and the held-out rest. Units pair by
/// (sample id, epoch) when every unit of both sides has one, at least 4 match and they
/// cover half the smaller side; pairs are then split together. The split does not depend
/// on which side is A: pairs are shuffled in key order, and unpaired sides each by a
/// generator seeded with the seed and the collection's name.
pub(crate) fn split(
    (ua, name_a): (&[Unit], &str),
    (ub, name_b): (&[Unit], &str),
    discovery: f64,
    seed: u64,
) -> Split {
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    if ua.iter().chain(ub).all(|u| u.key.is_some()) {
        let index: HashMap<&(String, i64), usize> = ub
            .iter()
            .enumerate()
            .filter_map(|(i, u)| u.key.as_ref().map(|k| (k, i)))
            .collect();
        for (i, u) in ua.iter().enumerate() {
            if let Some(&j) = u.key.as_ref().and_then(|k| index.get(k)) {
                pairs.push((i, j));
            }
        }
    }
    let paired = pairs.len() >= 4 && 2 * pairs.len() >= ua.len().min(ub.len());
    if paired {
        let mut rng = XorShift::mixed(seed, 0xD1FF);
        let mut p = pairs.clone();
        p.sort_by(|x, y| ua[x.0].key.cmp(&ua[y.0].key));
        rng.shuffle(&mut p);
        let k = ((p.len() as f64 * discovery).round() as usize).clamp(2, p.len() - 2);
        let (d, h) = p.split_at(k);
        Split {
            paired,
            pairs: pairs.len(),
            da: d.iter().map(|x| x.0).collect(),
            db: d.iter().map(|x| x.1).collect(),
            ha: h.iter().map(|x| x.0).collect(),
            hb: h.iter().map(|x| x.1).collect(),
            dpairs: d.to_vec(),
        }
    } else {
        let halves = |n: usize, name: &str| {
            let mut rng = XorShift::mixed(seed, 0xD1FF ^ fnv1a(name));
            let mut o: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut o);
            let k = ((n as f64 * discovery).round() as usize).clamp(2, n - 2);
            let h = o.split_off(k);
            (o, h)
        };
        let (da, ha) = halves(ua.len(), name_a);
        let (db, hb) = halves(ub.len(), name_b);
        Split {
            paired,
            pairs: pairs.len(),
            da,
            db,
            ha,
            hb,
            dpairs: Vec::new(),
        }
    }
}

/// FNV-1a hash of a name (stable across runs and platforms).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// `P(X >= k)` for `X ~ Binomial(n, 1/2)`: the exact one-sided sign-flip test.
fn sign_test(k: usize, n: usize, lf: &[f64]) -> f64 {
    let mut p = 0.0;
    for x in k..=n {
        p += (lf[n] - lf[x] - lf[n - x] - n as f64 * std::f64::consts::LN_2).exp();
    }
    p.min(1.0)
}

/// Compare two collections.
///
/// Errors: either collection missing; `--sae` not scored on both; fewer than 4 units on a
/// side.
pub fn diff(db: &Db, cfg: &DiffConfig) -> Result<DiffResult> {
    if !(cfg.discovery > 0.0 && cfg.discovery < 1.0) {
        return Err(Error::Input(format!(
            "--discovery {}: expected a share between 0 and 1 (the rest checks the hypotheses)",
            cfg.discovery
        )));
    }
    let (sae, note) = sae_scorer(db, &cfg.a, &cfg.b, cfg.sae.as_deref())?;
    let ua = units(db, &cfg.a, cfg.role, sae.as_ref().map(|s| s.0))?;
    let ub = units(db, &cfg.b, cfg.role, sae.as_ref().map(|s| s.1))?;
    for (name, u) in [(&cfg.a, &ua), (&cfg.b, &ub)] {
        if u.len() < 4 {
            return Err(Error::Input(format!(
                "'{name}' has {} transcripts; a diff needs at least 4 per side",
                u.len()
            )));
        }
    }
    let Split {
        paired,
        pairs,
        da,
        db: db_,
        ha,
        hb,
        dpairs,
    } = split((&ua, &cfg.a), (&ub, &cfg.b), cfg.discovery, cfg.seed);
    let lf = ln_factorials(ua.len() + ub.len() + 2);
    let mut families = Vec::new();

    // A family over features `has(unit) -> keys` and detectors `score(unit, key)`.
    let family = |name: String,
                  keys_of: &dyn Fn(&Unit) -> Vec<String>,
                  score: &dyn Fn(&Unit, &str) -> f64,
                  min_count: usize,
                  example: &dyn Fn(&Unit, &str) -> String|
     -> Family {
        let mut ca: HashMap<String, usize> = HashMap::new();
        let mut cb: HashMap<String, usize> = HashMap::new();
        for &i in &da {
            for k in keys_of(&ua[i]) {
                *ca.entry(k).or_default() += 1;
            }
        }
        for &i in &db_ {
            for k in keys_of(&ub[i]) {
                *cb.entry(k).or_default() += 1;
            }
        }
        let mut keys: Vec<String> = ca.keys().chain(cb.keys()).cloned().collect();
        keys.sort_unstable();
        keys.dedup();
        keys.retain(|k| {
            ca.get(k).copied().unwrap_or(0) + cb.get(k).copied().unwrap_or(0) >= min_count
        });
        let (na, nb) = (da.len(), db_.len());
        // Per key: (p for B > A, p for A > B, rate_a, rate_b, log-odds).
        let tested: Vec<(String, f64, f64, f64, f64, f64)> = keys
            .into_iter()
            .map(|k| {
                let (a, b) = (
                    ca.get(&k).copied().unwrap_or(0),
                    cb.get(&k).copied().unwrap_or(0),
                );
                let (pb, pa) = if paired {
                    let set_a: HashSet<usize> = dpairs
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| keys_of(&ua[p.0]).contains(&k))
                        .map(|(i, _)| i)
                        .collect();
                    let set_b: HashSet<usize> = dpairs
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| keys_of(&ub[p.1]).contains(&k))
                        .map(|(i, _)| i)
                        .collect();
                    let n10 = set_b.difference(&set_a).count();
                    let n01 = set_a.difference(&set_b).count();
                    (
                        sign_test(n10, n10 + n01, &lf),
                        sign_test(n01, n10 + n01, &lf),
                    )
                } else {
                    (
                        fisher_greater(b, nb, a, na, &lf),
                        fisher_greater(a, na, b, nb, &lf),
                    )
                };
                let lo = ((b as f64 + 0.5) / (nb as f64 - b as f64 + 0.5)).ln()
                    - ((a as f64 + 0.5) / (na as f64 - a as f64 + 0.5)).ln();
                (k, pb, pa, a as f64 / na as f64, b as f64 / nb as f64, lo)
            })
            .collect();
        let qb = bh_adjust(&tested.iter().map(|t| t.1).collect::<Vec<_>>());
        let qa = bh_adjust(&tested.iter().map(|t| t.2).collect::<Vec<_>>());
        let held = |k: &str, b_positive: bool| -> Option<f64> {
            let mut s = Vec::new();
            let mut y = Vec::new();
            for &i in &ha {
                s.push(score(&ua[i], k));
                y.push(u8::from(!b_positive));
            }
            for &i in &hb {
                s.push(score(&ub[i], k));
                y.push(u8::from(b_positive));
            }
            auroc(&s, &y)
        };
        let make = |b_side: bool| -> Vec<Hypothesis> {
            let mut ix: Vec<usize> = (0..tested.len())
                .filter(|&i| {
                    if b_side {
                        tested[i].4 > tested[i].3
                    } else {
                        tested[i].3 > tested[i].4
                    }
                })
                .collect();
            let p = |i: usize| if b_side { tested[i].1 } else { tested[i].2 };
            ix.sort_by(|&x, &y| {
                p(x).total_cmp(&p(y))
                    .then((tested[y].5.abs()).total_cmp(&tested[x].5.abs()))
                    .then(tested[x].0.cmp(&tested[y].0))
            });
            ix.into_iter()
                .take(cfg.top)
                .map(|i| {
                    let (k, _, _, ra, rb, lo) = &tested[i];
                    let (more, less, more_ix, less_ix, ms, ls) = if b_side {
                        (&ub, &ua, &db_, &da, "b", "a")
                    } else {
                        (&ua, &ub, &da, &db_, "a", "b")
                    };
                    let mut examples = Vec::new();
                    for (units, ix, side, want) in [(more, more_ix, ms, 2), (less, less_ix, ls, 1)]
                    {
                        for &u in ix
                            .iter()
                            .filter(|&&u| keys_of(&units[u]).contains(k))
                            .take(want)
                        {
                            examples.push(Example {
                                side: side.into(),
                                run: units[u].run.clone(),
                                text: example(&units[u], k),
                            });
                        }
                    }
                    Hypothesis {
                        name: k.clone(),
                        rate_a: *ra,
                        rate_b: *rb,
                        log_odds: *lo,
                        p: p(i),
                        q: if b_side { qb[i] } else { qa[i] },
                        heldout_auroc: held(k, b_side),
                        examples,
                    }
                })
                .collect()
        };
        Family {
            name,
            tested: tested.len(),
            discoveries: (
                qb.iter().filter(|&&q| q <= 0.05).count(),
                qa.iter().filter(|&&q| q <= 0.05).count(),
            ),
            more_in_b: make(true),
            more_in_a: make(false),
        }
    };

    if let Some((_, _, name)) = &sae {
        let keys =
            |u: &Unit| -> Vec<String> { u.latents.keys().map(|j| format!("latent {j}")).collect() };
        let score = |u: &Unit, k: &str| -> f64 {
            k.strip_prefix("latent ")
                .and_then(|j| j.parse::<u32>().ok())
                .and_then(|j| u.latents.get(&j))
                .map_or(0.0, |v| *v as f64)
        };
        let ex = |u: &Unit, k: &str| -> String {
            latent_context(
                db,
                u.transcript_id,
                sae.as_ref().map_or(0, |s| {
                    if ua.iter().any(|x| x.transcript_id == u.transcript_id) {
                        s.0
                    } else {
                        s.1
                    }
                }),
                k,
                cfg.role,
            )
            .unwrap_or_else(|| clip(&u.text, 0, 160))
        };
        families.push(family(
            format!("sae latents ({name})"),
            &keys,
            &score,
            1,
            &ex,
        ));
    }
    let keys = |u: &Unit| -> Vec<String> { u.grams.iter().cloned().collect() };
    let score = |u: &Unit, k: &str| -> f64 { f64::from(u8::from(u.grams.contains(k))) };
    let ex = |u: &Unit, k: &str| -> String {
        let lower = u.text.to_lowercase();
        let at = lower.find(k).unwrap_or(0);
        clip(&u.text, at, 160)
    };
    families.push(family("n-grams".into(), &keys, &score, cfg.min_count, &ex));
    Ok(DiffResult {
        a: cfg.a.clone(),
        b: cfg.b.clone(),
        units: (ua.len(), ub.len()),
        paired: paired.then_some(pairs),
        discovery_units: (da.len(), db_.len()),
        families,
        note,
    })
}

/// About `width` characters of `text` around byte offset `at`, on char boundaries.
fn clip(text: &str, at: usize, width: usize) -> String {
    let start = at.saturating_sub(width / 3);
    let mut s = start.min(text.len());
    while !text.is_char_boundary(s) {
        s -= 1;
    }
    let mut e = (s + width).min(text.len());
    while !text.is_char_boundary(e) {
        e += 1;
    }
    let mut out = text[s..e].replace('\n', " ");
    if s > 0 {
        out = format!("...{out}");
    }
    if e < text.len() {
        out += "...";
    }
    out
}

/// The tokens around the latent's strongest activation in a transcript (needs the
/// transcript's token ids, stored by `score`), as `ids:BEFORE|TOKEN|AFTER`; front ends
/// that hold the model's tokenizer render it with [`decode_context`].
fn latent_context(
    db: &Db,
    transcript_id: i64,
    scorer_id: i64,
    key: &str,
    role: Option<Role>,
) -> Option<String> {
    let j: u32 = key.strip_prefix("latent ")?.parse().ok()?;
    let (ids, sparse, spans): (Vec<u8>, Vec<u8>, String) = db
        .conn()
        .query_row(
            "SELECT t.ids, s.sparse, t.spans FROM transcript_tokens t JOIN token_scores s \
             ON s.transcript_id = t.transcript_id WHERE t.transcript_id = ?1 AND s.scorer_id = ?2",
            params![transcript_id, scorer_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .ok()?;
    // Only tokens of the messages the diff compared.
    let spans: Vec<crate::spans::MessageSpan> = serde_json::from_str(&spans).ok()?;
    let roles: Vec<String> = {
        let mut st = db
            .conn()
            .prepare("SELECT role FROM messages WHERE transcript_id = ?1 ORDER BY idx")
            .ok()?;
        let v = st
            .query_map(params![transcript_id], |r| r.get::<_, String>(0))
            .ok()?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ok()?;
        v
    };
    let allowed = |t: usize| -> bool {
        spans.iter().any(|sp| {
            t >= sp.start
                && t < sp.end
                && role.is_none_or(|want| roles.get(sp.message).is_some_and(|r| r == want.name()))
        })
    };
    let ids: Vec<u32> = ids
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let rows = crate::score::read_sparse_blob(&sparse);
    let (best, _) = rows
        .iter()
        .enumerate()
        .filter(|(t, _)| allowed(*t))
        .filter_map(|(t, r)| r.iter().find(|x| x.0 == j).map(|x| (t, x.1)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    let lo = best.saturating_sub(12);
    let hi = (best + 4).min(ids.len());
    Some(format!(
        "ids:{}|{}|{}",
        join(&ids[lo..best]),
        ids[best],
        join(&ids[best + 1..hi])
    ))
}

fn join(v: &[u32]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Render a latent context made by `diff` (`ids:BEFORE|TOKEN|AFTER`) with a tokenizer:
/// the text with the token in `[[ ]]`. Other strings are returned as they are.
pub fn decode_context(tok: &pragma_model::Tokenizer, s: &str) -> String {
    let Some(rest) = s.strip_prefix("ids:") else {
        return s.to_string();
    };
    let parts: Vec<Vec<u32>> = rest
        .split('|')
        .map(|p| p.split(',').filter_map(|x| x.parse().ok()).collect())
        .collect();
    if parts.len() != 3 {
        return s.to_string();
    }
    let d = |v: &[u32]| tok.decode(v).unwrap_or_default().replace('\n', " ");
    format!("{}[[{}]]{}", d(&parts[0]), d(&parts[1]), d(&parts[2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_test_is_the_binomial_tail() {
        let lf = ln_factorials(40);
        // P(X >= 8 | n = 10, 1/2) = (45 + 10 + 1) / 1024 (scipy.stats.binomtest(8, 10,
        // alternative="greater").pvalue = 0.0546875).
        assert!((sign_test(8, 10, &lf) - 56.0 / 1024.0).abs() < 1e-12);
        assert!((sign_test(0, 10, &lf) - 1.0).abs() < 1e-12);
        assert!((sign_test(30, 30, &lf) - 0.5f64.powi(30)).abs() < 1e-20);
    }

    #[test]
    fn clip_keeps_char_boundaries() {
        let t = "ééééééééééééééééééééé zebra ééééééé";
        let c = clip(t, t.find("zebra").expect("z"), 10);
        assert!(c.contains("ze"), "{c}");
    }
}
