//! The logit lens and direct logit attribution, at a prompt's last position.
//!
//! - Logit lens (nostalgebraist, "interpreting GPT: the logit lens", 2020): the residual
//!   stream entering each layer, and leaving the last, decoded through the final norm
//!   (its scale recomputed for each residual) and the unembedding.
//! - Direct logit attribution: the final residual is the sum of the embedding and every
//!   block's attention and MLP outputs; with the final norm's scale frozen at its value on
//!   the run (stated in the result), each term's dot product with `gain * (W_U[good] -
//!   W_U[bad])` is its contribution to the logit difference, and the terms sum to it
//!   exactly. Heads split each attention output: head `h` contributes `W_O[:, h] z_h`.
//!   As TransformerLens' `decompose_resid(apply_ln=True)` / `stack_head_results`, times
//!   the unembedding direction (tested against it on SmolLM2).

use candle_core::{DType, Tensor, D};
use pragma_model::hooks::{HookPoint, Hooks};
use pragma_model::llama::{Batch, Logits};
use pragma_model::Model;
use serde::Serialize;

use super::metric::LogitDiff;
use crate::error::{Error, Result};

/// One layer of the logit lens at the last position.
#[derive(Clone, Debug, Serialize)]
pub struct LensLayer {
    /// `blocks.L.hook_resid_pre`, or the last layer's `hook_resid_post`.
    pub hook: String,
    /// The most likely next tokens and their probabilities.
    pub top: Vec<(String, f32)>,
    /// The metric's logit difference decoded from this residual, when one was given.
    pub logit_diff: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LogitLens {
    pub tokens: Vec<String>,
    pub layers: Vec<LensLayer>,
}

/// The logit lens for `ids` at the last position: `n_layers + 1` rows (each layer's
/// `hook_resid_pre`, then the final `hook_resid_post`, whose row equals the model's own
/// output), each with its `top_k` tokens and the metric's logit difference.
pub fn logit_lens(
    model: &Model,
    ids: &[u32],
    metric: Option<&LogitDiff>,
    top_k: usize,
) -> Result<LogitLens> {
    let n = model.cfg().n_layers;
    let mut points: Vec<HookPoint> = (0..n).map(HookPoint::ResidPre).collect();
    points.push(HookPoint::ResidPost(n - 1));
    let mut hooks = Hooks::new();
    for p in &points {
        hooks.capture(*p);
    }
    let (_, cache) =
        model
            .transformer
            .forward(&Batch::single(ids, model.device())?, &hooks, Logits::None)?;
    let t = ids.len();
    let mut rows = Vec::new();
    for p in &points {
        rows.push(cache.get_row(*p, 0)?.get(t - 1)?.to_dtype(DType::F32)?);
    }
    let logits = model.transformer.unembed_resid(&Tensor::stack(&rows, 0)?)?; // [n+1, vocab]
    let logits: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
    let probs: Vec<Vec<f32>> = logits.iter().map(|l| softmax(l)).collect();
    let layers = points
        .iter()
        .zip(logits.iter().zip(&probs))
        .map(|(p, (l, pr))| {
            let mut idx: Vec<usize> = (0..pr.len()).collect();
            let k = top_k.clamp(1, pr.len());
            idx.select_nth_unstable_by(k - 1, |&a, &b| pr[b].total_cmp(&pr[a]));
            idx.truncate(k);
            idx.sort_by(|&a, &b| pr[b].total_cmp(&pr[a]));
            LensLayer {
                hook: p.to_string(),
                top: idx
                    .into_iter()
                    .map(|i| (model.tokenizer.token_str(i as u32), pr[i]))
                    .collect(),
                logit_diff: metric.map(|m| l[m.good as usize] as f64 - l[m.bad as usize] as f64),
            }
        })
        .collect();
    Ok(LogitLens {
        tokens: ids.iter().map(|&i| model.tokenizer.token_str(i)).collect(),
        layers,
    })
}

/// Direct logit attribution at the last position.
#[derive(Clone, Debug, Serialize)]
pub struct Dla {
    pub metric: LogitDiff,
    /// The model's logit difference, and the sum of the components (equal up to float
    /// error; the difference is reported so a reader can see it).
    pub logit_diff: f64,
    pub sum_of_components: f64,
    /// The final norm's scale `sqrt(mean(x^2) + eps)` of the last position, frozen.
    pub final_scale: f64,
    /// `embed`, then `L_attn_out` and `L_mlp_out` per layer (TransformerLens' labels of
    /// `decompose_resid`), with their contributions.
    pub components: Vec<(String, f64)>,
    /// Per layer and head `[layer][head]`: head `h`'s share of `L_attn_out` (`None` for
    /// Gemma, whose attention output is normalised after the heads are summed).
    pub heads: Option<Vec<Vec<f64>>>,
}

/// Direct logit attribution of `metric` for `ids` at the last position (see the module
/// docs).
pub fn direct_logit_attribution(model: &Model, ids: &[u32], metric: &LogitDiff) -> Result<Dla> {
    let cfg = model.cfg();
    let n = cfg.n_layers;
    let linear_heads = cfg.gemma.is_none();
    let mut hooks = Hooks::new();
    hooks.capture(HookPoint::Embed);
    for l in 0..n {
        hooks.capture(HookPoint::AttnOut(l));
        hooks.capture(HookPoint::MlpOut(l));
        if linear_heads {
            hooks.capture(HookPoint::AttnZ(l));
        }
    }
    hooks.capture(HookPoint::LnFinalScale);
    let (logits, cache) =
        model
            .transformer
            .forward(&Batch::single(ids, model.device())?, &hooks, Logits::Last)?;
    let logits = logits.ok_or_else(|| Error::Input("no logits".into()))?;
    let logit_diff = metric.of_rows(&logits)?[0];
    let t = ids.len();
    let last = |p: HookPoint| -> Result<Tensor> {
        Ok(cache.get_row(p, 0)?.get(t - 1)?.to_dtype(DType::F32)?)
    };
    let scale = last(HookPoint::LnFinalScale)?
        .flatten_all()?
        .to_vec1::<f32>()?[0] as f64;
    // gain * (W_U[good] - W_U[bad]) / scale: [d]
    let w_u = model.transformer.unembed()?.to_dtype(DType::F32)?;
    let gain = model.transformer.final_norm_weight().to_dtype(DType::F32)?;
    let dir = ((w_u.get(metric.good as usize)? - w_u.get(metric.bad as usize)?)? * gain)?;
    let dir = (dir / scale)?;
    let dot = |x: &Tensor| -> Result<f64> { Ok((x * &dir)?.sum_all()?.to_scalar::<f32>()? as f64) };
    let mut components = vec![("embed".to_string(), dot(&last(HookPoint::Embed)?)?)];
    for l in 0..n {
        components.push((format!("{l}_attn_out"), dot(&last(HookPoint::AttnOut(l))?)?));
        components.push((format!("{l}_mlp_out"), dot(&last(HookPoint::MlpOut(l))?)?));
    }
    let heads = if linear_heads {
        let (h, dh) = (cfg.n_heads, cfg.d_head);
        let mut out = Vec::with_capacity(n);
        for l in 0..n {
            let z = last(HookPoint::AttnZ(l))?; // [h, dh]
            let w_o = model.transformer.attn_out_weight(l)?; // [d, h*dh]
                                                             // Each head's output projected on the direction: (dir^T W_O[:, h]) . z_h
            let proj = dir.unsqueeze(0)?.matmul(&w_o)?.reshape((h, dh))?; // [h, dh]
            let per_head: Vec<f32> = (proj * z)?.sum(D::Minus1)?.to_vec1()?;
            out.push(per_head.into_iter().map(f64::from).collect());
        }
        Some(out)
    } else {
        None
    };
    let sum_of_components = components.iter().map(|c| c.1).sum();
    Ok(Dla {
        metric: metric.clone(),
        logit_diff,
        sum_of_components,
        final_scale: scale,
        components,
        heads,
    })
}

fn softmax(l: &[f32]) -> Vec<f32> {
    let max = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = l.iter().map(|&x| ((x - max) as f64).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|&x| (x / z) as f32).collect()
}
