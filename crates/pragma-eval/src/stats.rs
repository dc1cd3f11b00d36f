//! Statistics of the benchmark: AUROC over seeds and examples with a two-level
//! bootstrap, and paired differences between techniques.
//!
//! A technique's result on a task is a set of per-seed test sets (each seed re-splits the
//! data). The point estimate is the mean over seeds of the test AUROC. Its 95% interval is
//! a percentile bootstrap at two levels (Davison & Hinkley 1997, §3.8): each replicate
//! draws seeds with replacement, then, within each drawn seed, a class-stratified
//! resample of its test examples (positives and negatives each resampled to their own
//! count, so every replicate has both classes), and averages the drawn seeds' AUROCs.
//! Paired comparisons apply the *same* draws to both techniques (they share test sets),
//! which removes the variance the two have in common; the two-sided p-value is
//! `min(1, 2 * min(#(d <= 0) + 1, #(d >= 0) + 1) / (reps + 1))`.

use pragma_methods::linear::auroc;
use pragma_methods::stats::XorShift;
use serde::{Deserialize, Serialize};

/// One seed's test set for one technique: scores and 0/1 labels, same length.
pub type SeedScores<'a> = (&'a [f64], &'a [u8]);

/// A point estimate with its 95% interval.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Estimate {
    #[serde(with = "pragma_model::io::json_f64")]
    pub mean: f64,
    #[serde(with = "pragma_model::io::json_f64")]
    pub lo: f64,
    #[serde(with = "pragma_model::io::json_f64")]
    pub hi: f64,
}

/// A paired difference (a - b) with its interval and two-sided bootstrap p-value.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Paired {
    pub diff: Estimate,
    #[serde(with = "pragma_model::io::json_f64")]
    pub p: f64,
}

impl Paired {
    /// Whether the interval includes 0: the difference is within noise.
    pub fn within_noise(&self) -> bool {
        self.diff.lo <= 0.0 && self.diff.hi >= 0.0
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Linear interpolation between order statistics (numpy's default).
    let h = q * (sorted.len() - 1) as f64;
    let (i, f) = (h.floor() as usize, h - h.floor());
    if i + 1 < sorted.len() {
        sorted[i] + f * (sorted[i + 1] - sorted[i])
    } else {
        sorted[i]
    }
}

/// Indices of one stratified resample of `labels`.
fn stratified(labels: &[u8], rng: &mut XorShift) -> Vec<usize> {
    let pos: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == 1).collect();
    let neg: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] != 1).collect();
    let mut out = Vec::with_capacity(labels.len());
    for class in [&pos, &neg] {
        for _ in 0..class.len() {
            out.push(class[rng.below(class.len())]);
        }
    }
    out
}

fn auroc_of(scores: &[f64], labels: &[u8], idx: Option<&[usize]>) -> f64 {
    match idx {
        None => auroc(scores, labels).unwrap_or(f64::NAN),
        Some(ix) => {
            let s: Vec<f64> = ix.iter().map(|&i| scores[i]).collect();
            let l: Vec<u8> = ix.iter().map(|&i| labels[i]).collect();
            auroc(&s, &l).unwrap_or(f64::NAN)
        }
    }
}

/// The replicate draws: for each replicate, the seeds drawn and, per drawn seed, the
/// resampled example indices. Shared by every technique of a task (same seed, same draws).
pub struct Draws {
    reps: Vec<Vec<(usize, Vec<usize>)>>,
}

impl Draws {
    /// `reps` replicates over the seeds' label vectors (one per seed), seeded by `seed`.
    /// `shared`: every seed has the same test examples (given splits): one resample of
    /// them per replicate serves every drawn seed, so that repeating a test set across
    /// seeds does not narrow the interval.
    pub fn new(labels: &[&[u8]], reps: usize, seed: u64, shared: bool) -> Draws {
        let mut rng = XorShift::new(seed, 0xB007);
        let n = labels.len();
        let reps = (0..reps)
            .map(|_| {
                let common = shared.then(|| stratified(labels[0], &mut rng));
                (0..n)
                    .map(|_| {
                        let s = if n == 1 { 0 } else { rng.below(n) };
                        let ix = match &common {
                            Some(c) => c.clone(),
                            None => stratified(labels[s], &mut rng),
                        };
                        (s, ix)
                    })
                    .collect()
            })
            .collect();
        Draws { reps }
    }

    fn replicate(&self, seeds: &[SeedScores]) -> Vec<f64> {
        self.reps
            .iter()
            .map(|draw| {
                draw.iter()
                    .map(|(s, ix)| auroc_of(seeds[*s].0, seeds[*s].1, Some(ix)))
                    .sum::<f64>()
                    / draw.len() as f64
            })
            .collect()
    }

    /// Mean over seeds of the test AUROC, with the two-level bootstrap interval.
    pub fn auroc(&self, seeds: &[SeedScores]) -> Estimate {
        let mean = seeds.iter().map(|(s, l)| auroc_of(s, l, None)).sum::<f64>()
            / seeds.len().max(1) as f64;
        let mut r = self.replicate(seeds);
        r.retain(|v| v.is_finite());
        r.sort_by(f64::total_cmp);
        Estimate {
            mean,
            lo: percentile(&r, 0.025),
            hi: percentile(&r, 0.975),
        }
    }

    /// AUROC(a) - AUROC(b), paired: both read the same draws.
    pub fn paired(&self, a: &[SeedScores], b: &[SeedScores]) -> Paired {
        let (ea, eb) = (self.auroc(a), self.auroc(b));
        let (ra, rb) = (self.replicate(a), self.replicate(b));
        let mut d: Vec<f64> = ra
            .iter()
            .zip(&rb)
            .map(|(x, y)| x - y)
            .filter(|v| v.is_finite())
            .collect();
        let le = d.iter().filter(|&&v| v <= 0.0).count();
        let ge = d.iter().filter(|&&v| v >= 0.0).count();
        let p = (2.0 * (le.min(ge) + 1) as f64 / (d.len() + 1) as f64).min(1.0);
        d.sort_by(f64::total_cmp);
        Paired {
            diff: Estimate {
                mean: ea.mean - eb.mean,
                lo: percentile(&d, 0.025),
                hi: percentile(&d, 0.975),
            },
            p,
        }
    }
}

/// Percentile bootstrap 95% interval of the mean of `x` (`reps` resamples, seeded):
/// scipy.stats.bootstrap(method="percentile") computes the same quantity.
pub fn mean_ci(x: &[f64], reps: usize, seed: u64) -> Estimate {
    let mean = x.iter().sum::<f64>() / x.len().max(1) as f64;
    if x.is_empty() {
        return Estimate {
            mean: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    let mut rng = XorShift::new(seed, 0xC1);
    let mut r: Vec<f64> = (0..reps)
        .map(|_| (0..x.len()).map(|_| x[rng.below(x.len())]).sum::<f64>() / x.len() as f64)
        .collect();
    r.sort_by(f64::total_cmp);
    Estimate {
        mean,
        lo: percentile(&r, 0.025),
        hi: percentile(&r, 0.975),
    }
}

/// `ln(k!)` for k = 0..=n.
pub fn ln_factorials(n: usize) -> Vec<f64> {
    let mut t = vec![0.0; n + 1];
    for k in 1..=n {
        t[k] = t[k - 1] + (k as f64).ln();
    }
    t
}

/// One-sided Fisher exact test that an event is more frequent in group B than in group
/// A: `b` of `n_b` items in B have it, `a` of `n_a` in A. Under the null (exchangeable
/// items) the count in B given the total is hypergeometric, so this is the exact
/// permutation test of the frequency difference; p = P(X >= b). As
/// `scipy.stats.fisher_exact([[b, n_b - b], [a, n_a - a]], alternative="greater")`.
/// `lf`: [`ln_factorials`] up to at least `n_a + n_b`.
pub fn fisher_greater(b: usize, n_b: usize, a: usize, n_a: usize, lf: &[f64]) -> f64 {
    let k = a + b;
    let n = n_a + n_b;
    let ln_choose = |n: usize, r: usize| lf[n] - lf[r] - lf[n - r];
    let denom = ln_choose(n, k);
    let hi = k.min(n_b);
    let mut p = 0.0;
    for x in b..=hi {
        if k - x > n_a {
            continue;
        }
        p += (ln_choose(n_b, x) + ln_choose(n_a, k - x) - denom).exp();
    }
    p.min(1.0)
}

/// Benjamini-Hochberg adjusted p-values (`scipy.stats.false_discovery_control(p,
/// method="bh")`): `p_(i) * m / i`, made monotone from the largest down, capped at 1; in the
/// input's order. A hypothesis is a discovery at FDR q when its adjusted p-value is <= q.
pub fn bh_adjust(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut adj = vec![0.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(p[i] * m as f64 / (rank + 1) as f64);
        adj[i] = running.min(1.0);
    }
    adj
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three seeds with one and the same test set: a shared resample keeps the interval as
    /// wide as one seed's; independent resamples would narrow it by about sqrt(3).
    #[test]
    fn a_repeated_test_set_does_not_narrow_the_interval() {
        let labels: Vec<u8> = (0..80).map(|i| (i % 2) as u8).collect();
        let s: Vec<f64> = (0..80)
            .map(|i| ((i * 29) % 23) as f64 + 6.0 * (i % 2) as f64)
            .collect();
        let one = Draws::new(&[&labels], 2000, 3, false).auroc(&[(&s, &labels)]);
        let three = [(&s[..], &labels[..]); 3];
        let ls = [&labels[..]; 3];
        let shared = Draws::new(&ls, 2000, 3, true).auroc(&three);
        let indep = Draws::new(&ls, 2000, 3, false).auroc(&three);
        let w = |e: Estimate| e.hi - e.lo;
        assert!(
            (w(shared) / w(one) - 1.0).abs() < 0.1,
            "{shared:?} vs {one:?}"
        );
        assert!(w(indep) < 0.75 * w(one), "{indep:?} vs {one:?}");
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        // numpy.percentile([1,2,3,4], [2.5, 50, 97.5]) = [1.075, 2.5, 3.925]
        assert!((percentile(&v, 0.025) - 1.075).abs() < 1e-12);
        assert!((percentile(&v, 0.5) - 2.5).abs() < 1e-12);
        assert!((percentile(&v, 0.975) - 3.925).abs() < 1e-12);
    }

    #[test]
    fn identical_techniques_differ_by_nothing_and_a_perfect_one_wins() {
        let labels: Vec<u8> = (0..60).map(|i| (i % 2) as u8).collect();
        let noise: Vec<f64> = (0..60).map(|i| ((i * 37) % 17) as f64).collect();
        let perfect: Vec<f64> = labels.iter().map(|&l| l as f64).collect();
        let d = Draws::new(&[&labels, &labels], 500, 1, false);
        let a = [(&noise[..], &labels[..]), (&noise[..], &labels[..])];
        let p = [(&perfect[..], &labels[..]), (&perfect[..], &labels[..])];
        let same = d.paired(&a, &a);
        assert_eq!(same.diff.mean, 0.0);
        assert!(same.within_noise() && same.p == 1.0);
        let win = d.paired(&p, &a);
        assert!(!win.within_noise(), "{win:?}");
        assert!(win.p < 0.01);
        let e = d.auroc(&p);
        assert_eq!((e.mean, e.lo, e.hi), (1.0, 1.0, 1.0));
    }
}
