//! Counterfactual prompts: which parts of the input drive a behaviour, with statistics.
//!
//! [`segments`]: remove (or replace with a filler) each segment of a prompt (its
//! sentences, or spans the user marks) and measure the change in a behaviour metric:
//! a logit difference (exact, one forward per variant) or the rate at which sampled
//! continuations match a regex (seeded samples at temperature > 0; sample `j` of every
//! variant shares its seed, so the bootstrap 95% CI of the difference in rates and the
//! sign-flip permutation test are paired over `j`; p-values are also Holm-adjusted over
//! the segments). Segments are ranked by effect.
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
    /// Sign-flip permutation test of "no effect" over the paired samples (two-sided);
    /// `None` for exact behaviours.
    pub p_value: Option<f64>,
    /// `p_value` with Holm's adjustment over all segments tested.
    pub p_holm: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SegmentsResult {
    pub behaviour: String,
    pub prompt: String,
    pub original: f64,
    /// Segments, largest |effect| first.
    pub segments: Vec<SegmentEffect>,
}

/// Byte ranges of the sentences of `text`: a sentence ends after `.`, `!`, `?` or a
/// newline followed by whitespace, keeps its punctuation, and is trimmed.
pub fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut push = |from: usize, to: usize| {
        let raw = &text[from..to];
        let lead = raw.len() - raw.trim_start().len();
        let t = raw.trim();
        if !t.is_empty() {
            out.push((from + lead, from + lead + t.len()));
        }
    };
    for (k, &(i, c)) in chars.iter().enumerate() {
        let end = i + c.len_utf8();
        let boundary = matches!(c, '.' | '!' | '?' | '\n')
            && chars.get(k + 1).is_none_or(|&(_, n)| n.is_whitespace());
        if boundary {
            push(start, end);
            start = end;
        }
    }
    push(start, text.len());
    out
}

/// The sentences of `text` (see [`sentence_spans`]).
pub fn sentences(text: &str) -> Vec<String> {
    sentence_spans(text)
        .into_iter()
        .map(|(a, b)| text[a..b].to_string())
        .collect()
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

/// Bootstrap 95% CI of the mean paired difference `mean(b_j - a_j)`: sample `j` of
/// both arms shares its seed, so pairs are resampled together.
pub fn paired_ci(a: &[f64], b: &[f64], reps: usize, seed: u64) -> (f64, f64) {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    crate::stats::bootstrap_ci(&d, reps, seed)
}

/// Two-sided sign-flip permutation test of "no effect" for paired samples: under the
/// null each pair's difference is as likely negated; p = (1 + #|flipped mean| >=
/// |observed|) / (1 + reps).
pub fn sign_flip_p(a: &[f64], b: &[f64], reps: usize, seed: u64) -> f64 {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let observed = mean(&d).abs();
    let mut rng = XorShift::mixed(seed, XorShift::BOOTSTRAP ^ 0x5349_474e);
    let mut extreme = 0usize;
    for _ in 0..reps {
        let m = d
            .iter()
            .map(|&x| if rng.next_f64() < 0.5 { -x } else { x })
            .sum::<f64>()
            / d.len().max(1) as f64;
        if m.abs() >= observed - 1e-12 {
            extreme += 1;
        }
    }
    (1 + extreme) as f64 / (1 + reps) as f64
}

/// Holm's step-down adjustment of p-values (family-wise error over the segments).
pub fn holm(p: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let m = p.len();
    let mut out = vec![0.0; m];
    let mut running = 0f64;
    for (rank, &i) in idx.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

/// Remove or replace each segment and measure the change. Errors: a segment that does
/// not occur in the prompt (quoted, with the prompt), no segments, a regex behaviour
/// with fewer than 2 samples.
pub fn segments(model: &Model, cfg: &SegmentsConfig) -> Result<SegmentsResult> {
    // Segments by position: the prompt's sentences, or each marked span, which must
    // occur exactly once.
    let spans: Vec<(usize, usize)> = if cfg.segments.is_empty() {
        sentence_spans(&cfg.prompt)
    } else {
        let mut v = Vec::new();
        for s in &cfg.segments {
            let hits: Vec<usize> = cfg.prompt.match_indices(s.as_str()).map(|m| m.0).collect();
            match hits.as_slice() {
                [] => {
                    return Err(Error::Input(format!(
                        "segment {s:?} does not occur in the prompt {:?}",
                        cfg.prompt
                    )))
                }
                [at] => v.push((*at, at + s.len())),
                _ => {
                    return Err(Error::Input(format!(
                        "segment {s:?} occurs {} times in the prompt: mark a longer span that \
                         occurs once",
                        hits.len()
                    )))
                }
            }
        }
        v
    };
    let segs: Vec<String> = spans
        .iter()
        .map(|&(a, b)| cfg.prompt[a..b].to_string())
        .collect();
    if segs.len() < 2 && cfg.segments.is_empty() {
        return Err(Error::Input(format!(
            "the prompt has {} sentence(s): give at least two, or mark the spans to test",
            segs.len()
        )));
    }
    if let Behaviour::Regex {
        samples,
        temperature,
        ..
    } = &cfg.behaviour
    {
        if temperature.is_nan() || *temperature <= 0.0 {
            return Err(Error::Input(format!(
                "a sampled behaviour needs temperature > 0, found {temperature}: greedy decoding \
                 gives one continuation {samples} times (use --metric for an exact behaviour)"
            )));
        }
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
    for (si, &(at, end)) in spans.iter().enumerate() {
        let (before, after) = (&cfg.prompt[..at], &cfg.prompt[end..]);
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
            let mine: Vec<usize> = (0..variants.len())
                .filter(|&i| variants[i].0 == k)
                .collect();
            let value = mean(&mine.iter().map(|&i| m[1 + i].value).collect::<Vec<_>>());
            // Sample j of each alternative, averaged: paired with the original's sample j
            // (the same seed).
            let n = original.samples.len();
            let paired: Vec<f64> = (0..n)
                .map(|j| {
                    mean(
                        &mine
                            .iter()
                            .map(|&i| m[1 + i].samples[j])
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            let sampled = n > 0;
            let seed = cfg.seed ^ (k as u64).wrapping_mul(0x9E37_79B9);
            SegmentEffect {
                segment: s.clone(),
                variant: variants[mine[0]].1.clone(),
                value,
                effect: value - original.value,
                ci: sampled.then(|| paired_ci(&original.samples, &paired, cfg.resamples, seed)),
                p_value: sampled
                    .then(|| sign_flip_p(&original.samples, &paired, cfg.resamples, seed)),
                p_holm: None,
            }
        })
        .collect();
    if !out.is_empty() && out.iter().all(|e| e.p_value.is_some()) {
        let p: Vec<f64> = out.iter().map(|e| e.p_value.unwrap_or(1.0)).collect();
        for (e, h) in out.iter_mut().zip(holm(&p)) {
            e.p_holm = Some(h);
        }
    }
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
    /// The sentence after which the rate changed most, and by how much (signed).
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
    let spans = sentence_spans(answer);
    let sents: Vec<String> = spans
        .iter()
        .map(|&(a, b)| answer[a..b].to_string())
        .collect();
    if sents.is_empty() {
        return Err(Error::Input(
            "the answer is empty: nothing to resample from".into(),
        ));
    }
    let mut ids = Vec::new();
    let mut prefixes = Vec::new();
    for k in 0..=sents.len() {
        // The answer verbatim up to the end of sentence k (its line breaks kept).
        let prefix = if k == 0 {
            String::new()
        } else {
            format!("{} ", &answer[..spans[k - 1].1])
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
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()));
    Ok(ResampleResult {
        behaviour: behaviour.describe(),
        boundaries,
        commits_at,
    })
}
