//! `manifest.json`: what a store holds and how it was made. Written last and
//! atomically after every shard, so it only ever lists complete shards.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::corpus::Format;
use crate::error::{Error, Result};
use crate::location::Location;

pub const FORMAT_NAME: &str = "pragma-activation-store";
/// 2 (pragma 0.2): `ln_final.hook_normalized` is TransformerLens' (before the gain), token
/// ids come from the shared input builder (BOS never doubled, message text literal), and
/// shards close at `shard_tokens`. Version-1 stores are refused: re-cache them.
pub const FORMAT_VERSION: u32 = 2;
pub const MANIFEST: &str = "manifest.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelId {
    /// The name or path the user gave.
    pub spec: String,
    pub name: Option<String>,
    /// sha256 of the weights file (GGUF) or of the safetensors files in order.
    pub sha256: String,
    pub arch: String,
    pub n_layers: usize,
    pub d_model: usize,
    /// The tokenizer's control-token ids (BOS, EOS, chat markers), sorted: SAE training
    /// and evaluation leave their rows out (attention sinks with outsized activations),
    /// as SAELens' `exclude_special_tokens` does.
    #[serde(default)]
    pub special_tokens: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookEntry {
    /// TransformerLens name, e.g. `blocks.3.hook_resid_post`.
    pub name: String,
    /// Shape of one token's activation, e.g. `[576]` or `[9, 64]`.
    pub shape: Vec<usize>,
}

/// How documents longer than the context are handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LongDocs {
    /// Keep the first `ctx` tokens.
    Truncate,
    /// Cut into consecutive windows of `ctx` tokens, each run separately.
    Split,
}

impl LongDocs {
    /// `truncate` or `split`.
    pub fn parse(s: &str) -> crate::Result<LongDocs> {
        match s {
            "truncate" => Ok(LongDocs::Truncate),
            "split" => Ok(LongDocs::Split),
            other => Err(crate::Error::Invalid(format!(
                "--long '{other}': expected truncate or split"
            ))),
        }
    }
}

/// Everything that determines the store's bytes; a resumed run must match it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub ctx: usize,
    pub batch: usize,
    /// The BOS id when the input rule adds one (every sequence starts with it);
    /// `None` when it does not (a chat template may still open with it).
    pub bos: Option<u32>,
    /// Control-token strings in document text were parsed as control tokens
    /// (`--parse-special`); false: literal text. Absent in older manifests (false).
    #[serde(default)]
    pub parse_special: bool,
    pub long_docs: LongDocs,
    /// Stop at the first document boundary at or past this many tokens.
    pub max_tokens: Option<u64>,
    /// Corpus documents skipped before the first cached one.
    #[serde(default)]
    pub skip_docs: u64,
    /// A shard is closed at the first document boundary at or past this many tokens.
    pub shard_tokens: usize,
    pub dtype: String,
}

impl Settings {
    /// The input rule the store was made with, for commands that must build the same
    /// inputs (e.g. `probe train --store`).
    pub fn input_rule(&self) -> pragma_model::input::InputRule {
        pragma_model::input::InputRule {
            bos: self.bos.is_some(),
            parse_special: self.parse_special,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub path: String,
    pub sha256: String,
    pub format: Format,
    pub n_docs: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub file: String,
    pub n_tokens: u64,
    /// First global token index in this shard.
    pub first_token: u64,
    /// Documents fully contained in this shard: `first_doc..first_doc + n_docs`.
    pub first_doc: u64,
    pub n_docs: u64,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub pragma_version: String,
    pub model: ModelId,
    pub hooks: Vec<HookEntry>,
    pub settings: Settings,
    pub dataset: Dataset,
    /// Per-token metadata stored in every shard next to the activations.
    pub token_tables: Vec<String>,
    pub shards: Vec<ShardEntry>,
    pub n_tokens: u64,
    pub n_docs_done: u64,
    pub n_seqs: u64,
    pub truncated_docs: u64,
    pub split_docs: u64,
    pub empty_docs: u64,
    pub complete: bool,
    /// Set in a part's manifest (`parts/part-I-of-N.json`) of a sharded job; never in a
    /// finalized `manifest.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<PartInfo>,
}

/// Which part of a sharded job a part manifest covers: shards
/// `first_shard..end_shard` of the job's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub index: usize,
    pub count: usize,
    pub first_shard: usize,
    pub end_shard: usize,
}

impl Manifest {
    /// The manifest of the store at `dir` (a folder, or an object-store URL written as a
    /// path: see [`crate::location`]).
    pub fn read(dir: &Path) -> Result<Manifest> {
        let loc = Location::parse(&dir.to_string_lossy())?;
        if let Some(m) = Self::read_at(&loc, MANIFEST)? {
            return Ok(m);
        }
        let reason = if loc.get(crate::parts::PLAN)?.is_some() {
            format!(
                "a sharded job that is not finalized yet: see its parts with `pragma store info {0}`, then `pragma store finalize {0}`",
                loc.url()
            )
        } else {
            "no store here (no manifest.json); make one with `pragma cache`".to_string()
        };
        Err(Error::Store {
            path: PathBuf::from(loc.url()),
            reason,
        })
    }

    /// Manifest file `name` at `loc` (`manifest.json`, or a part's), or `None` if absent.
    pub fn read_at(loc: &Location, name: &str) -> Result<Option<Manifest>> {
        let Some(bytes) = loc.get(name)? else {
            return Ok(None);
        };
        let dir = PathBuf::from(loc.url());
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Store {
            path: dir.clone(),
            reason: format!("{name} is not a valid manifest: {e}"),
        })?;
        if m.format != FORMAT_NAME || m.version != FORMAT_VERSION {
            return Err(Error::Store {
                path: dir.to_path_buf(),
                reason: format!(
                    "format {} v{} found, expected {FORMAT_NAME} v{FORMAT_VERSION} (made by pragma {}; \
                     re-cache with this version)",
                    m.format, m.version, m.pragma_version
                ),
            });
        }
        Ok(Some(m))
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        self.write_at(&Location::Local(dir.to_path_buf()), MANIFEST)
    }

    /// Write as `name` at `loc`, atomically.
    pub fn write_at(&self, loc: &Location, name: &str) -> Result<()> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        loc.put(name, text.as_bytes())
    }

    pub fn hook(&self, name: &str) -> Result<&HookEntry> {
        self.hooks
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| Error::UnknownHook {
                name: name.to_string(),
                available: self
                    .hooks
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}
