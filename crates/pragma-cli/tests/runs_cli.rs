//! Runs are recorded: `pragma cache` and `pragma sae train` on a tiny model appear in
//! `pragma runs list` with status, input sha256s, headline metrics (the SAE's final FVU)
//! and artifacts; a failed run is recorded as failed with its message; `--no-record`
//! records nothing; `runs show --check` passes, then names a deleted artifact.

mod common;

use std::process::Command;

fn pragma(db: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    common::output(
        Command::new(env!("CARGO_BIN_EXE_pragma"))
            .args(args)
            .env("PRAGMA_RUNS_DB", db)
            .env_remove("PRAGMA_NO_RECORD"),
    )
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

/// `runs rerun` reproduces a probe sweep on a tiny model: same input sha256s, every
/// artifact byte-identical but results.json (equal except its timings), the headline
/// AUROC identical; `runs compare` lines them up;
/// a changed input is named and refused.
#[test]
fn a_recorded_probe_sweep_reruns_to_the_same_numbers() {
    let d = tempfile::tempdir().expect("tmp");
    let db = d.path().join("runs.db");
    let m = common::tiny_gguf(d.path(), 5);
    let data = d.path().join("data.jsonl");
    let rows: String = (0..60)
        .map(|i| {
            let (t, l) = if i % 2 == 0 {
                ("the cat is warm and happy", 1)
            } else {
                ("the dog is cold and sad", 0)
            };
            format!("{{\"text\": \"{t} {i}\", \"label\": {l}}}\n")
        })
        .collect();
    std::fs::write(&data, rows).expect("w");
    let out = d.path().join("probe");
    let (ok, _, err) = pragma(
        &db,
        &[
            "probe",
            "train",
            m.to_str().expect("m"),
            "--data",
            data.to_str().expect("d"),
            "--hooks",
            "blocks.1.hook_resid_post",
            "--bootstrap",
            "50",
            "-o",
            out.to_str().expect("o"),
        ],
    );
    assert!(ok, "{err}");
    let (ok, out_list, _) = pragma(&db, &["runs", "list", "--json"]);
    assert!(ok);
    let runs: Vec<serde_json::Value> = serde_json::from_str(&out_list).expect("json");
    let id = runs[0]["id"].as_i64().expect("id").to_string();
    assert!(
        runs[0]["metrics"]["test_auroc"].as_f64().is_some(),
        "{}",
        runs[0]["metrics"]
    );
    let (ok, text, err) = pragma(&db, &["runs", "rerun", &id]);
    assert!(ok, "{text}{err}");
    assert!(
        text.contains("test_auroc: recorded")
            && text.contains("identical")
            && text.contains("run 1 reproduced"),
        "{text}"
    );
    let n = runs[0]["artifacts"].as_array().expect("a").len();
    assert!(
        text.contains(&format!(
            "artifacts: {} of {n} byte-identical; equal except timing fields (*seconds): results.json",
            n - 1
        )) && !text.contains("DIFFER"),
        "{text}"
    );
    let (ok, cmp, err) = pragma(&db, &["runs", "compare", "1", "2"]);
    assert!(
        ok && cmp.contains("test_auroc") && cmp.contains("(+0.0000)"),
        "{cmp}{err}"
    );
    // A changed input is named and refused.
    std::fs::write(&data, "{\"text\": \"x\", \"label\": 1}\n").expect("w");
    let (ok, _, err) = pragma(&db, &["runs", "rerun", &id]);
    assert!(
        !ok && err.contains("data.jsonl changed") && err.contains("--force"),
        "{err}"
    );
}

/// `pragma project init` writes a pragma.toml (and the default suite) that `project
/// check` accepts; a past time box and a second init are refused; runs made in the
/// project's folder are recorded in its .pragma/runs.db.
#[test]
fn project_init_check_and_its_runs_database() {
    let d = tempfile::tempdir().expect("tmp");
    let run = |args: &[&str], dir: &std::path::Path| {
        common::output(
            Command::new(env!("CARGO_BIN_EXE_pragma"))
                .args(args)
                .current_dir(dir)
                .env_remove("PRAGMA_RUNS_DB")
                .env_remove("PRAGMA_NO_RECORD"),
        )
    };
    let (ok, _, err) = run(&["project", "init", "--time-box", "2001-01-01"], d.path());
    assert!(!ok && err.contains("is in the past"), "{err}");
    let (ok, out, err) = run(&["project", "init", "--time-box", "2999-12-31"], d.path());
    assert!(
        ok && out.contains("proxy      eval-awareness"),
        "{out}{err}"
    );
    let (ok, _, err) = run(&["project", "init", "--time-box", "2999-12-31"], d.path());
    assert!(!ok && err.contains("exists"), "{err}");
    let sub = d.path().join("work");
    std::fs::create_dir_all(&sub).expect("mkdir");
    let (ok, out, err) = run(&["project", "check"], &sub);
    assert!(ok && out.ends_with("ok\n"), "{out}{err}");
    // A workflow run in the project is recorded in its own database.
    let m = common::tiny_gguf(d.path(), 2);
    std::fs::write(sub.join("c.txt"), "one line\nanother line\n").expect("w");
    let (ok, _, err) = run(
        &[
            "cache",
            m.to_str().expect("m"),
            "--data",
            "c.txt",
            "--lines",
            "--hooks",
            "blocks.0.hook_resid_post",
            "--ctx",
            "32",
            "--out",
            "s",
        ],
        &sub,
    );
    assert!(ok, "{err}");
    let db = d.path().join(".pragma/runs.db");
    assert!(db.exists());
    let (ok, out, _) = pragma(&db, &["runs", "list", "--json"]);
    let runs: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    assert!(
        ok && runs.len() == 1 && runs[0]["workflow"] == "cache",
        "{out}"
    );
}
