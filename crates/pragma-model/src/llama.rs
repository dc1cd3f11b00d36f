//! The llama-family decoder with hook points at every TransformerLens site.
//!
//! One implementation serves Llama 2/3, SmolLM2, Mistral, Qwen2 (qkv biases) and
//! Qwen3 (q/k norm). Weights arrive in Hugging Face layout whatever the file format:
//! the GGUF loader undoes llama.cpp's Q/K row permutation, so RoPE here is always
//! the rotate-half form and `hook_q`/`hook_k` agree between formats.

use candle_core::{DType, Device, Tensor, D};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::hooks::{run_site, Cache, HookPoint, Hooks, SiteInfo};

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
}

/// A dense projection `y = x W^T (+ b)`, `W: [out, in]`.
#[derive(Clone, Debug)]
pub struct Linear {
    w_t: Tensor, // [in, out], contiguous so the GEMM reads it row-major
    b: Option<Tensor>,
}

impl Linear {
    fn new(w: Tensor, b: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            w_t: w.t()?.contiguous()?,
            b,
        })
    }

    /// `x: [b, t, in] -> [b, t, out]`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let y = x.reshape((b * t, d))?.matmul(&self.w_t)?;
        let y = match &self.b {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        Ok(y.reshape((b, t, ()))?)
    }
}

#[derive(Clone, Debug)]
struct Block {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    o: Linear,
    mlp_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// Key/value cache for incremental decoding, plus the batch's padding.
#[derive(Clone, Debug)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>, // [b, hk, T, dh] each, keys after RoPE
    pad: Vec<usize>,
    /// Columns processed so far.
    pub len: usize,
    /// Padded prompt length (set by the first call).
    pub prompt_cols: usize,
}

impl KvCache {
    pub fn new(n_layers: usize, pad: Vec<usize>) -> Self {
        Self {
            layers: vec![None; n_layers],
            pad,
            len: 0,
            prompt_cols: 0,
        }
    }
    pub fn pad(&self) -> &[usize] {
        &self.pad
    }
}

/// Which logits a forward returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// `[b, t, vocab]`
    All,
    /// `[b, vocab]` for the final column only.
    Last,
    /// No unembedding (e.g. caching activations).
    None,
}

/// A batch of token sequences, left-padded to a common length.
#[derive(Clone, Debug)]
pub struct Batch {
    pub ids: Tensor, // [b, t] u32
    pub pad: Vec<usize>,
}

impl Batch {
    pub fn new(seqs: &[Vec<u32>], device: &Device) -> Result<Batch> {
        if seqs.is_empty() || seqs.iter().any(|s| s.is_empty()) {
            return Err(Error::InvalidInput(
                "expected at least one non-empty token sequence, found an empty one".into(),
            ));
        }
        let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut flat = Vec::with_capacity(seqs.len() * t);
        let mut pad = Vec::with_capacity(seqs.len());
        for s in seqs {
            pad.push(t - s.len());
            flat.extend(std::iter::repeat_n(0u32, t - s.len()));
            flat.extend_from_slice(s);
        }
        Ok(Batch {
            ids: Tensor::from_vec(flat, (seqs.len(), t), device)?,
            pad,
        })
    }

    pub fn single(ids: &[u32], device: &Device) -> Result<Batch> {
        Self::new(&[ids.to_vec()], device)
    }
}

/// A llama-family transformer with hook points.
#[derive(Clone, Debug)]
pub struct Transformer {
    pub cfg: Config,
    embed: Tensor,     // [vocab, d]
    lm_head_t: Tensor, // [d, vocab]
    final_norm: Tensor,
    blocks: Vec<Block>,
    inv_freq: Vec<f64>,
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
    pub fn load(cfg: Config, src: &mut dyn WeightSource, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let name = src.source_name();
        let (d, f, v) = (cfg.d_model, cfg.d_mlp, cfg.vocab_size);
        let (qd, kd) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
        let to_dev =
            |t: Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.to_device(device)?) };

        let embed = to_dev(src.embedding()?)?;
        check_shape(&name, "embedding", &embed, &[v, d])?;
        let lm_head = match src.lm_head()? {
            Some(w) => {
                let w = to_dev(w)?;
                check_shape(&name, "lm_head", &w, &[v, d])?;
                w
            }
            None => embed.clone(),
        };
        let final_norm = to_dev(src.final_norm()?)?;
        check_shape(&name, "final norm", &final_norm, &[d])?;

        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let mut get = |part: Part, shape: &[usize]| -> Result<Tensor> {
                let t = to_dev(src.block(i, part)?)?;
                check_shape(&name, &format!("layer {i} {part:?}"), &t, shape)?;
                Ok(t)
            };
            let (qb, kb, vb) = if cfg.qkv_bias {
                (
                    Some(get(Part::QBias, &[qd])?),
                    Some(get(Part::KBias, &[kd])?),
                    Some(get(Part::VBias, &[kd])?),
                )
            } else {
                (None, None, None)
            };
            let (q_norm, k_norm) = if cfg.qk_norm {
                (
                    Some(get(Part::QNorm, &[cfg.d_head])?),
                    Some(get(Part::KNorm, &[cfg.d_head])?),
                )
            } else {
                (None, None)
            };
            blocks.push(Block {
                attn_norm: get(Part::AttnNorm, &[d])?,
                q: Linear::new(get(Part::Q, &[qd, d])?, qb)?,
                k: Linear::new(get(Part::K, &[kd, d])?, kb)?,
                v: Linear::new(get(Part::V, &[kd, d])?, vb)?,
                q_norm,
                k_norm,
                o: Linear::new(get(Part::O, &[d, qd])?, None)?,
                mlp_norm: get(Part::MlpNorm, &[d])?,
                gate: Linear::new(get(Part::Gate, &[f, d])?, None)?,
                up: Linear::new(get(Part::Up, &[f, d])?, None)?,
                down: Linear::new(get(Part::Down, &[d, f])?, None)?,
            });
        }
        Ok(Self {
            inv_freq: cfg.inv_freq(),
            lm_head_t: lm_head.t()?.contiguous()?,
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

    /// The unembedding matrix `[d_model, vocab]`.
    pub fn unembed(&self) -> &Tensor {
        &self.lm_head_t
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
            kv.prompt_cols = t;
        }
        let info = SiteInfo {
            offset,
            len: t,
            pad: kv.pad.clone(),
            prompt_cols: kv.prompt_cols,
        };
        let (cos, sin) = self.rope_tables(&info)?;
        let mask = self.attn_mask(&info)?;

        let mut x = self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, ()))?; // [b, t, d]
        x = run_site(hooks, HookPoint::Embed, x, &info, cache)?;

        let last_layer = match logits {
            Logits::None => hooks
                .max_layer()
                .map_or(0, |l| l + 1)
                .min(self.cfg.n_layers),
            _ => self.cfg.n_layers,
        };
        let needs_final = logits != Logits::None || hooks.touches(HookPoint::LnFinal);
        let run_layers = if needs_final {
            self.cfg.n_layers
        } else {
            last_layer
        };
        for (i, blk) in self.blocks.iter().enumerate().take(run_layers) {
            x = self.block_forward(
                i,
                blk,
                x,
                &info,
                &cos,
                &sin,
                mask.as_ref(),
                kv,
                hooks,
                cache,
            )?;
        }
        kv.len += t;
        if !needs_final {
            return Ok(None);
        }
        let x = candle_nn::ops::rms_norm(&x, &self.final_norm, self.cfg.rms_norm_eps as f32)?;
        let x = run_site(hooks, HookPoint::LnFinal, x, &info, cache)?; // [b, t, d]
        let out = match logits {
            Logits::None => None,
            Logits::All => Some(x.reshape((b * t, ()))?.matmul(&self.lm_head_t)?.reshape((
                b,
                t,
                (),
            ))?),
            Logits::Last => Some(x.narrow(1, t - 1, 1)?.squeeze(1)?.matmul(&self.lm_head_t)?),
        };
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn block_forward(
        &self,
        i: usize,
        blk: &Block,
        x: Tensor,
        info: &SiteInfo,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        kv: &mut KvCache,
        hooks: &Hooks,
        cache: &mut Cache,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let eps = cfg.rms_norm_eps as f32;
        let (b, t, _) = x.dims3()?;
        let (h, hk, dh) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        let site = |p: HookPoint, x: Tensor, cache: &mut Cache| run_site(hooks, p, x, info, cache);

        let resid = site(HookPoint::ResidPre(i), x, cache)?; // [b, t, d]
        let normed = candle_nn::ops::rms_norm(&resid, &blk.attn_norm, eps)?;

        let mut q = blk.q.forward(&normed)?.reshape((b, t, h, dh))?; // [b, t, h, dh]
        let mut k = blk.k.forward(&normed)?.reshape((b, t, hk, dh))?; // [b, t, hk, dh]
        let v = blk.v.forward(&normed)?.reshape((b, t, hk, dh))?; // [b, t, hk, dh]
        if let (Some(qn), Some(kn)) = (&blk.q_norm, &blk.k_norm) {
            q = candle_nn::ops::rms_norm(&q.contiguous()?, qn, eps)?;
            k = candle_nn::ops::rms_norm(&k.contiguous()?, kn, eps)?;
        }
        let q = site(HookPoint::AttnQ(i), q, cache)?;
        let k = site(HookPoint::AttnK(i), k, cache)?;
        let v = site(HookPoint::AttnV(i), v, cache)?;

        let q = candle_nn::rotary_emb::rope(&q.transpose(1, 2)?.contiguous()?, cos, sin)?; // [b, h, t, dh]
        let k = candle_nn::rotary_emb::rope(&k.transpose(1, 2)?.contiguous()?, cos, sin)?; // [b, hk, t, dh]
        let v = v.transpose(1, 2)?.contiguous()?; // [b, hk, t, dh]
        let (k, v) = match &kv.layers[i] {
            Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
            None => (k, v),
        };
        kv.layers[i] = Some((k.clone(), v.clone()));
        let big_t = k.dim(2)?;
        let rep = h / hk;
        let (k, v) = if rep > 1 {
            let expand = |x: Tensor| -> candle_core::Result<Tensor> {
                x.unsqueeze(2)?
                    .expand((b, hk, rep, big_t, dh))?
                    .reshape((b, h, big_t, dh))
            };
            (expand(k)?, expand(v)?)
        } else {
            (k, v)
        };

        let scale = 1.0 / (dh as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?)? * scale)?; // [b, h, t, T]
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        let pattern = candle_nn::ops::softmax_last_dim(&scores)?; // [b, h, t, T]
        let pattern = site(HookPoint::AttnPattern(i), pattern, cache)?;
        let z = pattern.matmul(&v)?.transpose(1, 2)?; // [b, t, h, dh]
        let z = site(HookPoint::AttnZ(i), z, cache)?;
        let attn_out = blk.o.forward(&z.reshape((b, t, h * dh))?)?; // [b, t, d]
        let attn_out = site(HookPoint::AttnOut(i), attn_out, cache)?;
        let resid = site(HookPoint::ResidMid(i), (resid + attn_out)?, cache)?; // [b, t, d]

        let normed = candle_nn::ops::rms_norm(&resid, &blk.mlp_norm, eps)?;
        let gate = candle_nn::ops::silu(&blk.gate.forward(&normed)?)?;
        let post = (gate * blk.up.forward(&normed)?)?; // [b, t, f]
        let post = site(HookPoint::MlpPost(i), post, cache)?;
        let mlp_out = blk.down.forward(&post)?; // [b, t, d]
        let mlp_out = site(HookPoint::MlpOut(i), mlp_out, cache)?;
        let _ = big_t;
        site(HookPoint::ResidPost(i), (resid + mlp_out)?, cache) // [b, t, d]
    }

    /// cos/sin tables `[b, t, dh/2]` for each row's token positions (padding -> 0).
    fn rope_tables(&self, info: &SiteInfo) -> Result<(Tensor, Tensor)> {
        let half = self.cfg.d_head / 2;
        let b = info.pad.len();
        let mut cos = Vec::with_capacity(b * info.len * half);
        let mut sin = Vec::with_capacity(b * info.len * half);
        for &pad in &info.pad {
            for i in 0..info.len {
                let pos = (info.offset + i).saturating_sub(pad) as f64;
                for f in &self.inv_freq {
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

    /// Additive mask `[b, 1, t, T]`: causal, and padding keys hidden. `None`
    /// when nothing needs masking (one new token, no padding).
    fn attn_mask(&self, info: &SiteInfo) -> Result<Option<Tensor>> {
        let total = info.offset + info.len;
        let any_pad = info.pad.iter().any(|&p| p > 0);
        if info.len == 1 && !any_pad {
            return Ok(None);
        }
        let b = info.pad.len();
        let mut m = Vec::with_capacity(b * info.len * total);
        for &pad in &info.pad {
            for i in 0..info.len {
                let col = info.offset + i;
                for j in 0..total {
                    // A padding query attends to itself only, so its row stays finite.
                    let ok = (j <= col && j >= pad) || (col < pad && j == col);
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

    /// Embedding rows for some tokens `[n, d]` (e.g. for logit-lens style analyses).
    pub fn embed_tokens(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::new(ids, &self.device)?;
        Ok(self.embed.index_select(&ids, 0)?)
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
        Ok(flat.matmul(&self.lm_head_t)?.reshape(out_dims)?)
    }
}

/// Log-softmax over the last dim, in f32.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::log_softmax(
        &x.to_dtype(DType::F32)?,
        D::Minus1,
    )?)
}
