//! `pragma transcripts` end to end: import the fixtures (Inspect .eval and .json, Docent,
//! OpenAI, ShareGPT), list, search with filters, show, export and re-import, refusals
//! that leave the database unchanged, and scoring with a probe and an SAE on a tiny model
//! (token ids and spans as the chat template makes them, per-message pools that match the
//! per-token values, a resumed run that scores only what is missing).

mod common;

use std::path::{Path, PathBuf};

use common::{pragma, tiny_gguf, tiny_probe};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/transcripts")
        .join(name)
}

fn list(db: &Path) -> serde_json::Value {
    let (ok, out, err) = pragma(&["transcripts", "list", "--json", "--db", s(db)]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).expect("json")
}

#[test]
fn import_search_show_export() {
    let d = tempfile::tempdir().expect("tmp");
    let db = d.path().join("t.db");
    let (ok, out, err) = pragma(&[
        "transcripts",
        "import",
        s(&fixture("inspect.eval")),
        s(&fixture("docent.json")),
        "--collection",
        "mix",
        "--db",
        s(&db),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("inspect (.eval)") && out.contains("docent"),
        "{out}"
    );
    let l = list(&db);
    assert_eq!(l[0]["name"], "mix");
    let runs = l[0]["runs"].as_u64().expect("runs");
    assert!(runs >= 7, "{l}");

    // Search: a word, a role, a metadata filter, JSON out.
    let (ok, out, err) = pragma(&[
        "transcripts",
        "search",
        "mix",
        "Paris",
        "--json",
        "--db",
        s(&db),
    ]);
    assert!(ok, "{err}");
    let hits: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(!hits.as_array().expect("hits").is_empty(), "{out}");
    assert!(
        hits[0]["snippet"]
            .as_str()
            .expect("snippet")
            .contains("[Paris]"),
        "{out}"
    );
    let (ok, out, _) = pragma(&[
        "transcripts",
        "search",
        "mix",
        "Paris",
        "--role",
        "tool",
        "--json",
        "--db",
        s(&db),
    ]);
    assert!(ok);
    let tool_hits: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(tool_hits
        .as_array()
        .expect("h")
        .iter()
        .all(|h| h["role"] == "tool"));
    let (ok, out, _) = pragma(&[
        "transcripts",
        "search",
        "mix",
        "Paris",
        "--where",
        "model=no-such-model",
        "--json",
        "--db",
        s(&db),
    ]);
    assert!(ok);
    assert_eq!(out.trim(), "[]");

    // Show one run.
    let key = hits[0]["run"].as_str().expect("run").to_string();
    let (ok, out, err) = pragma(&["transcripts", "show", "mix", &key, "--db", s(&db)]);
    assert!(ok, "{err}");
    assert!(out.contains("[T0B0]"), "{out}");

    // Refusals leave the database as it was: the same file again, a malformed file.
    let (ok, _, err) = pragma(&[
        "transcripts",
        "import",
        s(&fixture("inspect.eval")),
        "--collection",
        "mix",
        "--db",
        s(&db),
    ]);
    assert!(!ok && err.contains("already imported"), "{err}");
    let bad = d.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"messages\": [{\"role\": \"user\", \"content\": \"ok\"}]}\n{\"messages\": [{\"role\": \"robot\"}]}\n").expect("w");
    let (ok, _, err) = pragma(&[
        "transcripts",
        "import",
        s(&fixture("openai.jsonl")),
        s(&bad),
        "--collection",
        "mix",
        "--db",
        s(&db),
    ]);
    assert!(
        !ok && err.contains("bad.jsonl: line 2") && err.contains("messages[0].role"),
        "{err}"
    );
    assert_eq!(
        list(&db)[0]["runs"].as_u64(),
        Some(runs),
        "nothing was added"
    );

    // Export, re-import elsewhere: the same runs.
    let out_file = d.path().join("mix.jsonl");
    let (ok, _, err) = pragma(&[
        "transcripts",
        "export",
        "mix",
        "--out",
        s(&out_file),
        "--db",
        s(&db),
    ]);
    assert!(ok, "{err}");
    let db2 = d.path().join("t2.db");
    let (ok, _, err) = pragma(&[
        "transcripts",
        "import",
        s(&out_file),
        "--collection",
        "again",
        "--db",
        s(&db2),
    ]);
    assert!(ok, "{err}");
    let l2 = list(&db2);
    assert_eq!(l2[0]["messages"], l[0]["messages"], "{l2} vs {l}");
    // An unknown collection names the known ones.
    let (ok, _, err) = pragma(&["transcripts", "search", "nope", "x", "--db", s(&db)]);
    assert!(!ok && err.contains("collections: mix"), "{err}");
}

#[test]
fn score_stores_tokens_spans_and_pools_and_resumes() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny_gguf(d.path(), 4);
    let probe = tiny_probe(d.path(), &m);
    let db = d.path().join("t.db");
    let (ok, _, err) = pragma(&[
        "transcripts",
        "import",
        s(&fixture("openai.jsonl")),
        s(&fixture("sharegpt.jsonl")),
        "--collection",
        "c",
        "--db",
        s(&db),
    ]);
    assert!(ok, "{err}");
    let score = |extra: &[&str]| {
        let mut args = vec![
            "transcripts",
            "score",
            "c",
            "--model",
            s(&m),
            "--probe",
            s(&probe),
            "--json",
            "--db",
            s(&db),
        ];
        args.extend_from_slice(extra);
        pragma(&args)
    };
    let (ok, out, err) = score(&[]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(r["transcripts"], 6, "{r}");
    assert_eq!(r["skipped"], 0, "{r}");

    // What was stored: ids and spans, per-token values, per-message pools.
    let conn = rusqlite::Connection::open(&db).expect("open");
    let model = pragma_model::Model::load(s(&m), &mut |_| {}).expect("model");
    let tdb = pragma_transcripts::db::Db::open(&db).expect("db");
    for (tid, t) in tdb.transcripts_of("c").expect("transcripts") {
        let (ids, spans) =
            pragma_transcripts::spans::token_spans(&model.tokenizer, &t).expect("spans");
        // Scored up to the model's context (64 tokens here); spans clipped to it.
        let n = ids.len().min(model.cfg().context_length);
        let ids = ids[..n].to_vec();
        let spans: Vec<_> = spans
            .into_iter()
            .filter(|sp| sp.start < n)
            .map(|mut sp| {
                sp.end = sp.end.min(n);
                sp
            })
            .collect();
        let (blob, spans_json): (Vec<u8>, String) = conn
            .query_row(
                "SELECT ids, spans FROM transcript_tokens WHERE transcript_id = ?1",
                [tid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("tokens");
        let stored: Vec<u32> = blob
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(stored, ids);
        assert_eq!(spans_json, serde_json::to_string(&spans).expect("json"));
        // Spans tile the ids after BOS, one per message, in order.
        assert_eq!(spans.last().expect("span").end, ids.len());
        for w in spans.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        // Each whole span's text holds its message's content.
        let (full, all_spans) =
            pragma_transcripts::spans::token_spans(&model.tokenizer, &t).expect("spans");
        assert_eq!(all_spans.len(), t.messages.len());
        assert_eq!(all_spans.last().expect("span").end, full.len());
        for (sp, msg) in all_spans.iter().zip(&t.messages) {
            let text = model
                .tokenizer
                .decode(&full[sp.start..sp.end])
                .expect("decode");
            assert!(
                text.contains(msg.content.trim()),
                "{text:?} lacks {:?}",
                msg.content
            );
        }
        let dense: Vec<u8> = conn
            .query_row(
                "SELECT dense FROM token_scores WHERE transcript_id = ?1",
                [tid],
                |r| r.get(0),
            )
            .expect("scores");
        let vals = pragma_transcripts::score::read_f32_blob(&dense);
        assert_eq!(vals.len(), ids.len());
        let mut st = conn
            .prepare(
                "SELECT m.idx, s.mean, s.max FROM message_scores s JOIN messages m \
                 ON m.id = s.message_id WHERE m.transcript_id = ?1 ORDER BY m.idx",
            )
            .expect("prep");
        let pools: Vec<(i64, f64, f64)> = st
            .query_map([tid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("q")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(pools.len(), spans.len());
        for ((idx, mean, max), sp) in pools.iter().zip(&spans) {
            let x = &vals[sp.start..sp.end];
            let m = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
            let mx = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            assert_eq!(*idx as usize, sp.message);
            assert!((m - mean).abs() < 1e-9 && (mx - max).abs() < 1e-9);
        }
    }

    // Scored again: nothing to do. Two transcripts lose their scores (a kill before
    // their batch committed): only they are scored.
    let (ok, out, err) = score(&[]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (r["transcripts"].as_u64(), r["skipped"].as_u64()),
        (Some(0), Some(6))
    );
    conn.execute(
        "DELETE FROM token_scores WHERE transcript_id IN (SELECT id FROM transcripts ORDER BY id DESC LIMIT 2)",
        [],
    )
    .expect("delete");
    let (ok, out, err) = score(&[]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (r["transcripts"].as_u64(), r["skipped"].as_u64()),
        (Some(2), Some(4))
    );

    // A vector without a layer, a missing probe, no scorer: clear errors.
    let (ok, _, err) = pragma(&[
        "transcripts",
        "score",
        "c",
        "--model",
        s(&m),
        "--vector",
        "v.safetensors",
        "--db",
        s(&db),
    ]);
    assert!(!ok && err.contains("FILE@LAYER"), "{err}");
    let (ok, _, err) = pragma(&[
        "transcripts",
        "score",
        "c",
        "--model",
        s(&m),
        "--db",
        s(&db),
    ]);
    assert!(!ok && err.contains("--probe, --vector or --sae"), "{err}");
}

/// `diff` then `check` from the command line: the hypothesis diff ranks first, checked on
/// the held-out half, gives diff's held-out AUROC; on a fresh pair it detects B.
#[test]
fn diff_then_check() {
    let d = tempfile::tempdir().expect("tmp");
    let db = d.path().join("t.db");
    let words = [
        "river", "stone", "garden", "window", "paper", "silver", "market", "winter",
    ];
    for (name, salt, plant) in [
        ("a", 1, false),
        ("b", 2, true),
        ("a2", 3, false),
        ("b2", 4, true),
    ] {
        let lines: String = (0..80usize)
            .map(|i| {
                let mut t: Vec<&str> = (0..8).map(|k| words[(i * 7 + k * salt * 3 + k * k) % 8]).collect();
                if plant && i % 2 == 0 {
                    t.push("zebra");
                }
                format!(
                    "{{\"messages\": [{{\"role\": \"user\", \"content\": \"Say words.\"}}, {{\"role\": \"assistant\", \"content\": \"{}\"}}]}}\n",
                    t.join(" ")
                )
            })
            .collect();
        let f = d.path().join(format!("{name}.jsonl"));
        std::fs::write(&f, lines).expect("w");
        let (ok, _, err) = pragma(&[
            "transcripts",
            "import",
            s(&f),
            "--collection",
            name,
            "--db",
            s(&db),
        ]);
        assert!(ok, "{err}");
    }
    let (ok, out, err) = pragma(&["transcripts", "diff", "a", "b", "--json", "--db", s(&db)]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("json");
    let top = &r["families"][0]["more_in_b"][0];
    assert_eq!(top["name"], "zebra", "{r}");
    // Recorded, the diff's headline metrics are its top hypothesis and its figures.
    let rec = common::recorded(
        &d.path().join("runs.db"),
        &["transcripts", "diff", "a", "b", "--db", s(&db)],
    );
    let fam = r["families"][0]["name"]
        .as_str()
        .expect("family")
        .replace(['-', ' '], "_");
    let m = &rec["metrics"];
    assert_eq!(rec["workflow"], "transcripts diff");
    assert_eq!(m[format!("{fam}_top")], "zebra", "{m}");
    assert_eq!(
        m[format!("{fam}_top_heldout_auroc")],
        top["heldout_auroc"],
        "{m}"
    );
    assert_eq!(m[format!("{fam}_top_log_odds")], top["log_odds"], "{m}");
    let (ok, out, err) = pragma(&[
        "transcripts",
        "check",
        "a",
        "b",
        "--ngram",
        "zebra",
        "--heldout",
        "--json",
        "--db",
        s(&db),
    ]);
    assert!(ok, "{err}");
    let c: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(c["auroc"], top["heldout_auroc"], "{c}");
    let (ok, out, err) = pragma(&[
        "transcripts",
        "check",
        "a2",
        "b2",
        "--ngram",
        "zebra",
        "--db",
        s(&db),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("AUROC 0.750") && out.contains("detects b2"),
        "{out}"
    );
    // The human-readable diff names the command that checks its top hypothesis.
    let (ok, out, err) = pragma(&["transcripts", "diff", "a", "b", "--db", s(&db)]);
    assert!(ok, "{err}");
    assert!(
        out.contains("pragma transcripts check a b --ngram \"zebra\" --heldout"),
        "{out}"
    );
    // One hypothesis at a time.
    let (ok, _, err) = pragma(&[
        "transcripts",
        "check",
        "a",
        "b",
        "--ngram",
        "zebra",
        "--latent",
        "3",
        "--db",
        s(&db),
    ]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");
    let (ok, _, err) = pragma(&["transcripts", "check", "a", "b", "--db", s(&db)]);
    assert!(!ok && err.contains("expected one hypothesis"), "{err}");
}

/// Batched scoring (length-sorted, left-padded passes) stores the values of scoring one
/// transcript at a time.
#[test]
fn batched_scoring_matches_one_at_a_time() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny_gguf(d.path(), 4);
    let probe = tiny_probe(d.path(), &m);
    let mut dense = Vec::new();
    for bt in ["1", "256"] {
        let db = d.path().join(format!("t{bt}.db"));
        let (ok, _, err) = pragma(&[
            "transcripts",
            "import",
            s(&fixture("openai.jsonl")),
            s(&fixture("sharegpt.jsonl")),
            "--collection",
            "c",
            "--db",
            s(&db),
        ]);
        assert!(ok, "{err}");
        let (ok, out, err) = pragma(&[
            "transcripts",
            "score",
            "c",
            "--model",
            s(&m),
            "--probe",
            &format!("a={}", s(&probe)),
            // A second scorer at the same hook: one capture, not two appended.
            "--probe",
            &format!("b={}", s(&probe)),
            "--batch-tokens",
            bt,
            "--json",
            "--db",
            s(&db),
        ]);
        assert!(ok, "{err}");
        let r: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(r["transcripts"], 6, "{r}");
        let passes = r["passes"].as_u64().expect("passes");
        if bt == "1" {
            assert_eq!(passes, 6);
        } else {
            assert!(passes < 6, "{r}");
        }
        let conn = rusqlite::Connection::open(&db).expect("open");
        let lens: Vec<(usize, usize)> = conn
            .prepare("SELECT length(t.ids), length(s.dense) FROM transcript_tokens t JOIN token_scores s ON s.transcript_id = t.transcript_id")
            .expect("p")
            .query_map([], |r| Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize)))
            .expect("q")
            .collect::<Result<_, _>>()
            .expect("lens");
        assert_eq!(lens.len(), 12);
        for (ids, dense) in lens {
            assert_eq!(ids, dense, "one f32 score per token id");
        }
        let rows: Vec<(i64, Vec<u8>)> = conn
            .prepare("SELECT transcript_id, dense FROM token_scores WHERE scorer_id = 1 ORDER BY transcript_id")
            .expect("p")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("q")
            .collect::<Result<_, _>>()
            .expect("rows");
        dense.push(rows);
    }
    assert_eq!(dense[0].len(), 6);
    let lens: Vec<usize> = dense[0].iter().map(|r| r.1.len()).collect();
    assert!(
        lens.iter().any(|&l| l != lens[0]),
        "transcripts of one length would not test padding: {lens:?}"
    );
    for (a, b) in dense[0].iter().zip(&dense[1]) {
        let (x, y) = (
            pragma_transcripts::score::read_f32_blob(&a.1),
            pragma_transcripts::score::read_f32_blob(&b.1),
        );
        assert_eq!(x.len(), y.len());
        for (u, v) in x.iter().zip(&y) {
            assert!((u - v).abs() <= 1e-4 * (1.0 + u.abs()), "{u} vs {v}");
        }
    }
}
