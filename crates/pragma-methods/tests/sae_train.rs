//! SAE training on synthetic activations: a planted dictionary is recovered, a killed
//! run resumes to bit-identical weights, the hand-written backward matches finite
//! differences, and bad settings are refused.

use std::path::Path;

use pragma_methods::sae::training::{
    loss_and_grads, train, Activations, Objective, Params, TrainConfig,
};
use pragma_methods::sae::{Arch, Sae};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Tokens that are sparse non-negative sums of `n_true` random unit directions.
struct Planted {
    d: usize,
    dirs: Vec<Vec<f32>>,
    rows: Vec<f32>,
}

impl Planted {
    fn new(d: usize, n_true: usize, per_token: usize, tokens: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let gauss = |rng: &mut StdRng| -> f32 {
            let (u1, u2): (f32, f32) = (rng.random::<f32>().max(1e-12), rng.random());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        };
        let dirs: Vec<Vec<f32>> = (0..n_true)
            .map(|_| {
                let v: Vec<f32> = (0..d).map(|_| gauss(&mut rng)).collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / n).collect()
            })
            .collect();
        let mut rows = vec![0f32; tokens * d];
        for t in 0..tokens {
            for _ in 0..per_token {
                let j = rng.random_range(0..n_true);
                let a = 1.0 + 2.0 * rng.random::<f32>();
                for i in 0..d {
                    rows[t * d + i] += a * dirs[j][i];
                }
            }
            for i in 0..d {
                rows[t * d + i] += 0.01 * gauss(&mut rng);
            }
        }
        Self { d, dirs, rows }
    }
}

impl Activations for Planted {
    fn n_tokens(&self) -> u64 {
        (self.rows.len() / self.d) as u64
    }
    fn width(&self) -> usize {
        self.d
    }
    fn gather(&self, rows: &[u64]) -> pragma_methods::Result<Vec<f32>> {
        let mut out = Vec::with_capacity(rows.len() * self.d);
        for &r in rows {
            let r = r as usize;
            out.extend_from_slice(&self.rows[r * self.d..(r + 1) * self.d]);
        }
        Ok(out)
    }
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({"store": "planted", "tokens": self.n_tokens()})
    }
    fn hook(&self) -> &str {
        "blocks.0.hook_resid_post"
    }
}

/// Share of planted directions whose best-matching decoder row has cosine > 0.9.
fn recovered(sae: &Sae, dirs: &[Vec<f32>]) -> f64 {
    let w: Vec<f32> = sae.w_dec.flatten_all().expect("w").to_vec1().expect("v");
    let d = sae.cfg.d_in;
    let rows: Vec<&[f32]> = w.chunks(d).collect();
    let hit = dirs
        .iter()
        .filter(|v| {
            rows.iter().any(|r| {
                let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
                r.iter().zip(v.iter()).map(|(a, b)| a * b).sum::<f32>() / n > 0.9
            })
        })
        .count();
    hit as f64 / dirs.len() as f64
}

fn small_cfg(arch: Arch, d_sae: usize, tokens: u64) -> TrainConfig {
    let mut c = TrainConfig::new(arch, d_sae);
    c.tokens = tokens;
    c.batch_tokens = 512;
    c.lr = Some(3e-3);
    c.checkpoint_every = 5;
    c.scale_tokens = 4096;
    c
}

#[test]
fn a_planted_dictionary_is_recovered() {
    let data = Planted::new(32, 48, 3, 40_000, 7);
    for (arch, widths) in [
        (Arch::TopK { k: 3 }, vec![]),
        (Arch::BatchTopK { k: 3 }, vec![]),
        (Arch::BatchTopK { k: 3 }, vec![24, 48]),
    ] {
        let d = tempfile::tempdir().expect("tmp");
        let mut cfg = small_cfg(arch, 96, 400_000);
        cfg.matryoshka = widths.clone();
        let (sae, r) = train(&data, &cfg, d.path(), &mut ()).expect("train");
        let share = recovered(&sae, &data.dirs);
        eprintln!(
            "{}{:?}: FVU {:.4}, L0 {:.2}, dead {:.3}, recovered {:.3} of the planted directions",
            arch.name(),
            widths,
            r.final_fvu,
            r.final_l0,
            r.dead_fraction,
            share
        );
        // Matryoshka's inner prefixes (24 and 48 latents for 48 planted directions) must
        // reconstruct alone, so they learn broader directions: it recovers fewer of the
        // planted ones exactly, at a higher FVU (measured 0.75 and 0.10 here).
        let (min_share, max_fvu) = if widths.is_empty() {
            (0.9, 0.1)
        } else {
            (0.7, 0.15)
        };
        assert!(share >= min_share, "{}: recovered {share}", arch.name());
        assert!(
            r.final_fvu < max_fvu,
            "{}: FVU {}",
            arch.name(),
            r.final_fvu
        );
        // The saved folder loads back and reconstructs raw (unscaled) activations.
        let back = Sae::load(d.path()).expect("load");
        assert_eq!(back.cfg.d_sae, 96);
        let x = candle_core::Tensor::from_vec(
            data.rows[..32 * 64].to_vec(),
            (64, 32),
            &candle_core::Device::Cpu,
        )
        .expect("x");
        let xh = back.decode(&back.encode(&x).expect("enc")).expect("dec");
        let err: f32 = (&x - &xh)
            .expect("d")
            .sqr()
            .expect("s")
            .sum_all()
            .expect("s")
            .to_scalar()
            .expect("v");
        let tot: f32 = x
            .sqr()
            .expect("s")
            .sum_all()
            .expect("s")
            .to_scalar()
            .expect("v");
        assert!(
            err / tot < 0.2,
            "{}: reload error {}",
            arch.name(),
            err / tot
        );
        assert!(d.path().join("log.jsonl").exists());
        let svg = std::fs::read_to_string(d.path().join("loss.svg")).expect("loss.svg");
        assert!(
            svg.trim_end().ends_with("</svg>") && svg.contains("FVU"),
            "{svg}"
        );
    }
}

#[test]
fn a_killed_run_resumes_to_bit_identical_weights() {
    let data = Planted::new(16, 24, 2, 8_000, 3);
    let cfg = small_cfg(Arch::TopK { k: 2 }, 48, 30 * 512);
    let full = tempfile::tempdir().expect("tmp");
    train(&data, &cfg, full.path(), &mut ()).expect("full");
    let part = tempfile::tempdir().expect("tmp");
    // Killed after 13 steps: the checkpoint holds step 10; steps 11-13 are redone.
    let mut stopped = cfg.clone();
    stopped.stop_after_steps = Some(13);
    let e = train(&data, &stopped, part.path(), &mut ()).expect_err("stopped");
    assert!(e.to_string().contains("stopped after 13 steps"), "{e}");
    let (_, r) = train(&data, &cfg, part.path(), &mut ()).expect("resume");
    assert_eq!(r.resumed_from_step, 10);
    let bytes = |p: &Path| std::fs::read(p.join("sae_weights.safetensors")).expect("w");
    assert!(
        bytes(full.path()) == bytes(part.path()),
        "resumed weights differ from the uninterrupted run"
    );
    // Another configuration in the same folder is refused, not mixed.
    let mut other = cfg.clone();
    other.seed = 9;
    let e = train(&data, &other, part.path(), &mut ()).expect_err("mixed");
    assert!(e.to_string().contains("other settings"), "{e}");
}

/// Finite differences of the loss (f32, central, step 1e-3) against the backward, for one
/// coordinate of each parameter tensor; the selection is held fixed by small steps.
#[test]
fn the_sparse_backward_matches_finite_differences() {
    let (d, n, b) = (8usize, 24usize, 16usize);
    let mut rng = StdRng::seed_from_u64(5);
    let mut r = |s: f32| (rng.random::<f32>() - 0.5) * 2.0 * s;
    let x: Vec<f32> = (0..b * d).map(|_| r(2.0)).collect();
    for arch in [
        Arch::TopK { k: 3 },
        Arch::BatchTopK { k: 3 },
        Arch::Relu,
        Arch::JumpRelu,
    ] {
        let mut p = Params {
            d_in: d,
            d_sae: n,
            w_enc_t: (0..n * d).map(|_| r(0.5)).collect(),
            b_enc: (0..n).map(|_| r(0.2)).collect(),
            w_dec: (0..n * d).map(|_| r(0.5)).collect(),
            b_dec: (0..d).map(|_| r(0.3)).collect(),
            log_threshold: if arch == Arch::JumpRelu {
                vec![(0.3f32).ln(); n]
            } else {
                Vec::new()
            },
        };
        p.normalize_decoder();
        let obj = Objective {
            arch,
            aux_alpha: 1.0 / 32.0,
            lambda: 0.01,
            bandwidth: 0.05,
            matryoshka: Vec::new(),
        };
        // No dead latents: AuxK's target is a stop-gradient (its gradient is not the
        // derivative of the loss value), so it is checked against the torch reference in
        // `sae_reference.rs` instead.
        let (g, _) = loss_and_grads(&p, &x, b, None, &obj);
        let loss = |q: &Params| loss_and_grads(q, &x, b, None, &obj).1.loss;
        let h = 1e-3f32;
        let checks: Vec<(&str, usize)> = vec![
            ("w_enc_t", 3 * d + 1),
            ("b_enc", 5),
            ("w_dec", 2 * d + 4),
            ("b_dec", 3),
        ];
        for (name, i) in checks {
            let (mut up, mut dn) = (p.clone(), p.clone());
            let bump = |q: &mut Params, dv: f32| match name {
                "w_enc_t" => q.w_enc_t[i] += dv,
                "b_enc" => q.b_enc[i] += dv,
                "w_dec" => q.w_dec[i] += dv,
                _ => q.b_dec[i] += dv,
            };
            bump(&mut up, h);
            bump(&mut dn, -h);
            let fd = (loss(&up) - loss(&dn)) / (2.0 * h as f64);
            let an = match name {
                "w_enc_t" => g.w_enc_t[i],
                "b_enc" => g.b_enc[i],
                "w_dec" => g.w_dec[i],
                _ => g.b_dec[i],
            } as f64;
            assert!(
                (fd - an).abs() <= 2e-3 * fd.abs().max(an.abs()).max(1e-2),
                "{} {name}[{i}]: finite difference {fd:.6} vs backward {an:.6}",
                arch.name()
            );
        }
    }
}

#[test]
fn bad_settings_are_refused() {
    let data = Planted::new(16, 8, 1, 2_000, 1);
    let d = tempfile::tempdir().expect("tmp");
    for (arch, n, want) in [
        (Arch::TopK { k: 0 }, 32, "expected 0 < k < d_sae"),
        (Arch::TopK { k: 32 }, 32, "expected 0 < k < d_sae"),
    ] {
        let e = train(&data, &small_cfg(arch, n, 4096), d.path(), &mut ()).expect_err("bad k");
        assert!(e.to_string().contains(want), "{e}");
    }
    let mut big = small_cfg(Arch::TopK { k: 2 }, 32, 200_000);
    big.batch_tokens = 100_000;
    let e = train(&data, &big, d.path(), &mut ()).expect_err("batch");
    assert!(e.to_string().contains("fewer than one batch"), "{e}");
    let mut short = small_cfg(Arch::TopK { k: 2 }, 32, 100);
    short.batch_tokens = 512;
    let e = train(&data, &short, d.path(), &mut ()).expect_err("tokens");
    assert!(e.to_string().contains("--tokens >= --batch-tokens"), "{e}");
    let mut nan_lr = small_cfg(Arch::TopK { k: 2 }, 32, 4096);
    nan_lr.lr = Some(f64::NAN);
    let e = train(&data, &nan_lr, d.path(), &mut ()).expect_err("lr");
    assert!(e.to_string().contains("finite --lr"), "{e}");
    // A folder that holds something else is not overwritten.
    let used = tempfile::tempdir().expect("tmp");
    std::fs::write(used.path().join("cfg.json"), "{}").expect("w");
    let e = train(
        &data,
        &small_cfg(Arch::TopK { k: 2 }, 32, 4096),
        used.path(),
        &mut (),
    )
    .expect_err("used");
    assert!(e.to_string().contains("not empty"), "{e}");
    // NaN in the data: the rows are named.
    let mut nan = Planted::new(16, 8, 1, 2_000, 1);
    nan.rows[5 * 16 + 3] = f32::NAN;
    let mut all = small_cfg(Arch::TopK { k: 2 }, 32, 2_000 * 4);
    all.scale_tokens = 2_000;
    let d2 = tempfile::tempdir().expect("tmp");
    let e = train(&nan, &all, d2.path(), &mut ()).expect_err("nan");
    assert!(e.to_string().contains("NaN/inf values at rows [5]"), "{e}");
}

/// Rows whose norm is far above the median (secondary attention sinks) are left out of
/// training: a planted dictionary is still recovered with 0.2% of rows 300x too large.
#[test]
fn norm_outliers_are_left_out_of_training() {
    let mut data = Planted::new(32, 48, 3, 40_000, 7);
    for t in (0..40_000).step_by(500) {
        for i in 0..32 {
            data.rows[t * 32 + i] *= 300.0;
        }
    }
    let d = tempfile::tempdir().expect("tmp");
    let cfg = small_cfg(Arch::TopK { k: 3 }, 96, 400_000);
    let (sae, r) = train(&data, &cfg, d.path(), &mut ()).expect("train");
    let log = std::fs::read_to_string(d.path().join("log.jsonl")).expect("log");
    let outliers: u64 = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["outliers"].as_u64().unwrap_or(0))
        .sum();
    assert!(outliers > 0, "outlier rows were counted");
    let share = recovered(&sae, &data.dirs);
    eprintln!(
        "with outliers: FVU {:.4}, recovered {share:.3}, {outliers} outlier rows skipped",
        r.final_fvu
    );
    assert!(share >= 0.9, "recovered {share}");
}
