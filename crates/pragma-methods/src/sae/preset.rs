//! The default SAE recipe, trained and cached on first use.
//!
//! Workflows that want "an SAE at this hook" without the user training one (the proxy-task
//! benchmark's SAE techniques) call [`Preset::ensure`]: it caches a built-in corpus at the
//! hook into `DIR/store` (resumable), trains the recipe into `DIR/sae` (resumable, see
//! [`super::training::train`]) and loads the result; a second call loads it in
//! milliseconds. The recipe is the README's default run, smaller: TopK (k = 32, Gao et
//! al. 2024), 8x expansion, 2M training tokens over a 300k-token store of `fortunes`.

use std::path::{Path, PathBuf};

use candle_core::DType;
use pragma_model::hooks::HookPoint;
use pragma_model::Model;
use pragma_store::writer::{self, CacheOptions};
use serde::{Deserialize, Serialize};

use super::training::{self, StoreHook, TrainConfig};
use super::{Arch, Sae};
use crate::error::{Error, Result};

/// An SAE recipe: the data it is trained on and the training settings. Deserialised
/// with every field optional (a suite's `[sae]` table), missing fields from `default()`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Preset {
    /// Corpus: a built-in name (`fortunes`) or a file, see `pragma_store::datasets`.
    pub data: String,
    /// Tokens cached from the corpus (the store is cycled for `tokens`).
    pub store_tokens: u64,
    /// Context length of the cached sequences.
    pub ctx: usize,
    /// Latents per token (TopK).
    pub k: usize,
    /// Width as a multiple of the hook's width.
    pub expansion: usize,
    /// Training tokens.
    pub tokens: u64,
    /// Tokens per optimiser step.
    pub batch_tokens: usize,
}

impl Default for Preset {
    fn default() -> Self {
        Preset {
            data: "fortunes".into(),
            store_tokens: 300_000,
            ctx: 128,
            k: 32,
            expansion: 8,
            tokens: 2_000_000,
            batch_tokens: 4096,
        }
    }
}

/// Which stage [`Preset::ensure`] is in, for progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Caching activations: `done` of `total` tokens.
    Cache,
    /// Training: `done` of `total` optimiser steps.
    Train,
}

struct CacheBar<'a, 'b>(&'a mut dyn FnMut(Stage, u64, u64), &'b Preset);
impl writer::Progress for CacheBar<'_, '_> {
    fn batch(&mut self, _docs: u64, tokens: u64) {
        (self.0)(
            Stage::Cache,
            tokens.min(self.1.store_tokens),
            self.1.store_tokens,
        )
    }
}

struct TrainBar<'a>(&'a mut dyn FnMut(Stage, u64, u64), u64);
impl training::Progress for TrainBar<'_> {
    fn start(&mut self, total: u64, resumed: u64) {
        self.1 = total;
        (self.0)(Stage::Train, resumed, total)
    }
    fn step(&mut self, l: &training::LogLine) {
        (self.0)(Stage::Train, l.step + 1, self.1)
    }
}

impl Preset {
    /// The folder holding this recipe's store and SAE for `model` at `hook` under `root`:
    /// `root/<first 12 hex digits of the model's SHA-256>-<hook>`.
    pub fn dir(root: &Path, model_sha256: &str, hook: &str) -> PathBuf {
        root.join(format!(
            "{}-{hook}",
            &model_sha256[..12.min(model_sha256.len())]
        ))
    }

    /// The trained SAE in `dir`, if training finished there.
    pub fn trained(dir: &Path) -> Result<Option<Sae>> {
        let sae = dir.join("sae");
        if sae.join("cfg.json").exists() && sae.join("sae_weights.safetensors").exists() {
            Ok(Some(Sae::load(&sae)?))
        } else {
            Ok(None)
        }
    }

    /// The training settings for a hook of width `d_in`.
    pub fn train_config(&self, d_in: usize) -> TrainConfig {
        let mut cfg = TrainConfig::new(Arch::TopK { k: self.k }, d_in * self.expansion);
        cfg.tokens = self.tokens;
        cfg.batch_tokens = self.batch_tokens;
        cfg
    }

    /// Load the SAE from `dir`, or cache, train and load it (both stages resume after a
    /// kill). `progress(stage, done, total)` is called as the work goes.
    ///
    /// Errors: the corpus cannot be fetched, the hook is not in the model, `dir` holds a
    /// store or training run with other settings (delete it), I/O.
    pub fn ensure(
        &self,
        model: &Model,
        hook: HookPoint,
        dir: &Path,
        progress: &mut dyn FnMut(Stage, u64, u64),
    ) -> Result<Sae> {
        if let Some(s) = Self::trained(dir)? {
            if s.cfg.hook_name != hook.to_string() {
                return Err(Error::Input(format!(
                    "{}: holds an SAE for {}, not {hook}; delete it",
                    dir.display(),
                    s.cfg.hook_name
                )));
            }
            return Ok(s);
        }
        let data = pragma_store::datasets::resolve(&self.data, &mut |_| {})?;
        let store_dir = dir.join("store");
        let opts = CacheOptions {
            format: pragma_store::corpus::Format::detect(
                &data,
                pragma_store::corpus::TextSplit::Blocks,
            ),
            data,
            hooks: vec![hook],
            out: store_dir.clone(),
            ctx: self.ctx.min(model.cfg().context_length),
            batch: 8,
            dtype: DType::F16,
            input: pragma_model::InputRule::default(),
            long_docs: pragma_store::manifest::LongDocs::Split,
            max_tokens: Some(self.store_tokens),
            skip_docs: 0,
            shard_tokens: None,
            stop_after_shards: None,
            dry_run: false,
            part: None,
        };
        writer::cache(model, &opts, &mut CacheBar(progress, self))?;
        let store = pragma_store::Store::open(&store_dir)?;
        let name = hook.to_string();
        let src = StoreHook::new(&store, &name)?;
        let cfg = self.train_config(store.width(&name)?);
        let (sae, _) = training::train(&src, &cfg, &dir.join("sae"), &mut TrainBar(progress, 0))?;
        Ok(sae)
    }

    /// Rough seconds to cache and train, given the model's forward throughput to the hook
    /// in tokens/s and an SAE training throughput (~11-16k tokens/s for 4608 latents on 2
    /// Zen 4 cores, `BENCHMARKS.md`; scaled by width).
    pub fn seconds(&self, forward_tokens_per_second: f64, d_in: usize) -> f64 {
        let train_tps = 12_000.0 * 4608.0 / (d_in * self.expansion).max(1) as f64;
        self.store_tokens as f64 / forward_tokens_per_second.max(1.0)
            + self.tokens as f64 / train_tps
    }
}
