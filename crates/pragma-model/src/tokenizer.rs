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
use crate::spm::Spm;

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
    backend: Backend,
    pub info: TokenizerInfo,
    pub chat_template: Option<String>,
    specials: Vec<(String, u32)>,
}

#[derive(Clone)]
enum Backend {
    Hf {
        /// Parses special tokens such as `<|im_start|>` out of text.
        with_special: Box<tokenizers::Tokenizer>,
        /// Matches no special token: their strings are plain characters. Ordinary added
        /// tokens (not special) still match, with their own ids, as in Hugging Face's
        /// `split_special_tokens=True`.
        plain: Box<tokenizers::Tokenizer>,
    },
    /// A SentencePiece vocabulary from GGUF (Gemma), tokenized as llama.cpp does.
    Spm(std::sync::Arc<Spm>),
}

/// Gemma's chat template (the text part of the one Google ships with Gemma 3 instruct
/// models): a system message joins the first user turn, the assistant is `model`.
/// Used when a Gemma GGUF carries no `tokenizer.chat_template`.
pub const GEMMA_CHAT_TEMPLATE: &str = "{{ bos_token }}\
{%- if messages[0]['role'] == 'system' -%}\
{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\
{%- set loop_messages = messages[1:] -%}\
{%- else -%}\
{%- set first_user_prefix = '' -%}\
{%- set loop_messages = messages -%}\
{%- endif -%}\
{%- for message in loop_messages -%}\
{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\
{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}\
{%- endif -%}\
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}\
{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' }}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}";

impl Tokenizer {
    /// Build from a GGUF file's `tokenizer.ggml.*` metadata: byte-level BPE (`gpt2`)
    /// or SentencePiece (`llama`) vocabularies.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let model = f.meta_str("tokenizer.ggml.model")?;
        if model == "llama" {
            return Self::from_gguf_spm(f);
        }
        if model != "gpt2" {
            return Err(Error::Tokenizer(format!(
                "{}: tokenizer.ggml.model is '{model}'; pragma reads byte-level BPE ('gpt2') and \
                 SentencePiece ('llama') GGUF vocabularies, use the model's tokenizer.json for others",
                f.path.display()
            )));
        }
        let pre = f
            .meta_str("tokenizer.ggml.pre")
            .unwrap_or("default")
            .to_string();
        let tokens = string_array(f, "tokenizer.ggml.tokens")?;
        let merges = string_array(f, "tokenizer.ggml.merges")?;
        let types = token_types(f, tokens.len());
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
        let backend = Backend::Hf {
            with_special: Box::new(with_special),
            plain: Box::new(plain),
        };
        let (info, chat_template) = gguf_info(f, "gguf byte-level BPE", Some(pre), tokens.len());
        Ok(Self {
            info,
            backend,
            chat_template,
            specials,
        })
    }

    /// A SentencePiece vocabulary (`tokenizer.ggml.model = "llama"`, e.g. Gemma 3).
    fn from_gguf_spm(f: &GgufFile) -> Result<Self> {
        let tokens = string_array(f, "tokenizer.ggml.tokens")?;
        let scores: Vec<f32> = match f.meta("tokenizer.ggml.scores") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::F32(x) => *x,
                    Value::F64(x) => *x as f32,
                    _ => 0.0,
                })
                .collect(),
            _ => {
                return Err(Error::MissingMetadata {
                    source_name: f.path.display().to_string(),
                    key: "tokenizer.ggml.scores".into(),
                })
            }
        };
        let types = token_types(f, tokens.len());
        let add_space_prefix = !matches!(
            f.meta("tokenizer.ggml.add_space_prefix"),
            Some(Value::Bool(false))
        );
        let specials: Vec<(String, u32)> = types
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == crate::spm::token_type::CONTROL as i64)
            .filter_map(|(i, _)| tokens.get(i).map(|s| (s.clone(), i as u32)))
            .collect();
        let n = tokens.len();
        let spm = Spm::new(
            tokens,
            scores,
            types.iter().map(|&t| t as i32).collect(),
            add_space_prefix,
        );
        let (mut info, mut chat_template) = gguf_info(f, "gguf SentencePiece", None, n);
        if let Some(eot) = spm.token_to_id("<end_of_turn>") {
            if !info.stop_tokens.contains(&eot) {
                info.stop_tokens.push(eot);
            }
            if chat_template.is_none() && spm.token_to_id("<start_of_turn>").is_some() {
                chat_template = Some(GEMMA_CHAT_TEMPLATE.to_string());
            }
        }
        Ok(Self {
            info,
            backend: Backend::Spm(std::sync::Arc::new(spm)),
            chat_template,
            specials,
        })
    }
}

/// BOS/EOS/stop tokens and the chat template from GGUF metadata.
fn gguf_info(
    f: &GgufFile,
    kind: &str,
    pre: Option<String>,
    vocab_size: usize,
) -> (TokenizerInfo, Option<String>) {
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
    (
        TokenizerInfo {
            kind: kind.into(),
            pre,
            vocab_size,
            bos,
            eos,
            add_bos,
            stop_tokens,
        },
        chat_template,
    )
}

/// `tokenizer.ggml.token_type`, normal (1) where missing.
fn token_types(f: &GgufFile, n: usize) -> Vec<i64> {
    match f.meta("tokenizer.ggml.token_type") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::I32(x) => *x as i64,
                Value::U32(x) => *x as i64,
                _ => 1,
            })
            .collect(),
        _ => vec![1; n],
    }
}

impl Tokenizer {
    /// Build from a Hugging Face folder (`tokenizer.json`, optional `tokenizer_config.json`).
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        // The tokenizers crate panics on some malformed files (a bad `decoder`): a
        // panic is an error here like any other.
        let with_special = crate::guard::catch(|| tokenizers::Tokenizer::from_file(&path))
            .map_err(|p| {
                Error::Tokenizer(format!(
                    "{}: not a tokenizer.json the tokenizers library can read ({p})",
                    path.display()
                ))
            })?
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
        let bos = id_of("bos_token");
        let vocab_size = with_special.get_vocab_size(true);
        let chat_template = match cfg.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
        };
        Ok(Self {
            backend: Backend::Hf {
                with_special: Box::new(with_special),
                plain: Box::new(plain),
            },
            info: TokenizerInfo {
                kind: "tokenizer.json".into(),
                pre: None,
                vocab_size,
                bos,
                eos,
                add_bos: cfg
                    .get("add_bos_token")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
                stop_tokens: eos.into_iter().collect(),
            },
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
        let tk = match &self.backend {
            Backend::Spm(spm) => return Ok(spm.encode(text, special)),
            Backend::Hf { with_special, .. } if special => with_special,
            Backend::Hf { plain, .. } => plain,
        };
        let enc = tk
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(format!("encoding failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids back to text (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.backend {
            Backend::Spm(spm) => Ok(spm.decode(ids)),
            Backend::Hf { with_special, .. } => with_special
                .decode(ids, false)
                .map_err(|e| Error::Tokenizer(format!("decoding failed: {e}"))),
        }
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

    /// The vocabulary entry of `id` as stored (byte-level BPE shows a space as `Ġ`,
    /// SentencePiece as `▁`).
    pub fn piece(&self, id: u32) -> Option<String> {
        match &self.backend {
            Backend::Spm(spm) => spm.piece(id).map(str::to_string),
            Backend::Hf { with_special, .. } => with_special.id_to_token(id),
        }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.backend {
            Backend::Spm(spm) => spm.token_to_id(token),
            Backend::Hf { with_special, .. } => with_special.token_to_id(token),
        }
    }

    fn special_text(&self, id: Option<u32>) -> String {
        id.and_then(|i| self.piece(i)).unwrap_or_default()
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

/// Refuse `*` unless a string literal stands on one side of it (string repetition, as
/// in `' ' * indent`, the only use chat templates make of it). minijinja repeats a
/// sequence lazily and iterates the repeats without spending fuel, so `() * 66 ** 6`
/// printed, or joined into a string, iterates for hours whatever the fuel (found by the
/// `chat_template` fuzz target); a repeated string is capped by minijinja itself.
fn check_repetition(template: &str) -> Result<()> {
    use minijinja::machinery::{tokenize, Token, WhitespaceConfig};
    let tokens: Vec<Token<'_>> = tokenize(
        template,
        false,
        Default::default(),
        WhitespaceConfig::default(),
    )
    .map_while(|t| t.ok().map(|(t, _)| t))
    .collect();
    let literal = |t: Option<&Token<'_>>| matches!(t, Some(Token::Str(_) | Token::String(_)));
    for (i, t) in tokens.iter().enumerate() {
        if matches!(t, Token::Mul)
            && !literal(i.checked_sub(1).and_then(|j| tokens.get(j)))
            && !literal(tokens.get(i + 1))
        {
            return Err(Error::ChatTemplate(
                "the template multiplies something other than a string literal ('*'): pragma \
                 renders only string repetition, which is all chat templates use"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Instructions a chat template may run (minijinja's fuel).
pub const CHAT_TEMPLATE_FUEL: u64 = 5_000_000;
/// Items of one collection a chat template may print at once.
pub const CHAT_TEMPLATE_MAX_ITEMS: usize = 10_000;
/// Bytes a chat template may print in all.
pub const CHAT_TEMPLATE_MAX_BYTES: usize = 16 << 20;

/// Render a Jinja chat template (minijinja, with Python string methods), at most
/// [`CHAT_TEMPLATE_FUEL`] instructions.
pub fn render_chat(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    check_repetition(template)?;
    let mut env = minijinja::Environment::new();
    // A template is code from a model's files: bounded, so a hostile or broken one (an
    // endless loop; found by the `chat_template` fuzz target) is an error, not a hang.
    // Real templates over long conversations use well under a tenth of this.
    env.set_fuel(Some(CHAT_TEMPLATE_FUEL));
    // Fuel counts instructions, not what one instruction prints: `{{ messages * 9999999 }}`
    // is one instruction that prints millions of items. Printed collections are capped at
    // CHAT_TEMPLATE_MAX_ITEMS and the whole output at CHAT_TEMPLATE_MAX_BYTES.
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    env.set_formatter(move |out, state, value| {
        use minijinja::value::ValueKind;
        let too_big =
            |what: String| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, what);
        if matches!(
            value.kind(),
            ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
        ) {
            match value.len() {
                Some(n) if n > CHAT_TEMPLATE_MAX_ITEMS => {
                    return Err(too_big(format!(
                    "the template prints a collection of more than {CHAT_TEMPLATE_MAX_ITEMS} items"
                )))
                }
                // Printed without iterating: an empty sequence repeated 10^11 times
                // (`{{ () * 66 ** 6 }}`) has no items but iterates for hours.
                Some(0) => {
                    let empty = if value.kind() == ValueKind::Map {
                        "{}"
                    } else {
                        "[]"
                    };
                    return out
                        .write_str(empty)
                        .map_err(|_| too_big("write failed".into()));
                }
                Some(_) => {}
                None => {
                    return Err(too_big(
                        "the template prints a collection of unknown size".into(),
                    ))
                }
            }
        }
        let n = value.as_str().map_or(64, str::len);
        let total = written.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        if total > CHAT_TEMPLATE_MAX_BYTES {
            return Err(too_big(format!(
                "the template's output passed {CHAT_TEMPLATE_MAX_BYTES} bytes"
            )));
        }
        minijinja::escape_formatter(out, state, value)
    });
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
