//! Every hook name pragma shares with TransformerLens means what it means there (issue 9,
//! kind 9), checked against TransformerLens itself: `fixtures/transformer_lens/smollm2.safetensors`
//! holds TransformerLens 2.11's `run_with_cache` activations for SmolLM2-135M-Instruct
//! (float64, on the dequantized GGUF weights, no folding; made by
//! `scripts/fixtures/make_tl_fixture.py`) at layers 0, 14 and 29.
//!
//! Tolerance: max |pragma - TL| / max |TL| per tensor <= 2e-5 (pragma computes in f32
//! against a float64 reference; the same bound as `parity_smollm2.rs`). Masked
//! attention scores must be -inf in both, at the same entries.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use pragma_model::hooks::{HookPoint, Hooks};
use pragma_model::llama::{Batch, Logits};
use pragma_model::testing::max_abs;
use pragma_model::{Model, DEFAULT_MODEL};

const REL_TOL: f32 = 2e-5;

fn fixture() -> HashMap<String, Tensor> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/transformer_lens/smollm2.safetensors");
    candle_core::safetensors::load(p, &Device::Cpu).expect("TransformerLens fixture")
}

#[test]
fn hook_names_mean_what_they_mean_in_transformer_lens() {
    let m = Model::load(DEFAULT_MODEL, &mut |s| eprintln!("{s}")).expect("model");
    let fx = fixture();
    let ids: Vec<u32> = fx["tokens"]
        .flatten_all()
        .and_then(|t| t.to_vec1::<i64>())
        .expect("tokens")
        .into_iter()
        .map(|x| x as u32)
        .collect();
    let mut names: Vec<&String> = fx
        .keys()
        .filter(|k| *k != "tokens" && *k != "logits_last")
        .collect();
    names.sort();
    let n = m.cfg().n_layers;
    let mut hooks = Hooks::new();
    let points: Vec<(HookPoint, &String)> = names
        .iter()
        .map(|k| {
            (
                HookPoint::parse(k, n).expect("pragma knows every TL name"),
                *k,
            )
        })
        .collect();
    for (p, _) in &points {
        hooks.capture(*p);
    }
    // Every site TransformerLens has for this model is in the fixture (20 per block).
    assert_eq!(points.len(), 3 + 3 * 20, "{names:?}");
    let batch = Batch::single(&ids, m.device()).expect("batch");
    let (logits, cache) = m
        .transformer
        .forward(&batch, &hooks, Logits::Last)
        .expect("forward");
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (p, name) in &points {
        let want = &fx[*name];
        let got = cache
            .get(*p)
            .expect("captured")
            .to_dtype(DType::F32)
            .expect("f32");
        assert_eq!(got.dims(), want.dims(), "{name}: shape");
        let (got, want) = if matches!(p, HookPoint::AttnScores(_)) {
            // -inf exactly where TL has -inf (the causal mask); compare the rest.
            let g = got
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("g");
            let w = want
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("w");
            assert!(
                g.iter()
                    .zip(&w)
                    .all(|(a, b)| a.is_finite() == b.is_finite()),
                "{name}: masked entries differ"
            );
            let keep = |v: &[f32], other: &[f32]| -> Tensor {
                let f: Vec<f32> = v
                    .iter()
                    .zip(other)
                    .map(|(a, b)| if b.is_finite() { *a } else { 0.0 })
                    .collect();
                Tensor::new(f, &Device::Cpu).expect("t")
            };
            (keep(&g, &w), keep(&w, &w))
        } else {
            (got, want.clone())
        };
        let rel = max_abs(&(&got - &want).expect("diff")) / max_abs(&want).max(1e-30);
        report.push(format!("{name}: rel {rel:.2e}"));
        if rel.is_nan() || rel > REL_TOL {
            failures.push(format!("{name}: relative error {rel:.3e} > {REL_TOL:e}"));
        }
    }
    eprintln!("{}", report.join("\n"));
    // The logits agree too (the unembedding reads unembed.hook_in = normalized x gain).
    let l = logits.expect("logits").flatten_all().expect("flat");
    let want = fx["logits_last"].clone();
    let d = max_abs(&(&l - &want).expect("diff"));
    eprintln!("logits_last: max abs {d:.2e}");
    assert!(d < 1e-3, "logits differ by {d}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ln_final_hook_normalized_is_before_the_gain() {
    let m = Model::load(DEFAULT_MODEL, &mut |s| eprintln!("{s}")).expect("model");
    let ids = m
        .tokenizer
        .build_input(
            &pragma_model::Prompt::Text("The cat sat on the mat because it was tired."),
            pragma_model::InputRule::default(),
        )
        .expect("ids")
        .ids;
    let mut hooks = Hooks::new();
    for p in [
        HookPoint::LnFinalScale,
        HookPoint::LnFinal,
        HookPoint::UnembedIn,
        HookPoint::ResidPost(m.cfg().n_layers - 1),
    ] {
        hooks.capture(p);
    }
    let (_, c) = m
        .transformer
        .forward(
            &Batch::single(&ids, m.device()).expect("b"),
            &hooks,
            Logits::None,
        )
        .expect("forward");
    let x = c
        .get(HookPoint::ResidPost(m.cfg().n_layers - 1))
        .expect("x");
    let scale = c.get(HookPoint::LnFinalScale).expect("scale");
    let normalized = c.get(HookPoint::LnFinal).expect("normalized");
    let with_gain = c.get(HookPoint::UnembedIn).expect("in");
    let by_hand = x.broadcast_div(&scale).expect("div");
    assert!(max_abs(&(&normalized - &by_hand).expect("d")) < 1e-5);
    // The two names differ by the gain: up to ~42 on this text (the figure).
    let gap = max_abs(&(&with_gain - &normalized).expect("d"));
    eprintln!("max |unembed.hook_in - ln_final.hook_normalized| = {gap:.1}");
    assert!(gap > 10.0, "{gap}");
}
