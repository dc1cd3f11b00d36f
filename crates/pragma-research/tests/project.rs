//! The project file and the decision rule: the template checks against the default eval
//! suite; unknown tasks and techniques are errors with suggestions; a past time box is
//! refused at init; verdicts on synthetic results whose answer is known (clearly ahead,
//! overlapping CIs, clearly behind, time box passed).

use pragma_research::project::{parse_date, today, verdict, Project, Score, Standing};

fn suite_dir(d: &std::path::Path) -> String {
    // The default suite and its datasets, as `pragma eval run --suite default` writes them.
    let p = pragma_eval::suite::Suite::write_default(d).expect("default suite");
    p.strip_prefix(d).expect("relative").display().to_string()
}

#[test]
fn init_writes_a_template_that_checks_and_bad_files_are_clear_errors() {
    let d = tempfile::tempdir().expect("tmp");
    let suite = suite_dir(d.path());
    let p = Project::init(
        d.path(),
        "models should not notice they are tested",
        "2999-01-01",
        &suite,
    )
    .expect("init");
    assert_eq!(p.proxies[0].task, "eval-awareness");
    assert!(
        Project::init(d.path(), "x", "2999-01-01", &suite).is_err(),
        "overwrote"
    );
    let e = Project::init(&d.path().join("sub"), "x", "2001-01-01", &suite).expect_err("past");
    assert!(e.to_string().contains("is in the past"), "{e}");
    let path = d.path().join("pragma.toml");
    let text = std::fs::read_to_string(&path).expect("r");
    for (from, to, msg) in [
        (
            "task = \"eval-awareness\"",
            "task = \"eval-awarenes\"",
            "did you mean 'eval-awareness'",
        ),
        ("\"diffmean\"]", "\"diffmeen\"]", "did you mean 'diffmean'"),
        (
            "decision_rule = \"ci-above\"",
            "decision_rule = \"ci-abov\"",
            "did you mean 'ci-above'",
        ),
        (
            "time_box = \"2999-01-01\"",
            "time_box = \"soon\"",
            "expected a date YYYY-MM-DD",
        ),
    ] {
        std::fs::write(&path, text.replace(from, to)).expect("w");
        let e = Project::load(&path).expect_err("bad file").to_string();
        assert!(e.contains(msg), "{from}: {e}");
    }
}

#[test]
fn the_decision_rule_on_known_cases() {
    let s = |mean: f64, lo: f64, hi: f64| Score { mean, lo, hi };
    let baselines = vec![
        ("bow".to_string(), s(0.70, 0.65, 0.75)),
        ("prompt".to_string(), s(0.60, 0.50, 0.70)),
    ];
    let day = parse_date("2026-12-15").expect("date");
    let v = verdict("probe", s(0.90, 0.86, 0.94), &baselines, day, day - 1).expect("v");
    assert_eq!(v.standing, Standing::Ahead);
    assert!(v.says.contains("best baseline bow"), "{}", v.says);
    let v = verdict("probe", s(0.74, 0.70, 0.78), &baselines, day, day - 1).expect("v");
    assert_eq!(v.standing, Standing::WithinNoise);
    let v = verdict("probe", s(0.55, 0.50, 0.60), &baselines, day, day).expect("v");
    assert_eq!((v.standing, v.time_box_passed), (Standing::Behind, false));
    let v = verdict("probe", s(0.74, 0.70, 0.78), &baselines, day, day + 1).expect("v");
    assert!(v.time_box_passed && v.says.contains("pivot"), "{}", v.says);
    let v = verdict("probe", s(0.90, 0.86, 0.94), &baselines, day, day + 30).expect("v");
    assert_eq!(v.standing, Standing::Ahead);
    assert!(!v.says.contains("pivot"));
    assert!(verdict("probe", s(0.9, 0.8, 1.0), &[], day, day).is_err());
    assert_eq!(parse_date("1970-01-01").expect("d"), 0);
    assert_eq!(parse_date("2000-03-01").expect("d"), 11_017);
    assert!(today() > parse_date("2026-01-01").expect("d"));
}
