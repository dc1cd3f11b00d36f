//! Export to OpenAI chat JSONL: one line per transcript, `{"messages": [...], "metadata":
//! {...}}` with the run's key, sample id, epoch, scores and source in the metadata, tool
//! calls in OpenAI's shape (`{"id", "type": "function", "function": {"name", "arguments":
//! "JSON text"}}`), reasoning as `reasoning_content`. Importing the file back gives the same
//! runs.

use std::io::Write;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::model::Run;

/// One JSONL line per transcript of each run.
pub fn write_jsonl(runs: &[Run], out: &mut dyn Write) -> Result<usize> {
    let mut n = 0;
    for r in runs {
        for (ti, t) in r.transcripts.iter().enumerate() {
            let messages: Vec<Value> = t
                .messages
                .iter()
                .map(|m| {
                    let mut o = Map::new();
                    o.insert("role".into(), json!(m.role.name()));
                    o.insert("content".into(), json!(m.content));
                    if let Some(x) = &m.reasoning {
                        o.insert("reasoning_content".into(), json!(x));
                    }
                    if !m.tool_calls.is_empty() {
                        o.insert(
                            "tool_calls".into(),
                            Value::Array(
                                m.tool_calls
                                    .iter()
                                    .map(|c| {
                                        json!({"id": c.id, "type": "function", "function": {
                                            "name": c.function,
                                            "arguments": c.arguments.to_string()}})
                                    })
                                    .collect(),
                            ),
                        );
                    }
                    if let Some(x) = &m.tool_call_id {
                        o.insert("tool_call_id".into(), json!(x));
                    }
                    if let Some(x) = &m.name {
                        o.insert("name".into(), json!(x));
                    }
                    if !m.metadata.is_empty() {
                        o.insert("metadata".into(), Value::Object(m.metadata.clone()));
                    }
                    Value::Object(o)
                })
                .collect();
            let mut meta = r.metadata.clone();
            if let Some(s) = &r.sample_id {
                meta.insert("sample_id".into(), json!(s));
            }
            if let Some(e) = r.epoch {
                meta.insert("epoch".into(), json!(e));
            }
            if !r.scores.is_empty() {
                meta.insert("scores".into(), Value::Object(r.scores.clone()));
            }
            if r.transcripts.len() > 1 {
                meta.insert(
                    "transcript".into(),
                    json!(t.name.clone().unwrap_or_else(|| ti.to_string())),
                );
            }
            let line = json!({"id": r.key, "messages": messages, "metadata": meta});
            writeln!(out, "{line}").map_err(|e| Error::Input(format!("export: {e}")))?;
            n += 1;
        }
    }
    Ok(n)
}
