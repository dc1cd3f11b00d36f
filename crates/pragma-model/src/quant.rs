//! Matrix-vector kernels on GGUF block-quantized weights, for decoding.
//!
//! Decoding one token reads every weight once, so its speed is set by bytes read:
//! f32 weights cost 4 bytes each, Q4_1 0.625 and Q8_0 1.06. candle's quantized CPU
//! matmul quantizes the activations too (changing the numbers) and is slow for Q4_1
//! here (see `examples/matmul_kernels.rs`), so we keep the file's blocks and compute
//! with f32 activations: each block contributes `d * (x . q) + m * sum(x)`, exactly the
//! dequantized weights `d * q + m` up to float rounding. Prefill (many rows) uses the
//! dense f32 GEMM instead; [`QuantWeight::worth_it`] says when this kernel wins.

use candle_core::quantized::GgmlDType;
use half::f16;
use rayon::prelude::*;

use crate::error::{Error, Result};

const QK: usize = 32;

/// Block formats we compute on directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantKind {
    /// `{ d: f16, m: f16, qs: [u8; 16] }`: w = d * nibble + m.
    Q4_1,
    /// `{ d: f16, qs: [i8; 32] }`: w = d * q.
    Q8_0,
}

impl QuantKind {
    pub fn from_ggml(d: GgmlDType) -> Option<Self> {
        match d {
            GgmlDType::Q4_1 => Some(QuantKind::Q4_1),
            GgmlDType::Q8_0 => Some(QuantKind::Q8_0),
            _ => None,
        }
    }
    fn block_bytes(self) -> usize {
        match self {
            QuantKind::Q4_1 => 20,
            QuantKind::Q8_0 => 34,
        }
    }
    /// Quant bytes per block (after the f16 scale fields).
    fn qs_bytes(self) -> usize {
        match self {
            QuantKind::Q4_1 => 16,
            QuantKind::Q8_0 => 32,
        }
    }
    /// f16 scale fields per block: (d, m) or (d).
    fn n_scales(self) -> usize {
        match self {
            QuantKind::Q4_1 => 2,
            QuantKind::Q8_0 => 1,
        }
    }
}

/// A `[rows, cols]` weight matrix from GGUF blocks, row-major, with the blocks'
/// f16 scales widened to f32 once at load (converting them per dot product cost 7%).
#[derive(Clone, Debug)]
pub struct QuantWeight {
    pub kind: QuantKind,
    pub rows: usize,
    pub cols: usize,
    qs: Vec<u8>,
    scales: Vec<f32>,
}

impl QuantWeight {
    pub fn new(kind: QuantKind, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        let want = rows * (cols / QK) * kind.block_bytes();
        if !cols.is_multiple_of(QK) || data.len() != want {
            return Err(Error::InvalidInput(format!(
                "{kind:?} weight [{rows}, {cols}]: expected {want} bytes in blocks of {QK}, found {}",
                data.len()
            )));
        }
        let (nq, ns) = (kind.qs_bytes(), kind.n_scales());
        let mut qs = Vec::with_capacity(data.len());
        let mut scales = Vec::with_capacity(data.len() / kind.block_bytes() * ns);
        for blk in data.chunks_exact(kind.block_bytes()) {
            for s in 0..ns {
                scales.push(f16::from_le_bytes([blk[2 * s], blk[2 * s + 1]]).to_f32());
            }
            qs.extend_from_slice(&blk[2 * ns..2 * ns + nq]);
        }
        Ok(Self {
            kind,
            rows,
            cols,
            qs,
            scales,
        })
    }

    /// Reorder rows: row `i` of the result is row `perm[i]` of `self`.
    pub fn permute_rows(&self, perm: &[usize]) -> Self {
        let nb = self.cols / QK;
        let (qb, sb) = (nb * self.kind.qs_bytes(), nb * self.kind.n_scales());
        let mut qs = Vec::with_capacity(self.qs.len());
        let mut scales = Vec::with_capacity(self.scales.len());
        for &r in perm {
            qs.extend_from_slice(&self.qs[r * qb..(r + 1) * qb]);
            scales.extend_from_slice(&self.scales[r * sb..(r + 1) * sb]);
        }
        Self {
            qs,
            scales,
            ..self.clone()
        }
    }

    /// Concatenate matrices with the same kind and width along the rows; `None` if
    /// they differ (the caller then keeps the dense form only).
    pub fn stack_rows(parts: &[&QuantWeight]) -> Option<QuantWeight> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.kind != first.kind || p.cols != first.cols)
        {
            return None;
        }
        Some(QuantWeight {
            kind: first.kind,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            qs: parts.iter().flat_map(|p| p.qs.iter().copied()).collect(),
            scales: parts
                .iter()
                .flat_map(|p| p.scales.iter().copied())
                .collect(),
        })
    }

    /// Whether this kernel beats the f32 GEMM for `n` activation rows (measured with
    /// `examples/matmul_kernels.rs`: it reads 4-6x fewer bytes, which wins while the
    /// GEMM is bandwidth-bound, i.e. for a handful of rows).
    pub fn worth_it(n: usize) -> bool {
        n <= 4
    }

    /// `y[n, rows] = x[n, cols] . W^T`.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), n * self.cols);
        let nb = self.cols / QK;
        // Per-block sums of x, needed for Q4_1's offset term.
        let sums: Vec<f32> = x.chunks_exact(QK).map(|c| c.iter().sum()).collect();
        let mut y = vec![0f32; n * self.rows];
        let (qb, sb) = (nb * self.kind.qs_bytes(), nb * self.kind.n_scales());
        let dot = kernel(self.kind);
        // Output rows in parallel chunks; each chunk computes all n activation rows so
        // a weight row is read from memory once.
        const CHUNK: usize = 64;
        let mut yt = vec![0f32; self.rows * n]; // [rows, n]
        yt.par_chunks_mut(CHUNK * n)
            .enumerate()
            .for_each(|(ci, out)| {
                let r0 = ci * CHUNK;
                for (ri, o) in out.chunks_exact_mut(n).enumerate() {
                    let r = r0 + ri;
                    let w = &self.qs[r * qb..(r + 1) * qb];
                    let sc = &self.scales[r * sb..(r + 1) * sb];
                    for (j, oj) in o.iter_mut().enumerate() {
                        let xs = &x[j * self.cols..(j + 1) * self.cols];
                        let ss = &sums[j * nb..(j + 1) * nb];
                        *oj = dot(w, sc, xs, ss);
                    }
                }
            });
        for r in 0..self.rows {
            for j in 0..n {
                y[j * self.rows + r] = yt[r * n + j];
            }
        }
        y
    }

    /// The dequantized matrix (for checks): `[rows * cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        let (nq, ns) = (self.kind.qs_bytes(), self.kind.n_scales());
        for (qs, sc) in self.qs.chunks_exact(nq).zip(self.scales.chunks_exact(ns)) {
            let d = sc[0];
            match self.kind {
                QuantKind::Q4_1 => {
                    let m = sc[1];
                    out.extend(qs.iter().map(|q| (q & 0x0F) as f32 * d + m));
                    out.extend(qs.iter().map(|q| (q >> 4) as f32 * d + m));
                }
                QuantKind::Q8_0 => out.extend(qs.iter().map(|&q| q as i8 as f32 * d)),
            }
        }
        out
    }
}

/// A row kernel: `w` holds a row's quant bytes, `sc` its scales, `x` the activations,
/// `sums` the per-block sums of `x` (for Q4_1's offset term).
type DotFn = fn(&[u8], &[f32], &[f32], &[f32]) -> f32;

/// The fastest kernel this CPU runs for `kind`, chosen once per matmul.
fn kernel(kind: QuantKind) -> DotFn {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("fma") {
            return match kind {
                QuantKind::Q4_1 => |w, sc, x, s| {
                    // SAFETY: AVX-512F and FMA are present (checked when chosen); callers
                    // pass whole rows (w: cols/32 blocks, x: cols values, s: cols/32 sums).
                    #[allow(unsafe_code)]
                    unsafe {
                        avx512::dot_q4_1(w, sc, x, s)
                    }
                },
                QuantKind::Q8_0 => |w, sc, x, _| {
                    // SAFETY: as above.
                    #[allow(unsafe_code)]
                    unsafe {
                        avx512::dot_q8_0(w, sc, x)
                    }
                },
            };
        }
        if has!("avx2") && has!("fma") {
            return match kind {
                QuantKind::Q4_1 => |w, sc, x, s| {
                    // SAFETY: AVX2 and FMA are present (checked when chosen); whole rows.
                    #[allow(unsafe_code)]
                    unsafe {
                        avx2::dot_q4_1(w, sc, x, s)
                    }
                },
                QuantKind::Q8_0 => |w, sc, x, _| {
                    // SAFETY: as above.
                    #[allow(unsafe_code)]
                    unsafe {
                        avx2::dot_q8_0(w, sc, x)
                    }
                },
            };
        }
    }
    match kind {
        QuantKind::Q4_1 => dot_q4_1_scalar,
        QuantKind::Q8_0 => |w, sc, x, _| dot_q8_0_scalar(w, sc, x),
    }
}

fn dot_q4_1_scalar(w: &[u8], sc: &[f32], x: &[f32], sums: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (((qs, dm), xs), s) in w
        .chunks_exact(16)
        .zip(sc.chunks_exact(2))
        .zip(x.chunks_exact(QK))
        .zip(sums)
    {
        let (d, m) = (dm[0], dm[1]);
        let mut t = 0f32;
        for (j, q) in qs.iter().enumerate() {
            t += xs[j] * (q & 0x0F) as f32 + xs[j + 16] * (q >> 4) as f32;
        }
        acc += d * t + m * s;
    }
    acc
}

fn dot_q8_0_scalar(w: &[u8], sc: &[f32], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for ((qs, &d), xs) in w.chunks_exact(32).zip(sc).zip(x.chunks_exact(QK)) {
        let t: f32 = qs.iter().zip(xs).map(|(&q, &xv)| q as i8 as f32 * xv).sum();
        acc += d * t;
    }
    acc
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// 8 unsigned bytes at `p` as f32 lanes.
    #[inline(always)]
    unsafe fn u8x8(v: __m128i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_1(w: &[u8], sc: &[f32], x: &[f32], sums: &[f32]) -> f32 {
        let nb = x.len() / 32;
        let mask = _mm_set1_epi8(0x0F);
        let mut acc = _mm256_setzero_ps();
        let mut offs = 0f32;
        for b in 0..nb {
            let (d, m) = (*sc.get_unchecked(2 * b), *sc.get_unchecked(2 * b + 1));
            let qs = _mm_loadu_si128(w.as_ptr().add(b * 16) as *const __m128i); // 16 bytes
            let lo = _mm_and_si128(qs, mask); // weights 0..16
            let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), mask); // weights 16..32
            let xp = x.as_ptr().add(b * 32);
            let mut t = _mm256_mul_ps(u8x8(lo), _mm256_loadu_ps(xp));
            t = _mm256_fmadd_ps(u8x8(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(xp.add(8)), t);
            t = _mm256_fmadd_ps(u8x8(hi), _mm256_loadu_ps(xp.add(16)), t);
            t = _mm256_fmadd_ps(u8x8(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(xp.add(24)), t);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), t, acc);
            offs += m * *sums.get_unchecked(b);
        }
        hsum(acc) + offs
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0(w: &[u8], sc: &[f32], x: &[f32]) -> f32 {
        let nb = x.len() / 32;
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let d = *sc.get_unchecked(b);
            let q = w.as_ptr().add(b * 32);
            let xp = x.as_ptr().add(b * 32);
            let mut t = _mm256_setzero_ps();
            for k in 0..4 {
                let v = _mm_loadl_epi64(q.add(8 * k) as *const __m128i);
                let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
                t = _mm256_fmadd_ps(f, _mm256_loadu_ps(xp.add(8 * k)), t);
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), t, acc);
        }
        hsum(acc)
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::*;

    /// As `avx2::dot_q4_1`, 16 lanes: a block's 16 low nibbles and 16 high nibbles are
    /// one conversion and one FMA each. Two accumulators hide the FMA latency.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn dot_q4_1(w: &[u8], sc: &[f32], x: &[f32], sums: &[f32]) -> f32 {
        let nb = x.len() / 32;
        let mask = _mm_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(), _mm512_setzero_ps()];
        let mut offs = [0f32; 2];
        for b in 0..nb {
            let (d, m) = (*sc.get_unchecked(2 * b), *sc.get_unchecked(2 * b + 1));
            let qs = _mm_loadu_si128(w.as_ptr().add(b * 16) as *const __m128i);
            let lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(qs, mask)));
            let hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(
                _mm_srli_epi16(qs, 4),
                mask,
            )));
            let xp = x.as_ptr().add(b * 32);
            let t = _mm512_mul_ps(lo, _mm512_loadu_ps(xp));
            let t = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xp.add(16)), t);
            let k = b & 1;
            acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(d), t, acc[k]);
            offs[k] += m * *sums.get_unchecked(b);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) + (offs[0] + offs[1])
    }

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn dot_q8_0(w: &[u8], sc: &[f32], x: &[f32]) -> f32 {
        let nb = x.len() / 32;
        let mut acc = [_mm512_setzero_ps(), _mm512_setzero_ps()];
        for b in 0..nb {
            let d = *sc.get_unchecked(b);
            let q = w.as_ptr().add(b * 32);
            let xp = x.as_ptr().add(b * 32);
            let a = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q as *const __m128i)));
            let c = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                q.add(16) as *const __m128i
            )));
            let t = _mm512_mul_ps(a, _mm512_loadu_ps(xp));
            let t = _mm512_fmadd_ps(c, _mm512_loadu_ps(xp.add(16)), t);
            let k = b & 1;
            acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(d), t, acc[k]);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    fn check(kind: GgmlDType) {
        let (rows, cols, n) = (70, 96, 3);
        let w = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu).expect("w");
        let q = QTensor::quantize(&w, kind).expect("quantize");
        let deq = q
            .dequantize(&Device::Cpu)
            .expect("deq")
            .flatten_all()
            .expect("f")
            .to_vec1::<f32>()
            .expect("v");
        let qw = QuantWeight::new(
            QuantKind::from_ggml(kind).expect("kind"),
            rows,
            cols,
            q.data().expect("data").into_owned(),
        )
        .expect("qw");
        assert_eq!(qw.dequantize(), deq, "same dequantization as candle");
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let y = qw.matmul(&x, n);
        for j in 0..n {
            for r in 0..rows {
                let want: f64 = (0..cols)
                    .map(|c| x[j * cols + c] as f64 * deq[r * cols + c] as f64)
                    .sum();
                let got = y[j * rows + r] as f64;
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{kind:?} [{j},{r}]: {got} vs {want}"
                );
            }
        }
        // Scalar and SIMD paths agree (each SIMD level this CPU has).
        let nb = cols / QK;
        let w0 = &qw.qs[..nb * qw.kind.qs_bytes()];
        let s0 = &qw.scales[..nb * qw.kind.n_scales()];
        let sums: Vec<f32> = x[..cols].chunks_exact(QK).map(|c| c.iter().sum()).collect();
        let scalar = match qw.kind {
            QuantKind::Q4_1 => dot_q4_1_scalar(w0, s0, &x[..cols], &sums),
            QuantKind::Q8_0 => dot_q8_0_scalar(w0, s0, &x[..cols]),
        };
        assert!((scalar - y[0]).abs() < 1e-4 * (1.0 + scalar.abs()));
    }

    #[test]
    fn q4_1_matches_dequantized_matmul() {
        check(GgmlDType::Q4_1);
    }

    #[test]
    fn q8_0_matches_dequantized_matmul() {
        check(GgmlDType::Q8_0);
    }
}
