//! Activation patching: run one prompt, put in one activation from another prompt's
//! run, and see how much of the behaviour comes back (denoising: the corrupt run with a
//! clean activation) or goes away (noising: the clean run with a corrupt activation).
//!
//! Results are normalised as `(m - m_corrupt) / (m_clean - m_corrupt)`: 0 = the corrupt
//! run's metric, 1 = the clean run's, for both directions. Sweeps follow
//! TransformerLens' `patching` module: `get_act_patch_resid_pre`, `..._attn_out`,
//! `..._mlp_out` (`[layer, position]`) and `get_act_patch_attn_head_out_all_pos`
//! (`[layer, head]`, the head's `hook_z` at every position); tested against it on
//! SmolLM2.
//!
//! Each patched run is one row of a batch: every row carries its own hook
//! ([`Hooks::for_rows`]), so `batch` patches cost one batched forward, and a batch of
//! patches at layer `L` starts at block `L` from the base run's residual
//! ([`pragma_model::llama::Transformer::forward_from`]): a sweep costs about half the
//! layers of its runs.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Tensor};
use pragma_model::hooks::{Action, HookPoint, Hooks, Positions};
use pragma_model::llama::{Batch, Logits};
use pragma_model::Model;
use serde::{Deserialize, Serialize};

use super::metric::LogitDiff;
use crate::error::{Error, Result};

/// What to patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchSite {
    /// `blocks.L.hook_resid_pre` at one position: `[layer, position]`.
    ResidPre,
    /// `blocks.L.hook_attn_out` at one position: `[layer, position]`.
    AttnOut,
    /// `blocks.L.hook_mlp_out` at one position: `[layer, position]`.
    MlpOut,
    /// `blocks.L.attn.hook_z` of one head at every position: `[layer, head]`.
    Heads,
}

impl PatchSite {
    /// Parse `resid`, `attn`, `mlp`, `heads` (or the hook names `resid_pre`, `attn_out`,
    /// `mlp_out`, `z`).
    pub fn parse(s: &str) -> Result<PatchSite> {
        Ok(match s {
            "resid" | "resid_pre" => PatchSite::ResidPre,
            "attn" | "attn_out" => PatchSite::AttnOut,
            "mlp" | "mlp_out" => PatchSite::MlpOut,
            "heads" | "z" => PatchSite::Heads,
            _ => {
                return Err(Error::Input(format!(
                    "patch site '{s}': expected resid, attn, mlp or heads"
                )))
            }
        })
    }

    /// The hook at layer `l`.
    pub fn point(self, l: usize) -> HookPoint {
        match self {
            PatchSite::ResidPre => HookPoint::ResidPre(l),
            PatchSite::AttnOut => HookPoint::AttnOut(l),
            PatchSite::MlpOut => HookPoint::MlpOut(l),
            PatchSite::Heads => HookPoint::AttnZ(l),
        }
    }

    /// TransformerLens' hook name with `{L}` for the layer.
    pub fn hook_pattern(self) -> &'static str {
        match self {
            PatchSite::ResidPre => "blocks.{L}.hook_resid_pre",
            PatchSite::AttnOut => "blocks.{L}.hook_attn_out",
            PatchSite::MlpOut => "blocks.{L}.hook_mlp_out",
            PatchSite::Heads => "blocks.{L}.attn.hook_z",
        }
    }
}

/// Which run is patched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchDirection {
    /// Run the corrupt prompt, patch in clean activations (TransformerLens' default):
    /// which activations suffice to restore the behaviour.
    #[default]
    Denoise,
    /// Run the clean prompt, patch in corrupt activations: which are necessary for it.
    Noise,
}

/// A patching sweep: two prompts of the same token length, a metric, sites.
#[derive(Clone, Debug)]
pub struct PatchConfig {
    pub clean: Vec<u32>,
    pub corrupt: Vec<u32>,
    pub metric: LogitDiff,
    pub sites: Vec<PatchSite>,
    pub direction: PatchDirection,
    /// Patched runs per batched forward.
    pub batch: usize,
}

/// One sweep's grid.
#[derive(Clone, Debug, Serialize)]
pub struct PatchGrid {
    pub site: PatchSite,
    pub hook: String,
    /// Column labels: the tokens (positions; `clean/corrupt` where they differ) or `H0`,
    /// `H1`, ... (heads).
    pub columns: Vec<String>,
    /// The metric of each patched run `[layer][column]`.
    pub raw: Vec<Vec<f64>>,
    /// `(raw - corrupt) / (clean - corrupt)`: 0 = corrupt, 1 = clean.
    pub normalized: Vec<Vec<f64>>,
}

/// A patching sweep's result.
#[derive(Clone, Debug, Serialize)]
pub struct PatchResult {
    pub direction: PatchDirection,
    pub metric: LogitDiff,
    pub clean_tokens: Vec<String>,
    pub corrupt_tokens: Vec<String>,
    /// The metric on the clean and corrupt prompts, unpatched.
    pub clean_metric: f64,
    pub corrupt_metric: f64,
    pub grids: Vec<PatchGrid>,
    /// Patched runs, and the seconds the sweep took.
    pub runs: usize,
    pub seconds: f64,
}

/// One patched run: a site, a layer, a position or head.
#[derive(Clone, Copy)]
struct Job {
    grid: usize,
    layer: usize,
    index: usize,
}

/// Run the sweep. `progress(done, total)` is called after each batch. Errors: prompts
/// of different lengths (patching compares positions one for one), an empty prompt, a
/// metric equal on both prompts (the normalisation would divide by zero), heads on a
/// model whose attention output is not linear in `hook_z` per head (none here: every
/// supported family's is).
pub fn patch(
    model: &Model,
    cfg: &PatchConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PatchResult> {
    let started = Instant::now();
    let t = cfg.clean.len();
    if t == 0 || cfg.corrupt.is_empty() {
        return Err(Error::Input(
            "expected non-empty clean and corrupt prompts".into(),
        ));
    }
    if cfg.corrupt.len() != t {
        return Err(Error::Input(format!(
            "the clean prompt is {t} tokens and the corrupt one {}: patching compares positions \
             one for one, so they must have the same length (swap words that are one token \
             each, or pad the shorter with a neutral word); clean {:?}, corrupt {:?}",
            cfg.corrupt.len(),
            tokens(model, &cfg.clean),
            tokens(model, &cfg.corrupt)
        )));
    }
    if cfg.sites.is_empty() {
        return Err(Error::Input("expected at least one patch site".into()));
    }
    let n_layers = model.cfg().n_layers;
    let n_heads = model.cfg().n_heads;
    // Both runs, capturing every site the sweep reads.
    let mut capture = Hooks::new();
    for s in &cfg.sites {
        for l in 0..n_layers {
            capture.capture(s.point(l));
        }
    }
    // Patched runs start at their layer from the base run's residual there.
    for l in 0..n_layers {
        capture.capture(HookPoint::ResidPre(l));
    }
    let dev = model.device();
    let run = |ids: &[u32]| -> Result<(f64, pragma_model::hooks::Cache)> {
        let (logits, cache) =
            model
                .transformer
                .forward(&Batch::single(ids, dev)?, &capture, Logits::Last)?;
        let logits = logits.ok_or_else(|| Error::Input("no logits".into()))?;
        Ok((cfg.metric.of_rows(&logits)?[0], cache))
    };
    let (clean_metric, clean_cache) = run(&cfg.clean)?;
    let (corrupt_metric, corrupt_cache) = run(&cfg.corrupt)?;
    let span = clean_metric - corrupt_metric;
    if span.abs() < 1e-6 {
        return Err(Error::Input(format!(
            "the metric is {clean_metric:.6} on the clean prompt and {corrupt_metric:.6} on the \
             corrupt one: with no difference to explain, the normalisation (m - corrupt) / (clean \
             - corrupt) divides by zero; choose prompts or answers the model treats differently"
        )));
    }
    let (base, source, base_cache) = match cfg.direction {
        PatchDirection::Denoise => (&cfg.corrupt, &clean_cache, &corrupt_cache),
        PatchDirection::Noise => (&cfg.clean, &corrupt_cache, &clean_cache),
    };
    // Layer by layer, so each batch starts at one layer (the blocks before it are the
    // base run's, unchanged).
    let mut jobs = Vec::new();
    for layer in 0..n_layers {
        for (g, s) in cfg.sites.iter().enumerate() {
            let cols = if *s == PatchSite::Heads { n_heads } else { t };
            for index in 0..cols {
                jobs.push(Job {
                    grid: g,
                    layer,
                    index,
                });
            }
        }
    }
    let mut raw: Vec<Vec<Vec<f64>>> = cfg
        .sites
        .iter()
        .map(|s| vec![vec![f64::NAN; if *s == PatchSite::Heads { n_heads } else { t }]; n_layers])
        .collect();
    let batch = cfg.batch.max(1);
    let mut done = 0;
    let chunks: Vec<&[Job]> = jobs
        .chunk_by(|a, b| a.layer == b.layer)
        .flat_map(|same_layer| same_layer.chunks(batch))
        .collect();
    for chunk in chunks {
        let layer = chunk[0].layer;
        let mut hooks = Hooks::new();
        for (r, job) in chunk.iter().enumerate() {
            let site = cfg.sites[job.grid];
            let src = source.get_row(site.point(job.layer), 0)?; // [t, ...]
            hooks.extend(&patch_hook(site, job, &src, n_heads)?.for_rows(&[r]));
        }
        let prompts = vec![base.clone(); chunk.len()];
        let resid = base_cache
            .get(HookPoint::ResidPre(layer))? // [1, t, d]
            .repeat((chunk.len(), 1, 1))?;
        let (logits, _) = model.transformer.forward_from(
            &Batch::new(&prompts, dev)?,
            layer,
            &resid,
            &hooks,
            Logits::Last,
        )?;
        let logits = logits.ok_or_else(|| Error::Input("no logits".into()))?;
        for (job, m) in chunk.iter().zip(cfg.metric.of_rows(&logits)?) {
            raw[job.grid][job.layer][job.index] = m;
        }
        done += chunk.len();
        progress(done, jobs.len());
    }
    let (ct, xt, base_tokens) = position_labels(model, &cfg.clean, &cfg.corrupt);
    let grids = cfg
        .sites
        .iter()
        .zip(raw)
        .map(|(s, raw)| PatchGrid {
            site: *s,
            hook: s.hook_pattern().to_string(),
            columns: if *s == PatchSite::Heads {
                (0..n_heads).map(|h| format!("H{h}")).collect()
            } else {
                base_tokens.clone()
            },
            normalized: raw
                .iter()
                .map(|row| row.iter().map(|m| (m - corrupt_metric) / span).collect())
                .collect(),
            raw,
        })
        .collect();
    Ok(PatchResult {
        direction: cfg.direction,
        metric: cfg.metric.clone(),
        clean_tokens: ct,
        corrupt_tokens: xt,
        clean_metric,
        corrupt_metric,
        grids,
        runs: jobs.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The hook of one patched run, acting on every row (the caller restricts it).
fn patch_hook(site: PatchSite, job: &Job, src: &Tensor, n_heads: usize) -> Result<Hooks> {
    let mut h = Hooks::new();
    let point = site.point(job.layer);
    match site {
        PatchSite::Heads => {
            // x: [b, t, h, dh]; head `index` at every position from the source run.
            let src = src.unsqueeze(0)?; // [1, t, h, dh]
            let mut onehot = vec![0f32; n_heads];
            onehot[job.index] = 1.0;
            let m = Tensor::from_vec(onehot, (1, 1, n_heads, 1), src.device())?;
            let f = move |x: &Tensor, _: &pragma_model::hooks::SiteInfo| {
                let m = m.to_dtype(x.dtype())?;
                let keep = m.affine(-1.0, 1.0)?;
                x.broadcast_mul(&keep)?.add(
                    &src.to_dtype(x.dtype())?
                        .broadcast_mul(&m)?
                        .broadcast_as(x.shape())?,
                )
            };
            h.push(point, Action::Custom(Arc::new(f)), Positions::All);
        }
        _ => {
            let value = src.get(job.index)?.to_dtype(DType::F32)?; // [d]
            h.push(
                point,
                Action::Replace { value },
                Positions::Range(job.index, job.index + 1),
            );
        }
    }
    Ok(h)
}

/// The clean and corrupt tokens, and a label per position: the token, or
/// `clean/corrupt` where the prompts differ.
pub(crate) fn position_labels(
    model: &Model,
    clean: &[u32],
    corrupt: &[u32],
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (ct, xt) = (tokens(model, clean), tokens(model, corrupt));
    let labels = ct
        .iter()
        .zip(&xt)
        .map(|(c, x)| {
            if c == x {
                c.clone()
            } else {
                format!("{c}/{x}")
            }
        })
        .collect();
    (ct, xt, labels)
}

fn tokens(model: &Model, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&i| model.tokenizer.token_str(i)).collect()
}
