//! Concept detection (AxBench's detection protocol, Wu et al. 2025, "AxBench: Steering
//! LLMs? Even Simple Baselines Outperform Sparse Autoencoders"): score held-out texts for
//! a concept and report test AUROC.
//!
//! Every activation technique is a per-token score `s_t` over the text's tokens at one
//! hook (the BOS attention sink left out), pooled over the text by its mean or by its max,
//! as AxBench does. Linear techniques on the residual stream score `s_t = w . h_t + b`;
//! SAE techniques score `s_t = b + sum_j w_j f_j(h_t)` over a few latents `f_j`. What a
//! technique chooses (its weights, C, a latent, a sign) is fitted on the mean-pooled
//! train split, with hyper-parameters chosen on validation; [`fit`] never receives test
//! labels, so nothing can be chosen on test.

use std::collections::HashMap;

use candle_core::Tensor;
use pragma_methods::linear::{auroc, fit_diff_means, Matrix};
use pragma_methods::probe::{bag_of_words_scores, fit_logistic_cv, prompting_scores, Dataset};
use pragma_methods::sae::Sae;
use pragma_methods::stats::XorShift;
use pragma_methods::{Error, Result};
use pragma_model::Model;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::suite::Technique;

/// C grid of every logistic model (as `pragma probe train`).
pub const C_GRID: &[f64] = &[1e-3, 1e-2, 1e-1, 1.0, 10.0];

/// How per-token scores become one score per text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Mean,
    Max,
    /// One score per text already (prompting, bag-of-words).
    Text,
}

/// One example's SAE latents, token by token: the non-zero `(latent, value)` pairs.
pub type TokenLatents = Vec<Vec<(u32, f32)>>;

/// What the techniques read for one task: per-token activations of every example, their
/// mean-pooled matrix, and (with an SAE) the per-token latents and their mean pool.
pub struct Inputs {
    pub ds: Dataset,
    /// `[t_i * d]` per example, row-major.
    pub tokens: Vec<Vec<f32>>,
    pub d: usize,
    /// Mean over each example's tokens `[n, d]`.
    pub mean: Matrix,
    pub latents: Option<Latents>,
}

/// SAE latents of a task's examples.
pub struct Latents {
    pub d_sae: usize,
    pub tokens: Vec<TokenLatents>,
    /// Mean over tokens, dense `[n, d_sae]` (f32, row-major).
    pub mean: Vec<f32>,
}

impl Inputs {
    /// From per-example token activations `[t_i, d]` (as
    /// `pragma_methods::probe::token_features` returns them).
    pub fn new(ds: Dataset, acts: &[Tensor]) -> Result<Inputs> {
        let d = acts.first().map(|t| t.dim(1)).transpose()?.unwrap_or(0);
        let mut tokens = Vec::with_capacity(acts.len());
        let mut mean = Vec::with_capacity(acts.len() * d);
        for t in acts {
            let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
            let n = (v.len() / d.max(1)).max(1);
            let mut m = vec![0f64; d];
            for row in v.chunks(d) {
                for (a, b) in m.iter_mut().zip(row) {
                    *a += *b as f64;
                }
            }
            mean.extend(m.iter().map(|x| x / n as f64));
            tokens.push(v);
        }
        let n = tokens.len();
        Ok(Inputs {
            ds,
            tokens,
            d,
            mean: Matrix::new(mean, n, d),
            latents: None,
        })
    }

    /// Encode every token with `sae` (rows in chunks of 2048) and keep the non-zero latents.
    pub fn encode(&mut self, sae: &Sae, progress: &mut dyn FnMut(usize)) -> Result<()> {
        if sae.cfg.d_in != self.d {
            return Err(Error::Input(format!(
                "the SAE reads d_in = {}, the hook has width {}",
                sae.cfg.d_in, self.d
            )));
        }
        let d_sae = sae.cfg.d_sae;
        let mut out: Vec<TokenLatents> = Vec::with_capacity(self.tokens.len());
        let mut mean = vec![0f32; self.tokens.len() * d_sae];
        let mut start = 0;
        while start < self.tokens.len() {
            let mut end = start;
            let mut rows = 0;
            while end < self.tokens.len()
                && (rows == 0 || rows + self.tokens[end].len() / self.d <= 2048)
            {
                rows += self.tokens[end].len() / self.d;
                end += 1;
            }
            let flat: Vec<f32> = self.tokens[start..end].concat();
            let x = Tensor::from_vec(flat, (rows, self.d), &candle_core::Device::Cpu)?;
            let f: Vec<f32> = sae.encode(&x)?.flatten_all()?.to_vec1()?;
            let mut r = 0;
            for i in start..end {
                let t = self.tokens[i].len() / self.d;
                let mut ex = Vec::with_capacity(t);
                let m = &mut mean[i * d_sae..(i + 1) * d_sae];
                for row in f[r * d_sae..(r + t) * d_sae].chunks(d_sae) {
                    let nz: Vec<(u32, f32)> = row
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| **v != 0.0)
                        .map(|(j, v)| (j as u32, *v))
                        .collect();
                    for &(j, v) in &nz {
                        m[j as usize] += v / t as f32;
                    }
                    ex.push(nz);
                }
                out.push(ex);
                r += t;
            }
            start = end;
            progress(start);
        }
        self.latents = Some(Latents {
            d_sae,
            tokens: out,
            mean,
        });
        Ok(())
    }
}

/// A fitted scorer.
#[derive(Clone, Debug)]
pub enum Scorer {
    /// `s_t = w . h_t + b` on the hook's activations.
    Resid { w: Vec<f64>, b: f64 },
    /// `s_t = b + sum_j w_j f_j(h_t)` on SAE latents.
    Latents { w: Vec<(u32, f64)>, b: f64 },
    /// One SAE latent read as a detector: `sign * pool_t f_j(h_t)` (pooled, then signed,
    /// so a latent of the negative class max-pools as `-max_t f_j`).
    Latent { j: u32, sign: f64 },
    /// One score per test text, in the order of the test indices.
    Given(Vec<f64>),
}

/// What [`fit`] returns: the scorer, its validation AUROC (mean pooling) and a line on
/// what it chose.
pub struct Fitted {
    pub scorer: Scorer,
    pub val_auroc: Option<f64>,
    pub choice: String,
}

/// The split of one seed: example indices and the labels a technique may read.
pub struct SplitView<'a> {
    pub train: &'a [usize],
    pub y_train: &'a [u8],
    pub val: &'a [usize],
    pub y_val: &'a [u8],
    /// Test indices only: their labels are not given.
    pub test: &'a [usize],
}

/// One seed's split, owned: indices and the labels of every part (the test labels are
/// for scoring only; [`SeedSplit::view`] leaves them out).
pub struct SeedSplit {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
    pub y_train: Vec<u8>,
    pub y_val: Vec<u8>,
    pub y_test: Vec<u8>,
}

impl SeedSplit {
    /// `pragma_methods::probe::splits` of `ds` for `seed` (groups and given splits kept).
    pub fn new(ds: &Dataset, fractions: (f64, f64), seed: u64) -> Result<SeedSplit> {
        use pragma_methods::probe::Split;
        let split = pragma_methods::probe::splits(ds, fractions, seed)?;
        let pick =
            |s: Split| -> Vec<usize> { (0..split.len()).filter(|&i| split[i] == s).collect() };
        let label =
            |ix: &[usize]| -> Vec<u8> { ix.iter().map(|&i| ds.examples[i].label).collect() };
        let (train, val, test) = (
            pick(Split::Train),
            pick(Split::Validation),
            pick(Split::Test),
        );
        Ok(SeedSplit {
            y_train: label(&train),
            y_val: label(&val),
            y_test: label(&test),
            train,
            val,
            test,
        })
    }

    /// What a technique may read: no test labels.
    pub fn view(&self) -> SplitView<'_> {
        SplitView {
            train: &self.train,
            y_train: &self.y_train,
            val: &self.val,
            y_val: &self.y_val,
            test: &self.test,
        }
    }
}

/// Prompting: the answer tokens ("Yes| Yes": alternatives, each one token) and the
/// scores computed so far (on demand, per example, shared across seeds).
pub struct PromptCache {
    pub answers: (String, String),
    pub scores: HashMap<usize, f64>,
}

impl PromptCache {
    pub fn new(answers: (String, String)) -> Self {
        Self {
            answers,
            scores: HashMap::new(),
        }
    }
}

/// Fit `tech` on train/validation of `inputs`. `seed` seeds the random parts (PCA's
/// pairing, the random direction). `model` is needed by bag-of-words (its tokenizer) and
/// prompting only.
pub fn fit(
    tech: Technique,
    inputs: &Inputs,
    split: &SplitView,
    seed: u64,
    model: Option<&Model>,
    prompts: &mut PromptCache,
) -> Result<Fitted> {
    let need_model =
        || model.ok_or_else(|| Error::Input(format!("technique {} needs the model", tech.name())));
    let (xtr, xva) = (
        inputs.mean.select(split.train),
        inputs.mean.select(split.val),
    );
    let resid = |w: Vec<f64>, b: f64, choice: String| {
        let v: Vec<f64> = (0..xva.n)
            .map(|i| pragma_methods::linear::dot(&w, xva.row(i)) + b)
            .collect();
        Fitted {
            val_auroc: auroc(&v, split.y_val),
            scorer: Scorer::Resid { w, b },
            choice,
        }
    };
    Ok(match tech {
        Technique::Probe => {
            let (m, st, c) = fit_logistic_cv(&xtr, split.y_train, &xva, split.y_val, C_GRID);
            let raw = m.unstandardize(&st);
            resid(raw.w, raw.b, format!("C = {c}"))
        }
        Technique::DiffMean => {
            let m = fit_diff_means(&xtr, split.y_train);
            resid(m.w, m.b, String::new())
        }
        Technique::Pca => {
            let (w, b) = pca_direction(&xtr, split.y_train, seed);
            resid(w, b, "first PC of paired differences".into())
        }
        Technique::Random => {
            let mut rng = XorShift::mixed(seed, 0x5A4D);
            let w: Vec<f64> = (0..inputs.d).map(|_| gaussian(&mut rng)).collect();
            resid(w, 0.0, "N(0, I) direction".into())
        }
        Technique::SaeLatent | Technique::SaeProbe(_) => {
            let lat = inputs.latents.as_ref().ok_or_else(|| {
                Error::Input(format!(
                    "technique {} needs an SAE (--sae DIR)",
                    tech.name()
                ))
            })?;
            fit_latents(tech, lat, split)
        }
        Technique::Bow => {
            let b = bag_of_words_scores(
                need_model()?,
                &unlabelled(&inputs.ds),
                (split.train, split.val, split.test),
                (split.y_train, split.y_val),
                C_GRID,
            )?;
            Fitted {
                val_auroc: auroc(&b.val, split.y_val),
                scorer: Scorer::Given(b.test),
                choice: format!("C = {}, {} token types", b.c, b.vocab),
            }
        }
        Technique::SaeDiff | Technique::Ngram | Technique::DiffMeanUnembed | Technique::Study => {
            return Err(Error::Input(format!(
                "technique {} does not belong to the detection family",
                tech.name()
            )))
        }
        Technique::Prompt => {
            let q = inputs.ds.question.clone().ok_or_else(|| {
                Error::Input(format!(
                    "{}: no question for prompting (NAME.meta.json's \"question\")",
                    inputs.ds.name
                ))
            })?;
            let missing: Vec<usize> = split
                .test
                .iter()
                .copied()
                .filter(|i| !prompts.scores.contains_key(i))
                .collect();
            if !missing.is_empty() {
                let s = prompting_scores(
                    need_model()?,
                    &unlabelled(&inputs.ds),
                    &missing,
                    &q,
                    (&prompts.answers.0, &prompts.answers.1),
                    pragma_model::input::InputRule::default(),
                )?;
                prompts.scores.extend(missing.into_iter().zip(s));
            }
            Fitted {
                val_auroc: None,
                scorer: Scorer::Given(split.test.iter().map(|i| prompts.scores[i]).collect()),
                choice: format!("yes/no log-odds after: {q}"),
            }
        }
    })
}

/// The dataset with every label set to 0: what the text-only scorers receive, so that
/// no label (test labels included) can reach them except through the split's own vectors.
fn unlabelled(ds: &Dataset) -> Dataset {
    let mut d = ds.clone();
    for e in &mut d.examples {
        e.label = 0;
    }
    d
}

fn gaussian(rng: &mut XorShift) -> f64 {
    // Box-Muller.
    let (u1, u2) = (rng.next_f64().max(1e-300), rng.next_f64());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// RepE's PCA of differences for unpaired classes: positives and negatives shuffled
/// (seeded) and paired, the first principal component of the differences (not
/// re-centred; power iteration), signed and scaled by the mean difference's projection;
/// threshold at the midpoint of the projected class means.
pub fn pca_direction(x: &Matrix, y: &[u8], seed: u64) -> (Vec<f64>, f64) {
    let mut pos: Vec<usize> = (0..x.n).filter(|&i| y[i] == 1).collect();
    let mut neg: Vec<usize> = (0..x.n).filter(|&i| y[i] != 1).collect();
    let mut rng = XorShift::new(seed, 0x9CA);
    rng.shuffle(&mut pos);
    rng.shuffle(&mut neg);
    let m = pos.len().min(neg.len());
    let diffs: Vec<Vec<f64>> = (0..m)
        .map(|k| {
            x.row(pos[k])
                .iter()
                .zip(x.row(neg[k]))
                .map(|(a, b)| a - b)
                .collect()
        })
        .collect();
    let dm = fit_diff_means(x, y);
    let mut v = dm.w.clone();
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-300);
    let n0 = norm(&v);
    v.iter_mut().for_each(|a| *a /= n0);
    for _ in 0..200 {
        let mut w = vec![0.0; x.d];
        for d in &diffs {
            let p = pragma_methods::linear::dot(d, &v);
            for (a, b) in w.iter_mut().zip(d) {
                *a += p * b;
            }
        }
        let n = norm(&w);
        w.iter_mut().for_each(|a| *a /= n);
        let delta: f64 = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
        v = w;
        if delta < 1e-10 {
            break;
        }
    }
    let proj = pragma_methods::linear::dot(&dm.w, &v);
    let w: Vec<f64> = v.iter().map(|a| a * proj).collect();
    // Midpoint of the projected class means.
    let mean_of = |cls: u8| {
        let ix: Vec<usize> = (0..x.n).filter(|&i| (y[i] == 1) == (cls == 1)).collect();
        ix.iter()
            .map(|&i| pragma_methods::linear::dot(&w, x.row(i)))
            .sum::<f64>()
            / ix.len().max(1) as f64
    };
    let b = -0.5 * (mean_of(1) + mean_of(0));
    (w, b)
}

fn fit_latents(tech: Technique, lat: &Latents, split: &SplitView) -> Fitted {
    let d = lat.d_sae;
    let col = |j: usize, ix: &[usize]| -> Vec<f64> {
        ix.iter().map(|&i| lat.mean[i * d + j] as f64).collect()
    };
    let val_of = |w: &[(u32, f64)], b: f64| -> Option<f64> {
        let v: Vec<f64> = split
            .val
            .iter()
            .map(|&i| {
                b + w
                    .iter()
                    .map(|(j, c)| c * lat.mean[i * d + *j as usize] as f64)
                    .sum::<f64>()
            })
            .collect();
        auroc(&v, split.y_val)
    };
    match tech {
        Technique::SaeLatent => {
            // The latent whose mean activation best separates train (AUROC, either sign).
            let (j, a) = (0..d)
                .into_par_iter()
                .map(|j| (j, auroc(&col(j, split.train), split.y_train).unwrap_or(0.5)))
                .reduce(
                    || (0, 0.5),
                    |x, y| {
                        let (dx, dy) = ((x.1 - 0.5).abs(), (y.1 - 0.5).abs());
                        if dy > dx || (dy == dx && y.0 < x.0) {
                            y
                        } else {
                            x
                        }
                    },
                );
            let sign = if a >= 0.5 { 1.0 } else { -1.0 };
            let w = vec![(j as u32, sign)];
            Fitted {
                val_auroc: val_of(&w, 0.0),
                scorer: Scorer::Latent { j: j as u32, sign },
                choice: format!(
                    "latent {j}{} (train AUROC {a:.3})",
                    if sign < 0.0 { ", negated" } else { "" }
                ),
            }
        }
        Technique::SaeProbe(k) => {
            // SAEBench sparse probing: the k latents with the largest |mean difference|.
            let (np, nn) = (
                split.y_train.iter().filter(|&&l| l == 1).count().max(1) as f64,
                split.y_train.iter().filter(|&&l| l != 1).count().max(1) as f64,
            );
            let mut diff = vec![0f64; d];
            for (&i, &l) in split.train.iter().zip(split.y_train) {
                let row = &lat.mean[i * d..(i + 1) * d];
                let s = if l == 1 { 1.0 / np } else { -1.0 / nn };
                for (a, v) in diff.iter_mut().zip(row) {
                    *a += s * *v as f64;
                }
            }
            let mut order: Vec<usize> = (0..d).collect();
            order.sort_by(|&a, &b| diff[b].abs().total_cmp(&diff[a].abs()).then(a.cmp(&b)));
            order.truncate(k.min(d));
            let mat = |ix: &[usize]| {
                let mut data = Vec::with_capacity(ix.len() * order.len());
                for &i in ix {
                    data.extend(order.iter().map(|&j| lat.mean[i * d + j] as f64));
                }
                Matrix::new(data, ix.len(), order.len())
            };
            let (xt, xv) = (mat(split.train), mat(split.val));
            let (m, st, c) = fit_logistic_cv(&xt, split.y_train, &xv, split.y_val, C_GRID);
            let raw = m.unstandardize(&st);
            let w: Vec<(u32, f64)> = order.iter().map(|&j| j as u32).zip(raw.w).collect();
            Fitted {
                val_auroc: val_of(&w, raw.b),
                choice: format!(
                    "C = {c}; latents {}",
                    order
                        .iter()
                        .take(5)
                        .map(|j| j.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                        + if order.len() > 5 { ", ..." } else { "" }
                ),
                scorer: Scorer::Latents { w, b: raw.b },
            }
        }
        _ => unreachable!("fit_latents is only called for SAE techniques"),
    }
}

/// Scores of the test examples under each pooling the scorer supports.
pub fn score(scorer: &Scorer, inputs: &Inputs, test: &[usize]) -> Vec<(Pooling, Vec<f64>)> {
    let pool = |per_token: &dyn Fn(usize) -> Vec<f64>| {
        let (mut mean, mut max) = (Vec::new(), Vec::new());
        for &i in test {
            let s = per_token(i);
            mean.push(s.iter().sum::<f64>() / s.len().max(1) as f64);
            max.push(s.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        }
        vec![(Pooling::Mean, mean), (Pooling::Max, max)]
    };
    match scorer {
        Scorer::Given(v) => vec![(Pooling::Text, v.clone())],
        Scorer::Resid { w, b } => pool(&|i| {
            inputs.tokens[i]
                .chunks(inputs.d)
                .map(|h| h.iter().zip(w).map(|(x, c)| *x as f64 * c).sum::<f64>() + b)
                .collect()
        }),
        Scorer::Latent { j, sign } => {
            let lat = inputs.latents.as_ref();
            let per = |i: usize| -> Vec<f64> {
                lat.map(|l| {
                    l.tokens[i]
                        .iter()
                        .map(|tok| {
                            tok.iter()
                                .find(|(k, _)| k == j)
                                .map_or(0.0, |(_, v)| *v as f64)
                        })
                        .collect()
                })
                .unwrap_or_default()
            };
            let mut out = pool(&per);
            for (_, v) in &mut out {
                v.iter_mut().for_each(|x| *x *= sign);
            }
            out
        }
        Scorer::Latents { w, b } => {
            let wm: HashMap<u32, f64> = w.iter().copied().collect();
            let lat = inputs.latents.as_ref();
            pool(&|i| {
                lat.map(|l| {
                    l.tokens[i]
                        .iter()
                        .map(|tok| {
                            b + tok
                                .iter()
                                .filter_map(|(j, v)| wm.get(j).map(|c| c * *v as f64))
                                .sum::<f64>()
                        })
                        .collect()
                })
                .unwrap_or_default()
            })
        }
    }
}
