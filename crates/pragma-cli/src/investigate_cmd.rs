//! `pragma patch` and `pragma lens`: activation patching, the logit lens and direct
//! logit attribution. Parsing and printing only; the methods are in
//! `pragma_methods::investigate`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pragma_methods::investigate::{
    self, direct_logit_attribution, logit_lens, LogitDiff, PatchConfig, PatchDirection, PatchSite,
};
use pragma_model::input::Prompt;
use pragma_model::{Model, DEFAULT_MODEL};

use crate::input_args::InputArgs;

/// Parse `logit-diff:" Yes"," No"` (quotes optional; a leading space is part of a token).
fn parse_metric(model: &Model, s: &str) -> Result<LogitDiff> {
    let rest = s.strip_prefix("logit-diff:").with_context(|| {
        format!("--metric {s}: expected logit-diff:GOOD,BAD, e.g. logit-diff:\" Yes\",\" No\"")
    })?;
    let unquote = |x: &str| -> String {
        let x = x.trim_matches('\n');
        x.strip_prefix('"')
            .and_then(|y| y.strip_suffix('"'))
            .unwrap_or(x)
            .to_string()
    };
    // `"GOOD","BAD"`: the first answer's closing quote is the first `","` after its
    // opening quote (so an answer may itself start with a comma).
    let (good, bad) = if let Some(i) = rest
        .get(1..)
        .filter(|_| rest.starts_with('"'))
        .and_then(|r| r.find("\",\""))
        .map(|i| i + 1)
    {
        (unquote(&rest[..=i]), unquote(&rest[i + 2..]))
    } else {
        let (a, b) = rest
            .split_once(',')
            .with_context(|| format!("--metric {s}: expected two answers separated by a comma"))?;
        (unquote(a), unquote(b))
    };
    if good.starts_with(' ') != bad.starts_with(' ') {
        eprintln!(
            "note: {good:?} and {bad:?} differ in their leading space (\" Yes\" and \"Yes\" are \
             different tokens); quote both, e.g. logit-diff:\" Yes\",\" No\""
        );
    }
    Ok(LogitDiff::new(model, &good, &bad)?)
}

fn ids(model: &Model, input: &InputArgs, text: &str, chat: bool) -> Result<Vec<u32>> {
    let rule = input.rule(model, &[])?;
    let msgs;
    let prompt = if chat {
        msgs = vec![pragma_model::tokenizer::ChatMessage::new("user", text)];
        Prompt::chat(&msgs)
    } else {
        Prompt::Text(text)
    };
    Ok(model.tokenizer.build_input(&prompt, rule)?.ids)
}

#[derive(Args)]
pub struct PatchArgs {
    /// The prompt on which the model shows the behaviour.
    #[arg(long)]
    clean: String,
    /// The same prompt with the cause changed; the same number of tokens.
    #[arg(long)]
    corrupt: String,
    /// What to measure at the last position: logit-diff:GOOD,BAD with two single-token
    /// answers, e.g. logit-diff:" Mary"," John" (mind the leading space).
    #[arg(long)]
    metric: String,
    /// Sites to sweep, comma-separated: resid (blocks.L.hook_resid_pre x position), attn
    /// (hook_attn_out x position), mlp (hook_mlp_out x position), heads (attn.hook_z of
    /// one head at every position: layer x head).
    #[arg(long, default_value = "resid")]
    hooks: String,
    /// denoise: run the corrupt prompt with one clean activation (what suffices to
    /// restore the behaviour); noise: the clean prompt with one corrupt activation (what
    /// is necessary for it).
    #[arg(long, default_value = "denoise", value_parser = ["denoise", "noise"])]
    direction: String,
    /// Wrap both prompts as a user message in the chat template.
    #[arg(long)]
    chat: bool,
    /// Patched runs per batched forward.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// patching (one forward per patch), attribution (attribution patching: the
    /// first-order estimate of every patch from one forward and backward per prompt), or
    /// both (and the correlation between them per site).
    #[arg(long, default_value = "patching", value_parser = ["patching", "attribution", "both"])]
    method: String,
    /// Write the heatmaps here (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print the result as JSON (raw and normalised grids).
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    #[command(flatten)]
    input: InputArgs,
}

pub fn cmd_patch(a: PatchArgs) -> Result<()> {
    let model = Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
    let metric = parse_metric(&model, &a.metric)?;
    let sites = a
        .hooks
        .split(',')
        .map(|s| PatchSite::parse(s.trim()))
        .collect::<pragma_methods::Result<Vec<_>>>()?;
    let cfg = PatchConfig {
        clean: ids(&model, &a.input, &a.clean, a.chat)?,
        corrupt: ids(&model, &a.input, &a.corrupt, a.chat)?,
        metric,
        sites,
        direction: if a.direction == "noise" {
            PatchDirection::Noise
        } else {
            PatchDirection::Denoise
        },
        batch: a.batch,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("patching {bar:30} {pos}/{len} runs  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let out = investigate::attribution::patch_with(
        &model,
        &cfg,
        investigate::attribution::PatchMethod::parse(&a.method)?,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    let r = out.result;
    crate::runs_cmd::set_result(&r);
    if let Some(atp) = &out.attribution {
        for (exact, corr) in r.grids.iter().zip(&out.correlations) {
            eprintln!(
                "{}: attribution vs patching r = {corr:.3} ({} cells; attribution took {:.2} s, patching {:.1} s)",
                exact.hook,
                exact.normalized.iter().map(Vec::len).sum::<usize>(),
                atp.seconds,
                r.seconds
            );
        }
    }
    if let Some(p) = &a.plot {
        investigate::plot::patch_svg(&r, p)?;
        eprintln!("wrote {}", p.display());
    }
    if a.json {
        match &out.attribution {
            Some(atp) => println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"patching": r, "attribution": atp})
                )?
            ),
            None => println!("{}", serde_json::to_string_pretty(&r)?),
        }
        return Ok(());
    }
    println!(
        "metric logit[{:?}] - logit[{:?}]: clean {:.3}, corrupt {:.3} ({} patched runs in {:.1} s, {:?})",
        r.metric.good_text, r.metric.bad_text, r.clean_metric, r.corrupt_metric, r.runs, r.seconds, r.direction
    );
    for g in &r.grids {
        println!("\n{} (normalised: 0 = corrupt, 1 = clean)", g.hook);
        // The strongest cells first.
        let mut cells: Vec<(usize, usize, f64)> = g
            .normalized
            .iter()
            .enumerate()
            .flat_map(|(l, row)| row.iter().enumerate().map(move |(c, v)| (l, c, *v)))
            .collect();
        cells.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
        for (l, c, v) in cells.iter().take(8) {
            println!(
                "  layer {l:>2}  {:<14} {v:+.3}",
                format!("{:?}", g.columns[*c])
            );
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct LensArgs {
    /// The prompt; the lens and attribution read its last position.
    #[arg(long, short)]
    prompt: String,
    /// A logit difference to follow through the layers and attribute: logit-diff:GOOD,BAD.
    #[arg(long)]
    metric: Option<String>,
    /// Tokens to show per layer.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Wrap the prompt as a user message in the chat template.
    #[arg(long)]
    chat: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    #[command(flatten)]
    input: InputArgs,
}

pub fn cmd_lens(a: LensArgs) -> Result<()> {
    let model = Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
    let ids = ids(&model, &a.input, &a.prompt, a.chat)?;
    let metric = a
        .metric
        .as_deref()
        .map(|m| parse_metric(&model, m))
        .transpose()?;
    let lens = logit_lens(&model, &ids, metric.as_ref(), a.top)?;
    let dla = metric
        .as_ref()
        .map(|m| direct_logit_attribution(&model, &ids, m))
        .transpose()?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"logit_lens": lens, "dla": dla}))?
        );
        return Ok(());
    }
    println!(
        "logit lens at the last position ({:?}):",
        lens.tokens.last().map(String::as_str).unwrap_or("")
    );
    for l in &lens.layers {
        let top: Vec<String> = l.top.iter().map(|(t, p)| format!("{t:?} {p:.2}")).collect();
        match l.logit_diff {
            Some(d) => println!("  {:<26} diff {d:+7.3}  {}", l.hook, top.join("  ")),
            None => println!("  {:<26} {}", l.hook, top.join("  ")),
        }
    }
    if let Some(d) = dla {
        println!(
            "\ndirect logit attribution of logit[{:?}] - logit[{:?}] = {:.3} (components sum to {:.3}; final norm scale frozen at {:.3}):",
            d.metric.good_text, d.metric.bad_text, d.logit_diff, d.sum_of_components, d.final_scale
        );
        let mut comps = d.components.clone();
        comps.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        for (name, v) in comps.iter().take(8) {
            println!("  {name:<14} {v:+.3}");
        }
        if let Some(heads) = &d.heads {
            let mut hs: Vec<(usize, usize, f64)> = heads
                .iter()
                .enumerate()
                .flat_map(|(l, row)| row.iter().enumerate().map(move |(h, v)| (l, h, *v)))
                .collect();
            hs.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
            println!("  heads:");
            for (l, h, v) in hs.iter().take(8) {
                println!("    L{l}H{h:<3} {v:+.3}");
            }
        }
    }
    Ok(())
}

/// The behaviour flags shared by `counterfactual` and `resample`.
#[derive(Args)]
pub struct BehaviourArgs {
    /// An exact behaviour: logit-diff:GOOD,BAD of the next token.
    #[arg(long, conflicts_with = "regex")]
    metric: Option<String>,
    /// A sampled behaviour: the rate at which continuations match this regex.
    #[arg(long, conflicts_with = "probe")]
    regex: Option<String>,
    /// An exact behaviour: this probe's score at the last position (a file from `pragma
    /// probe train`).
    #[arg(long, conflicts_with = "metric")]
    probe: Option<PathBuf>,
    /// Continuations per variant for --regex.
    #[arg(long, default_value_t = 32)]
    samples: usize,
    /// Tokens per continuation for --regex.
    #[arg(long, default_value_t = 24)]
    max_tokens: usize,
    /// Sampling temperature for --regex.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Seed of the samples and of the bootstrap / permutation resamples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Bootstrap and permutation resamples.
    #[arg(long, default_value_t = 2000)]
    resamples: usize,
}

impl BehaviourArgs {
    fn behaviour(&self, model: &Model) -> Result<counterfactual::Behaviour> {
        match (&self.metric, &self.regex) {
            _ if self.probe.is_some() => {
                let p = self.probe.as_ref().expect("checked");
                let probe = pragma_methods::probe::Probe::load(p)
                    .with_context(|| format!("--probe {}", p.display()))?;
                Ok(counterfactual::Behaviour::Probe(std::sync::Arc::new(probe)))
            }
            (Some(m), None) => Ok(counterfactual::Behaviour::LogitDiff(parse_metric(model, m)?)),
            (None, Some(r)) => Ok(counterfactual::Behaviour::Regex {
                pattern: regex::Regex::new(r).with_context(|| format!("--regex {r}"))?,
                samples: self.samples,
                max_tokens: self.max_tokens,
                temperature: self.temperature,
            }),
            _ => anyhow::bail!(
                "expected a behaviour: --metric logit-diff:GOOD,BAD or --probe FILE (exact), or --regex PATTERN (sampled)"
            ),
        }
    }
}

use pragma_methods::investigate::counterfactual;

#[derive(Args)]
pub struct CounterfactualArgs {
    /// The prompt.
    #[arg(long, short)]
    prompt: String,
    /// A span of the prompt to test (repeatable); default: each sentence.
    #[arg(long)]
    segment: Vec<String>,
    /// Replace each segment with this text instead of deleting it (a control: a neutral
    /// sentence of similar length).
    #[arg(long, conflicts_with = "alternative")]
    filler: Option<String>,
    /// SEGMENT=>TEXT: replace that segment with TEXT (repeatable: several alternatives
    /// per segment are averaged). Segments named here are the ones tested.
    #[arg(long)]
    alternative: Vec<String>,
    #[command(flatten)]
    behaviour: BehaviourArgs,
    /// Render each variant as a user message in the chat template.
    #[arg(long)]
    chat: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    #[command(flatten)]
    input: InputArgs,
}

pub fn cmd_counterfactual(a: CounterfactualArgs) -> Result<()> {
    let model = Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
    let mut segments = a.segment.clone();
    let replacement = if !a.alternative.is_empty() {
        let mut alts: Vec<Vec<String>> = vec![Vec::new(); segments.len()];
        for x in &a.alternative {
            let (seg, text) = x
                .split_once("=>")
                .with_context(|| format!("--alternative {x:?}: expected SEGMENT=>TEXT"))?;
            match segments.iter().position(|s| s == seg) {
                Some(i) => alts[i].push(text.to_string()),
                None => {
                    segments.push(seg.to_string());
                    alts.push(vec![text.to_string()]);
                }
            }
        }
        anyhow::ensure!(
            alts.iter().all(|a| !a.is_empty()),
            "every --segment needs an --alternative when alternatives are given"
        );
        counterfactual::Replacement::Alternatives(alts)
    } else if let Some(f) = &a.filler {
        counterfactual::Replacement::Filler(f.clone())
    } else {
        counterfactual::Replacement::Remove
    };
    let cfg = counterfactual::SegmentsConfig {
        prompt: a.prompt.clone(),
        segments,
        replacement,
        behaviour: a.behaviour.behaviour(&model)?,
        chat: a.chat,
        rule: a.input.rule(&model, &[])?,
        seed: a.behaviour.seed,
        resamples: a.behaviour.resamples,
    };
    let r = counterfactual::segments(&model, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("{}: {:.3} on the whole prompt", r.behaviour, r.original);
    let how = match &cfg.replacement {
        counterfactual::Replacement::Remove => "removing it",
        _ => "replacing it",
    };
    println!("segments by effect ({how} changes the behaviour by):");
    for s in &r.segments {
        let stats = match (s.ci, s.p_value) {
            (Some((lo, hi)), Some(p)) => {
                let holm = s.p_holm.unwrap_or(p);
                let verdict = if holm < 0.05 { "" } else { "  (within noise)" };
                format!(
                    "  95% CI [{lo:+.3}, {hi:+.3}], sign-flip p = {p:.3} (Holm {holm:.3}){verdict}"
                )
            }
            _ => "  (exact)".to_string(),
        };
        println!("  {:+.3}{stats}  {:?}", s.effect, s.segment);
    }
    Ok(())
}

#[derive(Args)]
pub struct ResampleArgs {
    /// The user message.
    #[arg(long, short)]
    prompt: String,
    /// The model's answer to resample from (each sentence boundary).
    #[arg(long)]
    answer: String,
    #[command(flatten)]
    behaviour: BehaviourArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    #[command(flatten)]
    input: InputArgs,
}

pub fn cmd_resample(a: ResampleArgs) -> Result<()> {
    let model = Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
    let r = counterfactual::resample(
        &model,
        &a.prompt,
        &a.answer,
        &a.behaviour.behaviour(&model)?,
        a.input.rule(&model, &[])?,
        a.behaviour.seed,
        a.behaviour.resamples,
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("{} after each sentence of the answer:", r.behaviour);
    for b in &r.boundaries {
        let kept = match b.sentences {
            0 => "no sentence kept".to_string(),
            k => format!("after sentence {k}"),
        };
        println!(
            "  {kept:<18}  {:.3}  95% CI [{:.3}, {:.3}]  {:?}",
            b.rate, b.ci.0, b.ci.1, b.last_sentence
        );
    }
    if let Some((k, jump)) = r.commits_at {
        println!("largest change: {jump:+.3} after sentence {k}");
    }
    Ok(())
}
