//! Activation patching, direct logit attribution and the logit lens against
//! TransformerLens itself on SmolLM2-135M-Instruct: `fixtures/transformer_lens/patching.safetensors`
//! (made by `scripts/fixtures/make_patching_fixture.py`) holds TransformerLens 2.11's
//! `patching.get_act_patch_resid_pre`, `get_act_patch_attn_out`, `get_act_patch_mlp_out`,
//! `get_act_patch_attn_head_out_all_pos` (denoising, and noising for one sweep), DLA from
//! `decompose_resid` / `stack_head_results` (apply_ln=True), and a logit lens, for two
//! prompt pairs (an IOI sentence, a capital city).
//!
//! Tolerances (pragma computes in f32 on the GGUF's blocks; the patching sweeps ran on a
//! float32 copy of TransformerLens' model, DLA and lens on the float64 one): every
//! patched metric (a logit difference, |values| up to ~10) within 1e-3 absolute (seen:
//! <= 5.9e-5); DLA contributions and lens logit differences within 5e-4 (seen: <= 3.7e-5);
//! the lens' top token equal at every layer where the top two are more than 1e-3 apart
//! in probability (seen: all 31 layers agree).
//!
//! Attribution patching is compared with the real patching of the same pairs: the
//! Pearson r of the normalised grids is printed per site, and must exceed 0.7 for heads
//! and attention outputs, where the first-order estimate is known to work well.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use pragma_methods::investigate::{
    direct_logit_attribution, logit_lens, patch, LogitDiff, PatchConfig, PatchDirection, PatchSite,
};
use pragma_model::{Model, DEFAULT_MODEL};

const PATCH_TOL: f64 = 1e-3;
const DLA_TOL: f64 = 5e-4;

struct Fixture {
    t: HashMap<String, Tensor>,
    pairs: Vec<serde_json::Value>,
}

fn fixture() -> Fixture {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/transformer_lens/patching.safetensors");
    let bytes = std::fs::read(&p).expect("patching fixture");
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
    let meta: serde_json::Value = serde_json::from_str(
        header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("pragma"))
            .expect("metadata"),
    )
    .expect("json");
    Fixture {
        t: candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).expect("tensors"),
        pairs: meta["pairs"].as_array().expect("pairs").clone(),
    }
}

fn grid(f: &Fixture, key: &str) -> Vec<Vec<f64>> {
    let t =
        f.t.get(key)
            .unwrap_or_else(|| panic!("{key} in the fixture"));
    t.to_dtype(candle_core::DType::F64)
        .expect("ok")
        .to_vec2()
        .expect("ok")
}

fn vec1(f: &Fixture, key: &str) -> Vec<f64> {
    let t =
        f.t.get(key)
            .unwrap_or_else(|| panic!("{key} in the fixture"));
    t.to_dtype(candle_core::DType::F64)
        .expect("ok")
        .to_vec1()
        .expect("ok")
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("ok")
        .iter()
        .map(|x| x.as_u64().expect("ok") as u32)
        .collect()
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f64::max)
}

#[test]
fn patching_dla_and_lens_match_transformer_lens() {
    let f = fixture();
    let m = Model::load(DEFAULT_MODEL, &mut |s| eprintln!("{s}")).expect("model");
    for (i, pair) in f.pairs.iter().enumerate() {
        let key = format!("p{i}");
        let (clean, corrupt) = (ids(&pair["clean_ids"]), ids(&pair["corrupt_ids"]));
        // The fixture's ids are what pragma makes of the text.
        let built = |text: &str| {
            m.tokenizer
                .build_input(&pragma_model::input::Prompt::Text(text), Default::default())
                .expect("ok")
                .ids
        };
        assert_eq!(built(pair["clean"].as_str().expect("ok")), clean);
        assert_eq!(built(pair["corrupt"].as_str().expect("ok")), corrupt);
        let metric = LogitDiff::new(
            &m,
            pair["good"][0].as_str().expect("ok"),
            pair["bad"][0].as_str().expect("ok"),
        )
        .expect("metric");
        assert_eq!(metric.good as u64, pair["good"][1].as_u64().expect("ok"));
        let mut sites = vec![PatchSite::ResidPre, PatchSite::Heads];
        if i == 1 {
            sites.extend([PatchSite::AttnOut, PatchSite::MlpOut]);
        }
        let cfg = PatchConfig {
            clean: clean.clone(),
            corrupt: corrupt.clone(),
            metric: metric.clone(),
            sites: sites.clone(),
            direction: PatchDirection::Denoise,
            batch: 64,
        };
        let t0 = std::time::Instant::now();
        let r = patch(&m, &cfg, &mut |_, _| {}).expect("patch");
        let want_metric = vec1(&f, &format!("{key}.metric"));
        assert!(
            (r.clean_metric - want_metric[0]).abs() < PATCH_TOL,
            "{key} clean {} vs {}",
            r.clean_metric,
            want_metric[0]
        );
        assert!(
            (r.corrupt_metric - want_metric[1]).abs() < PATCH_TOL,
            "{key} corrupt {} vs {}",
            r.corrupt_metric,
            want_metric[1]
        );
        for (site, g) in sites.iter().zip(&r.grids) {
            let name = match site {
                PatchSite::ResidPre => "resid_pre",
                PatchSite::Heads => "heads",
                PatchSite::AttnOut => "attn_out",
                PatchSite::MlpOut => "mlp_out",
            };
            let d = max_diff(&g.raw, &grid(&f, &format!("{key}.{name}")));
            eprintln!("{key} {name}: max |pragma - TL| = {d:.2e}");
            assert!(d < PATCH_TOL, "{key} {name}: max |pragma - TL| = {d}");
        }
        eprintln!(
            "{key}: {} patched runs in {:.1} s",
            r.runs,
            t0.elapsed().as_secs_f64()
        );
        // Attribution patching against the real thing.
        let atp = pragma_methods::investigate::attribution::attribution_patch(&m, &cfg)
            .expect("attribution");
        for (exact, est) in r.grids.iter().zip(&atp.grids) {
            let corr = pragma_methods::investigate::attribution::grid_correlation(exact, est);
            eprintln!(
                "{key} {:?}: attribution vs patching r = {corr:.3}",
                exact.site
            );
            if matches!(exact.site, PatchSite::Heads | PatchSite::AttnOut) {
                assert!(corr > 0.7, "{key} {:?}: r = {corr}", exact.site);
            }
        }
        if i == 1 {
            let noise = patch(
                &m,
                &PatchConfig {
                    direction: PatchDirection::Noise,
                    sites: vec![PatchSite::ResidPre],
                    ..cfg.clone()
                },
                &mut |_, _| {},
            )
            .expect("noise");
            let d = max_diff(
                &noise.grids[0].raw,
                &grid(&f, &format!("{key}.noise_resid_pre")),
            );
            eprintln!("{key} noise resid_pre: max |pragma - TL| = {d:.2e}");
            assert!(d < PATCH_TOL, "{key} noising: {d}");
        }
        // Direct logit attribution on the clean prompt.
        let dla = direct_logit_attribution(&m, &clean, &metric).expect("dla");
        let comps: Vec<f64> = dla.components.iter().map(|c| c.1).collect();
        let d = max_diff(&[comps], &[vec1(&f, &format!("{key}.dla_components"))]);
        eprintln!("{key} DLA components: max |pragma - TL| = {d:.2e}");
        assert!(d < DLA_TOL, "{key} DLA components: {d}");
        let d = max_diff(
            dla.heads.as_ref().expect("ok"),
            &grid(&f, &format!("{key}.dla_heads")),
        );
        eprintln!("{key} DLA heads: max |pragma - TL| = {d:.2e}");
        assert!(d < DLA_TOL, "{key} DLA heads: {d}");
        // The logit lens.
        let lens = logit_lens(&m, &clean, Some(&metric), 2).expect("lens");
        let diffs: Vec<f64> = lens
            .layers
            .iter()
            .map(|l| l.logit_diff.expect("ok"))
            .collect();
        let d = max_diff(&[diffs], &[vec1(&f, &format!("{key}.lens_logit_diff"))]);
        eprintln!("{key} lens logit diffs: max |pragma - TL| = {d:.2e}");
        assert!(d < DLA_TOL, "{key} lens: {d}");
        let top1: Vec<i64> = f.t[&format!("{key}.lens_top1")].to_vec1().expect("ok");
        let agree = lens
            .layers
            .iter()
            .zip(&top1)
            .filter(|(l, &t)| l.top[0].0 == m.tokenizer.token_str(t as u32))
            .count();
        eprintln!(
            "{key} lens top-1 agrees at {agree} of {} layers",
            top1.len()
        );
        // Near-ties may flip; every layer where the top token is clear must agree.
        for (l, (layer, &t)) in lens.layers.iter().zip(&top1).enumerate() {
            let gap = layer.top[0].1 - layer.top[1].1;
            if gap > 1e-3 {
                assert_eq!(
                    layer.top[0].0,
                    m.tokenizer.token_str(t as u32),
                    "{key} lens layer {l}"
                );
            }
        }
    }
}

/// Counterfactual segments on SmolLM2: the sentence that plants the answer is ranked
/// first, far ahead of two distractors.
#[test]
fn a_planted_segment_is_ranked_first_on_smollm2() {
    use pragma_methods::investigate::counterfactual::{
        segments, Behaviour, Replacement, SegmentsConfig,
    };
    let m = Model::load(DEFAULT_MODEL, &mut |s| eprintln!("{s}")).expect("model");
    let planted = "The secret word is banana.";
    let cfg = SegmentsConfig {
        prompt: format!(
            "{planted} The weather is mild today. My friend likes green tea. The secret word is"
        ),
        segments: vec![
            planted.into(),
            "The weather is mild today.".into(),
            "My friend likes green tea.".into(),
        ],
        replacement: Replacement::Remove,
        behaviour: Behaviour::LogitDiff(LogitDiff::new(&m, " banana", " apple").expect("metric")),
        chat: false,
        rule: Default::default(),
        seed: 0,
        resamples: 100,
    };
    let r = segments(&m, &cfg).expect("segments");
    eprintln!("{r:#?}");
    assert_eq!(r.segments[0].segment, planted);
    assert!(r.segments[0].effect < -2.0, "{:?}", r.segments[0]);
    assert!(
        r.segments[0].effect.abs() > 5.0 * r.segments[1].effect.abs(),
        "{r:?}"
    );
}
