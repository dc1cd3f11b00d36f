//! Helpers shared by the CLI tests: run the binary, write a tiny random model.

#![allow(dead_code)] // each test crate uses a subset

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::quantized::GgmlDType;
use pragma_model::testing::{tiny_config, tiny_weights, write_gguf};
use pragma_model::Arch;

/// Run `pragma args...`: (exit ok, stdout, stderr). Fails the test on a panic message.
pub fn pragma(args: &[&str]) -> (bool, String, String) {
    output(Command::new(env!("CARGO_BIN_EXE_pragma")).args(args))
}

/// Run a prepared `pragma` command (extra environment, another folder): (exit ok,
/// stdout, stderr). Fails the test on a panic message.
pub fn output(c: &mut Command) -> (bool, String, String) {
    let out = c.output().expect("run");
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(!e.contains("panicked"), "{e}");
    (out.status.success(), o, e)
}

/// Run `pragma args...` recorded in the runs database `db` (failing the test unless it
/// succeeds) and return its record, the newest in `db` as `runs list --json` prints it.
pub fn recorded(db: &Path, args: &[&str]) -> serde_json::Value {
    let run = |args: &[&str]| {
        output(
            Command::new(env!("CARGO_BIN_EXE_pragma"))
                .args(args)
                .env("PRAGMA_RUNS_DB", db)
                .env_remove("PRAGMA_NO_RECORD"),
        )
    };
    let (ok, _, err) = run(args);
    assert!(ok, "pragma {}: {err}", args.join(" "));
    let (ok, out, err) = run(&["runs", "list", "--json"]);
    assert!(ok, "{err}");
    let runs: Vec<serde_json::Value> = serde_json::from_str(&out).expect("runs json");
    runs.into_iter().next().expect("a recorded run")
}

/// A tiny random llama written as an f32 GGUF at `dir/tiny.gguf`.
pub fn tiny_gguf(dir: &Path, seed: u64) -> PathBuf {
    let cfg = tiny_config(Arch::Llama);
    let p = dir.join("tiny.gguf");
    write_gguf(
        &p,
        &cfg,
        &tiny_weights(&cfg, seed).expect("w"),
        GgmlDType::F32,
    )
    .expect("gguf");
    p
}

/// A logistic probe trained on the tiny model `m` at blocks.1.hook_resid_post (40 rows:
/// "ab xx" positive, "ab oo" negative), written under `d/probe-run`.
pub fn tiny_probe(d: &Path, m: &Path) -> PathBuf {
    let data = d.join("toy.jsonl");
    let rows: String = (0..40)
        .map(|i| {
            let (c, l) = if i % 2 == 0 { ("x", 1) } else { ("o", 0) };
            format!("{{\"text\": \"ab {c}{c}\", \"label\": {l}}}\n")
        })
        .collect();
    std::fs::write(&data, rows).expect("w");
    let run = d.join("probe-run");
    let s = |p: &Path| p.to_str().expect("utf8").to_string();
    let (ok, _, err) = pragma(&[
        "probe",
        "train",
        &s(m),
        "--data",
        &s(&data),
        "--hooks",
        "blocks.1.hook_resid_post",
        "--bootstrap",
        "10",
        "--yes",
        "a",
        "--no",
        "b",
        "--out",
        &s(&run),
    ]);
    assert!(ok, "{err}");
    run.join("probe.safetensors")
}

/// `n` short lines of text, one document each: "the red cat sat on the warm mat number i".
pub fn cat_lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "the {} cat sat on the {} mat number {i}",
                ["red", "big", "old"][i % 3],
                ["warm", "wet"][i % 2]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
