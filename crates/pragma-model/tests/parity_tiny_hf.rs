//! Parity for families with no real weights reachable here: tiny random Hugging Face
//! models (Llama 3 with RoPE scaling, Mistral, Qwen2 with qkv biases, Qwen3 with q/k
//! norm) made by `scripts/fixtures/make_tiny_fixtures.py`, whose logits come from HF
//! transformers in float64 (Qwen3: a float64 NumPy forward, as transformers 4.46 has
//! no Qwen3). Tolerance: 1e-4 absolute on logits and residuals (|logits| <= ~12);
//! observed values are printed.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use pragma_model::generate::{generate, GenerateOptions, Sampling};
use pragma_model::hf::{read_config, SafetensorsWeights};
use pragma_model::hooks::{HookPoint, Hooks};
use pragma_model::llama::{Batch, Logits};
use pragma_model::testing::max_abs_diff;
use pragma_model::Transformer;

const TOL: f32 = 1e-4;

fn rows(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_dtype(DType::I64)
        .expect("i64")
        .to_vec2::<i64>()
        .expect("ids")
        .into_iter()
        .map(|r| r.into_iter().map(|i| i as u32).collect())
        .collect()
}

fn check(family: &str, arch_feature: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/tiny")
        .join(family);
    let cfg = read_config(&dir).expect("config.json");
    let mut src = SafetensorsWeights::open(&dir, &cfg).expect("weights");
    let model = Transformer::load(cfg, &mut src, &Device::Cpu).expect("load");
    let r = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
        .expect("reference");
    let ids = rows(&r["ids"]);
    let batch = Batch::new(&ids, &Device::Cpu).expect("batch");
    let mut hooks = Hooks::new();
    hooks
        .capture(HookPoint::ResidPost(1))
        .capture(HookPoint::ResidPost(2));
    let (logits, cache) = model.forward(&batch, &hooks, Logits::All).expect("forward");
    let logits = logits.expect("logits");
    let d_logits = max_abs_diff(&logits, &r["logits"]);
    let d1 = max_abs_diff(
        &cache.get(HookPoint::ResidPost(1)).expect("c"),
        &r["resid_post.1"],
    );
    let d2 = max_abs_diff(
        &cache.get(HookPoint::ResidPost(2)).expect("c"),
        &r["resid_post.2"],
    );
    println!("{family} ({arch_feature}): max|diff| logits {d_logits:.2e}, resid_post.1 {d1:.2e}, resid_post.2 {d2:.2e}");
    assert!(
        d_logits < TOL && d1 < TOL && d2 < TOL,
        "{family}: beyond tolerance {TOL}"
    );

    let want = rows(&r["greedy"]);
    let opts = GenerateOptions {
        max_tokens: want[0].len(),
        sampling: Sampling::default(),
        stop_tokens: vec![],
    };
    let g = generate(&model, &ids, &opts, &Hooks::new(), |_, _| {}).expect("generate");
    assert_eq!(g.tokens, want, "{family}: greedy continuations");
}

#[test]
fn llama3_with_rope_scaling() {
    check("llama3", "llama3 rope scaling, untied");
}

#[test]
fn mistral() {
    check("mistral", "untied");
}

#[test]
fn qwen2_with_qkv_bias() {
    check("qwen2", "qkv biases, tied");
}

#[test]
fn qwen3_with_qk_norm() {
    check("qwen3", "q/k norm, tied");
}
