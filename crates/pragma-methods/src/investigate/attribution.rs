//! Attribution patching (Nanda 2023, "Attribution patching: activation patching at
//! industrial scale"; Syed et al. 2023): the first-order estimate of every patch at once,
//! `m(patched) - m(base) ~= (a_source - a_base) . dm/da |base`, from one forward and
//! one backward pass on the base prompt instead of one forward per patch.
//!
//! The gradients come from a differentiable copy of the forward built from candle's
//! autograd ops on the dense f32 weights ([`Transformer::dense_block`]), the same
//! arithmetic as the hooked forward (RMSNorm, rotate-half RoPE, grouped-query causal
//! attention, SiLU-gated MLP); its metric equals the hooked forward's and its gradients
//! equal finite differences of the hooked forward (tested). Llama-family models without
//! Gemma's extras (post-norms, sliding windows, GELU gate).
//!
//! [`Transformer::dense_block`]: pragma_model::llama::Transformer::dense_block

use std::time::Instant;

use candle_core::{DType, Tensor, Var, D};
use pragma_model::hooks::Hooks;
use pragma_model::llama::{Batch, DenseBlock, Logits};
use pragma_model::Model;

use super::metric::LogitDiff;
use super::patching::{PatchConfig, PatchDirection, PatchGrid, PatchResult, PatchSite};
use crate::error::{Error, Result};

/// Activations of one differentiable run, at every site, with the metric's gradient.
struct Run {
    metric: f64,
    /// Per layer: resid_pre `[t, d]`, attn_out `[t, d]`, mlp_out `[t, d]`, z `[t, h, dh]`
    /// and their gradients.
    acts: Vec<[Tensor; 4]>,
    grads: Vec<[Tensor; 4]>,
}

fn site_index(s: PatchSite) -> usize {
    match s {
        PatchSite::ResidPre => 0,
        PatchSite::AttnOut => 1,
        PatchSite::MlpOut => 2,
        PatchSite::Heads => 3,
    }
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let scale = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    x.broadcast_div(&scale)?.broadcast_mul(w)
}

/// Rotate-half RoPE on `x: [heads, t, dh]` with `cos, sin: [t, dh/2]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let (x1, x2) = (
        x.narrow(D::Minus1, 0, half)?,
        x.narrow(D::Minus1, half, half)?,
    );
    let a = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
    let b = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
    Tensor::cat(&[a, b], D::Minus1)
}

/// The dense weights and tables a differentiable forward needs.
struct Dense {
    blocks: Vec<DenseBlock>,
    final_gain: Tensor,
    /// `W_U[good] - W_U[bad]`, `[d]`.
    unembed_diff: Tensor,
}

fn dense(model: &Model, metric: &LogitDiff) -> Result<Dense> {
    let cfg = model.cfg();
    if cfg.gemma.is_some() {
        return Err(Error::Input(
            "attribution patching supports llama-family models without Gemma's post-norms and \
             sliding windows; use activation patching (pragma patch) for Gemma"
                .into(),
        ));
    }
    let blocks = (0..cfg.n_layers)
        .map(|l| model.transformer.dense_block(l))
        .collect::<pragma_model::Result<Vec<_>>>()?;
    let w_u = model.transformer.unembed()?.to_dtype(DType::F32)?;
    let unembed_diff = (w_u.get(metric.good as usize)? - w_u.get(metric.bad as usize)?)?;
    Ok(Dense {
        blocks,
        final_gain: model.transformer.final_norm_weight().to_dtype(DType::F32)?,
        unembed_diff,
    })
}

/// The metric on `ids` through the differentiable forward, with every site's
/// activation and gradient.
fn run(model: &Model, w: &Dense, ids: &[u32]) -> Result<Run> {
    let cfg = model.cfg();
    let (h, hk, dh) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
    let eps = cfg.rms_norm_eps;
    let t = ids.len();
    let dev = model.device();
    let inv = model.transformer.rope_inv_freq();
    let (mut c, mut s) = (
        Vec::with_capacity(t * inv.len()),
        Vec::with_capacity(t * inv.len()),
    );
    for p in 0..t {
        for f in inv {
            let a = p as f64 * f;
            c.push(a.cos() as f32);
            s.push(a.sin() as f32);
        }
    }
    let cos = Tensor::from_vec(c, (t, inv.len()), dev)?;
    let sin = Tensor::from_vec(s, (t, inv.len()), dev)?;
    let mask: Vec<f32> = (0..t * t)
        .map(|k| {
            if k % t <= k / t {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, (1, t, t), dev)?;
    let rep = h / hk;
    let kv_index = Tensor::from_vec(
        (0..h as u32).map(|i| i / rep as u32).collect::<Vec<_>>(),
        h,
        dev,
    )?;
    let scale = model.transformer.attn_scale();

    let mut x = model.transformer.embed_tokens(ids)?.to_dtype(DType::F32)?; // [t, d]
    let mut acts = Vec::with_capacity(w.blocks.len());
    // candle keeps gradients for variables only: each site adds a zero variable, whose
    // gradient is the site's.
    let mut probes: Vec<[Var; 4]> = Vec::with_capacity(w.blocks.len());
    let zero = |shape: &[usize]| Var::zeros(shape, DType::F32, dev);
    let d = cfg.d_model;
    for b in &w.blocks {
        let pr = [
            zero(&[t, d])?,
            zero(&[t, d])?,
            zero(&[t, d])?,
            zero(&[t, h, dh])?,
        ];
        let resid_pre = (&x + pr[0].as_tensor())?;
        let normed = rms_norm(&resid_pre, &b.attn_norm, eps)?;
        let mut qkv = normed.matmul(&b.w_qkv.t()?)?; // [t, (h + 2hk) dh]
        if let Some(bias) = &b.qkv_bias {
            qkv = qkv.broadcast_add(bias)?;
        }
        let mut q = qkv.narrow(1, 0, h * dh)?.reshape((t, h, dh))?;
        let mut k = qkv.narrow(1, h * dh, hk * dh)?.reshape((t, hk, dh))?;
        let v = qkv
            .narrow(1, (h + hk) * dh, hk * dh)?
            .reshape((t, hk, dh))?;
        if let (Some(qn), Some(kn)) = (&b.q_norm, &b.k_norm) {
            q = rms_norm(&q, qn, eps)?;
            k = rms_norm(&k, kn, eps)?;
        }
        let q = rope(&q.transpose(0, 1)?, &cos, &sin)?; // [h, t, dh]
        let k = rope(&k.transpose(0, 1)?.contiguous()?, &cos, &sin)?
            .contiguous()?
            .index_select(&kv_index, 0)?; // [h, t, dh]
        let v = v
            .transpose(0, 1)?
            .contiguous()?
            .index_select(&kv_index, 0)?; // [h, t, dh]
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?; // [h, t, t]
                                                                          // Subtracting a constant (the row max, detached) leaves softmax and its gradient.
        let m = scores.max_keepdim(D::Minus1)?.detach();
        let e = scores.broadcast_sub(&m)?.exp()?;
        let pattern = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
        let z = (pattern.matmul(&v)?.transpose(0, 1)? + pr[3].as_tensor())?; // [t, h, dh]
        let attn_out = (z.reshape((t, h * dh))?.matmul(&b.w_o.t()?)? + pr[1].as_tensor())?; // [t, d]
        let mid = (&resid_pre + &attn_out)?;
        let normed = rms_norm(&mid, &b.mlp_norm, eps)?;
        let gu = normed.matmul(&b.w_gate_up.t()?)?;
        let f = gu.dim(1)? / 2;
        let post = (candle_core::Tensor::silu(&gu.narrow(1, 0, f)?)? * gu.narrow(1, f, f)?)?;
        let mlp_out = (post.matmul(&b.w_down.t()?)? + pr[2].as_tensor())?;
        x = (&mid + &mlp_out)?;
        acts.push([resid_pre, attn_out, mlp_out, z]);
        probes.push(pr);
    }
    let last = rms_norm(&x.get(t - 1)?, &w.final_gain, eps)?; // [d]
    let metric_t = (last * &w.unembed_diff)?.sum_all()?;
    let metric = metric_t.to_scalar::<f32>()? as f64;
    let grads = metric_t.backward()?;
    let grads = probes
        .iter()
        .map(|pr| -> Result<[Tensor; 4]> {
            let g = |x: &Var| -> Result<Tensor> {
                Ok(match grads.get(x.as_tensor()) {
                    Some(g) => g.clone(),
                    None => x.as_tensor().zeros_like()?,
                })
            };
            Ok([g(&pr[0])?, g(&pr[1])?, g(&pr[2])?, g(&pr[3])?])
        })
        .collect::<Result<Vec<_>>>()?;
    let acts = acts.into_iter().map(|a| a.map(|x| x.detach())).collect();
    Ok(Run {
        metric,
        acts,
        grads,
    })
}

/// `dm/d(activation)` of the metric at every site of a prompt, as `[layer]` of
/// `[resid_pre, attn_out, mlp_out, z]` gradients, with the metric: for tests and
/// custom attributions.
pub fn gradients(
    model: &Model,
    ids: &[u32],
    metric: &LogitDiff,
) -> Result<(f64, Vec<[Tensor; 4]>)> {
    let w = dense(model, metric)?;
    let r = run(model, &w, ids)?;
    Ok((r.metric, r.grads))
}

/// Attribution patching with the same configuration and result shape as
/// [`super::patching::patch`] (`runs` counts the two forward-backward passes). The
/// unpatched metrics come from the hooked forward, so the normalisation matches.
pub fn attribution_patch(model: &Model, cfg: &PatchConfig) -> Result<PatchResult> {
    let started = Instant::now();
    let t = cfg.clean.len();
    if t == 0 || cfg.corrupt.len() != t {
        return Err(Error::Input(format!(
            "the clean prompt is {t} tokens and the corrupt one {}: patching compares positions \
             one for one, so they must have the same length",
            cfg.corrupt.len()
        )));
    }
    let w = dense(model, &cfg.metric)?;
    let clean = run(model, &w, &cfg.clean)?;
    let corrupt = run(model, &w, &cfg.corrupt)?;
    // The exact unpatched metrics, from the hooked forward.
    let exact = |ids: &[u32]| -> Result<f64> {
        let (l, _) = model.transformer.forward(
            &Batch::single(ids, model.device())?,
            &Hooks::new(),
            Logits::Last,
        )?;
        Ok(cfg
            .metric
            .of_rows(&l.ok_or_else(|| Error::Input("no logits".into()))?)?[0])
    };
    let (clean_metric, corrupt_metric) = (exact(&cfg.clean)?, exact(&cfg.corrupt)?);
    let span = clean_metric - corrupt_metric;
    if span.abs() < 1e-6 {
        return Err(Error::Input(format!(
            "the metric is {clean_metric:.6} on both prompts: the normalisation divides by zero"
        )));
    }
    let (base, source, base_metric) = match cfg.direction {
        PatchDirection::Denoise => (&corrupt, &clean, corrupt_metric),
        PatchDirection::Noise => (&clean, &corrupt, clean_metric),
    };
    let n_layers = model.cfg().n_layers;
    let (ct, xt, labels) = super::patching::position_labels(model, &cfg.clean, &cfg.corrupt);
    let mut grids = Vec::new();
    for site in &cfg.sites {
        let k = site_index(*site);
        let mut raw = Vec::with_capacity(n_layers);
        for l in 0..n_layers {
            let delta = (&source.acts[l][k] - &base.acts[l][k])?;
            let prod = (delta * &base.grads[l][k])?;
            let row: Vec<f32> = match site {
                // [t, h, dh] -> per head, summed over positions
                PatchSite::Heads => prod.sum(2)?.sum(0)?.to_vec1()?,
                _ => prod.sum(1)?.to_vec1()?,
            };
            raw.push(
                row.into_iter()
                    .map(|d| base_metric + d as f64)
                    .collect::<Vec<f64>>(),
            );
        }
        let normalized = raw
            .iter()
            .map(|row| row.iter().map(|m| (m - corrupt_metric) / span).collect())
            .collect();
        grids.push(PatchGrid {
            site: *site,
            hook: format!("{} (attribution)", site.hook_pattern()),
            columns: if *site == PatchSite::Heads {
                (0..model.cfg().n_heads).map(|h| format!("H{h}")).collect()
            } else {
                labels.clone()
            },
            raw,
            normalized,
        });
    }
    Ok(PatchResult {
        direction: cfg.direction,
        metric: cfg.metric.clone(),
        clean_tokens: ct,
        corrupt_tokens: xt,
        clean_metric,
        corrupt_metric,
        grids,
        runs: 2,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Pearson correlation of two grids' cells (attribution vs real patching).
pub fn grid_correlation(a: &PatchGrid, b: &PatchGrid) -> f64 {
    let x: Vec<f64> = a.normalized.iter().flatten().copied().collect();
    let y: Vec<f64> = b.normalized.iter().flatten().copied().collect();
    let n = x.len().min(y.len()) as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (p, q) in x.iter().zip(&y) {
        sxy += (p - mx) * (q - my);
        sxx += (p - mx) * (p - mx);
        syy += (q - my) * (q - my);
    }
    sxy / (sxx * syy).sqrt().max(1e-300)
}

/// Which estimate of the patching grids `pragma patch` computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchMethod {
    /// One forward per patch ([`super::patching::patch`]): exact.
    Patching,
    /// [`attribution_patch`]: the first-order estimate from one forward and backward
    /// per prompt.
    Attribution,
    /// Both, and how well the estimate tracks the exact grids.
    Both,
}

impl PatchMethod {
    /// `patching`, `attribution` or `both`.
    pub fn parse(s: &str) -> Result<PatchMethod> {
        Ok(match s {
            "patching" => PatchMethod::Patching,
            "attribution" => PatchMethod::Attribution,
            "both" => PatchMethod::Both,
            _ => {
                return Err(Error::Input(format!(
                    "method '{s}': expected patching, attribution or both"
                )))
            }
        })
    }
}

/// What [`patch_with`] computed.
#[derive(Clone, Debug)]
pub struct PatchOutcome {
    /// The exact grids, or the attribution estimate when that is the only method.
    pub result: PatchResult,
    /// With [`PatchMethod::Both`]: the attribution estimate beside the exact `result`.
    pub attribution: Option<PatchResult>,
    /// With [`PatchMethod::Both`]: Pearson r between estimate and exact, per grid (in
    /// `result.grids` order).
    pub correlations: Vec<f64>,
}

/// Run `method` on `cfg`. `progress(done, total)` follows the exact sweep's batches.
pub fn patch_with(
    model: &Model,
    cfg: &PatchConfig,
    method: PatchMethod,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PatchOutcome> {
    Ok(match method {
        PatchMethod::Attribution => PatchOutcome {
            result: attribution_patch(model, cfg)?,
            attribution: None,
            correlations: Vec::new(),
        },
        PatchMethod::Patching => PatchOutcome {
            result: super::patching::patch(model, cfg, progress)?,
            attribution: None,
            correlations: Vec::new(),
        },
        PatchMethod::Both => {
            let atp = attribution_patch(model, cfg)?;
            let exact = super::patching::patch(model, cfg, progress)?;
            let correlations = exact
                .grids
                .iter()
                .zip(&atp.grids)
                .map(|(e, a)| grid_correlation(e, a))
                .collect();
            PatchOutcome {
                result: exact,
                attribution: Some(atp),
                correlations,
            }
        }
    })
}
