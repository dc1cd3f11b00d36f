//! `pragma cache` killed with SIGKILL at arbitrary moments resumes to a store
//! byte-identical to an uninterrupted run.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use candle_core::quantized::GgmlDType;
use pragma_model::testing::{tiny_config, tiny_weights, write_gguf};
use pragma_model::Arch;

fn cache_cmd(model: &Path, data: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pragma"));
    c.args(["cache"])
        .arg(model)
        .arg("--data")
        .arg(data)
        .args([
            "--hooks",
            "blocks.*.hook_resid_post,blocks.1.mlp.hook_post",
            "--ctx",
            "48",
            "--batch",
            "4",
        ])
        .args(["--dtype", "f16", "--shard-tokens", "300", "--out"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn dir_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read"),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn kill_minus_nine_then_resume_gives_identical_bytes() {
    let d = tempfile::tempdir().expect("tmp");
    let cfg = tiny_config(Arch::Qwen2);
    let model = d.path().join("tiny.gguf");
    write_gguf(
        &model,
        &cfg,
        &tiny_weights(&cfg, 9).expect("w"),
        GgmlDType::F32,
    )
    .expect("gguf");
    let data = d.path().join("corpus.jsonl");
    let lines: Vec<String> = (0..1500)
        .map(|i| serde_json::json!({"text": format!("note {i}: the {} fox is {} today", ["red", "grey", "old"][i % 3], i * 7)}).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n")).expect("corpus");

    let full = d.path().join("full");
    assert!(cache_cmd(&model, &data, &full)
        .status()
        .expect("run")
        .success());

    let part = d.path().join("part");
    let mut kills = 0;
    for delay_ms in [30u64, 90, 200, 350, 600, 900] {
        let mut child = cache_cmd(&model, &data, &part).spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(cache_cmd(&model, &data, &part)
        .status()
        .expect("resume")
        .success());
    println!("killed {kills} times before finishing");
    assert!(
        kills >= 1,
        "the run finished before any kill; enlarge the corpus"
    );
    let (a, b) = (dir_bytes(&full), dir_bytes(&part));
    assert_eq!(
        a.iter().map(|x| &x.0).collect::<Vec<_>>(),
        b.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs after kill/resume");
    }
}

/// A sharded job on a local folder (no object store): three parts, one run twice, equal
/// the one-process store; finalize refuses before all parts are done and is idempotent;
/// bad --shard specs are clear errors; `sae train --hook-index` trains one hook of a list
/// (index given, or `auto` from PRAGMA_SHARD_INDEX) into OUT/<hook>.
#[test]
fn sharded_local_job_equals_one_process_and_trains_one_sae_per_hook() {
    let d = tempfile::tempdir().expect("tmp");
    let m = common::tiny_gguf(d.path(), 7);
    let m = m.to_str().expect("utf8");
    let corpus = d.path().join("c.txt");
    let docs: Vec<String> = (0..90)
        .map(|i| {
            format!(
                "document {i} says the {} fox ran {} times",
                ["red", "grey"][i % 2],
                i % 7
            )
        })
        .collect();
    std::fs::write(&corpus, docs.join("\n")).expect("w");
    let c = corpus.to_str().expect("utf8");
    let hooks = "blocks.0.hook_resid_post,blocks.1.hook_resid_post";
    let args = |out: &str, shard: Option<&str>| {
        let mut a = vec![
            "cache",
            m,
            "--data",
            c,
            "--lines",
            "--hooks",
            hooks,
            "--ctx",
            "32",
            "--shard-tokens",
            "120",
            "--out",
        ];
        a.push(out);
        if let Some(s) = shard {
            a.extend(["--shard", s]);
        }
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        common::pragma(&refs)
    };
    let one = d.path().join("one");
    let (ok, _, err) = run(args(one.to_str().expect("p"), None));
    assert!(ok, "{err}");
    let job = d.path().join("job");
    let job_s = job.to_str().expect("p").to_string();
    for s in ["0/3", "2/3"] {
        let (ok, out, err) = run(args(&job_s, Some(s)));
        assert!(
            ok && out.starts_with(&format!("part {}", &s[..1])),
            "{out}{err}"
        );
    }
    let (ok, _, err) = common::pragma(&["store", "finalize", &job_s]);
    assert!(!ok && err.contains("1 (not started)"), "{err}");
    let (ok, out, _) = common::pragma(&["store", "info", &job_s]);
    assert!(ok && out.contains("unfinished parts: 1"), "{out}");
    for s in ["1/3", "1/3"] {
        let (ok, _, err) = run(args(&job_s, Some(s)));
        assert!(ok, "{err}");
    }
    let (ok, out, err) = common::pragma(&["store", "finalize", &job_s, "--verify"]);
    assert!(ok && out.starts_with("finalized"), "{out}{err}");
    let (ok, out, _) = common::pragma(&["store", "finalize", &job_s]);
    assert!(ok && out.starts_with("already finalized"), "{out}");
    let read =
        |p: &std::path::Path| std::fs::read_to_string(p.join("manifest.json")).expect("manifest");
    assert_eq!(read(&job), read(&one));
    let man: serde_json::Value = serde_json::from_str(&read(&one)).expect("json");
    let shards = man["shards"].as_array().expect("shards");
    assert!(shards.len() >= 6, "{} shards", shards.len());
    for s in shards {
        let f = s["file"].as_str().expect("file");
        assert_eq!(
            std::fs::read(job.join(f)).expect("a"),
            std::fs::read(one.join(f)).expect("b"),
            "{f}"
        );
    }
    // A part of another job (other settings) is refused by the plan.
    let mut other = args(&job_s, Some("1/3"));
    let i = other.iter().position(|a| a == "--ctx").expect("ctx") + 1;
    other[i] = "16".into();
    let (ok, _, err) = run(other);
    assert!(!ok && err.contains("planned for another job"), "{err}");
    // Another split of the same job, or no --shard on a sharded folder: refused, saying why.
    let (ok, _, err) = run(args(&job_s, Some("1/4")));
    assert!(
        !ok && err.contains("job split into 3 parts; use --shard I/3"),
        "{err}"
    );
    let fresh = d.path().join("fresh");
    let (ok, _, _) = run(args(fresh.to_str().expect("p"), Some("0/2")));
    assert!(ok);
    let (ok, _, err) = run(args(fresh.to_str().expect("p"), None));
    assert!(!ok && err.contains("holds a sharded job"), "{err}");
    let (ok, _, err) = common::pragma(&["store", "info", fresh.to_str().expect("p"), "--verify"]);
    assert!(ok, "{err}");
    let (ok, _, err) = common::pragma(&[
        "sae",
        "train",
        "--store",
        fresh.to_str().expect("p"),
        "--hook",
        "blocks.0.hook_resid_post",
        "-o",
        "x",
    ]);
    assert!(
        !ok && err.contains("not finalized yet") && err.contains("pragma store finalize"),
        "{err}"
    );
    let (ok, _, err) = common::pragma(&["store", "info", "/no/such/store"]);
    assert!(
        !ok && err.contains("no store here") && !err.contains("no such file: no such file"),
        "{err}"
    );
    // Bad specs.
    for (spec, msg) in [
        ("3/3", "out of range"),
        ("x/3", "expected an index"),
        ("1", "expected I/N"),
        ("0/0", "N >= 1"),
    ] {
        let (ok, _, err) = run(args(&job_s, Some(spec)));
        assert!(!ok && err.contains(msg), "{spec}: {err}");
    }
    // One SAE per hook.
    let saes = d.path().join("saes");
    let sae_args = |ix: Option<&str>| {
        let mut a = vec![
            "sae",
            "train",
            "--store",
            &job_s,
            "--hook",
            hooks,
            "--d-sae",
            "32",
            "--k",
            "4",
            "--tokens",
            "512",
            "--batch-tokens",
            "128",
            "-o",
            saes.to_str().expect("p"),
        ];
        if let Some(i) = ix {
            a.extend(["--hook-index", i]);
        }
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let (ok, _, err) = run(sae_args(None));
    assert!(!ok && err.contains("--hook-index"), "{err}");
    let (ok, _, err) = run(sae_args(Some("1")));
    assert!(ok, "{err}");
    assert!(saes
        .join("blocks.1.hook_resid_post/sae_weights.safetensors")
        .exists());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pragma"))
        .args(sae_args(Some("auto")))
        .env("PRAGMA_SHARD_INDEX", "0")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(saes
        .join("blocks.0.hook_resid_post/sae_weights.safetensors")
        .exists());
}
