//! Tiny random models written to real files: format equivalence, hooks,
//! KV-cached generation and batching. Fast; no weights needed on disk.

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor, D};
use pragma_model::generate::{generate, generate_items, GenerateOptions, Sampling};
use pragma_model::hooks::{HookPoint, Hooks, Positions};
use pragma_model::llama::{Batch, Logits};
use pragma_model::testing::{max_abs_diff, pearson};
use pragma_model::testing::{tiny_config, tiny_weights, write_gguf, write_hf};
use pragma_model::{Arch, Model, WeightMode};

fn load(path: &std::path::Path) -> Model {
    Model::load(path.to_str().expect("utf8 path"), &mut |_| {}).expect("load tiny model")
}

/// A tiny model of `arch` written as GGUF (f32) and as an HF folder.
fn tiny_pair(arch: Arch) -> (tempfile::TempDir, Model, Model) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiny_config(arch);
    let w = tiny_weights(&cfg, 7).expect("weights");
    let gguf = dir.path().join("tiny.gguf");
    write_gguf(&gguf, &cfg, &w, GgmlDType::F32).expect("write gguf");
    let hf = dir.path().join("hf");
    write_hf(&hf, &cfg, &w).expect("write hf");
    let (a, b) = (load(&gguf), load(&hf));
    (dir, a, b)
}

const IDS: [u32; 9] = [5, 80, 101, 17, 260, 33, 99, 4, 120];

fn logits_and_cache(m: &Model, ids: &[u32], hooks: &Hooks) -> (Tensor, pragma_model::hooks::Cache) {
    let batch = Batch::single(ids, m.device()).expect("batch");
    let (l, c) = m
        .transformer
        .forward(&batch, hooks, Logits::All)
        .expect("forward");
    (l.expect("logits"), c)
}

#[test]
fn gguf_and_safetensors_give_the_same_model() {
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Mistral] {
        let (_d, g, h) = tiny_pair(arch);
        let mut hooks = Hooks::new();
        for p in HookPoint::resolve_pattern(
            "blocks.*.attn.hook_q,blocks.*.attn.hook_k,blocks.*.hook_resid_post",
            3,
        )
        .expect("pattern")
        {
            hooks.capture(p);
        }
        let (lg, cg) = logits_and_cache(&g, &IDS, &hooks);
        let (lh, ch) = logits_and_cache(&h, &IDS, &hooks);
        let d = max_abs_diff(&lg, &lh);
        println!("{arch:?}: max |logits gguf - safetensors| = {d:.2e}");
        assert!(d < 1e-4, "{arch:?}: logits differ by {d}");
        for p in cg.points() {
            let d = max_abs_diff(&cg.get(p).expect("g"), &ch.get(p).expect("h"));
            assert!(d < 1e-4, "{arch:?} {p}: differs by {d}");
        }
        // The tokenizer from GGUF metadata and from tokenizer.json agree too.
        for text in [
            "the weather in Paris is 23 degrees",
            "<|im_start|>user\nhi<|im_end|>",
            "  x\n\n y",
        ] {
            assert_eq!(
                g.tokenizer.encode(text, true).expect("enc"),
                h.tokenizer.encode(text, true).expect("enc"),
                "{text:?}"
            );
        }
    }
}

#[test]
fn quantized_gguf_is_close_to_f32() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiny_config(Arch::Llama);
    let w = tiny_weights(&cfg, 7).expect("weights");
    let (a, b) = (dir.path().join("f32.gguf"), dir.path().join("q8.gguf"));
    write_gguf(&a, &cfg, &w, GgmlDType::F32).expect("f32");
    write_gguf(&b, &cfg, &w, GgmlDType::Q8_0).expect("q8");
    let (la, _) = logits_and_cache(&load(&a), &IDS, &Hooks::new());
    let (lb, _) = logits_and_cache(&load(&b), &IDS, &Hooks::new());
    let d = max_abs_diff(&la, &lb);
    let scale = max_abs_diff(&la, &la.zeros_like().expect("z"));
    println!("Q8_0 vs f32: max diff {d:.3e} (logit scale {scale:.2})");
    assert!(
        d > 0.0 && d < 0.05 * scale,
        "Q8_0 diff {d} vs scale {scale}"
    );
}

#[test]
fn hook_shapes_match_their_docs() {
    let (_d, m, _) = tiny_pair(Arch::Llama);
    let mut hooks = Hooks::new();
    for p in HookPoint::all(3) {
        hooks.capture(p);
    }
    let (_, cache) = logits_and_cache(&m, &IDS, &hooks);
    let t = IDS.len();
    for p in HookPoint::all(3) {
        let dims = cache.get(p).expect("captured").dims().to_vec();
        use HookPoint::*;
        let want = match p {
            AttnQ(_) | AttnRotQ(_) | AttnZ(_) => vec![1, t, 4, 8],
            AttnK(_) | AttnV(_) | AttnRotK(_) => vec![1, t, 2, 8],
            AttnScores(_) | AttnPattern(_) => vec![1, 4, t, t],
            MlpPre(_) | MlpPreLinear(_) | MlpPost(_) => vec![1, t, 64],
            Ln1Scale(_) | Ln2Scale(_) | LnFinalScale => vec![1, t, 1],
            _ => vec![1, t, 32],
        };
        assert_eq!(dims, want, "{p}");
        if let Some(per_token) = p.per_token_shape(m.cfg()) {
            assert_eq!(&want[2..], &per_token[..], "{p}");
        }
    }
    // Residual bookkeeping: resid_post = resid_mid + mlp_out = resid_pre + attn_out + mlp_out.
    let g = |p| cache.get(p).expect("cap");
    let sum = ((g(HookPoint::ResidPre(1)) + g(HookPoint::AttnOut(1))).expect("add")
        + g(HookPoint::MlpOut(1)))
    .expect("add");
    assert!(max_abs_diff(&sum, &g(HookPoint::ResidPost(1))) < 1e-5);
    assert!(max_abs_diff(&g(HookPoint::ResidPost(0)), &g(HookPoint::ResidPre(1))) < 1e-6);
    // Patterns are causal probability distributions.
    let pat = g(HookPoint::AttnPattern(2));
    let rows = pat.sum(D::Minus1).expect("sum");
    assert!(max_abs_diff(&rows, &rows.ones_like().expect("ones")) < 1e-5);
    let above: f32 = pat
        .get(0)
        .expect("b")
        .get(0)
        .expect("h")
        .get(0)
        .expect("q")
        .narrow(0, 1, t - 1)
        .expect("n")
        .sum_all()
        .expect("s")
        .to_scalar()
        .expect("s");
    assert_eq!(above, 0.0, "first query attends only to itself");
}

#[test]
fn interventions_do_what_they_say_and_leave_no_state() {
    let (_d, m, _) = tiny_pair(Arch::Llama);
    let (base, _) = logits_and_cache(&m, &IDS, &Hooks::new());
    let v = Tensor::arange(0f32, 32., &Device::Cpu)
        .expect("v")
        .affine(0.1, -1.0)
        .expect("v");
    let p = HookPoint::ResidPost(1);

    // Scale 0 is exactly the unsteered output.
    let mut h = Hooks::new();
    h.add(p, v.clone(), 0.0, Positions::All);
    assert_eq!(max_abs_diff(&logits_and_cache(&m, &IDS, &h).0, &base), 0.0);

    // Add then subtract cancels.
    let mut h = Hooks::new();
    h.add(p, v.clone(), 3.0, Positions::All)
        .add(p, v.clone(), -3.0, Positions::All);
    assert!(max_abs_diff(&logits_and_cache(&m, &IDS, &h).0, &base) < 1e-5);

    // Adding changes the output, and the model is unchanged afterwards (no global state).
    let mut h = Hooks::new();
    h.add(p, v.clone(), 3.0, Positions::All);
    assert!(max_abs_diff(&logits_and_cache(&m, &IDS, &h).0, &base) > 1e-2);
    assert_eq!(
        max_abs_diff(&logits_and_cache(&m, &IDS, &Hooks::new()).0, &base),
        0.0
    );

    // Project-out leaves no component along the direction (capture after the intervention).
    let mut h = Hooks::new();
    h.project_out(p, v.clone(), Positions::All).capture(p);
    let (_, c) = logits_and_cache(&m, &IDS, &h);
    let u = (&v
        / v.sqr()
            .expect("sq")
            .sum_all()
            .expect("s")
            .sqrt()
            .expect("sqrt")
            .to_scalar::<f32>()
            .expect("n") as f64)
        .expect("u");
    let along = c
        .get(p)
        .expect("cap")
        .broadcast_mul(&u)
        .expect("m")
        .sum(D::Minus1)
        .expect("s");
    assert!(max_abs_diff(&along, &along.zeros_like().expect("z")) < 1e-4);

    // Interventions restricted to positions change nothing before them (causality),
    // and positions outside the range are untouched at the hook itself.
    let mut h = Hooks::new();
    h.add(p, v.clone(), 5.0, Positions::From(5)).capture(p);
    let (l, c) = logits_and_cache(&m, &IDS, &h);
    let (_, c0) = logits_and_cache(&m, &IDS, &{
        let mut h = Hooks::new();
        h.capture(p);
        h
    });
    assert_eq!(
        max_abs_diff(
            &l.narrow(1, 0, 5).expect("n"),
            &base.narrow(1, 0, 5).expect("n")
        ),
        0.0
    );
    assert!(
        max_abs_diff(
            &l.narrow(1, 5, 4).expect("n"),
            &base.narrow(1, 5, 4).expect("n")
        ) > 1e-2
    );
    let diff = (c.get(p).expect("a") - c0.get(p).expect("b")).expect("d");
    assert_eq!(
        max_abs_diff(
            &diff.narrow(1, 0, 5).expect("n"),
            &diff.narrow(1, 0, 5).expect("n").zeros_like().expect("z")
        ),
        0.0
    );

    // Zero-ablation at one position zeroes exactly that position.
    let mut h = Hooks::new();
    h.zero(HookPoint::MlpOut(0), Positions::Range(2, 3))
        .capture(HookPoint::MlpOut(0));
    let (_, c) = logits_and_cache(&m, &IDS, &h);
    let mo = c.get(HookPoint::MlpOut(0)).expect("cap");
    let row_abs = mo
        .abs()
        .expect("abs")
        .sum(D::Minus1)
        .expect("s")
        .flatten_all()
        .expect("f")
        .to_vec1::<f32>()
        .expect("v");
    assert_eq!(row_abs[2], 0.0);
    assert!(row_abs.iter().enumerate().all(|(i, &x)| i == 2 || x > 0.0));
}

#[test]
fn patching_a_whole_residual_reproduces_the_source_run() {
    let (_d, m, _) = tiny_pair(Arch::Qwen2);
    let other: Vec<u32> = IDS.iter().map(|i| (i * 7 + 3) % 270).collect();
    let p = HookPoint::ResidPre(2);
    let mut cap = Hooks::new();
    cap.capture(p);
    let (l_other, c_other) = logits_and_cache(&m, &other, &cap);
    let mut h = Hooks::new();
    h.patch(p, c_other.get(p).expect("cap"), Positions::All);
    let (l, _) = logits_and_cache(&m, &IDS, &h);
    // Layer 2 is the last block: patching its input everywhere gives the other run's logits.
    assert!(max_abs_diff(&l, &l_other) < 1e-5);
    // Patching the final residual at the last position changes only that position,
    // and makes it the other run's (the unembedding acts per position).
    let q = HookPoint::ResidPost(2);
    let mut cap = Hooks::new();
    cap.capture(q);
    let (_, c_other) = logits_and_cache(&m, &other, &cap);
    let mut h = Hooks::new();
    h.patch(q, c_other.get(q).expect("cap"), Positions::Last);
    let (l, _) = logits_and_cache(&m, &IDS, &h);
    let (base, _) = logits_and_cache(&m, &IDS, &Hooks::new());
    assert_eq!(
        max_abs_diff(
            &l.narrow(1, 0, 8).expect("n"),
            &base.narrow(1, 0, 8).expect("n")
        ),
        0.0
    );
    assert!(
        max_abs_diff(
            &l.narrow(1, 8, 1).expect("n"),
            &l_other.narrow(1, 8, 1).expect("n")
        ) < 1e-5
    );
}

fn greedy_by_recompute(m: &Model, ids: &[u32], n: usize) -> Vec<u32> {
    let mut seq = ids.to_vec();
    for _ in 0..n {
        let (l, _) = logits_and_cache(m, &seq, &Hooks::new());
        let last = l.get(0).expect("b").get(seq.len() - 1).expect("t");
        seq.push(
            last.argmax(0)
                .expect("argmax")
                .to_scalar::<u32>()
                .expect("id"),
        );
    }
    seq[ids.len()..].to_vec()
}

#[test]
fn kv_cached_generation_equals_full_recompute() {
    let (_d, m, _) = tiny_pair(Arch::Qwen3);
    let opts = GenerateOptions {
        max_tokens: 12,
        sampling: Sampling::default(),
        stop_tokens: vec![],
    };
    let g = generate(
        &m.transformer,
        &[IDS.to_vec()],
        &opts,
        &Hooks::new(),
        |_, _| {},
    )
    .expect("gen");
    assert_eq!(g.tokens[0], greedy_by_recompute(&m, &IDS, 12));
}

#[test]
fn steering_during_generation_applies_at_every_step() {
    let (_d, m, _) = tiny_pair(Arch::Llama);
    let v = Tensor::arange(0f32, 32., &Device::Cpu)
        .expect("v")
        .affine(0.2, -3.0)
        .expect("v");
    let p = HookPoint::ResidPost(0);
    let mut h = Hooks::new();
    h.add(p, v.clone(), 2.0, Positions::All)
        .capture(HookPoint::ResidPost(2));
    let opts = GenerateOptions {
        max_tokens: 6,
        sampling: Sampling::default(),
        stop_tokens: vec![],
    };
    let g = generate(&m.transformer, &[IDS.to_vec()], &opts, &h, |_, _| {}).expect("gen");
    // Reference: recompute each step with the hook over the full sequence.
    let mut seq = IDS.to_vec();
    let mut hooks = Hooks::new();
    hooks.add(p, v, 2.0, Positions::All);
    for _ in 0..6 {
        let (l, _) = logits_and_cache(&m, &seq, &hooks);
        seq.push(
            l.get(0)
                .expect("b")
                .get(seq.len() - 1)
                .expect("t")
                .argmax(0)
                .expect("a")
                .to_scalar::<u32>()
                .expect("i"),
        );
    }
    assert_eq!(g.tokens[0], seq[IDS.len()..].to_vec());
    // Captures cover the prompt and every fed-back generated token.
    assert_eq!(
        g.cache.get(HookPoint::ResidPost(2)).expect("cap").dims(),
        &[1, IDS.len() + 5, 32]
    );
}

#[test]
fn padded_batches_match_single_sequences() {
    let (_d, m, _) = tiny_pair(Arch::Llama);
    let a = IDS.to_vec();
    let b = vec![7u32, 8, 9, 250];
    let batch = Batch::new(&[a.clone(), b.clone()], m.device()).expect("batch");
    let mut hooks = Hooks::new();
    hooks.capture(HookPoint::ResidPost(1));
    let (l, c) = m
        .transformer
        .forward(&batch, &hooks, Logits::All)
        .expect("fwd");
    let l = l.expect("logits");
    let (la, _) = logits_and_cache(&m, &a, &Hooks::new());
    let (lb, cb) = logits_and_cache(&m, &b, &hooks);
    assert!(max_abs_diff(&l.get(0).expect("0"), &la.get(0).expect("0")) < 1e-4);
    let lb_from_batch = l.get(1).expect("1").narrow(0, 5, 4).expect("n");
    assert!(max_abs_diff(&lb_from_batch, &lb.get(0).expect("0")) < 1e-4);
    assert!(
        max_abs_diff(
            &c.get_row(HookPoint::ResidPost(1), 1).expect("row"),
            &cb.get(HookPoint::ResidPost(1))
                .expect("c")
                .get(0)
                .expect("0")
        ) < 1e-4
    );
    // Batched generation gives each row its own greedy continuation.
    let opts = GenerateOptions {
        max_tokens: 5,
        sampling: Sampling::default(),
        stop_tokens: vec![],
    };
    let g = generate(
        &m.transformer,
        &[a.clone(), b.clone()],
        &opts,
        &Hooks::new(),
        |_, _| {},
    )
    .expect("gen");
    assert_eq!(g.tokens[0], greedy_by_recompute(&m, &a, 5));
    assert_eq!(g.tokens[1], greedy_by_recompute(&m, &b, 5));
}

#[test]
fn sampling_is_seeded_and_respects_top_k() {
    let (_d, m, _) = tiny_pair(Arch::Llama);
    let opts = |seed| GenerateOptions {
        max_tokens: 10,
        sampling: Sampling {
            temperature: 1.0,
            top_p: 0.9,
            top_k: 5,
            seed,
        },
        stop_tokens: vec![],
    };
    let run = |seed| {
        generate(
            &m.transformer,
            &[IDS.to_vec()],
            &opts(seed),
            &Hooks::new(),
            |_, _| {},
        )
        .expect("gen")
        .tokens[0]
            .clone()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

/// Issue 9, kind 6: a sample depends on the seed and its item's index, never on what
/// else is in the batch.
#[test]
fn a_sample_does_not_depend_on_its_batch() {
    let (_d, m, _) = tiny_pair(Arch::Llama);
    let opts = GenerateOptions {
        max_tokens: 12,
        sampling: Sampling {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: 3,
        },
        stop_tokens: vec![],
    };
    let prompts = [
        IDS.to_vec(),
        IDS[..4].to_vec(),
        IDS[2..].to_vec(),
        IDS.to_vec(),
    ];
    let together = generate(&m.transformer, &prompts, &opts, &Hooks::new(), |_, _| {})
        .expect("batch")
        .tokens;
    for (i, p) in prompts.iter().enumerate() {
        let alone = generate_items(
            &m.transformer,
            std::slice::from_ref(p),
            &[i as u64],
            &opts,
            &Hooks::new(),
            |_, _| {},
        )
        .expect("alone")
        .tokens;
        assert_eq!(alone[0], together[i], "item {i} sampled alone");
    }
    // In another batch, next to other prompts, item 2 still draws the same tokens.
    let other = generate_items(
        &m.transformer,
        &[IDS[1..].to_vec(), prompts[2].clone()],
        &[9, 2],
        &opts,
        &Hooks::new(),
        |_, _| {},
    )
    .expect("other batch")
    .tokens;
    assert_eq!(other[1], together[2]);
    // Items with the same prompt draw different samples (their own generators).
    assert_ne!(together[0], together[3]);
}

/// Issue 9, kind 7: `generated` never steers the first answer token (it is computed at
/// the last prompt position); `last-prompt+generated` does.
#[test]
fn answer_only_steering_moves_the_first_answer_token() {
    let (_d, m, _) = tiny_pair(Arch::Llama);
    let last = m.cfg().n_layers - 1;
    let opts = GenerateOptions {
        max_tokens: 4,
        sampling: Sampling::default(),
        stop_tokens: vec![],
    };
    let run = |hooks: &Hooks| {
        generate(&m.transformer, &[IDS.to_vec()], &opts, hooks, |_, _| {})
            .expect("gen")
            .tokens[0]
            .clone()
    };
    let plain = run(&Hooks::new());
    // A token the model does not pick unsteered, pushed by its unembedding direction.
    let target = (0..m.cfg().vocab_size as u32)
        .find(|t| !plain.contains(t))
        .expect("target");
    let dir = m
        .transformer
        .unembed()
        .expect("unembed")
        .get(target as usize)
        .expect("row");
    let steer = |at: &str| {
        let mut h = Hooks::new();
        h.add(
            HookPoint::ResidPost(last),
            dir.clone(),
            1000.0,
            Positions::parse(at).expect("positions"),
        );
        run(&h)
    };
    let generated = steer("generated");
    assert_eq!(
        generated[0], plain[0],
        "the first answer token is untouched"
    );
    assert!(generated[1..].iter().all(|&t| t == target), "{generated:?}");
    let answer = steer("last-prompt+generated");
    assert!(answer.iter().all(|&t| t == target), "{answer:?}");
}

/// The new TransformerLens sites inside a block also run while decoding (they send the
/// block through the tensor path instead of the fused one).
#[test]
fn inner_block_hooks_run_at_every_decode_step() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = tiny_config(Arch::Llama);
    let q = dir.path().join("q8.gguf");
    write_gguf(
        &q,
        &cfg,
        &tiny_weights(&cfg, 7).expect("w"),
        GgmlDType::Q8_0,
    )
    .expect("gguf");
    let m = load(&q);
    let opts = GenerateOptions {
        max_tokens: 5,
        sampling: Sampling::default(),
        stop_tokens: vec![],
    };
    for p in [
        HookPoint::Ln1Scale(1),
        HookPoint::Ln2Normalized(1),
        HookPoint::AttnRotK(1),
        HookPoint::AttnScores(1),
        HookPoint::MlpPre(1),
        HookPoint::MlpPreLinear(1),
    ] {
        let mut h = Hooks::new();
        h.capture(p);
        let g = generate(&m.transformer, &[IDS.to_vec()], &opts, &h, |_, _| {}).expect("gen");
        let got = g.cache.get(p).expect("captured").dims()[p.pos_axis()];
        assert_eq!(got, IDS.len() + 4, "{p}: one row per position fed");
    }
}

#[test]
fn chat_template_renders_from_gguf_metadata() {
    let (_d, m, _) = tiny_pair(Arch::Llama);
    let msgs = [pragma_model::tokenizer::ChatMessage::new("user", "hi")];
    let s = m
        .tokenizer
        .apply_chat_template(&msgs, true)
        .expect("render");
    assert_eq!(s, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    let ids = m.tokenizer.encode(&s, true).expect("enc");
    assert_eq!(ids[0], 1, "special token parsed");
    assert_ne!(
        m.tokenizer.encode(&s, false).expect("enc")[0],
        1,
        "plain text when special=false"
    );
    assert_eq!(m.tokenizer.decode(&ids).expect("dec"), s);
}

#[test]
fn quantized_decode_kernels_match_the_dequantized_weights() {
    // Q4_1 and Q8_0 GGUFs of a llama (Q/K rows permuted in the file): decoding with the
    // block kernels must follow the same logits as the dense f32 path.
    for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = tiny_config(Arch::Llama);
        let w = tiny_weights(&cfg, 3).expect("weights");
        let p = dir.path().join("q.gguf");
        write_gguf(&p, &cfg, &w, dtype).expect("write");
        let m = load(&p);
        let mut dense = Model::load_with(p.to_str().expect("utf8"), WeightMode::F32, &mut |_| {})
            .expect("f32")
            .transformer;
        dense.use_quant_kernels = false;
        let mut hooks = Hooks::new();
        hooks.capture(HookPoint::ResidPost(2));
        let opts = GenerateOptions {
            max_tokens: 8,
            sampling: Sampling::default(),
            stop_tokens: vec![],
        };
        let a = generate(&m.transformer, &[IDS.to_vec()], &opts, &hooks, |_, _| {}).expect("gen");
        let b = generate(&dense, &[IDS.to_vec()], &opts, &hooks, |_, _| {}).expect("gen");
        assert_eq!(a.tokens, b.tokens, "{dtype:?}");
        let d = max_abs_diff(
            &a.cache.get(HookPoint::ResidPost(2)).expect("a"),
            &b.cache.get(HookPoint::ResidPost(2)).expect("b"),
        );
        println!("{dtype:?}: decode kernels vs dense, max |resid diff| {d:.2e}");
        assert!(d < 1e-4, "{dtype:?}: {d}");
    }
}

#[test]
fn fused_decode_equals_the_tensor_path() {
    // One decoded token of one sequence runs fused on host vectors unless a hook sits
    // inside a block; a capture at every hook_attn_out forces the tensor path. Both must
    // give the same logits at every step and the same residual captures.
    use pragma_model::hooks::Cache;
    use pragma_model::llama::KvCache;
    for (arch, dtype) in [
        (Arch::Llama, GgmlDType::Q4_1),
        (Arch::Llama, GgmlDType::Q8_0),
        (Arch::Qwen2, GgmlDType::Q8_0),
        (Arch::Qwen3, GgmlDType::Q8_0),
        // Window 4: decoding past it exercises the fused path's sliding window.
        (Arch::Gemma3, GgmlDType::Q8_0),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = tiny_config(arch);
        let p = dir.path().join("q.gguf");
        write_gguf(&p, &cfg, &tiny_weights(&cfg, 5).expect("w"), dtype).expect("write");
        let m = load(&p);
        let mut fused = Hooks::new();
        fused.capture(HookPoint::ResidPost(1));
        let mut tensor = fused.clone();
        for l in 0..cfg.n_layers {
            tensor.capture(HookPoint::AttnOut(l));
        }
        let run = |hooks: &Hooks| {
            let mut kv = KvCache::new(cfg.n_layers, vec![0]);
            let mut cache = Cache::new(vec![0]);
            let t = &m.transformer;
            let mut out = Vec::new();
            let ids = Tensor::new(&[IDS], m.device()).expect("ids");
            let mut l = t
                .forward_step(&ids, &mut kv, hooks, Logits::Last, &mut cache)
                .expect("prefill")
                .expect("logits");
            for _ in 0..10 {
                let next = l
                    .argmax(D::Minus1)
                    .expect("argmax")
                    .to_vec1::<u32>()
                    .expect("v")[0];
                out.push(l.clone());
                let ids = Tensor::new(&[[next]], m.device()).expect("ids");
                l = t
                    .forward_step(&ids, &mut kv, hooks, Logits::Last, &mut cache)
                    .expect("step")
                    .expect("logits");
            }
            (out, cache.get(HookPoint::ResidPost(1)).expect("resid"))
        };
        let (a, ra) = run(&fused);
        let (b, rb) = run(&tensor);
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| max_abs_diff(x, y))
            .fold(0f32, f32::max);
        let resid = max_abs_diff(&ra, &rb);
        println!("{arch:?} {dtype:?}: fused vs tensor decode, max |logit diff| {worst:.2e}, resid {resid:.2e}");
        assert!(
            worst < 1e-4 && resid < 1e-4,
            "{arch:?} {dtype:?}: {worst} {resid}"
        );
    }
}

/// Logits at every position of one sequence, flattened.
fn all_logits(m: &Model, ids: &[u32]) -> Vec<f32> {
    let batch = Batch::single(ids, m.device()).expect("batch");
    let (l, _) = m
        .transformer
        .forward(&batch, &Hooks::new(), Logits::All)
        .expect("forward");
    l.expect("logits")
        .flatten_all()
        .expect("f")
        .to_vec1()
        .expect("v")
}

/// (max |a - b|, max |b|).
fn max_diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    (d, scale)
}

/// A config whose widths are multiples of 256, so every GGUF dtype (K-quants included)
/// can hold its matrices.
fn wide_config() -> pragma_model::config::Config {
    let mut cfg = tiny_config(Arch::Llama);
    cfg.n_layers = 2;
    cfg.d_model = 256;
    cfg.d_mlp = 512;
    cfg.n_heads = 4;
    cfg.n_kv_heads = 2;
    cfg.d_head = 64;
    cfg.tie_embeddings = false;
    cfg
}

#[test]
fn native_weights_match_the_f32_path_for_every_dtype() {
    // Each dtype, weights kept in it (native) against the same file dequantized at load
    // (f32): prefill of 24 tokens (tiles: the dequantized values are exact, only the f32
    // summation order differs) within 1e-3 of the logits' scale; decoding (row kernels:
    // pragma's own for Q4_0 / Q4_1 / Q5_0 / Q8_0, candle's for the rest, which quantize activations to
    // 8 bits as llama.cpp does) correlated above 0.995 with the f32 logits (observed
    // 0.998-1.0); the weights
    // held in memory below the f32 path's by the dtype's ratio.
    let cfg = wide_config();
    let w = tiny_weights(&cfg, 11).expect("weights");
    let ids: Vec<u32> = (0..24).map(|i| 3 + (i * 7) % 40).collect();
    for (dtype, max_ratio) in [
        (GgmlDType::Q4_0, 0.2),
        (GgmlDType::Q4_1, 0.25),
        (GgmlDType::Q5_0, 0.3), // held widened to Q8_0's layout
        (GgmlDType::Q5_1, 0.2),
        (GgmlDType::Q8_0, 0.3),
        (GgmlDType::Q2K, 0.15),
        (GgmlDType::Q3K, 0.15),
        (GgmlDType::Q4K, 0.2),
        (GgmlDType::Q5K, 0.2),
        (GgmlDType::Q6K, 0.25),
        (GgmlDType::F16, 0.55),
        (GgmlDType::BF16, 0.55),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("w.gguf");
        write_gguf(&p, &cfg, &w, dtype).expect("write");
        let path = p.to_str().expect("utf8");
        let native = Model::load_with(path, WeightMode::Native, &mut |_| {}).expect("native");
        let f32m = Model::load_with(path, WeightMode::F32, &mut |_| {}).expect("f32");
        let ratio =
            native.transformer.weight_bytes() as f64 / f32m.transformer.weight_bytes() as f64;
        assert!(
            ratio < max_ratio,
            "{dtype:?}: native holds {ratio:.2} of the f32 bytes"
        );
        let (d, scale) = max_diff(&all_logits(&native, &ids), &all_logits(&f32m, &ids));
        println!("{dtype:?}: native holds {ratio:.3} of f32's bytes; prefill max |diff| {d:.2e} of {scale:.2}");
        assert!(
            d <= 1e-3 * scale,
            "{dtype:?}: prefill logits differ by {d} (scale {scale})"
        );
        // Decoding: the last 3 tokens one at a time after a 21-token prefill.
        let decode = |m: &Model| -> Vec<f32> {
            let mut kv = pragma_model::llama::KvCache::new(cfg.n_layers, vec![0]);
            let mut cache = pragma_model::hooks::Cache::new(vec![0]);
            let dev = m.device();
            let t = Tensor::new(&ids[..21], dev)
                .expect("t")
                .unsqueeze(0)
                .expect("u");
            m.transformer
                .forward_step(&t, &mut kv, &Hooks::new(), Logits::Last, &mut cache)
                .expect("prefill");
            let mut out = Vec::new();
            for &id in &ids[21..] {
                let t = Tensor::new(&[id], dev).expect("t").unsqueeze(0).expect("u");
                let l = m
                    .transformer
                    .forward_step(&t, &mut kv, &Hooks::new(), Logits::Last, &mut cache)
                    .expect("step")
                    .expect("logits");
                out.extend(l.flatten_all().expect("f").to_vec1::<f32>().expect("v"));
            }
            out
        };
        let r = pearson(&decode(&native), &decode(&f32m));
        println!("{dtype:?}: decode logits correlation {r:.6}");
        assert!(r > 0.995, "{dtype:?}: decode correlation {r}");
    }
}

#[test]
fn mixed_dtype_projections_stay_apart_and_agree() {
    // As in Q4_K_M files: V and down in Q6_K, the rest in Q4_K. q/k/v cannot stack into
    // one matrix; they run as parts with the same results as the f32 path.
    let cfg = wide_config();
    let w = tiny_weights(&cfg, 12).expect("weights");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("mixed.gguf");
    pragma_model::testing::write_gguf_mixed(&p, &cfg, &w, &|name| {
        if name.contains("v_proj") || name.contains("down_proj") {
            GgmlDType::Q6K
        } else {
            GgmlDType::Q4K
        }
    })
    .expect("write");
    let path = p.to_str().expect("utf8");
    let native = Model::load_with(path, WeightMode::Native, &mut |_| {}).expect("native");
    let f32m = Model::load_with(path, WeightMode::F32, &mut |_| {}).expect("f32");
    let opts = GenerateOptions {
        max_tokens: 6,
        sampling: Sampling::default(),
        stop_tokens: vec![],
    };
    let mut hooks = Hooks::new();
    hooks.capture(HookPoint::ResidPost(1));
    let a = generate(
        &native.transformer,
        &[IDS.to_vec()],
        &opts,
        &hooks,
        |_, _| {},
    )
    .expect("gen");
    let b = generate(&f32m.transformer, &[IDS.to_vec()], &opts, &hooks, |_, _| {}).expect("gen");
    let (x, y) = (
        a.cache.get(HookPoint::ResidPost(1)).expect("a"),
        b.cache.get(HookPoint::ResidPost(1)).expect("b"),
    );
    let r = pearson(
        &x.flatten_all().expect("f").to_vec1::<f32>().expect("v"),
        &y.flatten_all().expect("f").to_vec1::<f32>().expect("v"),
    );
    assert!(r > 0.999, "resid correlation {r}");
}

#[test]
fn half_precision_safetensors_stay_half() {
    // An HF folder saved in F16 and in BF16: native keeps the matrices in half precision
    // (half the f32 path's bytes for them) and gives the f32 path's logits (the same
    // values, widened exactly; f32 sums in another order: 1e-4 of the logits' scale).
    use candle_core::DType;
    let cfg = wide_config();
    for dt in [DType::F16, DType::BF16] {
        let w: Vec<(String, candle_core::Tensor)> = tiny_weights(&cfg, 13)
            .expect("w")
            .into_iter()
            .map(|(n, t)| (n, t.to_dtype(dt).expect("cast")))
            .collect();
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("hf");
        write_hf(&p, &cfg, &w).expect("write");
        let path = p.to_str().expect("utf8");
        let native = Model::load_with(path, WeightMode::Native, &mut |_| {}).expect("native");
        let f32m = Model::load_with(path, WeightMode::F32, &mut |_| {}).expect("f32");
        let ratio =
            native.transformer.weight_bytes() as f64 / f32m.transformer.weight_bytes() as f64;
        assert!(
            ratio < 0.55,
            "{dt:?}: native holds {ratio:.2} of f32's bytes"
        );
        let ids: Vec<u32> = (0..16).map(|i| 3 + (i * 5) % 40).collect();
        let (d, scale) = max_diff(&all_logits(&native, &ids), &all_logits(&f32m, &ids));
        assert!(d <= 1e-4 * scale, "{dt:?}: {d} of {scale}");
    }
}

#[test]
fn gemma_sliding_window_hides_old_keys_on_local_layers_only() {
    // Tiny Gemma 3: window 4, every third layer global (layers 0, 1 local; 2 global).
    let dir = tempfile::tempdir().expect("tempdir");
    let m = pragma_model::testing::tiny_model(dir.path(), Arch::Gemma3, 9).expect("model");
    let g = m.cfg().gemma.clone().expect("gemma");
    assert_eq!((g.sliding_window, g.sliding_pattern), (4, 3));
    assert!(m.cfg().is_local(0) && m.cfg().is_local(1) && !m.cfg().is_local(2));
    let mut hooks = Hooks::new();
    for l in 0..3 {
        hooks.capture(HookPoint::AttnPattern(l));
    }
    let (_, cache) = logits_and_cache(&m, &IDS, &hooks);
    let t = IDS.len();
    for l in 0..3 {
        let p = cache.get(HookPoint::AttnPattern(l)).expect("pattern"); // [1, h, t, t]
        let last: Vec<f32> = p
            .get(0)
            .expect("b")
            .get(0)
            .expect("h")
            .get(t - 1)
            .expect("q")
            .to_vec1()
            .expect("v");
        let old: f32 = last[..t - 4].iter().sum();
        println!("layer {l}: weight on keys 4+ back {old:.3e}");
        if l < 2 {
            assert_eq!(old, 0.0, "local layer {l} attends past its window");
        } else {
            assert!(old > 1e-3, "global layer {l} ignores old keys");
        }
    }
    // Decoding with the KV cache across the window equals recomputing from scratch.
    let opts = GenerateOptions {
        max_tokens: 10,
        sampling: Sampling::default(),
        stop_tokens: vec![],
    };
    let gen = generate(
        &m.transformer,
        &[IDS.to_vec()],
        &opts,
        &Hooks::new(),
        |_, _| {},
    )
    .expect("gen");
    assert_eq!(gen.tokens[0], greedy_by_recompute(&m, &IDS, 10));
}

#[test]
fn gemma_native_weights_match_the_f32_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = wide_config();
    cfg.arch = Arch::Gemma3;
    cfg.qk_norm = true;
    cfg.gemma = tiny_config(Arch::Gemma3).gemma.map(|mut g| {
        g.embed_scale = (cfg.d_model as f64).sqrt();
        g.query_scale = 1.0 / (cfg.d_head as f64).sqrt();
        g
    });
    let p = dir.path().join("g.gguf");
    write_gguf(&p, &cfg, &tiny_weights(&cfg, 3).expect("w"), GgmlDType::Q4K).expect("write");
    let native = load(&p);
    let f32m = Model::load_with(&p.to_string_lossy(), WeightMode::F32, &mut |_| {}).expect("f32");
    let (d, scale) = max_diff(&all_logits(&native, &IDS), &all_logits(&f32m, &IDS));
    println!("Gemma Q4_K native vs f32: max |diff| {d:.2e} of {scale:.2e}");
    assert!(d <= 1e-4 * scale.max(1.0), "{d} vs {scale}");
    // Post-norm hooks exist on Gemma and are refused elsewhere with a pointer.
    let post = HookPoint::parse("blocks.1.ln2_post.hook_normalized", 2).expect("parse");
    let mut h = Hooks::new();
    h.capture(post);
    let (_, c) = logits_and_cache(&native, &IDS, &h);
    assert_eq!(
        c.get(post).expect("captured").dims(),
        &[1, IDS.len(), cfg.d_model]
    );
    let (_d2, llama, _) = tiny_pair(Arch::Llama);
    let err = llama
        .transformer
        .forward(
            &Batch::single(&IDS, llama.device()).expect("b"),
            &h,
            Logits::None,
        )
        .expect_err("llama has no post-norms");
    assert!(err.to_string().contains("post-norm"), "{err}");
}
