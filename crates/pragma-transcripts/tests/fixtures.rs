//! The importers against the real libraries: files written by Inspect AI (its `mockllm`
//! model, `.eval` with zstd members, the same re-packed with deflate, and `.json`) and by
//! Docent's pydantic models, read here and compared field by field with what
//! `inspect_ai.log.read_eval_log` and `docent`'s models read from the same files.
//! Fixtures and expectations: `scripts/fixtures/make_transcript_fixtures.py`.

use std::path::PathBuf;

use pragma_transcripts::import::{self, Format};
use pragma_transcripts::model::{Message, Run};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/transcripts")
}

fn expected(name: &str) -> Value {
    let p = dir().join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture")).expect("json")
}

/// One message against the reference's `{role, text, reasoning, tool_calls,
/// tool_call_id, function}`.
fn check_message(m: &Message, e: &Value, at: &str) {
    assert_eq!(m.role.name(), e["role"], "{at}: role");
    assert_eq!(m.content, e["text"].as_str().unwrap_or(""), "{at}: text");
    assert_eq!(
        m.reasoning.as_deref(),
        e["reasoning"].as_str(),
        "{at}: reasoning"
    );
    let calls = e["tool_calls"].as_array().cloned().unwrap_or_default();
    assert_eq!(m.tool_calls.len(), calls.len(), "{at}: tool calls");
    for (c, x) in m.tool_calls.iter().zip(&calls) {
        assert_eq!(c.id, x["id"], "{at}: call id");
        assert_eq!(c.function, x["function"], "{at}: call function");
        assert_eq!(c.arguments, x["arguments"], "{at}: call arguments");
    }
    let tcid = match &e["tool_call_id"] {
        Value::Array(ids) => Some(
            ids.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::String(s) => Some(s.clone()),
        _ => None,
    };
    assert_eq!(m.tool_call_id, tcid, "{at}: tool_call_id");
    if m.role.name() == "tool" {
        assert_eq!(m.name.as_deref(), e["function"].as_str(), "{at}: function");
    }
}

fn check_messages(ms: &[Message], es: &Value, at: &str) {
    let es = es.as_array().expect("messages");
    assert_eq!(ms.len(), es.len(), "{at}: message count");
    for (i, (m, e)) in ms.iter().zip(es).enumerate() {
        check_message(m, e, &format!("{at} message {i}"));
    }
}

fn id_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn check_inspect(runs: &[Run], e: &Value, file: &str) {
    let samples = e["samples"].as_array().expect("samples");
    assert_eq!(runs.len(), samples.len(), "{file}: samples");
    for (r, s) in runs.iter().zip(samples) {
        let at = format!("{file} sample {} epoch {}", s["id"], s["epoch"]);
        assert_eq!(
            r.sample_id.as_deref(),
            Some(id_string(&s["id"]).as_str()),
            "{at}"
        );
        assert_eq!(r.epoch, s["epoch"].as_i64(), "{at}");
        assert_eq!(r.metadata["task"], e["eval"]["task"], "{at}");
        assert_eq!(r.metadata["model"], e["eval"]["model"], "{at}");
        for (k, v) in s["metadata"].as_object().expect("metadata") {
            assert_eq!(r.metadata.get(k), Some(v), "{at}: metadata {k}");
        }
        for (name, sc) in s["scores"].as_object().expect("scores") {
            assert_eq!(r.scores.get(name), Some(&sc["value"]), "{at}: score {name}");
            let d = &r.metadata["score_details"][name];
            for k in ["answer", "explanation"] {
                if !sc[k].is_null() {
                    assert_eq!(d[k], sc[k], "{at}: score {name} {k}");
                }
            }
        }
        assert_eq!(r.transcripts.len(), 1);
        check_messages(&r.transcripts[0].messages, &s["messages"], &at);
    }
}

#[test]
fn inspect_logs_read_as_inspect_reads_them() {
    let exp = expected("inspect.expected.json");
    for (file, want) in [
        ("inspect.eval", Format::InspectEval),
        ("inspect.deflate.eval", Format::InspectEval),
        ("inspect.json", Format::InspectJson),
    ] {
        let (fmt, runs) = import::read(&dir().join(file), None).expect(file);
        assert_eq!(fmt, want, "{file}");
        check_inspect(&runs, &exp[file], file);
    }
}

#[test]
fn docent_runs_read_as_docent_reads_them() {
    let exp = expected("docent.expected.json");
    let (fmt, runs) = import::read(&dir().join("docent.json"), None).expect("docent");
    assert_eq!(fmt, Format::Docent);
    let es = exp.as_array().expect("runs");
    assert_eq!(runs.len(), es.len());
    for (r, e) in runs.iter().zip(es) {
        let at = format!("docent run {}", e["id"]);
        assert_eq!(r.key, e["id"].as_str().expect("id"), "{at}");
        let meta = e["metadata"].as_object().expect("metadata");
        // Scores, sample id and epoch move out of the metadata into their own fields.
        for (k, v) in meta {
            match k.as_str() {
                "scores" => assert_eq!(&Value::Object(r.scores.clone()), v, "{at}: scores"),
                "sample_id" => assert_eq!(r.sample_id.as_deref(), v.as_str(), "{at}"),
                "epoch" => assert_eq!(r.epoch, v.as_i64(), "{at}"),
                _ => assert_eq!(r.metadata.get(k), Some(v), "{at}: metadata {k}"),
            }
        }
        let ts = e["transcripts"].as_array().expect("transcripts");
        assert_eq!(r.transcripts.len(), ts.len(), "{at}");
        for (t, x) in r.transcripts.iter().zip(ts) {
            assert_eq!(t.name.as_deref(), x["name"].as_str(), "{at}");
            for (k, v) in x["metadata"].as_object().expect("metadata") {
                assert_eq!(t.metadata.get(k), Some(v), "{at}: transcript metadata {k}");
            }
            check_messages(&t.messages, &x["messages"], &at);
        }
    }
}

#[test]
fn openai_and_sharegpt_fixtures() {
    for (file, exp, want) in [
        ("openai.jsonl", "openai.expected.json", Format::OpenAi),
        ("sharegpt.jsonl", "sharegpt.expected.json", Format::ShareGpt),
    ] {
        let (fmt, runs) = import::read(&dir().join(file), None).expect(file);
        assert_eq!(fmt, want);
        let es = expected(exp);
        let es = es.as_array().expect("list");
        assert_eq!(runs.len(), es.len(), "{file}");
        for (r, e) in runs.iter().zip(es) {
            let at = format!("{file} conversation {}", e["index"]);
            if let Some(m) = e["metadata"].as_object() {
                for (k, v) in m {
                    assert_eq!(r.metadata.get(k), Some(v), "{at}: metadata {k}");
                }
            }
            if let Some(id) = e.get("id").and_then(Value::as_str) {
                assert_eq!(r.key, id, "{at}");
            }
            check_messages(&r.transcripts[0].messages, &e["messages"], &at);
        }
    }
}
