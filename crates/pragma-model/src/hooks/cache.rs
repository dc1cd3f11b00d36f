//! [`Cache`]: the activations a call captured, by hook point.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use super::HookPoint;
use crate::error::{Error, Result};

/// Activations captured during a call, by hook point. A generate call captures
/// one chunk per step; [`Cache::get`] joins them along the position axis.
#[derive(Clone, Debug, Default)]
pub struct Cache {
    chunks: BTreeMap<HookPoint, Vec<Tensor>>,
    /// Left padding per batch row, to recover each row's real tokens.
    pub pad: Vec<usize>,
}

impl Cache {
    /// An empty cache for a batch with this left padding.
    pub fn new(pad: Vec<usize>) -> Self {
        Self {
            chunks: BTreeMap::new(),
            pad,
        }
    }

    pub(crate) fn push(&mut self, point: HookPoint, t: Tensor) {
        self.chunks.entry(point).or_default().push(t);
    }

    pub fn points(&self) -> impl Iterator<Item = HookPoint> + '_ {
        self.chunks.keys().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The full activation at `point` for all rows (padded layout).
    pub fn get(&self, point: HookPoint) -> Result<Tensor> {
        let chunks = self.chunks.get(&point).ok_or_else(|| Error::UnknownHook {
            name: point.to_string(),
            suggestions: self.chunks.keys().take(3).map(|p| p.to_string()).collect(),
        })?;
        if chunks.len() == 1 {
            return Ok(chunks[0].clone());
        }
        let axis = point.pos_axis();
        if axis == 2 {
            // Attention patterns: later steps attend to more keys. Earlier rows are
            // zero there (causal), so pad the key axis.
            let keys = chunks.iter().map(|c| c.dims()[3]).max().unwrap_or(0);
            let padded: Vec<Tensor> = chunks
                .iter()
                .map(|c| c.pad_with_zeros(3, 0, keys - c.dims()[3]))
                .collect::<candle_core::Result<_>>()?;
            return Ok(Tensor::cat(&padded, axis)?);
        }
        Ok(Tensor::cat(chunks, axis)?)
    }

    /// Row `b` without its left padding: `[t_b, ...]`.
    pub fn get_row(&self, point: HookPoint, b: usize) -> Result<Tensor> {
        let t = self.get(point)?.get(b)?;
        let pad = self.pad.get(b).copied().unwrap_or(0);
        let axis = point.pos_axis() - 1;
        let len = t.dims()[axis] - pad;
        let mut t = t.narrow(axis, pad, len)?;
        if axis == 1 {
            let keys = t.dims()[2];
            t = t.narrow(2, pad, keys - pad)?;
        }
        Ok(t)
    }

    /// All captured tensors as f32, named by hook point, for saving.
    pub fn to_named(&self) -> Result<Vec<(String, Tensor)>> {
        self.points()
            .map(|p| Ok((p.to_string(), self.get(p)?.to_dtype(DType::F32)?)))
            .collect()
    }
}
