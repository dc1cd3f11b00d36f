//! `pragma eval run|report` end to end on a tiny model: the grid, the cache (a re-run
//! computes nothing; a changed dataset or a lost cell is recomputed), the report files,
//! and the bad-input errors.

mod common;

use std::path::Path;

use common::{pragma, tiny_gguf};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

fn dataset(dir: &Path, name: &str, n: usize, one_class: bool) {
    let words = ["red", "blue", "green", "cold", "warm"];
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let label = if one_class { 1 } else { i % 2 };
            let text = if label == 1 {
                format!("{} cat {i}", words[i % 5])
            } else {
                format!("{} dog {i}", words[(i + 2) % 5])
            };
            serde_json::json!({"text": text, "label": label}).to_string()
        })
        .collect();
    std::fs::write(dir.join(format!("{name}.jsonl")), rows.join("\n")).expect("w");
    std::fs::write(
        dir.join(format!("{name}.meta.json")),
        r#"{"question": "cat?", "positive": 1}"#,
    )
    .expect("w");
}

fn suite(dir: &Path, hook: &str, extra: &str) -> std::path::PathBuf {
    let p = dir.join("suite.toml");
    std::fs::write(
        &p,
        format!(
            "hook = \"{hook}\"\nseeds = 2\nanswers = [\"a\", \"b\"]\n{extra}\n\
             [[task]]\nname = \"a\"\nfamily = \"detection\"\ndataset = \"a.jsonl\"\n\n\
             [[task]]\nname = \"b\"\nfamily = \"detection\"\ndataset = \"b.jsonl\"\n"
        ),
    )
    .expect("w");
    p
}

/// A tiny model, a store of blocks.1.hook_resid_post and an SAE trained on it.
fn tiny_sae(d: &Path, m: &Path) -> std::path::PathBuf {
    let corpus = d.join("c.txt");
    let docs: Vec<String> = (0..80)
        .map(|i| format!("the {} cat sat on mat {i}", ["red", "big"][i % 2]))
        .collect();
    std::fs::write(&corpus, docs.join("\n")).expect("w");
    let store = d.join("store");
    let (ok, _, err) = pragma(&[
        "cache",
        s(m),
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
    let (ok, _, err) = pragma(&[
        "sae",
        "train",
        "--store",
        s(&store),
        "--hook",
        "blocks.1.hook_resid_post",
        "--k",
        "4",
        "--d-sae",
        "64",
        "--tokens",
        "4096",
        "--batch-tokens",
        "256",
        "--out",
        s(&sae),
    ]);
    assert!(ok, "{err}");
    sae
}

#[test]
fn run_caches_cells_resumes_and_reports() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny_gguf(d.path(), 4);
    dataset(d.path(), "a", 60, false);
    dataset(d.path(), "b", 50, false);
    let sae = tiny_sae(d.path(), &m);
    let su = suite(d.path(), "blocks.1.hook_resid_post", "");
    let out = d.path().join("out");
    let args = [
        "eval",
        "run",
        s(&m),
        "--suite",
        s(&su),
        "--sae",
        s(&sae),
        "--bootstrap",
        "200",
        "--out",
        s(&out),
    ];
    let (ok, stdout, err) = pragma(&args);
    assert!(ok, "{err}");
    // 2 tasks x 10 techniques x 2 seeds.
    assert!(err.contains("40 cells computed, 0 cached"), "{err}");
    for f in [
        "report.md",
        "report.html",
        "report.json",
        "heatmap.svg",
        "plan.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert!(
        stdout.contains("## a (detection") && stdout.contains("| sae-probe-5 |"),
        "{stdout}"
    );
    assert!(stdout.contains("**detection**: over 2 tasks"), "{stdout}");
    let html = std::fs::read_to_string(out.join("report.html")).expect("html");
    assert!(html.contains("<svg") && html.contains("test AUROC"));

    // The same command again computes nothing.
    let (ok, stdout2, err) = pragma(&args);
    assert!(ok, "{err}");
    assert!(err.contains("0 cells computed, 40 cached"), "{err}");
    assert_eq!(stdout, stdout2, "a cached re-run reports the same");

    // A lost cell (a kill mid-write leaves none) is recomputed alone.
    std::fs::remove_file(out.join("cells/a/probe-seed1.json")).expect("rm");
    let (ok, _, err) = pragma(&args);
    assert!(ok && err.contains("1 cells computed, 39 cached"), "{err}");

    // A changed dataset invalidates only its task's cells.
    dataset(d.path(), "b", 52, false);
    let (ok, _, err) = pragma(&args);
    assert!(ok && err.contains("20 cells computed, 20 cached"), "{err}");

    // The report rebuilds from the cells alone, as JSON.
    let (ok, json, err) = pragma(&["eval", "report", s(&out), "--json", "--bootstrap", "200"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let tasks = v["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 2);
    for t in tasks {
        let rows = t["rows"].as_array().expect("rows");
        // One row per technique, its pooling chosen per seed on validation.
        assert_eq!(rows.len(), 10, "{t}");
        for r in rows {
            let a = &r["auroc"];
            let (m, lo, hi) = (
                a["mean"].as_f64().expect("m"),
                a["lo"].as_f64().expect("lo"),
                a["hi"].as_f64().expect("hi"),
            );
            assert!((0.0..=1.0).contains(&m) && lo <= hi, "{r}");
        }
    }
}

#[test]
fn bad_suites_and_inputs_are_clear_errors() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny_gguf(d.path(), 4);
    dataset(d.path(), "a", 40, false);
    dataset(d.path(), "b", 40, false);
    let out = d.path().join("out");
    let run = |suite: &Path, extra: &[&str]| {
        let mut args = vec!["eval", "run", s(&m), "--suite", s(suite), "--out", s(&out)];
        args.extend_from_slice(extra);
        if !extra.contains(&"--sae") {
            args.extend_from_slice(&["--sae", "none"]);
        }
        pragma(&args)
    };
    // Unknown technique, with a suggestion.
    let su = suite(d.path(), "blocks.1.hook_resid_post", "");
    let text = std::fs::read_to_string(&su).expect("r").replace(
        "dataset = \"b.jsonl\"",
        "dataset = \"b.jsonl\"\ntechniques = [\"probe\", \"difmean\"]",
    );
    std::fs::write(&su, text).expect("w");
    let (ok, _, err) = run(&su, &[]);
    assert!(
        !ok && err.contains("unknown technique 'difmean'")
            && err.contains("did you mean 'diffmean'"),
        "{err}"
    );
    // Unknown family.
    let su = suite(d.path(), "blocks.1.hook_resid_post", "");
    let text = std::fs::read_to_string(&su)
        .expect("r")
        .replacen("detection", "detektion", 1);
    std::fs::write(&su, text).expect("w");
    let (ok, _, err) = run(&su, &[]);
    assert!(
        !ok && err.contains("unknown family 'detektion'")
            && err.contains("did you mean 'detection'"),
        "{err}"
    );
    // A dataset with one class.
    dataset(d.path(), "b", 40, true);
    let su = suite(d.path(), "blocks.1.hook_resid_post", "");
    let (ok, _, err) = run(&su, &[]);
    assert!(
        !ok && err.contains("b.jsonl: expected exactly 2 classes"),
        "{err}"
    );
    dataset(d.path(), "b", 40, false);
    // An SAE for another hook.
    let sae = tiny_sae(d.path(), &m);
    let su0 = suite(d.path(), "blocks.0.hook_resid_post", "");
    let (ok, _, err) = run(&su0, &["--sae", s(&sae)]);
    assert!(
        !ok && err.contains("the SAE reads blocks.1.hook_resid_post"),
        "{err}"
    );
    // An SAE trained on another model of the same width: refused, unless asked for.
    std::fs::create_dir_all(d.path().join("other")).expect("mkdir");
    let other = tiny_gguf(&d.path().join("other"), 5);
    let su = suite(d.path(), "blocks.1.hook_resid_post", "");
    let (ok, _, err) = pragma(&[
        "eval",
        "run",
        s(&other),
        "--suite",
        s(&su),
        "--sae",
        s(&sae),
        "--out",
        s(&out),
    ]);
    assert!(
        !ok && err.contains("trained on another model") && err.contains("--sae-other-model"),
        "{err}"
    );
    // Over budget: the estimate, and --yes.
    let su = suite(
        d.path(),
        "blocks.1.hook_resid_post",
        "budget_minutes = 0.00001",
    );
    let (ok, _, err) = run(&su, &[]);
    assert!(
        !ok && err.contains("over the suite's budget") && err.contains("--yes"),
        "{err}"
    );
    assert!(
        !out.join("cells").exists(),
        "nothing computed before the budget check"
    );
    let (ok, _, err) = run(&su, &["--yes", "--bootstrap", "100"]);
    assert!(ok, "{err}");
    // A later run that fails (here: a task with one class) names the task and leaves the
    // earlier run's plan and report readable.
    dataset(d.path(), "b", 40, true);
    let (ok, _, err) = run(&su, &["--yes", "--bootstrap", "100"]);
    assert!(!ok && err.contains("task 'b'"), "{err}");
    let (ok, stdout, err) = pragma(&["eval", "report", s(&out), "--bootstrap", "100"]);
    assert!(ok && stdout.contains("## b (detection"), "{err}");
    dataset(d.path(), "b", 40, false);
    // A missing dataset and an unknown key.
    let su = suite(d.path(), "blocks.1.hook_resid_post", "");
    let text = std::fs::read_to_string(&su)
        .expect("r")
        .replace("b.jsonl", "nope.jsonl");
    std::fs::write(&su, text).expect("w");
    let (ok, _, err) = run(&su, &[]);
    assert!(!ok && err.contains("nope.jsonl not found"), "{err}");
    let su = suite(d.path(), "blocks.1.hook_resid_post", "sedes = 3");
    let (ok, _, err) = run(&su, &[]);
    assert!(!ok && err.contains("sedes"), "{err}");
}

/// A planted task end to end on the tiny model (its ranked candidates, hits, the null
/// pair), and the planted suite errors: rates of 0, above 1, or too small to plant one
/// document; a null task with rates; a task name that is not a folder name.
#[test]
fn planted_tasks_run_and_bad_plants_are_refused() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny_gguf(d.path(), 4);
    let sae = tiny_sae(d.path(), &m);
    let base: Vec<String> = (0..60)
        .map(|i| serde_json::json!({"text": format!("doc {i} red")}).to_string())
        .collect();
    std::fs::write(d.path().join("base.jsonl"), base.join("\n")).expect("w");
    let plant = serde_json::json!({
        "name": "zz", "kind": "lexical", "position": "suffix",
        "search": ["zz a", "zz b"], "heldout": ["zz c"], "neutral": ["qq", "rr"]
    });
    std::fs::write(d.path().join("zz.json"), plant.to_string()).expect("w");
    let write = |tasks: &str| {
        let p = d.path().join("p.toml");
        std::fs::write(
            &p,
            format!("hook = \"blocks.1.hook_resid_post\"\nseeds = 2\n{tasks}"),
        )
        .expect("w");
        p
    };
    let task = |name: &str, extra: &str| {
        format!(
            "[[task]]\nname = \"{name}\"\nfamily = \"planted\"\ndataset = \"base.jsonl\"\n\
             plant = \"zz.json\"\nitems = 20\nheldout = 10\n{extra}\n"
        )
    };
    let out = d.path().join("out");
    let run = |suite: &Path| {
        pragma(&[
            "eval",
            "run",
            s(&m),
            "--suite",
            s(suite),
            "--sae",
            s(&sae),
            "--bootstrap",
            "100",
            "--out",
            s(&out),
        ])
    };
    let su = write(&(task("zz", "rates = [0.1, 0.5]") + &task("nothing", "null = true")));
    let (ok, stdout, err) = run(&su);
    assert!(ok, "{err}");
    // 2 tasks x 3 techniques x 2 seeds.
    assert!(err.contains("12 cells computed"), "{err}");
    assert!(
        stdout.contains("**planted**") && stdout.contains("| ngram |"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("r"))
            .expect("json");
    let zz = &v["tasks"][0]["planted"];
    let ngram = zz
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["technique"] == "ngram")
        .expect("ngram");
    // At 50% of B planted with "zz", the word "zz" is the top n-gram in both seeds and
    // detects the held-out "zz c" documents perfectly.
    assert_eq!(ngram["rates"][1]["hit_at"][0], 2, "{ngram}");
    let top: Vec<&str> = ngram["rates"][1]["top"]
        .as_array()
        .expect("top")
        .iter()
        .take(2)
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert!(top.contains(&"\"zz\""), "{ngram}");

    for (extra, want) in [
        ("rates = [0.0]", "plant rates are fractions in (0, 1]"),
        ("rates = [1.5]", "plant rates are fractions in (0, 1]"),
        ("rates = []", "rates is empty"),
        ("rates = [0.01]", "plant at least one"),
        ("null = true\nrates = [0.1]", "a null task plants nothing"),
    ] {
        let (ok, _, err) = run(&write(&task("t", extra)));
        assert!(!ok && err.contains(want), "{extra}: {err}");
    }
    let (ok, _, err) = run(&write(&task("../up", "")));
    assert!(!ok && err.contains("task names are letters"), "{err}");
}

/// A steering task end to end on the tiny model (every technique gets a chosen factor
/// and scores in [0, 1]), and the steering suite errors.
#[test]
fn steering_tasks_run_and_bad_steering_suites_are_refused() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny_gguf(d.path(), 4);
    let sae = tiny_sae(d.path(), &m);
    dataset(d.path(), "a", 60, false);
    let instr: Vec<String> = (0..6).map(|i| format!("say {i}")).collect();
    std::fs::write(d.path().join("i.txt"), instr.join("\n")).expect("w");
    std::fs::write(d.path().join("few.txt"), "one\ntwo\n").expect("w");
    let write = |extra: &str| {
        let p = d.path().join("s.toml");
        std::fs::write(
            &p,
            format!(
                "hook = \"blocks.1.hook_resid_post\"\nseeds = 1\n[[task]]\nname = \"st\"\n\
                 family = \"steering\"\ndataset = \"a.jsonl\"\nmax_new_tokens = 4\n{extra}\n"
            ),
        )
        .expect("w");
        p
    };
    let out = d.path().join("out");
    let run = |suite: &Path| {
        pragma(&[
            "eval",
            "run",
            s(&m),
            "--suite",
            s(suite),
            "--sae",
            s(&sae),
            "--bootstrap",
            "100",
            "--out",
            s(&out),
        ])
    };
    let (ok, stdout, err) = run(&write("instructions = \"i.txt\"\nfactors = [0.1, 1.0]"));
    assert!(ok, "{err}");
    assert!(err.contains("6 cells computed"), "{err}");
    assert!(stdout.contains("**steering**"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("r"))
            .expect("json");
    let rows = v["tasks"][0]["steering"].as_array().expect("rows");
    assert_eq!(rows.len(), 6);
    for r in rows {
        for k in ["concept", "relevance", "fluency"] {
            let x = r[k].as_f64().expect(k);
            assert!((0.0..=1.0).contains(&x), "{k} {x}: {r}");
        }
        let f = &r["factors"][0];
        assert!(r["technique"] == "prompt" || f == 0.1 || f == 1.0, "{r}");
    }
    for (extra, want) in [
        ("", "needs instructions"),
        ("instructions = \"few.txt\"", "at least 4"),
        ("instructions = \"i.txt\"\nfactors = []", "factors must be"),
        (
            "instructions = \"i.txt\"\nrates = [0.1]",
            "belong to family \"planted\"",
        ),
    ] {
        let (ok, _, err) = run(&write(extra));
        assert!(!ok && err.contains(want), "{extra}: {err}");
    }
}

/// The steering study as a task on the tiny model: one cell, its row in the report.
#[test]
fn a_study_task_runs_as_one_row() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny_gguf(d.path(), 4);
    let pairs: Vec<String> = (0..4)
        .map(|i| {
            serde_json::json!({"positive": format!("test {i}"), "negative": format!("user {i}")})
                .to_string()
        })
        .collect();
    std::fs::write(d.path().join("pairs.jsonl"), pairs.join("\n")).expect("w");
    let tasks: Vec<String> = (0..6)
        .map(|i| {
            serde_json::json!({"task": format!("t{i}"), "eval": format!("exam {i}"), "deploy": format!("chat {i}")})
                .to_string()
        })
        .collect();
    std::fs::write(d.path().join("tasks.jsonl"), tasks.join("\n")).expect("w");
    std::fs::write(d.path().join("ref.txt"), "a cat sat on a mat").expect("w");
    let su = d.path().join("s.toml");
    std::fs::write(
        &su,
        "hook = \"blocks.1.hook_resid_post\"\nanswers = [\"a\", \"b\"]\n[[task]]\nname = \"st\"\n\
         family = \"study\"\ndataset = \"tasks.jsonl\"\npairs = \"pairs.jsonl\"\nreference = \"ref.txt\"\n\
         question = \"test?\"\ndeploy_prompt = \"real\"\n",
    )
    .expect("w");
    let out = d.path().join("out");
    let (ok, stdout, err) = pragma(&[
        "eval",
        "run",
        s(&m),
        "--suite",
        s(&su),
        "--bootstrap",
        "100",
        "--out",
        s(&out),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("1 cells computed"), "{err}");
    assert!(
        stdout.contains("**study**") && stdout.contains("steered minus random control"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("r"))
            .expect("json");
    assert!(
        v["tasks"][0]["study"]["arms"]
            .as_array()
            .expect("arms")
            .len()
            >= 3,
        "{v}"
    );
}

#[test]
fn preset_sae_is_trained_on_first_use_and_reused() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny_gguf(d.path(), 4);
    dataset(d.path(), "a", 40, false);
    dataset(d.path(), "b", 40, false);
    let docs: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "the {} cat sat on the mat number {i}",
                ["red", "big"][i % 2]
            )
        })
        .collect();
    std::fs::write(d.path().join("corpus.txt"), docs.join("\n\n")).expect("w");
    let su = suite(
        d.path(),
        "blocks.1.hook_resid_post",
        "[sae]\ndata = \"corpus.txt\"\nstore_tokens = 2000\nctx = 32\nk = 4\n\
         expansion = 2\ntokens = 4096\nbatch_tokens = 256\n",
    );
    let text = std::fs::read_to_string(&su).expect("r").replace(
        "dataset = \"b.jsonl\"",
        "dataset = \"b.jsonl\"\ntechniques = [\"sae-latent\", \"probe\"]",
    );
    let text = text.replacen(
        "dataset = \"a.jsonl\"",
        "dataset = \"a.jsonl\"\ntechniques = [\"probe\"]",
        1,
    );
    std::fs::write(&su, text).expect("w");
    let out = d.path().join("out");
    let args = [
        "eval",
        "run",
        s(&m),
        "--suite",
        s(&su),
        "--bootstrap",
        "100",
        "--out",
        s(&out),
    ];
    let (ok, stdout, err) = pragma(&args);
    assert!(ok, "{err}");
    assert!(err.contains("6 cells computed, 0 cached"), "{err}");
    assert!(stdout.contains("| sae-latent |"), "{stdout}");
    let presets: Vec<_> = std::fs::read_dir(out.join("sae-preset"))
        .expect("preset dir")
        .flatten()
        .collect();
    assert_eq!(presets.len(), 1);
    let dir = presets[0].path();
    assert!(
        dir.to_string_lossy().ends_with("-blocks.1.hook_resid_post"),
        "{dir:?}"
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sae/cfg.json")).expect("cfg"))
            .expect("json");
    assert_eq!(cfg["d_sae"], 64, "{cfg}");
    assert_eq!(cfg["k"], 4, "{cfg}");
    let plan = std::fs::read_to_string(out.join("plan.json")).expect("plan");
    assert!(plan.contains("preset ("), "{plan}");
    let modified = std::fs::metadata(dir.join("sae/sae_weights.safetensors"))
        .and_then(|m| m.modified())
        .expect("mtime");

    // Reused: nothing retrained, every cell cached.
    let (ok, _, err) = pragma(&args);
    assert!(ok && err.contains("0 cells computed, 6 cached"), "{err}");
    let again = std::fs::metadata(dir.join("sae/sae_weights.safetensors"))
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(modified, again, "the preset SAE was retrained");

    // --sae none: the SAE technique is listed as not run.
    let (ok, stdout, err) = pragma(&[
        "eval",
        "run",
        s(&m),
        "--suite",
        s(&su),
        "--sae",
        "none",
        "--bootstrap",
        "100",
        "--out",
        s(&out),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("no SAE (--sae none)"), "{stdout}");

    // A bad recipe is refused when the suite is read.
    let bad = std::fs::read_to_string(&su)
        .expect("r")
        .replace("k = 4", "k = 0");
    std::fs::write(&su, bad).expect("w");
    let (ok, _, err) = pragma(&args);
    assert!(!ok && err.contains("[sae] k"), "{err}");
}
