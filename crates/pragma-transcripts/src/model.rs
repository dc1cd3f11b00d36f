//! The data model: collection -> run -> transcript -> message, Docent's shape (Transluce's
//! `AgentRun`/`Transcript`/`ChatMessage`) with Inspect AI's sample identity (sample id,
//! epoch) on the run, so that importing and exporting either is a mapping.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A message's author, as in the OpenAI chat format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub const NAMES: &'static [&'static str] = &["system", "user", "assistant", "tool"];

    pub fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// Parse a role name; `None` if unknown.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "system" | "developer" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" | "function" => Some(Role::Tool),
            _ => None,
        }
    }
}

/// A tool call made by an assistant message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub function: String,
    /// The arguments as JSON (an object, usually).
    pub arguments: Value,
}

/// One message. `content` is its plain text (text parts joined by newlines); reasoning
/// (chain of thought the provider returned separately) is kept apart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Tool messages: the call they answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Tool messages: the function's name; other roles: the author's name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

impl Message {
    pub fn new(role: Role, content: &str) -> Self {
        Message {
            role,
            content: content.to_string(),
            reasoning: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            metadata: Map::new(),
        }
    }

    /// The text the model reads for this message when a chat template has no place for
    /// reasoning or tool calls: reasoning in `<think>` tags first, the content, then each
    /// tool call as `<tool_call>{"name": ..., "arguments": ...}</tool_call>`.
    pub fn rendered_text(&self) -> String {
        let mut s = String::new();
        if let Some(r) = &self.reasoning {
            s += &format!("<think>\n{r}\n</think>\n");
        }
        s += &self.content;
        for c in &self.tool_calls {
            if !s.is_empty() {
                s.push('\n');
            }
            s += &format!(
                "<tool_call>{}</tool_call>",
                serde_json::json!({"name": c.function, "arguments": c.arguments})
            );
        }
        s
    }
}

/// One conversation of a run (most runs have one; multi-agent runs have several).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    pub messages: Vec<Message>,
}

impl Transcript {
    /// Name each tool message that lacks one after the call it answers (OpenAI's tool
    /// messages carry only `tool_call_id`).
    pub fn link_tool_names(&mut self) {
        let calls: Vec<(String, String)> = self
            .messages
            .iter()
            .flat_map(|m| {
                m.tool_calls
                    .iter()
                    .map(|c| (c.id.clone(), c.function.clone()))
            })
            .collect();
        for m in &mut self.messages {
            if m.role == Role::Tool && m.name.is_none() {
                if let Some(id) = &m.tool_call_id {
                    m.name = calls.iter().find(|c| &c.0 == id).map(|c| c.1.clone());
                }
            }
        }
    }
}

/// One execution of one task: the row of a collection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The run's id in its source (Docent's run id, Inspect's `{sample id}_epoch_{n}`, or
    /// the line number of a JSONL file).
    pub key: String,
    /// The task instance it ran (Inspect's sample id), for pairing runs across
    /// collections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// Scores by name: numbers, booleans, strings or objects as the source gave them.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub scores: Map<String, Value>,
    pub transcripts: Vec<Transcript>,
    /// Where it came from: `FILE` and the record (`line 3`, `samples/2_epoch_1.json`).
    #[serde(default)]
    pub source: String,
}
