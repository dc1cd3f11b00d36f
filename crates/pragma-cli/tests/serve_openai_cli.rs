//! `pragma serve MODEL --vectors DIR` driven by real clients on a tiny model: the
//! official `openai` Python client (`scripts/server/openai_client_check.py`) and an
//! Inspect AI evaluation whose logs import into the transcript explorer
//! (`scripts/server/inspect_round_trip.py`). The packages must be importable by
//! `$PRAGMA_OPENAI_PYTHON` (default `python3`); `.ci/run` installs them. In CI (`CI`
//! set) a missing package fails the test instead of skipping it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{pragma, tiny_gguf};

fn python() -> String {
    std::env::var("PRAGMA_OPENAI_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether `python()` can import `module`; in CI it must.
fn has(module: &str) -> bool {
    let py = python();
    let ok = Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{py} cannot import {module} (pip install it, or set PRAGMA_OPENAI_PYTHON)"
        );
        eprintln!("skipped: {py} cannot import {module}");
    }
    ok
}

/// A tiny model and a folder with one vector, `warm`.
fn model_and_vectors(d: &std::path::Path) -> (String, std::path::PathBuf) {
    let model = tiny_gguf(d, 4);
    let m = model.to_str().expect("utf8").to_string();
    let pairs = d.join("pairs.jsonl");
    std::fs::write(
        &pairs,
        "{\"positive\": \"the sun is warm\", \"negative\": \"the snow is cold\"}\n\
         {\"positive\": \"we won\", \"negative\": \"we lost\"}\n",
    )
    .expect("w");
    let vecs = d.join("vectors");
    std::fs::create_dir_all(&vecs).expect("mkdir");
    let (ok, _, err) = pragma(&[
        "steer",
        "train",
        &m,
        "--pairs",
        pairs.to_str().expect("p"),
        "--layers",
        "0..2",
        "--out",
        vecs.join("warm.safetensors").to_str().expect("v"),
    ]);
    assert!(ok, "{err}");
    (m, vecs)
}

#[test]
fn an_inspect_eval_runs_against_the_server_and_its_logs_import() {
    if !has("inspect_ai") {
        return;
    }
    let d = tempfile::tempdir().expect("tmp");
    let (m, vecs) = model_and_vectors(d.path());
    let out = d.path().join("inspect");
    // Short questions: the tiny model's context is 64 tokens of its near-character vocabulary.
    let data = d.path().join("task.jsonl");
    let lines: String = (0..12)
        .map(|i| format!("{{\"input\": \"the cat {i}\", \"target\": \"sat\"}}\n"))
        .collect();
    std::fs::write(&data, lines).expect("dataset");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/server/inspect_round_trip.py"
    );
    let r = Command::new(python())
        .args([script, "--model", &m, "--vector", "warm", "--scale", "8"])
        .args(["--max-tokens", "8"])
        .arg("--dataset")
        .arg(&data)
        .arg("--vectors")
        .arg(&vecs)
        .arg("--out")
        .arg(&out)
        .args(["--pragma", env!("CARGO_BIN_EXE_pragma")])
        .output()
        .expect("run the round trip");
    let stdout = String::from_utf8_lossy(&r.stdout);
    println!("{stdout}");
    assert!(
        r.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    for c in ["inspect-plain", "inspect-steered"] {
        assert!(stdout.contains(&format!("{c}: accuracy")), "{stdout}");
    }
    // Both logs are now collections of 12 transcripts each.
    let db = out.join("transcripts.db");
    let (ok, list, err) = pragma(&["transcripts", "list", "--db", db.to_str().expect("db")]);
    assert!(ok, "{err}");
    assert!(
        list.contains("inspect-plain: 12 runs") && list.contains("inspect-steered: 12 runs"),
        "{list}"
    );
}

#[test]
fn the_official_openai_client_works_unchanged_with_steering() {
    if !has("openai") {
        return;
    }
    let py = python();
    let d = tempfile::tempdir().expect("tmp");
    let (m, vecs) = model_and_vectors(d.path());
    let m = m.as_str();

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

#[test]
fn sigterm_stops_the_server_cleanly() {
    use std::io::{Read, Write};
    let d = tempfile::tempdir().expect("tmp");
    let model = tiny_gguf(d.path(), 4);
    let mut server = Command::new(env!("CARGO_BIN_EXE_pragma"))
        .args([
            "serve",
            model.to_str().expect("utf8"),
            "--bind",
            "127.0.0.1:0",
        ])
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
    let addr = line
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let ok = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(st) = server.try_wait().expect("wait") {
            break st;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "exit after SIGTERM: {status}");
}
