//! The planted-difference techniques on synthetic documents where the answer is known: a
//! latent (and a word) planted in a share of set B is ranked first and detects held-out
//! planted documents; on a null pair (nothing planted) discoveries at FDR 0.05 are rare.

use std::collections::HashSet;

use pragma_eval::planted::{run, Draw, Features};
use pragma_eval::suite::Technique;
use pragma_methods::stats::XorShift;

/// `n` documents: 30 random latents of 200 fire in each (max activation 0.5-1.5), 8
/// random words of 300; `planted` documents also fire latent 7 (at 2.0) and contain the
/// word "zebra". Latent 7 and "zebra" never occur otherwise.
fn docs(n: usize, planted: &[bool], rng: &mut XorShift) -> Features {
    let mut max_latents = Vec::new();
    let mut grams = Vec::new();
    for &pl in planted.iter().take(n) {
        let mut lat: Vec<(u32, f32)> = (0..30)
            .map(|_| (8 + rng.below(192) as u32, 0.5 + rng.next_f64() as f32))
            .collect();
        let mut g: HashSet<String> = (0..8).map(|_| format!("w{}", rng.below(300))).collect();
        if pl {
            lat.push((7, 2.0));
            g.insert("zebra".into());
        }
        lat.sort_by_key(|x| x.0);
        lat.dedup_by_key(|x| x.0);
        max_latents.push(lat);
        grams.push(g);
    }
    Features {
        mean: vec![vec![0.0; 4]; n],
        max_latents: Some(max_latents),
        ids: vec![HashSet::new(); n],
        grams,
        unembed: None,
    }
}

/// Documents 0..400: A = 0..200, B = 200..400 (the first `k` of B planted); held-out
/// 400..600 unplanted and 600..800 planted.
fn setup(k: usize, seed: u64) -> (Features, Draw) {
    let mut rng = XorShift::new(seed, 3);
    let planted: Vec<bool> = (0..800)
        .map(|i| (200..200 + k).contains(&i) || i >= 600)
        .collect();
    let f = docs(800, &planted, &mut rng);
    let draw = Draw {
        a: (0..200).collect(),
        b: vec![(200..400).collect()],
        h: (400..800).collect(),
        h_labels: (400..800).map(|i| u8::from(i >= 600)).collect(),
    };
    (f, draw)
}

fn tokenizer() -> impl Fn(u32) -> String {
    |t| format!("t{t}")
}

#[test]
fn a_planted_latent_and_word_are_ranked_first() {
    let tok = tokenizer();
    let (f, draw) = setup(20, 1); // 10% of B
    for (tech, want) in [
        (Technique::SaeDiff, "latent 7"),
        (Technique::Ngram, "\"zebra\""),
    ] {
        let r = run(tech, &f, &draw, &[0.1], 0, &tok).expect("run");
        let top = &r[0].candidates[0];
        assert_eq!(top.name, want, "{}: {:?}", tech.name(), r[0].candidates);
        assert_eq!(top.heldout_auroc, 1.0);
        assert_eq!(r[0].first_hit, Some(1));
        assert!(r[0].discoveries >= 1 && top.p < 1e-4, "{:?}", r[0]);
    }
}

#[test]
fn a_null_pair_rarely_yields_discoveries() {
    let tok = tokenizer();
    let mut runs_with_discoveries = [0usize; 2];
    for seed in 0..40 {
        let (f, draw) = setup(0, 100 + seed);
        for (k, tech) in [Technique::SaeDiff, Technique::Ngram]
            .into_iter()
            .enumerate()
        {
            let r = run(tech, &f, &draw, &[0.0], 0, &tok).expect("run");
            runs_with_discoveries[k] += usize::from(r[0].discoveries > 0);
        }
    }
    // BH at q = 0.05 under the global null: P(any discovery) <= 0.05, so about 2 of 40
    // runs (the Fisher test is conservative on counts); more than 6 has probability < 0.2%.
    for (k, n) in runs_with_discoveries.iter().enumerate() {
        assert!(
            *n <= 6,
            "technique {k}: {n} of 40 null runs had a discovery"
        );
    }
}

/// The difference of means finds a direction planted in the documents' mean activations:
/// ranked first (its permutation test is significant) and detecting held-out plants.
#[test]
fn a_planted_direction_is_found_by_the_difference_of_means() {
    let tok = tokenizer();
    let (mut f, draw) = setup(40, 7); // 20% of B
    let mut rng = XorShift::new(9, 1);
    let planted: Vec<bool> = (0..800)
        .map(|i| (200..240).contains(&i) || i >= 600)
        .collect();
    f.mean = planted
        .iter()
        .map(|&p| {
            (0..16)
                .map(|k| {
                    let (u1, u2) = (rng.next_f64().max(1e-300), rng.next_f64());
                    let g =
                        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32;
                    g + if p && k == 0 { 3.0 } else { 0.0 }
                })
                .collect()
        })
        .collect();
    let r = run(Technique::DiffMeanUnembed, &f, &draw, &[0.2], 0, &tok).expect("run");
    let top = &r[0].candidates[0];
    assert_eq!(top.name, "direction", "{:?}", r[0].candidates);
    assert!(top.p <= 0.05 && top.heldout_auroc > 0.9, "{top:?}");
    assert_eq!(r[0].first_hit, Some(1));
}
