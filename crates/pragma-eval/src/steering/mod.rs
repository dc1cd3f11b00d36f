//! Concept steering, judge-free: AxBench's steering protocol (Wu et al. 2025) with the
//! LLM judge replaced by measurements.
//!
//! For a concept (the positive class of a detection dataset) each technique gives a
//! direction `v` (unit norm) at the suite's hook; steering adds `alpha * n * v` at every
//! position, where `n` is the median norm of the concept dataset's mean-pooled activations
//! and `alpha` a factor. Continuations (greedy, chat template) of neutral instructions are
//! scored on three parts, each in [0, 1]:
//!
//! - **concept**: the probability a bag-of-words classifier gives the concept. The
//!   classifier is trained on the dataset's *test* split, which no technique reads (they
//!   are fitted on train/validation), so it is held out from every technique.
//! - **instruction relevance**: `d = mean log p(c | instruction) - mean log p(c | empty
//!   instruction)` over the continuation's tokens under the unsteered model, divided by the
//!   same quantity for the unsteered continuation (floored at 0.1 nats), clamped to [0, 1].
//! - **fluency**: `ppl_ref / ppl(c)` (perplexity given the instruction under the unsteered
//!   model, relative to the unsteered continuation's), clamped to [0, 1], times one minus
//!   the share of repeated token trigrams.
//!
//! The combined score is their harmonic mean (AxBench combines its three judge scores the
//! same way). The factor is chosen on half of the instructions (mean combined score); the
//! other half reports. Techniques: `diffmean`, `probe` (its weight vector), `pca`,
//! `sae-latent` (the decoder row of the latent `detection` would choose), `prompt` (no
//! vector: the instruction asks for the concept), `random` (a random unit direction, the
//! same factors).

use candle_core::{Device, Tensor};
use pragma_methods::linear::{fit_diff_means, fit_logistic, FitOptions, Matrix, Standardizer};
use pragma_methods::probe::fit_logistic_cv;
use pragma_methods::sae::Sae;
use pragma_methods::stats::XorShift;
use pragma_methods::{Error, Result};
use pragma_model::generate::{generate, GenerateOptions, Sampling};
use pragma_model::hooks::{HookPoint, Hooks, Positions};
use pragma_model::input::{InputRule, Prompt};
use pragma_model::llama::{Batch, Logits};
use pragma_model::tokenizer::ChatMessage;
use pragma_model::Model;
use serde::{Deserialize, Serialize};

use crate::detection::{Inputs, SplitView, C_GRID};
use crate::suite::Technique;

/// A steering task's settings.
#[derive(Clone, Debug, Serialize)]
pub struct SteeringSpec {
    pub instructions: Vec<String>,
    pub factors: Vec<f64>,
    pub max_new_tokens: usize,
    /// The concept in words, for the prompting technique (the meta file's name of label 1).
    pub concept: String,
}

/// One technique on one seed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SteerResult {
    /// The factor chosen on the selection half (`None` for prompting).
    pub factor: Option<f64>,
    /// Mean combined score per factor on the selection half.
    pub selection: Vec<(f64, f64)>,
    /// Means over the report half.
    pub concept: f64,
    pub relevance: f64,
    pub fluency: f64,
    pub combined: f64,
    /// Combined score per report instruction.
    pub per_instruction: Vec<f64>,
    /// The first report instruction and its continuation.
    pub example: (String, String),
}

/// A bag-of-words concept classifier: log(1 + count) of model tokens seen in 2+ texts,
/// standardised, logistic regression with C = 1.
pub struct ConceptClassifier {
    vocab: std::collections::HashMap<u32, usize>,
    st: Standardizer,
    w: pragma_methods::linear::Linear,
}

impl ConceptClassifier {
    pub fn fit(model: &Model, texts: &[String], labels: &[u8]) -> Result<Self> {
        let toks: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| model.tokenizer.encode(t, false).map_err(Error::from))
            .collect::<Result<_>>()?;
        let mut df: std::collections::HashMap<u32, usize> = Default::default();
        for t in &toks {
            let mut s = t.clone();
            s.sort_unstable();
            s.dedup();
            for x in s {
                *df.entry(x).or_default() += 1;
            }
        }
        let mut v: Vec<u32> = df
            .into_iter()
            .filter(|(_, c)| *c >= 2)
            .map(|(t, _)| t)
            .collect();
        v.sort_unstable();
        let vocab: std::collections::HashMap<u32, usize> =
            v.iter().enumerate().map(|(k, &t)| (t, k)).collect();
        let x = Self::features(&vocab, &toks);
        let st = Standardizer::fit(&x);
        let w = fit_logistic(&st.apply(&x), labels, 1.0, None, FitOptions::default());
        Ok(Self { vocab, st, w })
    }

    fn features(vocab: &std::collections::HashMap<u32, usize>, toks: &[Vec<u32>]) -> Matrix {
        let d = vocab.len().max(1);
        let mut data = vec![0.0; toks.len() * d];
        for (r, t) in toks.iter().enumerate() {
            for x in t {
                if let Some(&k) = vocab.get(x) {
                    data[r * d + k] += 1.0;
                }
            }
        }
        data.iter_mut().for_each(|v: &mut f64| *v = v.ln_1p());
        Matrix::new(data, toks.len(), d)
    }

    /// P(concept | text).
    pub fn prob(&self, model: &Model, text: &str) -> Result<f64> {
        let t = model.tokenizer.encode(text, false)?;
        let x = self.st.apply(&Self::features(&self.vocab, &[t]));
        let s = self.w.scores(&x)[0];
        Ok(1.0 / (1.0 + (-s).exp()))
    }
}

fn chat(model: &Model, user: &str) -> Result<Vec<u32>> {
    Ok(model
        .tokenizer
        .build_input(
            &Prompt::chat(&[ChatMessage::new("user", user)]),
            InputRule::default(),
        )?
        .ids)
}

/// Mean log-probability per token of `cont` after `ctx` under the unsteered model.
fn cont_logprob(model: &Model, ctx: &[u32], cont: &[u32]) -> Result<f64> {
    if cont.is_empty() {
        return Ok(0.0);
    }
    let ids: Vec<u32> = ctx.iter().chain(cont).copied().collect();
    let batch = Batch::single(&ids, model.device())?;
    let (logits, _) = model
        .transformer
        .forward(&batch, &Hooks::new(), Logits::All)?;
    let logits = logits.ok_or_else(|| Error::Input("no logits".into()))?;
    let lp = candle_nn_log_softmax(&logits.squeeze(0)?)?;
    let rows: Vec<Vec<f32>> = lp.narrow(0, ctx.len() - 1, cont.len())?.to_vec2()?;
    Ok(rows
        .iter()
        .zip(cont)
        .map(|(r, &t)| r[t as usize] as f64)
        .sum::<f64>()
        / cont.len() as f64)
}

fn candle_nn_log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(1)?;
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

fn repetition(tokens: &[u32]) -> f64 {
    if tokens.len() < 4 {
        return 0.0;
    }
    let tri: Vec<&[u32]> = tokens.windows(3).collect();
    let mut seen = std::collections::HashSet::new();
    let rep = tri.iter().filter(|t| !seen.insert(**t)).count();
    rep as f64 / tri.len() as f64
}

/// The unsteered reference of one instruction.
pub struct Reference {
    pub delta: f64,
    pub nll: f64,
}

/// Scores of one continuation.
#[derive(Clone, Copy, Debug)]
pub struct Parts {
    pub concept: f64,
    pub relevance: f64,
    pub fluency: f64,
}

impl Parts {
    pub fn combined(&self) -> f64 {
        let v = [self.concept, self.relevance, self.fluency];
        if v.iter().any(|x| *x <= 0.0) {
            0.0
        } else {
            3.0 / v.iter().map(|x| 1.0 / x).sum::<f64>()
        }
    }
}

/// Everything one seed's steering needs, built once and shared by the techniques.
pub struct Setting<'a> {
    pub model: &'a Model,
    pub point: HookPoint,
    pub spec: &'a SteeringSpec,
    pub classifier: ConceptClassifier,
    /// Instruction indices: selection half, report half.
    pub select: Vec<usize>,
    pub report: Vec<usize>,
    pub refs: Vec<Reference>,
    pub norm: f64,
    stop: Vec<u32>,
}

impl<'a> Setting<'a> {
    /// Split the instructions (seeded), fit the concept classifier on `heldout` (the
    /// dataset's test split), and generate the unsteered references.
    pub fn new(
        model: &'a Model,
        point: HookPoint,
        spec: &'a SteeringSpec,
        inputs: &Inputs,
        heldout: &[usize],
        train: &[usize],
        seed: u64,
    ) -> Result<Setting<'a>> {
        let texts: Vec<String> = heldout
            .iter()
            .map(|&i| inputs.ds.examples[i].text())
            .collect();
        let labels: Vec<u8> = heldout
            .iter()
            .map(|&i| inputs.ds.examples[i].label)
            .collect();
        let classifier = ConceptClassifier::fit(model, &texts, &labels)?;
        let mut order: Vec<usize> = (0..spec.instructions.len()).collect();
        XorShift::new(seed, 0x57E).shuffle(&mut order);
        let half = order.len() / 2;
        let (select, report) = (order[..half].to_vec(), order[half..].to_vec());
        let mut norms: Vec<f64> = train
            .iter()
            .map(|&i| inputs.mean.row(i).iter().map(|x| x * x).sum::<f64>().sqrt())
            .collect();
        norms.sort_by(f64::total_cmp);
        let norm = norms.get(norms.len() / 2).copied().unwrap_or(1.0);
        let stop = model.tokenizer.info.stop_tokens.clone();
        let mut s = Setting {
            model,
            point,
            spec,
            classifier,
            select,
            report,
            refs: Vec::new(),
            norm,
            stop,
        };
        let all: Vec<usize> = (0..spec.instructions.len()).collect();
        let conts = s.generate(&all, None, &Hooks::new())?;
        for (i, c) in all.iter().zip(&conts) {
            let with = cont_logprob(model, &chat(model, &spec.instructions[*i])?, c)?;
            let without = cont_logprob(model, &chat(model, "")?, c)?;
            s.refs.push(Reference {
                delta: with - without,
                nll: -with,
            });
        }
        Ok(s)
    }

    fn generate(&self, ix: &[usize], suffix: Option<&str>, hooks: &Hooks) -> Result<Vec<Vec<u32>>> {
        let prompts: Vec<Vec<u32>> = ix
            .iter()
            .map(|&i| {
                let text = match suffix {
                    Some(s) => format!("{} {s}", self.spec.instructions[i]),
                    None => self.spec.instructions[i].clone(),
                };
                chat(self.model, &text)
            })
            .collect::<Result<_>>()?;
        let g = generate(
            &self.model.transformer,
            &prompts,
            &GenerateOptions {
                max_tokens: self.spec.max_new_tokens,
                sampling: Sampling::default(),
                stop_tokens: self.stop.clone(),
            },
            hooks,
            |_, _| {},
        )?;
        Ok(g.tokens
            .into_iter()
            .map(|mut t| {
                if t.last().is_some_and(|x| self.stop.contains(x)) {
                    t.pop();
                }
                t
            })
            .collect())
    }

    fn parts(&self, i: usize, cont: &[u32]) -> Result<Parts> {
        let m = self.model;
        let text = m.tokenizer.decode(cont)?;
        let with = cont_logprob(m, &chat(m, &self.spec.instructions[i])?, cont)?;
        let without = cont_logprob(m, &chat(m, "")?, cont)?;
        let r = &self.refs[i];
        Ok(Parts {
            concept: self.classifier.prob(m, &text)?,
            relevance: ((with - without) / r.delta.max(0.1)).clamp(0.0, 1.0),
            fluency: ((r.nll + with).exp()).clamp(0.0, 1.0) * (1.0 - repetition(cont)),
        })
    }

    fn hooks(&self, v: &[f64], factor: f64) -> Result<Hooks> {
        let t = Tensor::from_vec(
            v.iter().map(|&x| x as f32).collect::<Vec<f32>>(),
            v.len(),
            &Device::Cpu,
        )?;
        let mut h = Hooks::new();
        h.add(self.point, t, (factor * self.norm) as f32, Positions::All);
        Ok(h)
    }

    /// Mean parts over `ix` under a vector and factor (or the prompting suffix).
    fn run_half(
        &self,
        ix: &[usize],
        vector: Option<(&[f64], f64)>,
        suffix: Option<&str>,
    ) -> Result<(Vec<Parts>, Vec<Vec<u32>>)> {
        let hooks = match vector {
            Some((v, f)) => self.hooks(v, f)?,
            None => Hooks::new(),
        };
        let conts = self.generate(ix, suffix, &hooks)?;
        let parts = ix
            .iter()
            .zip(&conts)
            .map(|(&i, c)| self.parts(i, c))
            .collect::<Result<Vec<_>>>()?;
        Ok((parts, conts))
    }
}

fn unit(v: Vec<f64>) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    v.into_iter().map(|x| x / n).collect()
}

/// The steering direction of `tech` (unit norm), fitted on train (hyper-parameters on
/// validation) as in detection; `None` for prompting.
pub fn direction(
    tech: Technique,
    inputs: &Inputs,
    split: &SplitView,
    seed: u64,
    sae: Option<&Sae>,
) -> Result<Option<Vec<f64>>> {
    let (xtr, xva) = (
        inputs.mean.select(split.train),
        inputs.mean.select(split.val),
    );
    Ok(Some(unit(match tech {
        Technique::DiffMean => fit_diff_means(&xtr, split.y_train).w,
        Technique::Probe => {
            let (m, st, _) = fit_logistic_cv(&xtr, split.y_train, &xva, split.y_val, C_GRID);
            m.unstandardize(&st).w
        }
        Technique::Pca => crate::detection::pca_direction(&xtr, split.y_train, seed).0,
        Technique::Random => {
            let mut rng = XorShift::mixed(seed, 0x5A4D);
            (0..inputs.d)
                .map(|_| {
                    let (u1, u2) = (rng.next_f64().max(1e-300), rng.next_f64());
                    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
                })
                .collect()
        }
        Technique::SaeLatent => {
            let s =
                sae.ok_or_else(|| Error::Input("sae-latent needs an SAE (--sae DIR)".into()))?;
            let mut p = crate::detection::PromptCache::new((String::new(), String::new()));
            let f = crate::detection::fit(tech, inputs, split, seed, None, &mut p)?;
            let (j, sign) = match f.scorer {
                crate::detection::Scorer::Latent { j, sign } => (j, sign),
                _ => return Err(Error::Input("sae-latent: no latent chosen".into())),
            };
            let row: Vec<f32> = s.w_dec.get(j as usize)?.to_vec1()?;
            row.into_iter().map(|x| sign * x as f64).collect()
        }
        Technique::Prompt => return Ok(None),
        other => {
            return Err(Error::Input(format!(
                "technique {} is not a steering technique",
                other.name()
            )))
        }
    })))
}

/// Steer with `tech`: choose the factor on the selection half, report on the other.
pub fn run(setting: &Setting, tech: Technique, v: Option<&[f64]>) -> Result<SteerResult> {
    let mean =
        |p: &[Parts]| -> f64 { p.iter().map(Parts::combined).sum::<f64>() / p.len().max(1) as f64 };
    let (factor, selection, (parts, conts)) = match v {
        Some(v) => {
            let mut sel = Vec::new();
            for &f in &setting.spec.factors {
                let (p, _) = setting.run_half(&setting.select, Some((v, f)), None)?;
                sel.push((f, mean(&p)));
            }
            let best = sel
                .iter()
                .copied()
                .fold((setting.spec.factors[0], f64::NEG_INFINITY), |a, b| {
                    if b.1 > a.1 {
                        b
                    } else {
                        a
                    }
                })
                .0;
            (
                Some(best),
                sel,
                setting.run_half(&setting.report, Some((v, best)), None)?,
            )
        }
        None => {
            let suffix = format!("(Make your answer about {}.)", setting.spec.concept);
            let _ = tech;
            (
                None,
                Vec::new(),
                setting.run_half(&setting.report, None, Some(&suffix))?,
            )
        }
    };
    let avg =
        |f: &dyn Fn(&Parts) -> f64| parts.iter().map(f).sum::<f64>() / parts.len().max(1) as f64;
    let example = match (setting.report.first(), conts.first()) {
        (Some(&i), Some(c)) => (
            setting.spec.instructions[i].clone(),
            setting.model.tokenizer.decode(c)?,
        ),
        _ => (String::new(), String::new()),
    };
    Ok(SteerResult {
        factor,
        selection,
        concept: avg(&|p| p.concept),
        relevance: avg(&|p| p.relevance),
        fluency: avg(&|p| p.fluency),
        combined: avg(&Parts::combined),
        per_instruction: parts.iter().map(Parts::combined).collect(),
        example,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_is_the_harmonic_mean_and_zero_if_any_part_is() {
        let p = Parts {
            concept: 0.5,
            relevance: 1.0,
            fluency: 1.0,
        };
        assert!((p.combined() - 0.75).abs() < 1e-12);
        let z = Parts {
            concept: 0.0,
            relevance: 1.0,
            fluency: 1.0,
        };
        assert_eq!(z.combined(), 0.0);
        assert_eq!(repetition(&[1, 2, 3, 1, 2, 3, 1, 2, 3]), 4.0 / 7.0);
        assert_eq!(repetition(&[1, 2, 3, 4, 5]), 0.0);
    }
}
