//! Judging a rerun: metrics identical, inside the recorded CI, or different; JSON result
//! files equal but for timing fields; headline metrics from a probe sweep's results.json.

use pragma_research::reproduce::{compare_metrics, compare_runs, headline, json_equal_but_timings};
use pragma_research::runs::{Artifact, Run};

#[test]
fn metrics_identical_within_ci_or_different() {
    let recorded =
        serde_json::json!({"test_auroc": 0.90, "test_auroc_ci": [0.85, 0.95], "fvu": 0.2});
    let same = compare_metrics(&recorded, &recorded);
    assert!(same.iter().all(|m| m.reproduced && m.says == "identical"));
    let now = serde_json::json!({"test_auroc": 0.93, "fvu": 0.2});
    let c = compare_metrics(&recorded, &now);
    let auroc = c.iter().find(|m| m.name == "test_auroc").expect("auroc");
    assert!(auroc.reproduced && auroc.says.contains("within the recorded 95% CI"));
    let now = serde_json::json!({"test_auroc": 0.70, "fvu": 0.25});
    let c = compare_metrics(&recorded, &now);
    assert!(c.iter().all(|m| !m.reproduced), "{c:?}"); // auroc outside its CI; fvu has no CI
}

#[test]
fn json_timings_and_headline() {
    let d = tempfile::tempdir().expect("tmp");
    let (a, b, c) = (
        d.path().join("a.json"),
        d.path().join("b.json"),
        d.path().join("c.json"),
    );
    std::fs::write(
        &a,
        r#"{"x": 1, "fit_seconds": 0.5, "inner": [{"y": 2, "seconds": 3}]}"#,
    )
    .expect("w");
    std::fs::write(
        &b,
        r#"{"x": 1, "fit_seconds": 0.7, "inner": [{"y": 2, "seconds": 9}]}"#,
    )
    .expect("w");
    std::fs::write(
        &c,
        r#"{"x": 2, "fit_seconds": 0.5, "inner": [{"y": 2, "seconds": 3}]}"#,
    )
    .expect("w");
    assert!(json_equal_but_timings(&a, &b));
    assert!(!json_equal_but_timings(&a, &c));
    std::fs::write(
        d.path().join("results.json"),
        r#"{"best_logistic_layer": 3, "layers": [{"layer": 2, "logistic": {"test_auroc": 0.6, "test_auroc_ci": [0.5, 0.7]}},
            {"layer": 3, "logistic": {"test_auroc": 0.9, "test_auroc_ci": [0.8, 1.0]}}],
            "baselines": [{"name": "bag-of-words", "scored": {"test_auroc": 0.7}}]}"#,
    )
    .expect("w");
    let h = headline("probe train", d.path());
    assert_eq!(h["best_logistic_layer"], 3);
    assert_eq!(h["test_auroc"], 0.9);
    assert_eq!(h["baselines"][0]["name"], "bag-of-words");
    assert!(headline("lens", d.path()).is_null());
    std::fs::write(
        d.path().join("report.json"),
        r#"{"families": [{"family": "detection", "techniques": [["probe", 0.93, 12], ["bow", 0.85, 5]],
            "margin": {"mean": 0.058, "lo": 0.011, "hi": 0.116}},
            {"family": "planted", "techniques": [["sae-diff", 3.0, 3]], "margin": null}]}"#,
    )
    .expect("w");
    let e = headline("eval run", d.path());
    assert_eq!(e["detection_best"], "probe");
    assert_eq!(e["detection_best_mean"], 0.93);
    assert_eq!(e["detection_margin_ci"][1], 0.116);
    assert_eq!(e["planted_best"], "sae-diff");
    assert!(e.get("planted_margin").is_none());
}

fn run(id: i64, argv: &[&str], input_sha: &str, metrics: serde_json::Value) -> Run {
    Run {
        id,
        workflow: "probe train".into(),
        argv: argv.iter().map(|a| a.to_string()).collect(),
        cwd: "/w".into(),
        pragma_version: "0.2.0".into(),
        started: 0.0,
        started_utc: "2026-12-01 12:00:07".into(),
        seconds: Some(1.0),
        status: "ok".into(),
        inputs: vec![Artifact {
            path: "data.jsonl".into(),
            bytes: 10,
            sha256: Some(input_sha.into()),
            modified: None,
        }],
        metrics,
        artifacts: vec![],
        tags: vec![],
    }
}

#[test]
fn runs_compared_against_the_first() {
    let a = run(
        1,
        &["/bin/pragma", "probe", "train", "--seed", "0"],
        "aa",
        serde_json::json!({"test_auroc": 0.9, "fvu": 0.2, "name": "x"}),
    );
    let b = run(
        2,
        &["/other/pragma", "probe", "train", "--seed", "1"],
        "bb",
        serde_json::json!({"test_auroc": 0.8, "l0": 12}),
    );
    let c = compare_runs(&[a, b]);
    assert_eq!(c.ids, [1, 2]);
    assert_eq!(c.runs[0].started_utc, "2026-12-01 12:00");
    // The binary's path is not an argument; the seed is.
    assert_eq!(c.arguments.len(), 1);
    assert_eq!(c.arguments[0].added, ["1"]);
    assert_eq!(c.arguments[0].removed, ["0"]);
    assert_eq!(c.changed_inputs.len(), 1);
    assert_eq!(c.changed_inputs[0].path, "data.jsonl");
    let names: Vec<&str> = c.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["fvu", "l0", "test_auroc"]); // numeric only, sorted
    let auroc = &c.metrics[2];
    assert_eq!(auroc.values, [Some(0.9), Some(0.8)]);
    assert!((auroc.deltas[1].expect("delta") + 0.1).abs() < 1e-12);
    assert_eq!(auroc.deltas[0], None);
    assert_eq!(c.metrics[0].values, [Some(0.2), None]);
    assert_eq!(c.metrics[1].deltas, [None, None]); // the base lacks l0
}
