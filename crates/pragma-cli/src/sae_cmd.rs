//! `pragma sae ...` and the `--sae` flags of generate/trace: parse, call the library,
//! present.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pragma_methods::sae::training::{self, LogLine, StoreHook, TrainConfig};
use pragma_methods::sae::{Arch, LatentEdit, Sae, Splice};
use pragma_model::hooks::{Hooks, Positions};
use pragma_model::{Model, DEFAULT_MODEL};

use crate::input_args::InputArgs;

#[derive(Subcommand)]
pub enum SaeCommand {
    /// Train a sparse autoencoder on one hook of an activation store (from `pragma cache`),
    /// reading seeded shuffled batches from its shards. Resumable: run the same command
    /// again after an interruption. Writes a SAELens folder (cfg.json,
    /// sae_weights.safetensors, sparsity.safetensors), log.jsonl and loss.svg. The
    /// objective and defaults are in docs/SAE.md.
    Train(TrainArgs),
    /// The most active latents at each token of a text.
    Latents(LatentsArgs),
    /// Evaluate an SAE on held-out activations of a store: explained variance / FVU, MSE,
    /// cosine, L2 ratio, shrinkage, L0, L1, dead and dense latents, the density histogram;
    /// and, with the model, the cross-entropy with the SAE spliced in (ce_loss_score, delta
    /// CE, KL). Writes eval.json and eval.md. Definitions: docs/SAE.md.
    Eval(EvalArgs),
    /// Feature dashboards: static HTML (opens from disk, no network) with each latent's top
    /// activating contexts, samples from activation intervals, histogram and density, the
    /// tokens its decoder row promotes and suppresses, and its explanation if given. One
    /// pass over the store.
    Dashboard(DashboardArgs),
}

#[derive(Args)]
pub struct DashboardArgs {
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
    /// SAE folder (SAELens or sparsify).
    #[arg(long)]
    sae: PathBuf,
    /// Activation store with the SAE's hook.
    #[arg(long)]
    store: PathBuf,
    /// Store tokens read at most.
    #[arg(long, default_value_t = 1_000_000)]
    max_tokens: u64,
    /// JSON {"LATENT": "explanation"} shown on the cards.
    #[arg(long)]
    explanations: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (index.html + latents/).
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args)]
pub struct EvalArgs {
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
    /// SAE folder (SAELens or sparsify).
    #[arg(long)]
    sae: PathBuf,
    /// Held-out activation store with the SAE's hook (from `pragma cache`; use other
    /// documents than the training store's).
    #[arg(long, required_unless_present = "data", conflicts_with = "data")]
    store: Option<PathBuf>,
    /// Or a corpus (.txt, .jsonl or a built-in name such as fortunes): cached at the SAE's
    /// hook into OUT/eval-store first (resumable), then evaluated.
    #[arg(long)]
    data: Option<String>,
    /// Tokens evaluated at most (density statistics want 1M or more).
    #[arg(long, default_value_t = 1_000_000)]
    max_tokens: u64,
    /// Sequences of the store run through the model for the loss metrics (0 skips them).
    #[arg(long, default_value_t = 64)]
    ce_sequences: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Folder for eval.json and eval.md (default: the SAE folder).
    #[arg(long, short)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Activation store: a folder made by `pragma cache`, or an s3:// URL (its shards
    /// are downloaded once into the local cache, checked against their sha256).
    #[arg(long)]
    store: PathBuf,
    /// Hook to train on, e.g. blocks.15.hook_resid_post (one of the store's hooks). For
    /// one job per hook on a cluster: several, comma-separated, with --hook-index.
    #[arg(long)]
    hook: String,
    /// Train the I-th of the --hook list (0-based), into OUT/HOOK: one array task per
    /// hook. `auto` takes I from SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX or
    /// PRAGMA_SHARD_INDEX.
    #[arg(long, value_name = "I|auto")]
    hook_index: Option<String>,
    /// topk, batchtopk, jumprelu or relu.
    #[arg(long, default_value = "topk")]
    arch: String,
    /// Latents per token for topk/batchtopk.
    #[arg(long, default_value_t = 32)]
    k: usize,
    /// Width as a multiple of d_in (ignored with --d-sae).
    #[arg(long, default_value_t = 8)]
    expansion: usize,
    /// Width in latents.
    #[arg(long)]
    d_sae: Option<usize>,
    /// Training tokens (the store is cycled, reshuffled per epoch, when it has fewer).
    #[arg(long, default_value_t = 2_000_000)]
    tokens: u64,
    /// Tokens per optimiser step.
    #[arg(long, default_value_t = 4096)]
    batch_tokens: usize,
    /// Adam learning rate (default 2e-4 / sqrt(d_sae / 2^14)).
    #[arg(long)]
    lr: Option<f64>,
    /// L1 (relu) or L0 (jumprelu) coefficient (default: 5 for relu, 0.01 for jumprelu).
    #[arg(long)]
    lambda: Option<f32>,
    /// Matryoshka SAE: nested prefix widths, e.g. 512,2048 (each prefix of the dictionary
    /// also reconstructs the input; topk/batchtopk; Bussmann et al. 2025).
    #[arg(long, value_delimiter = ',')]
    matryoshka: Vec<usize>,
    /// AuxK: a latent is dead after this many tokens without firing (default min(10M, tokens/4)).
    #[arg(long)]
    dead_tokens: Option<u64>,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 50)]
    checkpoint_every: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Output folder (an interrupted run there resumes).
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args)]
pub struct LatentsArgs {
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
    /// SAE folder (SAELens or sparsify).
    #[arg(long)]
    sae: PathBuf,
    /// Text to read.
    #[arg(long)]
    text: String,
    /// Wrap the text as a user turn in the chat template.
    #[arg(long)]
    chat: bool,
    /// Latents shown per token.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    input: InputArgs,
}

/// Flags of generate/trace that splice an SAE into the forward pass.
#[derive(Args, Clone, Default)]
pub struct SpliceArgs {
    /// SAE folder (SAELens or sparsify) spliced in at its hook: the activation there is
    /// replaced by the SAE's reconstruction (at --positions).
    #[arg(long = "sae", value_name = "DIR")]
    pub sae: Option<PathBuf>,
    /// Keep the SAE's error term (x - reconstruction): without edits the run is then
    /// unchanged, and --sae-add/--sae-clamp change only what they touch.
    #[arg(long, requires = "sae")]
    pub sae_error: bool,
    /// Latent steering: add S to latent ID (S x its decoder row), e.g. --sae-add 123:4 (repeatable).
    #[arg(
        long,
        value_name = "ID:S",
        requires = "sae",
        allow_hyphen_values = true
    )]
    pub sae_add: Vec<String>,
    /// Clamp latent ID to V (0 ablates it), e.g. --sae-clamp 123:0 (repeatable).
    #[arg(
        long,
        value_name = "ID:V",
        requires = "sae",
        allow_hyphen_values = true
    )]
    pub sae_clamp: Vec<String>,
}

fn parse_edit(s: &str, flag: &str) -> Result<(usize, f32)> {
    let parsed = s
        .split_once(':')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse::<f32>().ok()?)));
    match parsed {
        Some((id, v)) if v.is_finite() => Ok((id, v)),
        _ => bail!("{flag} '{s}': expected LATENT:VALUE, e.g. 123:4"),
    }
}

impl SpliceArgs {
    /// The SAE and its splice hooks, or nothing without --sae.
    pub fn hooks(&self, model: &Model, positions: Positions) -> Result<Option<(Arc<Sae>, Hooks)>> {
        let Some(dir) = &self.sae else {
            return Ok(None);
        };
        let sae = Arc::new(load_for(model, dir)?);
        let mut edits = Vec::new();
        for s in &self.sae_add {
            let (latent, value) = parse_edit(s, "--sae-add")?;
            edits.push(LatentEdit::Add { latent, value });
        }
        for s in &self.sae_clamp {
            let (latent, value) = parse_edit(s, "--sae-clamp")?;
            edits.push(LatentEdit::Clamp { latent, value });
        }
        let splice = Splice {
            keep_error: self.sae_error,
            edits,
        };
        let hooks = splice.hooks(sae.clone(), model.cfg().n_layers, positions)?;
        Ok(Some((sae, hooks)))
    }
}

/// Load an SAE and check it against the model's hook width.
pub fn load_for(model: &Model, dir: &std::path::Path) -> Result<Sae> {
    let sae = Sae::load(dir)?;
    let point = sae.hook_point(model.cfg().n_layers)?;
    let cfg = model.cfg();
    let width: usize = point
        .per_token_shape(cfg)
        .map(|s| s.iter().product())
        .unwrap_or(0);
    if width != sae.cfg.d_in {
        bail!(
            "{}: the SAE reads d_in = {} at {}, but this model's {} has width {width}",
            dir.display(),
            sae.cfg.d_in,
            sae.cfg.hook_name,
            sae.cfg.hook_name
        );
    }
    Ok(sae)
}

pub fn cmd_sae(c: SaeCommand) -> Result<()> {
    match c {
        SaeCommand::Train(a) => cmd_train(a),
        SaeCommand::Latents(a) => cmd_latents(a),
        SaeCommand::Eval(a) => cmd_eval(a),
        SaeCommand::Dashboard(a) => cmd_dashboard(a),
    }
}

struct Bar {
    bar: ProgressBar,
}

impl training::Progress for Bar {
    fn start(&mut self, total: u64, resumed: u64) {
        self.bar.set_length(total);
        self.bar.set_position(resumed);
        if resumed > 0 {
            self.bar
                .println(format!("resuming at step {resumed} of {total}"));
        }
    }
    fn step(&mut self, l: &LogLine) {
        self.bar.set_position(l.step);
        self.bar.set_message(format!(
            "{:.0} tok/s  FVU {:.4}  L0 {:.1}  dead {:.3}",
            l.tokens_per_second, l.fvu, l.l0, l.dead_fraction
        ));
    }
}

fn cmd_train(mut a: TrainArgs) -> Result<()> {
    let hooks: Vec<String> = a
        .hook
        .split(',')
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    match (&a.hook_index, hooks.len()) {
        (Some(ix), n) => {
            let i = pragma_store::parts::array_index(ix, n)
                .map_err(|e| anyhow::anyhow!("--hook-index: {e}"))?;
            a.hook = hooks[i].clone();
            a.out = a.out.join(&a.hook);
            eprintln!("hook {i} of {n}: {} -> {}", a.hook, a.out.display());
        }
        (None, 1) => a.hook = hooks[0].clone(),
        (None, n) => bail!(
            "--hook lists {n} hooks: train one per job with --hook-index I (or auto in an array job)"
        ),
    }
    let store = pragma_store::Store::open(&a.store)?;
    let src = StoreHook::new(&store, &a.hook)?;
    let d_in = store.width(&a.hook)?;
    if a.d_sae.is_none() && a.expansion == 0 {
        bail!("--expansion 0: expected a positive width multiple (or --d-sae N)");
    }
    let d_sae = a.d_sae.unwrap_or(d_in * a.expansion);
    let arch = Arch::parse(&a.arch, Some(a.k))?;
    let mut cfg = TrainConfig::new(arch, d_sae);
    cfg.tokens = a.tokens;
    cfg.batch_tokens = a.batch_tokens;
    cfg.lr = a.lr;
    cfg.seed = a.seed;
    cfg.dead_tokens = a.dead_tokens;
    cfg.checkpoint_every = a.checkpoint_every;
    cfg.matryoshka = a.matryoshka.clone();
    if let Some(l) = a.lambda {
        cfg.lambda = l;
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} step {pos}/{len}  {msg}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t = Instant::now();
    let (_, r) = training::train(&src, &cfg, &a.out, &mut Bar { bar: bar.clone() })?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "trained {} SAE ({} latents on {} of {}) for {} tokens in {:.0}s ({:.0} tok/s{}): \
         FVU {:.4}, L0 {:.1}, dead {:.1}% -> {}",
        arch.name(),
        d_sae,
        a.hook,
        a.store.display(),
        r.tokens,
        t.elapsed().as_secs_f64(),
        r.tokens_per_second,
        if r.resumed_from_step > 0 {
            format!(", resumed at step {}", r.resumed_from_step)
        } else {
            String::new()
        },
        r.final_fvu,
        r.final_l0,
        100.0 * r.dead_fraction,
        a.out.display()
    );
    Ok(())
}

fn cmd_latents(a: LatentsArgs) -> Result<()> {
    let model = Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
    let sae = load_for(&model, &a.sae)?;
    let rule = a.input.rule(&model, &[])?;
    let msgs = [pragma_model::tokenizer::ChatMessage::new("user", &a.text)];
    let prompt = if a.chat {
        pragma_model::Prompt::chat(&msgs)
    } else {
        pragma_model::Prompt::Text(&a.text)
    };
    let ids = model.tokenizer.build_input(&prompt, rule)?.ids;
    let out = pragma_methods::sae::latents::token_latents(&model, &sae, &ids, a.top)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} latents of {} ({}) at {}:",
        sae.cfg.d_sae,
        a.sae.display(),
        sae.cfg.arch.name(),
        sae.cfg.hook_name
    );
    for o in &out {
        let token = format!("{:?}", o.token);
        if o.control_token {
            println!(
                "{:>4} {token:<16} (control token: not read by the SAE)",
                o.position
            );
            continue;
        }
        let lat: Vec<String> = o
            .latents
            .iter()
            .map(|l| format!("{}:{:.2}", l.latent, l.activation))
            .collect();
        println!(
            "{:>4} {token:<16} L0 {:>3}  {}",
            o.position,
            o.l0,
            lat.join("  ")
        );
    }
    Ok(())
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    use pragma_methods::sae::eval::{evaluate_to_folder, EvalConfig, EvalData};
    let sae = Sae::load(&a.sae)?;
    let out = a.out.clone().unwrap_or_else(|| a.sae.clone());
    crate::runs_cmd::set_out(&out);
    let data = match (&a.store, &a.data) {
        (Some(s), _) => EvalData::Store(s.clone()),
        (None, Some(d)) => EvalData::Corpus(pragma_store::datasets::resolve(d, &mut |m| {
            eprintln!("{m}")
        })?),
        (None, None) => bail!("expected --store STORE or --data CORPUS"),
    };
    // The model (checked against the SAE) caches a corpus and runs the loss metrics.
    let model = if matches!(data, EvalData::Corpus(_)) || a.ce_sequences > 0 {
        let m = Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
        load_for(&m, &a.sae)?;
        Some(m)
    } else {
        None
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let cfg = EvalConfig {
        max_tokens: a.max_tokens,
        ce_sequences: a.ce_sequences,
        batch: 4096,
    };
    let report = evaluate_to_folder(
        &sae,
        &a.sae.display().to_string(),
        &data,
        model.as_ref(),
        &cfg,
        &out,
        &mut |what, d, t| {
            bar.set_message(what.to_string());
            bar.set_length(t);
            bar.set_position(d);
        },
    )?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.markdown());
        println!("-> {}/eval.json, eval.md", out.display());
    }
    Ok(())
}

fn cmd_dashboard(a: DashboardArgs) -> Result<()> {
    let model = Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
    let sae = load_for(&model, &a.sae)?;
    let store = pragma_store::Store::open(&a.store)?;
    let sha = pragma_store::writer::model_sha256(&model)?;
    if sha != store.manifest.model.sha256 {
        bail!(
            "--store {} was cached from another model ({}); the dashboard decodes its tokens with this model's tokenizer",
            a.store.display(),
            store.manifest.model.spec
        );
    }
    let explanations: std::collections::HashMap<String, String> = match &a.explanations {
        Some(p) => serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?,
        )
        .with_context(|| format!("{}: expected {{\"LATENT\": \"text\"}}", p.display()))?,
        None => Default::default(),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("dashboard pass {bar:30} {pos}/{len} tokens  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t = Instant::now();
    let cards = pragma_methods::sae::dashboard::build(
        &sae,
        &store,
        a.max_tokens,
        &model.transformer.unembed()?,
        model.transformer.final_norm_weight(),
        a.seed,
        &mut |d, n| {
            bar.set_length(n);
            bar.set_position(d);
        },
    )?;
    bar.finish_and_clear();
    let title = format!(
        "{} latents of {} at {}",
        sae.cfg.d_sae,
        a.sae.display(),
        sae.cfg.hook_name
    );
    pragma_methods::sae::dashboard::write_html(
        &cards,
        &model.tokenizer,
        &title,
        &explanations,
        &a.out,
    )?;
    let alive = cards.iter().filter(|c| c.fires > 0).count();
    println!(
        "dashboards for {} latents ({} fired) from {} tokens in {:.0}s -> {}/index.html",
        cards.len(),
        alive,
        store.n_tokens().min(a.max_tokens),
        t.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}
