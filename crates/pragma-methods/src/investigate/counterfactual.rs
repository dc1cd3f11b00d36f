//! Counterfactual prompts: which parts of the input drive a behaviour, with statistics.
//!
//! [`segments`]: remove (or replace with a filler) each segment of a prompt (its
//! sentences, or spans the user marks) and measure the change in a behaviour metric:
//! a logit difference (exact, one forward per variant) or the rate at which sampled
//! continuations match a regex (seeded samples; a bootstrap 95% CI of the difference in
//! rates, and a permutation test that shuffles which samples came from which prompt:
//! under no effect its p < 0.05 about 5% of the time). Segments are ranked by effect.
//!
//! [`resample`]: from each sentence boundary of a model's own answer, sample fresh
//! continuations and measure how often the behaviour follows: the sentence after which
//! the rate jumps is where the model commits (as in "thought anchors", Bogdan et al.
//! 2025).

use pragma_model::generate::{generate_items, GenerateOptions, Sampling};
use pragma_model::hooks::Hooks;
use pragma_model::input::{InputRule, Prompt};
use pragma_model::llama::{Batch, Logits};
use pragma_model::tokenizer::ChatMessage;
use pragma_model::Model;
use serde::Serialize;

use super::metric::LogitDiff;
use crate::error::{Error, Result};
use crate::stats::{mean, XorShift};

/// What is measured on a prompt.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// `logit[good] - logit[bad]` for the next token (exact).
    LogitDiff(LogitDiff),
    /// A probe's score (its logit for a logistic probe) at the last position, at its
    /// hook (exact): e.g. a deception or eval-awareness probe from `pragma probe train`.
    Probe(std::sync::Arc<crate::probe::Probe>),
    /// The fraction of `samples` continuations (`max_tokens`, `temperature`) that match.
    Regex {
        pattern: regex::Regex,
        samples: usize,
        max_tokens: usize,
        temperature: f64,
    },
}

impl Behaviour {
    fn describe(&self) -> String {
        match self {
            Behaviour::LogitDiff(m) => format!("logit[{:?}] - logit[{:?}]", m.good_text, m.bad_text),
            Behaviour::Probe(p) => format!("probe score at {} (last position)", p.meta.hook),
            Behaviour::Regex { pattern, samples, max_tokens, temperature } => format!(
                "rate of /{pattern}/ over {samples} continuations of {max_tokens} tokens at temperature {temperature}"
            ),
        }
    }
}

/// How a segment is taken out.
#[derive(Clone, Debug, PartialEq)]
pub enum Replacement {
    /// Deleted (with one adjacent space).
    Remove,
    /// Replaced with this text.
    Filler(String),
    /// Segment `i` replaced with each of `alternatives[i]` in turn; its effect is the
    /// mean over them (samples pooled).
    Alternatives(Vec<Vec<String>>),
}

#[derive(Clone, Debug)]
pub struct SegmentsConfig {
    pub prompt: String,
    /// The spans to test, each occurring in the prompt; empty: the prompt's sentences.
    pub segments: Vec<String>,
    pub replacement: Replacement,
    pub behaviour: Behaviour,
    /// Render each variant as one user message in the chat template.
    pub chat: bool,
    pub rule: InputRule,
    pub seed: u64,
    /// Bootstrap and permutation resamples.
    pub resamples: usize,
}

/// One variant's measurement: its mean and, for sampled behaviours, each sample's 0/1.
#[derive(Clone, Debug, Serialize)]
pub struct Measure {
    pub value: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SegmentEffect {
    pub segment: String,
    /// The prompt without it (the first variant, with alternatives).
    pub variant: String,
    pub value: f64,
    /// `value - original`.
    pub effect: f64,
    /// 95% CI of the effect (bootstrap over samples); `None` for exact behaviours.
    pub ci: Option<(f64, f64)>,
    /// Permutation test of "no effect" (two-sided); `None` for exact behaviours.
    pub p_value: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SegmentsResult {
    pub behaviour: String,
    pub prompt: String,
    pub original: f64,
    /// Segments, largest |effect| first.
    pub segments: Vec<SegmentEffect>,
}

/// Split text into sentences: after `.`, `!`, `?` or a newline followed by whitespace.
/// Each sentence keeps its punctuation; surrounding whitespace is trimmed.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (k, &(i, c)) in chars.iter().enumerate() {
        let end = i + c.len_utf8();
        let boundary = matches!(c, '.' | '!' | '?' | '\n')
            && chars.get(k + 1).is_none_or(|&(_, n)| n.is_whitespace());
        if boundary {
            let s = text[start..end].trim();
            if !s.is_empty() {
                out.push(s.to_string());
            }
            start = end;
        }
    }
    let s = text[start..].trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
    out
}

fn input_ids(model: &Model, text: &str, chat: bool, rule: InputRule) -> Result<Vec<u32>> {
    let msgs;
    let prompt = if chat {
        msgs = vec![ChatMessage::new("user", text)];
        Prompt::chat(&msgs)
    } else {
        Prompt::Text(text)
    };
    Ok(model.tokenizer.build_input(&prompt, rule)?.ids)
}

/// Measure `behaviour` on each text (`prefixes[i]` is prepended to the sampled
/// continuation before matching; empty for plain prompts). Sampled behaviours draw
/// sample `j` of every text from the same seed stream (item `j`), so differences come
/// from the texts, not the draws.
fn measure(
    model: &Model,
    ids: &[Vec<u32>],
    prefixes: &[String],
    behaviour: &Behaviour,
    seed: u64,
) -> Result<Vec<Measure>> {
    match behaviour {
        Behaviour::LogitDiff(m) => {
            let mut out = Vec::new();
            for chunk in ids.chunks(16) {
                let (logits, _) = model.transformer.forward(
                    &Batch::new(chunk, model.device())?,
                    &Hooks::new(),
                    Logits::Last,
                )?;
                let logits = logits.ok_or_else(|| Error::Input("no logits".into()))?;
                out.extend(m.of_rows(&logits)?.into_iter().map(|value| Measure {
                    value,
                    samples: Vec::new(),
                }));
            }
            Ok(out)
        }
        Behaviour::Probe(probe) => {
            let point = probe.hook_point(model)?;
            let mut hooks = Hooks::new();
            hooks.capture(point);
            let mut out = Vec::new();
            for p in ids {
                let (_, cache) = model.transformer.forward(
                    &Batch::single(p, model.device())?,
                    &hooks,
                    Logits::None,
                )?;
                let last = cache.get_row(point, 0)?.narrow(0, p.len() - 1, 1)?;
                let value = probe.score_rows(&last)?[0];
                out.push(Measure {
                    value,
                    samples: Vec::new(),
                });
            }
            Ok(out)
        }
        Behaviour::Regex {
            pattern,
            samples,
            max_tokens,
            temperature,
        } => {
            let opts = GenerateOptions {
                max_tokens: *max_tokens,
                sampling: Sampling {
                    temperature: *temperature,
                    seed,
                    ..Sampling::default()
                },
                stop_tokens: model.tokenizer.info.stop_tokens.clone(),
            };
            let mut out = Vec::new();
            for (p, prefix) in ids.iter().zip(prefixes) {
                let mut hits = Vec::with_capacity(*samples);
                let items: Vec<u64> = (0..*samples as u64).collect();
                for chunk in items.chunks(16) {
                    let prompts = vec![p.clone(); chunk.len()];
                    let g = generate_items(
                        &model.transformer,
                        &prompts,
                        chunk,
                        &opts,
                        &Hooks::new(),
                        |_, _| {},
                    )?;
                    for toks in &g.tokens {
                        let kept: Vec<u32> = toks
                            .iter()
                            .copied()
                            .filter(|t| !opts.stop_tokens.contains(t))
                            .collect();
                        let text = format!("{prefix}{}", model.tokenizer.decode(&kept)?);
                        hits.push(if pattern.is_match(&text) { 1.0 } else { 0.0 });
                    }
                }
                out.push(Measure {
                    value: mean(&hits),
                    samples: hits,
                });
            }
            Ok(out)
        }
    }
}

/// Bootstrap 95% CI of `mean(b) - mean(a)`, resampling each arm.
pub fn diff_ci(a: &[f64], b: &[f64], reps: usize, seed: u64) -> (f64, f64) {
    let mut rng = XorShift::new(seed, XorShift::BOOTSTRAP);
    let mut d: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let ma = (0..a.len()).map(|_| a[rng.below(a.len())]).sum::<f64>() / a.len() as f64;
            let mb = (0..b.len()).map(|_| b[rng.below(b.len())]).sum::<f64>() / b.len() as f64;
            mb - ma
        })
        .collect();
    d.sort_by(|x, y| x.total_cmp(y));
    let at = |q: f64| d[((q * (d.len() - 1) as f64).round() as usize).min(d.len() - 1)];
    (at(0.025), at(0.975))
}

/// Two-sided permutation test of `mean(b) - mean(a) = 0`: shuffle which values belong to
/// which arm `reps` times; p = (1 + #|shuffled diff| >= |observed|) / (1 + reps).
pub fn permutation_p(a: &[f64], b: &[f64], reps: usize, seed: u64) -> f64 {
    let observed = (mean(b) - mean(a)).abs();
    let mut pool: Vec<f64> = a.iter().chain(b).copied().collect();
    let mut rng = XorShift::new(seed, XorShift::BOOTSTRAP ^ 0x5045_524d);
    let mut extreme = 0usize;
    for _ in 0..reps {
        for i in (1..pool.len()).rev() {
            pool.swap(i, rng.below(i + 1));
        }
        let d = (mean(&pool[a.len()..]) - mean(&pool[..a.len()])).abs();
        if d >= observed - 1e-12 {
            extreme += 1;
        }
    }
    (1 + extreme) as f64 / (1 + reps) as f64
}

/// Remove or replace each segment and measure the change. Errors: a segment that does
/// not occur in the prompt (quoted, with the prompt), no segments, a regex behaviour
/// with fewer than 2 samples.
pub fn segments(model: &Model, cfg: &SegmentsConfig) -> Result<SegmentsResult> {
    let segs = if cfg.segments.is_empty() {
        sentences(&cfg.prompt)
    } else {
        cfg.segments.clone()
    };
    if segs.len() < 2 && cfg.segments.is_empty() {
        return Err(Error::Input(format!(
            "the prompt has {} sentence(s): give at least two, or mark the spans to test",
            segs.len()
        )));
    }
    if let Behaviour::Regex { samples, .. } = &cfg.behaviour {
        if *samples < 2 {
            return Err(Error::Input(format!(
                "expected at least 2 samples per variant, found {samples}"
            )));
        }
    }
    if let Replacement::Alternatives(alts) = &cfg.replacement {
        if alts.len() != segs.len() || alts.iter().any(Vec::is_empty) {
            return Err(Error::Input(format!(
                "expected one non-empty list of alternatives per segment, found {} lists for {} segments",
                alts.len(),
                segs.len()
            )));
        }
    }
    // (segment, variant text) pairs: one per segment, or one per alternative.
    let mut variants: Vec<(usize, String)> = Vec::new();
    for (si, s) in segs.iter().enumerate() {
        let at = cfg.prompt.find(s.as_str()).ok_or_else(|| {
            Error::Input(format!(
                "segment {s:?} does not occur in the prompt {:?}",
                cfg.prompt
            ))
        })?;
        let (before, after) = (&cfg.prompt[..at], &cfg.prompt[at + s.len()..]);
        let v = match &cfg.replacement {
            Replacement::Remove => {
                // Drop one adjacent space so no double space is left behind.
                if before.ends_with(' ') && (after.starts_with(' ') || after.is_empty()) {
                    format!("{}{after}", &before[..before.len() - 1])
                } else if after.starts_with(' ') && before.is_empty() {
                    after[1..].to_string()
                } else {
                    format!("{before}{after}")
                }
            }
            Replacement::Filler(f) => format!("{before}{f}{after}"),
            Replacement::Alternatives(alts) => {
                for a in &alts[si] {
                    variants.push((si, format!("{before}{a}{after}")));
                }
                continue;
            }
        };
        variants.push((si, v));
    }
    let mut texts = vec![cfg.prompt.clone()];
    texts.extend(variants.iter().map(|v| v.1.clone()));
    let ids = texts
        .iter()
        .map(|t| input_ids(model, t, cfg.chat, cfg.rule))
        .collect::<Result<Vec<_>>>()?;
    let m = measure(
        model,
        &ids,
        &vec![String::new(); ids.len()],
        &cfg.behaviour,
        cfg.seed,
    )?;
    let original = &m[0];
    let mut out: Vec<SegmentEffect> = segs
        .iter()
        .enumerate()
        .map(|(k, s)| {
            // This segment's variants, pooled.
            let mine: Vec<usize> = (0..variants.len())
                .filter(|&i| variants[i].0 == k)
                .collect();
            let value = mean(&mine.iter().map(|&i| m[1 + i].value).collect::<Vec<_>>());
            let samples: Vec<f64> = mine
                .iter()
                .flat_map(|&i| m[1 + i].samples.clone())
                .collect();
            let sampled = !samples.is_empty();
            let seed = cfg.seed ^ k as u64;
            SegmentEffect {
                segment: s.clone(),
                variant: variants[mine[0]].1.clone(),
                value,
                effect: value - original.value,
                ci: sampled.then(|| diff_ci(&original.samples, &samples, cfg.resamples, seed)),
                p_value: sampled
                    .then(|| permutation_p(&original.samples, &samples, cfg.resamples, seed)),
            }
        })
        .collect();
    out.sort_by(|a, b| b.effect.abs().total_cmp(&a.effect.abs()));
    Ok(SegmentsResult {
        behaviour: cfg.behaviour.describe(),
        prompt: cfg.prompt.clone(),
        original: original.value,
        segments: out,
    })
}

/// One boundary of [`resample`]: the answer's first `sentences` sentences kept.
#[derive(Clone, Debug, Serialize)]
pub struct Boundary {
    pub sentences: usize,
    /// The last sentence kept (empty at 0).
    pub last_sentence: String,
    pub rate: f64,
    pub ci: (f64, f64),
}

#[derive(Clone, Debug, Serialize)]
pub struct ResampleResult {
    pub behaviour: String,
    pub boundaries: Vec<Boundary>,
    /// The sentence after which the rate rose most, and by how much.
    pub commits_at: Option<(usize, f64)>,
}

/// From each sentence boundary of `answer` (the model's reply to `prompt` as one user
/// message), sample continuations of the reply so far and measure how often `pattern`
/// matches the whole reply (kept prefix + continuation). Needs a regex behaviour.
pub fn resample(
    model: &Model,
    prompt: &str,
    answer: &str,
    behaviour: &Behaviour,
    rule: InputRule,
    seed: u64,
    resamples: usize,
) -> Result<ResampleResult> {
    if !matches!(behaviour, Behaviour::Regex { .. }) {
        return Err(Error::Input(
            "resampling measures sampled continuations: give a regex behaviour".into(),
        ));
    }
    let sents = sentences(answer);
    if sents.is_empty() {
        return Err(Error::Input(
            "the answer is empty: nothing to resample from".into(),
        ));
    }
    let mut ids = Vec::new();
    let mut prefixes = Vec::new();
    for k in 0..=sents.len() {
        let prefix = if k == 0 {
            String::new()
        } else {
            format!("{} ", sents[..k].join(" "))
        };
        let msgs = [ChatMessage::new("user", prompt)];
        let mut p = model.tokenizer.build_input(&Prompt::chat(&msgs), rule)?.ids;
        p.extend(model.tokenizer.encode(prefix.trim_end(), false)?);
        ids.push(p);
        prefixes.push(prefix);
    }
    let m = measure(model, &ids, &prefixes, behaviour, seed)?;
    let boundaries: Vec<Boundary> = m
        .iter()
        .enumerate()
        .map(|(k, mv)| Boundary {
            sentences: k,
            last_sentence: if k == 0 {
                String::new()
            } else {
                sents[k - 1].clone()
            },
            rate: mv.value,
            ci: crate::stats::bootstrap_ci(&mv.samples, resamples, seed ^ k as u64),
        })
        .collect();
    let commits_at = boundaries
        .windows(2)
        .map(|w| (w[1].sentences, w[1].rate - w[0].rate))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    Ok(ResampleResult {
        behaviour: behaviour.describe(),
        boundaries,
        commits_at,
    })
}
