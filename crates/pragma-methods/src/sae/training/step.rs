//! One training step on host vectors: the dense encoder matmul, sparse selection, a
//! sparse decoder, the loss of `docs/SAE.md`, its hand-written backward over the selected
//! latents only, the decoder-gradient projection and Adam.
//!
//! Cost per batch of `B` tokens: the encoder GEMM (`2·B·d_in·d_sae` FLOPs) plus
//! `O(B·k·d_in)` for everything else: decoding gathers `k` decoder rows per token, the
//! decoder and encoder weight gradients are accumulated per latent through a by-latent
//! index of the selected entries (each latent's row is owned by one task, so there are no
//! atomics and the sums are in a fixed order), and no dense `[B, d_sae]` gradient is built.
//! Reductions over tokens use fixed chunks summed in order, so results do not depend on
//! scheduling: a resumed run is bit-identical to an uninterrupted one.

use rayon::prelude::*;

use super::super::Arch;

/// Tokens per chunk of an ordered reduction (fixed, so sums do not depend on threads).
const CHUNK: usize = 64;

/// What the encoder pass keeps of one row: the selected (or, for BatchTopK, candidate)
/// entries, the AuxK picks among dead latents, and the JumpReLU kernel-window entries.
#[derive(Default)]
struct RowPick {
    main: Vec<(u32, f32)>,
    aux: Vec<(u32, f32)>,
    window: Vec<(u32, f32)>,
}

/// Trainable parameters, row-major. The encoder is stored transposed (`[d_sae, d_in]`,
/// one row per latent, as sparsify's `encoder.weight`), so per-latent work reads
/// contiguous rows; [`Params::w_enc`] gives SAELens' `[d_in, d_sae]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub d_in: usize,
    pub d_sae: usize,
    /// `[d_sae, d_in]` = `W_enc^T`
    pub w_enc_t: Vec<f32>,
    pub b_enc: Vec<f32>,
    /// `[d_sae, d_in]`
    pub w_dec: Vec<f32>,
    pub b_dec: Vec<f32>,
    /// `[d_sae]`, JumpReLU only (empty otherwise).
    pub log_threshold: Vec<f32>,
}

impl Params {
    /// All zero, for gradients and Adam moments of the same shapes.
    pub fn zeros_like(p: &Params) -> Params {
        Params {
            d_in: p.d_in,
            d_sae: p.d_sae,
            w_enc_t: vec![0.0; p.w_enc_t.len()],
            b_enc: vec![0.0; p.b_enc.len()],
            w_dec: vec![0.0; p.w_dec.len()],
            b_dec: vec![0.0; p.b_dec.len()],
            log_threshold: vec![0.0; p.log_threshold.len()],
        }
    }

    /// SAELens' `W_enc [d_in, d_sae]`.
    pub fn w_enc(&self) -> Vec<f32> {
        let (d, n) = (self.d_in, self.d_sae);
        let mut out = vec![0.0; d * n];
        for j in 0..n {
            for i in 0..d {
                out[i * n + j] = self.w_enc_t[j * d + i];
            }
        }
        out
    }

    /// Every tensor as (name, values), in a fixed order (for Adam and checkpoints).
    pub fn parts_mut(&mut self) -> [(&'static str, &mut Vec<f32>); 5] {
        [
            ("w_enc_t", &mut self.w_enc_t),
            ("b_enc", &mut self.b_enc),
            ("w_dec", &mut self.w_dec),
            ("b_dec", &mut self.b_dec),
            ("log_threshold", &mut self.log_threshold),
        ]
    }

    pub fn parts(&self) -> [(&'static str, &Vec<f32>); 5] {
        [
            ("w_enc_t", &self.w_enc_t),
            ("b_enc", &self.b_enc),
            ("w_dec", &self.w_dec),
            ("b_dec", &self.b_dec),
            ("log_threshold", &self.log_threshold),
        ]
    }

    /// Rescale every decoder row to unit norm.
    pub fn normalize_decoder(&mut self) {
        let d = self.d_in;
        self.w_dec.par_chunks_mut(d).for_each(|row| {
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            if n > 0.0 {
                row.iter_mut().for_each(|v| *v /= n);
            }
        });
    }
}

/// The loss's knobs (definitions in `docs/SAE.md`).
#[derive(Clone, Debug)]
pub struct Objective {
    pub arch: Arch,
    /// AuxK weight (1/32).
    pub aux_alpha: f32,
    /// L1 (relu) or L0 (jumprelu) coefficient.
    pub lambda: f32,
    /// JumpReLU kernel bandwidth ε.
    pub bandwidth: f32,
    /// Matryoshka: the inner prefix widths (strictly increasing, below d_sae); each prefix
    /// of the dictionary also reconstructs the input, adding `SSE_m / TV` to the loss.
    /// Empty: a plain SAE.
    pub matryoshka: Vec<usize>,
}

/// What one forward/backward saw.
#[derive(Clone, Debug, Default)]
pub struct StepStats {
    pub loss: f64,
    pub fvu: f64,
    /// AuxK term (topk/batchtopk) before its weight α.
    pub aux: f64,
    /// Matryoshka: the inner prefixes' summed reconstruction terms.
    pub inner: f64,
    /// Sparsity term (relu L1, jumprelu L0) before its weight λ.
    pub sparsity: f64,
    /// Mean number of active latents per token.
    pub l0: f64,
    /// Per latent: on how many tokens of the batch it fired.
    pub fire_counts: Vec<u32>,
    /// BatchTopK: the smallest selected activation (the inference threshold's update).
    pub min_selected: Option<f32>,
}

/// Selected entries per token (CSR): latent ids and values.
struct Sparse {
    offsets: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<f32>,
}

impl Sparse {
    fn row(&self, b: usize) -> (&[u32], &[f32]) {
        let (s, e) = (self.offsets[b], self.offsets[b + 1]);
        (&self.idx[s..e], &self.val[s..e])
    }

    fn from_rows(rows: Vec<Vec<(u32, f32)>>) -> Sparse {
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        offsets.push(0);
        let total: usize = rows.iter().map(Vec::len).sum();
        let (mut idx, mut val) = (Vec::with_capacity(total), Vec::with_capacity(total));
        for r in rows {
            for (j, v) in r {
                idx.push(j);
                val.push(v);
            }
            offsets.push(idx.len());
        }
        Sparse { offsets, idx, val }
    }

    /// The same entries grouped by latent: for latent j, (token, position in `val`).
    fn by_latent(&self, n: usize) -> (Vec<usize>, Vec<(u32, u32)>) {
        let mut count = vec![0usize; n + 1];
        for &j in &self.idx {
            count[j as usize + 1] += 1;
        }
        for j in 0..n {
            count[j + 1] += count[j];
        }
        let mut fill = count.clone();
        let mut items = vec![(0u32, 0u32); self.idx.len()];
        for b in 0..self.offsets.len() - 1 {
            for p in self.offsets[b]..self.offsets[b + 1] {
                let j = self.idx[p] as usize;
                items[fill[j]] = (b as u32, p as u32);
                fill[j] += 1;
            }
        }
        (count, items)
    }
}

/// `out[m, n] = a[m, k] · b[n, k]^T` (row-major), by the `gemm` crate on rayon threads.
pub fn matmul_nt(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, out: &mut [f32]) {
    assert!(a.len() == m * k && b.len() == n * k && out.len() == m * n);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above give every pointer its full extent: `a` is m x k with
    // row stride k, `b` read as its transpose is k x n (column stride k, row stride 1),
    // and `out` is m x n with row stride n; the slices do not overlap (one is &mut).
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}

/// As [`matmul_nt`] on the calling thread (callers parallelise over blocks; the result
/// does not depend on the number of threads).
fn matmul_nt_serial(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, out: &mut [f32]) {
    assert!(a.len() == m * k && b.len() == n * k && out.len() == m * n);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: as in `matmul_nt`.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// BatchTopK's exact selection: the `keep` largest positive entries of the whole batch
/// (ties at the cut in row-major order), from each row's `cand` best entries. A row whose
/// candidate list is full and entirely at or above the cut might hold more: its
/// pre-activations are recomputed in full. Returns the rows and the smallest kept value.
fn batch_top_k<'a>(
    p: &Params,
    xc: &[f32],
    cands: impl Iterator<Item = &'a [(u32, f32)]>,
    keep: usize,
    cand: usize,
) -> (Vec<Vec<(u32, f32)>>, Option<f32>) {
    let (d, n) = (p.d_in, p.d_sae);
    let mut rows: Vec<Vec<(u32, f32)>> = cands.map(<[_]>::to_vec).collect();
    let cut_of = |rows: &[Vec<(u32, f32)>]| -> f32 {
        let mut all: Vec<f32> = rows.iter().flatten().map(|e| e.1).collect();
        if all.len() > keep && keep > 0 {
            let (_, v, _) = all.select_nth_unstable_by(keep - 1, |a, b| b.total_cmp(a));
            *v
        } else {
            0.0
        }
    };
    let cut = cut_of(&rows);
    let full: Vec<usize> = (0..rows.len())
        .filter(|&t| rows[t].len() == cand && cand < n && rows[t].iter().all(|e| e.1 >= cut))
        .collect();
    let cut = if full.is_empty() {
        cut
    } else {
        for &t in &full {
            let mut z = vec![0f32; n];
            matmul_nt_serial(&xc[t * d..(t + 1) * d], &p.w_enc_t, 1, n, d, &mut z);
            rows[t] = z
                .iter()
                .zip(&p.b_enc)
                .enumerate()
                .map(|(j, (v, c))| (j as u32, v + c))
                .filter(|e| e.1 > 0.0)
                .collect();
        }
        cut_of(&rows)
    };
    let above = rows
        .iter()
        .flatten()
        .filter(|e| e.1 > cut && e.1 > 0.0)
        .count();
    let mut ties = keep.saturating_sub(above);
    let mut min: Option<f32> = None;
    let out: Vec<Vec<(u32, f32)>> = rows
        .into_iter()
        .map(|r| {
            r.into_iter()
                .filter(|&(_, v)| {
                    let take = v > 0.0 && (v > cut || (v == cut && ties > 0));
                    if take && v <= cut {
                        ties -= 1;
                    }
                    take
                })
                .inspect(|&(_, v)| min = Some(min.map_or(v, |m: f32| m.min(v))))
                .collect()
        })
        .collect();
    (out, min)
}

/// Dot product with 16 independent partial sums (vectorised; a single running f32 sum
/// is a serial dependency chain the compiler may not reorder).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

/// Sum over rows of `m: [rows, d]` in fixed chunks, summed in order.
fn column_sums(m: &[f32], d: usize) -> Vec<f32> {
    let parts: Vec<Vec<f64>> = m
        .par_chunks(CHUNK * d)
        .map(|c| {
            let mut s = vec![0f64; d];
            for row in c.chunks(d) {
                s.iter_mut().zip(row).for_each(|(s, v)| *s += *v as f64);
            }
            s
        })
        .collect();
    let mut total = vec![0f64; d];
    for p in parts {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    total.into_iter().map(|v| v as f32).collect()
}

/// Ordered sum of `f(row)` over rows of `m: [rows, d]`.
fn row_sum(m: &[f32], d: usize, f: impl Fn(usize, &[f32]) -> f64 + Sync) -> f64 {
    let parts: Vec<f64> = m
        .par_chunks(CHUNK * d)
        .enumerate()
        .map(|(c, rows)| {
            rows.chunks(d)
                .enumerate()
                .map(|(r, row)| f(c * CHUNK + r, row))
                .sum()
        })
        .collect();
    parts.into_iter().sum()
}

/// A `k`-slot buffer of the best `(value, index)` seen so far and the threshold a
/// candidate must beat (0 until full, then the buffer's minimum).
struct TopK {
    k: usize,
    buf: Vec<(f32, u32)>,
    thr: f32,
    min_at: usize,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            buf: Vec::with_capacity(k),
            thr: 0.0,
            min_at: 0,
        }
    }

    #[inline]
    fn offer(&mut self, v: f32, j: u32) {
        if v <= self.thr || self.k == 0 {
            return;
        }
        if self.buf.len() < self.k {
            self.buf.push((v, j));
            if self.buf.len() < self.k {
                return;
            }
        } else {
            self.buf[self.min_at] = (v, j);
        }
        // The slot to evict next: the smallest value, the highest index among equals.
        let worse = |a: &(f32, u32), b: &(f32, u32)| a.0 < b.0 || (a.0 == b.0 && a.1 > b.1);
        let b = &self.buf;
        self.min_at = (0..self.k).fold(0, |m, i| if worse(&b[i], &b[m]) { i } else { m });
        self.thr = self.buf[self.min_at].0;
    }

    /// The kept entries as `(index, value)` in index order.
    fn finish(mut self) -> Vec<(u32, f32)> {
        self.buf.sort_unstable_by_key(|c| c.1);
        self.buf.into_iter().map(|(v, j)| (j, v)).collect()
    }
}

/// The `k` largest positive values among `(value, index)` candidates, in index order
/// (ties: lower index first): one pass, no sort, no copy.
fn top_k_positive(cands: impl Iterator<Item = (f32, u32)>, k: usize) -> Vec<(u32, f32)> {
    let mut t = TopK::new(k);
    for (v, j) in cands {
        t.offer(v, j);
    }
    t.finish()
}

/// [`top_k_positive`] over a whole row: 16 values at a time are compared with the
/// threshold branch-free (vectorised), and only a chunk holding a candidate is looked at
/// one by one; once the buffer is full almost every chunk is skipped.
fn top_k_row(z: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut t = TopK::new(k);
    let mut base = 0u32;
    let chunks = z.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        let thr = t.thr;
        let mut hit = false;
        for &v in c {
            hit |= v > thr;
        }
        if hit {
            for (i, &v) in c.iter().enumerate() {
                t.offer(v, base + i as u32);
            }
        }
        base += 16;
    }
    for (i, &v) in rest.iter().enumerate() {
        t.offer(v, base + i as u32);
    }
    t.finish()
}

/// Loss and gradients for one batch `x: [b, d_in]` (already scaled). `dead` marks the
/// latents AuxK may use (TopK/BatchTopK). Returns the gradient (the decoder's not yet
/// projected) and the step's statistics.
pub fn loss_and_grads(
    p: &Params,
    x: &[f32],
    b: usize,
    dead: Option<&[bool]>,
    obj: &Objective,
) -> (Params, StepStats) {
    loss_and_grads_with(p, x, b, dead, obj, &mut Vec::new())
}

/// [`loss_and_grads`] with the `[B, d_sae]` pre-activation buffer kept in `z_buf` between
/// calls (tens of MB: a fresh allocation each step costs the kernel zeroing new pages).
pub fn loss_and_grads_with(
    p: &Params,
    x: &[f32],
    b: usize,
    dead: Option<&[bool]>,
    obj: &Objective,
    z_buf: &mut Vec<f32>,
) -> (Params, StepStats) {
    let (d, n) = (p.d_in, p.d_sae);
    assert_eq!(x.len(), b * d);
    // x_c = x - b_dec.
    let mut xc = x.to_vec();
    xc.par_chunks_mut(d)
        .for_each(|r| r.iter_mut().zip(&p.b_dec).for_each(|(v, c)| *v -= c));
    let theta: Vec<f32> = p.log_threshold.iter().map(|t| t.exp()).collect();
    let n_dead = dead.map_or(0, |m| m.iter().filter(|x| **x).count());
    let aux_on = matches!(obj.arch, Arch::TopK { .. } | Arch::BatchTopK { .. }) && n_dead > 0;
    let half = (d / 2).max(1);
    let k_aux = half.min(n_dead);
    let aux_scale = if aux_on {
        (n_dead as f32 / half as f32).min(1.0)
    } else {
        0.0
    };
    let dead_ids: Vec<u32> = match dead {
        Some(m) if aux_on => (0..n as u32).filter(|j| m[*j as usize]).collect(),
        _ => Vec::new(),
    };
    // BatchTopK keeps each row's best `cand` entries; rows whose whole list clears the
    // batch's cut are redone in full below, so the selection is exact.
    let cand = match obj.arch {
        Arch::BatchTopK { k } => (4 * k).min(n),
        _ => 0,
    };
    let half_eps = obj.bandwidth / 2.0;
    // Pre-activations z = x_c W_enc (one GEMM; the weights are packed once), then one
    // pass per row adds b_enc and selects while the row is in cache.
    let mut z = std::mem::take(z_buf);
    z.resize(b * n, 0.0);
    matmul_nt(&xc, &p.w_enc_t, b, n, d, &mut z);
    let rows: Vec<RowPick> = z
        .par_chunks_mut(n)
        .map(|z| {
            z.iter_mut().zip(&p.b_enc).for_each(|(v, c)| *v += c);
            let mut pick = RowPick::default();
            match obj.arch {
                Arch::TopK { k } => pick.main = top_k_row(z, k),
                Arch::BatchTopK { .. } => pick.main = top_k_row(z, cand),
                Arch::Relu => {
                    pick.main = z
                        .iter()
                        .enumerate()
                        .filter(|(_, &v)| v > 0.0)
                        .map(|(j, &v)| (j as u32, v))
                        .collect()
                }
                Arch::JumpRelu => {
                    for (j, &v) in z.iter().enumerate() {
                        if v > theta[j] {
                            pick.main.push((j as u32, v));
                        }
                        if (v - theta[j]).abs() < half_eps {
                            pick.window.push((j as u32, v));
                        }
                    }
                }
            }
            if aux_on {
                pick.aux = top_k_positive(dead_ids.iter().map(|&j| (z[j as usize], j)), k_aux);
            }
            pick
        })
        .collect();
    *z_buf = z;
    let mut min_selected = None;
    let sel = match obj.arch {
        Arch::BatchTopK { k } => {
            let (main, min) = batch_top_k(p, &xc, rows.iter().map(|r| &r.main[..]), k * b, cand);
            min_selected = min;
            Sparse::from_rows(main)
        }
        _ => Sparse::from_rows(rows.iter().map(|r| r.main.clone()).collect()),
    };
    let aux_sel = Sparse::from_rows(rows.iter().map(|r| r.aux.clone()).collect());
    let window: Vec<Vec<(u32, f32)>> = rows.into_iter().map(|r| r.window).collect();

    // Reconstruction and error.
    let mut e = vec![0f32; b * d];
    e.par_chunks_mut(d).enumerate().for_each(|(t, er)| {
        let mut xh = p.b_dec.clone();
        let (idx, val) = sel.row(t);
        for (&j, &v) in idx.iter().zip(val) {
            axpy(&mut xh, v, &p.w_dec[j as usize * d..(j as usize + 1) * d]);
        }
        for ((o, xv), h) in er.iter_mut().zip(&x[t * d..(t + 1) * d]).zip(&xh) {
            *o = xv - h;
        }
    });
    let mean = column_sums(x, d)
        .into_iter()
        .map(|s| s / b as f32)
        .collect::<Vec<f32>>();
    let tv = row_sum(x, d, |_, r| {
        r.iter()
            .zip(&mean)
            .map(|(v, m)| ((v - m) as f64).powi(2))
            .sum()
    })
    .max(1e-30);
    let sse = row_sum(&e, d, |_, r| r.iter().map(|v| (*v as f64).powi(2)).sum());
    let fvu = sse / tv;

    // ê - e (e stop-gradient) per token.
    let mut aux_diff = vec![0f32; if aux_on { b * d } else { 0 }];
    if aux_on {
        aux_diff.par_chunks_mut(d).enumerate().for_each(|(t, out)| {
            let (idx, val) = aux_sel.row(t);
            for (&j, &v) in idx.iter().zip(val) {
                axpy(out, v, &p.w_dec[j as usize * d..(j as usize + 1) * d]);
            }
            out.iter_mut()
                .zip(&e[t * d..(t + 1) * d])
                .for_each(|(o, ev)| *o -= ev);
        });
    }
    let aux = if aux_on {
        aux_scale as f64
            * row_sum(&aux_diff, d, |_, r| {
                r.iter().map(|v| (*v as f64).powi(2)).sum()
            })
            / tv
    } else {
        0.0
    };

    // Sparsity term.
    let dec_norm: Vec<f32> = p.w_dec.par_chunks(d).map(|r| dot(r, r).sqrt()).collect();
    let sparsity = match obj.arch {
        Arch::Relu => {
            sel.idx
                .iter()
                .zip(&sel.val)
                .map(|(&j, &v)| (v * dec_norm[j as usize]) as f64)
                .sum::<f64>()
                / b as f64
        }
        Arch::JumpRelu => sel.idx.len() as f64 / b as f64,
        _ => 0.0,
    };
    // Matryoshka: the error of each inner prefix's reconstruction (entries are in latent
    // order per token, so prefix sums are running sums).
    let widths = &obj.matryoshka;
    let groups = widths.len() + 1;
    let group_of = |j: u32| widths.iter().filter(|&&m| m <= j as usize).count();
    let mut inner_e = vec![0f32; b * widths.len() * d];
    if !widths.is_empty() {
        inner_e
            .par_chunks_mut(widths.len() * d)
            .enumerate()
            .for_each(|(t, out)| {
                let (idx, val) = sel.row(t);
                let mut xh = p.b_dec.clone();
                let mut q = 0;
                for (h, &m) in widths.iter().enumerate() {
                    while q < idx.len() && (idx[q] as usize) < m {
                        let j = idx[q] as usize;
                        axpy(&mut xh, val[q], &p.w_dec[j * d..(j + 1) * d]);
                        q += 1;
                    }
                    for ((o, xv), h2) in out[h * d..(h + 1) * d]
                        .iter_mut()
                        .zip(&x[t * d..(t + 1) * d])
                        .zip(&xh)
                    {
                        *o = xv - h2;
                    }
                }
            });
    }
    let inner = if widths.is_empty() {
        0.0
    } else {
        row_sum(&inner_e, d, |_, r| {
            r.iter().map(|v| (*v as f64).powi(2)).sum()
        }) / tv
    };
    let loss = fvu + inner + obj.aux_alpha as f64 * aux + obj.lambda as f64 * sparsity;

    // ---- Backward ----
    let tvf = tv as f32;
    // dL/dx̂_m = -2 e_m / TV for each reconstruction; a latent in group g (prefixes from
    // the g-th inner width on, and the full one) gets the sum over those: g_xh holds, per
    // token, those suffix sums for g = 0..groups (just -2 e / TV without Matryoshka).
    // dL/dê = 2 α scale (ê - e) / TV.
    let mut g_xh = vec![0f32; b * groups * d];
    g_xh.par_chunks_mut(groups * d)
        .enumerate()
        .for_each(|(t, out)| {
            let last = groups - 1;
            for (o, ev) in out[last * d..].iter_mut().zip(&e[t * d..(t + 1) * d]) {
                *o = -2.0 * ev / tvf;
            }
            for h in (0..last).rev() {
                let (head, tail) = out.split_at_mut((h + 1) * d);
                let next = &tail[..d];
                let ie = &inner_e[(t * widths.len() + h) * d..(t * widths.len() + h + 1) * d];
                for ((o, nv), ev) in head[h * d..].iter_mut().zip(next).zip(ie) {
                    *o = nv - 2.0 * ev / tvf;
                }
            }
        });
    let grow = |t: usize, j: u32| {
        let g = group_of(j);
        &g_xh[(t * groups + g) * d..(t * groups + g + 1) * d]
    };
    let ga = 2.0 * obj.aux_alpha * aux_scale / tvf;
    let g_eh: Vec<f32> = aux_diff.par_iter().map(|v| ga * v).collect();
    let lb = obj.lambda / b as f32;

    // dL/df for every selected entry (plus the L1 term's direct part), per token.
    let g_f: Vec<f32> = (0..b)
        .into_par_iter()
        .flat_map_iter(|t| {
            let (idx, _) = sel.row(t);
            idx.iter()
                .map(|&j| {
                    let g = grow(t, j);
                    let j = j as usize;
                    let mut v = dot(g, &p.w_dec[j * d..(j + 1) * d]);
                    if obj.arch == Arch::Relu {
                        v += lb * dec_norm[j];
                    }
                    v
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let g_a: Vec<f32> = if aux_on {
        (0..b)
            .into_par_iter()
            .flat_map_iter(|t| {
                let (idx, _) = aux_sel.row(t);
                let g = &g_eh[t * d..(t + 1) * d];
                idx.iter()
                    .map(|&j| dot(g, &p.w_dec[j as usize * d..(j as usize + 1) * d]))
                    .collect::<Vec<_>>()
            })
            .collect()
    } else {
        Vec::new()
    };

    // JumpReLU: entries inside the kernel window |z - θ| < ε/2 give θ gradients; inactive
    // ones there need dL/df too.
    let mut g_theta = vec![0f64; if obj.arch == Arch::JumpRelu { n } else { 0 }];
    if obj.arch == Arch::JumpRelu {
        let eps = obj.bandwidth;
        let parts: Vec<Vec<(u32, f64)>> = (0..b)
            .into_par_iter()
            .map(|t| {
                let g = grow(t, 0);
                window[t]
                    .iter()
                    .map(|&(j, _)| {
                        let gf = dot(g, &p.w_dec[j as usize * d..(j as usize + 1) * d]);
                        // ∂f/∂θ = -(θ/ε) K, ∂H/∂θ = -(1/ε) K (the L0 term).
                        let v = -(theta[j as usize] / eps) * gf - lb / eps;
                        (j, v as f64)
                    })
                    .collect()
            })
            .collect();
        for part in parts {
            for (j, v) in part {
                g_theta[j as usize] += v;
            }
        }
    }

    let mut grad = Params::zeros_like(p);
    // Per latent: decoder rows (main and AuxK), encoder rows, encoder bias.
    let (cnt, items) = sel.by_latent(n);
    let (acnt, aitems) = aux_sel.by_latent(n);
    grad.w_dec
        .par_chunks_mut(d)
        .zip(grad.w_enc_t.par_chunks_mut(d))
        .zip(grad.b_enc.par_iter_mut())
        .enumerate()
        .for_each(|(j, ((gw, ge), gb))| {
            let mut gbj = 0f64;
            for &(t, pos) in &items[cnt[j]..cnt[j + 1]] {
                let (t, pos) = (t as usize, pos as usize);
                axpy(gw, sel.val[pos], grow(t, j as u32));
                let dz = g_f[pos]; // ∂f/∂z = 1 on selected entries (z > 0 or z > θ)
                axpy(ge, dz, &xc[t * d..(t + 1) * d]);
                gbj += dz as f64;
            }
            for &(t, pos) in &aitems[acnt[j]..acnt[j + 1]] {
                let (t, pos) = (t as usize, pos as usize);
                axpy(gw, aux_sel.val[pos], &g_eh[t * d..(t + 1) * d]);
                let dz = g_a[pos];
                axpy(ge, dz, &xc[t * d..(t + 1) * d]);
                gbj += dz as f64;
            }
            *gb = gbj as f32;
        });
    if obj.arch == Arch::Relu {
        // ∂/∂W_dec of λ/B Σ f ||W_dec_j||: (λ/B Σ_t f_tj) W_dec_j / ||W_dec_j||.
        grad.w_dec
            .par_chunks_mut(d)
            .enumerate()
            .for_each(|(j, gw)| {
                let s: f32 = items[cnt[j]..cnt[j + 1]]
                    .iter()
                    .map(|&(_, pos)| sel.val[pos as usize])
                    .sum();
                if dec_norm[j] > 0.0 {
                    axpy(gw, lb * s / dec_norm[j], &p.w_dec[j * d..(j + 1) * d]);
                }
            });
    }
    if obj.arch == Arch::JumpRelu {
        grad.log_threshold = g_theta
            .iter()
            .zip(&theta)
            .map(|(g, t)| (*g * *t as f64) as f32)
            .collect();
    }
    // b_dec: through x̂ (+ b_dec) and through x_c (- b_dec): Σ_t g_x̂ - Σ_t Σ_j dz W_enc_j.
    let mut g_xc = vec![0f32; b * d];
    g_xc.par_chunks_mut(d).enumerate().for_each(|(t, out)| {
        let (idx, _) = sel.row(t);
        let s = sel.offsets[t];
        for (q, &j) in idx.iter().enumerate() {
            axpy(
                out,
                g_f[s + q],
                &p.w_enc_t[j as usize * d..(j as usize + 1) * d],
            );
        }
        let (aidx, _) = aux_sel.row(t);
        let s = aux_sel.offsets[t];
        for (q, &j) in aidx.iter().enumerate() {
            axpy(
                out,
                g_a[s + q],
                &p.w_enc_t[j as usize * d..(j as usize + 1) * d],
            );
        }
    });
    let first: Vec<f32> = g_xh
        .par_chunks(groups * d)
        .flat_map_iter(|c| c[..d].to_vec())
        .collect();
    let from_out = column_sums(&first, d);
    let from_in = column_sums(&g_xc, d);
    grad.b_dec = from_out.iter().zip(&from_in).map(|(a, b)| a - b).collect();

    let mut fire_counts = vec![0u32; n];
    for &j in &sel.idx {
        fire_counts[j as usize] += 1;
    }
    let stats = StepStats {
        loss,
        fvu,
        aux,
        inner,
        sparsity,
        l0: sel.idx.len() as f64 / b as f64,
        fire_counts,
        min_selected,
    };
    (grad, stats)
}

/// Remove from each decoder row's gradient its component along the (unit) row.
pub fn project_decoder_grad(p: &Params, g: &mut Params) {
    let d = p.d_in;
    g.w_dec
        .par_chunks_mut(d)
        .zip(p.w_dec.par_chunks(d))
        .for_each(|(gr, w)| {
            let ww = dot(w, w);
            if ww > 0.0 {
                let c = dot(gr, w) / ww;
                axpy(gr, -c, w);
            }
        });
}

/// Adam (PyTorch's form: `p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + ε)`), with its
/// moments; `step` counts from 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub m: Params,
    pub v: Params,
    pub step: u64,
}

impl Adam {
    pub fn new(p: &Params) -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            m: Params::zeros_like(p),
            v: Params::zeros_like(p),
            step: 0,
        }
    }

    pub fn update(&mut self, p: &mut Params, g: &Params, lr: f64) {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        let step_size = (lr / bc1) as f32;
        let sqrt_bc2 = bc2.sqrt() as f32;
        let eps = self.eps as f32;
        let (mp, vp) = (self.m.parts_mut(), self.v.parts_mut());
        for (((_, w), (_, m)), ((_, v), (_, gr))) in p
            .parts_mut()
            .into_iter()
            .zip(mp)
            .zip(vp.into_iter().zip(g.parts()))
        {
            w.par_iter_mut()
                .zip(m.par_iter_mut())
                .zip(v.par_iter_mut().zip(gr.par_iter()))
                .for_each(|((w, m), (v, g))| {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *w -= step_size * *m / (v.sqrt() / sqrt_bc2 + eps);
                });
        }
    }
}
