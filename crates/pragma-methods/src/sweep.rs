//! Steering sweeps: layers x scales, a behaviour metric beside a coherence cost, and
//! a norm-matched random vector as the control at every point.
//!
//! Behaviour metrics:
//! - log-odds of two answer sets at the position after each eval prompt:
//!   `logsumexp(log p(yes_i)) - logsumexp(log p(no_i))`, e.g. yes = `" Yes|Yes"`;
//! - optionally, on sampled continuations: the rate at which they match a regex, and a
//!   probe's mean score over their tokens (e.g. a sentiment probe from `pragma probe train`).
//!
//! Coherence costs: the KL divergence of the steered next-token distribution from the
//! unsteered one at the answer position, and (given a reference text) the change in
//! the reference text's mean negative log-likelihood per token under steering.

use candle_core::{DType, Device, Tensor, D};
use pragma_model::generate::{generate_items, GenerateOptions, Sampling};
use pragma_model::hooks::{Hooks, Positions};
use pragma_model::input::InputRule;
use pragma_model::llama::{log_softmax, Batch, Logits};
use pragma_model::tokenizer::ChatMessage;
use pragma_model::Model;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::probe::Probe;
use crate::stats::{bootstrap_ci, mean, XorShift};
use crate::steering::{side_ids, Operator, Side, SteeringVector};

/// One grid point, for the real vector or its random control.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    pub layer: usize,
    pub scale: f32,
    pub control: bool,
    /// Mean log-odds over prompts, with a bootstrap 95% CI.
    #[serde(with = "pragma_model::io::json_f64")]
    pub logodds: f64,
    #[serde(with = "pragma_model::io::json_f64::pair")]
    pub logodds_ci: (f64, f64),
    /// Per-prompt log-odds (in prompt order), for paired comparisons.
    #[serde(with = "pragma_model::io::json_f64::vec")]
    pub values: Vec<f64>,
    /// Mean KL(unsteered || steered) at the answer position, nats.
    #[serde(with = "pragma_model::io::json_f64")]
    pub kl: f64,
    /// Reference-text NLL per token minus the unsteered one, nats (when a text was given).
    pub dnll: Option<f64>,
    /// Fraction of sampled continuations matching the regex, with a bootstrap CI over prompts.
    pub regex_rate: Option<f64>,
    #[serde(default, with = "pragma_model::io::json_f64::opt_pair")]
    pub regex_ci: Option<(f64, f64)>,
    /// The probe's mean score over the generated tokens (P(positive) for a logistic
    /// probe), with a bootstrap CI over prompts.
    pub probe_score: Option<f64>,
    #[serde(default, with = "pragma_model::io::json_f64::opt_pair")]
    pub probe_ci: Option<(f64, f64)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sweep {
    pub yes: String,
    pub no: String,
    pub n_prompts: usize,
    /// Unsteered log-odds, with a bootstrap 95% CI.
    #[serde(with = "pragma_model::io::json_f64")]
    pub baseline: f64,
    #[serde(with = "pragma_model::io::json_f64::pair")]
    pub baseline_ci: (f64, f64),
    #[serde(with = "pragma_model::io::json_f64::vec")]
    pub baseline_values: Vec<f64>,
    /// Unsteered reference-text NLL per token.
    pub baseline_nll: Option<f64>,
    /// Unsteered regex match rate and probe score.
    pub baseline_regex: Option<f64>,
    pub baseline_probe: Option<f64>,
    pub regex: Option<String>,
    /// The probe's hook and method, when one was given.
    pub probe: Option<String>,
    pub points: Vec<Point>,
}

/// Behaviour metrics on sampled continuations: a regex match rate and/or a probe score.
#[derive(Clone, Debug)]
pub struct SampledMetrics {
    pub regex: Option<regex::Regex>,
    pub probe: Option<Probe>,
    /// Continuations per prompt.
    pub samples: usize,
    pub max_tokens: usize,
    pub temperature: f64,
}

/// What to measure besides the log-odds.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Answer sets, `|`-separated single-token strings (e.g. `" Yes|Yes"`).
    pub yes: String,
    pub no: String,
    /// Seed of the random controls, the bootstrap and sampling.
    pub seed: u64,
    /// Token ids of a reference text whose NLL measures coherence.
    pub reference: Option<Vec<u32>>,
    pub sampled: Option<SampledMetrics>,
    /// How the vector is applied (add by default; the scale multiplies it).
    pub operator: Operator,
}

impl SweepOptions {
    pub fn new(yes: &str, no: &str, seed: u64) -> Self {
        Self {
            yes: yes.into(),
            no: no.into(),
            seed,
            reference: None,
            sampled: None,
            operator: Operator::Add,
        }
    }
}

/// The single token id of an answer string (e.g. " Yes"), or an error naming it.
pub fn answer_token(model: &Model, s: &str) -> Result<u32> {
    let ids = model.tokenizer.encode(s, false)?;
    match ids.as_slice() {
        [id] => Ok(*id),
        _ => Err(Error::Input(format!(
            "answer '{s}' is {} tokens ({ids:?}); expected exactly one token",
            ids.len()
        ))),
    }
}

/// Token ids of a `|`-separated answer set such as `" Yes|Yes"`.
pub fn answer_set(model: &Model, spec: &str) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for s in spec.split('|').filter(|s| !s.is_empty()) {
        let id = answer_token(model, s)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(Error::Input(format!(
            "answer set '{spec}' is empty; expected e.g. \" Yes|Yes\""
        )));
    }
    Ok(ids)
}

/// Scores prompts by answer log-odds.
#[derive(Clone, Debug)]
pub struct Answers {
    pub yes: Vec<u32>,
    pub no: Vec<u32>,
}

impl Answers {
    pub fn new(model: &Model, yes: &str, no: &str) -> Result<Self> {
        let (y, n) = (answer_set(model, yes)?, answer_set(model, no)?);
        if y.iter().any(|t| n.contains(t)) {
            return Err(Error::Input(format!(
                "answer sets '{yes}' and '{no}' share a token"
            )));
        }
        Ok(Self { yes: y, no: n })
    }

    /// Per-row log-odds from last-position log-probabilities `[n, vocab]`.
    pub fn logodds(&self, lp: &Tensor) -> Result<Vec<f64>> {
        let rows: Vec<Vec<f32>> = lp.to_vec2()?;
        let lse = |r: &[f32], ids: &[u32]| {
            let v: Vec<f64> = ids.iter().map(|&i| r[i as usize] as f64).collect();
            let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
        };
        Ok(rows
            .iter()
            .map(|r| lse(r, &self.yes) - lse(r, &self.no))
            .collect())
    }

    /// Log-odds of each prompt under `hooks`, with the log-probabilities.
    pub fn score(
        &self,
        model: &Model,
        prompts: &[Vec<u32>],
        hooks: &Hooks,
    ) -> Result<(Vec<f64>, Tensor)> {
        let lp = last_logprobs(model, prompts, hooks)?;
        Ok((self.logodds(&lp)?, lp))
    }
}

/// Last-position log-probabilities `[n, vocab]` for prompts under `hooks`.
pub fn last_logprobs(model: &Model, prompts: &[Vec<u32>], hooks: &Hooks) -> Result<Tensor> {
    let mut out = Vec::new();
    for chunk in prompts.chunks(32) {
        let batch = Batch::new(chunk, model.device())?;
        let (logits, _) = model.transformer.forward(&batch, hooks, Logits::Last)?;
        let logits = logits.ok_or_else(|| Error::Input("no logits".into()))?;
        out.push(log_softmax(&logits)?);
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// Mean negative log-likelihood per predicted token of `ids` under `hooks`, nats.
pub fn nll(model: &Model, ids: &[u32], hooks: &Hooks) -> Result<f64> {
    if ids.len() < 2 {
        return Err(Error::Input(
            "reference text must be at least two tokens long".into(),
        ));
    }
    let batch = Batch::single(ids, model.device())?;
    let (logits, _) = model.transformer.forward(&batch, hooks, Logits::All)?;
    let logits = logits.ok_or_else(|| Error::Input("no logits".into()))?;
    let lp = log_softmax(&logits.squeeze(0)?)?; // [t, vocab]
    let t = ids.len();
    let targets = Tensor::from_vec(ids[1..].to_vec(), (t - 1, 1), model.device())?;
    let picked = lp.narrow(0, 0, t - 1)?.gather(&targets, 1)?; // [t-1, 1]
    Ok(-(picked.sum_all()?.to_scalar::<f32>()? as f64) / (t - 1) as f64)
}

/// Per prompt, over `m.samples` sampled continuations under `hooks`: the fraction that
/// match the regex, and the probe's mean score over the generated tokens.
#[allow(clippy::type_complexity)]
pub fn sampled_metrics(
    model: &Model,
    prompts: &[Vec<u32>],
    hooks: &Hooks,
    m: &SampledMetrics,
    seed: u64,
) -> Result<(Option<Vec<f64>>, Option<Vec<f64>>)> {
    let k = m.samples.max(1);
    let mut rows = Vec::new();
    for p in prompts {
        for _ in 0..k {
            rows.push(p.clone());
        }
    }
    let opts = GenerateOptions {
        max_tokens: m.max_tokens,
        sampling: Sampling {
            temperature: m.temperature,
            seed,
            ..Sampling::default()
        },
        stop_tokens: model.tokenizer.info.stop_tokens.clone(),
    };
    let mut hooks = hooks.clone();
    let point = match &m.probe {
        Some(p) => {
            let point = p.hook_point(model)?;
            hooks.capture(point);
            Some(point)
        }
        None => None,
    };
    let (mut matched, mut scores) = (Vec::new(), Vec::new());
    for (c, chunk) in rows.chunks(32).enumerate() {
        // Row i of the whole list samples from its own generator (seed, i).
        let items: Vec<u64> = (c * 32..c * 32 + chunk.len()).map(|i| i as u64).collect();
        let g = generate_items(&model.transformer, chunk, &items, &opts, &hooks, |_, _| {})?;
        for (r, toks) in g.tokens.iter().enumerate() {
            if let Some(re) = &m.regex {
                matched.push(f64::from(u8::from(
                    re.is_match(&model.tokenizer.decode(toks)?),
                )));
            }
            if let (Some(p), Some(point)) = (&m.probe, point) {
                // Activations of the generated tokens that were fed back (all but the last).
                let acts = g.cache.get_row(point, r)?;
                let from = chunk[r].len().min(acts.dim(0)?);
                let gen = acts.narrow(0, from, acts.dim(0)? - from)?;
                let s: Vec<f64> = if gen.dim(0)? == 0 {
                    Vec::new()
                } else {
                    p.score_rows(&gen)?
                        .into_iter()
                        .map(|x| p.probability(x).unwrap_or(x))
                        .collect()
                };
                scores.push(if s.is_empty() { f64::NAN } else { mean(&s) });
            }
        }
    }
    let per_prompt = |v: Vec<f64>| -> Vec<f64> {
        v.chunks(k)
            .map(|c| {
                let ok: Vec<f64> = c.iter().copied().filter(|x| x.is_finite()).collect();
                mean(&ok)
            })
            .collect()
    };
    Ok((
        m.regex.as_ref().map(|_| per_prompt(matched)),
        m.probe.as_ref().map(|_| per_prompt(scores)),
    ))
}

/// KL(p || q) per row for log-probabilities `[n, vocab]`.
pub fn kl_rows(lp: &Tensor, lq: &Tensor) -> Result<Vec<f64>> {
    let kl = (lp.exp()? * (lp - lq)?)?.sum(D::Minus1)?;
    Ok(kl.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
}

/// A random vector with the same norm as `v`, from a seeded normal.
pub fn norm_matched_random(v: &Tensor, seed: u64) -> Result<Tensor> {
    let d = v.dim(0)?;
    // A deterministic generator keeps controls identical across runs and machines.
    let mut rng = XorShift::new(seed, XorShift::SHUFFLE);
    let vals: Vec<f32> = (0..d)
        .map(|_| {
            // Box-Muller.
            let (u1, u2) = (rng.next_f64().max(1e-300), rng.next_f64());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect();
    let r = Tensor::from_vec(vals, d, &Device::Cpu)?;
    let norm = |t: &Tensor| -> Result<f32> { Ok(t.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?) };
    let scale = norm(&v.to_dtype(DType::F32)?)? / norm(&r)?.max(1e-12);
    Ok((r * scale as f64)?)
}

/// `vector` with layer `layer`'s direction replaced by its norm-matched random control.
pub fn random_control(vector: &SteeringVector, layer: usize, seed: u64) -> Result<SteeringVector> {
    let k = layer_index(vector, layer)?;
    let mut control = vector.clone();
    control.directions[k] = norm_matched_random(&vector.directions[k], seed ^ layer as u64)?;
    Ok(control)
}

fn layer_index(vector: &SteeringVector, layer: usize) -> Result<usize> {
    vector
        .meta
        .layers
        .iter()
        .position(|l| *l == layer)
        .ok_or_else(|| {
            Error::Input(format!(
                "layer {layer} is not in this vector (it has layers {:?})",
                vector.meta.layers
            ))
        })
}

/// Every metric of one hook set against the unsteered references.
struct Measured {
    values: Vec<f64>,
    /// Answer-position log-probabilities `[n, vocab]` (the KL reference for the grid).
    lp: Tensor,
    kl: f64,
    dnll: Option<f64>,
    regex: Option<Vec<f64>>,
    probe: Option<Vec<f64>>,
}

fn measure(
    model: &Model,
    prompts: &[Vec<u32>],
    hooks: &Hooks,
    answers: &Answers,
    base_lp: Option<&Tensor>,
    base_nll: Option<f64>,
    opts: &SweepOptions,
) -> Result<Measured> {
    let (values, lp) = answers.score(model, prompts, hooks)?;
    let kl = match base_lp {
        Some(b) => mean(&kl_rows(b, &lp)?),
        None => 0.0,
    };
    let dnll = match (&opts.reference, base_nll) {
        (Some(ids), Some(b)) => Some(nll(model, ids, hooks)? - b),
        _ => None,
    };
    let (regex, probe) = match &opts.sampled {
        Some(m) => sampled_metrics(model, prompts, hooks, m, opts.seed)?,
        None => (None, None),
    };
    Ok(Measured {
        values,
        lp,
        kl,
        dnll,
        regex,
        probe,
    })
}

/// Run the grid. `prompts` are token ids ending where the answer token would come.
pub fn sweep(
    model: &Model,
    vector: &SteeringVector,
    prompts: &[Vec<u32>],
    layers: &[usize],
    scales: &[f32],
    opts: &SweepOptions,
) -> Result<Sweep> {
    if prompts.is_empty() {
        return Err(Error::Input("no eval prompts".into()));
    }
    let answers = Answers::new(model, &opts.yes, &opts.no)?;
    for &l in layers {
        layer_index(vector, l)?;
    }
    let none = Hooks::new();
    let base_nll = match &opts.reference {
        Some(ids) => Some(nll(model, ids, &none)?),
        None => None,
    };
    let base = measure(model, prompts, &none, &answers, None, None, opts)?;
    let base_lp = &base.lp;
    let seed = opts.seed;
    let mut points = Vec::new();
    for &layer in layers {
        let control = random_control(vector, layer, seed)?;
        for &scale in scales {
            for (is_control, v) in [(false, vector), (true, &control)] {
                let hooks = v.hooks(
                    model,
                    opts.operator,
                    scale,
                    Some(&[layer]),
                    Positions::From(1),
                )?;
                let m = measure(
                    model,
                    prompts,
                    &hooks,
                    &answers,
                    Some(base_lp),
                    base_nll,
                    opts,
                )?;
                points.push(Point {
                    layer,
                    scale,
                    control: is_control,
                    logodds: mean(&m.values),
                    logodds_ci: bootstrap_ci(&m.values, 1000, seed),
                    values: m.values,
                    kl: m.kl,
                    dnll: m.dnll,
                    regex_rate: m.regex.as_ref().map(|r| mean(r)),
                    regex_ci: m.regex.as_ref().map(|r| bootstrap_ci(r, 1000, seed)),
                    probe_score: m.probe.as_ref().map(|r| mean(r)),
                    probe_ci: m.probe.as_ref().map(|r| bootstrap_ci(r, 1000, seed)),
                });
            }
        }
    }
    Ok(Sweep {
        yes: opts.yes.clone(),
        no: opts.no.clone(),
        n_prompts: prompts.len(),
        baseline: mean(&base.values),
        baseline_ci: bootstrap_ci(&base.values, 1000, seed),
        baseline_values: base.values,
        baseline_nll: base_nll,
        baseline_regex: base.regex.as_ref().map(|r| mean(r)),
        baseline_probe: base.probe.as_ref().map(|r| mean(r)),
        regex: opts
            .sampled
            .as_ref()
            .and_then(|m| m.regex.as_ref())
            .map(|r| r.as_str().to_string()),
        probe: opts
            .sampled
            .as_ref()
            .and_then(|m| m.probe.as_ref())
            .map(|p| format!("{} {} ({})", p.meta.method, p.meta.hook, p.meta.dataset)),
        points,
    })
}

impl Sweep {
    /// Read a `sweep.json` written by `pragma steer sweep`.
    pub fn load(path: &std::path::Path) -> Result<Sweep> {
        Ok(pragma_model::io::read_json(
            path,
            "a sweep.json from `pragma steer sweep`",
        )?)
    }

    /// A plain-text table: one row per layer x scale, vector beside control.
    pub fn table(&self) -> String {
        let mut s =
            format!(
            "log-odds log p({:?}) - log p({:?}) over {} prompts; unsteered {:+.3} [{:+.3}, {:+.3}]",
            self.yes, self.no, self.n_prompts, self.baseline, self.baseline_ci.0, self.baseline_ci.1
        );
        if let Some(n) = self.baseline_nll {
            s.push_str(&format!("; reference NLL {n:.3} nats/token"));
        }
        if let (Some(r), Some(p)) = (self.baseline_regex, &self.regex) {
            s.push_str(&format!("; /{p}/ rate {r:.2}"));
        }
        if let (Some(r), Some(p)) = (self.baseline_probe, &self.probe) {
            s.push_str(&format!("; probe {p} score {r:.3}"));
        }
        s.push('\n');
        let extra = |p: &Point| {
            let mut e = String::new();
            if let Some(d) = p.dnll {
                e.push_str(&format!(" dNLL {d:+.3}"));
            }
            if let (Some(r), Some((a, b))) = (p.regex_rate, p.regex_ci) {
                e.push_str(&format!(" rate {r:.2} [{a:.2}, {b:.2}]"));
            }
            if let (Some(r), Some((a, b))) = (p.probe_score, p.probe_ci) {
                e.push_str(&format!(" probe {r:.3} [{a:.3}, {b:.3}]"));
            }
            e
        };
        s.push_str("layer   scale | vector: log-odds [95% CI]  KL  | random control: log-odds [95% CI]  KL\n");
        for p in self.points.iter().filter(|p| !p.control) {
            let c = self
                .points
                .iter()
                .find(|c| c.control && c.layer == p.layer && c.scale == p.scale);
            let ctl = c
                .map(|c| {
                    format!(
                        "{:+8.3} [{:+.3}, {:+.3}]  {:.4}{}",
                        c.logodds,
                        c.logodds_ci.0,
                        c.logodds_ci.1,
                        c.kl,
                        extra(c)
                    )
                })
                .unwrap_or_default();
            s.push_str(&format!(
                "{:>5} {:>7.2} | {:+8.3} [{:+.3}, {:+.3}]  {:.4}{} | {}\n",
                p.layer,
                p.scale,
                p.logodds,
                p.logodds_ci.0,
                p.logodds_ci.1,
                p.kl,
                extra(p),
                ctl
            ));
        }
        s
    }
}

/// A prompt as token ids under `rule`: wrapped as a user turn with the assistant header
/// appended when `chat`, else the plain text.
pub fn prompt_ids(model: &Model, prompt: &str, chat: bool, rule: InputRule) -> Result<Vec<u32>> {
    let side = if chat {
        Side::Chat(vec![ChatMessage::new("user", prompt)])
    } else {
        Side::Text(prompt.to_string())
    };
    side_ids(model, &side, rule)
}

/// Eval prompts from JSONL lines `{"prompt": "..."}` (blank lines skipped), as token ids
/// ([`prompt_ids`]). Errors name the file and line: unreadable, invalid JSON, a line
/// without `"prompt"`, or no prompts at all.
pub fn read_prompts(
    model: &Model,
    path: &std::path::Path,
    chat: bool,
    rule: InputRule,
) -> Result<Vec<Vec<u32>>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let mut prompts = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let j: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            Error::Input(format!("{}:{}: invalid JSON: {e}", path.display(), i + 1))
        })?;
        let Some(p) = j.get("prompt").and_then(|p| p.as_str()) else {
            return Err(Error::Input(format!(
                "{}:{}: expected {{\"prompt\": \"...\"}}",
                path.display(),
                i + 1
            )));
        };
        prompts.push(prompt_ids(model, p, chat, rule)?);
    }
    if prompts.is_empty() {
        return Err(Error::Input(format!(
            "{}: no prompts found",
            path.display()
        )));
    }
    Ok(prompts)
}

/// A reference text file as token ids (plain text, trimmed), for the NLL coherence cost
/// ([`SweepOptions::reference`]). Errors: unreadable, or under 3 tokens.
pub fn read_reference(model: &Model, path: &std::path::Path, rule: InputRule) -> Result<Vec<u32>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let ids = prompt_ids(model, text.trim(), false, rule)?;
    if ids.len() < 3 {
        return Err(Error::Input(format!(
            "{}: reference text is empty",
            path.display()
        )));
    }
    Ok(ids)
}

/// Draw log-odds against scale, one line per layer, controls dashed, as SVG.
pub fn plot_svg(s: &Sweep, path: &std::path::Path) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: String| Error::Input(format!("plot {}: {e}", path.display()));
    let xs: Vec<f64> = s.points.iter().map(|p| p.scale as f64).collect();
    let ys: Vec<f64> = s
        .points
        .iter()
        .flat_map(|p| [p.logodds_ci.0, p.logodds_ci.1])
        .chain([s.baseline])
        .collect();
    let (x0, x1) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let (y0, y1) = ys
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
    let pad = ((y1 - y0) * 0.1).max(0.1);
    crate::plot::svg_atomic(path, (800, 500), |root| {
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("steering sweep: log p({:?}) - log p({:?})", s.yes, s.no),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0.min(x1)..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("scale")
            .y_desc("mean log-odds (95% CI)")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let mut layers: Vec<usize> = s.points.iter().map(|p| p.layer).collect();
        layers.dedup();
        for (i, &layer) in layers.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            for control in [false, true] {
                let pts: Vec<&Point> = s
                    .points
                    .iter()
                    .filter(|p| p.layer == layer && p.control == control)
                    .collect();
                let line: Vec<(f64, f64)> =
                    pts.iter().map(|p| (p.scale as f64, p.logodds)).collect();
                let label = if control {
                    format!("layer {layer} random control")
                } else {
                    format!("layer {layer}")
                };
                let style = if control {
                    color.mix(0.45).stroke_width(1)
                } else {
                    color.stroke_width(2)
                };
                chart
                    .draw_series(LineSeries::new(line, style))
                    .map_err(|e| err(e.to_string()))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
                chart
                    .draw_series(pts.iter().map(|p| {
                        PathElement::new(
                            vec![
                                (p.scale as f64, p.logodds_ci.0),
                                (p.scale as f64, p.logodds_ci.1),
                            ],
                            color.mix(if control { 0.45 } else { 1.0 }),
                        )
                    }))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        chart
            .draw_series(LineSeries::new(
                vec![(x0, s.baseline), (x1, s.baseline)],
                BLACK.mix(0.5),
            ))
            .map_err(|e| err(e.to_string()))?
            .label("unsteered")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.5)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        Ok(())
    })
}
