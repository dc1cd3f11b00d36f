//! Investigation tools on a tiny model with a known circuit: every attention head's
//! output projection is zeroed except layer 1 head 2's, so the only way information
//! moves between positions is that head. Patching must find exactly it; direct logit
//! attribution must sum to the logit difference; bad input gets clear errors.

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use pragma_methods::investigate::{
    direct_logit_attribution, logit_lens, patch, LogitDiff, PatchConfig, PatchDirection, PatchSite,
};
use pragma_model::llama::{Batch, Logits};
use pragma_model::testing::{tiny_config, tiny_weights, write_gguf};
use pragma_model::{Arch, Model};

/// Layer 1 head 2 is the only head whose output reaches the residual stream.
fn one_head_model(dir: &std::path::Path) -> Model {
    let cfg = tiny_config(Arch::Llama);
    let mut w = tiny_weights(&cfg, 21).expect("weights");
    let dh = cfg.d_head;
    for (name, t) in w.iter_mut() {
        if let Some(rest) = name.strip_prefix("model.layers.") {
            if rest.ends_with("self_attn.o_proj.weight") {
                let layer: usize = rest
                    .split('.')
                    .next()
                    .expect("layer")
                    .parse()
                    .expect("layer");
                let (d, qd) = t.dims2().expect("ok");
                let mut v: Vec<f32> = t.flatten_all().expect("ok").to_vec1().expect("ok");
                for r in 0..d {
                    for c in 0..qd {
                        if !(layer == 1 && c / dh == 2) {
                            v[r * qd + c] = 0.0;
                        }
                    }
                }
                *t = Tensor::from_vec(v, (d, qd), &Device::Cpu).expect("ok");
            }
        }
    }
    let p = dir.join("one-head.gguf");
    write_gguf(&p, &cfg, &w, GgmlDType::F32).expect("gguf");
    Model::load(p.to_str().expect("ok"), &mut |_| {}).expect("load")
}

const CLEAN: [u32; 7] = [5, 80, 101, 17, 260, 33, 99];
const CORRUPT: [u32; 7] = [5, 80, 120, 17, 260, 33, 99]; // position 2 differs

fn last_logits(m: &Model, ids: &[u32]) -> Vec<f32> {
    let (l, _) = m
        .transformer
        .forward(
            &Batch::single(ids, m.device()).expect("ok"),
            &Default::default(),
            Logits::Last,
        )
        .expect("ok");
    l.expect("ok")
        .squeeze(0)
        .expect("ok")
        .to_vec1()
        .expect("ok")
}

/// The two answers whose logit difference the corruption moves most.
fn metric(m: &Model) -> LogitDiff {
    let (a, b) = (last_logits(m, &CLEAN), last_logits(m, &CORRUPT));
    let delta: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    let argmax = |v: &[f32], s: f32| {
        (0..v.len())
            .max_by(|&i, &j| (s * v[i]).total_cmp(&(s * v[j])))
            .expect("ok") as u32
    };
    LogitDiff {
        good: argmax(&delta, 1.0),
        bad: argmax(&delta, -1.0),
        good_text: "good".into(),
        bad_text: "bad".into(),
    }
}

#[test]
fn patching_finds_the_only_head_that_moves_information() {
    let dir = tempfile::tempdir().expect("ok");
    let m = one_head_model(dir.path());
    let metric = metric(&m);
    for direction in [PatchDirection::Denoise, PatchDirection::Noise] {
        let cfg = PatchConfig {
            clean: CLEAN.to_vec(),
            corrupt: CORRUPT.to_vec(),
            metric: metric.clone(),
            sites: vec![PatchSite::ResidPre, PatchSite::AttnOut, PatchSite::Heads],
            direction,
            batch: 7,
        };
        let r = patch(&m, &cfg, &mut |_, _| {}).expect("patch");
        assert!(r.clean_metric - r.corrupt_metric > 0.1, "{r:?}");
        let (resid, attn, heads) = (
            &r.grids[0].normalized,
            &r.grids[1].normalized,
            &r.grids[2].normalized,
        );
        // Denoising restores the clean metric (1) where the information is; noising
        // drops it to the corrupt one (0) there and leaves 1 everywhere else.
        let near = |x: f64, want: f64| {
            let want = if direction == PatchDirection::Noise {
                1.0 - want
            } else {
                want
            };
            (x - want).abs() < 1e-4
        };
        let last = CLEAN.len() - 1;
        // Heads: all of it is layer 1 head 2; nothing else does anything.
        for (l, row) in heads.iter().enumerate() {
            for (h, &v) in row.iter().enumerate() {
                let want = if (l, h) == (1, 2) { 1.0 } else { 0.0 };
                assert!(
                    near(v, want),
                    "{direction:?} heads L{l}H{h} = {v}, want {want}"
                );
            }
        }
        // The residual: at the changed position until layer 1 reads it, then at the last.
        for (l, row) in resid.iter().enumerate() {
            for (p, &v) in row.iter().enumerate() {
                let want = match (l, p) {
                    (0 | 1, 2) => 1.0,
                    (2, p) if p == last => 1.0,
                    _ => 0.0,
                };
                assert!(
                    near(v, want),
                    "{direction:?} resid_pre L{l} pos {p} = {v}, want {want}"
                );
            }
        }
        // Attention output: layer 1 at the last position carries it all.
        for (l, row) in attn.iter().enumerate() {
            for (p, &v) in row.iter().enumerate() {
                let want = if (l, p) == (1, last) { 1.0 } else { 0.0 };
                assert!(
                    near(v, want),
                    "{direction:?} attn_out L{l} pos {p} = {v}, want {want}"
                );
            }
        }
        // The heatmaps: one panel per grid, written whole.
        let svg_path = dir.path().join("patch.svg");
        pragma_methods::investigate::plot::patch_svg(&r, &svg_path).expect("plot");
        let svg = std::fs::read_to_string(&svg_path).expect("svg");
        assert!(
            svg.starts_with("<svg")
                && svg.trim_end().ends_with("</svg>")
                && svg.contains("attn_out"),
            "{svg}"
        );
    }
}

#[test]
fn direct_logit_attribution_sums_to_the_logit_difference_and_heads_to_their_layer() {
    let dir = tempfile::tempdir().expect("ok");
    let m = one_head_model(dir.path());
    let metric = metric(&m);
    let d = direct_logit_attribution(&m, &CLEAN, &metric).expect("dla");
    assert!((d.logit_diff - d.sum_of_components).abs() < 1e-4, "{d:?}");
    let heads = d.heads.as_ref().expect("heads");
    for (l, row) in heads.iter().enumerate() {
        let attn = d.components[1 + 2 * l].1;
        let sum: f64 = row.iter().sum();
        assert!(
            (attn - sum).abs() < 1e-4,
            "layer {l}: heads sum {sum}, attn_out {attn}"
        );
        for (h, &v) in row.iter().enumerate() {
            if (l, h) != (1, 2) {
                assert!(v.abs() < 1e-6, "L{l}H{h} has no output but contributes {v}");
            }
        }
    }
    // The lens' last row is the model's own output.
    let lens = logit_lens(&m, &CLEAN, Some(&metric), 3).expect("lens");
    assert_eq!(lens.layers.len(), m.cfg().n_layers + 1);
    let final_diff = lens.layers.last().expect("ok").logit_diff.expect("ok");
    assert!(
        (final_diff - d.logit_diff).abs() < 1e-4,
        "{final_diff} vs {}",
        d.logit_diff
    );
}

#[test]
fn bad_input_is_refused_with_what_was_expected() {
    let dir = tempfile::tempdir().expect("ok");
    let m = one_head_model(dir.path());
    let metric = metric(&m);
    let cfg = |clean: &[u32], corrupt: &[u32]| PatchConfig {
        clean: clean.to_vec(),
        corrupt: corrupt.to_vec(),
        metric: metric.clone(),
        sites: vec![PatchSite::ResidPre],
        direction: PatchDirection::Denoise,
        batch: 8,
    };
    let e = patch(&m, &cfg(&CLEAN, &CLEAN[..5]), &mut |_, _| {})
        .expect_err("error")
        .to_string();
    assert!(e.contains("7 tokens and the corrupt one 5"), "{e}");
    let e = patch(&m, &cfg(&CLEAN, &CLEAN), &mut |_, _| {})
        .expect_err("error")
        .to_string();
    assert!(e.contains("divides by zero"), "{e}");
    // An answer of several tokens says how it tokenises.
    let e = LogitDiff::new(&m, "the cat sat", "a")
        .expect_err("error")
        .to_string();
    assert!(
        e.contains("tokenises as") && e.contains("expected exactly one"),
        "{e}"
    );
    assert!(PatchSite::parse("neurons").is_err());
}

mod counterfactuals {
    use super::*;
    use pragma_methods::investigate::counterfactual::{
        paired_ci, segments, sentences, sign_flip_p, Behaviour, Replacement, SegmentsConfig,
    };
    use pragma_methods::stats::XorShift;

    #[test]
    fn sentences_split_at_terminal_punctuation() {
        assert_eq!(
            sentences("Is this a test? I think so. It costs 3.5 dollars!\nDone"),
            [
                "Is this a test?",
                "I think so.",
                "It costs 3.5 dollars!",
                "Done"
            ]
        );
    }

    /// The permutation test's false-positive rate under no effect is about its level,
    /// and it finds a real difference; the bootstrap CI covers the true difference.
    #[test]
    fn the_shuffled_label_null_rejects_at_its_stated_rate() {
        let mut rng = XorShift::mixed(3, 9);
        let draw = |rng: &mut XorShift, p: f64, n: usize| -> Vec<f64> {
            (0..n)
                .map(|_| if rng.next_f64() < p { 1.0 } else { 0.0 })
                .collect()
        };
        let trials = 300;
        let mut false_pos = 0;
        let mut covered = 0;
        for t in 0..trials {
            let (a, b) = (draw(&mut rng, 0.3, 40), draw(&mut rng, 0.3, 40));
            if sign_flip_p(&a, &b, 400, t) < 0.05 {
                false_pos += 1;
            }
            let (lo, hi) = paired_ci(&a, &b, 400, t);
            if lo <= 0.0 && 0.0 <= hi {
                covered += 1;
            }
        }
        let rate = false_pos as f64 / trials as f64;
        // 5% nominal; the binomial sd over 300 trials is 1.3%, and discreteness makes
        // the test conservative.
        assert!(rate <= 0.09, "false-positive rate {rate}");
        assert!(
            covered as f64 / trials as f64 >= 0.9,
            "CI covered 0 in {covered}/{trials}"
        );
        let mut found = 0;
        for t in 0..50 {
            let (a, b) = (draw(&mut rng, 0.2, 40), draw(&mut rng, 0.8, 40));
            if sign_flip_p(&a, &b, 400, t) < 0.05 {
                found += 1;
            }
        }
        assert!(found >= 48, "a 0.2 vs 0.8 difference found in {found}/50");
    }

    #[test]
    fn segments_rank_exact_and_sampled_behaviours_and_refuse_missing_spans() {
        let dir = tempfile::tempdir().expect("ok");
        let m = one_head_model(dir.path());
        let cfg = SegmentsConfig {
            prompt: "the cat sat. a dog ran. the sun set.".into(),
            segments: vec![],
            replacement: Replacement::Remove,
            behaviour: Behaviour::LogitDiff(metric(&m)),
            chat: false,
            rule: Default::default(),
            seed: 1,
            resamples: 200,
        };
        let r = segments(&m, &cfg).expect("segments");
        assert_eq!(r.segments.len(), 3);
        assert!(r
            .segments
            .windows(2)
            .all(|w| w[0].effect.abs() >= w[1].effect.abs()));
        assert!(r
            .segments
            .iter()
            .all(|s| s.ci.is_none() && s.p_value.is_none()));
        assert!(
            r.segments
                .iter()
                .any(|s| s.variant == "the cat sat. the sun set."),
            "{r:?}"
        );
        // A regex every continuation matches: no effect, and no false alarm.
        let always = SegmentsConfig {
            behaviour: Behaviour::Regex {
                pattern: regex::Regex::new("").expect("ok"),
                samples: 8,
                max_tokens: 3,
                temperature: 1.0,
            },
            ..cfg.clone()
        };
        let r = segments(&m, &always).expect("regex");
        assert_eq!(r.original, 1.0);
        for s in &r.segments {
            assert_eq!(s.effect, 0.0);
            assert!(s.p_value.expect("ok") > 0.5, "{s:?}");
        }
        // Alternatives: a segment's effect is the mean over its replacements.
        let with = |r: Replacement| {
            segments(
                &m,
                &SegmentsConfig {
                    replacement: r,
                    ..cfg.clone()
                },
            )
            .expect("ok")
        };
        let by_seg = |r: &pragma_methods::investigate::counterfactual::SegmentsResult,
                      seg: &str| {
            r.segments
                .iter()
                .find(|x| x.segment == seg)
                .expect("ok")
                .effect
        };
        let a = with(Replacement::Filler("one two.".into()));
        let b = with(Replacement::Filler("red blue green.".into()));
        let alts = with(Replacement::Alternatives(vec![
            vec![
                "one two.".into(),
                "red blue green.".into()
            ];
            3
        ]));
        for seg in ["the cat sat.", "a dog ran.", "the sun set."] {
            let want = (by_seg(&a, seg) + by_seg(&b, seg)) / 2.0;
            let got = by_seg(&alts, seg);
            // Batched with different padding: equal up to float error.
            assert!((got - want).abs() < 1e-4, "{seg}: {got} vs {want}");
        }
        // A probe behaviour: the score of a probe reading one coordinate of the residual.
        let d = m.cfg().d_model;
        let mut w = vec![0f32; d];
        w[3] = 1.0;
        let probe = pragma_methods::probe::Probe {
            meta: pragma_methods::probe::ProbeMeta {
                model: "tiny".into(),
                model_sha256: None,
                d_model: d,
                hook: "blocks.1.hook_resid_post".into(),
                position: pragma_methods::steering::Position::Last,
                method: "diff-means".into(),
                c: None,
                dataset: "t".into(),
                dataset_sha256: "x".into(),
                classes: ["a".into(), "b".into()],
                val_auroc: None,
                test_auroc: 0.5,
                test_auroc_ci: (0.5, 0.5),
                test_accuracy: 0.5,
                pragma_version: "0".into(),
                input: Default::default(),
            },
            w,
            b: 0.0,
        };
        let probed = SegmentsConfig {
            behaviour: Behaviour::Probe(std::sync::Arc::new(probe)),
            ..cfg.clone()
        };
        let r = segments(&m, &probed).expect("ok");
        let ids = m
            .tokenizer
            .build_input(
                &pragma_model::input::Prompt::Text(&cfg.prompt),
                Default::default(),
            )
            .expect("ok")
            .ids;
        let acts = pragma_model::testing::capture_one(
            &m,
            &ids,
            pragma_model::hooks::HookPoint::ResidPost(1),
        )
        .expect("ok");
        let want = acts
            .get(ids.len() - 1)
            .expect("ok")
            .to_vec1::<f32>()
            .expect("ok")[3] as f64;
        assert!(
            (r.original - want).abs() < 1e-5,
            "probe behaviour {} vs {want}",
            r.original
        );
        // A span that occurs twice is ambiguous; a greedy "sample" is one draw.
        let twice = SegmentsConfig {
            prompt: "the cat sat. the cat sat.".into(),
            segments: vec!["the cat sat.".into()],
            ..cfg.clone()
        };
        let e = segments(&m, &twice).expect_err("error").to_string();
        assert!(e.contains("occurs 2 times"), "{e}");
        let greedy = SegmentsConfig {
            behaviour: Behaviour::Regex {
                pattern: regex::Regex::new("a").expect("ok"),
                samples: 8,
                max_tokens: 3,
                temperature: 0.0,
            },
            ..cfg.clone()
        };
        let e = segments(&m, &greedy).expect_err("error").to_string();
        assert!(e.contains("needs temperature > 0"), "{e}");
        let missing = SegmentsConfig {
            segments: vec!["a bird flew.".into()],
            ..cfg
        };
        let e = segments(&m, &missing).expect_err("error").to_string();
        assert!(
            e.contains("\"a bird flew.\" does not occur in the prompt"),
            "{e}"
        );
    }
}

/// Attribution patching's gradients equal central finite differences of the hooked
/// forward (an `Add` of +-eps at one coordinate of one site), at every kind of site.
#[test]
fn attribution_gradients_match_finite_differences() {
    use pragma_methods::investigate::attribution::gradients;
    use pragma_model::hooks::{HookPoint, Hooks, Positions};
    let dir = tempfile::tempdir().expect("ok");
    let cfg = tiny_config(Arch::Llama);
    let p = dir.path().join("tiny.gguf");
    write_gguf(
        &p,
        &cfg,
        &tiny_weights(&cfg, 5).expect("ok"),
        GgmlDType::F32,
    )
    .expect("ok");
    let m = Model::load(p.to_str().expect("ok"), &mut |_| {}).expect("ok");
    let metric = LogitDiff {
        good: 7,
        bad: 40,
        good_text: "a".into(),
        bad_text: "b".into(),
    };
    let (value, grads) = gradients(&m, &CLEAN, &metric).expect("gradients");
    let at = |hooks: &Hooks| -> f64 {
        let (l, _) = m
            .transformer
            .forward(
                &Batch::single(&CLEAN, m.device()).expect("ok"),
                hooks,
                Logits::Last,
            )
            .expect("ok");
        metric.of_rows(&l.expect("ok")).expect("ok")[0]
    };
    let plain = at(&Hooks::new());
    assert!(
        (value - plain).abs() < 1e-4,
        "differentiable forward {value} vs hooked {plain}"
    );
    let (d, h, dh) = (cfg.d_model, cfg.n_heads, cfg.d_head);
    let eps = 1e-2f32;
    let mut worst = 0f64;
    for (layer, pos, k) in [(0usize, 2usize, 3usize), (1, 6, 17), (2, 4, 30), (1, 0, 9)] {
        for site in 0..4 {
            let (point, vector) = match site {
                0 => (HookPoint::ResidPre(layer), one_hot(&[d], k)),
                1 => (HookPoint::AttnOut(layer), one_hot(&[d], k)),
                2 => (HookPoint::MlpOut(layer), one_hot(&[d], k)),
                _ => (HookPoint::AttnZ(layer), one_hot(&[h, dh], k % (h * dh))),
            };
            let bump = |s: f32| {
                let mut hk = Hooks::new();
                hk.add(point, vector.clone(), s, Positions::Range(pos, pos + 1));
                at(&hk)
            };
            let fd = (bump(eps) - bump(-eps)) / (2.0 * eps as f64);
            let g = grads[layer][site]
                .get(pos)
                .expect("ok")
                .flatten_all()
                .expect("ok")
                .to_vec1::<f32>()
                .expect("ok");
            let g = g[if site == 3 { k % (h * dh) } else { k }] as f64;
            let err = (fd - g).abs() / (fd.abs().max(g.abs()).max(1e-2));
            worst = worst.max(err);
            assert!(
                err < 2e-2,
                "{point} pos {pos} coord {k}: gradient {g} vs finite difference {fd}"
            );
        }
    }
    eprintln!("worst relative gradient error {worst:.2e}");
}

fn one_hot(shape: &[usize], k: usize) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v = vec![0f32; n];
    v[k] = 1.0;
    Tensor::from_vec(v, shape, &Device::Cpu).expect("ok")
}

/// Resampling: one boundary per sentence plus the empty prefix; the kept prefix counts
/// toward the match, so a pattern in the answer's last sentence is certain there and the
/// largest rise is located at it; exact behaviours are refused.
#[test]
fn resampling_locates_where_the_answer_commits() {
    use pragma_methods::investigate::counterfactual::{resample, Behaviour};
    let dir = tempfile::tempdir().expect("ok");
    let m = one_head_model(dir.path());
    let sampled = |pattern: &str| Behaviour::Regex {
        pattern: regex::Regex::new(pattern).expect("ok"),
        samples: 6,
        max_tokens: 3,
        temperature: 1.0,
    };
    let answer = "the cat sat. a dog ran. zebra zebra zebra.";
    let r = resample(
        &m,
        "hello",
        answer,
        &sampled("zebra zebra zebra"),
        Default::default(),
        0,
        100,
    )
    .expect("resample");
    assert_eq!(r.boundaries.len(), 4);
    let rates: Vec<f64> = r.boundaries.iter().map(|b| b.rate).collect();
    assert_eq!(rates[3], 1.0, "{rates:?}");
    assert_eq!(r.commits_at.map(|c| c.0), Some(3), "{r:?}");
    let e = resample(
        &m,
        "hello",
        answer,
        &Behaviour::LogitDiff(metric(&m)),
        Default::default(),
        0,
        10,
    )
    .expect_err("error")
    .to_string();
    assert!(e.contains("give a regex behaviour"), "{e}");
}

#[test]
fn holm_adjusts_step_down() {
    use pragma_methods::investigate::counterfactual::holm;
    // Holm (1979) by hand: sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(that, 2 x 0.03),
    // max(that, 1 x 0.04) = 0.03, 0.06, 0.06, back in the given order.
    let h = holm(&[0.01, 0.04, 0.03]);
    for (x, want) in h.iter().zip([0.03, 0.06, 0.06]) {
        assert!((x - want).abs() < 1e-12, "{h:?}");
    }
}
