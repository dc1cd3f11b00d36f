//! Docent's `AgentRun` JSON (Transluce's `docent` SDK, `AgentRun.model_dump(mode="json")`):
//! one object or a list of `{"id", "name", "description", "metadata", "transcripts"}`,
//! where `transcripts` is a list (or, in older versions, a map from name) of `{"id",
//! "name", "metadata", "messages"}` and messages share the OpenAI fields (content as a
//! string or parts with `text`/`reasoning`, `tool_calls` flat `{"id", "function",
//! "arguments"}`, `tool_call_id`, `function`). Scores are `metadata.scores` when present.

use std::path::Path;

use serde_json::{Map, Value};

use super::field_err;
use super::jsonl::openai_message;
use crate::error::{Error, Result};
use crate::model::{Run, Transcript};

pub(super) fn read(path: &Path) -> Result<Vec<Run>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Input(format!("{}: not JSON: {e}", path.display())))?;
    let list = match v {
        Value::Array(a) => a,
        o @ Value::Object(_) => vec![o],
        other => {
            return Err(field_err(
                &path.display().to_string(),
                "(top level)",
                "an AgentRun object or a list of them",
                &other,
            ))
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, r)| run(r, &format!("{}: run {i}", path.display())))
        .collect()
}

fn obj(v: Option<&Value>, at: &str, field: &str) -> Result<Map<String, Value>> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(other) => Err(field_err(at, field, "an object", other)),
    }
}

fn run(r: &Value, at: &str) -> Result<Run> {
    let Value::Object(o) = r else {
        return Err(field_err(at, "(run)", "an object", r));
    };
    let key = match o.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => at.rsplit(": ").next().unwrap_or("run").to_string(),
    };
    let mut metadata = obj(o.get("metadata"), at, "metadata")?;
    for k in ["name", "description"] {
        if let Some(x) = o.get(k).filter(|x| !x.is_null()) {
            metadata.entry(k).or_insert(x.clone());
        }
    }
    let scores = match metadata.remove("scores") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(field_err(at, "metadata.scores", "an object", &other)),
    };
    let as_id = |v: Option<Value>| match v {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let sample_id = as_id(metadata.remove("sample_id"));
    let epoch = metadata.remove("epoch").and_then(|e| e.as_i64());
    let items: Vec<(Option<String>, &Value)> = match o.get("transcripts") {
        Some(Value::Array(a)) => a.iter().map(|t| (None, t)).collect(),
        Some(Value::Object(m)) => m.iter().map(|(k, t)| (Some(k.clone()), t)).collect(),
        other => {
            return Err(field_err(
                at,
                "transcripts",
                "a list of transcripts",
                other.unwrap_or(&Value::Null),
            ))
        }
    };
    let mut transcripts = Vec::new();
    for (ti, (name, t)) in items.into_iter().enumerate() {
        let f = format!("transcripts[{ti}]");
        let Value::Object(to) = t else {
            return Err(field_err(at, &f, "an object", t));
        };
        let messages = match to.get("messages") {
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, m)| openai_message(m, at, &format!("{f}.messages[{i}]")))
                .collect::<Result<Vec<_>>>()?,
            other => {
                return Err(field_err(
                    at,
                    &format!("{f}.messages"),
                    "a list of messages",
                    other.unwrap_or(&Value::Null),
                ))
            }
        };
        let mut tmeta = obj(to.get("metadata"), at, &format!("{f}.metadata"))?;
        if let Some(id) = to.get("id").filter(|x| !x.is_null()) {
            tmeta.entry("id").or_insert(id.clone());
        }
        transcripts.push(Transcript {
            name: name.or_else(|| to.get("name").and_then(Value::as_str).map(str::to_string)),
            metadata: tmeta,
            messages,
        });
    }
    Ok(Run {
        key,
        sample_id,
        epoch,
        metadata,
        scores,
        transcripts,
        source: at.to_string(),
    })
}
