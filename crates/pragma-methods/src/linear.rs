//! Linear probes on dense features: L2-regularised logistic regression (L-BFGS),
//! difference of means, standardisation, and the metrics they are judged by.
//!
//! Logistic regression minimises, as scikit-learn's `LogisticRegression(C=C)` does,
//!
//! ```text
//!   C * sum_i log(1 + exp(-y_i (x_i . w + b)))  +  0.5 * |w|^2      (y_i in {-1, +1})
//! ```
//!
//! with the intercept unpenalised. Features are standardised on the training split
//! first (mean 0, population std 1, as `StandardScaler`), so one C grid suits every layer.

/// Dense row-major features `[n, d]` in f64.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub data: Vec<f64>,
    pub n: usize,
    pub d: usize,
}

impl Matrix {
    pub fn new(data: Vec<f64>, n: usize, d: usize) -> Self {
        assert_eq!(data.len(), n * d, "matrix data length");
        Self { data, n, d }
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// Rows `idx` as a new matrix.
    pub fn select(&self, idx: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(idx.len() * self.d);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Matrix::new(data, idx.len(), self.d)
    }
}

/// Dot product with four independent accumulators (lets the compiler vectorise).
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Per-feature mean and population standard deviation of the training rows.
#[derive(Clone, Debug)]
pub struct Standardizer {
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
}

impl Standardizer {
    pub fn fit(x: &Matrix) -> Self {
        let (n, d) = (x.n.max(1) as f64, x.d);
        let mut mean = vec![0.0; d];
        for i in 0..x.n {
            axpy(1.0, x.row(i), &mut mean);
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; d];
        for i in 0..x.n {
            for (v, (xi, m)) in var.iter_mut().zip(x.row(i).iter().zip(&mean)) {
                *v += (xi - m) * (xi - m);
            }
        }
        // Constant features keep scale 1, as StandardScaler does.
        let scale = var
            .iter()
            .map(|v| {
                let s = (v / n).sqrt();
                if s < 1e-12 {
                    1.0
                } else {
                    s
                }
            })
            .collect();
        Self { mean, scale }
    }

    pub fn apply(&self, x: &Matrix) -> Matrix {
        let mut out = x.clone();
        for row in out.data.chunks_mut(x.d) {
            for (v, (m, s)) in row.iter_mut().zip(self.mean.iter().zip(&self.scale)) {
                *v = (*v - m) / s;
            }
        }
        out
    }
}

/// A linear score `x . w + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    pub w: Vec<f64>,
    pub b: f64,
}

impl Linear {
    pub fn scores(&self, x: &Matrix) -> Vec<f64> {
        (0..x.n).map(|i| dot(x.row(i), &self.w) + self.b).collect()
    }

    /// The same score on raw features, folding in the standardisation.
    pub fn unstandardize(&self, s: &Standardizer) -> Linear {
        let w: Vec<f64> = self.w.iter().zip(&s.scale).map(|(w, s)| w / s).collect();
        let b = self.b - dot(&w, &s.mean);
        Linear { w, b }
    }
}

/// Options of the logistic fit.
#[derive(Clone, Copy, Debug)]
pub struct FitOptions {
    /// Stop when the largest gradient entry of the objective divided by C*n is below this.
    pub gtol: f64,
    pub max_iter: usize,
    /// L-BFGS history length.
    pub memory: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            gtol: 1e-6,
            max_iter: 2000,
            memory: 10,
        }
    }
}

/// `(objective, gradient)` of the scaled objective `mean_i loss_i + |w|^2 / (2 C n)`
/// at `theta = [w..., b]`. Same minimiser as scikit-learn's.
fn objective(x: &Matrix, y: &[f64], c: f64, theta: &[f64], grad: &mut [f64]) -> f64 {
    let (n, d) = (x.n as f64, x.d);
    let (w, b) = (&theta[..d], theta[d]);
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut loss = 0.0;
    let mut gb = 0.0;
    for (i, &yi) in y.iter().enumerate() {
        let z = yi * (dot(x.row(i), w) + b);
        // log(1 + exp(-z)) and its derivative -sigmoid(-z), computed stably.
        let (l, s) = if z > 0.0 {
            let e = (-z).exp();
            (e.ln_1p(), e / (1.0 + e))
        } else {
            let e = z.exp();
            (-z + e.ln_1p(), 1.0 / (1.0 + e))
        };
        loss += l;
        let r = -yi * s;
        axpy(r, x.row(i), &mut grad[..d]);
        gb += r;
    }
    let reg = 1.0 / (c * n);
    for (g, wi) in grad[..d].iter_mut().zip(w) {
        *g = *g / n + reg * wi;
    }
    grad[d] = gb / n;
    loss / n + 0.5 * reg * dot(w, w)
}

/// L2 logistic regression on (standardised) features; `labels` are 0/1. `init` warm-starts
/// (e.g. from the previous C of a path); the minimiser does not depend on it.
pub fn fit_logistic(
    x: &Matrix,
    labels: &[u8],
    c: f64,
    init: Option<&Linear>,
    opts: FitOptions,
) -> Linear {
    let d = x.d;
    let y: Vec<f64> = labels
        .iter()
        .map(|&l| if l == 1 { 1.0 } else { -1.0 })
        .collect();
    let mut theta = vec![0.0; d + 1];
    if let Some(init) = init {
        theta[..d].copy_from_slice(&init.w);
        theta[d] = init.b;
    }
    let mut g = vec![0.0; d + 1];
    let mut f = objective(x, &y, c, &theta, &mut g);
    let mut hist_s: std::collections::VecDeque<Vec<f64>> = Default::default();
    let mut hist_y: std::collections::VecDeque<Vec<f64>> = Default::default();
    let mut g_new = vec![0.0; d + 1];
    for _ in 0..opts.max_iter {
        let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if gmax < opts.gtol {
            break;
        }
        // Two-loop recursion: p = -H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(hist_s.len());
        for (s, yv) in hist_s.iter().zip(&hist_y).rev() {
            let rho = 1.0 / dot(yv, s);
            let a = rho * dot(s, &q);
            axpy(-a, yv, &mut q);
            alphas.push((a, rho));
        }
        if let (Some(s), Some(yv)) = (hist_s.back(), hist_y.back()) {
            let gamma = dot(s, yv) / dot(yv, yv);
            q.iter_mut().for_each(|v| *v *= gamma);
        } else {
            let gn = dot(&g, &g).sqrt().max(1e-300);
            q.iter_mut().for_each(|v| *v /= gn);
        }
        for ((s, yv), (a, rho)) in hist_s.iter().zip(&hist_y).zip(alphas.into_iter().rev()) {
            let bcoef = rho * dot(yv, &q);
            axpy(a - bcoef, s, &mut q);
        }
        let p: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &p);
        let p = if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            hist_s.clear();
            hist_y.clear();
            let p: Vec<f64> = g.iter().map(|v| -v).collect();
            slope = dot(&g, &p);
            p
        } else {
            p
        };
        // Backtracking line search (Armijo).
        let mut t = 1.0;
        let mut accepted = None;
        for _ in 0..60 {
            let cand: Vec<f64> = theta.iter().zip(&p).map(|(a, b)| a + t * b).collect();
            let fc = objective(x, &y, c, &cand, &mut g_new);
            if fc <= f + 1e-4 * t * slope {
                accepted = Some((cand, fc));
                break;
            }
            t *= 0.5;
        }
        let Some((cand, fc)) = accepted else { break };
        let s: Vec<f64> = cand.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        if dot(&s, &yv) > 1e-12 * dot(&yv, &yv).max(1e-300) {
            if hist_s.len() == opts.memory {
                hist_s.pop_front();
                hist_y.pop_front();
            }
            hist_s.push_back(s);
            hist_y.push_back(yv);
        }
        let done = (f - fc).abs() <= 1e-15 * f.abs().max(1e-300);
        theta = cand;
        f = fc;
        std::mem::swap(&mut g, &mut g_new);
        if done {
            break;
        }
    }
    Linear {
        w: theta[..d].to_vec(),
        b: theta[d],
    }
}

/// Difference of class means `mean(x | 1) - mean(x | 0)` as the direction, with the
/// threshold at the midpoint of the projected class means (so a score > 0 says class 1).
pub fn fit_diff_means(x: &Matrix, labels: &[u8]) -> Linear {
    let mut mu = [vec![0.0; x.d], vec![0.0; x.d]];
    let mut cnt = [0usize; 2];
    for (i, &l) in labels.iter().enumerate() {
        let k = usize::from(l == 1);
        axpy(1.0, x.row(i), &mut mu[k]);
        cnt[k] += 1;
    }
    for k in 0..2 {
        let c = cnt[k].max(1) as f64;
        mu[k].iter_mut().for_each(|v| *v /= c);
    }
    let w: Vec<f64> = mu[1].iter().zip(&mu[0]).map(|(a, b)| a - b).collect();
    let mid = 0.5 * (dot(&w, &mu[1]) + dot(&w, &mu[0]));
    Linear { w, b: -mid }
}

/// Area under the ROC curve: the probability that a random positive scores above a
/// random negative, ties counting one half (Mann-Whitney U with average ranks).
/// `None` when a class is missing.
pub fn auroc(scores: &[f64], labels: &[u8]) -> Option<f64> {
    let n_pos = labels.iter().filter(|&&l| l == 1).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let avg = (i + j + 2) as f64 / 2.0;
        for &k in &idx[i..=j] {
            if labels[k] == 1 {
                rank_sum_pos += avg;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos * n_neg) as f64)
}

/// Fraction of rows whose `score > threshold` agrees with the label.
pub fn accuracy(scores: &[f64], labels: &[u8], threshold: f64) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    let ok = scores
        .iter()
        .zip(labels)
        .filter(|(s, &l)| (**s > threshold) == (l == 1))
        .count();
    ok as f64 / scores.len() as f64
}

/// Stratified percentile bootstrap 95% CI of `metric(scores, labels)`: positives and
/// negatives are resampled separately so every resample has both classes. `reps == 0`
/// skips it (NaN bounds).
pub fn bootstrap_metric(
    scores: &[f64],
    labels: &[u8],
    reps: usize,
    seed: u64,
    metric: impl Fn(&[f64], &[u8]) -> f64,
) -> (f64, f64) {
    if reps == 0 {
        return (f64::NAN, f64::NAN);
    }
    let pos: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == 1).collect();
    let neg: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] != 1).collect();
    let mut rng = crate::stats::XorShift::new(seed, crate::stats::XorShift::BOOTSTRAP);
    let mut vals = Vec::with_capacity(reps);
    let mut s = Vec::with_capacity(labels.len());
    let mut l = Vec::with_capacity(labels.len());
    for _ in 0..reps {
        s.clear();
        l.clear();
        for group in [&pos, &neg] {
            for _ in 0..group.len() {
                let k = group[rng.below(group.len())];
                s.push(scores[k]);
                l.push(labels[k]);
            }
        }
        vals.push(metric(&s, &l));
    }
    vals.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| vals[((q * (vals.len() - 1) as f64).round() as usize).min(vals.len() - 1)];
    (at(0.025), at(0.975))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_hand_computed_with_ties() {
        // Positives {0.8, 0.5, 0.5}, negatives {0.5, 0.2}: pairs (p > n) count 1, ties 1/2.
        // 0.8 beats both (2); each 0.5 ties 0.5 (0.5) and beats 0.2 (1) -> 1.5 each.
        // U = 2 + 1.5 + 1.5 = 5 of 3 * 2 = 6 pairs.
        let s = [0.8, 0.5, 0.5, 0.5, 0.2];
        let l = [1, 1, 1, 0, 0];
        assert!((auroc(&s, &l).expect("auc") - 5.0 / 6.0).abs() < 1e-12);
        // All tied: 0.5. Perfect: 1. Reversed: 0. One class: none.
        assert_eq!(auroc(&[1.0; 4], &[1, 0, 1, 0]), Some(0.5));
        assert_eq!(auroc(&[3.0, 2.0, 1.0], &[1, 1, 0]), Some(1.0));
        assert_eq!(auroc(&[1.0, 2.0, 3.0], &[1, 1, 0]), Some(0.0));
        assert_eq!(auroc(&[1.0, 2.0], &[1, 1]), None);
    }

    #[test]
    fn logistic_reaches_a_stationary_point_and_separates() {
        // Two Gaussian-ish clouds from a fixed generator.
        let mut state = 7u64;
        let mut u = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let (n, d) = (200, 5);
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let l = (i % 2) as u8;
            for k in 0..d {
                data.push(u() + if k == 0 { l as f64 - 0.5 } else { 0.0 });
            }
            labels.push(l);
        }
        let x = Matrix::new(data, n, d);
        let m = fit_logistic(&x, &labels, 1.0, None, FitOptions::default());
        let y: Vec<f64> = labels
            .iter()
            .map(|&l| if l == 1 { 1.0 } else { -1.0 })
            .collect();
        let mut theta = m.w.clone();
        theta.push(m.b);
        let mut g = vec![0.0; d + 1];
        objective(&x, &y, 1.0, &theta, &mut g);
        assert!(g.iter().all(|v| v.abs() < 1e-6), "gradient {g:?}");
        assert!(m.w[0] > 1.0 && m.w[1..].iter().all(|w| w.abs() < m.w[0] / 3.0));
        assert!(auroc(&m.scores(&x), &labels).expect("auc") > 0.85);
        // Stronger regularisation shrinks the weights.
        let small = fit_logistic(&x, &labels, 1e-3, None, FitOptions::default());
        assert!(dot(&small.w, &small.w) < dot(&m.w, &m.w));
        // Diff of means points the same way; its threshold sits between the classes.
        let dm = fit_diff_means(&x, &labels);
        assert!(dm.w[0] > 0.5);
        assert!(accuracy(&dm.scores(&x), &labels, 0.0) > 0.8);
        // Folding the standardisation in gives the same scores on raw features.
        let st = Standardizer::fit(&x);
        let ms = fit_logistic(&st.apply(&x), &labels, 1.0, None, FitOptions::default());
        let raw = ms.unstandardize(&st).scores(&x);
        let std = ms.scores(&st.apply(&x));
        assert!(raw.iter().zip(&std).all(|(a, b)| (a - b).abs() < 1e-9));
    }

    #[test]
    fn stratified_bootstrap_brackets_the_estimate() {
        let s: Vec<f64> = (0..60)
            .map(|i| (i % 10) as f64 + if i % 2 == 1 { 3.0 } else { 0.0 })
            .collect();
        let l: Vec<u8> = (0..60).map(|i| (i % 2) as u8).collect();
        let a = auroc(&s, &l).expect("auc");
        let (lo, hi) = bootstrap_metric(&s, &l, 500, 1, |s, l| auroc(s, l).unwrap_or(f64::NAN));
        assert!(lo < a && a < hi && hi - lo < 0.5, "{lo} {a} {hi}");
    }
}
