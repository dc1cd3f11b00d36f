//! `pragma serve MODEL --vectors DIR` driven by the official `openai` Python client
//! (`scripts/server/openai_client_check.py`), on a tiny model. The client must be
//! importable by `$PRAGMA_OPENAI_PYTHON` (default `python3`); `.ci/run` installs it. In
//! CI (`CI` set) a missing client fails the test instead of skipping it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{pragma, tiny_gguf};

fn python() -> String {
    std::env::var("PRAGMA_OPENAI_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn the_official_openai_client_works_unchanged_with_steering() {
    let py = python();
    let has_client = Command::new(&py)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_client {
        assert!(
            std::env::var_os("CI").is_none(),
            "{py} cannot import openai (pip install openai, or set PRAGMA_OPENAI_PYTHON)"
        );
        eprintln!("skipped: {py} cannot import openai");
        return;
    }
    let d = tempfile::tempdir().expect("tmp");
    let model = tiny_gguf(d.path(), 4);
    let m = model.to_str().expect("utf8");
    let pairs = d.path().join("pairs.jsonl");
    std::fs::write(
        &pairs,
        "{\"positive\": \"the sun is warm\", \"negative\": \"the snow is cold\"}\n\
         {\"positive\": \"we won\", \"negative\": \"we lost\"}\n",
    )
    .expect("w");
    let vecs = d.path().join("vectors");
    std::fs::create_dir_all(&vecs).expect("mkdir");
    let (ok, _, err) = pragma(&[
        "steer",
        "train",
        m,
        "--pairs",
        pairs.to_str().expect("p"),
        "--layers",
        "0..2",
        "--out",
        vecs.join("warm.safetensors").to_str().expect("v"),
    ]);
    assert!(ok, "{err}");

    let mut server = Command::new(env!("CARGO_BIN_EXE_pragma"))
        .args(["serve", m, "--bind", "127.0.0.1:0", "--vectors"])
        .arg(&vecs)
        .arg("--db")
        .arg(d.path().join("t.db"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pragma serve");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let base = format!("{}v1", line.trim());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/server/openai_client_check.py"
    );
    let out = Command::new(&py)
        .args([script, &base, "warm", "8"])
        .output()
        .expect("run the client");
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
