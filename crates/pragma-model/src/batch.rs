//! What a forward pass runs over: a left-padded [`Batch`] of token sequences, the
//! [`KvCache`] that incremental decoding extends, and which [`Logits`] to return.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// One layer's keys and values `[b, hk, capacity, dh]`, filled up to `len`.
/// Growing by doubling keeps appends amortised O(new tokens): a decode step writes
/// one column in place instead of copying the whole cache.
#[derive(Clone, Debug)]
pub(crate) struct LayerKv {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl LayerKv {
    /// Append `k, v: [b, hk, t, dh]` (contiguous) and return views of everything so far.
    pub(crate) fn append(
        slot: &mut Option<LayerKv>,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        let Some(kv) = slot else {
            // First call (prefill): keep the tensors as they are; no copy.
            *slot = Some(LayerKv {
                k: k.clone(),
                v: v.clone(),
                len: t,
            });
            return Ok((k, v));
        };
        let cap = kv.k.dim(2)?;
        if kv.len + t > cap {
            let new_cap = (kv.len + t).max(2 * cap).max(16);
            let grow = |old: &Tensor| -> candle_core::Result<Tensor> {
                let (b, h, _, d) = old.dims4()?;
                let fresh = Tensor::zeros((b, h, new_cap, d), old.dtype(), old.device())?;
                fresh.slice_set(&old.narrow(2, 0, kv.len)?.contiguous()?, 2, 0)?;
                Ok(fresh)
            };
            kv.k = grow(&kv.k)?;
            kv.v = grow(&kv.v)?;
        }
        kv.k.slice_set(&k, 2, kv.len)?;
        kv.v.slice_set(&v, 2, kv.len)?;
        kv.len += t;
        Ok((kv.k.narrow(2, 0, kv.len)?, kv.v.narrow(2, 0, kv.len)?))
    }
}

/// Key/value cache for incremental decoding, plus the batch's padding.
#[derive(Clone, Debug)]
pub struct KvCache {
    pub(crate) layers: Vec<Option<LayerKv>>, // keys after RoPE
    pub(crate) pad: Vec<usize>,
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
