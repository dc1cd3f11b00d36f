//! pragma-model: hooked llama-family transformers from GGUF or safetensors.
//!
//! This crate is the first stage of pragma's data flow (model -> activations ->
//! methods -> benchmark -> CLI). It loads a checkpoint and its tokenizer, and runs
//! forward passes and generation with [`hooks::Hooks`] passed into each call.
//!
//! ```no_run
//! use pragma_model::{Model, hooks::{Hooks, HookPoint}, llama::{Batch, Logits}};
//! use pragma_model::input::{InputRule, Prompt};
//! let model = Model::load("smollm2-135m-instruct", &mut |msg| eprintln!("{msg}"))?;
//! let ids = model.tokenizer.build_input(&Prompt::Text("The capital of France is"), InputRule::default())?.ids;
//! let mut hooks = Hooks::new();
//! hooks.capture(HookPoint::ResidPost(10));
//! let batch = Batch::single(&ids, model.device())?;
//! let (logits, cache) = model.transformer.forward(&batch, &hooks, Logits::Last)?;
//! let resid = cache.get(HookPoint::ResidPost(10))?; // [1, pos, 576]
//! # Ok::<(), pragma_model::Error>(())
//! ```

mod batch;
pub mod config;
pub mod decode;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod guard;
pub mod hf;
pub mod hooks;
pub mod input;
pub mod io;
mod linear;
pub mod llama;
pub mod quant;
mod rowops;
pub mod spm;
pub mod testing;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Serialize;

pub use config::{Arch, Config};
pub use error::{Error, Result};
pub use input::{InputRule, ModelInput, Prompt};
pub use llama::{Transformer, WeightMode};
pub use tokenizer::Tokenizer;

/// The name a new user types for the default model.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// What was loaded and from where.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    /// The name or path the user gave.
    pub spec: String,
    /// The file or folder the weights came from.
    pub path: PathBuf,
    pub format: String,
    pub name: Option<String>,
    /// Tensor dtypes in the file and how many tensors have each.
    pub file_dtypes: Vec<(String, usize)>,
}

/// A model ready to run: transformer, tokenizer and provenance.
pub struct Model {
    pub transformer: Transformer,
    pub tokenizer: Tokenizer,
    pub info: ModelInfo,
}

impl Model {
    /// Load from a `.gguf` file, a Hugging Face folder (`config.json` +
    /// `*.safetensors` + `tokenizer.json`), or a built-in name such as
    /// `smollm2-135m-instruct` (fetched on first use). `progress` receives
    /// one-line status messages. Weights are held as `PRAGMA_WEIGHTS` says (the CLI's
    /// `--weights`; default: in the file's dtype, [`WeightMode::Native`]).
    pub fn load(spec: &str, progress: &mut dyn FnMut(&str)) -> Result<Model> {
        Self::load_with(spec, WeightMode::from_env()?, progress)
    }

    /// [`Self::load`] with the weight mode given.
    pub fn load_with(
        spec: &str,
        mode: WeightMode,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Model> {
        let path = resolve(spec, progress)?;
        let device = Device::Cpu;
        if path.is_dir() {
            let cfg = hf::read_config(&path)?;
            let tokenizer = Tokenizer::from_hf_dir(&path)?;
            let mut src = hf::SafetensorsWeights::open(&path, &cfg)?;
            let transformer = Transformer::load_with(cfg, &mut src, &device, mode)?;
            return Ok(Model {
                transformer,
                tokenizer,
                info: ModelInfo {
                    spec: spec.to_string(),
                    format: "safetensors".into(),
                    name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
                    file_dtypes: vec![],
                    path,
                },
            });
        }
        let mut file = gguf::GgufFile::open(&path)?;
        check_fits(&path, file.weight_bytes(mode == WeightMode::F32), mode)?;
        let mut cfg = file.config()?;
        if file.has_tensor("rope_freqs.weight") {
            let f = file.tensor_f32("rope_freqs.weight")?.to_vec1::<f32>()?;
            cfg.rope_freq_factors = Some(f.into_iter().map(f64::from).collect());
        }
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let transformer = {
            let mut src = gguf::GgufWeights {
                file: &mut file,
                cfg: cfg.clone(),
            };
            Transformer::load_with(cfg, &mut src, &device, mode)?
        };
        Ok(Model {
            transformer,
            tokenizer,
            info: ModelInfo {
                spec: spec.to_string(),
                format: "gguf".into(),
                name: file.meta_str("general.name").ok().map(str::to_string),
                file_dtypes: file.dtype_counts(),
                path,
            },
        })
    }

    pub fn device(&self) -> &Device {
        self.transformer.device()
    }

    pub fn cfg(&self) -> &Config {
        &self.transformer.cfg
    }
}

/// Refuse, before reading any weight, a model whose weights alone exceed the memory
/// available: `PRAGMA_MEMORY_LIMIT` (bytes, for a cap below the machine's) or Linux's
/// `MemAvailable`. Unknown availability lets the load go ahead.
fn check_fits(path: &Path, need: u64, mode: WeightMode) -> Result<()> {
    let (available, why) = match std::env::var("PRAGMA_MEMORY_LIMIT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(limit) => (limit, "is the limit set by PRAGMA_MEMORY_LIMIT"),
        None => match mem_available() {
            Some(a) => (a, "are available (MemAvailable)"),
            None => return Ok(()),
        },
    };
    if need > available {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            need_mb: need as f64 / 1e6,
            available_mb: available as f64 / 1e6,
            mode: match mode {
                WeightMode::Native => "in the file's dtypes",
                WeightMode::F32 => "dequantized to f32",
            },
            why,
            hint: match mode {
                WeightMode::Native => "",
                WeightMode::F32 => ", or drop --weights f32 to keep the file's dtypes",
            },
        });
    }
    Ok(())
}

/// Linux's `MemAvailable` in bytes.
fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Turn a user's model argument into a local path.
pub fn resolve(spec: &str, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let p = Path::new(spec);
    if p.exists() {
        if p.is_dir() && !p.join("config.json").exists() {
            return Err(Error::InvalidInput(format!(
                "{spec} is a folder without config.json: expected a Hugging Face checkpoint folder \
                 (config.json + *.safetensors + tokenizer.json)"
            )));
        }
        return Ok(p.to_path_buf());
    }
    if let Some(known) = fetch::find_known(spec) {
        return fetch::ensure_known(known, progress);
    }
    if let Some(repo) = spec.strip_prefix("hf:") {
        return fetch_hub(repo, progress);
    }
    Err(Error::InvalidInput(format!(
        "model '{spec}' not found: expected a .gguf file, a folder with config.json, or one of: {}",
        fetch::known_names()
    )))
}

/// Download `config.json`, tokenizer files and safetensors weights of a hub repo
/// into the hub cache, returning the snapshot folder.
#[cfg(feature = "hub")]
fn fetch_hub(repo: &str, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let err = |e: hf_hub::api::sync::ApiError| Error::Fetch(format!("hf:{repo}: {e}"));
    let api = hf_hub::api::sync::Api::new().map_err(err)?;
    let r = api.model(repo.to_string());
    progress(&format!("fetching hf:{repo} from the Hugging Face hub..."));
    let config = r.get("config.json").map_err(err)?;
    r.get("tokenizer.json").map_err(err)?;
    let _ = r.get("tokenizer_config.json");
    if r.get("model.safetensors").is_err() {
        let index = r.get("model.safetensors.index.json").map_err(err)?;
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Fetch(format!("{}: {e}", index.display())))?;
        let mut files: Vec<String> = v["weight_map"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|f| f.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.dedup();
        for f in files {
            r.get(&f).map_err(err)?;
        }
    }
    config
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::Fetch(format!("hf:{repo}: no snapshot folder")))
}

#[cfg(not(feature = "hub"))]
fn fetch_hub(repo: &str, _progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    Err(Error::Fetch(format!(
        "'hf:{repo}' needs the Hugging Face hub: build pragma with `--features hub` (and a network), \
         or download the folder yourself (`huggingface-cli download {repo} --local-dir DIR`) and pass DIR"
    )))
}
