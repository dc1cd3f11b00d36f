//! The forward pass: a whole batch, one step with a KV cache, or from a given layer; one
//! block on tensors; and the RoPE, mask and unembedding helpers.

use super::*;

impl Transformer {
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

    pub(super) fn forward_step_in_pool(
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
    pub(super) fn block_forward(
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

    /// The query scale: 1/sqrt(d_head), or Gemma's `query_pre_attn_scalar ** -0.5`.
    pub(super) fn query_scale(&self) -> f64 {
        match &self.cfg.gemma {
            Some(g) => g.query_scale,
            None => 1.0 / (self.cfg.d_head as f64).sqrt(),
        }
    }

    /// Gemma 2's final soft-capping `cap * tanh(logits / cap)`, when the model has one.
    pub(super) fn final_softcap(&self, logits: Tensor) -> Result<Tensor> {
        Ok(
            match self.cfg.gemma.as_ref().and_then(|g| g.final_softcap) {
                Some(cap) => ((logits / cap)?.tanh()? * cap)?,
                None => logits,
            },
        )
    }

    /// RoPE angles with `inv_freq` and the mask (with a sliding `window`) for one step.
    pub(super) fn step_tables(
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
    pub(super) fn rope_tables(
        &self,
        info: &SiteInfo,
        inv_freq: &[f64],
    ) -> Result<(Tensor, Tensor)> {
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
    pub(super) fn attn_mask(
        &self,
        info: &SiteInfo,
        window: Option<usize>,
    ) -> Result<Option<Tensor>> {
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
