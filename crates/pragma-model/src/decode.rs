//! Continuous batching: a [`Decoder`] decodes many sequences in one batched forward per
//! step, and new sequences join between steps, each group with its own hooks (Orca's
//! iteration-level scheduling, Yu et al. 2022, as vLLM and llama.cpp's server do it).
//!
//! A joining group is prefilled on its own under its hooks, then its KV cache is
//! appended to the running one ([`KvCache::join`]); rows that end are dropped from the
//! cache ([`KvCache::keep_rows`]). Each decode step runs every live row with every
//! group's hooks restricted to that group's rows ([`Hooks::for_rows`]), so a steered
//! request and an unsteered one share the forward and neither sees the other's hooks.
//! Nothing is shared between groups but the batched matmuls: no prefix or KV reuse.

use candle_core::{DType, Tensor};
use rand::rngs::StdRng;

use crate::error::{Error, Result};
use crate::generate::{item_rng, sample, RowEvent, RowOptions, StopReason};
use crate::hooks::{Cache, Hooks};
use crate::llama::{Batch, KvCache, Logits, Transformer};

/// A live row: its caller's id, settings, group, sampler and tokens so far.
struct Live {
    id: u64,
    opts: RowOptions,
    group: usize,
    rng: StdRng,
    tokens: Vec<u32>,
    /// The logits to sample its next token from (`[vocab]`), or `None` when it ended
    /// at join (`max_tokens == 0`).
    next: Option<Vec<f32>>,
}

/// Sequences decoded together, joining and leaving between steps. See the module docs.
pub struct Decoder<'m> {
    model: &'m Transformer,
    stop_tokens: Vec<u32>,
    kv: KvCache,
    rows: Vec<Live>,
    /// Each group's key and hooks; rows point into it.
    groups: Vec<(String, Hooks)>,
}

impl<'m> Decoder<'m> {
    /// An empty decoder; `stop_tokens` end any row that samples one.
    pub fn new(model: &'m Transformer, stop_tokens: Vec<u32>) -> Self {
        Decoder {
            model,
            stop_tokens,
            kv: KvCache::new(model.cfg.n_layers, Vec::new()),
            rows: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// Live rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Distinct hook groups among the live rows.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Columns in the shared KV cache (the longest row, padding included).
    pub fn columns(&self) -> usize {
        self.kv.len
    }

    /// Whether rows with these prompt lengths and token budgets can join without any
    /// row running out of context: the joined cache's columns plus the largest budget
    /// left must fit the model's context.
    pub fn has_room(&self, prompt_lens: &[usize], max_tokens: &[usize]) -> bool {
        let cols = prompt_lens.iter().copied().fold(self.kv.len, usize::max);
        let left = self
            .rows
            .iter()
            .map(|r| r.opts.max_tokens.saturating_sub(r.tokens.len()))
            .chain(max_tokens.iter().copied())
            .max()
            .unwrap_or(0);
        cols + left <= self.model.cfg.context_length
    }

    /// Prefill `prompts` (with caller ids `ids` and options `opts`) as one group under
    /// `hooks` and add them to the running batch. Groups with equal `key`s must have
    /// equal hooks (they are merged). Errors (bad sampling, an empty prompt, a prompt
    /// longer than the context, a failed forward) leave the running rows untouched.
    pub fn join(
        &mut self,
        key: &str,
        hooks: &Hooks,
        ids: &[u64],
        prompts: &[Vec<u32>],
        opts: &[RowOptions],
    ) -> Result<()> {
        if ids.len() != prompts.len() || opts.len() != prompts.len() {
            return Err(Error::InvalidInput(format!(
                "expected one id and one row's options per prompt, found {} ids and {} options for {} prompts",
                ids.len(),
                opts.len(),
                prompts.len()
            )));
        }
        if prompts.is_empty() {
            return Ok(());
        }
        for o in opts {
            o.sampling.validate()?;
        }
        let model = self.model;
        hooks.validate(model.cfg.n_layers)?;
        let batch = Batch::new(prompts, model.device())?;
        let t = batch.ids.dim(1)?;
        let ctx = model.cfg.context_length;
        if t > ctx {
            return Err(Error::ContextOverflow { len: t, ctx });
        }
        let mut kv = KvCache::new(model.cfg.n_layers, batch.pad.clone());
        let mut cache = Cache::new(batch.pad.clone());
        let logits = model
            .forward_step(&batch.ids, &mut kv, hooks, Logits::Last, &mut cache)?
            .ok_or_else(|| Error::InvalidInput("no logits".into()))?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        self.kv.join(kv)?;
        let group = match self.groups.iter().position(|(k, _)| k == key) {
            Some(g) => g,
            None => {
                self.groups.push((key.to_string(), hooks.clone()));
                self.groups.len() - 1
            }
        };
        for ((&id, o), row) in ids.iter().zip(opts).zip(logits) {
            self.rows.push(Live {
                id,
                opts: o.clone(),
                group,
                rng: item_rng(o.sampling.seed, o.item),
                tokens: Vec::new(),
                next: (o.max_tokens > 0).then_some(row),
            });
        }
        Ok(())
    }

    /// One step: sample every live row's next token (reporting `Token`, and `End` for
    /// rows that end: a stop token, their budget, the context, or `on_event` returning
    /// false), drop the ended rows, and run one batched forward for the rest. Returns
    /// the rows that ended, as `(id, tokens, why)`. On an error every row is dropped
    /// (the caller fails them all).
    pub fn step(
        &mut self,
        mut on_event: impl FnMut(u64, RowEvent) -> bool,
    ) -> Result<Vec<(u64, Vec<u32>, StopReason)>> {
        let ctx = self.model.cfg.context_length;
        let mut ended = Vec::new();
        let mut keep = Vec::new();
        let mut next_ids = Vec::new();
        for (r, row) in self.rows.iter_mut().enumerate() {
            let why = match row.next.take() {
                None => Some(StopReason::MaxTokens),
                Some(logits) => {
                    let tok = sample(&logits, &row.opts.sampling, &mut row.rng);
                    row.tokens.push(tok);
                    if !on_event(row.id, RowEvent::Token(tok, &logits)) {
                        Some(StopReason::Caller)
                    } else if self.stop_tokens.contains(&tok) {
                        Some(StopReason::StopToken)
                    } else if row.tokens.len() >= row.opts.max_tokens {
                        Some(StopReason::MaxTokens)
                    } else if self.kv.len + 1 > ctx {
                        Some(StopReason::Context)
                    } else {
                        next_ids.push(tok);
                        None
                    }
                }
            };
            match why {
                Some(why) => {
                    on_event(row.id, RowEvent::End(why, &row.tokens));
                    ended.push((row.id, std::mem::take(&mut row.tokens), why));
                }
                None => keep.push(r),
            }
        }
        if let Err(e) = self.advance(&keep, next_ids) {
            self.clear();
            return Err(e);
        }
        Ok(ended)
    }

    /// Drop every row.
    pub fn clear(&mut self) {
        self.rows.clear();
        self.groups.clear();
        self.kv = KvCache::new(self.model.cfg.n_layers, Vec::new());
    }

    /// Keep rows `keep` and run one forward of their new tokens.
    fn advance(&mut self, keep: &[usize], next_ids: Vec<u32>) -> Result<()> {
        if keep.len() != self.rows.len() {
            self.kv.keep_rows(keep)?;
            let mut old: Vec<Option<Live>> = std::mem::take(&mut self.rows)
                .into_iter()
                .map(Some)
                .collect();
            self.rows = keep.iter().filter_map(|&r| old[r].take()).collect();
            // Forget groups no row uses.
            let used: Vec<usize> = {
                let mut u: Vec<usize> = self.rows.iter().map(|r| r.group).collect();
                u.sort_unstable();
                u.dedup();
                u
            };
            let groups = std::mem::take(&mut self.groups);
            for row in &mut self.rows {
                row.group = used.binary_search(&row.group).unwrap_or(0);
            }
            self.groups = used.iter().map(|&g| groups[g].clone()).collect();
        }
        if self.rows.is_empty() {
            return Ok(());
        }
        let hooks = self.step_hooks();
        let model = self.model;
        let b = self.rows.len();
        let ids = Tensor::from_vec(next_ids, (b, 1), model.device())?;
        let mut cache = Cache::new(self.kv.pad().to_vec());
        let logits = model
            .forward_step(&ids, &mut self.kv, &hooks, Logits::Last, &mut cache)?
            .ok_or_else(|| Error::InvalidInput("no logits".into()))?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        for (row, l) in self.rows.iter_mut().zip(logits) {
            row.next = Some(l);
        }
        Ok(())
    }

    /// Every group's hooks, each restricted to its rows; a group that holds every row
    /// keeps its hooks unrestricted (no masks, and the fused decode path).
    fn step_hooks(&self) -> Hooks {
        if let [(_, only)] = self.groups.as_slice() {
            return only.clone();
        }
        let mut all = Hooks::new();
        for (g, (_, hooks)) in self.groups.iter().enumerate() {
            if hooks.is_empty() {
                continue;
            }
            let rows: Vec<usize> = (0..self.rows.len())
                .filter(|&r| self.rows[r].group == g)
                .collect();
            all.extend(&hooks.for_rows(&rows));
        }
        all
    }
}
