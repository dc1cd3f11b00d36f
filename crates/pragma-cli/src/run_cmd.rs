//! `pragma generate | demo`: running the model on a prompt, with interventions and
//! per-token probe monitors; the prompt, sampling and intervention flags that `trace`,
//! `tokenize` and `transcripts score` share.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::Tensor;
use clap::Args;
use pragma_model::generate::{generate, GenerateOptions, Sampling};
use pragma_model::hooks::{HookPoint, Hooks, Positions};
use pragma_model::input::{InputRule, ModelInput, Prompt};
use pragma_model::llama::{Batch, Logits};
use pragma_model::tokenizer::ChatMessage;
use pragma_model::{Model, DEFAULT_MODEL};

use crate::input_args::InputArgs;

#[derive(Args, Clone)]
pub struct PromptArgs {
    /// The prompt text.
    #[arg(long, short)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat (default: the template's own).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    #[command(flatten)]
    pub input: InputArgs,
}

#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f64,
    /// Nucleus sampling threshold in (0, 1].
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f64,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args, Clone)]
pub struct InterventionArgs {
    /// Zero the activations at these hooks (pattern, e.g. 'blocks.3.hook_mlp_out' or
    /// 'blocks.*.attn.hook_z').
    #[arg(long, value_name = "PATTERN")]
    pub ablate: Option<String>,
    /// Activation addition from one contrastive pair (Turner et al.): add the difference of
    /// the residual stream at --actadd-layer (last token) between this text and
    /// --actadd-neg, e.g. --actadd 'I want to talk about the ocean' --actadd-neg 'I want
    /// to talk about the'. SmolLM2's residual norms are ~100: scales of 0.2-0.5 steer,
    /// larger ones break fluency.
    #[arg(long, value_name = "TEXT", requires = "actadd_neg")]
    pub actadd: Option<String>,
    /// The text whose residual is subtracted for --actadd.
    #[arg(long, value_name = "TEXT")]
    pub actadd_neg: Option<String>,
    /// Layer whose hook_resid_post receives the --actadd vector (negative counts from the end).
    #[arg(long, default_value_t = 12, allow_negative_numbers = true)]
    pub actadd_layer: i64,
    /// Scale of the --actadd vector (negative subtracts it).
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    pub actadd_scale: f32,
    /// Which positions the intervention (--ablate, --actadd, --steer) touches:
    /// `from:N` (token N on, prompt and generated; the default from:1 skips position 0,
    /// an attention sink with outsized activations), `all`, `last` (the last position of
    /// each forward: the final prompt token, then each new token), `N..M`, `N`,
    /// `generated` (only tokens produced by generation; note that the first answer
    /// token is computed at the last prompt position, so `generated` never changes it),
    /// or `last-prompt+generated` (the last prompt token and every generated token:
    /// answer-only steering that also moves the first answer token; during generation
    /// this is the same set of positions as `last`, named for what it is).
    #[arg(long, default_value = "from:1")]
    pub positions: String,
}

#[derive(Args)]
pub struct GenerateArgs {
    #[arg(default_value = DEFAULT_MODEL)]
    pub model: String,
    #[command(flatten)]
    pub prompt: PromptArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub intervention: InterventionArgs,
    #[command(flatten)]
    pub steer: crate::steer_cmd::SteerArgs,
    #[command(flatten)]
    pub sae: crate::sae_cmd::SpliceArgs,
    /// Probe file (from `pragma probe train`) to run as a monitor: per-token scores of the
    /// prompt's end and every generated token, coloured in a terminal (repeatable).
    #[arg(long = "monitor", value_name = "PROBE")]
    pub monitors: Vec<PathBuf>,
    /// Save the monitors' per-token scores as JSON.
    #[arg(long)]
    pub monitor_out: Option<PathBuf>,
}

#[derive(Args)]
pub struct DemoArgs {
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
}

pub fn load(spec: &str) -> Result<Model> {
    let t = std::time::Instant::now();
    let model = Model::load(spec, &mut |msg| eprintln!("{msg}"))?;
    eprintln!(
        "loaded {} ({}, {} layers, d_model {}) in {:.1}s",
        model.info.name.as_deref().unwrap_or(spec),
        model.info.format,
        model.cfg().n_layers,
        model.cfg().d_model,
        t.elapsed().as_secs_f64()
    );
    Ok(model)
}

/// The prompt as model input (chat-templated if asked), built under `rule`.
pub fn prompt_input(model: &Model, p: &PromptArgs, rule: InputRule) -> Result<ModelInput> {
    let mut msgs = Vec::new();
    if let Some(s) = &p.system {
        msgs.push(ChatMessage::new("system", s));
    }
    msgs.push(ChatMessage::new("user", &p.prompt));
    let prompt = if p.chat {
        Prompt::chat(&msgs)
    } else {
        Prompt::Text(&p.prompt)
    };
    let input = model.tokenizer.build_input(&prompt, rule)?;
    if input.ids.is_empty() {
        bail!("the prompt is empty: expected at least one token");
    }
    Ok(input)
}

pub fn build_hooks(model: &Model, iv: &InterventionArgs, rule: InputRule) -> Result<Hooks> {
    let n = model.cfg().n_layers;
    let positions = Positions::parse(&iv.positions)?;
    let mut hooks = Hooks::new();
    if let Some(pat) = &iv.ablate {
        for p in HookPoint::resolve_pattern(pat, n)? {
            hooks.zero(p, positions.clone());
        }
    }
    if let Some(pos_text) = &iv.actadd {
        let layer = HookPoint::parse(&format!("blocks.{}.hook_resid_post", iv.actadd_layer), n)?;
        let neg = iv.actadd_neg.as_deref().unwrap_or_default();
        let vec = actadd_vector(model, layer, pos_text, neg, rule)?;
        hooks.add(layer, vec, iv.actadd_scale, positions);
    }
    Ok(hooks)
}

/// Residual at `point` for the last token of `pos` minus that of `neg`: `[d_model]`.
fn actadd_vector(
    model: &Model,
    point: HookPoint,
    pos: &str,
    neg: &str,
    rule: InputRule,
) -> Result<Tensor> {
    let last = |text: &str, flag: &str| -> Result<Tensor> {
        // Built like the prompt it steers (by default BOS first, so the text's last token
        // is not the attention-sink position 0).
        if text.is_empty() {
            bail!(
                "{flag} is empty: its last token would be the BOS (an attention sink with \
                 outsized activations) or nothing; give a text, e.g. --actadd-neg 'I want to talk about the'"
            );
        }
        let ids = model.tokenizer.build_input(&Prompt::Text(text), rule)?.ids;
        let mut hooks = Hooks::new();
        hooks.capture(point);
        let batch = Batch::single(&ids, model.device())?;
        let (_, cache) = model.transformer.forward(&batch, &hooks, Logits::None)?;
        let act = cache.get(point)?; // [1, pos, d]
        Ok(act.get(0)?.get(ids.len() - 1)?)
    };
    Ok((last(pos, "--actadd")? - last(neg, "--actadd-neg")?)?)
}

fn sampling(s: &SamplingArgs, model: &Model) -> GenerateOptions {
    GenerateOptions {
        max_tokens: s.max_tokens,
        sampling: Sampling {
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k,
            seed: s.seed,
        },
        stop_tokens: model.tokenizer.info.stop_tokens.clone(),
    }
}

/// Generate and stream the text to stdout; returns the text.
fn run_generation(
    model: &Model,
    ids: &[u32],
    opts: &GenerateOptions,
    hooks: &Hooks,
) -> Result<(String, pragma_model::generate::Generation)> {
    let mut out = Vec::new();
    let mut printed = 0usize;
    let stdout = std::io::stdout();
    let t = std::time::Instant::now();
    let stops = opts.stop_tokens.clone();
    let gen = generate(
        &model.transformer,
        &[ids.to_vec()],
        opts,
        hooks,
        |_, tok| {
            if stops.contains(&tok) {
                return;
            }
            out.push(tok);
            if let Ok(text) = model.tokenizer.decode(&out) {
                // Print only whole characters: hold back a trailing replacement char.
                if !text.ends_with('\u{FFFD}') && text.len() > printed {
                    let mut lock = stdout.lock();
                    let _ = write!(lock, "{}", &text[printed..]);
                    let _ = lock.flush();
                    printed = text.len();
                }
            }
        },
    )?;
    let text = model.tokenizer.decode(&out)?;
    if text.len() > printed {
        print!("{}", &text[printed..]);
    }
    println!();
    let n = gen.tokens[0].len();
    eprintln!(
        "[{} tokens, {:.1} tok/s, stop: {:?}]",
        n,
        n as f64 / t.elapsed().as_secs_f64(),
        gen.stop[0]
    );
    Ok((text, gen))
}

pub fn cmd_generate(a: GenerateArgs) -> Result<()> {
    let model = load(&a.model)?;
    // Vectors and probes were made from inputs built one way: build this prompt the same way.
    let mut artifacts = crate::steer_cmd::vector_rules(&a.steer)?;
    for path in &a.monitors {
        let p = pragma_methods::probe::Probe::load(path)?;
        artifacts.push((path.display().to_string(), p.meta.input));
    }
    let rule = a.prompt.input.rule(&model, &artifacts)?;
    let ids = prompt_input(&model, &a.prompt, rule)?.ids;
    let opts = sampling(&a.sampling, &model);
    opts.sampling.validate()?;
    let mut hooks = build_hooks(&model, &a.intervention, rule)?;
    let positions = Positions::parse(&a.intervention.positions)?;
    hooks.extend(&crate::steer_cmd::steering_hooks(
        &model,
        &a.steer,
        positions.clone(),
    )?);
    if let Some((_, h)) = a.sae.hooks(&model, positions)? {
        hooks.extend(&h);
    }
    let mut probes = Vec::new();
    for path in &a.monitors {
        let p = pragma_methods::probe::Probe::load(path)?;
        let point = p.hook_point(&model)?;
        hooks.capture(point);
        probes.push((path.clone(), p, point));
    }
    let (_, gen) = run_generation(&model, &ids, &opts, &hooks)?;
    let mut monitors = Vec::new();
    for (path, p, point) in &probes {
        let mut all = ids.clone();
        all.extend(&gen.tokens[0]);
        let acts = gen.cache.get_row(*point, 0)?; // the last token was never fed back
        let n = acts.dim(0)?;
        let m = crate::probe_cmd::monitor_scores(&model, p, path, &acts, &all[..n], ids.len())?;
        crate::probe_cmd::print_monitor(&m, true);
        monitors.push(m);
    }
    if let Some(out) = &a.monitor_out {
        pragma_model::io::write_json(out, &monitors)?;
    }
    Ok(())
}

pub fn cmd_demo(a: DemoArgs) -> Result<()> {
    let model = load(&a.model)?;
    crate::info_cmd::print_info(&model);
    let n = model.cfg().n_layers;
    println!("\n{} hook points, e.g.:", HookPoint::all(n).len());
    for p in [
        HookPoint::Embed,
        HookPoint::ResidPre(0),
        HookPoint::AttnQ(0),
        HookPoint::AttnPattern(0),
        HookPoint::MlpPost(0),
        HookPoint::ResidPost(n - 1),
        HookPoint::LnFinal,
    ] {
        println!("  {:<30} {}", p.to_string(), p.shape_doc());
    }
    let prompt = PromptArgs {
        prompt: "Write one sentence about your favourite place.".into(),
        chat: true,
        system: None,
        input: InputArgs::default(),
    };
    let rule = prompt.input.rule(&model, &[])?;
    let ids = prompt_input(&model, &prompt, rule)?.ids;
    let opts = GenerateOptions {
        max_tokens: 48,
        sampling: Sampling::default(),
        stop_tokens: model.tokenizer.info.stop_tokens.clone(),
    };
    println!("\nprompt (chat): {}", prompt.prompt);
    println!("\n--- unsteered (greedy) ---");
    run_generation(&model, &ids, &opts, &Hooks::new())?;

    let iv = InterventionArgs {
        ablate: None,
        actadd: Some("I want to talk about the ocean".into()),
        actadd_neg: Some("I want to talk about the".into()),
        actadd_layer: 12,
        actadd_scale: 0.3,
        positions: "from:1".into(),
    };
    println!(
        "\n--- with an intervention: add 0.3 x (resid('...about the ocean') - resid('...about the')) \
         at blocks.12.hook_resid_post, positions from:1 ---"
    );
    let hooks = build_hooks(&model, &iv, rule)?;
    run_generation(&model, &ids, &opts, &hooks)?;
    println!(
        "\nTry: pragma generate --chat --prompt '...' --actadd 'I love this' --actadd-neg 'I hate this' \
         --actadd-layer 12 --actadd-scale 0.3"
    );
    Ok(())
}
