//! Files pragma writes load again in pragma, under every option that changes what is
//! written (issue 9, kind 4), and lossy writes are refused rather than silent (kind 3).

mod common;

use std::path::Path;

use candle_core::quantized::GgmlDType;
use common::{pragma, tiny_gguf};
use pragma_methods::probe::{Probe, ProbeReport};
use pragma_methods::steering::SteeringVector;
use pragma_methods::sweep::Sweep;
use pragma_model::testing::{tiny_config, tiny_weights, write_gguf};
use pragma_model::Arch;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

fn toy(dir: &Path) -> std::path::PathBuf {
    let rows: String = (0..40)
        .map(|i| {
            let (c, l) = if i % 2 == 0 { ("x", 1) } else { ("o", 0) };
            format!(
                "{{\"text\": \"{} {c}{c}\", \"label\": {l}}}\n",
                ["ab", "cd", "ef"][i % 3]
            )
        })
        .collect();
    let p = dir.join("toy.jsonl");
    std::fs::write(&p, rows).expect("w");
    p
}

#[test]
fn files_pragma_writes_load_again_under_every_option() {
    let d = tempfile::tempdir().expect("tmp");
    let gguf = tiny_gguf(d.path(), 4);
    let m = s(&gguf);
    let data = toy(d.path());

    // Probes: with and without CIs, both positions; both probe files and the report.
    for (k, extra) in [
        &["--bootstrap", "0"][..],
        &["--bootstrap", "20", "--position", "mean"][..],
    ]
    .iter()
    .enumerate()
    {
        let out = d.path().join(format!("probe{k}"));
        let mut args = vec![
            "probe",
            "train",
            m,
            "--data",
            s(&data),
            "--hooks",
            "blocks.1..3.hook_resid_post",
            "--yes",
            "a",
            "--no",
            "b",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        let (ok, stdout, err) = pragma(&args);
        assert!(ok, "{err}");
        if k == 0 {
            assert!(stdout.contains("(no CI)"), "{stdout}");
        }
        let r = ProbeReport::load(&out.join("results.json")).expect("results.json");
        assert_eq!(r.layers.len(), 2);
        assert_eq!(r.layers[0].logistic.test_auroc_ci.0.is_nan(), k == 0);
        for f in ["probe.safetensors", "probe-diff-means.safetensors"] {
            let p = out.join(f);
            let probe = Probe::load(&p).expect(f);
            assert_eq!(probe.meta.test_auroc_ci.0.is_nan(), k == 0);
            let (ok, _, err) = pragma(&["probe", "score", m, "--probe", s(&p), "--text", "ab xx"]);
            assert!(ok, "{f}: {err}");
            let (ok, _, err) = pragma(&[
                "generate",
                m,
                "--prompt",
                "ab",
                "--max-tokens",
                "2",
                "--monitor",
                s(&p),
            ]);
            assert!(ok, "{f}: {err}");
        }
    }

    // Steering vectors: every method and position, the llama.cpp export and import.
    let pairs = d.path().join("pairs.jsonl");
    std::fs::write(
        &pairs,
        "{\"positive\": \"ab xx\", \"negative\": \"ab oo\"}\n{\"positive\": \"cd xx\", \"negative\": \"cd oo\"}\n",
    )
    .expect("w");
    let ab = d.path().join("ab.jsonl");
    std::fs::write(
        &ab,
        "{\"prompt\": \"q?\", \"positive\": \" a\", \"negative\": \" b\"}\n{\"prompt\": \"r?\", \"positive\": \" a\", \"negative\": \" b\"}\n",
    )
    .expect("w");
    let mut vectors = Vec::new();
    for (k, (file, extra)) in [
        (&pairs, &["--method", "mean"][..]),
        (&pairs, &["--method", "pca-diff", "--position", "mean"][..]),
        (&pairs, &["--method", "pca-center"][..]),
        (&ab, &["--position", "answer", "--bos", "none"][..]),
    ]
    .iter()
    .enumerate()
    {
        let out = d.path().join(format!("v{k}.safetensors"));
        let mut args = vec![
            "steer",
            "train",
            m,
            "--pairs",
            s(file),
            "--layers",
            "1,2",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        let (ok, _, err) = pragma(&args);
        assert!(ok, "{err}");
        SteeringVector::load(&out).expect("load");
        vectors.push(out);
    }
    let cv = d.path().join("v.gguf");
    let (ok, _, err) = pragma(&["steer", "export", s(&vectors[0]), "--out", s(&cv)]);
    assert!(ok, "{err}");
    let back = d.path().join("back.safetensors");
    let (ok, _, err) = pragma(&["steer", "import", s(&cv), "--out", s(&back)]);
    assert!(ok, "{err}");
    vectors.push(back);
    for v in &vectors {
        let (ok, _, err) = pragma(&[
            "generate",
            m,
            "--prompt",
            "ab",
            "--max-tokens",
            "2",
            "--steer",
            s(v),
        ]);
        assert!(ok, "{}: {err}", v.display());
    }

    // Sweeps: plain, and with every optional metric.
    let prompts = d.path().join("prompts.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"ab\"}\n{\"prompt\": \"cd\"}\n").expect("w");
    let reference = d.path().join("ref.txt");
    std::fs::write(&reference, "the cat sat on the mat").expect("w");
    let probe = d.path().join("probe0/probe.safetensors");
    for (k, extra) in [
        &[][..],
        &[
            "--reference",
            s(&reference),
            "--regex",
            "x",
            "--probe",
            s(&probe),
            "--samples",
            "2",
            "--gen-tokens",
            "3",
        ][..],
    ]
    .iter()
    .enumerate()
    {
        let out = d.path().join(format!("sweep{k}"));
        let mut args = vec![
            "steer",
            "sweep",
            m,
            "--vector",
            s(&vectors[0]),
            "--prompts",
            s(&prompts),
            "--scales",
            "-1,0,1",
            "--yes",
            "a",
            "--no",
            "b",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        let (ok, _, err) = pragma(&args);
        assert!(ok, "{err}");
        let sw = Sweep::load(&out.join("sweep.json")).expect("sweep.json");
        assert_eq!(sw.points.len(), 2 * 3 * 2);
        assert_eq!(sw.baseline_nll.is_some(), k == 1);
    }

    // Activation stores: every dtype, split documents, other input rules.
    let corpus = d.path().join("c.txt");
    std::fs::write(&corpus, "the cat sat on the mat\n\nab xx ".repeat(30)).expect("w");
    for (k, extra) in [
        &["--dtype", "f32", "--ctx", "64"][..],
        &["--dtype", "f16", "--long", "split", "--ctx", "4"][..],
        &[
            "--dtype",
            "bf16",
            "--bos",
            "none",
            "--parse-special",
            "--ctx",
            "64",
        ][..],
    ]
    .iter()
    .enumerate()
    {
        let out = d.path().join(format!("store{k}"));
        let mut args = vec![
            "cache",
            m,
            "--data",
            s(&corpus),
            "--hooks",
            "blocks.1.hook_resid_post",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        let (ok, _, err) = pragma(&args);
        assert!(ok, "{err}");
        let (ok, info, err) = pragma(&["store", "info", s(&out), "--verify"]);
        assert!(
            ok && info.contains("every stored value is finite"),
            "{info}{err}"
        );
        let st = pragma_store::Store::open(&out).expect("open");
        let (docs, x) = st
            .pooled(
                "blocks.1.hook_resid_post",
                pragma_store::reader::Pool::Mean,
                None,
            )
            .expect("pooled");
        assert_eq!(docs.len() as u64, st.manifest.dataset.n_docs);
        assert_eq!(x.dims()[1], 32);
    }
}

/// A tiny model whose embeddings are scaled by `scale`: its activations reach
/// ~`scale` x the usual magnitudes.
fn loud_model(dir: &Path, scale: f64) -> std::path::PathBuf {
    let cfg = tiny_config(Arch::Llama);
    let w: Vec<_> = tiny_weights(&cfg, 4)
        .expect("w")
        .into_iter()
        .map(|(n, t)| {
            let t = if n.contains("embed_tokens") {
                (t * scale).expect("scale")
            } else {
                t
            };
            (n, t)
        })
        .collect();
    let p = dir.join(format!("loud{scale:e}.gguf"));
    write_gguf(&p, &cfg, &w, GgmlDType::F32).expect("gguf");
    p
}

#[test]
fn lossy_storage_is_refused_and_verify_counts_nonfinite_values() {
    let d = tempfile::tempdir().expect("tmp");
    let corpus = d.path().join("c.txt");
    std::fs::write(&corpus, "the cat sat\n\nthe dog ran\n").expect("w");
    let loud = loud_model(d.path(), 1e5);
    let cache = |model: &Path, dtype: &str, out: &str| {
        pragma(&[
            "cache",
            s(model),
            "--data",
            s(&corpus),
            "--hooks",
            "hook_embed,blocks.2.hook_resid_post",
            "--ctx",
            "64",
            "--dtype",
            dtype,
            "--out",
            s(&d.path().join(out)),
        ])
    };
    // float16 cannot hold |x| ~ 1e5: refused, naming the hook, the magnitude and the
    // dtypes that would hold it.
    let (ok, _, err) = cache(&loud, "f16", "f16");
    assert!(!ok, "f16 must be refused");
    assert!(
        err.contains("hook_embed") && err.contains("e4") && err.contains("bf16 or f32"),
        "{err}"
    );
    // bf16 and f32 hold it, and --verify finds every value finite.
    for dt in ["bf16", "f32"] {
        let (ok, _, err) = cache(&loud, dt, dt);
        assert!(ok, "{dt}: {err}");
        let (ok, out, err) = pragma(&["store", "info", s(&d.path().join(dt)), "--verify"]);
        assert!(
            ok && out.contains("every stored value is finite"),
            "{out}{err}"
        );
    }
    // A model that is itself non-finite (embeddings past float32's range): pragma stores
    // what the model computed, and --verify counts the non-finite values per hook and fails.
    let broken = loud_model(d.path(), 1e40);
    let (ok, _, err) = cache(&broken, "f32", "inf");
    assert!(ok, "{err}");
    let (ok, out, err) = pragma(&["store", "info", s(&d.path().join("inf")), "--verify"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("NON-FINITE hook_embed") && err.contains("non-finite values"),
        "{out}{err}"
    );
}
