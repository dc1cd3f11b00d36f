//! `pragma trace | tokenize`: a prompt's activations saved to safetensors, and how a
//! prompt becomes token ids.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use clap::Args;
use pragma_model::hooks::{HookPoint, Hooks, Positions};
use pragma_model::llama::{Batch, Logits};
use pragma_model::DEFAULT_MODEL;

use crate::run_cmd::{load, prompt_input, PromptArgs};

#[derive(Args)]
pub struct TraceArgs {
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
    sae: crate::sae_cmd::SpliceArgs,
    /// Positions the --sae splice touches (see generate --help).
    #[arg(long, default_value = "from:1")]
    positions: String,
    /// Output safetensors file (tensors named by hook point, plus `tokens`).
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args)]
pub struct TokenizeArgs {
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Print JSON: ids, per-token text and vocabulary piece, special flags, the rule.
    #[arg(long)]
    json: bool,
}

pub fn cmd_trace(a: TraceArgs) -> Result<()> {
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

pub fn cmd_tokenize(a: TokenizeArgs) -> Result<()> {
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
