//! `pragma cache` killed with SIGKILL at arbitrary moments resumes to a store
//! byte-identical to an uninterrupted run.

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
