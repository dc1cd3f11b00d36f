//! Faults injected into pragma's writers, each ending in a complete, verified result
//! after a rerun or in a clear error, with everything finished before the fault intact:
//!
//! - `sae train` killed with SIGKILL at arbitrary moments (not only between checkpoints)
//!   resumes to weights byte-identical to an uninterrupted run;
//! - `eval run` killed at arbitrary moments resumes to the uninterrupted run's report;
//! - `transcripts import` and `transcripts score` killed at arbitrary moments resume to
//!   the uninterrupted run's transcripts and scores;
//! - a full disk (a small tmpfs) during `cache` is a clear error naming the disk, the
//!   shards written before it stay valid, and with room the rerun completes to the
//!   uninterrupted store's bytes;
//! - a folder made read-only during `sae train` is a clear error, and the rerun resumes
//!   from the last checkpoint to the uninterrupted weights;
//! - a corrupted shard, and a truncated SAE checkpoint, are named on resume (with what
//!   to do), not resumed over.
//!
//! The tmpfs tests mount filesystems, which needs root: where mounting is not allowed
//! they say so and pass.
//! (`pragma cache` under SIGKILL is in cache_cli.rs.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pragma"));
    c.env("PRAGMA_NO_RECORD", "1");
    c
}

fn run(c: &mut Command) -> (bool, String, String) {
    common::output(c)
}

/// A corpus of `n` short lines.
fn corpus(d: &Path, n: usize) -> PathBuf {
    let p = d.join("c.txt");
    std::fs::write(&p, common::cat_lines(n)).expect("w");
    p
}

fn cache(model: &Path, data: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.args(["cache", s(model), "--data", s(data), "--lines"])
        .args(["--hooks", "blocks.*.hook_resid_post", "--ctx", "32"])
        .args(["--dtype", "f32", "--shard-tokens", "256", "--out", s(out)]);
    c
}

fn sae_train(store: &Path, out: &Path, tokens: &str) -> Command {
    let mut c = bin();
    c.args([
        "sae",
        "train",
        "--store",
        s(store),
        "--hook",
        "blocks.1.hook_resid_post",
    ])
    .args([
        "--arch", "topk", "--k", "4", "--d-sae", "64", "--tokens", tokens,
    ])
    .args([
        "--batch-tokens",
        "64",
        "--checkpoint-every",
        "20",
        "--out",
        s(out),
    ]);
    c
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.path().is_file())
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

/// Spawn `c` and SIGKILL it after each delay in turn (a delay it outlives ends the
/// loop); the number of kills.
fn kill_at(mut make: impl FnMut() -> Command, delays_ms: &[u64]) -> usize {
    let mut kills = 0;
    for &ms in delays_ms {
        let mut child = make()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(ms));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
    }
    kills
}

#[test]
fn sae_training_killed_at_arbitrary_moments_resumes_to_identical_weights() {
    let d = tempfile::tempdir().expect("tmp");
    let m = common::tiny_gguf(d.path(), 4);
    let data = corpus(d.path(), 400);
    let store = d.path().join("store");
    assert!(run(&mut cache(&m, &data, &store)).0);
    let full = d.path().join("full");
    let (ok, _, err) = run(&mut sae_train(&store, &full, "60000"));
    assert!(ok, "{err}");
    let part = d.path().join("part");
    let kills = kill_at(
        || sae_train(&store, &part, "60000"),
        &[40, 110, 170, 260, 330, 420, 530, 650],
    );
    let (ok, out, err) = run(&mut sae_train(&store, &part, "60000"));
    assert!(ok, "{err}");
    println!("killed {kills} times; then: {out}{err}");
    assert!(
        kills >= 2,
        "training finished before two kills: make it longer"
    );
    let (a, b) = (
        std::fs::read(full.join("sae_weights.safetensors")).expect("a"),
        std::fs::read(part.join("sae_weights.safetensors")).expect("b"),
    );
    assert!(
        a == b,
        "resumed weights differ from the uninterrupted run's"
    );
}

#[test]
fn eval_run_killed_at_arbitrary_moments_resumes_to_the_same_report() {
    let d = tempfile::tempdir().expect("tmp");
    let m = common::tiny_gguf(d.path(), 5);
    // A detection task of 200 examples, three techniques and five seeds: 15 cells.
    let rows: Vec<String> = (0..200)
        .map(|i| {
            let pos = i % 2 == 0;
            serde_json::json!({
                "text": format!("{} note number {i} about the {}", if pos { "kindly" } else { "plainly" }, ["sea", "sky", "hill"][i % 3]),
                "label": i32::from(pos),
            })
            .to_string()
        })
        .collect();
    std::fs::write(d.path().join("a.jsonl"), rows.join("\n")).expect("w");
    std::fs::write(
        d.path().join("suite.toml"),
        "name = \"s\"\nhook = \"blocks.1.hook_resid_post\"\nseeds = 5\n\n[[task]]\nname = \"a\"\n\
         family = \"detection\"\ndataset = \"a.jsonl\"\ntechniques = [\"probe\", \"bow\", \"random\"]\n",
    )
    .expect("w");
    let eval = |out: &Path| {
        let mut c = bin();
        c.args([
            "eval",
            "run",
            s(&m),
            "--suite",
            s(&d.path().join("suite.toml")),
        ])
        .args(["--bootstrap", "200", "--yes", "--out", s(out)]);
        c
    };
    let full = d.path().join("full");
    let (ok, _, err) = run(&mut eval(&full));
    assert!(ok, "{err}");
    let part = d.path().join("part");
    let kills = kill_at(
        || eval(&part),
        &[15, 30, 45, 60, 80, 100, 130, 170, 220, 300],
    );
    let (ok, _, err) = run(&mut eval(&part));
    assert!(ok, "{err}");
    println!("killed {kills} times");
    assert!(
        kills >= 2,
        "the run finished before two kills: make it longer"
    );
    let strip = |p: &Path| {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p.join("report.json")).expect("r"))
                .expect("json");
        fn drop_timings(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Object(m) => {
                    m.retain(|k, _| !k.ends_with("seconds"));
                    m.values_mut().for_each(drop_timings);
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(drop_timings),
                _ => {}
            }
        }
        drop_timings(&mut v);
        v
    };
    assert_eq!(strip(&full), strip(&part));
}

/// Whether this process may mount a tmpfs (root, outside a container that forbids it):
/// the tmpfs tests say so and pass where it may not.
fn can_mount() -> bool {
    let d = tempfile::tempdir().expect("tmp");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs", s(d.path())])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if ok {
        let _ = Command::new("umount").arg(d.path()).status();
    } else {
        eprintln!("cannot mount a tmpfs here (not root?): skipping this fault injection");
    }
    ok
}

/// A tmpfs of `size` mounted at `dir` for the life of the value.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mkdir");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                s(dir),
            ])
            .status()
            .expect("mount")
            .success();
        assert!(ok, "mount tmpfs at {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    fn remount(&self, opts: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{opts}"), s(&self.0)])
            .status()
            .expect("remount")
            .success();
        assert!(ok, "remount {opts}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_with_room_the_rerun_completes() {
    if !can_mount() {
        return;
    }
    let d = tempfile::tempdir().expect("tmp");
    let m = common::tiny_gguf(d.path(), 4);
    let data = corpus(d.path(), 300);
    let full = d.path().join("full");
    assert!(run(&mut cache(&m, &data, &full)).0);
    let need: u64 = files(&full).iter().map(|(_, b)| b.len() as u64).sum();
    // Room for about a third of the store.
    let fs = Tmpfs::mount(
        &d.path().join("small"),
        &format!("{}k", need / 3 / 1024 + 4),
    );
    let part = fs.0.join("store");
    let (ok, _, err) = run(&mut cache(&m, &data, &part));
    assert!(!ok, "a store {need} bytes big fit in a third of that");
    assert!(
        err.contains("No space left on device") || err.contains("disk is full"),
        "not a clear error: {err}"
    );
    // What was written before the fault is intact: every shard the manifest lists
    // equals the uninterrupted run's.
    let reference = files(&full);
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(part.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    for sh in manifest["shards"].as_array().expect("shards") {
        let name = sh["file"].as_str().expect("file");
        let have = std::fs::read(part.join(name)).expect("shard");
        let want = &reference
            .iter()
            .find(|(n, _)| n == name)
            .expect("in reference")
            .1;
        assert!(&have == want, "{name} differs after the disk filled");
    }
    fs.remount(&format!("size={}k", need * 3 / 1024 + 64));
    let (ok, _, err) = run(&mut cache(&m, &data, &part));
    assert!(ok, "{err}");
    let got = files(&part);
    assert_eq!(
        got.iter().map(|x| &x.0).collect::<Vec<_>>(),
        reference.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    for ((name, x), (_, y)) in got.iter().zip(&reference) {
        assert!(x == y, "{name} differs after the rerun");
    }
}

#[test]
fn a_folder_made_read_only_mid_training_is_a_clear_error_and_the_rerun_resumes() {
    if !can_mount() {
        return;
    }
    let d = tempfile::tempdir().expect("tmp");
    let m = common::tiny_gguf(d.path(), 4);
    let data = corpus(d.path(), 400);
    let store = d.path().join("store");
    assert!(run(&mut cache(&m, &data, &store)).0);
    let full = d.path().join("full");
    assert!(run(&mut sae_train(&store, &full, "60000")).0);
    let fs = Tmpfs::mount(&d.path().join("ro"), "64m");
    let part = fs.0.join("sae");
    let child = sae_train(&store, &part, "60000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait for a checkpoint, then make the folder read-only under the running process.
    let t = std::time::Instant::now();
    while std::fs::read_dir(&part).map(|r| r.count()).unwrap_or(0) < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no checkpoint in 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    fs.remount("ro");
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "training finished before the folder went read-only"
    );
    assert!(
        err.contains("Read-only file system"),
        "not a clear error: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    fs.remount("rw");
    let (ok, out, err) = run(&mut sae_train(&store, &part, "60000"));
    assert!(ok, "{err}");
    assert!(
        err.contains("resuming at step") || out.contains("resumed at step"),
        "{out}{err}"
    );
    assert!(
        std::fs::read(part.join("sae_weights.safetensors")).expect("b")
            == std::fs::read(full.join("sae_weights.safetensors")).expect("a"),
        "resumed weights differ from the uninterrupted run's"
    );
}

#[test]
fn a_corrupted_shard_or_checkpoint_is_named_on_resume() {
    let d = tempfile::tempdir().expect("tmp");
    let m = common::tiny_gguf(d.path(), 4);
    let data = corpus(d.path(), 300);
    let store = d.path().join("store");
    assert!(run(&mut cache(&m, &data, &store)).0);
    // A shard's bytes flipped: the store check names it, and training refuses it.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(store.join("manifest.json")).expect("m"))
            .expect("json");
    let shard = manifest["shards"][1]["file"]
        .as_str()
        .expect("file")
        .to_string();
    let good = std::fs::read(store.join(&shard)).expect("shard");
    let mut bad = good.clone();
    let n = bad.len();
    for b in &mut bad[n - 64..] {
        *b ^= 0x5a;
    }
    std::fs::write(store.join(&shard), &bad).expect("w");
    let (ok, out, err) = run(bin().args(["store", "info", s(&store), "--verify"]));
    assert!(!ok && format!("{out}{err}").contains(&shard), "{out}{err}");
    // Rerunning the cache job names it too, and says what to do; it does not resume
    // over it. Recomputed into a new folder, the shard has its original bytes.
    let (ok, _, err) = run(&mut cache(&m, &data, &store));
    assert!(
        !ok && err.contains(&shard) && err.contains("into a new folder"),
        "{err}"
    );
    let again = d.path().join("again");
    let (ok, _, err) = run(&mut cache(&m, &data, &again));
    assert!(ok, "{err}");
    assert!(
        std::fs::read(again.join(&shard)).expect("r") == good,
        "shard not recomputed"
    );

    // A checkpoint cut short: the resume names it rather than training on garbage.
    let sae = d.path().join("sae");
    let mut child = sae_train(&store, &sae, "60000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let t = std::time::Instant::now();
    let ckpt = loop {
        let found = std::fs::read_dir(&sae).ok().and_then(|r| {
            r.flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().contains("checkpoint"))
        });
        if let Some(p) = found {
            break p;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no checkpoint in 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    std::thread::sleep(Duration::from_millis(50));
    child.kill().expect("kill");
    let _ = child.wait();
    let target = if ckpt.is_dir() {
        std::fs::read_dir(&ckpt)
            .expect("ls")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .expect("a checkpoint file")
    } else {
        ckpt
    };
    let bytes = std::fs::read(&target).expect("r");
    std::fs::write(&target, &bytes[..bytes.len() / 2]).expect("truncate");
    let (ok, out, err) = run(&mut sae_train(&store, &sae, "60000"));
    let name = target
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        !ok && err.contains(&name),
        "a truncated checkpoint was not named: {out}{err}"
    );
}

/// `transcripts import` and `transcripts score` killed at arbitrary moments: the rerun
/// leaves the database as one uninterrupted run does (the same transcripts once each,
/// exported byte for byte; the same per-token scores).
#[test]
fn transcript_import_and_scoring_killed_at_arbitrary_moments_resume_to_the_same_database() {
    let d = tempfile::tempdir().expect("tmp");
    let m = common::tiny_gguf(d.path(), 4);
    let convs: Vec<String> = (0..30000)
        .map(|i| {
            serde_json::json!({"messages": [
                {"role": "user", "content": format!("question {i}: what is {} plus {}?", i % 17, i % 5)},
                {"role": "assistant", "content": format!("it is {} {}", i % 17 + i % 5, ["ok", "sure", "yes"][i % 3])}
            ]})
            .to_string()
        })
        .collect();
    let data = d.path().join("convs.jsonl");
    std::fs::write(&data, convs.join("\n")).expect("w");
    let import = |db: &Path| {
        let mut c = bin();
        c.args([
            "transcripts",
            "import",
            s(&data),
            "--collection",
            "c",
            "--db",
            s(db),
        ]);
        c
    };
    let export = |db: &Path, out: &Path| {
        let (ok, _, err) =
            run(bin().args(["transcripts", "export", "c", "--out", s(out), "--db", s(db)]));
        assert!(ok, "{err}");
        std::fs::read(out).expect("export")
    };
    let full = d.path().join("full.db");
    assert!(run(&mut import(&full)).0);
    let part = d.path().join("part.db");
    let kills = kill_at(|| import(&part), &[10, 25, 40, 60, 90, 130, 180]);
    // The rerun imports what a kill cut off; if an attempt between kills finished, it
    // says the file is already imported (an import is one transaction).
    let (ok, _, err) = run(&mut import(&part));
    assert!(ok || err.contains("already imported"), "{err}");
    println!("import killed {kills} times");
    assert!(
        kills >= 2,
        "the import finished before two kills: make it longer"
    );
    assert!(
        export(&full, &d.path().join("a.jsonl")) == export(&part, &d.path().join("b.jsonl")),
        "the resumed import's transcripts differ from the uninterrupted one's"
    );

    let probe = common::tiny_probe(d.path(), &m);
    // Scored: a collection of the first 3000 conversations.
    let small = d.path().join("small.jsonl");
    std::fs::write(&small, convs[..3000].join("\n")).expect("w");
    for db in [&full, &part] {
        let (ok, _, err) = run(bin().args([
            "transcripts",
            "import",
            s(&small),
            "--collection",
            "s",
            "--db",
            s(db),
        ]));
        assert!(ok, "{err}");
    }
    let score = |db: &Path| {
        let mut c = bin();
        c.args([
            "transcripts",
            "score",
            "s",
            "--model",
            s(&m),
            "--probe",
            s(&probe),
            "--db",
            s(db),
        ]);
        c
    };
    assert!(run(&mut score(&full)).0);
    let kills = kill_at(|| score(&part), &[30, 80, 150, 250, 400, 600]);
    let (ok, _, err) = run(&mut score(&part));
    assert!(ok, "{err}");
    println!("scoring killed {kills} times");
    assert!(
        kills >= 2,
        "scoring finished before two kills: make it longer"
    );
    // Keyed by the run's key and the transcript's index in it (row ids may differ).
    let scores = |db: &Path| -> Vec<(String, i64, Vec<u8>)> {
        let conn = rusqlite::Connection::open(db).expect("open");
        let mut st = conn
            .prepare(
                "SELECT r.key, t.idx, s.dense FROM token_scores s \
                 JOIN transcripts t ON t.id = s.transcript_id JOIN runs r ON r.id = t.run_id \
                 ORDER BY r.key, t.idx",
            )
            .expect("prepare");
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows");
        rows
    };
    let (a, b) = (scores(&full), scores(&part));
    assert_eq!(a.len(), 3000);
    assert!(
        a == b,
        "the resumed scores differ from the uninterrupted run's"
    );
}
