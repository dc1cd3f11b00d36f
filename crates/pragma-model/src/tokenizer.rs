//! Tokenizers (from GGUF metadata or `tokenizer.json`) and chat templates.
//!
//! GGUF byte-level BPE vocabularies are rebuilt as a `tokenizers` pipeline with
//! llama.cpp's pre-tokenizer regexes for the file's `tokenizer.ggml.pre` value, so
//! ids match llama.cpp's (tested against its output in `fixtures/`).

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use serde::Serialize;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's pre-tokenizer regexes for a `tokenizer.ggml.pre` value, applied in order.
pub fn pre_tokenizer_regexes(pre: &str) -> Vec<&'static str> {
    match pre {
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            vec![r"\p{N}", GPT2_RE]
        }
        "gpt2" | "gpt-2" | "mpt" | "olmo" | "jais" | "trillion" => vec![GPT2_RE],
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" | "dbrx" | "smaug-bpe" => {
            vec![LLAMA3_RE]
        }
        "qwen2" | "stablelm2" | "hunyuan" | "deepseek-r1-qwen" => vec![QWEN2_RE],
        _ => vec![
            r"[\p{P}\$\+<=>\^~\|]+",
            GPT2_RE,
            r"\p{N}+",
            r"[0-9][0-9][0-9]",
        ],
    }
}

/// Where a tokenizer came from, for `pragma info` and manifests.
#[derive(Clone, Debug, Serialize)]
pub struct TokenizerInfo {
    pub kind: String,
    pub pre: Option<String>,
    pub vocab_size: usize,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub stop_tokens: Vec<u32>,
}

/// Text <-> ids, plus the model's chat template.
#[derive(Clone)]
pub struct Tokenizer {
    /// Parses special tokens such as `<|im_start|>` out of text.
    with_special: tokenizers::Tokenizer,
    /// Matches no special token: their strings are plain characters. Ordinary added
    /// tokens (not special) still match, with their own ids, as in Hugging Face's
    /// `split_special_tokens=True`.
    plain: tokenizers::Tokenizer,
    pub info: TokenizerInfo,
    pub chat_template: Option<String>,
    specials: Vec<(String, u32)>,
}

impl Tokenizer {
    /// Build from a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let model = f.meta_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::Tokenizer(format!(
                "{}: tokenizer.ggml.model is '{model}'; pragma reads byte-level BPE ('gpt2') GGUF vocabularies, \
                 use the model's tokenizer.json for others",
                f.path.display()
            )));
        }
        let pre = f
            .meta_str("tokenizer.ggml.pre")
            .unwrap_or("default")
            .to_string();
        let tokens = string_array(f, "tokenizer.ggml.tokens")?;
        let merges = string_array(f, "tokenizer.ggml.merges")?;
        let types: Vec<i64> = match f.meta("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::I32(x) => *x as i64,
                    Value::U32(x) => *x as i64,
                    _ => 1,
                })
                .collect(),
            _ => vec![1; tokens.len()],
        };
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(matches!(pre.as_str(), "llama3" | "llama-v3" | "llama-bpe"))
            .build()
            .map_err(|e| {
                Error::Tokenizer(format!("building BPE from {}: {e}", f.path.display()))
            })?;
        let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
        for re in pre_tokenizer_regexes(&pre) {
            let split = Split::new(
                SplitPattern::Regex(re.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| Error::Tokenizer(format!("pre-tokenizer regex {re:?}: {e}")))?;
            steps.push(split.into());
        }
        steps.push(ByteLevel::new(false, false, false).into());
        let mut with_special = tokenizers::Tokenizer::new(bpe);
        with_special.with_pre_tokenizer(Some(Sequence::new(steps)));
        with_special.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));

        // Control tokens (type 3) are special: matched in text only when asked
        // (llama.cpp's parse_special). User-defined tokens (type 4) are ordinary added
        // tokens, matched in any text, as llama.cpp does. Both keep their vocabulary ids.
        let of_type = |want: i64| -> Vec<(String, u32)> {
            types
                .iter()
                .enumerate()
                .filter(|(_, &t)| t == want)
                .filter_map(|(i, _)| tokens.get(i).map(|s| (s.clone(), i as u32)))
                .collect()
        };
        let specials = of_type(3);
        let added = |v: &[(String, u32)], special: bool| -> Vec<AddedToken> {
            v.iter()
                .map(|(s, _)| AddedToken::from(s.clone(), special))
                .collect()
        };
        with_special.add_special_tokens(&added(&specials, true));
        with_special.add_tokens(&added(&of_type(4), false));
        let plain = without_special_matching(&with_special);

        let id = |k: &str| f.meta_usize(k).ok().map(|v| v as u32);
        let (bos, eos) = (
            id("tokenizer.ggml.bos_token_id"),
            id("tokenizer.ggml.eos_token_id"),
        );
        let add_bos = matches!(
            f.meta("tokenizer.ggml.add_bos_token"),
            Some(Value::Bool(true))
        );
        let chat_template = f
            .meta_str("tokenizer.chat_template")
            .ok()
            .map(str::to_string);
        let mut stop_tokens: Vec<u32> = eos.into_iter().collect();
        if let Some(eot) = id("tokenizer.ggml.eot_token_id") {
            stop_tokens.push(eot);
        }
        Ok(Self {
            info: TokenizerInfo {
                kind: "gguf byte-level BPE".into(),
                pre: Some(pre),
                vocab_size: tokens.len(),
                bos,
                eos,
                add_bos,
                stop_tokens,
            },
            with_special,
            plain,
            chat_template,
            specials,
        })
    }

    /// Build from a Hugging Face folder (`tokenizer.json`, optional `tokenizer_config.json`).
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let with_special = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let cfg: serde_json::Value =
            match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
                Ok(s) => serde_json::from_str(&s).unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
        let token_of = |key: &str| -> Option<String> {
            match cfg.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                v => v
                    .get("content")
                    .and_then(|c| c.as_str())
                    .map(str::to_string),
            }
        };
        let id_of = |key: &str| token_of(key).and_then(|t| with_special.token_to_id(&t));
        let specials: Vec<(String, u32)> = with_special
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (t.content.clone(), *id))
            .collect();
        let plain = without_special_matching(&with_special);
        let eos = id_of("eos_token");
        let chat_template = match cfg.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
        };
        Ok(Self {
            info: TokenizerInfo {
                kind: "tokenizer.json".into(),
                pre: None,
                vocab_size: with_special.get_vocab_size(true),
                bos: id_of("bos_token"),
                eos,
                add_bos: cfg
                    .get("add_bos_token")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
                stop_tokens: eos.into_iter().collect(),
            },
            with_special,
            plain,
            chat_template,
            specials,
        })
    }

    /// Tokenize `text`. With `special`, control tokens written in the text
    /// (`<|im_start|>`) become their ids; without, they are plain characters.
    /// No BOS is added here. Model input goes through
    /// [`Tokenizer::build_input`](crate::input) instead, which applies the BOS rule and
    /// keeps chat message contents literal.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let tk = if special {
            &self.with_special
        } else {
            &self.plain
        };
        let enc = tk
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(format!("encoding failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids back to text (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.with_special
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(format!("decoding failed: {e}")))
    }

    /// One token's text as it would print, for per-token displays.
    pub fn token_str(&self, id: u32) -> String {
        self.decode(&[id]).unwrap_or_else(|_| format!("<{id}>"))
    }

    pub fn special_tokens(&self) -> &[(String, u32)] {
        &self.specials
    }

    /// Whether `id` is a control token (`<|im_start|>`, BOS, EOS, ...).
    pub fn is_special(&self, id: u32) -> bool {
        self.specials.iter().any(|(_, i)| *i == id)
    }

    /// The vocabulary entry of `id` as stored (byte-level BPE shows a space as `Ġ`).
    pub fn piece(&self, id: u32) -> Option<String> {
        self.with_special.id_to_token(id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.with_special.token_to_id(token)
    }

    fn special_text(&self, id: Option<u32>) -> String {
        id.and_then(|i| self.with_special.id_to_token(i))
            .unwrap_or_default()
    }

    /// Render chat messages with the model's template (Jinja, as in HF `apply_chat_template`).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tpl = self.chat_template.as_deref().ok_or_else(|| {
            Error::ChatTemplate(
                "this model has no chat template (tokenizer.chat_template); use a plain prompt"
                    .into(),
            )
        })?;
        render_chat(
            tpl,
            messages,
            add_generation_prompt,
            &self.special_text(self.info.bos),
            &self.special_text(self.info.eos),
        )
    }
}

/// The same tokenizer with special-token matching off (ids unchanged).
fn without_special_matching(t: &tokenizers::Tokenizer) -> tokenizers::Tokenizer {
    let mut plain = t.clone();
    plain.set_encode_special_tokens(true);
    plain
}

fn string_array(f: &GgufFile, key: &str) -> Result<Vec<String>> {
    match f.meta(key) {
        Some(Value::Array(a)) => Ok(a
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                _ => String::new(),
            })
            .collect()),
        _ => Err(Error::MissingMetadata {
            source_name: f.path.display().to_string(),
            key: key.to_string(),
        }),
    }
}

/// One chat turn.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Render a Jinja chat template.
pub fn render_chat(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| Error::ChatTemplate(format!("cannot parse the template: {e}")))?;
    let tpl = env
        .get_template("chat")
        .map_err(|e| Error::ChatTemplate(e.to_string()))?;
    tpl.render(minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    })
    .map_err(|e| Error::ChatTemplate(format!("rendering failed: {e}")))
}
