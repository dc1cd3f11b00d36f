//! The llama-family decoder with hook points at every TransformerLens site.
//!
//! One implementation serves Llama 2/3, SmolLM2, Mistral, Qwen2 (qkv biases) and
//! Qwen3 (q/k norm). Weights arrive in Hugging Face layout whatever the file format:
//! the GGUF loader undoes llama.cpp's Q/K row permutation, so RoPE here is always
//! the rotate-half form and `hook_q`/`hook_k` agree between formats.

use candle_core::{DType, Device, Tensor, D};

use std::sync::Arc;

use crate::batch::LayerKv;
pub use crate::batch::{Batch, KvCache, Logits};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hooks::{run_site, Cache, HookPoint, Hooks, SiteInfo};
pub use crate::linear::WeightMode;
use crate::linear::{Embedding, Linear};
use crate::quant::QuantWeight;
use crate::rowops::{dot_f32, gelu_tanh, gelu_tanh_tensor, rms_norm, rope_rotate_half};

mod forward;
mod fused;

/// The weight tensors of one block, named after the HF checkpoint's modules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    AttnNorm,
    Q,
    K,
    V,
    QBias,
    KBias,
    VBias,
    QNorm,
    KNorm,
    O,
    MlpNorm,
    Gate,
    Up,
    Down,
    /// Gemma: the RMSNorm gain on the attention output (`post_attention_norm`).
    PostAttnNorm,
    /// Gemma: the RMSNorm gain on the MLP output (`post_ffw_norm`).
    PostMlpNorm,
}

/// Where weights come from (GGUF, safetensors, or a test's random init).
/// Every tensor returned is f32 in HF layout, shape-checked by the caller.
pub trait WeightSource {
    /// A human-readable name for error messages (usually the file path).
    fn source_name(&self) -> String;
    fn embedding(&mut self) -> Result<Tensor>;
    /// `None` when the unembedding is tied to the embedding.
    fn lm_head(&mut self) -> Result<Option<Tensor>>;
    fn final_norm(&mut self) -> Result<Tensor>;
    fn block(&mut self, layer: usize, part: Part) -> Result<Tensor>;
    /// The same weight in the file's block-quantized form, when it has one that
    /// [`QuantWeight`] computes on (used for decoding). `None` by default.
    fn block_quant(&mut self, _layer: usize, _part: Part) -> Result<Option<QuantWeight>> {
        Ok(None)
    }
    /// The unembedding (or the tied embedding) in block-quantized form.
    fn lm_head_quant(&mut self) -> Result<Option<QuantWeight>> {
        Ok(None)
    }
    /// The embedding in its file dtype, when it is not f32.
    fn embedding_quant(&mut self) -> Result<Option<QuantWeight>> {
        Ok(None)
    }
    /// Whether the unembedding is the embedding (no separate tensor).
    fn lm_head_is_tied(&mut self) -> Result<bool> {
        Ok(self.lm_head()?.is_none())
    }
}

#[derive(Clone, Debug)]
struct Block {
    attn_norm: Tensor,
    /// q, k and v projections stacked into one `[qd + 2 kd, d]` matmul.
    qkv: Linear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    o: Linear,
    mlp_norm: Tensor,
    /// gate and up projections stacked into one `[2 f, d]` matmul.
    gate_up: Linear,
    down: Linear,
    /// Gemma: RMSNorm gains on the attention and MLP outputs.
    post_attn_norm: Option<Tensor>,
    post_mlp_norm: Option<Tensor>,
    /// The small vectors again, on the host, for the fused decode path.
    host: BlockHost,
}

/// One block's weights, dense f32, HF layout (`[out, in]`); see
/// [`Transformer::dense_block`].
#[derive(Clone, Debug)]
pub struct DenseBlock {
    pub attn_norm: Tensor,
    /// q, k, v stacked: `[(n_heads + 2 n_kv_heads) d_head, d_model]`.
    pub w_qkv: Tensor,
    pub qkv_bias: Option<Tensor>,
    /// Qwen3's per-head RMSNorm gains `[d_head]`.
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    /// `[d_model, n_heads d_head]`
    pub w_o: Tensor,
    pub mlp_norm: Tensor,
    /// gate and up stacked: `[2 d_mlp, d_model]`.
    pub w_gate_up: Tensor,
    /// `[d_model, d_mlp]`
    pub w_down: Tensor,
}

/// Host copies of a block's norms and biases (a few KB) for [`Transformer::block_decode`].
#[derive(Clone, Debug)]
struct BlockHost {
    attn_norm: Vec<f32>,
    mlp_norm: Vec<f32>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    qkv_bias: Option<Vec<f32>>,
    post_attn_norm: Option<Vec<f32>>,
    post_mlp_norm: Option<Vec<f32>>,
}

/// Per-step RoPE angles and attention mask for one kind of layer (global, or
/// Gemma's sliding-window local layers).
struct StepTables {
    /// `[b, t, dh/2]`
    cos: Tensor,
    sin: Tensor,
    /// Additive `[b, 1, t, T]`, `None` when nothing is masked.
    mask: Option<Tensor>,
    /// The angles on the host for one decoded token (the fused path).
    host: Option<(Vec<f32>, Vec<f32>)>,
}

/// RMSNorm with TransformerLens' hook points: `hook_scale` = sqrt(mean(x^2) + eps)
/// `[b, t, 1]`, `hook_normalized` = x / scale `[b, t, d]`, output = normalized * `w`.
/// The fused kernel runs when no hook sits at either point.
fn rms_norm_hooked(
    x: &Tensor,
    w: &Tensor,
    eps: f32,
    (scale_at, normalized_at): (HookPoint, HookPoint),
    hooks: &Hooks,
    info: &SiteInfo,
    cache: &mut Cache,
) -> Result<Tensor> {
    if !hooks.touches(scale_at) && !hooks.touches(normalized_at) {
        return Ok(candle_nn::ops::rms_norm(x, w, eps)?);
    }
    let scale = (x.sqr()?.mean_keepdim(D::Minus1)? + eps as f64)?.sqrt()?;
    let scale = run_site(hooks, scale_at, scale, info, cache)?;
    let normalized = run_site(hooks, normalized_at, x.broadcast_div(&scale)?, info, cache)?;
    Ok(normalized.broadcast_mul(w)?)
}

fn host_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
}

/// A llama-family transformer with hook points.
#[derive(Clone, Debug)]
pub struct Transformer {
    pub cfg: Config,
    /// How the matmul weights are held.
    pub mode: WeightMode,
    embed: Embedding,
    /// `[vocab, d]`; the embedding's weights when tied.
    lm_head: Linear,
    /// Decode with the quantized kernels where the weights have them (default true);
    /// false computes with dense f32 weights where they exist (the f32 mode).
    pub use_quant_kernels: bool,
    final_norm: Tensor,
    blocks: Vec<Block>,
    /// RoPE inverse frequencies of the global layers, and of Gemma's local ones.
    inv_freq: Vec<f64>,
    inv_freq_local: Option<Vec<f64>>,
    device: Device,
}

fn check_shape(src: &str, name: &str, t: &Tensor, expected: &[usize]) -> Result<()> {
    if t.dims() != expected {
        return Err(Error::ShapeMismatch {
            source_name: src.to_string(),
            name: name.to_string(),
            expected: expected.to_vec(),
            found: t.dims().to_vec(),
        });
    }
    Ok(())
}

impl Transformer {
    /// Build the model from any weight source; every tensor is shape-checked.
    /// Build the model from any weight source, weights in their file dtype
    /// ([`WeightMode::Native`]); every tensor is shape-checked.
    pub fn load(cfg: Config, src: &mut dyn WeightSource, device: &Device) -> Result<Self> {
        Self::load_with(cfg, src, device, WeightMode::Native)
    }

    /// Build the model holding its weights as `mode` says.
    pub fn load_with(
        cfg: Config,
        src: &mut dyn WeightSource,
        device: &Device,
        mode: WeightMode,
    ) -> Result<Self> {
        cfg.validate()?;
        let name = src.source_name();
        let (d, f, v) = (cfg.d_model, cfg.d_mlp, cfg.vocab_size);
        let (qd, kd) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
        let to_dev =
            |t: Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.to_device(device)?) };
        let check_q = |what: &str, q: &QuantWeight, shape: &[usize]| -> Result<()> {
            if [q.rows, q.cols] != shape {
                return Err(Error::ShapeMismatch {
                    source_name: name.clone(),
                    name: what.to_string(),
                    expected: shape.to_vec(),
                    found: vec![q.rows, q.cols],
                });
            }
            Ok(())
        };
        // In the f32 mode, the file's blocks are kept only for pragma's own decode kernels
        // (Q4_1, Q8_0), as before the native mode existed.
        let keep = |q: Option<QuantWeight>, dense: bool| -> Option<QuantWeight> {
            match mode {
                WeightMode::Native => q,
                WeightMode::F32 => q.filter(|q| !dense || QuantWeight::has_row_kernel(q.dtype)),
            }
        };

        let embed = match keep(src.embedding_quant()?, false) {
            Some(q) if mode == WeightMode::Native => {
                check_q("embedding", &q, &[v, d])?;
                Embedding::Quant(Arc::new(q))
            }
            _ => {
                let e = to_dev(src.embedding()?)?;
                check_shape(&name, "embedding", &e, &[v, d])?;
                Embedding::Dense(e)
            }
        };
        let lm_head = match mode {
            WeightMode::Native => {
                if src.lm_head_is_tied()? {
                    // Tied: share the embedding's weights, no second copy.
                    match &embed {
                        Embedding::Quant(e) => Linear {
                            w: None,
                            b: None,
                            q: Some(e.clone()),
                            parts: Vec::new(),
                        },
                        Embedding::Dense(e) => Linear::new(Some(e.clone()), None, None)?,
                    }
                } else if let Some(q) = src.lm_head_quant()? {
                    check_q("lm_head", &q, &[v, d])?;
                    Linear::new(None, None, Some(q))?
                } else {
                    let w = src.lm_head()?.ok_or_else(|| Error::MissingTensor {
                        source_name: name.clone(),
                        name: "lm_head".into(),
                    })?;
                    let w = to_dev(w)?;
                    check_shape(&name, "lm_head", &w, &[v, d])?;
                    Linear::new(Some(w), None, None)?
                }
            }
            WeightMode::F32 => {
                let w = match (src.lm_head()?, &embed) {
                    (Some(w), _) => {
                        let w = to_dev(w)?;
                        check_shape(&name, "lm_head", &w, &[v, d])?;
                        w
                    }
                    (None, Embedding::Dense(e)) => e.clone(),
                    (None, Embedding::Quant(_)) => {
                        return Err(Error::InvalidInput(
                            "f32 mode with a quantized embedding".into(),
                        ))
                    }
                };
                Linear::new(Some(w), None, keep(src.lm_head_quant()?, true))?
            }
        };
        let final_norm = to_dev(src.final_norm()?)?;
        check_shape(&name, "final norm", &final_norm, &[d])?;

        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let get = |src: &mut dyn WeightSource, part: Part, shape: &[usize]| -> Result<Tensor> {
                let t = to_dev(src.block(i, part)?)?;
                check_shape(&name, &format!("layer {i} {part:?}"), &t, shape)?;
                Ok(t)
            };
            let linear =
                |src: &mut dyn WeightSource, part: Part, shape: &[usize], bias: Option<Tensor>| {
                    let q = keep(src.block_quant(i, part)?, true);
                    match (mode, q) {
                        (WeightMode::Native, Some(q)) => {
                            check_q(&format!("layer {i} {part:?}"), &q, shape)?;
                            Linear::new(None, bias, Some(q))
                        }
                        (_, q) => {
                            let w = get(src, part, shape)?;
                            Linear::new(Some(w), bias, q)
                        }
                    }
                };
            let (qb, kb, vb) = if cfg.qkv_bias {
                (
                    Some(get(src, Part::QBias, &[qd])?),
                    Some(get(src, Part::KBias, &[kd])?),
                    Some(get(src, Part::VBias, &[kd])?),
                )
            } else {
                (None, None, None)
            };
            let (q_norm, k_norm) = if cfg.qk_norm {
                (
                    Some(get(src, Part::QNorm, &[cfg.d_head])?),
                    Some(get(src, Part::KNorm, &[cfg.d_head])?),
                )
            } else {
                (None, None)
            };
            let qkv = Linear::stack(&[
                linear(src, Part::Q, &[qd, d], qb)?,
                linear(src, Part::K, &[kd, d], kb)?,
                linear(src, Part::V, &[kd, d], vb)?,
            ])?;
            let gate_up = Linear::stack(&[
                linear(src, Part::Gate, &[f, d], None)?,
                linear(src, Part::Up, &[f, d], None)?,
            ])?;
            let attn_norm = get(src, Part::AttnNorm, &[d])?;
            let mlp_norm = get(src, Part::MlpNorm, &[d])?;
            let (post_attn_norm, post_mlp_norm) = if cfg.gemma.is_some() {
                (
                    Some(get(src, Part::PostAttnNorm, &[d])?),
                    Some(get(src, Part::PostMlpNorm, &[d])?),
                )
            } else {
                (None, None)
            };
            let host = BlockHost {
                post_attn_norm: post_attn_norm.as_ref().map(host_vec).transpose()?,
                post_mlp_norm: post_mlp_norm.as_ref().map(host_vec).transpose()?,
                attn_norm: host_vec(&attn_norm)?,
                mlp_norm: host_vec(&mlp_norm)?,
                q_norm: q_norm.as_ref().map(host_vec).transpose()?,
                k_norm: k_norm.as_ref().map(host_vec).transpose()?,
                qkv_bias: qkv.b.as_ref().map(host_vec).transpose()?,
            };
            blocks.push(Block {
                attn_norm,
                qkv,
                q_norm,
                k_norm,
                o: linear(src, Part::O, &[d, qd], None)?,
                mlp_norm,
                gate_up,
                down: linear(src, Part::Down, &[d, f], None)?,
                post_attn_norm,
                post_mlp_norm,
                host,
            });
        }
        let first_local = (0..cfg.n_layers).find(|&i| cfg.is_local(i));
        let first_global = (0..cfg.n_layers).find(|&i| !cfg.is_local(i)).unwrap_or(0);
        Ok(Self {
            inv_freq: cfg.inv_freq_of_layer(first_global),
            inv_freq_local: first_local.map(|i| cfg.inv_freq_of_layer(i)),
            mode,
            lm_head,
            use_quant_kernels: true,
            embed,
            final_norm,
            blocks,
            device: device.clone(),
            cfg,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The unembedding matrix `[vocab, d_model]` (TransformerLens's `W_U` transposed), f32;
    /// dequantized on each call when the weights are kept in the file's dtype (for
    /// SmolLM2-135M, 113 MB).
    pub fn unembed(&self) -> Result<Tensor> {
        self.lm_head.dense()
    }

    /// Bytes the weights hold in memory (embedding, unembedding when not shared, blocks,
    /// norms).
    pub fn weight_bytes(&self) -> usize {
        let shared = matches!((&self.embed, &self.lm_head.q), (Embedding::Quant(e), Some(q)) if Arc::ptr_eq(e, q))
            || matches!((&self.embed, &self.lm_head.w), (Embedding::Dense(e), Some(w)) if e.id() == w.id());
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                b.qkv.bytes()
                    + b.o.bytes()
                    + b.gate_up.bytes()
                    + b.down.bytes()
                    + 4 * (b.attn_norm.elem_count() + b.mlp_norm.elem_count())
                    + 4 * [&b.post_attn_norm, &b.post_mlp_norm, &b.q_norm, &b.k_norm]
                        .iter()
                        .filter_map(|t| t.as_ref().map(Tensor::elem_count))
                        .sum::<usize>()
            })
            .sum();
        self.embed.bytes()
            + if shared { 0 } else { self.lm_head.bytes() }
            + blocks
            + 4 * self.final_norm.elem_count()
    }

    /// Layer `layer`'s weights as dense f32 tensors (dequantized when quantized), for
    /// methods that need their own differentiable forward (attribution patching).
    pub fn dense_block(&self, layer: usize) -> Result<DenseBlock> {
        let blk = self.blocks.get(layer).ok_or_else(|| {
            Error::InvalidInput(format!(
                "layer {layer} out of range: the model has {} layers",
                self.blocks.len()
            ))
        })?;
        let f32 = |t: &Tensor| t.to_dtype(candle_core::DType::F32);
        let opt = |t: &Option<Tensor>| t.as_ref().map(f32).transpose();
        let bias = |l: &Linear| -> Result<Option<Tensor>> {
            if let Some(b) = &l.b {
                return Ok(Some(f32(b)?));
            }
            let parts: Vec<Tensor> = l.parts.iter().filter_map(|p| p.b.clone()).collect();
            if parts.is_empty() {
                Ok(None)
            } else {
                Ok(Some(f32(&Tensor::cat(&parts, 0)?)?))
            }
        };
        Ok(DenseBlock {
            attn_norm: f32(&blk.attn_norm)?,
            w_qkv: f32(&blk.qkv.dense()?)?,
            qkv_bias: bias(&blk.qkv)?,
            q_norm: opt(&blk.q_norm)?,
            k_norm: opt(&blk.k_norm)?,
            w_o: f32(&blk.o.dense()?)?,
            mlp_norm: f32(&blk.mlp_norm)?,
            w_gate_up: f32(&blk.gate_up.dense()?)?,
            w_down: f32(&blk.down.dense()?)?,
        })
    }

    /// RoPE's inverse frequencies `[d_head / 2]` (global layers; any rope scaling
    /// applied): position `p` rotates pair `i` by `p * inv_freq[i]`, rotate-half layout.
    pub fn rope_inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }

    /// The factor attention scores are multiplied by (`1 / sqrt(d_head)`, or Gemma's).
    pub fn attn_scale(&self) -> f64 {
        self.query_scale()
    }

    /// Layer `layer`'s attention output projection `[d_model, n_heads * d_head]` (HF's
    /// `o_proj.weight`; TransformerLens' `W_O` is its per-head transpose), f32,
    /// dequantized when the weights are quantized. Errors on a layer out of range.
    pub fn attn_out_weight(&self, layer: usize) -> Result<Tensor> {
        let blk = self.blocks.get(layer).ok_or_else(|| {
            Error::InvalidInput(format!(
                "layer {layer} out of range: the model has {} layers",
                self.blocks.len()
            ))
        })?;
        Ok(blk.o.dense()?.to_dtype(candle_core::DType::F32)?)
    }

    /// The final RMSNorm's gain `[d_model]` (TransformerLens' `ln_final.w`).
    pub fn final_norm_weight(&self) -> &Tensor {
        &self.final_norm
    }
}

/// Log-softmax over the last dim, in f32.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::log_softmax(
        &x.to_dtype(DType::F32)?,
        D::Minus1,
    )?)
}
