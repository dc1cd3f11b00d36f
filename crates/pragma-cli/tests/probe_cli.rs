//! `pragma probe train`, `probe score` and `generate --monitor` end to end on a tiny model,
//! and their bad-input errors.

mod common;

use common::{pragma, tiny_gguf};

fn toy(n: usize) -> String {
    (0..n)
        .map(|i| {
            let (c, l) = if i % 2 == 0 { ("x", 1) } else { ("o", 0) };
            format!(
                "{{\"text\": \"{} {c}{c}\", \"label\": {l}}}\n",
                ["ab", "cd", "ef"][i % 3]
            )
        })
        .collect()
}

#[test]
fn train_score_and_monitor() {
    let d = tempfile::tempdir().expect("tmp");
    let model = tiny_gguf(d.path(), 4);
    let m = model.to_str().expect("utf8");
    let data = d.path().join("toy.jsonl");
    std::fs::write(&data, toy(40)).expect("w");
    std::fs::write(
        d.path().join("toy.meta.json"),
        r#"{"question": "x?", "positive": 1}"#,
    )
    .expect("w");
    let out = d.path().join("run");
    let o = out.to_str().expect("o");
    let (ok, stdout, err) = pragma(&[
        "probe",
        "train",
        m,
        "--data",
        data.to_str().expect("d"),
        "--out",
        o,
        "--yes",
        "y",
        "--no",
        "n",
        "--save-features",
        "--bootstrap",
        "100",
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("| baseline |") && stdout.contains("prompting"),
        "{stdout}"
    );
    for f in [
        "report.md",
        "results.json",
        "sweep.svg",
        "probe.safetensors",
        "probe-diff-means.safetensors",
        "features.safetensors",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // The plot is whole (drawn into memory, then written atomically).
    let svg = std::fs::read_to_string(out.join("sweep.svg")).expect("svg");
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>") && svg.contains("test AUROC"),
        "{svg}"
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).expect("r"))
            .expect("json");
    assert_eq!(
        results["layers"].as_array().expect("layers").len(),
        pragma_model::testing::tiny_config(pragma_model::Arch::Llama).n_layers
    );
    assert_eq!(results["n_test"], 8);
    // Reusing the saved activations gives the same results.
    let out2 = d.path().join("run2");
    let (ok, _, err) = pragma(&[
        "probe",
        "train",
        m,
        "--data",
        data.to_str().expect("d"),
        "--out",
        out2.to_str().expect("o"),
        "--yes",
        "y",
        "--no",
        "n",
        "--bootstrap",
        "100",
        "--features",
        out.join("features.safetensors").to_str().expect("f"),
    ]);
    assert!(ok, "{err}");
    let r2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out2.join("results.json")).expect("r"))
            .expect("json");
    assert_eq!(results["layers"], r2["layers"]);
    // Activations from a store cached from the same dataset give the same probes.
    let store = d.path().join("store");
    let (ok, _, err) = pragma(&[
        "cache",
        m,
        "--data",
        data.to_str().expect("d"),
        "--hooks",
        "blocks.*.hook_resid_post",
        "--dtype",
        "f32",
        "--ctx",
        "64",
        "--out",
        store.to_str().expect("s"),
    ]);
    assert!(ok, "{err}");
    let out3 = d.path().join("run3");
    let (ok, _, err) = pragma(&[
        "probe",
        "train",
        m,
        "--data",
        data.to_str().expect("d"),
        "--out",
        out3.to_str().expect("o"),
        "--yes",
        "y",
        "--no",
        "n",
        "--bootstrap",
        "100",
        "--store",
        store.to_str().expect("s"),
    ]);
    assert!(ok, "{err}");
    let r3: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out3.join("results.json")).expect("r"))
            .expect("json");
    for (a, b) in results["layers"]
        .as_array()
        .expect("l")
        .iter()
        .zip(r3["layers"].as_array().expect("l"))
    {
        let (x, y) = (
            a["logistic"]["test_auroc"].as_f64().expect("a"),
            b["logistic"]["test_auroc"].as_f64().expect("b"),
        );
        assert!(
            (x - y).abs() < 0.02,
            "store vs direct activations: {x} vs {y}"
        );
    }
    // A store of another dataset is refused.
    let other = d.path().join("other.jsonl");
    std::fs::write(&other, toy(30)).expect("w");
    let (ok, _, err) = pragma(&[
        "probe",
        "train",
        m,
        "--data",
        other.to_str().expect("d"),
        "--out",
        out3.to_str().expect("o"),
        "--store",
        store.to_str().expect("s"),
    ]);
    assert!(
        !ok && err.contains("it holds 40 documents, the dataset has 30"),
        "{err}"
    );
    // As is one with as many documents but other texts: the stored ids are checked.
    std::fs::write(&other, toy(40).replace("\"ab ", "\"ba ")).expect("w");
    let (ok, _, err) = pragma(&[
        "probe",
        "train",
        m,
        "--data",
        other.to_str().expect("d"),
        "--out",
        out3.to_str().expect("o"),
        "--store",
        store.to_str().expect("s"),
    ]);
    assert!(!ok && err.contains("differ from the"), "{err}");
    // Features from another position are refused.
    let (ok, _, err) = pragma(&[
        "probe",
        "train",
        m,
        "--data",
        data.to_str().expect("d"),
        "--out",
        out2.to_str().expect("o"),
        "--position",
        "mean",
        "--features",
        out.join("features.safetensors").to_str().expect("f"),
    ]);
    assert!(!ok && err.contains("position"), "{err}");

    let probe = out.join("probe.safetensors");
    let p = probe.to_str().expect("p");
    let json = d.path().join("scores.json");
    let (ok, stdout, err) = pragma(&[
        "probe",
        "score",
        m,
        "--probe",
        p,
        "--text",
        "ab xx",
        "--json",
        json.to_str().expect("j"),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("last token: score"), "{stdout}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("r")).expect("j");
    assert_eq!(
        s["tokens"].as_array().expect("t").len(),
        5,
        "one score per token after BOS"
    );

    let mon = d.path().join("monitor.json");
    let (ok, stdout, err) = pragma(&[
        "generate",
        m,
        "--prompt",
        "ab",
        "--max-tokens",
        "6",
        "--monitor",
        p,
        "--monitor-out",
        mon.to_str().expect("m"),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("monitor "), "{stdout}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mon).expect("r")).expect("j");
    let toks = s[0]["tokens"].as_array().expect("tokens");
    assert!(
        toks.iter().any(|t| t["generated"] == true),
        "generated tokens are scored"
    );
    assert!(toks.iter().all(|t| t["probability"]
        .as_f64()
        .is_some_and(|p| (0.0..=1.0).contains(&p))));
}

#[test]
fn bad_probe_input_is_a_clear_error() {
    let d = tempfile::tempdir().expect("tmp");
    let model = tiny_gguf(d.path(), 4);
    let m = model.to_str().expect("utf8");
    let run = |name: &str, body: &str, extra: &[&str]| {
        let data = d.path().join(name);
        std::fs::write(&data, body).expect("w");
        let mut args = vec![
            "probe",
            "train",
            m,
            "--data",
            data.to_str().expect("d"),
            "--out",
        ];
        let out = d.path().join("out");
        args.push(out.to_str().expect("o"));
        args.extend_from_slice(extra);
        let (ok, _, err) = pragma(&args);
        assert!(!ok, "{name} should fail");
        err
    };
    let e = run(
        "one.jsonl",
        "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\", \"label\": 1}\n",
        &[],
    );
    assert!(e.contains("expected exactly 2 classes"), "{e}");
    let e = run("few.jsonl", &toy(4), &[]);
    assert!(e.contains("too few"), "{e}");
    let e = run(
        "mixed.jsonl",
        "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\", \"label\": true}\n",
        &[],
    );
    assert!(e.contains("mixed.jsonl:2") && e.contains("one type"), "{e}");
    let long = format!(
        "{}{{\"text\": \"{}\", \"label\": 0}}\n",
        toy(20),
        "z".repeat(200)
    );
    let e = run("long.jsonl", &long, &[]);
    assert!(e.contains("longer than the model's context"), "{e}");
    let e = run("ok.jsonl", &toy(20), &["--hooks", "blocks.*.attn.hook_q"]);
    assert!(e.contains("not a residual-width site"), "{e}");
    let e = run("ok.jsonl", &toy(20), &["--c", "0"]);
    assert!(e.contains("positive"), "{e}");
    // A probe file that is not one.
    let (ok, _, err) = pragma(&[
        "probe",
        "score",
        m,
        "--probe",
        model.to_str().expect("m"),
        "--text",
        "a",
    ]);
    assert!(!ok && err.contains("not a safetensors file"), "{err}");
}
