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
