//! Sparse autoencoders (SAEs): the model, its forward pass and splicing it into the
//! hooked transformer. Definitions (shapes, activations, the training objective) are in
//! `docs/SAE.md`; names and shapes follow SAELens (`W_enc [d_in, d_sae]`,
//! `W_dec [d_sae, d_in]`, row vectors), so SAELens and EleutherAI sparsify folders load
//! unchanged ([`loading`]).
//!
//! ```no_run
//! use pragma_methods::sae::Sae;
//! let sae = Sae::load(std::path::Path::new("runs/sae"))?;    // SAELens or sparsify folder
//! let x = candle_core::Tensor::zeros((4, sae.cfg.d_in), candle_core::DType::F32, &candle_core::Device::Cpu)?;
//! let f = sae.encode(&x)?;        // [4, d_sae]
//! let x_hat = sae.decode(&f)?;    // [4, d_in]
//! # Ok::<(), pragma_methods::Error>(())
//! ```

pub mod dashboard;
pub mod eval;
pub mod latents;
pub mod loading;
pub mod preset;
pub mod training;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};
use pragma_model::hooks::{HookPoint, Hooks, Positions, SiteInfo};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The activation function, with its sparsity parameter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Arch {
    /// `relu(z)` (SAELens `standard`), trained with a decoder-norm-weighted L1 penalty.
    Relu,
    /// The `k` largest entries of `relu(z)` per token.
    TopK { k: usize },
    /// `z · 1[z > threshold_j]`, per-latent thresholds.
    JumpRelu,
    /// Training: the `k · batch` largest entries of `relu(z)` over a batch; inference:
    /// JumpReLU with one global threshold (stored per latent, all equal).
    BatchTopK { k: usize },
}

impl Arch {
    /// Parse `relu|standard`, `topk`, `jumprelu`, `batchtopk` (with `k` for the top-k ones).
    pub fn parse(name: &str, k: Option<usize>) -> Result<Arch> {
        let need_k = |arch: &str| {
            k.ok_or_else(|| Error::Input(format!("architecture '{arch}' needs k (--k)")))
        };
        Ok(match name {
            "relu" | "standard" => Arch::Relu,
            "topk" => Arch::TopK { k: need_k("topk")? },
            "jumprelu" => Arch::JumpRelu,
            "batchtopk" => Arch::BatchTopK {
                k: need_k("batchtopk")?,
            },
            other => {
                return Err(Error::Input(format!(
                    "architecture '{other}': expected topk, batchtopk, jumprelu or relu"
                )))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Arch::Relu => "relu",
            Arch::TopK { .. } => "topk",
            Arch::JumpRelu => "jumprelu",
            Arch::BatchTopK { .. } => "batchtopk",
        }
    }
}

/// Per-token normalisation applied around the SAE (SAELens `normalize_activations`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// None (a training-time input scale is folded into the weights on save).
    None,
    /// `x · sqrt(d_in) / ||x||` in, the inverse out.
    ConstantNormRescale,
    /// Centre and divide by (unbiased standard deviation + 1e-5) in, the inverse out (as SAELens).
    LayerNorm,
}

/// Everything about an SAE except its weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SaeConfig {
    pub arch: Arch,
    pub d_in: usize,
    pub d_sae: usize,
    /// TransformerLens hook name the SAE reads, e.g. `blocks.6.hook_resid_post`.
    pub hook_name: String,
    /// Subtract `b_dec` from the input before encoding (SAELens default true).
    pub apply_b_dec_to_input: bool,
    pub normalize: Normalize,
    /// TopK only: multiply pre-activations by the decoder row norms before the top-k,
    /// divide the latents by them before decoding (SAELens training checkpoints).
    pub rescale_acts_by_decoder_norm: bool,
    /// `hook_z` SAEs read `[.., n_heads, d_head]` flattened to `[.., n_heads · d_head]`.
    pub reshape_hook_z: bool,
    pub model_name: Option<String>,
    /// Free-form provenance kept from the file (SAELens `metadata`, sparsify run config).
    pub metadata: serde_json::Value,
}

/// A sparse autoencoder: config and f32 weights in SAELens layout.
#[derive(Clone, Debug)]
pub struct Sae {
    pub cfg: SaeConfig,
    /// `[d_in, d_sae]`
    pub w_enc: Tensor,
    /// `[d_sae]`
    pub b_enc: Tensor,
    /// `[d_sae, d_in]`
    pub w_dec: Tensor,
    /// `[d_in]`
    pub b_dec: Tensor,
    /// `[d_sae]`, JumpReLU and BatchTopK only.
    pub threshold: Option<Tensor>,
}

impl Sae {
    /// Check shapes and architecture-specific parts; every constructor calls it.
    pub fn validate(&self) -> Result<()> {
        let (d, n) = (self.cfg.d_in, self.cfg.d_sae);
        let want: [(&str, &Tensor, Vec<usize>); 4] = [
            ("W_enc", &self.w_enc, vec![d, n]),
            ("b_enc", &self.b_enc, vec![n]),
            ("W_dec", &self.w_dec, vec![n, d]),
            ("b_dec", &self.b_dec, vec![d]),
        ];
        for (name, t, shape) in want {
            if t.dims() != shape.as_slice() {
                return Err(Error::Input(format!(
                    "{name} has shape {:?}, expected {shape:?} (d_in {d}, d_sae {n})",
                    t.dims()
                )));
            }
        }
        match (self.cfg.arch, &self.threshold) {
            (Arch::TopK { k } | Arch::BatchTopK { k }, _) if k == 0 || k >= n => {
                return Err(Error::Input(format!(
                    "k = {k}: expected 0 < k < d_sae ({n})"
                )))
            }
            (Arch::JumpRelu | Arch::BatchTopK { .. }, None) => {
                return Err(Error::Input(format!(
                    "a {} SAE needs a threshold tensor [{n}]",
                    self.cfg.arch.name()
                )))
            }
            (_, Some(t)) if t.dims() != [n] => {
                return Err(Error::Input(format!(
                    "threshold has shape {:?}, expected [{n}]",
                    t.dims()
                )))
            }
            _ => {}
        }
        Ok(())
    }

    /// The hook point this SAE reads, checked against a model with `n_layers` blocks.
    pub fn hook_point(&self, n_layers: usize) -> Result<HookPoint> {
        Ok(HookPoint::parse(&self.cfg.hook_name, n_layers)?)
    }

    /// Flatten `x: [.., d_in]` (or `[.., h, dh]` for hook_z SAEs) to `[rows, d_in]`.
    fn rows(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        let last: usize = if self.cfg.reshape_hook_z && x.rank() >= 2 {
            x.dims()[x.rank() - 2..].iter().product()
        } else {
            x.dims().last().copied().unwrap_or(0)
        };
        if last != self.cfg.d_in {
            return Err(Error::Input(format!(
                "activations have width {last} ({:?}), this SAE reads d_in = {} at {}",
                x.dims(),
                self.cfg.d_in,
                self.cfg.hook_name
            )));
        }
        Ok(x.reshape(((), self.cfg.d_in))?.contiguous()?)
    }

    /// Per-token normalisation in: returns the normalised rows and what undoes it.
    fn normalize_in(&self, x: &Tensor) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let d = self.cfg.d_in as f64;
        Ok(match self.cfg.normalize {
            Normalize::None => (x.clone(), None),
            Normalize::ConstantNormRescale => {
                let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
                let factor = (norm.recip()? * d.sqrt())?; // [rows, 1]
                (
                    x.broadcast_mul(&factor)?,
                    Some((factor.recip()?, Tensor::zeros_like(&factor)?)),
                )
            }
            Normalize::LayerNorm => {
                // As SAELens: unbiased standard deviation, divided by (std + 1e-5).
                let mu = x.mean_keepdim(D::Minus1)?;
                let c = x.broadcast_sub(&mu)?;
                let std = (c.sqr()?.sum_keepdim(D::Minus1)? / (d - 1.0).max(1.0))?.sqrt()?;
                let denom = (std + 1e-5)?;
                (c.broadcast_div(&denom)?, Some((denom, mu)))
            }
        })
    }

    /// Pre-activations `z = (x - b_dec) @ W_enc + b_enc` for rows `[r, d_in]` (already normalised).
    fn pre(&self, x: &Tensor) -> Result<Tensor> {
        let xc = if self.cfg.apply_b_dec_to_input {
            x.broadcast_sub(&self.b_dec)?
        } else {
            x.clone()
        };
        Ok(xc.matmul(&self.w_enc)?.broadcast_add(&self.b_enc)?)
    }

    /// Decoder row norms `[d_sae]`.
    pub fn decoder_norms(&self) -> Result<Tensor> {
        Ok(self.w_dec.sqr()?.sum(D::Minus1)?.sqrt()?)
    }

    /// Latent activations `[rows, d_sae]` for activations `x: [.., d_in]`.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let (rows, _) = self.normalize_in(&self.rows(x)?)?;
        self.activate(&self.pre(&rows)?)
    }

    /// Apply the inference activation to pre-activations `z: [rows, d_sae]`.
    pub fn activate(&self, z: &Tensor) -> Result<Tensor> {
        match self.cfg.arch {
            Arch::Relu => Ok(z.relu()?),
            Arch::JumpRelu | Arch::BatchTopK { .. } => {
                let th = self
                    .threshold
                    .as_ref()
                    .ok_or_else(|| Error::Input("this SAE has no threshold tensor".into()))?;
                Ok((z * z.broadcast_gt(th)?.to_dtype(DType::F32)?)?)
            }
            Arch::TopK { k } => {
                let norms = if self.cfg.rescale_acts_by_decoder_norm {
                    Some(self.decoder_norms()?)
                } else {
                    None
                };
                let z = match &norms {
                    Some(n) => z.broadcast_mul(n)?,
                    None => z.clone(),
                };
                let f = topk_rows(&z.relu()?, k)?;
                Ok(match &norms {
                    Some(n) => f.broadcast_div(n)?,
                    None => f,
                })
            }
        }
    }

    /// Reconstruction `[rows, d_in]` from latents `f: [rows, d_sae]` (before undoing any
    /// per-token normalisation).
    pub fn decode(&self, f: &Tensor) -> Result<Tensor> {
        Ok(f.matmul(&self.w_dec)?.broadcast_add(&self.b_dec)?)
    }

    /// `x -> (latents, reconstruction)` with normalisation undone, reconstruction shaped
    /// like `x`. `edit` may change the latents before decoding (steering, clamping).
    pub fn forward_with(
        &self,
        x: &Tensor,
        edit: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (rows, undo) = self.normalize_in(&self.rows(x)?)?;
        let f = self.activate(&self.pre(&rows)?)?;
        let f_edit = edit(&f)?;
        let mut out = self.decode(&f_edit)?;
        if let Some((scale, shift)) = undo {
            out = out.broadcast_mul(&scale)?.broadcast_add(&shift)?;
        }
        Ok((f, out.reshape(x.shape())?.to_dtype(x.dtype())?))
    }

    /// Move onto `device` (weights only).
    pub fn to_device(&self, device: &Device) -> Result<Sae> {
        Ok(Sae {
            cfg: self.cfg.clone(),
            w_enc: self.w_enc.to_device(device)?,
            b_enc: self.b_enc.to_device(device)?,
            w_dec: self.w_dec.to_device(device)?,
            b_dec: self.b_dec.to_device(device)?,
            threshold: self
                .threshold
                .as_ref()
                .map(|t| t.to_device(device))
                .transpose()?,
        })
    }
}

/// Keep the `k` largest entries of each row of `a: [r, n]` (ties: lower index first),
/// zeroing the rest. Selection by `select_nth_unstable` (no full sort).
pub fn topk_rows(a: &Tensor, k: usize) -> Result<Tensor> {
    let (r, n) = a.dims2()?;
    let v: Vec<f32> = a.flatten_all()?.to_vec1()?;
    let mut out = vec![0f32; r * n];
    let mut idx: Vec<u32> = Vec::with_capacity(n);
    for row in 0..r {
        let x = &v[row * n..(row + 1) * n];
        idx.clear();
        idx.extend(0..n as u32);
        let k = k.min(n);
        if k < n {
            idx.select_nth_unstable_by(k - 1, |&a, &b| {
                x[b as usize].total_cmp(&x[a as usize]).then(a.cmp(&b))
            });
        }
        for &j in &idx[..k] {
            out[row * n + j as usize] = x[j as usize];
        }
    }
    Ok(Tensor::from_vec(out, (r, n), a.device())?)
}

/// A change to the latents while spliced (applied to the latents before decoding; the
/// error term, when kept, is the unedited `x - x̂`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LatentEdit {
    /// `f_j += value`: adds `value · W_dec[j]` to the output (latent steering).
    Add { latent: usize, value: f32 },
    /// `f_j = value` (0 ablates).
    Clamp { latent: usize, value: f32 },
}

/// How to splice an SAE into the forward pass.
#[derive(Clone, Debug, Default)]
pub struct Splice {
    /// Keep the error term: output = decode(edited f) + (x - decode(f)), so without edits
    /// the forward pass is unchanged.
    pub keep_error: bool,
    pub edits: Vec<LatentEdit>,
}

impl Splice {
    /// A hook list that replaces the SAE's hook activation by its reconstruction (with
    /// the edits, and the error term if asked) at `positions`.
    pub fn hooks(&self, sae: Arc<Sae>, n_layers: usize, positions: Positions) -> Result<Hooks> {
        let point = sae.hook_point(n_layers)?;
        for e in &self.edits {
            let (LatentEdit::Add { latent, .. } | LatentEdit::Clamp { latent, .. }) = *e;
            if latent >= sae.cfg.d_sae {
                return Err(Error::Input(format!(
                    "latent {latent} out of range: the SAE has {} latents",
                    sae.cfg.d_sae
                )));
            }
        }
        let splice = self.clone();
        let f = move |x: &Tensor, _: &SiteInfo| -> candle_core::Result<Tensor> {
            splice
                .apply(&sae, x)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        };
        let mut hooks = Hooks::new();
        hooks.custom(point, Arc::new(f), positions);
        Ok(hooks)
    }

    /// The spliced activation for `x` (any leading shape).
    pub fn apply(&self, sae: &Sae, x: &Tensor) -> Result<Tensor> {
        let edits = self.edits.clone();
        let edit = move |f: &Tensor| -> Result<Tensor> {
            if edits.is_empty() {
                return Ok(f.clone());
            }
            let (r, n) = f.dims2()?;
            let mut v: Vec<f32> = f.flatten_all()?.to_vec1()?;
            for row in 0..r {
                for e in &edits {
                    match *e {
                        LatentEdit::Add { latent, value } => v[row * n + latent] += value,
                        LatentEdit::Clamp { latent, value } => v[row * n + latent] = value,
                    }
                }
            }
            Ok(Tensor::from_vec(v, (r, n), f.device())?)
        };
        let (_, edited) = sae.forward_with(x, &edit)?;
        if !self.keep_error {
            return Ok(edited);
        }
        let (_, plain) = sae.forward_with(x, &|f| Ok(f.clone()))?;
        Ok((x + (edited - plain)?)?)
    }
}

/// Tokens with their logits, strongest first.
pub type TokenLogits = Vec<(u32, f32)>;

/// The tokens latent `j`'s decoder direction promotes and suppresses most through the
/// final norm's gain and the unembedding (`W_U (g ⊙ W_dec[j])`, the logit-lens view of a
/// latent, as SAE dashboards show): `(top, bottom)`, `k` each as (token id, logit).
/// Errors: `j` out of range; the SAE's width differs from the model's.
pub fn latent_logits(
    sae: &Sae,
    model: &pragma_model::Model,
    j: usize,
    k: usize,
) -> Result<(TokenLogits, TokenLogits)> {
    if j >= sae.cfg.d_sae {
        return Err(Error::Input(format!(
            "latent {j}: the SAE has {} latents",
            sae.cfg.d_sae
        )));
    }
    if sae.cfg.d_in != model.cfg().d_model {
        return Err(Error::Input(format!(
            "the SAE reads width {}, the model's residual stream is {}",
            sae.cfg.d_in,
            model.cfg().d_model
        )));
    }
    let gain = model.transformer.final_norm_weight().to_dtype(DType::F32)?;
    let w = (sae.w_dec.get(j)?.to_dtype(DType::F32)? * gain)?;
    let logits: Vec<f32> = model
        .transformer
        .unembed()?
        .to_dtype(DType::F32)?
        .matmul(&w.unsqueeze(1)?)?
        .squeeze(1)?
        .to_vec1()?;
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    idx.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    let top = idx
        .iter()
        .take(k)
        .map(|&i| (i, logits[i as usize]))
        .collect();
    let bottom = idx
        .iter()
        .rev()
        .take(k)
        .map(|&i| (i, logits[i as usize]))
        .collect();
    Ok((top, bottom))
}
