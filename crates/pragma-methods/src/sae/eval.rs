//! Evaluating an SAE (`pragma sae eval`): reconstruction and sparsity on held-out
//! activations, and the language-model loss with the SAE spliced in.
//!
//! Definitions (per token `x`, reconstruction `x̂`, latents `f`; `E` = mean over tokens;
//! control-token rows such as BOS are left out, as SAELens' `exclude_special_tokens`):
//! - `explained_variance = 1 - E||x - x̂||² / E||x - μ||²` with `μ` the mean over the
//!   evaluated tokens (the intended definition; SAELens' coded `explained_variance` has a
//!   different denominator and is not used), and `fvu = 1 - explained_variance`;
//! - `mse = E||x - x̂||²` (summed over dimensions), `mse_per_element = mse / d_in`;
//! - `cosine = E cos(x, x̂)`, `l2_ratio = E ||x̂|| / ||x||`,
//!   `relative_reconstruction_bias = E||x̂||² / E<x, x̂>` (Gated SAEs, arXiv 2404.16014,
//!   Eq. 10; 1 = no shrinkage);
//! - `l0 = E #(f > 0)`, `l1 = E Σ f`;
//! - per latent, `density = #tokens(f > 0) / #tokens`: `dead_fraction` (density 0),
//!   `dense_1pct` (> 1%), `dense_10pct` (> 10%), and the histogram of
//!   `log10(density + 1e-10)`.
//! - With the model: next-token cross-entropy clean, with the SAE's reconstruction in place
//!   of the hook's activation, with it zero-ablated and mean-ablated (positions after the
//!   leading BOS); `ce_loss_score = (CE_zero - CE_sae) / (CE_zero - CE_clean)`,
//!   `delta_ce = CE_sae - CE_clean` (Gao et al., Gemma Scope), `KL(p_clean || p)` per
//!   token and `kl_score = (KL_zero - KL_sae) / KL_zero`.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};
use pragma_model::hooks::{Hooks, Positions};
use pragma_model::llama::{Batch, Logits};
use pragma_model::Model;
use serde::{Deserialize, Serialize};

use super::training::Activations;
use super::{Sae, Splice};
use crate::error::{Error, Result};

/// Reconstruction and sparsity over held-out tokens. The metrics are over the tokens
/// whose norm is at most 10x the median norm; a few secondary attention sinks (dozens
/// per 100k tokens, norms 30-150x the median) would otherwise carry most of the variance
/// and decide the explained variance alone. `explained_variance_all_tokens` includes them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reconstruction {
    pub n_tokens: u64,
    /// Tokens left out of the metrics as norm outliers, and the norm cut.
    pub n_outliers: u64,
    pub outlier_norm: f64,
    pub explained_variance_all_tokens: f64,
    pub explained_variance: f64,
    pub fvu: f64,
    pub mse: f64,
    pub mse_per_element: f64,
    pub cosine: f64,
    pub l2_ratio: f64,
    pub relative_reconstruction_bias: f64,
    pub l0: f64,
    pub l1: f64,
    pub dead_fraction: f64,
    pub dense_1pct: f64,
    pub dense_10pct: f64,
    /// `(lower edge of the log10-density bin, latents in it)`, bins of 0.5 from -10.
    pub log10_density_histogram: Vec<(f64, u64)>,
    /// Per latent, `log10(density + 1e-10)` (SAELens' `sparsity.safetensors` values).
    pub log10_density: Vec<f32>,
    /// The mean activation `μ` (for mean ablation).
    #[serde(skip)]
    pub mean: Vec<f32>,
}

/// Language-model loss with the SAE spliced in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LossRecovered {
    pub n_sequences: usize,
    pub n_predictions: u64,
    pub ce_clean: f64,
    pub ce_with_sae: f64,
    pub ce_zero_ablated: f64,
    pub ce_mean_ablated: f64,
    pub ce_loss_score: f64,
    pub delta_ce: f64,
    pub kl_with_sae: f64,
    pub kl_zero_ablated: f64,
    pub kl_score: f64,
}

/// Stream `src`'s rows in order (at most `max_tokens`) through the SAE.
pub fn reconstruction(
    sae: &Sae,
    src: &dyn Activations,
    max_tokens: u64,
    batch: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Reconstruction> {
    let d = sae.cfg.d_in;
    if src.width() != d {
        return Err(Error::Input(format!(
            "the activations have width {} but the SAE reads d_in = {d}",
            src.width()
        )));
    }
    let total = src.n_tokens().min(max_tokens);
    if total == 0 {
        return Err(Error::Input("no tokens to evaluate on".into()));
    }
    let n = sae.cfg.d_sae;
    // First pass: token norms (the outlier cut), and no NaN/inf anywhere.
    let mut norms = Vec::with_capacity(total as usize);
    let mut done = 0u64;
    while done < total {
        let rows: Vec<u64> = (done..(done + batch as u64).min(total)).collect();
        let xs = src.gather(&rows)?;
        for (r, &row) in xs.chunks(d).zip(&rows) {
            if r.iter().any(|v| !v.is_finite()) {
                return Err(Error::Input(format!(
                    "{} has NaN/inf values at row {}; re-cache the store",
                    src.hook(),
                    src.source_row(row)
                )));
            }
            norms.push(r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt());
        }
        done += rows.len() as u64;
    }
    let mut sorted = norms.clone();
    sorted.sort_by(f64::total_cmp);
    let cut = 10.0 * sorted[sorted.len() / 2];
    let (mut sse, mut sum_sq, mut cos, mut ratio, mut xh_sq, mut x_xh, mut l0, mut l1) =
        (0f64, 0f64, 0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
    let (mut sse_all, mut sum_sq_all) = (0f64, 0f64);
    let mut sum = vec![0f64; d];
    let mut sum_all = vec![0f64; d];
    let mut fires = vec![0u64; n];
    let mut kept = 0u64;
    let mut done = 0u64;
    while done < total {
        let rows: Vec<u64> = (done..(done + batch as u64).min(total)).collect();
        let xs = src.gather(&rows)?;
        let r = rows.len();
        let x = Tensor::from_vec(xs.clone(), (r, d), &Device::Cpu)?;
        let (f, xh) = sae.forward_with(&x, &|f| Ok(f.clone()))?;
        let fv: Vec<f32> = f.flatten_all()?.to_vec1()?;
        let hv: Vec<f32> = xh.flatten_all()?.to_vec1()?;
        for t in 0..r {
            let (xr, hr) = (&xs[t * d..(t + 1) * d], &hv[t * d..(t + 1) * d]);
            let (mut e2, mut xx, mut hh, mut xh_dot) = (0f64, 0f64, 0f64, 0f64);
            for i in 0..d {
                let (a, b) = (xr[i] as f64, hr[i] as f64);
                e2 += (a - b) * (a - b);
                xx += a * a;
                hh += b * b;
                xh_dot += a * b;
                sum_all[i] += a;
            }
            sse_all += e2;
            sum_sq_all += xx;
            if norms[(done as usize) + t] > cut {
                continue;
            }
            kept += 1;
            xr.iter()
                .zip(sum.iter_mut())
                .for_each(|(a, s)| *s += *a as f64);
            sse += e2;
            sum_sq += xx;
            xh_sq += hh;
            x_xh += xh_dot;
            let (nx, nh) = (xx.sqrt(), hh.sqrt());
            cos += if nx > 0.0 && nh > 0.0 {
                xh_dot / (nx * nh)
            } else {
                0.0
            };
            ratio += if nx > 0.0 { nh / nx } else { 0.0 };
            for (j, &v) in fv[t * n..(t + 1) * n].iter().enumerate() {
                if v > 0.0 {
                    fires[j] += 1;
                    l0 += 1.0;
                }
                l1 += v as f64;
            }
        }
        done += r as u64;
        progress(done, total);
    }
    let all = total as f64;
    let mean_all: Vec<f64> = sum_all.iter().map(|s| s / all).collect();
    let var_all = sum_sq_all / all - mean_all.iter().map(|m| m * m).sum::<f64>();
    let ev_all = 1.0 - (sse_all / all) / var_all.max(1e-30);
    let n_outliers = total - kept;
    let total = kept.max(1);
    let tn = total as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / tn).collect();
    let variance = sum_sq / tn - mean.iter().map(|m| m * m).sum::<f64>();
    let ev = 1.0 - (sse / tn) / variance.max(1e-30);
    let density: Vec<f64> = fires.iter().map(|&c| c as f64 / tn).collect();
    let log10_density: Vec<f32> = density.iter().map(|p| (p + 1e-10).log10() as f32).collect();
    let mut hist = vec![0u64; 21];
    for v in &log10_density {
        let bin = (((*v as f64) + 10.0) / 0.5).floor().clamp(0.0, 20.0) as usize;
        hist[bin] += 1;
    }
    let frac =
        |pred: &dyn Fn(f64) -> bool| density.iter().filter(|p| pred(**p)).count() as f64 / n as f64;
    Ok(Reconstruction {
        n_tokens: total,
        n_outliers,
        outlier_norm: cut,
        explained_variance_all_tokens: ev_all,
        explained_variance: ev,
        fvu: 1.0 - ev,
        mse: sse / tn,
        mse_per_element: sse / tn / d as f64,
        cosine: cos / tn,
        l2_ratio: ratio / tn,
        relative_reconstruction_bias: xh_sq / x_xh,
        l0: l0 / tn,
        l1: l1 / tn,
        dead_fraction: frac(&|p| p == 0.0),
        dense_1pct: frac(&|p| p > 0.01),
        dense_10pct: frac(&|p| p > 0.1),
        log10_density_histogram: hist
            .into_iter()
            .enumerate()
            .map(|(i, c)| (-10.0 + 0.5 * i as f64, c))
            .collect(),
        log10_density,
        mean: mean.into_iter().map(|m| m as f32).collect(),
    })
}

/// Mean next-token cross-entropy and mean KL(p_ref || p) per prediction for `seqs` under
/// `hooks` (the reference log-probabilities `ref_lp` per sequence, when given).
fn lm_loss(
    model: &Model,
    seqs: &[Vec<u32>],
    hooks: &Hooks,
    ref_lp: Option<&[Tensor]>,
) -> Result<(f64, f64, u64, Vec<Tensor>)> {
    let (mut ce, mut kl, mut n) = (0f64, 0f64, 0u64);
    let mut lps = Vec::with_capacity(seqs.len());
    for (i, s) in seqs.iter().enumerate() {
        if s.len() < 2 {
            lps.push(Tensor::zeros((0, 1), DType::F32, &Device::Cpu)?);
            continue;
        }
        let (logits, _) =
            model
                .transformer
                .forward(&Batch::single(s, model.device())?, hooks, Logits::All)?;
        let logits = logits
            .ok_or_else(|| Error::Input("no logits".into()))?
            .get(0)?
            .to_dtype(DType::F32)?; // [t, vocab]
        let t = s.len();
        let lp = candle_nn_log_softmax(&logits.narrow(0, 0, t - 1)?)?; // predictions 0..t-1
        let targets = Tensor::from_vec(s[1..].to_vec(), t - 1, &Device::Cpu)?;
        let picked = lp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
        ce -= picked.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        if let Some(r) = ref_lp {
            let p = r[i].exp()?;
            let k = (p * (&r[i] - &lp)?)?.sum(D::Minus1)?;
            kl += k.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        }
        n += (t - 1) as u64;
        lps.push(lp);
    }
    let nf = n.max(1) as f64;
    Ok((ce / nf, kl / nf, n, lps))
}

fn candle_nn_log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// Cross-entropy and KL with the SAE spliced in at its hook, against clean, zero- and
/// mean-ablated runs, on `seqs` (token ids as the model reads them). Positions from
/// `from` on are replaced (1 keeps a leading BOS).
pub fn loss_recovered(
    model: &Model,
    sae: Arc<Sae>,
    seqs: &[Vec<u32>],
    mean: &[f32],
    from: usize,
) -> Result<LossRecovered> {
    let n_layers = model.cfg().n_layers;
    let point = sae.hook_point(n_layers)?;
    let at = Positions::From(from);
    let (ce_clean, _, n, clean_lp) = lm_loss(model, seqs, &Hooks::new(), None)?;
    let splice = Splice::default().hooks(sae.clone(), n_layers, at.clone())?;
    let (ce_sae, kl_sae, _, _) = lm_loss(model, seqs, &splice, Some(&clean_lp))?;
    let mut zero = Hooks::new();
    zero.zero(point, at.clone());
    let (ce_zero, kl_zero, _, _) = lm_loss(model, seqs, &zero, Some(&clean_lp))?;
    let mut mean_h = Hooks::new();
    let mu = Tensor::from_vec(mean.to_vec(), mean.len(), &Device::Cpu)?;
    let shape = point
        .per_token_shape(model.cfg())
        .ok_or_else(|| Error::Input(format!("{point}: no per-token shape")))?;
    mean_h.replace(point, mu.reshape(shape)?, at);
    let (ce_mean, _, _, _) = lm_loss(model, seqs, &mean_h, Some(&clean_lp))?;
    Ok(LossRecovered {
        n_sequences: seqs.len(),
        n_predictions: n,
        ce_clean,
        ce_with_sae: ce_sae,
        ce_zero_ablated: ce_zero,
        ce_mean_ablated: ce_mean,
        ce_loss_score: (ce_zero - ce_sae) / (ce_zero - ce_clean),
        delta_ce: ce_sae - ce_clean,
        kl_with_sae: kl_sae,
        kl_zero_ablated: kl_zero,
        kl_score: (kl_zero - kl_sae) / kl_zero,
    })
}

/// The full report of `pragma sae eval`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub sae: String,
    pub hook: String,
    pub arch: String,
    pub d_in: usize,
    pub d_sae: usize,
    pub data: serde_json::Value,
    pub reconstruction: Reconstruction,
    pub loss: Option<LossRecovered>,
}

impl EvalReport {
    /// A markdown summary.
    pub fn markdown(&self) -> String {
        let r = &self.reconstruction;
        let mut s = format!(
            "# SAE evaluation: {}\n\n{} SAE, {} latents on `{}` (d_in {}), {} held-out tokens \
             (control tokens left out; {} norm outliers above {:.0}, 10x the median norm, left out \
             of the table: with them the explained variance is {:.4}).\n\n| metric | value |\n|---|---|\n",
            self.sae, self.arch, self.d_sae, self.hook, self.d_in, r.n_tokens, r.n_outliers,
            r.outlier_norm, r.explained_variance_all_tokens
        );
        let rows: [(&str, String); 12] = [
            (
                "explained variance (1 - E||x-x̂||²/E||x-μ||²)",
                format!("{:.4}", r.explained_variance),
            ),
            ("FVU", format!("{:.4}", r.fvu)),
            ("MSE (per token, summed over d_in)", format!("{:.4}", r.mse)),
            ("cosine(x, x̂)", format!("{:.4}", r.cosine)),
            ("L2 ratio ||x̂||/||x||", format!("{:.4}", r.l2_ratio)),
            (
                "relative reconstruction bias",
                format!("{:.4}", r.relative_reconstruction_bias),
            ),
            ("L0", format!("{:.2}", r.l0)),
            ("L1", format!("{:.3}", r.l1)),
            (
                "dead latents (density 0)",
                format!("{:.2}%", 100.0 * r.dead_fraction),
            ),
            (
                "dense latents (> 1% of tokens)",
                format!("{:.2}%", 100.0 * r.dense_1pct),
            ),
            (
                "dense latents (> 10% of tokens)",
                format!("{:.2}%", 100.0 * r.dense_10pct),
            ),
            ("tokens", r.n_tokens.to_string()),
        ];
        for (k, v) in rows {
            s.push_str(&format!("| {k} | {v} |\n"));
        }
        if let Some(l) = &self.loss {
            s.push_str(&format!(
                "\nWith the SAE spliced in ({} sequences, {} predictions; positions after the BOS):\n\n\
                 | condition | CE (nats) | KL to clean |\n|---|---|---|\n\
                 | clean | {:.4} | 0 |\n| SAE reconstruction | {:.4} | {:.4} |\n\
                 | zero-ablated | {:.4} | {:.4} |\n| mean-ablated | {:.4} | |\n\n\
                 ce_loss_score {:.4}, delta CE {:+.4} nats, kl_score {:.4}\n",
                l.n_sequences,
                l.n_predictions,
                l.ce_clean,
                l.ce_with_sae,
                l.kl_with_sae,
                l.ce_zero_ablated,
                l.kl_zero_ablated,
                l.ce_mean_ablated,
                l.ce_loss_score,
                l.delta_ce,
                l.kl_score
            ));
        }
        s.push_str("\nLatent density histogram (log10 of the share of tokens a latent fires on):\n\n| log10 density | latents |\n|---|---|\n");
        for (lo, c) in &r.log10_density_histogram {
            if *c > 0 {
                s.push_str(&format!("| [{lo:.1}, {:.1}) | {c} |\n", lo + 0.5));
            }
        }
        s
    }
}

/// What [`evaluate`] does.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    /// Store tokens evaluated at most.
    pub max_tokens: u64,
    /// Store sequences run through the model for the loss metrics (0 skips them).
    pub ce_sequences: usize,
    /// Rows per reconstruction batch.
    pub batch: usize,
}

/// The `pragma sae eval` workflow: reconstruction and sparsity over `store` (which must
/// hold the SAE's hook), and, with `model` (the store's own model, checked by sha256),
/// the loss with the SAE spliced in on the store's first `ce_sequences` sequences.
pub fn evaluate(
    sae: &Sae,
    name: &str,
    store: &pragma_store::Store,
    model: Option<&Model>,
    cfg: &EvalConfig,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<EvalReport> {
    let src = super::training::StoreHook::new(store, &sae.cfg.hook_name).map_err(|e| {
        Error::Input(format!(
            "{e}: the store must hold the SAE's hook (cache it with --hooks {})",
            sae.cfg.hook_name
        ))
    })?;
    let rec = reconstruction(sae, &src, cfg.max_tokens, cfg.batch, &mut |d, t| {
        progress("reconstruction", d, t)
    })?;
    let loss = match model {
        Some(model) if cfg.ce_sequences > 0 => {
            let sha = pragma_store::writer::model_sha256(model)?;
            if sha != store.manifest.model.sha256 {
                return Err(Error::Input(format!(
                    "{} was cached from another model ({}); evaluate with that model, or skip the \
                     loss metrics",
                    store.dir.display(),
                    store.manifest.model.spec
                )));
            }
            // Whole sequences in store order, read a shard's worth at a time.
            let mut seqs: Vec<Vec<u32>> = Vec::new();
            let mut last_seq = None;
            'shards: for sh in 0..store.n_shards() {
                let (first, n) = store.shard_span(sh);
                let table = store.token_rows(first, first + n)?;
                for (&s, &t) in table.seq.iter().zip(&table.token) {
                    if last_seq != Some(s) {
                        if seqs.len() == cfg.ce_sequences {
                            break 'shards;
                        }
                        seqs.push(Vec::new());
                        last_seq = Some(s);
                    }
                    if let Some(v) = seqs.last_mut() {
                        v.push(t);
                    }
                }
            }
            progress("loss with the SAE spliced in", 0, seqs.len() as u64);
            let from = usize::from(store.manifest.settings.bos.is_some());
            Some(loss_recovered(
                model,
                Arc::new(sae.clone()),
                &seqs,
                &rec.mean,
                from,
            )?)
        }
        _ => None,
    };
    Ok(EvalReport {
        sae: name.to_string(),
        hook: sae.cfg.hook_name.clone(),
        arch: sae.cfg.arch.name().into(),
        d_in: sae.cfg.d_in,
        d_sae: sae.cfg.d_sae,
        data: src.describe(),
        reconstruction: rec,
        loss,
    })
}

/// Cache `data` (a corpus file or built-in name already resolved to a path) at the SAE's
/// hook into a store at `dir` for [`evaluate`] (`sae eval --data`): f32, the default input
/// rule, whole documents split to the model's context at most 128 tokens, at most
/// `max_tokens`. Resumable like every store.
pub fn cache_for_eval(
    model: &Model,
    sae: &Sae,
    data: &std::path::Path,
    dir: &std::path::Path,
    max_tokens: u64,
) -> Result<()> {
    use pragma_store::corpus::{Format, TextSplit};
    let point = sae.hook_point(model.cfg().n_layers)?;
    let opts = pragma_store::writer::CacheOptions {
        format: Format::detect(data, TextSplit::Blocks),
        data: data.to_path_buf(),
        hooks: vec![point],
        out: dir.to_path_buf(),
        ctx: 128.min(model.cfg().context_length),
        batch: 8,
        dtype: DType::F32,
        input: pragma_model::InputRule::default(),
        long_docs: pragma_store::manifest::LongDocs::Split,
        max_tokens: Some(max_tokens),
        skip_docs: 0,
        shard_tokens: None,
        stop_after_shards: None,
        dry_run: false,
        part: None,
    };
    pragma_store::writer::cache(model, &opts, &mut ())?;
    Ok(())
}

/// Where [`evaluate_to_folder`] reads activations.
#[derive(Clone, Debug)]
pub enum EvalData {
    /// A held-out activation store holding the SAE's hook.
    Store(std::path::PathBuf),
    /// A corpus file (a built-in name already resolved to a path): cached at the SAE's
    /// hook into `OUT/eval-store` first ([`cache_for_eval`], resumable), then evaluated.
    Corpus(std::path::PathBuf),
}

/// `pragma sae eval`: [`evaluate`] on `data` and write `eval.json` and `eval.md` into
/// `out` (created if missing), atomically. `model` is needed to cache a corpus and for
/// the loss metrics (`cfg.ce_sequences > 0`); without it those are refused or skipped.
/// `progress(what, done, total)` as in [`evaluate`].
///
/// Errors: a corpus without a model, a store without the SAE's hook, unwritable `out`.
pub fn evaluate_to_folder(
    sae: &Sae,
    name: &str,
    data: &EvalData,
    model: Option<&Model>,
    cfg: &EvalConfig,
    out: &std::path::Path,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<EvalReport> {
    let store_dir = match data {
        EvalData::Store(dir) => dir.clone(),
        EvalData::Corpus(path) => {
            let model = model.ok_or_else(|| {
                Error::Input(format!(
                    "caching {} for the evaluation needs the model",
                    path.display()
                ))
            })?;
            let dir = out.join("eval-store");
            progress(
                &format!(
                    "caching {} at {} into {}",
                    path.display(),
                    sae.cfg.hook_name,
                    dir.display()
                ),
                0,
                1,
            );
            cache_for_eval(model, sae, path, &dir, cfg.max_tokens)?;
            dir
        }
    };
    let store = pragma_store::Store::open(&store_dir)?;
    let model = model.filter(|_| cfg.ce_sequences > 0);
    let report = evaluate(sae, name, &store, model, cfg, progress)?;
    std::fs::create_dir_all(out).map_err(|source| pragma_model::Error::Write {
        path: out.to_path_buf(),
        source,
    })?;
    pragma_model::io::write_json(&out.join("eval.json"), &report)?;
    pragma_model::io::write_atomic(&out.join("eval.md"), report.markdown().as_bytes())?;
    Ok(report)
}
