//! The weights of one matmul ([`Linear`]) and the token embedding ([`Embedding`]): dense
//! f32, kept in the file's dtype ([`QuantWeight`]), or both; and how a model holds them
//! ([`WeightMode`]).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::quant::QuantWeight;

/// How the weights of matrix multiplications are held in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WeightMode {
    /// In the file's dtype (GGUF blocks, F16 / BF16): memory about the file's size;
    /// matmuls dequantize on the fly ([`QuantWeight::matmul`]). Norms and biases are f32.
    #[default]
    Native,
    /// Everything dequantized to f32 at load (4 bytes a weight), every matmul an f32
    /// GEMM: the exact path, for parity work.
    F32,
}

impl WeightMode {
    /// `native` or `f32`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "native" => Ok(WeightMode::Native),
            "f32" => Ok(WeightMode::F32),
            _ => Err(Error::InvalidInput(format!(
                "weights dtype '{s}': expected native (the file's dtype, quantized in memory) or f32"
            ))),
        }
    }

    /// From `PRAGMA_WEIGHTS` (`native` or `f32`; unset: native), as the CLI's global
    /// `--weights` sets it.
    pub fn from_env() -> Result<Self> {
        match std::env::var("PRAGMA_WEIGHTS") {
            Ok(v) if !v.is_empty() => Self::parse(&v),
            _ => Ok(WeightMode::Native),
        }
    }
}

/// A projection `y = x W^T (+ b)`, `W: [out, in]`: dense f32, kept in the file's dtype
/// ([`QuantWeight`]), or both (f32 for prefill, the file's blocks for decoding). Stacked
/// projections whose file dtypes differ (Q4_K_M files mix Q4_K and Q6_K) stay as parts,
/// run one after another with their outputs concatenated.
#[derive(Clone, Debug)]
pub struct Linear {
    pub(crate) w: Option<Tensor>, // [out, in]; the GEMM reads it transposed in place (no copy at load)
    pub(crate) b: Option<Tensor>,
    pub(crate) q: Option<Arc<QuantWeight>>,
    pub(crate) parts: Vec<Linear>,
}

impl Linear {
    pub(crate) fn new(
        w: Option<Tensor>,
        b: Option<Tensor>,
        q: Option<QuantWeight>,
    ) -> Result<Self> {
        if w.is_none() && q.is_none() {
            return Err(Error::InvalidInput(
                "a projection needs dense or quantized weights".into(),
            ));
        }
        Ok(Self {
            w,
            b,
            q: q.map(Arc::new),
            parts: Vec::new(),
        })
    }

    /// Output features.
    pub(crate) fn out_dim(&self) -> Result<usize> {
        if let Some(w) = &self.w {
            return Ok(w.dim(0)?);
        }
        if let Some(q) = &self.q {
            return Ok(q.rows);
        }
        self.parts.iter().map(|p| p.out_dim()).sum()
    }

    /// Stack projections that read the same input into one (outputs concatenated).
    pub(crate) fn stack(parts: &[Linear]) -> Result<Self> {
        let b = if parts.iter().any(|p| p.b.is_some()) {
            let bs = parts
                .iter()
                .map(|p| match &p.b {
                    Some(b) => Ok(b.clone()),
                    None => Ok(Tensor::zeros(p.out_dim()?, DType::F32, &Device::Cpu)?),
                })
                .collect::<Result<Vec<_>>>()?;
            Some(Tensor::cat(&bs, 0)?)
        } else {
            None
        };
        let ws: Option<Vec<&Tensor>> = parts.iter().map(|p| p.w.as_ref()).collect();
        let w = ws.map(|ws| Tensor::cat(&ws, 0)).transpose()?;
        let qs: Option<Vec<&QuantWeight>> = parts.iter().map(|p| p.q.as_deref()).collect();
        let q = qs.and_then(|qs| QuantWeight::stack_rows(&qs));
        if q.is_some() {
            // The parts' mapped pages were copied into the stack.
            parts
                .iter()
                .filter_map(|p| p.q.as_deref())
                .for_each(QuantWeight::release_pages);
        }
        if w.is_none() && q.is_none() {
            // Quantized parts of different dtypes: keep them apart.
            return Ok(Self {
                w: None,
                b,
                q: None,
                parts: parts
                    .iter()
                    .map(|p| Linear {
                        b: None,
                        ..p.clone()
                    })
                    .collect(),
            });
        }
        Ok(Self {
            w,
            b,
            q: q.map(Arc::new),
            parts: Vec::new(),
        })
    }

    /// Whether decoding can run on host vectors ([`Self::matvec`]).
    pub(crate) fn has_quant(&self) -> bool {
        self.q.is_some() || (!self.parts.is_empty() && self.parts.iter().all(|p| p.has_quant()))
    }

    /// `x: [n * in] -> [n * out]` on the quantized weights (no bias).
    pub(crate) fn matvec(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        if let Some(q) = &self.q {
            return Ok(q.matmul(x, n));
        }
        if self.parts.is_empty() {
            return Err(Error::InvalidInput(
                "fused decode needs quantized weights".into(),
            ));
        }
        let outs = self
            .parts
            .iter()
            .map(|p| p.matvec(x, n))
            .collect::<Result<Vec<_>>>()?;
        let widths: Vec<usize> = outs.iter().map(|o| o.len() / n.max(1)).collect();
        let mut y = Vec::with_capacity(outs.iter().map(Vec::len).sum());
        for j in 0..n {
            for (o, &w) in outs.iter().zip(&widths) {
                y.extend_from_slice(&o[j * w..(j + 1) * w]);
            }
        }
        Ok(y)
    }

    /// `x: [n, in] -> [n, out]`, by the quantized kernel for a few rows (when allowed),
    /// dense weights' GEMM, or quantized tiles when the weights are quantized only.
    pub(crate) fn matmul2(&self, x: &Tensor, use_quant: bool) -> Result<Tensor> {
        let n = x.dim(0)?;
        match (&self.w, &self.q) {
            (Some(_), Some(q)) if use_quant && q.uses_rows(n) => {
                let xs = x.flatten_all()?.to_vec1::<f32>()?;
                Ok(Tensor::from_vec(q.matmul(&xs, n), (n, q.rows), x.device())?)
            }
            (Some(w), _) => Ok(x.matmul(&w.t()?)?),
            _ => {
                let xs = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                let y = self.matvec(&xs, n)?;
                let out = y.len() / n.max(1);
                Ok(Tensor::from_vec(y, (n, out), x.device())?)
            }
        }
    }

    /// `x: [b, t, in] -> [b, t, out]`
    pub(crate) fn forward(&self, x: &Tensor, use_quant: bool) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let y = self.matmul2(&x.reshape((b * t, d))?, use_quant)?;
        let y = match &self.b {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        Ok(y.reshape((b, t, ()))?)
    }

    /// The weight as a dense f32 tensor `[out, in]` (dequantized when kept quantized).
    pub(crate) fn dense(&self) -> Result<Tensor> {
        if let Some(w) = &self.w {
            return Ok(w.clone());
        }
        if let Some(q) = &self.q {
            return Ok(Tensor::from_vec(
                q.dequantize(),
                (q.rows, q.cols),
                &Device::Cpu,
            )?);
        }
        let parts = self
            .parts
            .iter()
            .map(|p| p.dense())
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Bytes its weights hold in memory.
    pub(crate) fn bytes(&self) -> usize {
        self.w.as_ref().map_or(0, |w| w.elem_count() * 4)
            + self.b.as_ref().map_or(0, |b| b.elem_count() * 4)
            + self.q.as_ref().map_or(0, |q| q.bytes())
            + self.parts.iter().map(|p| p.bytes()).sum::<usize>()
    }
}

/// The token embedding `[vocab, d]`: dense f32, or in the file's dtype (rows
/// dequantized as they are looked up).
#[derive(Clone, Debug)]
pub(crate) enum Embedding {
    Dense(Tensor),
    Quant(Arc<QuantWeight>),
}

impl Embedding {
    pub(crate) fn rows(&self) -> usize {
        match self {
            Embedding::Dense(t) => t.dim(0).unwrap_or(0),
            Embedding::Quant(q) => q.rows,
        }
    }

    /// Rows for `ids` `[n] -> [n, d]`; an id past the vocabulary is an error.
    pub(crate) fn lookup(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        let vocab = self.rows();
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        match self {
            Embedding::Dense(t) => Ok(t.index_select(&Tensor::new(ids, device)?, 0)?),
            Embedding::Quant(q) => {
                let d = q.cols;
                let mut out = vec![0f32; ids.len() * d];
                for (o, &i) in out.chunks_exact_mut(d.max(1)).zip(ids) {
                    q.dequantize_rows(i as usize, i as usize + 1, o);
                }
                Ok(Tensor::from_vec(out, (ids.len(), d), device)?)
            }
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        match self {
            Embedding::Dense(t) => t.elem_count() * 4,
            Embedding::Quant(q) => q.bytes(),
        }
    }
}
