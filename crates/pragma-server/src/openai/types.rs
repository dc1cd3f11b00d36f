//! OpenAI's request and response shapes (Chat Completions, Completions, Models; the
//! fields pragma reads), and pragma's one namespaced extension field.
//!
//! Field names follow OpenAI's API reference. Fields pragma does not implement are
//! accepted and ignored (clients such as Inspect AI send `frequency_penalty`, `user`, ...),
//! except `n` > 1, which is refused. Inside `pragma`, unknown fields are an error.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A chat message's `content`: a string, or an array of parts of which the text ones
/// are joined (`[{"type": "text", "text": "..."}]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Clone, Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl Content {
    /// The text; an error names a non-text part.
    pub fn text(&self) -> Result<String, String> {
        match self {
            Content::Text(s) => Ok(s.clone()),
            Content::Parts(parts) => {
                let mut out = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => out.push_str(t),
                        (k, _) => {
                            return Err(format!(
                                "content part of type '{k}': pragma serves text models, expected \
                                 type 'text'"
                            ))
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// `stop`: one string or up to 4.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn list(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

/// `POST /v1/chat/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// `null` as absent (some clients send it).
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<usize>,
    #[serde(default)]
    pub n: Option<usize>,
    #[serde(default)]
    pub pragma: Option<PragmaExt>,
    /// Tool definitions: refused (pragma serves no tool calls yet) rather than ignored.
    #[serde(default)]
    pub tools: Option<Vec<serde_json::Value>>,
}

/// `POST /v1/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: CompletionPrompt,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Completions' `logprobs`: how many top alternatives per token (0-5).
    #[serde(default)]
    pub logprobs: Option<usize>,
    #[serde(default)]
    pub n: Option<usize>,
    #[serde(default)]
    pub pragma: Option<PragmaExt>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The `pragma` field of a request body: interventions for this request only.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PragmaExt {
    #[serde(default)]
    pub steer: Vec<SteerSpec>,
    /// Registered probes to score every generated token with (`--probe NAME=FILE`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monitor: Vec<String>,
    /// Hooks (TransformerLens names, model-width sites such as
    /// `blocks.9.hook_resid_post`) whose activations at every generated token to return.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capture: Vec<String>,
    /// Registered SAEs (`--sae NAME=DIR`) whose strongest latents at every generated
    /// token to return.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sae_latents: Vec<SaeLatentsSpec>,
}

/// A Completions `prompt`: a string, token ids, or a one-element array of either
/// (OpenAI's batch form; pragma answers one prompt per request).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum CompletionPrompt {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
    IdLists(Vec<Vec<u32>>),
}

impl CompletionPrompt {
    /// The one prompt: text to tokenize (`Ok`) or ids taken as they are (`Err`).
    pub fn one(&self) -> Result<crate::openai::Prompt<'_>, Vec<u32>> {
        match self {
            CompletionPrompt::Text(t) => Ok(crate::openai::Prompt::Text(t)),
            CompletionPrompt::Texts(v) if v.len() == 1 => Ok(crate::openai::Prompt::Text(&v[0])),
            CompletionPrompt::Ids(ids) => Err(ids.clone()),
            CompletionPrompt::IdLists(v) if v.len() == 1 => Err(v[0].clone()),
            // Refused by `check`.
            _ => Ok(crate::openai::Prompt::Text("")),
        }
    }

    /// More than one prompt in the array: refused.
    pub fn count(&self) -> usize {
        match self {
            CompletionPrompt::Text(_) | CompletionPrompt::Ids(_) => 1,
            CompletionPrompt::Texts(v) => v.len(),
            CompletionPrompt::IdLists(v) => v.len(),
        }
    }
}

/// `{"sae": NAME, "top_k": 8}`: the `top_k` most active latents of a registered SAE.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SaeLatentsSpec {
    pub sae: String,
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

fn default_top_k() -> usize {
    8
}

/// What a request asked to read from its own forward passes, per generated token (the
/// position where the token is the input, after the request's steering): probe scores,
/// captured activations (`[n_tokens][d]`) and SAE latents.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Readouts {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub monitor_scores: BTreeMap<String, Vec<MonitorScore>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub captures: BTreeMap<String, Capture>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sae_latents: BTreeMap<String, Vec<TokenLatents>>,
}

/// One hook's activations at the generated tokens.
#[derive(Clone, Debug, Serialize)]
pub struct Capture {
    pub tokens: Vec<String>,
    /// `[n_tokens][d]`
    pub values: Vec<Vec<f32>>,
}

/// A generated token's strongest SAE latents, most active first (active ones only).
#[derive(Clone, Debug, Serialize)]
pub struct TokenLatents {
    pub token: String,
    pub latents: Vec<LatentActivation>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LatentActivation {
    pub index: usize,
    pub activation: f32,
}

/// `POST /v1/pragma/vectors`: register a steering vector, one direction per layer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVector {
    pub name: String,
    /// Layer (as a string, JSON keys) -> direction of `d_model` numbers.
    pub directions: BTreeMap<String, Vec<f32>>,
    /// Site within each block; `hook_resid_post` by default.
    #[serde(default = "default_site")]
    pub site: String,
}

fn default_site() -> String {
    "hook_resid_post".into()
}

/// A monitor's score of one generated token: the probe at its hook, on the residual where
/// the token is the input (after the request's steering), as `pragma generate --monitor`.
#[derive(Clone, Debug, Serialize)]
pub struct MonitorScore {
    pub token: String,
    pub score: f64,
    /// For a logistic probe, the positive class's probability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
}

/// One steering vector applied to this request: a registered vector by name, `op` at
/// each of its layers (or `layers`), scaled by `scale`, at `positions`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SteerSpec {
    pub vector: String,
    pub scale: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<usize>>,
    /// `all`, `from:1` (the default, as `pragma generate --steer`), `last`, `generated`, ...
    #[serde(default = "default_positions")]
    pub positions: String,
    /// `add` (the default), `ablate`, `ablate-then-add`.
    #[serde(default = "default_op")]
    pub op: String,
}

fn default_positions() -> String {
    "from:1".into()
}

fn default_op() -> String {
    "add".into()
}

#[derive(Clone, Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// One token's log-probability and its top alternatives (Chat Completions' shape).
#[derive(Clone, Debug, Serialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<Vec<TopLogprob>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// OpenAI's error object: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}
