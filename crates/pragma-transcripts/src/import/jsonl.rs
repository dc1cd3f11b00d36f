//! OpenAI chat JSONL and ShareGPT JSONL: one conversation per line.

use std::io::BufRead;
use std::path::Path;

use serde_json::{Map, Value};

use super::{content_text, field_err};
use crate::error::{Error, Result};
use crate::model::{Message, Role, Run, ToolCall, Transcript};

#[derive(Clone, Copy)]
pub(super) enum Flavour {
    OpenAi,
    ShareGpt,
}

/// Keys of a line that identify the run rather than describe it.
const IDENTITY: &[&str] = &["id", "sample_id", "epoch", "scores"];

pub(super) fn read(path: &Path, flavour: Flavour) -> Result<Vec<Run>> {
    let f =
        std::fs::File::open(path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let mut runs = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line =
            line.map_err(|e| Error::Input(format!("{}: line {}: {e}", path.display(), n + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}: line {}", path.display(), n + 1);
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| Error::Input(format!("{at}: not JSON: {e}")))?;
        let Value::Object(obj) = v else {
            return Err(field_err(&at, "(line)", "an object", &v));
        };
        let messages = match flavour {
            Flavour::OpenAi => openai_messages(&obj, &at)?,
            Flavour::ShareGpt => sharegpt_messages(&obj, &at)?,
        };
        runs.push(run_of(obj, messages, &at, n + 1, path)?);
    }
    if runs.is_empty() {
        return Err(Error::Input(format!(
            "{}: no conversations found",
            path.display()
        )));
    }
    Ok(runs)
}

/// The run of one line: `metadata` (an object) plus any other top-level keys, its id,
/// sample id, epoch and scores when present.
fn run_of(
    obj: Map<String, Value>,
    messages: Vec<Message>,
    at: &str,
    line: usize,
    path: &Path,
) -> Result<Run> {
    let mut metadata = match obj.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => return Err(field_err(at, "metadata", "an object", other)),
    };
    for (k, v) in &obj {
        if !["messages", "conversations", "metadata"].contains(&k.as_str())
            && !IDENTITY.contains(&k.as_str())
        {
            metadata.insert(k.clone(), v.clone());
        }
    }
    let pick = |k: &str| obj.get(k).or_else(|| metadata.get(k)).cloned();
    let as_id = |v: Option<Value>, field: &str| -> Result<Option<String>> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(x)) => Ok(Some(x.to_string())),
            Some(other) => Err(field_err(at, field, "a string or a number", &other)),
        }
    };
    let key = as_id(obj.get("id").cloned(), "id")?.unwrap_or_else(|| format!("line {line}"));
    let sample_id = as_id(pick("sample_id"), "sample_id")?;
    let epoch = match pick("epoch") {
        None | Some(Value::Null) => None,
        Some(Value::Number(x)) if x.as_i64().is_some() => x.as_i64(),
        Some(other) => return Err(field_err(at, "epoch", "an integer", &other)),
    };
    let scores = match pick("scores") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(field_err(at, "scores", "an object", &other)),
    };
    metadata.remove("sample_id");
    metadata.remove("epoch");
    metadata.remove("scores");
    Ok(Run {
        key,
        sample_id,
        epoch,
        metadata,
        scores,
        transcripts: vec![Transcript {
            name: None,
            metadata: Map::new(),
            messages,
        }],
        source: format!("{}: line {line}", path.display()),
    })
}

fn openai_messages(obj: &Map<String, Value>, at: &str) -> Result<Vec<Message>> {
    let list = match obj.get("messages") {
        Some(Value::Array(a)) => a,
        other => {
            return Err(field_err(
                at,
                "messages",
                "a list of messages",
                other.unwrap_or(&Value::Null),
            ))
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| openai_message(m, at, &format!("messages[{i}]")))
        .collect()
}

/// One OpenAI chat message (also Docent's and Inspect's shapes, which share its fields).
pub(super) fn openai_message(m: &Value, at: &str, field: &str) -> Result<Message> {
    let Value::Object(o) = m else {
        return Err(field_err(at, field, "an object", m));
    };
    let role_v = o.get("role").unwrap_or(&Value::Null);
    let role = role_v.as_str().and_then(Role::parse).ok_or_else(|| {
        field_err(
            at,
            &format!("{field}.role"),
            &format!("one of {}", Role::NAMES.join(", ")),
            role_v,
        )
    })?;
    let (content, mut reasoning) = content_text(
        o.get("content").unwrap_or(&Value::Null),
        at,
        &format!("{field}.content"),
    )?;
    for k in ["reasoning_content", "reasoning"] {
        if let Some(Value::String(r)) = o.get(k) {
            reasoning = Some(r.clone());
        }
    }
    let tool_calls = match o.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(j, c)| tool_call(c, at, &format!("{field}.tool_calls[{j}]")))
            .collect::<Result<_>>()?,
        Some(other) => {
            return Err(field_err(
                at,
                &format!("{field}.tool_calls"),
                "a list",
                other,
            ))
        }
    };
    let text = |k: &str| -> Result<Option<String>> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(field_err(at, &format!("{field}.{k}"), "a string", other)),
        }
    };
    let metadata = match o.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(field_err(
                at,
                &format!("{field}.metadata"),
                "an object",
                other,
            ))
        }
    };
    // Docent's user messages may answer several calls: a list of ids, kept comma-joined.
    let tool_call_id = match o.get("tool_call_id") {
        Some(Value::Array(ids)) => {
            let v: Vec<&str> = ids.iter().filter_map(Value::as_str).collect();
            (!v.is_empty()).then(|| v.join(","))
        }
        _ => text("tool_call_id")?,
    };
    Ok(Message {
        role,
        content,
        reasoning,
        tool_calls,
        tool_call_id,
        name: text("name")?.or(text("function")?),
        metadata,
    })
}

/// A tool call: OpenAI's `{"id", "type": "function", "function": {"name", "arguments":
/// "JSON text"}}`, or the flat `{"id", "function": "name", "arguments": {...}}` of Inspect
/// and Docent.
pub(super) fn tool_call(c: &Value, at: &str, field: &str) -> Result<ToolCall> {
    let id = c
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let (function, arguments) = match c.get("function") {
        Some(Value::Object(f)) => (
            f.get("name").cloned().unwrap_or(Value::Null),
            f.get("arguments").cloned().unwrap_or(Value::Null),
        ),
        Some(v @ Value::String(_)) => (
            v.clone(),
            c.get("arguments").cloned().unwrap_or(Value::Null),
        ),
        other => {
            return Err(field_err(
                at,
                &format!("{field}.function"),
                "an object {name, arguments} or a function name",
                other.unwrap_or(&Value::Null),
            ))
        }
    };
    let function = function
        .as_str()
        .ok_or_else(|| field_err(at, &format!("{field}.function.name"), "a string", &function))?
        .to_string();
    // Arguments given as JSON text are parsed; text that is not JSON is kept as a string.
    let arguments = match arguments {
        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        other => other,
    };
    Ok(ToolCall {
        id,
        function,
        arguments,
    })
}

fn sharegpt_messages(obj: &Map<String, Value>, at: &str) -> Result<Vec<Message>> {
    let list = match obj.get("conversations") {
        Some(Value::Array(a)) => a,
        other => {
            return Err(field_err(
                at,
                "conversations",
                "a list of {from, value}",
                other.unwrap_or(&Value::Null),
            ))
        }
    };
    let mut out = Vec::new();
    // A top-level "system" string (some ShareGPT variants) comes first.
    if let Some(Value::String(s)) = obj.get("system") {
        out.push(Message::new(Role::System, s));
    }
    for (i, m) in list.iter().enumerate() {
        let field = format!("conversations[{i}]");
        let from = m.get("from").unwrap_or(&Value::Null);
        let role = match from.as_str() {
            Some("system") => Role::System,
            Some("human" | "user") => Role::User,
            Some("gpt" | "assistant" | "chatgpt" | "bard" | "bing" | "model" | "function_call") => {
                Role::Assistant
            }
            Some("tool" | "observation" | "function_response" | "function") => Role::Tool,
            _ => {
                return Err(field_err(
                    at,
                    &format!("{field}.from"),
                    "one of system, human, gpt (or user, assistant, tool, observation)",
                    from,
                ))
            }
        };
        let value = m.get("value").unwrap_or(&Value::Null);
        let text = value
            .as_str()
            .ok_or_else(|| field_err(at, &format!("{field}.value"), "a string", value))?;
        out.push(Message::new(role, text));
    }
    Ok(out)
}
