//! Bad input gets one clear line on stderr, a non-zero exit, and never a panic.
//! One test per case, run against the real `pragma` binary on tiny models.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use pragma_model::testing::{tiny_config, tiny_weights, write_gguf, write_hf};
use pragma_model::Arch;

/// Run pragma; return (exit success, stderr).
fn pragma(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pragma"))
        .args(args)
        .output()
        .expect("run pragma");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "pragma panicked: {stderr}");
    (out.status.success(), stderr)
}

/// Assert failure with an `error:` line containing every fragment.
fn fails_with(args: &[&str], fragments: &[&str]) {
    let (ok, err) = pragma(args);
    assert!(!ok, "expected failure for {args:?}, stderr: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {err}"));
    for f in fragments {
        assert!(line.contains(f), "error line {line:?} lacks {f:?}");
    }
}

fn tiny_gguf(dir: &Path) -> PathBuf {
    let cfg = tiny_config(Arch::Llama);
    let p = dir.join("tiny.gguf");
    write_gguf(&p, &cfg, &tiny_weights(&cfg, 1).expect("w"), GgmlDType::F32).expect("write");
    p
}

fn tiny_hf(dir: &Path) -> PathBuf {
    let cfg = tiny_config(Arch::Llama);
    let p = dir.join("hf");
    write_hf(&p, &cfg, &tiny_weights(&cfg, 1).expect("w")).expect("write");
    p
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

#[test]
fn missing_file() {
    fails_with(
        &["info", "/nonexistent/model.gguf"],
        &["not found", "expected a .gguf file"],
    );
}

#[test]
fn wrong_magic() {
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path().join("x.gguf");
    std::fs::write(&p, b"PK\x03\x04 this is a zip, not a model").expect("write");
    fails_with(
        &["info", s(&p)],
        &["not a GGUF file", "expected magic", "PK"],
    );
}

#[test]
fn truncated_gguf() {
    let d = tempfile::tempdir().expect("tmp");
    let p = tiny_gguf(d.path());
    let bytes = std::fs::read(&p).expect("read");
    std::fs::write(&p, &bytes[..bytes.len() * 2 / 3]).expect("truncate");
    fails_with(&["info", s(&p)], &["truncated", "needs", "bytes"]);
    // Cut inside the header too.
    std::fs::write(&p, &bytes[..200]).expect("truncate");
    fails_with(&["info", s(&p)], &["corrupt or truncated GGUF"]);
}

#[test]
fn unknown_architecture() {
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path().join("falcon.gguf");
    let arch = Value::String("falcon".into());
    let mut f = std::fs::File::create(&p).expect("create");
    candle_core::quantized::gguf_file::write(&mut f, &[("general.architecture", &arch)], &[])
        .expect("write");
    fails_with(
        &["info", s(&p)],
        &[
            "unsupported architecture 'falcon'",
            "expected one of",
            "llama",
        ],
    );
}

#[test]
fn gemma_without_its_sliding_window_metadata() {
    // A Gemma 3 GGUF whose `gemma3.attention.sliding_window` is missing: the loader
    // names the key instead of guessing a window.
    let d = tempfile::tempdir().expect("tmp");
    let mut cfg = tiny_config(Arch::Gemma3);
    cfg.gemma = None; // the writer then leaves out the Gemma keys
    let p = d.path().join("gemma.gguf");
    write_gguf(&p, &cfg, &tiny_weights(&cfg, 1).expect("w"), GgmlDType::F32).expect("write");
    fails_with(&["info", s(&p)], &["gemma3.attention.sliding_window"]);
}

#[test]
fn unsupported_dtype() {
    // A hand-made GGUF v3 with one tensor of ggml type 16 (IQ2_XXS).
    let mut b: Vec<u8> = Vec::new();
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(1u64.to_le_bytes()); // kv
    let key = b"general.architecture";
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key);
    b.extend(8u32.to_le_bytes()); // string
    b.extend(5u64.to_le_bytes());
    b.extend(b"llama");
    let name = b"token_embd.weight";
    b.extend((name.len() as u64).to_le_bytes());
    b.extend(name);
    b.extend(2u32.to_le_bytes());
    b.extend(256u64.to_le_bytes());
    b.extend(4u64.to_le_bytes());
    b.extend(16u32.to_le_bytes()); // IQ2_XXS
    b.extend(0u64.to_le_bytes());
    b.resize(b.len() + 4096, 0);
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path().join("iq.gguf");
    std::fs::write(&p, b).expect("write");
    fails_with(
        &["info", s(&p)],
        &["pragma cannot read", "ggml type id 16", "supported: F32"],
    );
}

#[test]
fn safetensors_missing_tensor() {
    let d = tempfile::tempdir().expect("tmp");
    let cfg = tiny_config(Arch::Llama);
    let mut w = tiny_weights(&cfg, 1).expect("w");
    w.retain(|(n, _)| n != "model.layers.1.mlp.up_proj.weight");
    let p = d.path().join("hf");
    write_hf(&p, &cfg, &w).expect("write");
    fails_with(
        &["info", s(&p)],
        &["missing tensor 'model.layers.1.mlp.up_proj.weight'"],
    );
}

#[test]
fn safetensors_misshapen_tensor() {
    let d = tempfile::tempdir().expect("tmp");
    let cfg = tiny_config(Arch::Llama);
    let mut w = tiny_weights(&cfg, 1).expect("w");
    for (n, t) in w.iter_mut() {
        if n == "model.layers.0.self_attn.o_proj.weight" {
            *t = t.narrow(0, 0, 16).expect("narrow");
        }
    }
    let p = d.path().join("hf");
    write_hf(&p, &cfg, &w).expect("write");
    fails_with(
        &["info", s(&p)],
        &["layer 0 O", "shape [16, 32]", "expected [32, 32]"],
    );
}

#[test]
fn unknown_hook_name_suggests_valid_ones() {
    let d = tempfile::tempdir().expect("tmp");
    let p = tiny_gguf(d.path());
    let out = d.path().join("a.safetensors");
    fails_with(
        &[
            "trace",
            s(&p),
            "--prompt",
            "hi",
            "--hooks",
            "blocks.1.resid_post",
            "--out",
            s(&out),
        ],
        &[
            "unknown hook point 'blocks.1.resid_post'",
            "did you mean",
            "blocks.1.hook_resid_post",
        ],
    );
    fails_with(
        &[
            "trace",
            s(&p),
            "--prompt",
            "hi",
            "--hooks",
            "blocks.7.hook_resid_post",
            "--out",
            s(&out),
        ],
        &["blocks.7.hook_resid_post", "layer index in 0..3"],
    );
    assert!(!out.exists(), "nothing written on error");
}

#[test]
fn prompt_longer_than_context() {
    let d = tempfile::tempdir().expect("tmp");
    let p = tiny_gguf(d.path());
    let long = "x y ".repeat(100);
    fails_with(
        &["generate", s(&p), "--prompt", &long, "--max-tokens", "2"],
        &["input has", "tokens but the model's context length is 64"],
    );
}

#[test]
fn invalid_sampling_parameters() {
    let d = tempfile::tempdir().expect("tmp");
    let p = tiny_hf(d.path());
    fails_with(
        &["generate", s(&p), "--prompt", "hi", "--temperature", "-1"],
        &["temperature must be a finite number >= 0"],
    );
    fails_with(
        &[
            "generate",
            s(&p),
            "--prompt",
            "hi",
            "--temperature",
            "1",
            "--top-p",
            "0",
        ],
        &["top_p must be in (0, 1]"],
    );
    fails_with(
        &["generate", s(&p), "--prompt", "hi", "--temperature", "NaN"],
        &["temperature must be a finite number"],
    );
}

#[test]
fn good_tiny_model_runs_end_to_end() {
    let d = tempfile::tempdir().expect("tmp");
    let p = tiny_gguf(d.path());
    let out = d.path().join("acts.safetensors");
    let (ok, err) = pragma(&[
        "trace",
        s(&p),
        "--prompt",
        "the cat",
        "--hooks",
        "blocks.*.hook_resid_post,blocks.-1.attn.hook_pattern",
        "--logits",
        "--out",
        s(&out),
    ]);
    assert!(ok, "{err}");
    let bytes = std::fs::read(&out).expect("saved");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "blocks.0.hook_resid_post",
            "blocks.1.hook_resid_post",
            "blocks.2.attn.hook_pattern",
            "blocks.2.hook_resid_post",
            "logits",
            "tokens"
        ]
    );
    let (ok, err) = pragma(&[
        "generate",
        s(&p),
        "--prompt",
        "the cat",
        "--chat",
        "--max-tokens",
        "3",
        "--ablate",
        "blocks.0.hook_mlp_out",
    ]);
    assert!(ok, "{err}");
}

#[test]
fn a_model_too_large_for_memory_is_refused_before_loading() {
    // The tiny f32 model's weights are ~60 KB; a 10 KB cap stands in for a small machine.
    let d = tempfile::tempdir().expect("tmp");
    let p = tiny_gguf(d.path());
    let out = Command::new(env!("CARGO_BIN_EXE_pragma"))
        .args(["info", s(&p)])
        .env("PRAGMA_MEMORY_LIMIT", "10000")
        .output()
        .expect("run pragma");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .expect("error line");
    assert!(
        line.contains("weights need")
            && line.contains("MB in memory")
            && line.contains("PRAGMA_MEMORY_LIMIT"),
        "{line}"
    );
    // Under the cap it loads.
    let out = Command::new(env!("CARGO_BIN_EXE_pragma"))
        .args(["info", s(&p)])
        .env("PRAGMA_MEMORY_LIMIT", "100000000")
        .output()
        .expect("run pragma");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
