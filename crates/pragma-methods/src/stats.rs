//! Small statistics shared by the methods: means, bootstrap confidence intervals, and the
//! seeded generator behind every resample, split and random control.

/// A xorshift64 generator: the same numbers on every machine, enough for shuffles,
/// resampling and random controls (not for cryptography).
pub struct XorShift(u64);

impl XorShift {
    /// Seed mixing for splits, shuffles and random vectors.
    pub const SHUFFLE: u64 = 0x9E37_79B9_7F4A_7C15;
    /// Seed mixing for bootstrap resamples (a different stream from the same seed).
    pub const BOOTSTRAP: u64 = 0x2545_F491_4F6C_DD1D;

    pub fn new(seed: u64, stream: u64) -> Self {
        Self(seed.wrapping_mul(stream) | 1)
    }

    /// A generator whose state is `seed` and `stream` mixed by SplitMix64 (Steele et al.
    /// 2014), so even seed 0 or a small stream starts from a well-spread state. `new`'s
    /// first draws from such seeds are tiny (state 1, or a small product), which biases
    /// anything read from the first few `next_f64` calls, such as a random vector's first
    /// components; use this for random vectors.
    pub fn mixed(seed: u64, stream: u64) -> Self {
        let mix = |mut z: u64| {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self(mix(seed ^ mix(stream)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

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
    let mut rng = XorShift::new(seed, XorShift::BOOTSTRAP);
    let n = x.len();
    let mut means: Vec<f64> = (0..reps.max(1))
        .map(|_| (0..n).map(|_| x[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    (at(0.025), at(0.975))
}

#[cfg(test)]
mod tests {
    #[test]
    fn mixed_seeds_start_uniform() {
        // The first draw over seeds 0..2000 and small streams is uniform (mean 1/2, sd of
        // the mean 0.0065), which `new`'s is not for small products.
        for stream in [1u64, 0x5A4D] {
            let m = (0..2000)
                .map(|s| super::XorShift::mixed(s, stream).next_f64())
                .sum::<f64>()
                / 2000.0;
            assert!(
                (m - 0.5).abs() < 0.03,
                "stream {stream}: mean first draw {m}"
            );
        }
        let old = (0..2000)
            .map(|s| super::XorShift::new(s, 0x5A4D).next_f64())
            .sum::<f64>()
            / 2000.0;
        assert!(old < 0.1, "the unmixed first draw is tiny: {old}");
    }

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
