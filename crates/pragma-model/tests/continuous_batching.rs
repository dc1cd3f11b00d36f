//! Continuous batching (`pragma_model::decode::Decoder`): sequences that join a running
//! batch between decode steps, with their own hooks next to other rows' hooks, decode
//! exactly as each does alone. Tiny random models (llama, Gemma 3 with a 4-token
//! sliding window; f32 and Q8_0 so the fused single-row path runs too).

use candle_core::quantized::GgmlDType;
use candle_core::Tensor;
use pragma_model::decode::Decoder;
use pragma_model::generate::{
    generate_one, GenerateOptions, RowEvent, RowOptions, Sampling, StopReason,
};
use pragma_model::hooks::{HookPoint, Hooks, Positions};
use pragma_model::testing::{tiny_config, tiny_weights, write_gguf};
use pragma_model::{Arch, Model};

fn model(dir: &std::path::Path, arch: Arch, dtype: GgmlDType) -> Model {
    let cfg = tiny_config(arch);
    let p = dir.join(format!("tiny-{arch:?}-{dtype:?}.gguf"));
    write_gguf(&p, &cfg, &tiny_weights(&cfg, 11).expect("weights"), dtype).expect("gguf");
    Model::load(p.to_str().expect("utf8"), &mut |_| {}).expect("load")
}

/// One request: when it arrives (decode step), its prompt, budget, sampling and hooks.
struct Req {
    at: usize,
    prompt: Vec<u32>,
    max_tokens: usize,
    sampling: Sampling,
    key: &'static str,
}

fn hooks_for(m: &Model, key: &str) -> Hooks {
    let d = m.cfg().d_model;
    let dir: Vec<f32> = (0..d).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
    let v = Tensor::from_vec(dir, d, m.device()).expect("vector");
    let mut h = Hooks::new();
    match key {
        "plain" => {}
        "steer" => {
            h.add(HookPoint::ResidPost(1), v, 3.0, Positions::All);
        }
        "answer" => {
            h.add(HookPoint::ResidPre(2), v, -2.0, Positions::Generated);
        }
        // A huge vector: any leak into another row would change its tokens.
        "canary" => {
            h.add(HookPoint::ResidPost(0), v, 400.0, Positions::All);
        }
        "ablate" => {
            h.zero(HookPoint::MlpOut(1), Positions::From(3));
        }
        _ => unreachable!(),
    }
    h
}

fn requests() -> Vec<Req> {
    let greedy = Sampling::default();
    let hot = |seed| Sampling {
        temperature: 0.9,
        top_p: 0.95,
        top_k: 0,
        seed,
    };
    let p = |xs: &[u32]| xs.to_vec();
    vec![
        Req {
            at: 0,
            prompt: p(&[5, 80, 101, 17, 260, 33]),
            max_tokens: 14,
            sampling: greedy.clone(),
            key: "plain",
        },
        Req {
            at: 0,
            prompt: p(&[5, 9, 44]),
            max_tokens: 9,
            sampling: greedy.clone(),
            key: "steer",
        },
        // Joins at step 2, longer than the running cache: the running rows shift right.
        Req {
            at: 2,
            prompt: p(&[5, 80, 101, 17, 260, 33, 99, 4, 120, 7, 66, 200]),
            max_tokens: 8,
            sampling: greedy.clone(),
            key: "canary",
        },
        Req {
            at: 2,
            prompt: p(&[5, 120]),
            max_tokens: 10,
            sampling: hot(4),
            key: "plain",
        },
        // Joins at step 5, shorter than the cache: it is left-padded.
        Req {
            at: 5,
            prompt: p(&[5, 33, 99, 4]),
            max_tokens: 12,
            sampling: greedy.clone(),
            key: "answer",
        },
        Req {
            at: 5,
            prompt: p(&[5, 17]),
            max_tokens: 0,
            sampling: greedy.clone(),
            key: "plain",
        },
        Req {
            at: 7,
            prompt: p(&[5, 260, 33, 99, 4, 120, 7]),
            max_tokens: 6,
            sampling: hot(8),
            key: "ablate",
        },
        // Arrives after everything else ended: alone, on the fused path when quantized.
        Req {
            at: 40,
            prompt: p(&[5, 66, 200]),
            max_tokens: 5,
            sampling: greedy,
            key: "steer",
        },
    ]
}

fn alone(m: &Model, r: &Req, item: u64) -> Vec<u32> {
    let opts = GenerateOptions {
        max_tokens: r.max_tokens,
        sampling: r.sampling.clone(),
        stop_tokens: vec![],
    };
    generate_one(
        &m.transformer,
        &r.prompt,
        item,
        &opts,
        &hooks_for(m, r.key),
        |_, _| true,
    )
    .expect("alone")
    .0
}

fn together(m: &Model, reqs: &[Req]) -> (Vec<Vec<u32>>, usize) {
    let mut dec = Decoder::new(&m.transformer, vec![]);
    let mut out = vec![None; reqs.len()];
    let mut most = 0;
    let mut step = 0;
    while out.iter().any(Option::is_none) {
        // Requests arriving now join, one group per key.
        for key in ["plain", "steer", "canary", "answer", "ablate"] {
            let ids: Vec<usize> = (0..reqs.len())
                .filter(|&i| reqs[i].at == step && reqs[i].key == key)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let prompts: Vec<Vec<u32>> = ids.iter().map(|&i| reqs[i].prompt.clone()).collect();
            let opts: Vec<RowOptions> = ids
                .iter()
                .map(|&i| RowOptions {
                    max_tokens: reqs[i].max_tokens,
                    sampling: reqs[i].sampling.clone(),
                    item: i as u64,
                })
                .collect();
            let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
            let budgets: Vec<usize> = opts.iter().map(|o| o.max_tokens).collect();
            assert!(dec.has_room(&lens, &budgets));
            let ids64: Vec<u64> = ids.iter().map(|&i| i as u64).collect();
            dec.join(key, &hooks_for(m, key), &ids64, &prompts, &opts)
                .expect("join");
        }
        most = most.max(dec.len());
        let mut streamed: Vec<(u64, u32)> = Vec::new();
        for (id, tokens, why) in dec
            .step(|id, e| {
                if let RowEvent::Token(t, _) = e {
                    streamed.push((id, t));
                }
                true
            })
            .expect("step")
        {
            assert!(
                matches!(why, StopReason::MaxTokens),
                "row {id} ended with {why:?}"
            );
            out[id as usize] = Some(tokens);
        }
        step += 1;
        assert!(step < 200, "decoding did not finish");
    }
    (out.into_iter().map(Option::unwrap).collect(), most)
}

fn check(arch: Arch, dtype: GgmlDType) {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(dir.path(), arch, dtype);
    let reqs = requests();
    let (got, most) = together(&m, &reqs);
    assert!(most >= 5, "the batch never held 5 rows at once ({most})");
    for (i, r) in reqs.iter().enumerate() {
        let want = alone(&m, r, i as u64);
        assert_eq!(
            got[i], want,
            "{arch:?} {dtype:?}: request {i} ({}) differs from decoding it alone",
            r.key
        );
        assert_eq!(got[i].len(), r.max_tokens);
    }
    // The canary moved its own row: its tokens differ from the same prompt unsteered.
    let mut plain = Req {
        ..reqs[2].clone_req()
    };
    plain.key = "plain";
    assert_ne!(
        alone(&m, &plain, 2),
        got[2],
        "the canary vector has no effect; the leak check is void"
    );
}

impl Req {
    fn clone_req(&self) -> Req {
        Req {
            at: self.at,
            prompt: self.prompt.clone(),
            max_tokens: self.max_tokens,
            sampling: self.sampling.clone(),
            key: self.key,
        }
    }
}

#[test]
fn rows_joining_mid_decode_with_their_own_hooks_decode_as_alone_llama() {
    check(Arch::Llama, GgmlDType::F32);
}

#[test]
fn rows_joining_mid_decode_with_their_own_hooks_decode_as_alone_quantized() {
    check(Arch::Llama, GgmlDType::Q8_0);
}

#[test]
fn rows_joining_mid_decode_with_their_own_hooks_decode_as_alone_gemma3_sliding_window() {
    check(Arch::Gemma3, GgmlDType::F32);
}

#[test]
fn has_room_refuses_a_join_that_would_overflow_the_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(dir.path(), Arch::Llama, GgmlDType::F32);
    let ctx = m.cfg().context_length;
    let mut dec = Decoder::new(&m.transformer, vec![]);
    let opts = RowOptions {
        max_tokens: 20,
        sampling: Sampling::default(),
        item: 0,
    };
    dec.join(
        "",
        &Hooks::new(),
        &[0],
        &[vec![5; 10]],
        std::slice::from_ref(&opts),
    )
    .expect("join");
    assert!(dec.has_room(&[ctx - 20], &[20]));
    assert!(
        !dec.has_room(&[ctx - 19], &[20]),
        "prompt + budget past the context"
    );
    assert!(
        !dec.has_room(&[ctx - 10], &[1]),
        "the running row's budget no longer fits"
    );
    // A prompt longer than the context is an error, and the running row is untouched.
    let err = dec
        .join("", &Hooks::new(), &[1], &[vec![5; ctx + 1]], &[opts])
        .expect_err("error");
    assert!(err.to_string().contains("context"), "{err}");
    assert_eq!(dec.len(), 1);
}
