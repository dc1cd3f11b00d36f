//! Planning a request: everything it asks for is checked before any compute (prompt and
//! budget against the context, sampling, the `pragma` field's vectors, SAE latents,
//! probes and captures), and turned into token ids, options and hooks for the engine.

use std::sync::Arc;

use axum::http::StatusCode;
use pragma_methods::sae::Sae;
use pragma_methods::steering::Operator;
use pragma_model::generate::{GenerateOptions, Sampling};
use pragma_model::hooks::{HookPoint, Hooks, Positions};
use pragma_model::input::{InputRule, Prompt};

use super::engine;
use super::types::*;
use super::{fresh_seed, ApiError, OpenAi};

/// What both endpoints share once their body is read.
pub(super) struct Plan {
    pub(super) prompt: Vec<u32>,
    pub(super) opts: GenerateOptions,
    pub(super) hooks: Hooks,
    pub(super) stop: Vec<String>,
    pub(super) echo: PragmaExt,
    /// The registry's generation the hooks were built from.
    pub(super) generation: u64,
    pub(super) reads: engine::Reads,
}

/// Check everything a request asks for before any compute; build its ids and hooks.
#[allow(clippy::too_many_arguments)]
pub(super) fn plan(
    api: &OpenAi,
    prompt: Result<Prompt, Vec<u32>>,
    max_tokens: Option<usize>,
    default_max: usize,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<u64>,
    stop: Option<&Stop>,
    n: Option<usize>,
    ext: Option<&PragmaExt>,
) -> Result<Plan, ApiError> {
    if n.is_some_and(|n| n != 1) {
        return Err(ApiError::param(
            "n: pragma returns one choice per request",
            "n",
        ));
    }
    let temperature = temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::param(
            format!("temperature {temperature}: expected 0 to 2"),
            "temperature",
        ));
    }
    let top_p = top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::param(
            format!("top_p {top_p}: expected a number in (0, 1]"),
            "top_p",
        ));
    }
    let stop: Vec<String> = stop.map(Stop::list).unwrap_or_default();
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(ApiError::param(
            "stop: expected up to 4 non-empty strings",
            "stop",
        ));
    }
    let tk = &api.model.tokenizer;
    // A prompt of token ids is taken as it is (no BOS added).
    let ids = match prompt {
        Ok(prompt) => {
            tk.build_input(&prompt, InputRule::default())
                .map_err(|e| ApiError::bad(e.to_string()))?
                .ids
        }
        Err(ids) => {
            let vocab = api.model.cfg().vocab_size;
            if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                return Err(ApiError::param(
                    format!(
                        "prompt: token id {bad} is out of range: the vocabulary has {vocab} tokens"
                    ),
                    "prompt",
                ));
            }
            ids
        }
    };
    if ids.is_empty() {
        return Err(ApiError::param(
            "the prompt is empty (no tokens, and this model adds no BOS)",
            "prompt",
        ));
    }
    let ctx = api.model.cfg().context_length;
    // Unset, max_tokens is the endpoint's default, cut to what fits in the context.
    let max_tokens =
        max_tokens.unwrap_or_else(|| default_max.min(ctx.saturating_sub(ids.len())).max(1));
    if max_tokens == 0 || max_tokens > api.max_tokens_limit {
        return Err(ApiError::param(
            format!(
                "max_tokens {max_tokens}: expected 1 to {} (the server's --max-tokens-limit)",
                api.max_tokens_limit
            ),
            "max_tokens",
        ));
    }
    if ids.len() + max_tokens > ctx {
        return Err(ApiError::param(
            format!(
                "the prompt is {} tokens and max_tokens {max_tokens}: together over the model's \
                 context of {ctx}",
                ids.len()
            ),
            "max_tokens",
        ));
    }
    let echo = ext.cloned().unwrap_or_default();
    let mut hooks = Hooks::new();
    let generation;
    {
        let vectors = api
            .vectors
            .read()
            .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "registry".into(), None))?;
        // Read under the registry's lock, which deletions take to write.
        generation = api.generation.load(std::sync::atomic::Ordering::SeqCst);
        for s in &echo.steer {
            if let Some(rest) = s.vector.strip_prefix("sae:") {
                hooks.extend(&sae_steer(api, rest, s)?);
                continue;
            }
            let v = vectors.get(&s.vector).ok_or_else(|| {
                ApiError::param(
                    format!(
                        "pragma.steer: no vector '{}' (registered: {})",
                        s.vector,
                        vectors.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                    "pragma.steer.vector",
                )
            })?;
            let (op, positions) = op_and_positions(s)?;
            let h = v
                .hooks(&api.model, op, s.scale, s.layers.as_deref(), positions)
                .map_err(|e| ApiError::param(format!("pragma.steer: {e}"), "pragma.steer"))?;
            hooks.extend(&h);
        }
    }
    let mut monitors = Vec::new();
    for name in &echo.monitor {
        let probe = api.probes.get(name).ok_or_else(|| {
            ApiError::param(
                format!(
                    "pragma.monitor: no probe '{name}' (registered: {})",
                    api.probes.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                "pragma.monitor",
            )
        })?;
        let point = probe
            .hook_point(&api.model)
            .map_err(|e| ApiError::param(format!("pragma.monitor: {e}"), "pragma.monitor"))?;
        monitors.push((name.clone(), probe.clone(), point));
    }
    let n_layers = api.model.cfg().n_layers;
    let mut captures = Vec::new();
    for name in &echo.capture {
        let point = HookPoint::parse(name, n_layers)
            .map_err(|e| ApiError::param(format!("pragma.capture: {e}"), "pragma.capture"))?;
        if !point.is_model_width() || (point.is_post_norm() && api.model.cfg().gemma.is_none()) {
            return Err(ApiError::param(
                format!(
                    "pragma.capture: {name} is not a d_model-wide site of this model (expected \
                     e.g. blocks.{}.hook_resid_post, hook_attn_out, hook_mlp_out)",
                    n_layers / 2
                ),
                "pragma.capture",
            ));
        }
        captures.push(point);
    }
    // Captured values come back as JSON numbers: bound them before any compute.
    let floats = captures.len() * max_tokens * api.model.cfg().d_model;
    if floats > MAX_CAPTURE_FLOATS {
        return Err(ApiError::param(
            format!(
                "pragma.capture: {} hooks x max_tokens {max_tokens} x d_model {} = {floats} \
                 numbers, over the limit of {MAX_CAPTURE_FLOATS}: capture fewer hooks or tokens",
                captures.len(),
                api.model.cfg().d_model
            ),
            "pragma.capture",
        ));
    }
    let mut saes = Vec::new();
    for spec in &echo.sae_latents {
        let (name, sae) = find_sae(api, &spec.sae, "pragma.sae_latents")?;
        if spec.top_k == 0 || spec.top_k > 256 {
            return Err(ApiError::param(
                format!("pragma.sae_latents.top_k {}: expected 1 to 256", spec.top_k),
                "pragma.sae_latents.top_k",
            ));
        }
        let point = sae_point(api, &name, &sae, "pragma.sae_latents")?;
        saes.push((name, sae, point, spec.top_k));
    }
    Ok(Plan {
        reads: engine::Reads {
            monitors,
            captures,
            saes,
        },
        prompt: ids,
        opts: GenerateOptions {
            max_tokens,
            sampling: Sampling {
                temperature,
                top_p,
                // OpenAI's semantics: without a seed, every request samples afresh.
                seed: seed.unwrap_or_else(fresh_seed),
                ..Sampling::default()
            },
            stop_tokens: tk.info.stop_tokens.clone(),
        },
        hooks,
        stop,
        echo,
        generation,
    })
}

/// Most numbers a request's `pragma.capture` may return (hooks x tokens x d_model).
const MAX_CAPTURE_FLOATS: usize = 1 << 20;

/// A registered SAE by name (`NAME` or `sae:NAME`); 400 naming the registered ones.
fn find_sae(api: &OpenAi, name: &str, field: &'static str) -> Result<(String, Arc<Sae>), ApiError> {
    let bare = name.strip_prefix("sae:").unwrap_or(name);
    api.saes
        .get(bare)
        .map(|s| (bare.to_string(), s.clone()))
        .ok_or_else(|| {
            ApiError::param(
                format!(
                    "{field}: no SAE '{bare}' (registered with --sae NAME=DIR: {})",
                    if api.saes.is_empty() {
                        "none".to_string()
                    } else {
                        api.saes.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ),
                field,
            )
        })
}

/// An SAE's hook on this model, checked against its width.
fn sae_point(
    api: &OpenAi,
    name: &str,
    sae: &Sae,
    field: &'static str,
) -> Result<HookPoint, ApiError> {
    let cfg = api.model.cfg();
    let point = sae
        .hook_point(cfg.n_layers)
        .map_err(|e| ApiError::param(format!("{field}: SAE '{name}': {e}"), field))?;
    if sae.cfg.d_in != cfg.d_model || !point.is_model_width() {
        return Err(ApiError::param(
            format!(
                "{field}: SAE '{name}' reads {} (d_in {}), not a d_model-wide ({}) site of this model",
                sae.cfg.hook_name, sae.cfg.d_in, cfg.d_model
            ),
            field,
        ));
    }
    Ok(point)
}

/// `"vector": "sae:NAME:LATENT"`: steer along latent `LATENT`'s decoder direction (a row
/// of `W_dec`, as SAELens' steering) at the SAE's hook; `layers` does not apply.
fn sae_steer(api: &OpenAi, spec: &str, s: &SteerSpec) -> Result<Hooks, ApiError> {
    let field = "pragma.steer.vector";
    let (name, latent) = spec.rsplit_once(':').ok_or_else(|| {
        ApiError::param(
            format!("pragma.steer: vector 'sae:{spec}': expected sae:NAME:LATENT"),
            field,
        )
    })?;
    let (name, sae) = find_sae(api, name, field)?;
    let latent: usize = latent
        .parse()
        .ok()
        .filter(|&l| l < sae.cfg.d_sae)
        .ok_or_else(|| {
            ApiError::param(
                format!(
                    "pragma.steer: latent '{latent}' of SAE '{name}': expected 0 to {}",
                    sae.cfg.d_sae - 1
                ),
                field,
            )
        })?;
    if s.layers.is_some() {
        return Err(ApiError::param(
            "pragma.steer: layers does not apply to an SAE latent (it steers at the SAE's hook)",
            "pragma.steer.layers",
        ));
    }
    if !s.scale.is_finite() {
        return Err(ApiError::param(
            format!(
                "pragma.steer: scale must be a finite number, found {}",
                s.scale
            ),
            "pragma.steer.scale",
        ));
    }
    let point = sae_point(api, &name, &sae, field)?;
    let (op, positions) = op_and_positions(s)?;
    let dir = sae
        .w_dec
        .get(latent)
        .and_then(|d| d.to_dtype(candle_core::DType::F32))
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
    let mut h = Hooks::new();
    if matches!(op, Operator::Ablate | Operator::AblateThenAdd) {
        h.project_out(point, dir.clone(), positions.clone());
    }
    if matches!(op, Operator::Add | Operator::AblateThenAdd) {
        h.add(point, dir, s.scale, positions);
    }
    Ok(h)
}

/// A steer entry's `op` and `positions`, parsed; 400s naming the field.
fn op_and_positions(s: &SteerSpec) -> Result<(Operator, Positions), ApiError> {
    let op = Operator::parse(&s.op)
        .map_err(|e| ApiError::param(format!("pragma.steer.op: {e}"), "pragma.steer.op"))?;
    let positions = Positions::parse(&s.positions).map_err(|e| {
        ApiError::param(
            format!("pragma.steer.positions: {e}"),
            "pragma.steer.positions",
        )
    })?;
    Ok((op, positions))
}
