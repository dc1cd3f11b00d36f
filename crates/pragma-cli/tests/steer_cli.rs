//! `pragma steer train` and `pragma generate --steer` end to end on a tiny model.

mod common;

use common::{pragma, tiny_gguf};

#[test]
fn train_then_steer_generation() {
    let d = tempfile::tempdir().expect("tmp");
    let model = tiny_gguf(d.path(), 4);
    let pairs = d.path().join("pairs.jsonl");
    std::fs::write(&pairs, "{\"positive\": \"the sun is warm\", \"negative\": \"the snow is cold\"}\n{\"positive\": \"we won\", \"negative\": \"we lost\"}\n").expect("w");
    let vec = d.path().join("v.safetensors");
    let m = model.to_str().expect("utf8");
    let (ok, out, err) = pragma(&[
        "steer",
        "train",
        m,
        "--pairs",
        pairs.to_str().expect("p"),
        "--layers",
        "0..2",
        "--out",
        vec.to_str().expect("v"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("trained 2 vectors (2 pairs"), "{out}");
    let v = vec.to_str().expect("v");
    let gen = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            m,
            "--prompt",
            "the weather",
            "--max-tokens",
            "8",
        ];
        args.extend_from_slice(extra);
        pragma(&args)
    };
    let (_, base, _) = gen(&[]);
    let (ok, zero, err) = gen(&["--steer", v, "--scale", "0"]);
    assert!(ok, "{err}");
    assert_eq!(zero, base, "scale 0 is the unsteered output");
    let (ok, steered, _) = gen(&["--steer", v, "--scale", "8"]);
    assert!(ok && steered != base, "a large scale changes the output");
    let (ok, _, err) = gen(&["--steer", v, "--steer-layers", "2"]);
    assert!(
        !ok && err.contains("layer 2 is not in this vector"),
        "{err}"
    );
    let (ok, _, err) = gen(&["--steer", v, "--scale", "NaN"]);
    assert!(!ok && err.contains("finite"), "{err}");
    let (ok, _, err) = gen(&["--steer", pairs.to_str().expect("p")]);
    assert!(!ok && err.contains("not a safetensors file"), "{err}");
}

#[test]
fn steer_demo_prints_unsteered_and_steered_answers() {
    let d = tempfile::tempdir().expect("tmp");
    let model = tiny_gguf(d.path(), 4);
    let pairs = d.path().join("pairs.jsonl");
    std::fs::write(&pairs, "{\"positive\": \"good\", \"negative\": \"bad\"}\n").expect("w");
    let m = model.to_str().expect("utf8");
    let p = pairs.to_str().expect("p");
    let (ok, out, err) = pragma(&[
        "steer",
        "demo",
        m,
        "--pairs",
        p,
        "--prompt",
        "hi",
        "--at",
        "1:8",
        "--at",
        "2:-8",
        "--max-tokens",
        "4",
    ]);
    assert!(ok, "{err}");
    for s in [
        "--- unsteered ---",
        "--- layer 1, scale +8 ---",
        "--- layer 2, scale -8 ---",
    ] {
        assert!(out.contains(s), "{out}");
    }
    let (ok, _, err) = pragma(&["steer", "demo", m, "--pairs", p, "--at", "9:1"]);
    assert!(!ok && err.contains("expected LAYER:SCALE"), "{err}");
}

#[test]
fn steer_study_writes_its_report() {
    let d = tempfile::tempdir().expect("tmp");
    let model = tiny_gguf(d.path(), 4);
    let pairs = d.path().join("pairs.jsonl");
    std::fs::write(&pairs, "{\"positive\": \"a test\", \"negative\": \"a user\"}\n{\"positive\": \"exam\", \"negative\": \"home\"}\n").expect("w");
    let tasks = d.path().join("tasks.jsonl");
    let body: String = (0..4)
        .map(|i| {
            format!("{{\"task\": \"t{i}\", \"eval\": \"test {i}\", \"deploy\": \"kid {i}\"}}\n")
        })
        .collect();
    std::fs::write(&tasks, body).expect("w");
    let reference = d.path().join("ref.txt");
    std::fs::write(&reference, "the cat sat").expect("w");
    let out = d.path().join("study");
    let (ok, stdout, err) = pragma(&[
        "steer",
        "study",
        model.to_str().expect("m"),
        "--pairs",
        pairs.to_str().expect("p"),
        "--tasks",
        tasks.to_str().expect("t"),
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
        reference.to_str().expect("r"),
        "--samples",
        "1",
        "--sample-tokens",
        "2",
        "--out",
        out.to_str().expect("o"),
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("## 3. Result on the 2 held-out report tasks"),
        "{stdout}"
    );
    for f in ["report.md", "study.json", "sweep.svg", "vector.safetensors"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // Too few tasks: a clear error, nothing written elsewhere.
    std::fs::write(
        &tasks,
        "{\"task\": \"t\", \"eval\": \"a\", \"deploy\": \"b\"}\n",
    )
    .expect("w");
    let (ok, _, err) = pragma(&[
        "steer",
        "study",
        model.to_str().expect("m"),
        "--pairs",
        pairs.to_str().expect("p"),
        "--tasks",
        tasks.to_str().expect("t"),
        "--out",
        d.path().join("s2").to_str().expect("o"),
    ]);
    assert!(!ok && err.contains("at least 4"), "{err}");
}
