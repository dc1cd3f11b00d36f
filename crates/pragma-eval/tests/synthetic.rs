//! Detection techniques on synthetic activations where the answer is known: a direction
//! planted in the positives' tokens is found by every detector, a random direction scores
//! about 0.5, an SAE latent aligned with the planted direction is the one the SAE
//! techniques choose, and no technique's test scores depend on test labels.

use candle_core::{Device, Tensor};
use pragma_eval::detection::{fit, score, Inputs, Pooling, PromptCache, SplitView};
use pragma_eval::suite::Technique;
use pragma_methods::linear::auroc;
use pragma_methods::probe::{Dataset, Example};
use pragma_methods::sae::{Arch, Normalize, Sae, SaeConfig};
use pragma_methods::stats::XorShift;
use pragma_methods::steering::Side;

fn gauss(rng: &mut XorShift) -> f32 {
    let (u1, u2) = (rng.next_f64().max(1e-300), rng.next_f64());
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// `n` examples of 3-8 tokens of N(0, 1) noise in `d` dimensions; positives (every other
/// example) have `shift * u` added to every token (`u` = the first basis vector).
fn planted(n: usize, d: usize, shift: f32, seed: u64) -> (Dataset, Vec<Tensor>) {
    let mut rng = XorShift::new(seed, 7);
    let mut examples = Vec::new();
    let mut acts = Vec::new();
    for i in 0..n {
        let label = (i % 2) as u8;
        let t = 3 + rng.below(6);
        let mut v: Vec<f32> = (0..t * d).map(|_| gauss(&mut rng)).collect();
        if label == 1 {
            for r in 0..t {
                v[r * d] += shift;
            }
        }
        acts.push(Tensor::from_vec(v, (t, d), &Device::Cpu).expect("t"));
        examples.push(Example {
            input: Side::Text(format!("example {i}")),
            label,
            split: None,
            group: None,
        });
    }
    let ds = Dataset {
        name: "planted".into(),
        examples,
        classes: ["neg".into(), "pos".into()],
        sha256: String::new(),
        question: None,
        yes_is_positive: true,
    };
    (ds, acts)
}

/// A ReLU SAE whose latent 3 reads the planted direction and whose other latents read
/// random unit directions.
fn sae(d: usize, d_sae: usize) -> Sae {
    let mut rng = XorShift::new(99, 1);
    let mut w = vec![0f32; d * d_sae]; // [d, d_sae]
    for j in 0..d_sae {
        let col: Vec<f32> = if j == 3 {
            (0..d).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect()
        } else {
            let c: Vec<f32> = (0..d).map(|_| gauss(&mut rng)).collect();
            let n = c.iter().map(|x| x * x).sum::<f32>().sqrt();
            c.iter().map(|x| x / n).collect()
        };
        for i in 0..d {
            w[i * d_sae + j] = col[i];
        }
    }
    let w_enc = Tensor::from_vec(w, (d, d_sae), &Device::Cpu).expect("w");
    let s = Sae {
        cfg: SaeConfig {
            arch: Arch::Relu,
            d_in: d,
            d_sae,
            hook_name: "blocks.0.hook_resid_post".into(),
            apply_b_dec_to_input: false,
            normalize: Normalize::None,
            rescale_acts_by_decoder_norm: false,
            reshape_hook_z: false,
            model_name: None,
            metadata: serde_json::Value::Null,
        },
        w_dec: w_enc.t().expect("t").contiguous().expect("c"),
        w_enc,
        b_enc: Tensor::full(-0.5f32, d_sae, &Device::Cpu).expect("b"),
        b_dec: Tensor::zeros(d, candle_core::DType::F32, &Device::Cpu).expect("b"),
        threshold: None,
    };
    s.validate().expect("valid");
    s
}

struct Split {
    tr: Vec<usize>,
    va: Vec<usize>,
    te: Vec<usize>,
}

fn split(n: usize) -> Split {
    let ix: Vec<usize> = (0..n).collect();
    Split {
        tr: ix[..n * 6 / 10].to_vec(),
        va: ix[n * 6 / 10..n * 8 / 10].to_vec(),
        te: ix[n * 8 / 10..].to_vec(),
    }
}

fn test_aurocs(inputs: &Inputs, tech: Technique, seed: u64) -> Vec<(Pooling, f64, Vec<f64>)> {
    let s = split(inputs.ds.examples.len());
    let y = |ix: &[usize]| -> Vec<u8> { ix.iter().map(|&i| inputs.ds.examples[i].label).collect() };
    let (ytr, yva) = (y(&s.tr), y(&s.va));
    let view = SplitView {
        train: &s.tr,
        y_train: &ytr,
        val: &s.va,
        y_val: &yva,
        test: &s.te,
    };
    let mut prompts = PromptCache::new(("Yes".into(), "No".into()));
    let f = fit(tech, inputs, &view, seed, None, &mut prompts).expect("fit");
    let yte = y(&s.te);
    score(&f.scorer, inputs, &s.te)
        .into_iter()
        .map(|(p, sc)| (p, auroc(&sc, &yte).expect("auroc"), sc))
        .collect()
}

const ACTIVATION_TECHNIQUES: [Technique; 7] = [
    Technique::Probe,
    Technique::DiffMean,
    Technique::Pca,
    Technique::SaeLatent,
    Technique::SaeProbe(1),
    Technique::SaeProbe(5),
    Technique::Random,
];

#[test]
fn a_planted_direction_is_found_and_a_random_one_is_at_chance() {
    let (d, d_sae) = (128, 32);
    let (ds, acts) = planted(400, d, 1.5, 1);
    let mut inputs = Inputs::new(ds, &acts).expect("inputs");
    inputs.encode(&sae(d, d_sae), &mut |_| {}).expect("encode");
    for tech in ACTIVATION_TECHNIQUES {
        let r = test_aurocs(&inputs, tech, 0);
        assert_eq!(r.len(), 2, "mean and max pooling");
        if tech == Technique::Random {
            // Over seeds, the random direction's mean-pooled AUROC averages about 0.5.
            let m: f64 = (0..10)
                .map(|s| test_aurocs(&inputs, tech, s)[0].1)
                .sum::<f64>()
                / 10.0;
            assert!((m - 0.5).abs() < 0.08, "random: mean AUROC {m}");
        } else {
            let mean = r.iter().find(|x| x.0 == Pooling::Mean).expect("mean").1;
            assert!(mean > 0.95, "{}: mean-pooled AUROC {mean}", tech.name());
        }
    }
}

#[test]
fn sae_techniques_choose_the_planted_latent() {
    let (d, d_sae) = (64, 16);
    let (ds, acts) = planted(300, d, 1.5, 2);
    let mut inputs = Inputs::new(ds, &acts).expect("inputs");
    inputs.encode(&sae(d, d_sae), &mut |_| {}).expect("encode");
    let s = split(300);
    let y = |ix: &[usize]| -> Vec<u8> { ix.iter().map(|&i| inputs.ds.examples[i].label).collect() };
    let (ytr, yva) = (y(&s.tr), y(&s.va));
    let view = SplitView {
        train: &s.tr,
        y_train: &ytr,
        val: &s.va,
        y_val: &yva,
        test: &s.te,
    };
    let mut p = PromptCache::new(("Yes".into(), "No".into()));
    for tech in [Technique::SaeLatent, Technique::SaeProbe(1)] {
        let f = fit(tech, &inputs, &view, 0, None, &mut p).expect("fit");
        match f.scorer {
            pragma_eval::detection::Scorer::Latents { w, .. } => {
                assert_eq!(w.len(), 1);
                assert_eq!(w[0].0, 3, "{}: chose {}", tech.name(), f.choice);
                assert!(w[0].1 > 0.0);
            }
            pragma_eval::detection::Scorer::Latent { j, sign } => {
                assert_eq!((j, sign), (3, 1.0), "{}: chose {}", tech.name(), f.choice);
            }
            _ => panic!("{}: not a latent scorer", tech.name()),
        }
    }
}

/// Flipping every test label changes no technique's test scores: nothing is chosen on
/// test.
#[test]
fn test_labels_are_never_read() {
    let (d, d_sae) = (32, 16);
    let (ds, acts) = planted(200, d, 1.0, 3);
    let mut a = Inputs::new(ds.clone(), &acts).expect("a");
    a.encode(&sae(d, d_sae), &mut |_| {}).expect("encode");
    let mut flipped = ds;
    for i in split(200).te {
        flipped.examples[i].label ^= 1;
    }
    let mut b = Inputs::new(flipped, &acts).expect("b");
    b.encode(&sae(d, d_sae), &mut |_| {}).expect("encode");
    for tech in ACTIVATION_TECHNIQUES {
        let (ra, rb) = (test_aurocs(&a, tech, 0), test_aurocs(&b, tech, 0));
        for (x, y) in ra.iter().zip(&rb) {
            assert_eq!(
                x.2,
                y.2,
                "{}: test scores moved with test labels",
                tech.name()
            );
        }
    }
}

/// A latent that fires for the negative class is read negated, after pooling: its
/// max-pooled detector is `-max_t f`, which separates the classes as well as the mean.
#[test]
fn a_negative_class_latent_is_negated_after_pooling() {
    let (d, d_sae) = (64, 16);
    let (mut ds, acts) = planted(300, d, 2.0, 4);
    for e in &mut ds.examples {
        e.label ^= 1; // the planted direction now marks the negatives
    }
    let mut inputs = Inputs::new(ds, &acts).expect("inputs");
    inputs.encode(&sae(d, d_sae), &mut |_| {}).expect("encode");
    let r = test_aurocs(&inputs, Technique::SaeLatent, 0);
    for (p, a, _) in &r {
        assert!(*a > 0.9, "{p:?}: AUROC {a}");
    }
}

/// The steering techniques' vectors on the planted data: difference of means, probe, PCA
/// and the SAE latent's decoder row all point along the planted direction (largest weight
/// on it, cosine > 0.9, the probe's > 0.6, signed toward the concept); the random vector is near orthogonal to it; prompting has
/// no vector.
#[test]
fn steering_directions_point_along_the_planted_direction() {
    let (d, d_sae) = (64, 16);
    let (ds, acts) = planted(300, d, 1.5, 3);
    let mut inputs = Inputs::new(ds, &acts).expect("inputs");
    let sae = sae(d, d_sae);
    inputs.encode(&sae, &mut |_| {}).expect("encode");
    let s = split(300);
    let y = |ix: &[usize]| -> Vec<u8> { ix.iter().map(|&i| inputs.ds.examples[i].label).collect() };
    let (ytr, yva) = (y(&s.tr), y(&s.va));
    let view = SplitView {
        train: &s.tr,
        y_train: &ytr,
        val: &s.va,
        y_val: &yva,
        test: &s.te,
    };
    for tech in [
        Technique::DiffMean,
        Technique::Probe,
        Technique::Pca,
        Technique::SaeLatent,
    ] {
        let v = pragma_eval::steering::direction(tech, &inputs, &view, 0, Some(&sae))
            .expect("direction")
            .expect("a vector");
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-9,
            "{}: unit norm, got {norm}",
            tech.name()
        );
        // The probe's weights carry its regularised fit's noise (~0.7 here); the others
        // average it out.
        let min = if tech == Technique::Probe { 0.6 } else { 0.9 };
        assert!(
            v[0] > min,
            "{}: cosine with the planted direction {}",
            tech.name(),
            v[0]
        );
        let top = (0..d)
            .max_by(|&a, &b| v[a].abs().total_cmp(&v[b].abs()))
            .expect("d > 0");
        assert_eq!(
            top,
            0,
            "{}: largest weight on the planted dimension",
            tech.name()
        );
    }
    let cos: Vec<f64> = (0..20)
        .map(|seed| {
            pragma_eval::steering::direction(Technique::Random, &inputs, &view, seed, None)
                .expect("direction")
                .expect("a vector")[0]
        })
        .collect();
    // Random unit vectors in 64 dimensions: cosine ~ N(0, 1/64), |cos| < 0.5 always here.
    assert!(cos.iter().all(|c| c.abs() < 0.5), "{cos:?}");
    assert!(
        pragma_eval::steering::direction(Technique::Prompt, &inputs, &view, 0, None)
            .expect("prompt")
            .is_none()
    );
}
