//! Runs are recorded: `pragma cache` and `pragma sae train` on a tiny model appear in
//! `pragma runs list` with status, input sha256s, headline metrics (the SAE's final FVU)
//! and artifacts; a failed run is recorded as failed with its message; `--no-record`
//! records nothing; `runs show --check` passes, then names a deleted artifact.

mod common;

use std::process::Command;

fn pragma(db: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pragma"))
        .args(args)
        .env("PRAGMA_RUNS_DB", db)
        .env_remove("PRAGMA_NO_RECORD")
        .output()
        .expect("run");
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(!e.contains("panicked"), "{e}");
    (out.status.success(), o, e)
}

#[test]
fn workflow_runs_are_recorded_with_provenance() {
    let d = tempfile::tempdir().expect("tmp");
    let db = d.path().join("runs.db");
    let m = common::tiny_gguf(d.path(), 3);
    let m = m.to_str().expect("utf8");
    let corpus = d.path().join("c.txt");
    let docs: Vec<String> = (0..60)
        .map(|i| format!("line {i} of the corpus about cats"))
        .collect();
    std::fs::write(&corpus, docs.join("\n")).expect("w");
    let c = corpus.to_str().expect("utf8");
    let store = d.path().join("store");
    let s = store.to_str().expect("utf8");
    let (ok, _, err) = pragma(
        &db,
        &[
            "cache",
            m,
            "--data",
            c,
            "--lines",
            "--hooks",
            "blocks.1.hook_resid_post",
            "--ctx",
            "32",
            "--out",
            s,
        ],
    );
    assert!(ok, "{err}");
    let sae = d.path().join("sae");
    let (ok, _, err) = pragma(
        &db,
        &[
            "sae",
            "train",
            "--store",
            s,
            "--hook",
            "blocks.1.hook_resid_post",
            "--d-sae",
            "32",
            "--k",
            "4",
            "--tokens",
            "512",
            "--batch-tokens",
            "128",
            "-o",
            sae.to_str().expect("utf8"),
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, _) = pragma(
        &db,
        &["cache", m, "--data", "/no/such/corpus.txt", "--out", s],
    );
    assert!(!ok);
    let (ok, _, err) = pragma(
        &db,
        &[
            "--no-record",
            "sae",
            "train",
            "--store",
            s,
            "--hook",
            "blocks.1.hook_resid_post",
            "--d-sae",
            "32",
            "--k",
            "4",
            "--tokens",
            "512",
            "--batch-tokens",
            "128",
            "-o",
            d.path().join("sae2").to_str().expect("utf8"),
        ],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = pragma(&db, &["runs", "list", "--json"]);
    assert!(ok, "{err}");
    let runs: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    assert_eq!(runs.len(), 3, "{out}");
    // Newest first: the failed cache, the SAE, the first cache.
    assert_eq!(runs[0]["workflow"], "cache");
    assert!(
        runs[0]["status"]
            .as_str()
            .expect("s")
            .starts_with("failed: "),
        "{}",
        runs[0]["status"]
    );
    let sae_run = &runs[1];
    assert_eq!(sae_run["workflow"], "sae train");
    assert_eq!(sae_run["status"], "ok");
    assert!(
        sae_run["metrics"]["fvu"].as_f64().is_some(),
        "{}",
        sae_run["metrics"]
    );
    let inputs = sae_run["inputs"].as_array().expect("inputs");
    assert!(inputs.iter().any(|a| a["path"]
        .as_str()
        .expect("p")
        .ends_with("store/manifest.json")
        && a["sha256"].is_string()));
    let cache_run = &runs[2];
    let want_sha = {
        use sha2::Digest;
        format!(
            "{:x}",
            sha2::Sha256::digest(std::fs::read(&corpus).expect("r"))
        )
    };
    assert!(cache_run["inputs"]
        .as_array()
        .expect("i")
        .iter()
        .any(|a| a["sha256"] == want_sha.as_str()));
    assert!(cache_run["artifacts"]
        .as_array()
        .expect("a")
        .iter()
        .any(|a| a["path"].as_str().expect("p").ends_with("manifest.json")));
    let id = sae_run["id"].as_i64().expect("id").to_string();
    let (ok, out, err) = pragma(&db, &["runs", "show", &id, "--check"]);
    assert!(
        ok && out.contains("every input and artifact is as recorded"),
        "{out}{err}"
    );
    std::fs::remove_file(sae.join("sae_weights.safetensors")).expect("rm");
    let (ok, out, err) = pragma(&db, &["runs", "show", &id, "--check"]);
    assert!(
        !ok && out.contains("sae_weights.safetensors is missing"),
        "{out}{err}"
    );
    let (ok, out, _) = pragma(&db, &["runs", "list", "--workflow", "sae"]);
    assert!(
        ok && out.contains("sae train") && !out.contains(" cache "),
        "{out}"
    );
}
