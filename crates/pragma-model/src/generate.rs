//! KV-cached generation with hooks active in prefill and in every decode step.

use candle_core::{DType, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;

use crate::decode::Decoder;
use crate::error::{Error, Result};
use crate::hooks::{Cache, Hooks};
use crate::llama::{Batch, KvCache, Logits, Transformer};

/// How the next token is chosen. `temperature == 0` means greedy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sampling {
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f64,
    /// Keep only the `top_k` most likely tokens (0 = no limit).
    pub top_k: usize,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
        }
    }
}

impl Sampling {
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(Error::InvalidSampling(format!(
                "temperature must be a finite number >= 0 (0 = greedy), found {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidSampling(format!(
                "top_p must be in (0, 1], found {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// Pick one token from a row of logits.
pub fn sample(logits: &[f32], s: &Sampling, rng: &mut StdRng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0 as u32
    };
    if s.temperature == 0.0 {
        return argmax();
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if s.top_k > 0 {
        idx.truncate(s.top_k);
    }
    let max = logits[idx[0]] as f64;
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / s.temperature).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if s.top_p < 1.0 {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (k, p) in probs.iter().enumerate() {
            acc += p;
            if acc >= s.top_p {
                keep = k + 1;
                break;
            }
        }
        probs.truncate(keep);
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let r: f64 = rng.random();
    let mut acc = 0.0;
    for (k, p) in probs.iter().enumerate() {
        acc += p;
        if r < acc {
            return idx[k] as u32;
        }
    }
    idx[probs.len() - 1] as u32
}

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// Generation of a row ends after it emits one of these.
    pub stop_tokens: Vec<u32>,
}

/// Why a row stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    StopToken,
    MaxTokens,
    Context,
    /// The caller's `on_token` asked to stop (a stop string, a client that went away).
    Caller,
}

#[derive(Clone, Debug)]
pub struct Generation {
    /// New tokens per row (the stop token included when one was emitted).
    pub tokens: Vec<Vec<u32>>,
    pub stop: Vec<StopReason>,
    /// Activations captured by the hooks over prompt and generated positions.
    pub cache: Cache,
}

/// The random generator of one item: seeded from the sampling seed and the item's own
/// index (SplitMix64-mixed), so an item's samples never depend on which other items
/// share its batch.
pub fn item_rng(seed: u64, item: u64) -> StdRng {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    StdRng::seed_from_u64(mix(seed ^ mix(item)))
}

/// Generate continuations for a batch of prompts (items `0..prompts.len()`).
/// `on_token(row, token)` is called as each token is chosen, for streaming.
pub fn generate(
    model: &Transformer,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    hooks: &Hooks,
    on_token: impl FnMut(usize, u32),
) -> Result<Generation> {
    let items: Vec<u64> = (0..prompts.len() as u64).collect();
    generate_items(model, prompts, &items, opts, hooks, on_token)
}

/// As [`generate`], for rows that are items `items[r]` of a larger list: row `r`
/// samples from [`item_rng`]`(seed, items[r])`, so a prompt sampled alone (with its
/// item index) gives the same tokens as in any batch.
pub fn generate_items(
    model: &Transformer,
    prompts: &[Vec<u32>],
    items: &[u64],
    opts: &GenerateOptions,
    hooks: &Hooks,
    mut on_token: impl FnMut(usize, u32),
) -> Result<Generation> {
    opts.sampling.validate()?;
    if items.len() != prompts.len() {
        return Err(Error::InvalidInput(format!(
            "expected one item index per prompt, found {} for {} prompts",
            items.len(),
            prompts.len()
        )));
    }
    let batch = Batch::new(prompts, model.device())?;
    let (b, t) = batch.ids.dims2()?;
    let ctx = model.cfg.context_length;
    if t > ctx {
        return Err(Error::ContextOverflow { len: t, ctx });
    }
    let mut rngs: Vec<StdRng> = items
        .iter()
        .map(|&i| item_rng(opts.sampling.seed, i))
        .collect();
    let mut kv = KvCache::new(model.cfg.n_layers, batch.pad.clone());
    let mut cache = Cache::new(batch.pad.clone());
    let mut tokens = vec![Vec::new(); b];
    let mut stop: Vec<Option<StopReason>> = vec![None; b];
    if opts.max_tokens == 0 {
        model.forward_step(&batch.ids, &mut kv, hooks, Logits::None, &mut cache)?;
        return Ok(Generation {
            tokens,
            stop: vec![StopReason::MaxTokens; b],
            cache,
        });
    }
    let mut logits = model
        .forward_step(&batch.ids, &mut kv, hooks, Logits::Last, &mut cache)?
        .ok_or_else(|| Error::InvalidInput("no logits".into()))?; // [b, vocab]
    let filler = opts.stop_tokens.first().copied().unwrap_or(0);
    loop {
        let rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
        let mut next = Vec::with_capacity(b);
        for (r, row) in rows.iter().enumerate() {
            if stop[r].is_some() {
                next.push(filler);
                continue;
            }
            let tok = sample(row, &opts.sampling, &mut rngs[r]);
            tokens[r].push(tok);
            on_token(r, tok);
            if opts.stop_tokens.contains(&tok) {
                stop[r] = Some(StopReason::StopToken);
            } else if tokens[r].len() >= opts.max_tokens {
                stop[r] = Some(StopReason::MaxTokens);
            } else if kv.len + 1 > ctx {
                stop[r] = Some(StopReason::Context);
            }
            next.push(tok);
        }
        if stop.iter().all(Option::is_some) {
            break;
        }
        let ids = Tensor::from_vec(next, (b, 1), model.device())?;
        logits = model
            .forward_step(&ids, &mut kv, hooks, Logits::Last, &mut cache)?
            .ok_or_else(|| Error::InvalidInput("no logits".into()))?;
    }
    Ok(Generation {
        tokens,
        stop: stop
            .into_iter()
            .map(|s| s.unwrap_or(StopReason::MaxTokens))
            .collect(),
        cache,
    })
}

/// One row's settings for [`generate_rows`].
#[derive(Clone, Debug)]
pub struct RowOptions {
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// The row's item index for [`item_rng`].
    pub item: u64,
}

/// What [`generate_rows`] reports about a row.
#[derive(Debug)]
pub enum RowEvent<'a> {
    /// A sampled token with the raw logits it was sampled from (`[vocab]`); the
    /// callback's answer says whether the row goes on.
    Token(u32, &'a [f32]),
    /// The row ended (as soon as it does, not when the batch does), with all its new
    /// tokens (a stop token included).
    End(StopReason, &'a [u32]),
}

/// Rows with their own sampling and length, decoded together, token by token, for
/// servers: `on_event(row, event)` sees each sampled token (and returns whether that row
/// goes on) and each row's end. Returns each row's new tokens and why it ended. A row
/// samples as [`generate_items`] does for its item, so its tokens do not depend on the
/// other rows (tested).
pub fn generate_rows(
    model: &Transformer,
    prompts: &[Vec<u32>],
    rows: &[RowOptions],
    stop_tokens: &[u32],
    hooks: &Hooks,
    mut on_event: impl FnMut(usize, RowEvent) -> bool,
) -> Result<Vec<(Vec<u32>, StopReason)>> {
    if rows.len() != prompts.len() {
        return Err(Error::InvalidInput(format!(
            "expected one row's options per prompt, found {} for {} prompts",
            rows.len(),
            prompts.len()
        )));
    }
    let mut dec = Decoder::new(model, stop_tokens.to_vec());
    let ids: Vec<u64> = (0..prompts.len() as u64).collect();
    dec.join("", hooks, &ids, prompts, rows)?;
    let mut out: Vec<Option<(Vec<u32>, StopReason)>> = vec![None; prompts.len()];
    while !dec.is_empty() {
        for (id, tokens, why) in dec.step(|id, e| on_event(id as usize, e))? {
            out[id as usize] = Some((tokens, why));
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or((Vec::new(), StopReason::MaxTokens)))
        .collect())
}

/// One sequence with [`generate_rows`]: `on_token(token, logits)` returns whether to go
/// on.
pub fn generate_one(
    model: &Transformer,
    prompt: &[u32],
    item: u64,
    opts: &GenerateOptions,
    hooks: &Hooks,
    mut on_token: impl FnMut(u32, &[f32]) -> bool,
) -> Result<(Vec<u32>, StopReason)> {
    let row = RowOptions {
        max_tokens: opts.max_tokens,
        sampling: opts.sampling.clone(),
        item,
    };
    let mut out = generate_rows(
        model,
        &[prompt.to_vec()],
        &[row],
        &opts.stop_tokens,
        hooks,
        |_, e| match e {
            RowEvent::Token(t, l) => on_token(t, l),
            RowEvent::End(..) => true,
        },
    )?;
    Ok(out.remove(0))
}
