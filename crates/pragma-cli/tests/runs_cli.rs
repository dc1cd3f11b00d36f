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
            "artifacts: {} of {n} byte-identical; equal except timings and run bookkeeping (*seconds, at, run_id, number, ...): results.json",
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

/// Run `pragma` in `dir` with the project's own database (no PRAGMA_RUNS_DB).
fn in_dir(args: &[&str], dir: &std::path::Path) -> (bool, String, String) {
    common::output(
        Command::new(env!("CARGO_BIN_EXE_pragma"))
            .args(args)
            .current_dir(dir)
            .env_remove("PRAGMA_RUNS_DB")
            .env_remove("PRAGMA_NO_RECORD"),
    )
}

/// A project on a tiny model: a detection task whose positives carry a word the
/// bag-of-words baseline sees, and the steering study; its proxies name techniques and
/// baselines of each.
fn tiny_project(d: &std::path::Path, proxies: &str) {
    let m = common::tiny_gguf(d, 5);
    let rows: Vec<String> = (0..60)
        .map(|i| {
            let label = i % 2;
            let text = if label == 1 {
                format!("exam question {i} graded")
            } else {
                format!("user asks {i} kindly")
            };
            serde_json::json!({"text": text, "label": label}).to_string()
        })
        .collect();
    std::fs::write(d.join("a.jsonl"), rows.join("\n")).expect("w");
    std::fs::write(
        d.join("a.meta.json"),
        r#"{"question": "test?", "positive": 1}"#,
    )
    .expect("w");
    let pairs: Vec<String> = (0..4)
        .map(|i| {
            serde_json::json!({"positive": format!("test {i}"), "negative": format!("user {i}")})
                .to_string()
        })
        .collect();
    std::fs::write(d.join("pairs.jsonl"), pairs.join("\n")).expect("w");
    let tasks: Vec<String> = (0..6)
        .map(|i| {
            serde_json::json!({"task": format!("t{i}"), "eval": format!("exam {i}"), "deploy": format!("chat {i}")})
                .to_string()
        })
        .collect();
    std::fs::write(d.join("tasks.jsonl"), tasks.join("\n")).expect("w");
    std::fs::write(d.join("ref.txt"), "a cat sat on a mat").expect("w");
    std::fs::write(
        d.join("suite.toml"),
        "hook = \"blocks.1.hook_resid_post\"\nseeds = 2\nanswers = [\"a\", \"b\"]\n\
         [[task]]\nname = \"a\"\nfamily = \"detection\"\ndataset = \"a.jsonl\"\n\n\
         [[task]]\nname = \"st\"\nfamily = \"study\"\ndataset = \"tasks.jsonl\"\n\
         pairs = \"pairs.jsonl\"\nreference = \"ref.txt\"\nquestion = \"test?\"\n\
         deploy_prompt = \"real\"\n",
    )
    .expect("w");
    std::fs::write(
        d.join("pragma.toml"),
        format!(
            "[project]\nnorth_star = \"tiny\"\ntime_box = \"2999-12-31\"\nsuite = \"suite.toml\"\n\
             model = \"{}\"\n{proxies}",
            m.display()
        ),
    )
    .expect("w");
}

#[test]
fn checkins_run_the_proxy_tasks_judge_and_keep_the_history() {
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path();
    tiny_project(
        p,
        "[[proxy]]\ntask = \"a\"\ntechniques = [\"probe\"]\nbaselines = [\"bow\", \"random\"]\n\
         [[proxy]]\ntask = \"st\"\ntechniques = [\"vector\", \"prompting\"]\n\
         baselines = [\"random-control\", \"unsteered\"]\n",
    );
    let (ok, out, err) = in_dir(&["project", "log"], p);
    assert!(ok && out.contains("no check-ins yet"), "{out}{err}");
    let (ok, out, err) = in_dir(&["checkin", "--bootstrap", "100"], p);
    assert!(ok, "{err}");
    assert!(out.contains("## Check-in 1 ("), "{out}");
    // Every technique gets a verdict by the rule; the table names the roles.
    for t in ["probe", "vector", "prompting"] {
        assert!(
            ["ahead", "within noise", "behind"]
                .iter()
                .any(|s| out.lines().any(|l| l.starts_with(&format!("- {s}: {t} ")))),
            "{t}: {out}"
        );
    }
    assert!(
        out.contains("| bow | baseline |") && out.contains("| random-control | baseline |"),
        "{out}"
    );
    assert!(out.contains("(7 computed, 0 cached)"), "{out}");
    // The first sentence: continue (something ahead) or keep going (29xx is far away).
    assert!(
        out.contains("**continue: ") || out.contains("**keep going: "),
        "{out}"
    );
    let log1 = std::fs::read_to_string(p.join("CHECKINS.md")).expect("log");
    assert!(
        log1.starts_with("# Check-ins") && log1.contains("## Check-in 1"),
        "{log1}"
    );

    // Nothing changed: the second check-in reads every cell from the cache and repeats
    // the numbers, compared with the first.
    let (ok, out2, err) = in_dir(&["checkin", "--bootstrap", "100", "--json"], p);
    assert!(ok, "{err}");
    let c2: serde_json::Value = serde_json::from_str(&out2).expect("json");
    assert_eq!(c2["number"], 2);
    assert_eq!(
        (c2["computed"].as_u64(), c2["cached"].as_u64()),
        (Some(0), Some(7))
    );
    for px in c2["proxies"].as_array().expect("proxies") {
        for e in px["evidence"].as_array().expect("evidence") {
            assert_eq!(e["score"], e["previous"], "{e}");
        }
    }
    let log = std::fs::read_to_string(p.join("CHECKINS.md")).expect("log");
    assert!(
        log.find("## Check-in 2").expect("2") < log.find("## Check-in 1").expect("1")
            && log.contains("| same |"),
        "{log}"
    );
    // Every row of check-in 2 is "same": scores read back from the database equal the
    // fresh ones bit for bit (serde_json's float_roundtrip; without it a CI bound can
    // come back one ulp off and print "(+0.000)").
    let second = &log[log.find("## Check-in 2").expect("2")..log.find("## Check-in 1").expect("1")];
    assert!(!second.contains("0.000)"), "{second}");
    let (ok, out, _) = in_dir(&["project", "log", "--json"], p);
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    assert!(ok && all.len() == 2 && all[1]["number"] == 2, "{out}");

    // Each check-in is a recorded run whose metrics are its scores; rerunning it
    // reproduces them (the cells are cached under keys of their inputs).
    let db = p.join(".pragma/runs.db");
    let (ok, out, _) = pragma(&db, &["runs", "list", "--workflow", "checkin", "--json"]);
    let runs: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    assert!(ok && runs.len() == 2 && runs[0]["status"] == "ok", "{out}");
    assert!(runs[0]["metrics"]["st/vector"].is_number(), "{}", runs[0]);
    assert_eq!(c2["run_id"], runs[0]["id"]);
    let id = runs[0]["id"].to_string();
    // Compared side by side, long metric names and values stay in their columns.
    let (ok, cmp, err) = in_dir(&["runs", "compare", &runs[1]["id"].to_string(), &id], p);
    assert!(ok && cmp.contains("st/vector"), "{cmp}{err}");
    for line in cmp.lines().filter(|l| l.starts_with("st/")) {
        let vals: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert!(vals.len() >= 2, "{line}");
        assert!(vals.iter().all(|v| v.matches('.').count() <= 1), "{line}");
    }
    // The project file, the suite and the datasets are the run's inputs.
    let inputs = runs[0]["inputs"].as_array().expect("inputs");
    for f in ["pragma.toml", "suite.toml", "a.jsonl"] {
        assert!(
            inputs
                .iter()
                .any(|a| a["path"].as_str().expect("p").ends_with(f)),
            "{f} not an input: {inputs:?}"
        );
    }
    // A rerun recomputes every cell in its own folder, reproduces the numbers, and
    // leaves the history alone.
    let (ok, out, err) = in_dir(&["runs", "rerun", &id], p);
    assert!(
        ok && out.contains(&format!("run {id} reproduced"))
            && out.contains("\"computed\": 7,")
            && out.contains("\"cached\": 0,")
            && out.contains(&format!("\"rerun_of\": {id}")),
        "{out}{err}"
    );
    // checkin.json and report.json differ only in when, as which run and where.
    assert!(
        out.contains("artifacts: 1 of 3 byte-identical; equal except timings and run bookkeeping")
            && !out.contains("DIFFER"),
        "{out}"
    );
    let (ok, out, _) = in_dir(&["project", "log", "--json"], p);
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    assert!(ok && all.len() == 2, "{out}");
    // Check-in 1's files are its own: check-in 2 did not change them.
    let first = runs[1]["id"].to_string();
    let (ok, out, err) = in_dir(&["runs", "show", &first, "--check"], p);
    assert!(
        ok && out.contains("every input and artifact is as recorded"),
        "{out}{err}"
    );

    // A changed dataset: a rerun refuses, naming it; a check-in recomputes only the
    // detection task's cells.
    let text = std::fs::read_to_string(p.join("a.jsonl")).expect("r");
    std::fs::write(p.join("a.jsonl"), text.replace("kindly", "politely")).expect("w");
    let (ok, out, err) = in_dir(&["runs", "rerun", &id], p);
    assert!(
        !ok && err.contains("a.jsonl") && err.contains("inputs changed"),
        "{out}{err}"
    );
    let (ok, out, err) = in_dir(&["checkin", "--bootstrap", "100", "--json"], p);
    assert!(ok, "{err}");
    let c3: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (
            c3["number"].as_u64(),
            c3["computed"].as_u64(),
            c3["cached"].as_u64()
        ),
        (Some(3), Some(6), Some(1)),
        "{out}"
    );

    // The folder copied elsewhere keeps its history: the next check-in is number 4 and
    // CHECKINS.md still has 1 to 3.
    let e = tempfile::tempdir().expect("tmp");
    let copy = e.path().join("copy");
    let status = std::process::Command::new("cp")
        .args(["-a", p.to_str().expect("p"), copy.to_str().expect("c")])
        .status()
        .expect("cp");
    assert!(status.success());
    let (ok, out, err) = in_dir(&["checkin", "--bootstrap", "100", "--json"], &copy);
    assert!(ok, "{err}");
    let c4: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(c4["number"], 4, "{out}");
    let log = std::fs::read_to_string(copy.join("CHECKINS.md")).expect("log");
    for n in 1..=4 {
        assert!(log.contains(&format!("## Check-in {n} (")), "{n}: {log}");
    }
    // Without its database the history starts again, and the old log is kept aside.
    std::fs::remove_dir_all(copy.join(".pragma")).expect("rm");
    let (ok, _, err) = in_dir(&["checkin", "--bootstrap", "100"], &copy);
    assert!(ok, "{err}");
    let kept: Vec<_> = std::fs::read_dir(&copy)
        .expect("ls")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("CHECKINS.before-")
        })
        .collect();
    assert_eq!(kept.len(), 1);
    let old = std::fs::read_to_string(kept[0].path()).expect("r");
    assert!(old.contains("## Check-in 4 ("), "{old}");
}

#[test]
fn bad_projects_are_clear_errors_and_the_example_project_checks() {
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path();
    tiny_project(
        p,
        "[[proxy]]\ntask = \"st\"\ntechniques = [\"vectr\"]\nbaselines = [\"unsteered\"]\n",
    );
    let (ok, _, err) = in_dir(&["project", "check"], p);
    assert!(
        !ok && err.contains("unknown arm 'vectr'") && err.contains("did you mean 'vector'"),
        "{err}"
    );
    let (ok, _, err) = in_dir(&["checkin"], p);
    assert!(!ok && err.contains("unknown arm 'vectr'"), "{err}");
    std::fs::remove_file(p.join("pragma.toml")).expect("rm");
    let (ok, _, err) = in_dir(&["checkin"], p);
    assert!(!ok && err.contains("no pragma.toml in"), "{err}");

    // The shipped case study initialises into an empty folder and checks.
    let e = p.join("ea");
    std::fs::create_dir_all(&e).expect("mkdir");
    let (ok, _, err) = in_dir(
        &[
            "project",
            "init",
            "--example",
            "eval-awarenes",
            "--time-box",
            "2999-01-01",
        ],
        &e,
    );
    assert!(
        !ok && err.contains("did you mean 'eval-awareness'"),
        "{err}"
    );
    let (ok, out, err) = in_dir(
        &[
            "project",
            "init",
            "--example",
            "eval-awareness",
            "--time-box",
            "2999-01-01",
        ],
        &e,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("proxy      eval-awareness-study: techniques vector, prompting vs baselines random-control, unsteered"),
        "{out}"
    );
    let text = std::fs::read_to_string(e.join("pragma.toml")).expect("r");
    assert!(text.contains("time_box = \"2999-01-01\""), "{text}");
    let (ok, out, err) = in_dir(&["project", "check"], &e);
    assert!(ok && out.ends_with("ok\n"), "{out}{err}");
}

/// Each workflow's record carries its headline metrics, read from what it wrote or
/// printed: `steer train` (each layer's norm), `steer sweep` (the point that moves the
/// log-odds most and its random control), `steer study` (the arms' effects with CIs),
/// `patch` (clean and corrupt metric, the strongest cell) and `sae eval` (SAEBench
/// names); checked against the result files and `--json` output on a tiny model.
#[test]
fn steer_patch_and_sae_eval_runs_record_their_headline_metrics() {
    let d = tempfile::tempdir().expect("tmp");
    let db = d.path().join("runs.db");
    let m = common::tiny_gguf(d.path(), 4);
    let m = m.to_str().expect("utf8");
    let p = |f: &str| d.path().join(f).to_str().expect("utf8").to_string();
    std::fs::write(
        p("pairs.jsonl"),
        "{\"positive\": \"ab xx\", \"negative\": \"ab oo\"}\n{\"positive\": \"cd xx\", \"negative\": \"cd oo\"}\n",
    )
    .expect("w");
    let rec = common::recorded(
        &db,
        &[
            "steer",
            "train",
            m,
            "--pairs",
            &p("pairs.jsonl"),
            "--layers",
            "1,2",
            "--out",
            &p("v.safetensors"),
        ],
    );
    assert_eq!(rec["workflow"], "steer train");
    let v = pragma_methods::steering::SteeringVector::load(&d.path().join("v.safetensors"))
        .expect("vector");
    for (l, n) in v.meta.layers.iter().zip(&v.meta.norms) {
        let got = rec["metrics"][format!("norm_L{l}")].as_f64().expect("norm");
        assert!((got - f64::from(*n)).abs() < 1e-6, "{}", rec["metrics"]);
    }

    std::fs::write(
        p("prompts.jsonl"),
        "{\"prompt\": \"ab\"}\n{\"prompt\": \"cd\"}\n",
    )
    .expect("w");
    let rec = common::recorded(
        &db,
        &[
            "steer",
            "sweep",
            m,
            "--vector",
            &p("v.safetensors"),
            "--prompts",
            &p("prompts.jsonl"),
            "--scales=-4,0,4",
            "--yes",
            "a",
            "--no",
            "b",
            "--out",
            &p("sweep"),
        ],
    );
    let sw: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("sweep/sweep.json")).expect("r"),
    )
    .expect("json");
    let base = sw["baseline"].as_f64().expect("baseline");
    let best = sw["points"]
        .as_array()
        .expect("points")
        .iter()
        .filter(|q| q["control"] == false)
        .max_by(|a, b| {
            let moved = |q: &serde_json::Value| (q["logodds"].as_f64().expect("lo") - base).abs();
            moved(a).total_cmp(&moved(b))
        })
        .expect("a point");
    let mt = &rec["metrics"];
    assert_eq!(mt["baseline_logodds"], sw["baseline"], "{mt}");
    assert_eq!(mt["best_logodds"], best["logodds"], "{mt}");
    assert_eq!(mt["best_logodds_ci"], best["logodds_ci"], "{mt}");
    assert_eq!(
        (&mt["best_layer"], &mt["best_scale"]),
        (&best["layer"], &best["scale"])
    );
    assert!(mt["control_logodds"].is_number(), "{mt}");

    let tasks: String = (0..4)
        .map(|i| {
            format!("{{\"task\": \"t{i}\", \"eval\": \"test {i}\", \"deploy\": \"kid {i}\"}}\n")
        })
        .collect();
    std::fs::write(p("tasks.jsonl"), tasks).expect("w");
    std::fs::write(p("ref.txt"), "the cat sat").expect("w");
    let rec = common::recorded(
        &db,
        &[
            "steer",
            "study",
            m,
            "--pairs",
            &p("pairs.jsonl"),
            "--tasks",
            &p("tasks.jsonl"),
            "--question",
            "test?",
            "--yes",
            "y",
            "--no",
            "n",
            "--deploy-prompt",
            "real",
            "--layers",
            "1,2",
            "--scales=-2,1",
            "--max-dnll",
            "100",
            "--reference",
            &p("ref.txt"),
            "--samples",
            "1",
            "--sample-tokens",
            "2",
            "--out",
            &p("study"),
        ],
    );
    let st: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("study/study.json")).expect("r"),
    )
    .expect("json");
    let mt = &rec["metrics"];
    assert_eq!(
        mt["vector_minus_control"], st["vector_minus_control"]["mean"],
        "{mt}"
    );
    assert_eq!(mt["gap_ci"], st["gap"]["ci"], "{mt}");
    let arms = st["arms"].as_array().expect("arms");
    assert!(arms.len() >= 3, "{st}");
    for a in arms {
        let key = a["name"].as_str().expect("name").replace(['-', ' '], "_");
        assert_eq!(
            mt[format!("{key}_effect")],
            a["effect"]["mean"],
            "{key}: {mt}"
        );
        assert_eq!(
            mt[format!("{key}_effect_ci")],
            a["effect"]["ci"],
            "{key}: {mt}"
        );
    }

    let patch = [
        "patch",
        "--model",
        m,
        "--clean",
        "ab xx",
        "--corrupt",
        "ab oo",
        "--metric",
        "logit-diff:a,b",
        "--hooks",
        "resid",
    ];
    let rec = common::recorded(&db, &patch);
    let mut json_args = patch.to_vec();
    json_args.push("--json");
    let (ok, out, err) = common::pragma(&json_args);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("json");
    let mt = &rec["metrics"];
    assert_eq!(mt["clean_metric"], r["clean_metric"], "{mt}");
    assert_eq!(mt["corrupt_metric"], r["corrupt_metric"], "{mt}");
    let g = &r["grids"][0];
    let hook = g["hook"].as_str().expect("hook");
    let strongest = g["normalized"]
        .as_array()
        .expect("grid")
        .iter()
        .flat_map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_f64().unwrap_or(0.0))
        })
        .fold(0.0f64, |a, v| if v.abs() > a.abs() { v } else { a });
    assert_eq!(mt[format!("{hook}_top")].as_f64(), Some(strongest), "{mt}");
    // Both methods: the exact grids (the same as above) beside the attribution estimate,
    // with their correlation on stderr.
    let mut both = json_args.clone();
    both.extend(["--method", "both"]);
    let (ok, out, err) = common::pragma(&both);
    assert!(ok, "{err}");
    assert!(err.contains("attribution vs patching r ="), "{err}");
    let b: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(b["patching"]["grids"], r["grids"]);
    assert_eq!(
        b["attribution"]["grids"][0]["hook"].as_str(),
        Some(format!("{hook} (attribution)").as_str()),
        "{}",
        b["attribution"]
    );

    std::fs::write(
        p("c.txt"),
        (0..60)
            .map(|i| format!("line {i} about cats\n"))
            .collect::<String>(),
    )
    .expect("w");
    let (ok, _, err) = common::pragma(&[
        "cache",
        m,
        "--data",
        &p("c.txt"),
        "--lines",
        "--hooks",
        "blocks.1.hook_resid_post",
        "--ctx",
        "32",
        "--out",
        &p("store"),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = common::pragma(&[
        "sae",
        "train",
        "--store",
        &p("store"),
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
        &p("sae"),
    ]);
    assert!(ok, "{err}");
    // No --out: the SAE folder is where eval.json goes, and what the record reads.
    let rec = common::recorded(
        &db,
        &[
            "sae",
            "eval",
            m,
            "--sae",
            &p("sae"),
            "--store",
            &p("store"),
            "--ce-sequences",
            "4",
        ],
    );
    let ev: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("sae/eval.json")).expect("r"))
            .expect("json");
    let mt = &rec["metrics"];
    assert_eq!(mt["fvu"], ev["reconstruction"]["fvu"], "{mt}");
    assert_eq!(mt["l0"], ev["reconstruction"]["l0"], "{mt}");
    assert_eq!(mt["ce_loss_score"], ev["loss"]["ce_loss_score"], "{mt}");
    assert!(mt["ce_loss_score"].is_number(), "{mt}");
}
