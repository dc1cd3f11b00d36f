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

impl LayerKv {
    /// Keys and values of the filled columns, `[b, hk, len, dh]` views.
    fn filled(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            self.k.narrow(2, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }

    fn from_filled(k: Tensor, v: Tensor) -> Result<LayerKv> {
        let len = k.dim(2)?;
        Ok(LayerKv {
            k: k.contiguous()?,
            v: v.contiguous()?,
            len,
        })
    }
}

/// Key/value cache for incremental decoding, plus the batch's padding.
///
/// Rows are left-padded to a common length: row `r`'s token `i` sits at column
/// `pad[r] + i`. For continuous batching a cache can take in another's rows
/// ([`KvCache::join`]) and drop finished ones ([`KvCache::keep_rows`]); both keep every
/// row's keys (stored after RoPE) and positions as they were.
#[derive(Clone, Debug)]
pub struct KvCache {
    pub(crate) layers: Vec<Option<LayerKv>>, // keys after RoPE
    pub(crate) pad: Vec<usize>,
    /// Columns processed so far.
    pub len: usize,
    /// Per row, the column where its prompt ends (set by the first call: the padded
    /// prompt length; rows that joined later keep their own).
    pub prompt_cols: Vec<usize>,
}

impl KvCache {
    pub fn new(n_layers: usize, pad: Vec<usize>) -> Self {
        Self {
            layers: vec![None; n_layers],
            pad,
            len: 0,
            prompt_cols: Vec::new(),
        }
    }
    pub fn pad(&self) -> &[usize] {
        &self.pad
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.pad.len()
    }

    fn filled_layers(&self) -> Result<Vec<(Tensor, Tensor)>> {
        self.layers
            .iter()
            .map(|l| {
                l.as_ref()
                    .ok_or_else(|| {
                        Error::InvalidInput(
                            "the KV cache has a layer no forward filled (a forward that stopped early)"
                                .into(),
                        )
                    })?
                    .filled()
            })
            .collect()
    }

    /// Keep rows `keep` (in that order) and drop the rest, then drop the left columns
    /// that are padding in every remaining row. Errors on an out-of-range row.
    pub fn keep_rows(&mut self, keep: &[usize]) -> Result<()> {
        if let Some(&r) = keep.iter().find(|&&r| r >= self.rows()) {
            return Err(Error::InvalidInput(format!(
                "row {r} out of range: the KV cache has {} rows",
                self.rows()
            )));
        }
        if keep.is_empty() {
            *self = KvCache::new(self.layers.len(), Vec::new());
            return Ok(());
        }
        let drop_cols = keep.iter().map(|&r| self.pad[r]).min().unwrap_or(0);
        if keep.len() == self.rows()
            && keep.iter().enumerate().all(|(i, &r)| i == r)
            && drop_cols == 0
        {
            return Ok(());
        }
        if self.len > 0 {
            let len = self.len - drop_cols;
            let filled = self.filled_layers()?;
            for (slot, (k, v)) in self.layers.iter_mut().zip(filled) {
                // One copy: the kept rows' kept columns, stacked.
                let pick = |x: &Tensor| -> Result<Tensor> {
                    let rows = keep
                        .iter()
                        .map(|&r| x.narrow(0, r, 1)?.narrow(2, drop_cols, len))
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    Ok(Tensor::cat(&rows, 0)?)
                };
                *slot = Some(LayerKv::from_filled(pick(&k)?, pick(&v)?)?);
            }
            self.len = len;
        }
        self.pad = keep.iter().map(|&r| self.pad[r] - drop_cols).collect();
        self.prompt_cols = keep
            .iter()
            .map(|&r| {
                self.prompt_cols
                    .get(r)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(drop_cols)
            })
            .collect();
        Ok(())
    }

    /// Append `other`'s rows after this cache's. The shorter side is left-padded with
    /// zero columns (hidden by the attention mask), so every row keeps its tokens'
    /// positions. An empty cache (no rows) becomes `other`.
    pub fn join(&mut self, other: KvCache) -> Result<()> {
        if self.rows() == 0 {
            *self = other;
            return Ok(());
        }
        if other.rows() == 0 {
            return Ok(());
        }
        if self.layers.len() != other.layers.len() {
            return Err(Error::InvalidInput(format!(
                "cannot join KV caches of {} and {} layers",
                self.layers.len(),
                other.layers.len()
            )));
        }
        let len = self.len.max(other.len);
        let (grow_a, grow_b) = (len - self.len, len - other.len);
        let a = self.filled_layers()?;
        let b = other.filled_layers()?;
        for (slot, ((ka, va), (kb, vb))) in self.layers.iter_mut().zip(a.into_iter().zip(b)) {
            let k = Tensor::cat(
                &[
                    ka.pad_with_zeros(2, grow_a, 0)?,
                    kb.pad_with_zeros(2, grow_b, 0)?,
                ],
                0,
            )?;
            let v = Tensor::cat(
                &[
                    va.pad_with_zeros(2, grow_a, 0)?,
                    vb.pad_with_zeros(2, grow_b, 0)?,
                ],
                0,
            )?;
            *slot = Some(LayerKv::from_filled(k, v)?);
        }
        let shift = |xs: &[usize], by: usize| xs.iter().map(|x| x + by).collect::<Vec<_>>();
        let mut pad = shift(&self.pad, grow_a);
        pad.extend(shift(&other.pad, grow_b));
        let mut prompt_cols = shift(&self.prompt_cols, grow_a);
        prompt_cols.extend(shift(&other.prompt_cols, grow_b));
        self.pad = pad;
        self.prompt_cols = prompt_cols;
        self.len = len;
        Ok(())
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
