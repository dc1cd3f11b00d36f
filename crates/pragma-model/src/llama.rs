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

    /// A fresh forward over a whole batch (no KV cache). Returns the logits
    /// requested and the activations captured by `hooks`.
    pub fn forward(
        &self,
        batch: &Batch,
        hooks: &Hooks,
        logits: Logits,
    ) -> Result<(Option<Tensor>, Cache)> {
        let mut kv = KvCache::new(self.cfg.n_layers, batch.pad.clone());
        let mut cache = Cache::new(batch.pad.clone());
        let out = self.forward_step(&batch.ids, &mut kv, hooks, logits, &mut cache)?;
        Ok((out, cache))
    }

    /// Run `ids: [b, t]` at columns `kv.len..kv.len + t`, extending the KV cache.
    /// Hooks run at every site; captures are appended to `cache`. When no logits
    /// are requested, layers past the deepest hook are skipped.
    pub fn forward_step(
        &self,
        ids: &Tensor,
        kv: &mut KvCache,
        hooks: &Hooks,
        logits: Logits,
        cache: &mut Cache,
    ) -> Result<Option<Tensor>> {
        // Run the whole step on a thread of the rayon pool that the matmuls use: the
        // caller's thread then sleeps instead of competing with the pool's spinning
        // workers for the CPUs (measured: decode ~18% faster on 2 vCPUs).
        rayon::scope(|_| self.forward_step_in_pool(ids, kv, hooks, logits, cache, None))
    }

    /// A fresh forward that starts at block `layer` from a given residual `resid_pre:
    /// [b, t, d]` (what would enter `blocks.{layer}` for `batch`), skipping the
    /// embedding and the blocks before: for interventions at or after `layer` (e.g. a
    /// patching sweep), the same result as [`Self::forward`] for less work. Hooks before
    /// `layer` do not run. Errors: `layer` out of range, a residual of the wrong shape.
    pub fn forward_from(
        &self,
        batch: &Batch,
        layer: usize,
        resid_pre: &Tensor,
        hooks: &Hooks,
        logits: Logits,
    ) -> Result<(Option<Tensor>, Cache)> {
        let (b, t) = batch.ids.dims2()?;
        if layer >= self.cfg.n_layers {
            return Err(Error::InvalidInput(format!(
                "layer {layer} out of range: the model has {} layers",
                self.cfg.n_layers
            )));
        }
        if resid_pre.dims() != [b, t, self.cfg.d_model] {
            return Err(Error::InvalidInput(format!(
                "resid_pre has shape {:?}, expected [{b}, {t}, {}] for this batch",
                resid_pre.dims(),
                self.cfg.d_model
            )));
        }
        let mut kv = KvCache::new(self.cfg.n_layers, batch.pad.clone());
        let mut cache = Cache::new(batch.pad.clone());
        let out = rayon::scope(|_| {
            self.forward_step_in_pool(
                &batch.ids,
                &mut kv,
                hooks,
                logits,
                &mut cache,
                Some((layer, resid_pre)),
            )
        })?;
        Ok((out, cache))
    }

    fn forward_step_in_pool(
        &self,
        ids: &Tensor,
        kv: &mut KvCache,
        hooks: &Hooks,
        logits: Logits,
        cache: &mut Cache,
        start: Option<(usize, &Tensor)>,
    ) -> Result<Option<Tensor>> {
        let (b, t) = ids.dims2()?;
        hooks.validate(self.cfg.n_layers)?;
        if b != kv.pad.len() {
            return Err(Error::InvalidInput(format!(
                "batch has {b} rows but the KV cache was made for {}",
                kv.pad.len()
            )));
        }
        let offset = kv.len;
        if offset + t > self.cfg.context_length {
            return Err(Error::ContextOverflow {
                len: offset + t,
                ctx: self.cfg.context_length,
            });
        }
        if kv.len == 0 {
            kv.prompt_cols = vec![t; b];
        }
        let info = SiteInfo {
            offset,
            len: t,
            pad: kv.pad.clone(),
            prompt_cols: kv.prompt_cols.clone(),
        };
        if self.cfg.gemma.is_none() {
            if let Some(h) = hooks.iter().find(|h| h.point.is_post_norm()) {
                return Err(Error::UnknownHook {
                    name: h.point.to_string(),
                    suggestions: vec![format!(
                        "{} has no post-norms ({} is Gemma's); blocks.N.hook_attn_out and \
                         blocks.N.hook_mlp_out hold the block outputs",
                        self.cfg.arch.name(),
                        h.point.site()
                    )],
                });
            }
        }
        let one_token = ids.dims2()? == (1, 1);
        let global = self.step_tables(&info, &self.inv_freq, None, one_token)?;
        let local = match (&self.inv_freq_local, &self.cfg.gemma) {
            (Some(inv), Some(g)) => {
                Some(self.step_tables(&info, inv, Some(g.sliding_window), one_token)?)
            }
            _ => None,
        };

        let first_layer = start.map_or(0, |s| s.0);
        let mut x = match start {
            Some((_, resid)) => resid.clone(),
            None => {
                let flat_ids: Vec<u32> = ids.flatten_all()?.to_vec1()?;
                let x = self.embed_tokens(&flat_ids)?.reshape((b, t, ()))?; // [b, t, d]
                run_site(hooks, HookPoint::Embed, x, &info, cache)?
            }
        };

        let last_layer = match logits {
            Logits::None => hooks
                .max_layer()
                .map_or(0, |l| l + 1)
                .min(self.cfg.n_layers),
            _ => self.cfg.n_layers,
        };
        let needs_final = logits != Logits::None
            || [
                HookPoint::LnFinalScale,
                HookPoint::LnFinal,
                HookPoint::UnembedIn,
            ]
            .iter()
            .any(|p| hooks.touches(*p));
        let run_layers = if needs_final {
            self.cfg.n_layers
        } else {
            last_layer
        };
        for (i, blk) in self
            .blocks
            .iter()
            .enumerate()
            .take(run_layers)
            .skip(first_layer)
        {
            let tables = match &local {
                Some(l) if self.cfg.is_local(i) => l,
                _ => &global,
            };
            x = self.block_forward(i, blk, x, &info, tables, kv, hooks, cache)?;
        }
        kv.len += t;
        if !needs_final {
            return Ok(None);
        }
        let x = rms_norm_hooked(
            &x,
            &self.final_norm,
            self.cfg.rms_norm_eps as f32,
            (HookPoint::LnFinalScale, HookPoint::LnFinal),
            hooks,
            &info,
            cache,
        )?;
        let x = run_site(hooks, HookPoint::UnembedIn, x, &info, cache)?; // [b, t, d]
        let out = match logits {
            Logits::None => None,
            Logits::All => Some(
                self.lm_head
                    .matmul2(&x.reshape((b * t, ()))?.contiguous()?, false)?
                    .reshape((b, t, ()))?,
            ),
            Logits::Last => {
                let last = x.narrow(1, t - 1, 1)?.squeeze(1)?.contiguous()?; // [b, d]
                Some(self.lm_head.matmul2(&last, self.use_quant_kernels)?)
            }
        };
        out.map(|l| self.final_softcap(l)).transpose()
    }

    #[allow(clippy::too_many_arguments)]
    fn block_forward(
        &self,
        i: usize,
        blk: &Block,
        x: Tensor,
        info: &SiteInfo,
        tables: &StepTables,
        kv: &mut KvCache,
        hooks: &Hooks,
        cache: &mut Cache,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let uq = self.use_quant_kernels;
        let eps = cfg.rms_norm_eps as f32;
        let (b, t, _) = x.dims3()?;
        if b == 1 && t == 1 && info.pad[0] == 0 && uq && Self::can_fuse(i, blk, hooks) {
            if let Some((c, s)) = &tables.host {
                return self.block_decode(i, blk, x, info, (c, s), kv, hooks, cache);
            }
        }
        let (cos, sin, mask) = (&tables.cos, &tables.sin, tables.mask.as_ref());
        let (h, hk, dh) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        let site = |p: HookPoint, x: Tensor, cache: &mut Cache| run_site(hooks, p, x, info, cache);

        let resid = site(HookPoint::ResidPre(i), x, cache)?; // [b, t, d]
        let normed = rms_norm_hooked(
            &resid,
            &blk.attn_norm,
            eps,
            (HookPoint::Ln1Scale(i), HookPoint::Ln1Normalized(i)),
            hooks,
            info,
            cache,
        )?;

        let qkv = blk.qkv.forward(&normed, uq)?; // [b, t, (h + 2 hk) dh]
        let mut q = qkv.narrow(2, 0, h * dh)?.reshape((b, t, h, dh))?; // [b, t, h, dh]
        let mut k = qkv.narrow(2, h * dh, hk * dh)?.reshape((b, t, hk, dh))?; // [b, t, hk, dh]
        let v = qkv
            .narrow(2, (h + hk) * dh, hk * dh)?
            .reshape((b, t, hk, dh))?; // [b, t, hk, dh]
        if let (Some(qn), Some(kn)) = (&blk.q_norm, &blk.k_norm) {
            q = candle_nn::ops::rms_norm(&q.contiguous()?, qn, eps)?;
            k = candle_nn::ops::rms_norm(&k.contiguous()?, kn, eps)?;
        }
        let q = site(HookPoint::AttnQ(i), q, cache)?;
        let k = site(HookPoint::AttnK(i), k, cache)?;
        let v = site(HookPoint::AttnV(i), v, cache)?;

        let q = candle_nn::rotary_emb::rope(&q.transpose(1, 2)?.contiguous()?, cos, sin)?; // [b, h, t, dh]
        let k = candle_nn::rotary_emb::rope(&k.transpose(1, 2)?.contiguous()?, cos, sin)?; // [b, hk, t, dh]
                                                                                           // hook_rot_q / hook_rot_k see TransformerLens' layout [b, t, heads, dh].
        let head_major = |p: HookPoint, x: Tensor, cache: &mut Cache| -> Result<Tensor> {
            if !hooks.touches(p) {
                return Ok(x);
            }
            let y = site(p, x.transpose(1, 2)?, cache)?;
            Ok(y.transpose(1, 2)?.contiguous()?)
        };
        let q = head_major(HookPoint::AttnRotQ(i), q, cache)?;
        let k = head_major(HookPoint::AttnRotK(i), k, cache)?;
        let v = v.transpose(1, 2)?.contiguous()?; // [b, hk, t, dh]
        let (k, v) = LayerKv::append(&mut kv.layers[i], k, v)?; // [b, hk, T, dh] views
        let big_t = k.dim(2)?;
        // Grouped-query attention without copying K/V: the `rep` query heads that share
        // a key/value head are stacked along the query axis.
        let rep = h / hk;
        let q = q.reshape((b, hk, rep * t, dh))?;
        let scores = (q.matmul(&k.t()?)? * self.query_scale())?.reshape((b, h, t, big_t))?; // [b, h, t, T]
        let scores = match self.cfg.gemma.as_ref().and_then(|g| g.attn_softcap) {
            Some(cap) => ((scores / cap)?.tanh()? * cap)?,
            None => scores,
        };
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let scores = site(HookPoint::AttnScores(i), scores, cache)?;
        let pattern = candle_nn::ops::softmax_last_dim(&scores)?; // [b, h, t, T]
        let pattern = site(HookPoint::AttnPattern(i), pattern, cache)?;
        let z = pattern
            .reshape((b, hk, rep * t, big_t))?
            .matmul(&v)?
            .reshape((b, h, t, dh))?
            .transpose(1, 2)?; // [b, t, h, dh]
        let z = site(HookPoint::AttnZ(i), z, cache)?;
        let mut attn_out = blk.o.forward(&z.reshape((b, t, h * dh))?, uq)?; // [b, t, d]
        if let Some(w) = &blk.post_attn_norm {
            attn_out = rms_norm_hooked(
                &attn_out,
                w,
                eps,
                (HookPoint::Ln1PostScale(i), HookPoint::Ln1PostNormalized(i)),
                hooks,
                info,
                cache,
            )?;
        }
        let attn_out = site(HookPoint::AttnOut(i), attn_out, cache)?;
        let resid = site(HookPoint::ResidMid(i), (resid + attn_out)?, cache)?; // [b, t, d]

        let normed = rms_norm_hooked(
            &resid,
            &blk.mlp_norm,
            eps,
            (HookPoint::Ln2Scale(i), HookPoint::Ln2Normalized(i)),
            hooks,
            info,
            cache,
        )?;
        let gate_up = blk.gate_up.forward(&normed, uq)?; // [b, t, 2 f]
        let f = cfg.d_mlp;
        let pre = site(HookPoint::MlpPre(i), gate_up.narrow(2, 0, f)?, cache)?; // [b, t, f]
        let pre_linear = site(HookPoint::MlpPreLinear(i), gate_up.narrow(2, f, f)?, cache)?;
        let act = if cfg.gelu_gate() {
            gelu_tanh_tensor(&pre)? // Hugging Face's gelu_pytorch_tanh
        } else {
            candle_nn::ops::silu(&pre)?
        };
        let post = (act * pre_linear)?; // [b, t, f]
        let post = site(HookPoint::MlpPost(i), post, cache)?;
        let mut mlp_out = blk.down.forward(&post, uq)?; // [b, t, d]
        if let Some(w) = &blk.post_mlp_norm {
            mlp_out = rms_norm_hooked(
                &mlp_out,
                w,
                eps,
                (HookPoint::Ln2PostScale(i), HookPoint::Ln2PostNormalized(i)),
                hooks,
                info,
                cache,
            )?;
        }
        let mlp_out = site(HookPoint::MlpOut(i), mlp_out, cache)?;
        site(HookPoint::ResidPost(i), (resid + mlp_out)?, cache) // [b, t, d]
    }

    /// Whether layer `i` can run fused for one decoded token: every projection has
    /// quantized blocks, no o/gate/up/down biases, and no hook inside the block (hooks at
    /// `hook_resid_pre` / `hook_resid_post` still run, on tensors, at its edges).
    fn can_fuse(i: usize, blk: &Block, hooks: &Hooks) -> bool {
        let quant = blk.qkv.has_quant()
            && blk.o.has_quant()
            && blk.gate_up.has_quant()
            && blk.down.has_quant();
        let no_bias = blk.o.b.is_none() && blk.gate_up.b.is_none() && blk.down.b.is_none();
        let inner = |p: &HookPoint| {
            p.layer() == Some(i) && !matches!(p, HookPoint::ResidPre(_) | HookPoint::ResidPost(_))
        };
        quant && no_bias && !hooks.iter().any(|h| inner(&h.point))
    }

    /// One block for one decoded token of one sequence, on host vectors: the same
    /// arithmetic as [`Self::block_forward`] (RMS norm, projections on the quantized
    /// blocks, rotate-half RoPE, attention over the KV cache, SiLU-gated MLP) without
    /// ~25 tensor ops and their allocations per layer. Tested against the tensor path.
    #[allow(clippy::too_many_arguments)]
    fn block_decode(
        &self,
        i: usize,
        blk: &Block,
        x: Tensor,
        info: &SiteInfo,
        rope: (&[f32], &[f32]),
        kv: &mut KvCache,
        hooks: &Hooks,
        cache: &mut Cache,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let eps = cfg.rms_norm_eps as f32;
        let (nh, hk, dh, d, f) = (
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.d_head,
            cfg.d_model,
            cfg.d_mlp,
        );
        let resid = run_site(hooks, HookPoint::ResidPre(i), x, info, cache)?;
        let mut h: Vec<f32> = resid.flatten_all()?.to_vec1()?;

        let mut qkv = blk.qkv.matvec(&rms_norm(&h, &blk.host.attn_norm, eps), 1)?;
        if let Some(bias) = &blk.host.qkv_bias {
            qkv.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
        }
        let (q, rest) = qkv.split_at_mut(nh * dh);
        let (k, v) = rest.split_at_mut(hk * dh);
        if let (Some(qn), Some(kn)) = (&blk.host.q_norm, &blk.host.k_norm) {
            for head in q.chunks_exact_mut(dh) {
                let n = rms_norm(head, qn, eps);
                head.copy_from_slice(&n);
            }
            for head in k.chunks_exact_mut(dh) {
                let n = rms_norm(head, kn, eps);
                head.copy_from_slice(&n);
            }
        }
        let (cos, sin) = rope;
        for head in q.chunks_exact_mut(dh).chain(k.chunks_exact_mut(dh)) {
            rope_rotate_half(head, cos, sin);
        }
        let kt = Tensor::from_vec(k.to_vec(), (1, hk, 1, dh), &self.device)?;
        let vt = Tensor::from_vec(v.to_vec(), (1, hk, 1, dh), &self.device)?;
        let (kall, vall) = LayerKv::append(&mut kv.layers[i], kt, vt)?; // [1, hk, T, dh]
        let big_t = kall.dim(2)?;
        let scale = self.query_scale() as f32;
        let softcap = self.cfg.gemma.as_ref().and_then(|g| g.attn_softcap);
        // Gemma's local layers see the last `sliding_window` positions only.
        let first = match &self.cfg.gemma {
            Some(g) if g.is_local(i) => big_t.saturating_sub(g.sliding_window),
            _ => 0,
        };
        let rep = nh / hk;
        let mut z = vec![0f32; nh * dh];
        {
            let (ks, kl) = kall.storage_and_layout();
            let (vs, vl) = vall.storage_and_layout();
            let (kd, vd) = match (&*ks, &*vs) {
                (
                    candle_core::Storage::Cpu(candle_core::CpuStorage::F32(a)),
                    candle_core::Storage::Cpu(candle_core::CpuStorage::F32(b)),
                ) => (a.as_slice(), b.as_slice()),
                _ => {
                    return Err(Error::InvalidInput(
                        "fused decode needs an f32 KV cache on the CPU".into(),
                    ))
                }
            };
            let (kst, vst) = (kl.stride(), vl.stride());
            if kst[3] != 1 || vst[3] != 1 {
                return Err(Error::InvalidInput(
                    "KV cache rows are not contiguous".into(),
                ));
            }
            let mut scores = vec![0f32; big_t - first];
            for hh in 0..nh {
                let g = hh / rep;
                let qh = &q[hh * dh..(hh + 1) * dh];
                for (j, sc) in scores.iter_mut().enumerate() {
                    let o = kl.start_offset() + g * kst[1] + (first + j) * kst[2];
                    *sc = dot_f32(qh, &kd[o..o + dh]) * scale;
                    if let Some(cap) = softcap {
                        *sc = ((*sc as f64 / cap).tanh() * cap) as f32;
                    }
                }
                let m = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for sc in scores.iter_mut() {
                    *sc = (*sc - m).exp();
                    sum += *sc;
                }
                let zh = &mut z[hh * dh..(hh + 1) * dh];
                for (j, p) in scores.iter().enumerate() {
                    let o = vl.start_offset() + g * vst[1] + (first + j) * vst[2];
                    let w = p / sum;
                    zh.iter_mut()
                        .zip(&vd[o..o + dh])
                        .for_each(|(a, b)| *a += w * b);
                }
            }
        }
        let mut attn = blk.o.matvec(&z, 1)?;
        if let Some(w) = &blk.host.post_attn_norm {
            attn = rms_norm(&attn, w, eps);
        }
        h.iter_mut().zip(&attn).for_each(|(a, b)| *a += b);
        let gu = blk
            .gate_up
            .matvec(&rms_norm(&h, &blk.host.mlp_norm, eps), 1)?;
        let gelu = cfg.gelu_gate();
        let post: Vec<f32> = (0..f)
            .map(|j| {
                let g = gu[j];
                let act = if gelu {
                    gelu_tanh(g)
                } else {
                    g / (1.0 + (-g).exp())
                };
                act * gu[f + j]
            })
            .collect();
        let mut mlp = blk.down.matvec(&post, 1)?;
        if let Some(w) = &blk.host.post_mlp_norm {
            mlp = rms_norm(&mlp, w, eps);
        }
        h.iter_mut().zip(&mlp).for_each(|(a, b)| *a += b);
        let out = Tensor::from_vec(h, (1, 1, d), &self.device)?;
        run_site(hooks, HookPoint::ResidPost(i), out, info, cache)
    }

    /// The query scale: 1/sqrt(d_head), or Gemma's `query_pre_attn_scalar ** -0.5`.
    fn query_scale(&self) -> f64 {
        match &self.cfg.gemma {
            Some(g) => g.query_scale,
            None => 1.0 / (self.cfg.d_head as f64).sqrt(),
        }
    }

    /// Gemma 2's final soft-capping `cap * tanh(logits / cap)`, when the model has one.
    fn final_softcap(&self, logits: Tensor) -> Result<Tensor> {
        Ok(
            match self.cfg.gemma.as_ref().and_then(|g| g.final_softcap) {
                Some(cap) => ((logits / cap)?.tanh()? * cap)?,
                None => logits,
            },
        )
    }

    /// RoPE angles with `inv_freq` and the mask (with a sliding `window`) for one step.
    fn step_tables(
        &self,
        info: &SiteInfo,
        inv_freq: &[f64],
        window: Option<usize>,
        one_token: bool,
    ) -> Result<StepTables> {
        let (cos, sin) = self.rope_tables(info, inv_freq)?;
        // One decoded token of one sequence: the angles on the host, once per step,
        // for the fused blocks (the same f32 values as the tensors).
        let host = if one_token {
            Some((
                cos.flatten_all()?.to_vec1::<f32>()?,
                sin.flatten_all()?.to_vec1::<f32>()?,
            ))
        } else {
            None
        };
        Ok(StepTables {
            cos,
            sin,
            mask: self.attn_mask(info, window)?,
            host,
        })
    }

    /// cos/sin tables `[b, t, dh/2]` for each row's token positions (padding -> 0).
    fn rope_tables(&self, info: &SiteInfo, inv_freq: &[f64]) -> Result<(Tensor, Tensor)> {
        let half = self.cfg.d_head / 2;
        let b = info.pad.len();
        let mut cos = Vec::with_capacity(b * info.len * half);
        let mut sin = Vec::with_capacity(b * info.len * half);
        for &pad in &info.pad {
            for i in 0..info.len {
                let pos = (info.offset + i).saturating_sub(pad) as f64;
                for f in inv_freq {
                    let a = pos * f;
                    cos.push(a.cos() as f32);
                    sin.push(a.sin() as f32);
                }
            }
        }
        let shape = (b, info.len, half);
        Ok((
            Tensor::from_vec(cos, shape, &self.device)?,
            Tensor::from_vec(sin, shape, &self.device)?,
        ))
    }

    /// Additive mask `[b, 1, t, T]`: causal, padding keys hidden, and with a sliding
    /// `window`, keys `window` or more positions back hidden too. `None` when nothing
    /// needs masking (one new token, no padding, inside the window).
    fn attn_mask(&self, info: &SiteInfo, window: Option<usize>) -> Result<Option<Tensor>> {
        let total = info.offset + info.len;
        let any_pad = info.pad.iter().any(|&p| p > 0);
        let window = window.filter(|&w| total > w);
        if info.len == 1 && !any_pad && window.is_none() {
            return Ok(None);
        }
        let window = window.unwrap_or(usize::MAX);
        let b = info.pad.len();
        let mut m = Vec::with_capacity(b * info.len * total);
        for &pad in &info.pad {
            for i in 0..info.len {
                let col = info.offset + i;
                for j in 0..total {
                    // A padding query attends to itself only, so its row stays finite.
                    let ok = (j <= col && j >= pad && col - j < window) || (col < pad && j == col);
                    m.push(if ok { 0.0f32 } else { f32::NEG_INFINITY });
                }
            }
        }
        Ok(Some(Tensor::from_vec(
            m,
            (b, 1, info.len, total),
            &self.device,
        )?))
    }

    /// What enters the residual stream for some tokens `[n, d]`: the embedding rows,
    /// times Gemma's `embed_scale` (as TransformerLens folds it into `W_E`).
    pub fn embed_tokens(&self, ids: &[u32]) -> Result<Tensor> {
        let e = self.embed.lookup(ids, &self.device)?;
        Ok(match &self.cfg.gemma {
            Some(g) => (e * g.embed_scale)?,
            None => e,
        })
    }

    /// Apply the final norm and unembedding to residual vectors `[..., d] -> [..., vocab]`.
    pub fn unembed_resid(&self, x: &Tensor) -> Result<Tensor> {
        let x = candle_nn::ops::rms_norm(x, &self.final_norm, self.cfg.rms_norm_eps as f32)?;
        let dims = x.dims().to_vec();
        let d = *dims.last().unwrap_or(&0);
        let flat = x.reshape((x.elem_count() / d.max(1), d))?;
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = self.cfg.vocab_size;
        }
        let logits = self
            .lm_head
            .matmul2(&flat.contiguous()?, false)?
            .reshape(out_dims)?;
        self.final_softcap(logits)
    }
}

/// Log-softmax over the last dim, in f32.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::log_softmax(
        &x.to_dtype(DType::F32)?,
        D::Minus1,
    )?)
}
