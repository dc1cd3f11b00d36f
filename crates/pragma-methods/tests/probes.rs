//! Probes on a tiny random model: datasets and their errors, splits, the sweep with
//! baselines, probe files and per-token scores.

use std::path::Path;

use pragma_methods::probe::*;
use pragma_methods::steering::Position;
use pragma_model::hooks::HookPoint;
use pragma_model::testing::{capture_one, tiny_model};
use pragma_model::InputRule;
use pragma_model::{Arch, Model};

fn tiny(dir: &Path) -> Model {
    tiny_model(dir, Arch::Llama, 5).expect("tiny model")
}

fn write(dir: &Path, name: &str, lines: &[String]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n")).expect("write");
    p
}

/// A separable toy task for a byte-level model: texts with 'x' vs texts with 'o'.
fn toy(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let (c, l) = if i % 2 == 0 { ("x", 1) } else { ("o", 0) };
            let filler = ["ab", "cd", "ef", "gh", "ij"][i % 5];
            format!(r#"{{"text": "{filler} {c}{c} {}", "label": {l}}}"#, i % 7)
        })
        .collect()
}

#[test]
fn datasets_parse_labels_and_refuse_bad_input() {
    let d = tempfile::tempdir().expect("tmp");
    let p = write(d.path(), "ok.jsonl", &toy(20));
    let ds = read_dataset(&p, None).expect("read");
    assert_eq!(ds.examples.len(), 20);
    assert_eq!(ds.classes, ["0".to_string(), "1".to_string()]);
    assert_eq!(ds.examples.iter().filter(|e| e.label == 1).count(), 10);

    // String labels: sorted, the later one positive unless named.
    let s: Vec<String> = ["cat", "dog", "cat", "dog"]
        .iter()
        .enumerate()
        .map(|(i, l)| format!(r#"{{"text": "t{i}", "label": "{l}"}}"#))
        .collect();
    let p = write(d.path(), "str.jsonl", &s);
    assert_eq!(read_dataset(&p, None).expect("r").classes[1], "dog");
    let r = read_dataset(&p, Some("cat")).expect("r");
    assert_eq!(r.classes[1], "cat");
    assert_eq!(r.examples[0].label, 1);

    let err = |lines: &[&str]| {
        let lines: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        read_dataset(&write(d.path(), "bad.jsonl", &lines), None)
            .expect_err("bad")
            .to_string()
    };
    let e = err(&[
        r#"{"text": "a", "label": 1}"#,
        r#"{"text": "b", "label": 1}"#,
    ]);
    assert!(
        e.contains("expected exactly 2 classes") && e.contains("found 1"),
        "{e}"
    );
    let e = err(&[
        r#"{"text": "a", "label": 1}"#,
        r#"{"text": "b", "label": "no"}"#,
    ]);
    assert!(
        e.contains("bad.jsonl:2") && e.contains("use one type"),
        "{e}"
    );
    let e = err(&[r#"{"text": "a", "label": 1}"#, "not json"]);
    assert!(e.contains("bad.jsonl:2"), "{e}");
    let e = err(&[]);
    assert!(e.contains("no examples"), "{e}");
    let e = err(&[r#"{"text": "a", "label": [1]}"#]);
    assert!(e.contains("not a bool, integer or string"), "{e}");
    let e = err(&[r#"{"text": "", "label": 1}"#]);
    assert!(e.contains("empty text"), "{e}");

    // Too few examples for the split.
    let ds = read_dataset(&write(d.path(), "few.jsonl", &toy(4)), None).expect("r");
    let e = splits(&ds, (0.6, 0.2), 0).expect_err("few").to_string();
    assert!(
        e.contains("too few for a train/validation/test split"),
        "{e}"
    );
}

#[test]
fn splits_are_stratified_seeded_and_disjoint() {
    let labels: Vec<u8> = (0..100).map(|i| u8::from(i % 4 == 0)).collect(); // 25 positives
    let a = make_splits(&labels, (0.6, 0.2), 3).expect("s");
    assert_eq!(a, make_splits(&labels, (0.6, 0.2), 3).expect("s"));
    assert_ne!(a, make_splits(&labels, (0.6, 0.2), 4).expect("s"));
    let count = |s: Split, l: u8| (0..100).filter(|&i| a[i] == s && labels[i] == l).count();
    assert_eq!(
        (
            count(Split::Train, 1),
            count(Split::Validation, 1),
            count(Split::Test, 1)
        ),
        (15, 5, 5)
    );
    assert_eq!(
        (
            count(Split::Train, 0),
            count(Split::Validation, 0),
            count(Split::Test, 0)
        ),
        (45, 15, 15)
    );
}

#[test]
fn sweep_fits_every_layer_with_baselines_and_saves_probes() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny(d.path());
    let ds = read_dataset(&write(d.path(), "toy.jsonl", &toy(60)), None).expect("read");
    let layers = vec![0, 1, 2];
    let feats = features(
        &m,
        &ds,
        "hook_resid_post",
        &layers,
        Position::Last,
        InputRule::default(),
        &mut |_| {},
    )
    .expect("features");
    assert_eq!(feats.len(), 3);
    assert_eq!(feats[0].dims(), &[60, m.cfg().d_model]);
    let cfg = ProbeConfig {
        site: "hook_resid_post".into(),
        layers: layers.clone(),
        position: Position::Last,
        c_grid: vec![0.01, 1.0],
        fractions: (0.6, 0.2),
        seed: 0,
        bootstrap: 200,
        question: Some("x?".into()),
        yes: "y".into(),
        no: "n".into(),
        input: InputRule::default(),
    };
    let out = sweep(&m, &ds, &feats, &cfg, 0.0, &mut |_| {}).expect("sweep");
    let r = &out.report;
    assert_eq!((r.n_train, r.n_validation, r.n_test), (36, 12, 12));
    assert_eq!(r.layers.len(), 3);
    for l in &r.layers {
        let s = &l.logistic;
        assert!(
            s.test_auroc_ci.0 <= s.test_auroc + 1e-12 && s.test_auroc <= s.test_auroc_ci.1 + 1e-12
        );
        assert!(cfg.c_grid.contains(&s.c.expect("c")));
    }
    // The best layer is the validation argmax, not the test one.
    let best = r.layers.iter().fold(&r.layers[0], |b, l| {
        if l.logistic.val_auroc > b.logistic.val_auroc {
            l
        } else {
            b
        }
    });
    assert_eq!(r.best_logistic_layer, best.layer);
    // The toy task is linearly separable from the tokens: the bag-of-words baseline finds it.
    let bow = &r.baselines[0];
    assert_eq!(bow.name, "bag-of-words");
    assert!(bow.scored.test_auroc > 0.9, "bow {}", bow.scored.test_auroc);
    assert_eq!(r.baselines[1].name, "prompting");
    assert!(r.markdown().contains("| baseline |"));

    // The saved probe reproduces the sweep's test AUROC from raw activations.
    let path = d.path().join("probe.safetensors");
    out.logistic.save(&path).expect("save");
    let p = Probe::load(&path).expect("load");
    assert_eq!(
        p.meta.hook,
        format!("blocks.{}.hook_resid_post", r.best_logistic_layer)
    );
    let k = layers
        .iter()
        .position(|&l| l == r.best_logistic_layer)
        .expect("k");
    let all = p.score_rows(&feats[k]).expect("scores");
    let split = splits(&ds, (0.6, 0.2), 0).expect("s");
    let (s, l): (Vec<f64>, Vec<u8>) = (0..60)
        .filter(|&i| split[i] == Split::Test)
        .map(|i| (all[i], ds.examples[i].label))
        .unzip();
    let a = pragma_methods::linear::auroc(&s, &l).expect("auc");
    assert!((a - r.layers[k].logistic.test_auroc).abs() < 1e-6);

    // Per-token scores: the last row of a text's activations gives the text's score.
    let point = p.hook_point(&m).expect("point");
    let ids = pragma_methods::steering::side_ids(&m, &ds.examples[0].input, InputRule::default())
        .expect("ids");
    let rows = capture_one(&m, &ids, point).expect("capture");
    let per_token = p
        .score_rows(&rows.narrow(0, 1, ids.len() - 1).expect("n"))
        .expect("s");
    assert!((per_token.last().expect("last") - all[0]).abs() < 1e-4);
    assert!(matches!(point, HookPoint::ResidPost(_)));

    // A probe for another width is refused with both widths named.
    let mut other = p.clone();
    other.meta.d_model += 1;
    let e = other.hook_point(&m).expect_err("width").to_string();
    assert!(e.contains("d_model"), "{e}");
}

#[test]
fn texts_longer_than_the_context_are_refused() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny(d.path());
    let long = "z".repeat(m.cfg().context_length + 5);
    let mut lines = toy(10);
    lines.push(format!(r#"{{"text": "{long}", "label": 1}}"#));
    let ds = read_dataset(&write(d.path(), "long.jsonl", &lines), None).expect("read");
    let e = features(
        &m,
        &ds,
        "hook_resid_post",
        &[1],
        Position::Last,
        InputRule::default(),
        &mut |_| {},
    )
    .expect_err("long")
    .to_string();
    assert!(
        e.contains("example 11") && e.contains("longer than the model's context"),
        "{e}"
    );
}

#[test]
fn groups_stay_in_one_split() {
    let groups: Vec<String> = (0..90).map(|i| format!("g{}", i / 3)).collect();
    let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    let s = make_group_splits(&refs, (0.6, 0.2), 1);
    for g in 0..30 {
        let k = 3 * g;
        assert!(s[k] == s[k + 1] && s[k] == s[k + 2], "group g{g} was split");
    }
    let count = |x: Split| s.iter().filter(|&&v| v == x).count();
    assert_eq!(
        (
            count(Split::Train),
            count(Split::Validation),
            count(Split::Test)
        ),
        (54, 18, 18)
    );
    // A dataset whose lines all carry a group is split by group.
    let d = tempfile::tempdir().expect("tmp");
    let lines: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"text": "t{i}", "label": {}, "group": {}}}"#,
                i % 2,
                i / 2
            )
        })
        .collect();
    let ds = read_dataset(&write(d.path(), "g.jsonl", &lines), None).expect("read");
    let s = splits(&ds, (0.6, 0.2), 0).expect("splits");
    for k in (0..40).step_by(2) {
        assert_eq!(s[k], s[k + 1], "pair {k} straddles splits");
    }
}
