//! The OpenAI-compatible API on a tiny model, over real HTTP on loopback: response
//! shapes, streaming, validation before compute, and the leak test (references computed
//! one request at a time, then the same requests sent together, mixed with streaming,
//! clients that leave mid-stream, malformed bodies and a vector deleted during the
//! storm: every answer equals its reference, token for token).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use pragma_methods::steering::{train, Pair, Side, TrainConfig};
use pragma_model::testing::{tiny_config, tiny_weights, write_gguf};
use pragma_model::{Arch, Model};
use pragma_server::openai::OpenAi;
use pragma_transcripts::db::Db;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(dir: &Path) -> SocketAddr {
    let cfg = tiny_config(Arch::Llama);
    let gguf = dir.join("tiny.gguf");
    write_gguf(
        &gguf,
        &cfg,
        &tiny_weights(&cfg, 7).expect("w"),
        GgmlDType::F32,
    )
    .expect("gguf");
    let model = Arc::new(Model::load(gguf.to_str().expect("utf8"), &mut |_| {}).expect("model"));
    let pairs: Vec<Pair> = ["red cat", "blue dog", "warm sun", "cold rain"]
        .iter()
        .map(|t| {
            Pair::new(
                Side::Text(format!("I love the {t}")),
                Side::Text(format!("I hate the {t}")),
            )
        })
        .collect();
    let love = train(&model, &pairs, "test", &TrainConfig::new(&[0, 1])).expect("train");
    // A logistic probe along the vector's layer-1 direction.
    let probe = pragma_methods::probe::Probe {
        meta: pragma_methods::probe::ProbeMeta {
            model: "tiny".into(),
            model_sha256: None,
            d_model: model.cfg().d_model,
            hook: "blocks.1.hook_resid_post".into(),
            position: pragma_methods::steering::Position::Last,
            method: "logistic".into(),
            c: Some(1.0),
            dataset: "t".into(),
            dataset_sha256: "x".into(),
            classes: ["hate".into(), "love".into()],
            val_auroc: None,
            test_auroc: 0.5,
            test_auroc_ci: (0.5, 0.5),
            test_accuracy: 0.5,
            pragma_version: "0".into(),
            input: pragma_model::InputRule::default(),
        },
        w: love.directions[1].to_vec1().expect("dir"),
        b: 0.0,
    };
    let vectors = vec![
        ("love".to_string(), love.clone()),
        ("canary".to_string(), love.clone()),
        ("scratch".to_string(), love),
    ];
    let api = OpenAi::with_probes(
        model,
        "tiny".into(),
        vectors,
        vec![("dir".into(), probe)],
        64,
        8,
    )
    .with_saes(vec![("toy".into(), toy_sae(cfg.d_model))]);
    let app = pragma_server::router(
        Db::open(&dir.join("t.db")).expect("db"),
        pragma_server::App {
            openai: Some(api),
            ..Default::default()
        },
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(l, app).await.expect("serve");
    });
    addr
}

/// A small ReLU SAE on `blocks.1.hook_resid_post` with fixed pseudo-random weights.
fn toy_sae(d: usize) -> pragma_methods::sae::Sae {
    use pragma_methods::sae::{Arch as SaeArch, Normalize, Sae, SaeConfig};
    let n = 16;
    let val =
        |i: usize, j: usize, k: usize| (((i * 31 + j * 17 + k * 7) % 23) as f32 - 11.0) / 11.0;
    let enc: Vec<f32> = (0..d * n).map(|x| val(x / n, x % n, 1)).collect();
    let dec: Vec<f32> = (0..n * d).map(|x| val(x / d, x % d, 2)).collect();
    let t = |v: Vec<f32>, shape: &[usize]| {
        candle_core::Tensor::from_vec(v, shape, &candle_core::Device::Cpu).expect("t")
    };
    Sae {
        cfg: SaeConfig {
            arch: SaeArch::Relu,
            d_in: d,
            d_sae: n,
            hook_name: "blocks.1.hook_resid_post".into(),
            apply_b_dec_to_input: false,
            normalize: Normalize::None,
            rescale_acts_by_decoder_norm: false,
            reshape_hook_z: false,
            model_name: None,
            metadata: json!({}),
        },
        w_enc: t(enc, &[d, n]),
        b_enc: t(vec![0.1; n], &[n]),
        w_dec: t(dec, &[n, d]),
        b_dec: t(vec![0.0; d], &[d]),
        threshold: None,
    }
}

/// A raw HTTP/1.1 request; the status and body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (code, dechunk(body))
}

/// Undo `Transfer-Encoding: chunked` when the body uses it (SSE responses do).
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_string();
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 {
            return out;
        }
        if after.len() < n {
            return body.to_string();
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
}

/// The text of a non-streaming or streaming answer.
fn answer_text(body: &str, stream: bool, chat: bool) -> String {
    if !stream {
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let c = &v["choices"][0];
        return if chat {
            c["message"]["content"].as_str().expect("content").into()
        } else {
            c["text"].as_str().expect("text").into()
        };
    }
    let mut text = String::new();
    let mut done = false;
    for line in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if let Some(c) = v["choices"].get(0) {
            let t = if chat {
                c["delta"]["content"].as_str()
            } else {
                c["text"].as_str()
            };
            text.push_str(t.unwrap_or(""));
        }
    }
    assert!(done, "stream without [DONE]: {body}");
    text
}

fn chat_body(prompt: &str, steer: Option<(&str, f32)>, stream: bool) -> String {
    let mut b = json!({
        "model": "tiny", "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 12, "temperature": 0, "stream": stream,
    });
    if let Some((v, s)) = steer {
        b["pragma"] = json!({"steer": [{"vector": v, "scale": s, "positions": "all"}]});
    }
    b.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shapes_streaming_and_errors() {
    let d = tempfile::tempdir().expect("tmp");
    let addr = start(d.path()).await;
    let (c, body) = http(addr, "GET", "/v1/models", "").await;
    assert_eq!(c, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["data"][0]["id"], "tiny");

    let (c, body) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat_body("the cat", None, false),
    )
    .await;
    assert_eq!(c, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().expect("p") + u["completion_tokens"].as_u64().expect("c"))
    );
    assert!(matches!(
        v["choices"][0]["finish_reason"].as_str(),
        Some("stop" | "length")
    ));
    // Streaming gives the same text, in chunks, ending with [DONE].
    let (c, sbody) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat_body("the cat", None, true),
    )
    .await;
    assert_eq!(c, 200);
    assert_eq!(
        answer_text(&sbody, true, true),
        answer_text(&body, false, true)
    );
    assert!(sbody.contains("\"role\":\"assistant\""), "{sbody}");
    // With include_usage, a last chunk without choices carries the usage.
    let mut b: Value = serde_json::from_str(&chat_body("the cat", None, true)).expect("b");
    b["stream_options"] = json!({"include_usage": true});
    let (_, ubody) = http(addr, "POST", "/v1/chat/completions", &b.to_string()).await;
    let usage_chunk: Value = ubody
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| *l != "[DONE]")
        .map(|l| serde_json::from_str::<Value>(l).expect("chunk"))
        .find(|c| c.get("usage").is_some())
        .expect("a usage chunk");
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["object"], "chat.completion.chunk");
    assert_eq!(usage_chunk["usage"], v["usage"], "{ubody}");

    // Completions with logprobs: one per token, log-probabilities <= 0.
    let (c, body) = http(
        addr,
        "POST",
        "/v1/completions",
        &json!({"prompt": "the cat", "max_tokens": 5, "temperature": 0, "logprobs": 2}).to_string(),
    )
    .await;
    assert_eq!(c, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let lp = &v["choices"][0]["logprobs"];
    let n = v["usage"]["completion_tokens"].as_u64().expect("n") as usize;
    assert!(lp["token_logprobs"].as_array().expect("lp").len() <= n);
    assert!(lp["token_logprobs"]
        .as_array()
        .expect("lp")
        .iter()
        .all(|x| x.as_f64().expect("f") <= 0.0));
    assert_eq!(v["object"], "text_completion");

    // Stop strings end the text before them.
    let (_, full) = http(
        addr,
        "POST",
        "/v1/completions",
        &json!({"prompt": "the cat", "max_tokens": 12, "temperature": 0}).to_string(),
    )
    .await;
    let full = answer_text(&full, false, false);
    if let Some(cut) = full.char_indices().nth(3).map(|(i, _)| i) {
        let stop = &full[cut..(cut + full[cut..].chars().next().map_or(0, char::len_utf8))];
        let (_, b) = http(
            addr,
            "POST",
            "/v1/completions",
            &json!({"prompt": "the cat", "max_tokens": 12, "temperature": 0, "stop": stop})
                .to_string(),
        )
        .await;
        let got = answer_text(&b, false, false);
        assert_eq!(got, full[..full.find(stop).expect("in")], "{b}");
    }

    // Bad requests: 400 with OpenAI's error object, before any compute.
    let bad = [
        "{not json",
        r#"{"messages": []}"#,
        r#"{"messages": [{"role": "robot", "content": "x"}]}"#,
        r#"{"messages": [{"role": "user", "content": "x"}], "temperature": 3}"#,
        r#"{"messages": [{"role": "user", "content": "x"}], "n": 2}"#,
        r#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}"#,
        r#"{"messages": [{"role": "user", "content": "x"}], "pragma": {"steer": [{"vector": "nope", "scale": 1}]}}"#,
        r#"{"messages": [{"role": "user", "content": "x"}], "pragma": {"steer": [{"vector": "love", "scale": 1, "layers": [9]}]}}"#,
        r#"{"messages": [{"role": "user", "content": "x"}], "pragma": {"steer": [{"vector": "love", "scale": 1e39}]}}"#,
        r#"{"messages": [{"role": "user", "content": "x"}], "pragma": {"steer": [{"vector": "love", "scale": "NaN"}]}}"#,
        r#"{"messages": [{"role": "user", "content": "x"}], "pragma": {"steering": []}}"#,
        r#"{"messages": [{"role": "user", "content": "x"}], "pragma": {"steer": [{"vector": "love", "scale": 1, "positions": "sideways"}]}}"#,
        r#"{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}]}"#,
    ];
    for b in bad {
        let (c, body) = http(addr, "POST", "/v1/chat/completions", b).await;
        assert_eq!(c, 400, "{b}: {body}");
        let v: Value = serde_json::from_str(&body).expect("error json");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{body}");
        assert!(!v["error"]["message"].as_str().expect("msg").is_empty());
    }
    let long = "the cat ".repeat(200);
    let (c, body) = http(
        addr,
        "POST",
        "/v1/completions",
        &json!({"prompt": long, "max_tokens": 4}).to_string(),
    )
    .await;
    assert_eq!(c, 400, "{body}");
    assert!(body.contains("context"), "{body}");
    let (c, _) = http(addr, "POST", "/v1/nothing", "{}").await;
    assert_eq!(c, 404);

    // A body not sent as JSON (a cross-site "simple" request) is refused.
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let b = chat_body("the cat", None, false);
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{b}",
        b.len()
    );
    sock.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    sock.read_to_end(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 415"));

    // `"stream": null` is absent; without a seed every request samples afresh, with one
    // it repeats.
    let sampled = |seed: Option<u64>| {
        let mut b = json!({"messages": [{"role": "user", "content": "the cat"}],
                           "max_tokens": 16, "temperature": 1.0, "stream": null});
        if let Some(s) = seed {
            b["seed"] = json!(s);
        }
        b.to_string()
    };
    let mut unseeded = Vec::new();
    for _ in 0..3 {
        let (c, body) = http(addr, "POST", "/v1/chat/completions", &sampled(None)).await;
        assert_eq!(c, 200, "{body}");
        unseeded.push(answer_text(&body, false, true));
    }
    assert!(
        unseeded[0] != unseeded[1] || unseeded[1] != unseeded[2],
        "three unseeded samples were identical: {unseeded:?}"
    );
    let (_, a) = http(addr, "POST", "/v1/chat/completions", &sampled(Some(7))).await;
    let (_, b) = http(addr, "POST", "/v1/chat/completions", &sampled(Some(7))).await;
    assert_eq!(answer_text(&a, false, true), answer_text(&b, false, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_state_leaks_between_concurrent_requests() {
    let d = tempfile::tempdir().expect("tmp");
    let addr = start(d.path()).await;
    let prompts = ["the cat", "a warm dog", "the sun and the rain", "blue"];
    let steers: [Option<(&str, f32)>; 3] = [None, Some(("love", 8.0)), Some(("canary", 400.0))];
    // References: one request at a time.
    let mut cases = Vec::new();
    for p in prompts {
        for s in steers {
            let (c, body) = http(
                addr,
                "POST",
                "/v1/chat/completions",
                &chat_body(p, s, false),
            )
            .await;
            assert_eq!(c, 200, "{body}");
            cases.push((p, s, answer_text(&body, false, true)));
        }
    }
    // The canary's effect is real: it changes every answer it touches.
    for chunk in cases.chunks(3) {
        assert_ne!(
            chunk[2].2, chunk[0].2,
            "the canary vector changes {:?}",
            chunk[0].0
        );
    }
    // The storm: all together, twice each (streaming and not), with clients that leave
    // mid-stream, malformed bodies, and a vector deleted meanwhile.
    let mut tasks = Vec::new();
    for (i, (p, s, want)) in cases.iter().cloned().enumerate() {
        for stream in [false, true] {
            let want = want.clone();
            tasks.push(tokio::spawn(async move {
                let (c, body) = http(
                    addr,
                    "POST",
                    "/v1/chat/completions",
                    &chat_body(p, s, stream),
                )
                .await;
                assert_eq!(c, 200, "{body}");
                let got = answer_text(&body, stream, true);
                assert_eq!(got, want, "case {i} ({p:?}, {s:?}, stream {stream})");
            }));
        }
        tasks.push(tokio::spawn(async move {
            // A client that reads the headers and leaves.
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let body = chat_body("the cat", Some(("canary", 400.0)), true);
            let req = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.expect("write");
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await;
        }));
        tasks.push(tokio::spawn(async move {
            let (c, _) = http(addr, "POST", "/v1/chat/completions", "{\"messages\": [").await;
            assert_eq!(c, 400);
        }));
    }
    tasks.push(tokio::spawn(async move {
        let (c, _) = http(addr, "DELETE", "/v1/pragma/vectors/scratch", "").await;
        assert_eq!(c, 200);
    }));
    for t in tasks {
        t.await.expect("task");
    }
    // Afterwards an unsteered request equals the baseline exactly.
    let (_, body) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat_body("the cat", None, false),
    )
    .await;
    assert_eq!(answer_text(&body, false, true), cases[0].2);
    let (c, body) = http(addr, "GET", "/v1/pragma/vectors", "").await;
    assert_eq!(c, 200);
    assert!(
        !body.contains("scratch") && body.contains("canary"),
        "{body}"
    );
    let (c, _) = http(addr, "DELETE", "/v1/pragma/vectors/scratch", "").await;
    assert_eq!(c, 404);
    // The storm was decoded in shared batches (mixed prompt lengths, grouped by steering).
    let (_, body) = http(addr, "GET", "/v1/pragma/stats", "").await;
    let st: Value = serde_json::from_str(&body).expect("stats");
    println!("engine: {st}");
    assert!(st["max_batch_rows"].as_u64().expect("rows") > 1, "{st}");
    // Steered and unsteered rows shared decode steps.
    assert!(st["max_batch_groups"].as_u64().expect("groups") > 1, "{st}");
    // Whether requests joined mid-decode depends on timing (the tiny model decodes a
    // whole answer faster than HTTP delivers the next request); joining is proved
    // deterministically in pragma-model's continuous_batching test.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn monitors_score_every_generated_token_under_the_requests_steering() {
    let d = tempfile::tempdir().expect("tmp");
    let addr = start(d.path()).await;
    let body = |steer: Option<f32>, stream: bool| {
        let mut b = json!({"messages": [{"role": "user", "content": "the cat"}],
                           "max_tokens": 10, "temperature": 0, "stream": stream,
                           "pragma": {"monitor": ["dir"]}});
        if let Some(s) = steer {
            b["pragma"]["steer"] = json!([{"vector": "love", "scale": s, "positions": "all"}]);
        }
        b.to_string()
    };
    let scores = |v: &Value| -> Vec<f64> {
        v["pragma"]["monitor_scores"]["dir"]
            .as_array()
            .expect("scores")
            .iter()
            .map(|t| t["score"].as_f64().expect("score"))
            .collect()
    };
    let (c, plain) = http(addr, "POST", "/v1/chat/completions", &body(None, false)).await;
    assert_eq!(c, 200, "{plain}");
    let plain: Value = serde_json::from_str(&plain).expect("json");
    let n = plain["usage"]["completion_tokens"].as_u64().expect("n") as usize;
    let s0 = scores(&plain);
    assert_eq!(s0.len(), n, "one score per generated token");
    let p = plain["pragma"]["monitor_scores"]["dir"][0]["probability"]
        .as_f64()
        .expect("logistic probability");
    assert!((p - 1.0 / (1.0 + (-s0[0]).exp())).abs() < 1e-9);
    // Streaming: the last chunk carries the same scores.
    let (_, streamed) = http(addr, "POST", "/v1/chat/completions", &body(None, true)).await;
    let last = streamed
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| *l != "[DONE]")
        .map(|l| serde_json::from_str::<Value>(l).expect("chunk"))
        .rfind(|v| v.get("pragma").is_some())
        .expect("a chunk with the pragma field");
    assert_eq!(scores(&last), s0);
    // Adding the probe's own direction raises its scores.
    let (_, steered) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        &body(Some(8.0), false),
    )
    .await;
    let s1 = scores(&serde_json::from_str(&steered).expect("json"));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "monitor mean score: unsteered {:.3}, steered {:.3}",
        mean(&s0),
        mean(&s1)
    );
    assert!(mean(&s1) > mean(&s0) + 1.0, "{s0:?} {s1:?}");
    // An unknown probe is refused before any compute.
    let (c, e) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "x"}], "pragma": {"monitor": ["nope"]}}"#,
    )
    .await;
    assert_eq!(c, 400, "{e}");
    assert!(e.contains("no probe 'nope'"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_input_in_a_loop_never_brings_the_server_down() {
    let d = tempfile::tempdir().expect("tmp");
    let addr = start(d.path()).await;
    // Truncations and byte flips of a valid body, wrong types in every field.
    let good = chat_body("the cat", Some(("love", 2.0)), false);
    let mut bodies: Vec<String> = (0..good.len())
        .step_by(3)
        .map(|i| good[..i].to_string())
        .collect();
    for (i, b) in good.bytes().enumerate().step_by(5) {
        let mut v = good.clone().into_bytes();
        v[i] = b.wrapping_add(1 + (i % 7) as u8);
        bodies.push(String::from_utf8_lossy(&v).into_owned());
    }
    for field in [
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "pragma",
        "stream",
    ] {
        for bad in ["null", "[]", "{}", "-1", "1e400", "\"x\"", "[[[]]]"] {
            bodies.push(format!(
                r#"{{"messages": [{{"role": "user", "content": "hi"}}], "{field}": {bad}}}"#
            ));
        }
    }
    let mut codes = std::collections::BTreeMap::new();
    for b in &bodies {
        for path in ["/v1/chat/completions", "/v1/completions"] {
            let (c, _) = http(addr, "POST", path, b).await;
            assert!(c == 200 || c == 400 || c == 404, "{path} {b:?}: {c}");
            *codes.entry(c).or_insert(0) += 1;
        }
    }
    println!("{} malformed requests: {codes:?}", 2 * bodies.len());
    assert!(codes.get(&400).copied().unwrap_or(0) > bodies.len());
    // Still serving, and still exact.
    let (c, body) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat_body("the cat", None, false),
    )
    .await;
    assert_eq!(c, 200, "{body}");
}

/// `pragma.capture`, `pragma.sae_latents`, SAE-latent steering and `POST
/// /v1/pragma/vectors`, checked against the library: the captured activations equal a
/// plain forward over the same tokens, the latents are that SAE's encoding of them, and
/// steering along latent 3 equals steering with its decoder row posted as a vector.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readouts_sae_steering_and_posted_vectors() {
    use pragma_model::hooks::{HookPoint, Hooks};
    let d = tempfile::tempdir().expect("tmp");
    let addr = start(d.path()).await;
    let model = Model::load(
        d.path().join("tiny.gguf").to_str().expect("utf8"),
        &mut |_| {},
    )
    .expect("model");
    let body = |pragma: Value| {
        json!({"prompt": "the cat", "max_tokens": 6, "temperature": 0, "pragma": pragma})
            .to_string()
    };
    let (c, out) = http(addr, "POST", "/v1/completions",
        &body(json!({"capture": ["blocks.1.hook_resid_post"], "sae_latents": [{"sae": "toy", "top_k": 3}],
                     "monitor": ["dir"]}))).await;
    assert_eq!(c, 200, "{out}");
    let v: Value = serde_json::from_str(&out).expect("json");
    let cap = &v["pragma"]["captures"]["blocks.1.hook_resid_post"];
    let got: Vec<Vec<f32>> = serde_json::from_value(cap["values"].clone()).expect("values");
    let n_gen = v["usage"]["completion_tokens"].as_u64().expect("n") as usize;
    assert_eq!(got.len(), n_gen);
    assert_eq!(cap["tokens"].as_array().expect("tokens").len(), n_gen);
    // The reference: the same prompt, greedy, then one plain forward capturing the hook.
    let ids = model
        .tokenizer
        .build_input(
            &pragma_model::input::Prompt::Text("the cat"),
            Default::default(),
        )
        .expect("ids")
        .ids;
    let opts = pragma_model::generate::GenerateOptions {
        max_tokens: 6,
        stop_tokens: model.tokenizer.info.stop_tokens.clone(),
        sampling: Default::default(),
    };
    let (gen, _) = pragma_model::generate::generate_one(
        &model.transformer,
        &ids,
        0,
        &opts,
        &Hooks::new(),
        |_, _| true,
    )
    .expect("gen");
    assert_eq!(gen.len(), n_gen);
    let mut all = ids.clone();
    all.extend(&gen);
    let acts =
        pragma_model::testing::capture_one(&model, &all, HookPoint::ResidPost(1)).expect("capture"); // [t, d]
    let want = acts.narrow(0, ids.len(), n_gen).expect("narrow");
    let want: Vec<Vec<f32>> = want.to_vec2().expect("vec");
    let diff = got
        .iter()
        .flatten()
        .zip(want.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff < 1e-4,
        "captured activations differ from a plain forward by {diff}"
    );
    // The monitor's scores are the probe (w = love's layer-1 direction, b = 0) on them.
    let scores: Vec<f64> = v["pragma"]["monitor_scores"]["dir"]
        .as_array()
        .expect("scores")
        .iter()
        .map(|s| s["score"].as_f64().expect("s"))
        .collect();
    assert_eq!(scores.len(), n_gen);
    // SAE latents: the SAE's own encoding of those activations, top 3, most active first.
    let sae = toy_sae(model.cfg().d_model);
    let z: Vec<Vec<f32>> = sae
        .encode(&candle_core::Tensor::new(want.clone(), &candle_core::Device::Cpu).expect("t"))
        .expect("encode")
        .to_vec2()
        .expect("z");
    let lat = v["pragma"]["sae_latents"]["toy"]
        .as_array()
        .expect("latents");
    assert_eq!(lat.len(), n_gen);
    for (row, got) in z.iter().zip(lat) {
        let mut idx: Vec<usize> = (0..row.len()).filter(|&i| row[i] > 0.0).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        idx.truncate(3);
        let got_idx: Vec<usize> = got["latents"]
            .as_array()
            .expect("l")
            .iter()
            .map(|l| l["index"].as_u64().expect("i") as usize)
            .collect();
        assert_eq!(got_idx, idx);
    }
    // Steering along latent 3 = steering with its decoder row, posted as a vector.
    let row3: Vec<f32> = sae.w_dec.get(3).expect("row").to_vec1().expect("v");
    let post = json!({"name": "latent3", "directions": {"1": row3}}).to_string();
    let (c, out) = http(addr, "POST", "/v1/pragma/vectors", &post).await;
    assert_eq!(c, 201, "{out}");
    let (c, out) = http(addr, "POST", "/v1/pragma/vectors", &post).await;
    assert_eq!(c, 409, "a taken name: {out}");
    let steer = |vector: &str| {
        body(json!({"steer": [{"vector": vector, "scale": 6.0, "positions": "all"}]}))
    };
    let (_, by_latent) = http(addr, "POST", "/v1/completions", &steer("sae:toy:3")).await;
    let (_, by_post) = http(addr, "POST", "/v1/completions", &steer("latent3")).await;
    let (_, plain) = http(addr, "POST", "/v1/completions", &body(json!({}))).await;
    let (a, b, p) = (
        answer_text(&by_latent, false, false),
        answer_text(&by_post, false, false),
        answer_text(&plain, false, false),
    );
    assert_eq!(a, b);
    assert_ne!(a, p, "steering along the latent changed nothing");
    // A prompt of token ids, or a one-element array, answers as the text does.
    for prompt in [json!(ids), json!([ids]), json!(["the cat"])] {
        let (c, out) = http(
            addr,
            "POST",
            "/v1/completions",
            &json!({"prompt": prompt, "max_tokens": 6, "temperature": 0}).to_string(),
        )
        .await;
        assert_eq!(c, 200, "{out}");
        assert_eq!(answer_text(&out, false, false), p, "prompt {prompt}");
    }
    // Listed, and bad input is a 400 naming the problem, before any compute.
    let (_, list) = http(addr, "GET", "/v1/pragma/vectors", "").await;
    assert!(list.contains("latent3"), "{list}");
    let (_, saes) = http(addr, "GET", "/v1/pragma/saes", "").await;
    assert!(
        saes.contains("\"toy\"") && saes.contains("blocks.1.hook_resid_post"),
        "{saes}"
    );
    for (path, bad, needle) in [
        (
            "/v1/pragma/vectors",
            json!({"name": "x", "directions": {"9": [0.0]}}),
            "layer '9'",
        ),
        (
            "/v1/pragma/vectors",
            json!({"name": "x", "directions": {"1": [0.0, 1.0]}}),
            "expected 32 finite numbers",
        ),
        (
            "/v1/pragma/vectors",
            json!({"name": "a b", "directions": {"1": [0.0]}}),
            "name 'a b'",
        ),
        (
            "/v1/pragma/vectors",
            json!({"name": "x", "directions": {"1": [0.0]}, "extra": 1}),
            "unknown field",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "pragma": {"capture": ["blocks.0.attn.hook_pattern"]}}),
            "not a d_model-wide",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "pragma": {"sae_latents": [{"sae": "nope"}]}}),
            "no SAE 'nope'",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "pragma": {"steer": [{"vector": "sae:toy:99", "scale": 1}]}}),
            "expected 0 to 15",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "pragma": {"steer": [{"vector": "sae:toy:1", "scale": 1, "layers": [1]}]}}),
            "layers does not apply",
        ),
    ] {
        let (c, out) = http(addr, "POST", path, &bad.to_string()).await;
        assert_eq!(c, 400, "{bad}: {out}");
        assert!(out.contains(needle), "{bad}: expected '{needle}' in {out}");
    }
}

/// Send raw bytes, optionally half-closing the write side after them; (status, body).
async fn raw(addr: SocketAddr, bytes: &[u8], half_close: bool) -> (u16, String) {
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // Read while writing: a server may answer (413) and close before a large body is
    // all sent, and then the write fails but the answer is already on its way.
    let (mut rd, mut wr) = s.into_split();
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), rd.read_to_end(&mut buf))
            .await;
        buf
    });
    if wr.write_all(bytes).await.is_ok() && half_close {
        let _ = wr.shutdown().await;
    }
    let buf = reader.await.expect("reader");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Adversarial clients on loopback, all at once, while a well-formed client keeps
/// asking: 200 slow clients trickling their headers, bodies over the 1 MiB limit (sent
/// whole, and announced but cut off), half-closed connections, invalid UTF-8, JSON
/// nested 100 000 deep, and broken request lines. Each bad request gets a 4xx (413 for
/// a body over the limit) or its connection closed, and every well-formed request during
/// the storm is answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adversarial_clients_never_stop_well_formed_requests() {
    let d = tempfile::tempdir().expect("tmp");
    let addr = start(d.path()).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let good = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut codes = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = chat_body("the cat", None, false);
                codes.push(http(addr, "POST", "/v1/chat/completions", &body).await.0);
            }
            codes
        })
    };
    // Slow clients: headers a byte at a time, never finished while the storm lasts.
    let slow: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                    return;
                };
                for b in b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le".iter() {
                    if s.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
                }
            })
        })
        .collect();
    let mut bad: Vec<(&str, Vec<u8>, bool)> = Vec::new();
    let big = format!(
        r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "x".repeat(3 << 20)
    );
    bad.push((
        "oversized body",
        post("/v1/chat/completions", big.as_bytes()),
        false,
    ));
    let mut cut = post("/v1/completions", big.as_bytes());
    cut.truncate(1 << 20);
    bad.push(("oversized body, cut off", cut, true));
    bad.push((
        "half-closed",
        post(
            "/v1/completions",
            br#"{"prompt": "the cat", "max_tokens": 2}"#,
        ),
        true,
    ));
    bad.push((
        "invalid UTF-8",
        post(
            "/v1/chat/completions",
            b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\xc3\"}]}",
        ),
        false,
    ));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    bad.push((
        "nested arrays",
        post("/v1/chat/completions", deep.as_bytes()),
        false,
    ));
    let deep = format!(
        r#"{{"messages": [{{"role": "user", "content": "x"}}], "pragma": {}1{}}}"#,
        "{\"a\": ".repeat(50_000),
        "}".repeat(50_000)
    );
    bad.push((
        "nested objects",
        post("/v1/chat/completions", deep.as_bytes()),
        false,
    ));
    bad.push(("broken request line", b"POST\r\n\r\n".to_vec(), false));
    bad.push((
        "header without a colon",
        b"POST /v1/completions HTTP/1.1\r\nHost\r\n\r\n".to_vec(),
        false,
    ));
    bad.push((
        "negative content length",
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".to_vec(),
        false,
    ));
    for round in 0..3 {
        for (what, bytes, half) in &bad {
            let (c, text) = raw(addr, bytes, *half).await;
            let ok = match *what {
                // A client that half-closes is taken as gone (hyper's default, as for a
                // client leaving mid-stream): answered, or its request dropped.
                "half-closed" => c == 200 || c == 0,
                "oversized body" => c == 413,
                _ => (400..500).contains(&c) || c == 0,
            };
            assert!(
                ok,
                "round {round}, {what}: {c} {}",
                &text[..text.len().min(300)]
            );
        }
    }
    // The storm lasts until the slow clients have trickled all they send (about 2 s).
    for h in slow {
        h.await.expect("slow client");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let codes = good.await.expect("good client");
    println!("{} well-formed requests during the storm", codes.len());
    assert!(codes.len() >= 5, "{codes:?}");
    assert!(codes.iter().all(|&c| c == 200), "{codes:?}");
    // And after it.
    let (c, body) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat_body("the cat", None, false),
    )
    .await;
    assert_eq!(c, 200, "{body}");
}
