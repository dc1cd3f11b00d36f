//! Small statistics shared by the methods: means and bootstrap confidence intervals.

/// Arithmetic mean (0 for an empty slice).
pub fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        0.0
    } else {
        x.iter().sum::<f64>() / x.len() as f64
    }
}

/// Percentile bootstrap 95% CI of the mean, `reps` resamples, seeded.
pub fn bootstrap_ci(x: &[f64], reps: usize, seed: u64) -> (f64, f64) {
    if x.len() < 2 {
        let m = mean(x);
        return (m, m);
    }
    let mut state = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let n = x.len();
    let mut means: Vec<f64> = (0..reps.max(1))
        .map(|_| (0..n).map(|_| x[(next() % n as u64) as usize]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    (at(0.025), at(0.975))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_brackets_the_mean_and_is_seeded() {
        let x: Vec<f64> = (0..50).map(|i| (i % 7) as f64).collect();
        let (lo, hi) = bootstrap_ci(&x, 2000, 3);
        let m = mean(&x);
        assert!(lo < m && m < hi, "{lo} {m} {hi}");
        // The standard error is ~0.28 here, so the 95% interval is about +-0.55.
        assert!((hi - lo) > 0.7 && (hi - lo) < 1.5, "width {}", hi - lo);
        assert_eq!(bootstrap_ci(&x, 2000, 3), (lo, hi));
        assert_eq!(bootstrap_ci(&[2.0], 100, 1), (2.0, 2.0));
    }
}
