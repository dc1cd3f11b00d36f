//! The runs database: records round-trip; concurrent writers (8 threads, each with its
//! own connection, 50 runs each) lose nothing; a newer schema is refused with both
//! versions; an artifact's check reports a deleted or changed file; UTC formatting.

use pragma_research::runs::{inputs_of, out_of, utc, workflow_of, Artifact, Filter, NewRun, RunDb};

fn new(workflow: &str) -> NewRun {
    NewRun {
        workflow: workflow.into(),
        argv: vec!["pragma".into(), workflow.into()],
        cwd: "/tmp".into(),
        pragma_version: "test".into(),
        inputs: vec![],
        tags: vec!["t".into()],
    }
}

#[test]
fn records_round_trip_and_filter() {
    let d = tempfile::tempdir().expect("tmp");
    let db = RunDb::open(&d.path().join("runs.db")).expect("open");
    let f = d.path().join("input.txt");
    std::fs::write(&f, "hello").expect("w");
    let mut r = new("probe train");
    r.inputs = vec![Artifact::of(&f).expect("file")];
    let a = db.start(&r).expect("start");
    let b = db.start(&new("sae train")).expect("start");
    db.finish(a, "ok", &serde_json::json!({"test_auroc": 0.9}), &[])
        .expect("finish");
    let ra = db.get(a).expect("get");
    assert_eq!(ra.status, "ok");
    assert_eq!(ra.metrics["test_auroc"], 0.9);
    assert_eq!(
        ra.inputs[0].sha256.as_deref(),
        Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
    );
    assert_eq!(db.get(b).expect("get").status, "running");
    let probes = db
        .list(&Filter {
            workflow: Some("probe".into()),
            ..Filter::default()
        })
        .expect("list");
    assert_eq!(probes.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a]);
    assert_eq!(db.list(&Filter::default()).expect("all").len(), 2);
    assert!(db.get(99).is_err());
    // Artifact checks: changed, then deleted.
    std::fs::write(&f, "hellO").expect("w");
    assert!(ra.inputs[0]
        .check()
        .expect_err("changed")
        .contains("sha256 differs"));
    std::fs::remove_file(&f).expect("rm");
    assert!(ra.inputs[0]
        .check()
        .expect_err("changed")
        .contains("is missing"));
}

#[test]
fn concurrent_writers_lose_nothing() {
    let d = tempfile::tempdir().expect("tmp");
    let path = d.path().join("runs.db");
    RunDb::open(&path).expect("create");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let db = RunDb::open(&path).expect("open");
                for i in 0..50 {
                    let id = db.start(&new(&format!("w{t}"))).expect("start");
                    db.finish(id, "ok", &serde_json::json!({"i": i}), &[])
                        .expect("finish");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let db = RunDb::open(&path).expect("open");
    let all = db.list(&Filter::default()).expect("list");
    assert_eq!(all.len(), 400);
    assert!(all.iter().all(|r| r.status == "ok"));
    for t in 0..8 {
        let n = all.iter().filter(|r| r.workflow == format!("w{t}")).count();
        assert_eq!(n, 50, "thread {t}");
    }
}

#[test]
fn a_newer_schema_is_refused() {
    let d = tempfile::tempdir().expect("tmp");
    let path = d.path().join("runs.db");
    RunDb::open(&path).expect("create");
    let c = rusqlite::Connection::open(&path).expect("raw");
    c.execute(
        "UPDATE meta SET value = '7' WHERE key = 'schema_version'",
        [],
    )
    .expect("bump");
    let e = RunDb::open(&path).err().expect("refused").to_string();
    assert!(
        e.contains("schema v7") && e.contains("reads up to v1"),
        "{e}"
    );
}

#[test]
fn utc_formats_known_instants() {
    assert_eq!(utc(0.0), "1970-01-01 00:00:00");
    assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00");
    assert_eq!(utc(1_796_083_200.0 + 3661.0), "2026-12-01 01:01:01");
}

/// A check-in of project `p` with one technique's score (the fields the database keeps).
fn checkin(p: &str, mean: f64) -> pragma_research::checkin::Checkin {
    use pragma_research::checkin::{Checkin, Evidence, ProxyCheckin, Role};
    use pragma_research::project::Score;
    Checkin {
        number: 0,
        at: 0.0,
        at_utc: utc(0.0),
        project: p.into(),
        north_star: "x".into(),
        time_box: "2999-01-01".into(),
        days_left: 1,
        model: "m".into(),
        model_sha256: "0".repeat(64),
        proxies: vec![ProxyCheckin {
            task: "t".into(),
            family: "detection".into(),
            metric: "test AUROC".into(),
            evidence: vec![Evidence {
                name: "probe".into(),
                role: Role::Technique,
                score: Score {
                    mean,
                    lo: mean - 0.1,
                    hi: mean + 0.1,
                },
                previous: None,
            }],
            verdicts: vec![],
        }],
        says: "keep going".into(),
        run_id: None,
        eval_dir: "e".into(),
        computed: 0,
        cached: 0,
        rerun_of: None,
    }
}

#[test]
fn concurrent_checkins_get_distinct_numbers_per_project() {
    let d = tempfile::tempdir().expect("tmp");
    let path = d.path().join("runs.db");
    RunDb::open(&path).expect("create");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let db = RunDb::open(&path).expect("open");
                for i in 0..25 {
                    let project = if t % 2 == 0 { "/p/a" } else { "/p/b" };
                    db.add_checkin(&checkin(project, i as f64)).expect("add");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let db = RunDb::open(&path).expect("open");
    for p in ["/p/a", "/p/b"] {
        let all = db.checkins(p).expect("list");
        let numbers: Vec<usize> = all.iter().map(|c| c.number).collect();
        assert_eq!(numbers, (1..=50).collect::<Vec<_>>(), "{p}");
        assert!(all.iter().all(|c| c.project == p));
    }
    assert!(db.checkins("/p/c").expect("none").is_empty());
}

#[test]
fn a_command_line_names_its_workflow_output_and_inputs() {
    let argv = |s: &str| -> Vec<String> { s.split_whitespace().map(str::to_string).collect() };
    assert_eq!(
        workflow_of(&argv("/bin/pragma probe train m.gguf --data d.jsonl")).as_deref(),
        Some("probe train")
    );
    assert_eq!(
        workflow_of(&argv("pragma --no-record sae train --store s")).as_deref(),
        Some("sae train")
    );
    assert_eq!(
        workflow_of(&argv("pragma cache m --data c.txt")).as_deref(),
        Some("cache")
    );
    assert_eq!(workflow_of(&argv("pragma steer export --vector v")), None);
    assert_eq!(workflow_of(&argv("pragma info")), None);
    assert_eq!(out_of(&argv("pragma patch --out run")), Some("run".into()));
    assert_eq!(out_of(&argv("pragma sae train -o run")), Some("run".into()));
    assert_eq!(out_of(&argv("pragma cache --out=run")), Some("run".into()));
    assert_eq!(out_of(&argv("pragma cache")), None);

    // Existing files are hashed (absolute paths); a folder contributes its manifest or
    // cfg.json; the output folder and missing paths are left out.
    let d = tempfile::tempdir().expect("tmp");
    let data = d.path().join("d.jsonl");
    std::fs::write(&data, "{}").expect("w");
    let store = d.path().join("store");
    std::fs::create_dir(&store).expect("mkdir");
    std::fs::write(store.join("manifest.json"), "{}").expect("w");
    let out = d.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    std::fs::write(out.join("cfg.json"), "{}").expect("w");
    let line = format!(
        "pragma probe train --data={} --store {} --out {} /no/such/file",
        data.display(),
        store.display(),
        out.display()
    );
    let found = inputs_of(&argv(&line), Some(&out));
    let paths: Vec<&str> = found.iter().map(|a| a.path.as_str()).collect();
    let canon = |p: std::path::PathBuf| p.canonicalize().expect("canon").display().to_string();
    assert_eq!(
        paths,
        [
            canon(data).as_str(),
            canon(store.join("manifest.json")).as_str()
        ]
    );
    assert!(found
        .iter()
        .all(|a| a.sha256.as_deref().is_some_and(|h| h.len() == 64)));
}
