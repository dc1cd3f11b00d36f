//! `pragma sae train|eval|latents` and `generate/trace --sae` end to end on a tiny model,
//! and the bad-input errors.

mod common;

use std::path::Path;

use common::{pragma, tiny_gguf};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

/// A tiny model, a store of `hook` over a small corpus, and a trained topk SAE.
fn setup(d: &Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let m = tiny_gguf(d, 4);
    let corpus = d.join("c.txt");
    std::fs::write(&corpus, common::cat_lines(120)).expect("w");
    let store = d.join("store");
    let (ok, _, err) = pragma(&[
        "cache",
        s(&m),
        "--data",
        s(&corpus),
        "--lines",
        "--hooks",
        "blocks.1.hook_resid_post",
        "--ctx",
        "64",
        "--out",
        s(&store),
    ]);
    assert!(ok, "{err}");
    let sae = d.join("sae");
    let (ok, out, err) = pragma(&[
        "sae",
        "train",
        "--store",
        s(&store),
        "--hook",
        "blocks.1.hook_resid_post",
        "--arch",
        "topk",
        "--k",
        "4",
        "--d-sae",
        "64",
        "--tokens",
        "20000",
        "--batch-tokens",
        "256",
        "--lr",
        "3e-3",
        "--out",
        s(&sae),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("trained topk SAE (64 latents"), "{out}");
    (s(&m).to_string(), store, sae)
}

#[test]
fn train_eval_latents_and_splice() {
    let d = tempfile::tempdir().expect("tmp");
    let (m, store, sae) = setup(d.path());
    for f in [
        "cfg.json",
        "sae_weights.safetensors",
        "sparsity.safetensors",
        "log.jsonl",
        "loss.svg",
    ] {
        assert!(sae.join(f).exists(), "{f}");
    }
    // Running the same command again finds the run finished and reports it.
    let (ok, out, err) = pragma(&[
        "sae",
        "train",
        "--store",
        s(&store),
        "--hook",
        "blocks.1.hook_resid_post",
        "--arch",
        "topk",
        "--k",
        "4",
        "--d-sae",
        "64",
        "--tokens",
        "20000",
        "--batch-tokens",
        "256",
        "--lr",
        "3e-3",
        "--json",
        "--out",
        s(&sae),
    ]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(r["steps"], 78);

    // Eval on the store, with the loss metrics through the model.
    let (ok, out, err) = pragma(&[
        "sae",
        "eval",
        &m,
        "--sae",
        s(&sae),
        "--store",
        s(&store),
        "--ce-sequences",
        "8",
        "--json",
    ]);
    assert!(ok, "{err}");
    let e: serde_json::Value = serde_json::from_str(&out).expect("json");
    let rec = &e["reconstruction"];
    assert!(
        (rec["l0"].as_f64().expect("l0") - 4.0).abs() < 1e-9,
        "{rec}"
    );
    let ev = rec["explained_variance"].as_f64().expect("ev");
    assert!(ev > 0.5 && ev <= 1.0, "{ev}");
    let l = &e["loss"];
    let (clean, with, zero) = (
        l["ce_clean"].as_f64().expect("c"),
        l["ce_with_sae"].as_f64().expect("s"),
        l["ce_zero_ablated"].as_f64().expect("z"),
    );
    let score = l["ce_loss_score"].as_f64().expect("score");
    assert!(((zero - with) / (zero - clean) - score).abs() < 1e-9);
    assert!(sae.join("eval.json").exists() && sae.join("eval.md").exists());

    // Or on a corpus, cached at the SAE's hook first.
    let text = d.path().join("held.txt");
    std::fs::write(
        &text,
        "the wet cat sat\n\nthe old mat is warm\n\na big red cat",
    )
    .expect("w");
    let ev = d.path().join("ev");
    let (ok, out, err) = pragma(&[
        "sae",
        "eval",
        &m,
        "--sae",
        s(&sae),
        "--data",
        s(&text),
        "--ce-sequences",
        "2",
        "--json",
        "--out",
        s(&ev),
    ]);
    assert!(ok, "{err}");
    let e: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(
        e["reconstruction"]["n_tokens"].as_u64().expect("n") > 5,
        "{e}"
    );
    assert!(ev.join("eval-store/manifest.json").exists());

    // Latents per token.
    let (ok, out, err) = pragma(&[
        "sae",
        "latents",
        &m,
        "--sae",
        s(&sae),
        "--text",
        "the red cat",
        "--json",
    ]);
    assert!(ok, "{err}");
    let lat: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(lat[1]["l0"], 4, "{lat}");

    // Splicing: with the error term kept and no edits the output is unchanged; the
    // reconstruction alone or a steered latent changes the run.
    let gen = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            m.as_str(),
            "--prompt",
            "the red cat",
            "--max-tokens",
            "6",
        ];
        args.extend_from_slice(extra);
        let (ok, out, err) = pragma(&args);
        assert!(ok, "{err}");
        out
    };
    let plain = gen(&[]);
    assert_eq!(gen(&["--sae", s(&sae), "--sae-error"]), plain);
    let steered = gen(&["--sae", s(&sae), "--sae-error", "--sae-add", "3:50"]);
    assert_ne!(steered, plain, "a large latent edit changes the output");
    let (ok, _, err) = pragma(&[
        "generate",
        &m,
        "--prompt",
        "x",
        "--sae",
        s(&sae),
        "--sae-add",
        "64:1",
    ]);
    assert!(!ok && err.contains("latent 64 out of range"), "{err}");

    // Dashboards: the index and one card per latent, with contexts and explanations.
    let dash = d.path().join("dash");
    let expl = d.path().join("expl.json");
    std::fs::write(&expl, r#"{"3": "fires on cats"}"#).expect("w");
    let (ok, out, err) = pragma(&[
        "sae",
        "dashboard",
        &m,
        "--sae",
        s(&sae),
        "--store",
        s(&store),
        "--explanations",
        s(&expl),
        "--out",
        s(&dash),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("dashboards for 64 latents"), "{out}");
    let index = std::fs::read_to_string(dash.join("index.html")).expect("index");
    assert!(
        index.contains("fires on cats") && !index.contains("http"),
        "offline page"
    );
    let card = std::fs::read_to_string(dash.join("latents/00003.js")).expect("card");
    let v: serde_json::Value = serde_json::from_str(
        card.trim()
            .trim_start_matches("window.LATENT = ")
            .trim_end_matches(';'),
    )
    .expect("json");
    assert_eq!(v["explanation"], "fires on cats");
    let top = v["top"].as_array().expect("top");
    if let Some(e) = top.first() {
        let c = e["c"].as_u64().expect("c") as usize;
        assert_eq!(
            e["a"][c].as_f64(),
            e["v"].as_f64(),
            "the centre token carries the value"
        );
    }
    assert_eq!(v["promotes"].as_array().expect("p").len(), 10);

    // trace --sae saves the latents.
    let tr = d.path().join("t.safetensors");
    let (ok, _, err) = pragma(&[
        "trace",
        &m,
        "--prompt",
        "the red cat",
        "--hooks",
        "hook_embed",
        "--sae",
        s(&sae),
        "--out",
        s(&tr),
    ]);
    assert!(ok, "{err}");
    let bytes = std::fs::read(&tr).expect("r");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let t = st
        .tensor("sae.blocks.1.hook_resid_post.latents")
        .expect("latents");
    assert_eq!(t.shape()[2], 64);
}

#[test]
fn bad_sae_input_is_a_clear_error() {
    let d = tempfile::tempdir().expect("tmp");
    let (m, store, sae) = setup(d.path());
    let run = |args: &[&str]| pragma(args);
    // A hook the store does not have.
    let (ok, _, err) = run(&[
        "sae",
        "train",
        "--store",
        s(&store),
        "--hook",
        "blocks.0.hook_resid_post",
        "--out",
        s(&d.path().join("x")),
    ]);
    assert!(!ok && err.contains("blocks.0.hook_resid_post"), "{err}");
    // k = 0 and k >= d_sae.
    for k in ["0", "64"] {
        let (ok, _, err) = run(&[
            "sae",
            "train",
            "--store",
            s(&store),
            "--hook",
            "blocks.1.hook_resid_post",
            "--k",
            k,
            "--d-sae",
            "64",
            "--out",
            s(&d.path().join(format!("k{k}"))),
        ]);
        assert!(!ok && err.contains("expected 0 < k < d_sae"), "{err}");
    }
    // An unknown architecture in cfg.json.
    let bad = d.path().join("bad");
    std::fs::create_dir_all(&bad).expect("d");
    let w_file = "sae_weights.safetensors";
    std::fs::copy(sae.join(w_file), bad.join(w_file)).expect("cp");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sae.join("cfg.json")).expect("r"))
            .expect("j");
    cfg["architecture"] = serde_json::json!("gated");
    std::fs::write(bad.join("cfg.json"), cfg.to_string()).expect("w");
    let (ok, _, err) = run(&["sae", "latents", &m, "--sae", s(&bad), "--text", "x"]);
    assert!(!ok && err.contains("architecture 'gated'"), "{err}");
    // A truncated weights file.
    cfg["architecture"] = serde_json::json!("topk");
    std::fs::write(bad.join("cfg.json"), cfg.to_string()).expect("w");
    let w = std::fs::read(sae.join("sae_weights.safetensors")).expect("r");
    std::fs::write(bad.join("sae_weights.safetensors"), &w[..w.len() / 2]).expect("w");
    let (ok, _, err) = run(&["sae", "latents", &m, "--sae", s(&bad), "--text", "x"]);
    assert!(!ok && err.contains("truncated or corrupt"), "{err}");
    // An SAE whose d_in does not match the model's hook.
    cfg["d_in"] = serde_json::json!(16);
    cfg["metadata"]["hook_name"] = serde_json::json!("blocks.1.hook_resid_post");
    std::fs::write(bad.join("cfg.json"), cfg.to_string()).expect("w");
    std::fs::write(bad.join("sae_weights.safetensors"), &w).expect("w");
    let (ok, _, err) = run(&["sae", "latents", &m, "--sae", s(&bad), "--text", "x"]);
    assert!(!ok && err.contains("expected [16, 64]"), "{err}");
    // Not an SAE folder at all.
    let (ok, _, err) = run(&["sae", "latents", &m, "--sae", s(&store), "--text", "x"]);
    assert!(!ok && err.contains("cfg.json"), "{err}");
}

/// SAE training reads a store without its control-token rows, mapping its own row
/// numbers to the store's through the list of control rows only: every ordinary row once,
/// in store order, none of the others.
#[test]
fn training_rows_are_the_store_rows_of_ordinary_tokens() {
    use pragma_methods::sae::training::{Activations, StoreHook};
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny_gguf(d.path(), 4);
    let corpus = d.path().join("c.txt");
    let docs: Vec<String> = (0..40).map(|i| format!("doc {i} has some words")).collect();
    std::fs::write(&corpus, docs.join("\n")).expect("w");
    let store = d.path().join("store");
    let (ok, _, err) = pragma(&[
        "cache",
        s(&m),
        "--data",
        s(&corpus),
        "--lines",
        "--hooks",
        "blocks.1.hook_resid_post",
        "--shard-tokens",
        "50",
        "--ctx",
        "64",
        "--out",
        s(&store),
    ]);
    assert!(ok, "{err}");
    let st = pragma_store::Store::open(&store).expect("open");
    assert!(st.n_shards() > 2, "several shards: {}", st.n_shards());
    let specials = &st.manifest.model.special_tokens;
    assert!(!specials.is_empty(), "the tiny model has control tokens");
    let table = st.tokens().expect("tokens");
    let ordinary: Vec<u64> = (0..table.token.len() as u64)
        .filter(|&r| !specials.contains(&table.token[r as usize]))
        .collect();
    assert!(
        ordinary.len() < table.token.len(),
        "each document opens with BOS"
    );
    let h = StoreHook::new(&st, "blocks.1.hook_resid_post").expect("hook");
    assert_eq!(h.n_tokens(), ordinary.len() as u64);
    assert_eq!(h.excluded as usize, table.token.len() - ordinary.len());
    let all: Vec<u64> = (0..h.n_tokens()).collect();
    assert_eq!(
        all.iter().map(|&r| h.source_row(r)).collect::<Vec<_>>(),
        ordinary
    );
    let got = h.gather(&all).expect("gather");
    let want: Vec<f32> = st
        .gather("blocks.1.hook_resid_post", &ordinary)
        .expect("g")
        .flatten_all()
        .expect("f")
        .to_vec1()
        .expect("v");
    assert_eq!(got, want);
}
