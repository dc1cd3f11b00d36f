//! The fused decode path: one block for one decoded token on host vectors, used when
//! no hook sits inside the block.

use super::*;

impl Transformer {
    /// Whether layer `i` can run fused for one decoded token: every projection has
    /// quantized blocks, no o/gate/up/down biases, and no hook inside the block (hooks at
    /// `hook_resid_pre` / `hook_resid_post` still run, on tensors, at its edges).
    pub(super) fn can_fuse(i: usize, blk: &Block, hooks: &Hooks) -> bool {
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
    pub(super) fn block_decode(
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
}
