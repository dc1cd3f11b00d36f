//! Row-level arithmetic of the fused decode path (host vectors, no tensors) and the
//! element-wise GELU, shared by [`crate::llama`]'s tensor and fused paths.

use candle_core::Tensor;

use crate::error::Result;

/// RMS norm of one row, as candle's `rms_norm` computes it in f32.
pub(crate) fn rms_norm(x: &[f32], alpha: &[f32], eps: f32) -> Vec<f32> {
    let sum2: f32 = x.iter().map(|v| v * v).sum();
    let m = (sum2 / x.len() as f32 + eps).sqrt();
    x.iter().zip(alpha).map(|(v, a)| v / m * a).collect()
}

/// Rotate-half RoPE of one head in place (candle's `rope`, non-interleaved).
pub(crate) fn rope_rotate_half(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    for j in 0..half {
        let (a, b) = (x[j], x[j + half]);
        x[j] = a * cos[j] - b * sin[j];
        x[j + half] = b * cos[j] + a * sin[j];
    }
}

/// GELU, tanh approximation (`gelu_pytorch_tanh`): `0.5 x (1 + tanh(u))` with
/// `u = sqrt(2/pi) (x + 0.044715 x^3)`, computed as `x / (1 + exp(-2u))` (the same
/// function: `(1 + tanh(u)) / 2 = sigmoid(2u)`), whose one `expf` costs a third of
/// libm's `tanhf` (GELU was 14% of Gemma 3's prefill as candle's `gelu`). Agrees with
/// the tanh form to f32 rounding; the parity tests check it against NumPy's float64.
pub(crate) fn gelu_tanh(v: f32) -> f32 {
    const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_TWO_OVER_PI * v * (1.0 + 0.044715 * v * v);
    v / (1.0 + (-2.0 * u).exp())
}

/// [`gelu_tanh`] over a tensor, in parallel.
pub(crate) fn gelu_tanh_tensor(x: &Tensor) -> Result<Tensor> {
    use rayon::prelude::*;
    let dims = x.dims().to_vec();
    let mut v: Vec<f32> = x.flatten_all()?.to_vec1()?;
    v.par_chunks_mut(4096)
        .for_each(|c| c.iter_mut().for_each(|a| *a = gelu_tanh(*a)));
    Ok(Tensor::from_vec(v, dims, x.device())?)
}

pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}
