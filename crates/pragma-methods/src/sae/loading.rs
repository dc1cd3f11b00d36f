//! SAE folders on disk: SAELens (v6 `cfg.json` with `metadata`, and the flat pre-6.0
//! layout most Hugging Face releases use) and EleutherAI sparsify (`cfg.json` +
//! `sae.safetensors`). pragma writes SAELens v6.
//!
//! SAELens: `cfg.json`, `sae_weights.safetensors` (`W_enc [d_in, d_sae]`, `b_enc`,
//! `W_dec [d_sae, d_in]`, `b_dec`, `threshold` for jumprelu), optional
//! `sparsity.safetensors` (`sparsity [d_sae]` = log10 firing frequency). Pre-6.0 keys are
//! mapped as SAELens' `handle_pre_6_0_config` does: `hook_point` -> `hook_name`,
//! `activation_fn_str` -> the activation (`topk` with `activation_fn_kwargs.k`), boolean
//! `normalize_activations`, missing `apply_b_dec_to_input` = true.
//!
//! sparsify: `encoder.weight [d_sae, d_in]`, `encoder.bias`, `W_dec [d_sae, d_in]`, `b_dec`;
//! it subtracts `b_dec` before encoding and keeps the top k of `relu`. Its folder name gives
//! the hook (`layers.N` -> `blocks.N.hook_resid_post`, `embed_tokens` -> `hook_embed`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use super::{Arch, Normalize, Sae, SaeConfig};
use crate::error::{Error, Result};

pub const SAELENS_CFG: &str = "cfg.json";
pub const SAELENS_WEIGHTS: &str = "sae_weights.safetensors";
pub const SAELENS_SPARSITY: &str = "sparsity.safetensors";
pub const SPARSIFY_WEIGHTS: &str = "sae.safetensors";

impl Sae {
    /// Load an SAE folder: SAELens (either cfg layout) or sparsify, told apart by their
    /// weights file.
    pub fn load(dir: &Path) -> Result<Sae> {
        let bad = |m: String| Error::Input(format!("{}: {m}", dir.display()));
        if !dir.is_dir() {
            return Err(bad(
                "not a folder; expected an SAE folder (SAELens cfg.json + sae_weights.safetensors, \
                 or sparsify cfg.json + sae.safetensors)"
                    .into(),
            ));
        }
        let cfg_path = dir.join(SAELENS_CFG);
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| bad(format!("cannot read {SAELENS_CFG}: {e}")))?;
        let cfg: Value = serde_json::from_str(&text)
            .map_err(|e| bad(format!("{SAELENS_CFG} is not valid JSON: {e}")))?;
        let sae = if dir.join(SAELENS_WEIGHTS).exists() {
            let cfg = saelens_config(&cfg).map_err(|e| bad(e.to_string()))?;
            let w = read_weights(&dir.join(SAELENS_WEIGHTS))?;
            from_saelens(cfg, w).map_err(|e| bad(e.to_string()))?
        } else if dir.join(SPARSIFY_WEIGHTS).exists() {
            let w = read_weights(&dir.join(SPARSIFY_WEIGHTS))?;
            from_sparsify(dir, &cfg, w).map_err(|e| bad(e.to_string()))?
        } else {
            return Err(bad(format!(
                "no {SAELENS_WEIGHTS} (SAELens) or {SPARSIFY_WEIGHTS} (sparsify) next to {SAELENS_CFG}"
            )));
        };
        sae.validate().map_err(|e| bad(e.to_string()))?;
        Ok(sae)
    }

    /// Write a SAELens v6 folder (`cfg.json`, `sae_weights.safetensors`, and
    /// `sparsity.safetensors` when `log10_density` is given). BatchTopK is written as
    /// jumprelu with its global threshold, as SAELens does. Files are written atomically.
    pub fn save(&self, dir: &Path, log10_density: Option<&Tensor>) -> Result<()> {
        self.validate()?;
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Input(format!("{}: {e}", dir.display())))?;
        let mut tensors = vec![
            ("W_enc".to_string(), self.w_enc.clone()),
            ("b_enc".to_string(), self.b_enc.clone()),
            ("W_dec".to_string(), self.w_dec.clone()),
            ("b_dec".to_string(), self.b_dec.clone()),
        ];
        if let Some(t) = &self.threshold {
            tensors.push(("threshold".to_string(), t.clone()));
        }
        for (name, t) in &tensors {
            pragma_model::io::ensure_finite(t, &format!("{}: SAE {name}", dir.display()))?;
        }
        let tensors: Vec<(String, Tensor)> = tensors
            .into_iter()
            .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?.contiguous()?)))
            .collect::<Result<_>>()?;
        pragma_model::io::save_safetensors(&dir.join(SAELENS_WEIGHTS), &tensors, HashMap::new())?;
        if let Some(s) = log10_density {
            pragma_model::io::save_safetensors(
                &dir.join(SAELENS_SPARSITY),
                &[("sparsity".to_string(), s.to_dtype(DType::F32)?)],
                HashMap::new(),
            )?;
        }
        pragma_model::io::write_json(&dir.join(SAELENS_CFG), &saelens_v6_json(&self.cfg))?;
        Ok(())
    }
}

/// The v6 `cfg.json` SAELens writes for an inference SAE.
fn saelens_v6_json(cfg: &SaeConfig) -> Value {
    let mut metadata = match &cfg.metadata {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    };
    metadata["hook_name"] = json!(cfg.hook_name);
    if let Some(m) = &cfg.model_name {
        metadata["model_name"] = json!(m);
    }
    // SAELens picks the v6 layout from this key (without it, it reads hook_name as None).
    metadata["sae_lens_version"] = json!("6.0.0");
    metadata["pragma_version"] = json!(env!("CARGO_PKG_VERSION"));
    metadata["pragma_architecture"] = json!(cfg.arch.name());
    let mut v = json!({
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": match cfg.normalize {
            Normalize::None => "none",
            Normalize::ConstantNormRescale => "constant_norm_rescale",
            Normalize::LayerNorm => "layer_norm",
        },
        "reshape_activations": if cfg.reshape_hook_z { "hook_z" } else { "none" },
        "metadata": metadata,
    });
    match cfg.arch {
        Arch::Relu => v["architecture"] = json!("standard"),
        Arch::JumpRelu | Arch::BatchTopK { .. } => v["architecture"] = json!("jumprelu"),
        Arch::TopK { k } => {
            v["architecture"] = json!("topk");
            v["k"] = json!(k);
            v["rescale_acts_by_decoder_norm"] = json!(cfg.rescale_acts_by_decoder_norm);
        }
    }
    v
}

/// A SAELens `cfg.json` (v6 or pre-6.0) as pragma's config (weights not yet read).
fn saelens_config(v: &Value) -> Result<SaeConfig> {
    let meta = v.get("metadata").cloned().unwrap_or(Value::Null);
    let field = |k: &str| v.get(k).or_else(|| meta.get(k)).filter(|x| !x.is_null());
    let usize_of = |k: &str| -> Result<usize> {
        field(k)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| Error::Input(format!("cfg.json: missing or non-integer '{k}'")))
    };
    let hook_name = field("hook_name")
        .or_else(|| field("hook_point"))
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Input("cfg.json: no hook_name (or pre-6.0 hook_point)".into()))?
        .to_string();
    if field("hook_head_index")
        .or_else(|| field("hook_point_head_index"))
        .is_some()
    {
        return Err(Error::Input(
            "cfg.json: per-head SAEs (hook_head_index) are not supported".into(),
        ));
    }
    let arch_name = field("architecture")
        .and_then(Value::as_str)
        .unwrap_or("standard");
    let act = field("activation_fn")
        .or_else(|| field("activation_fn_str"))
        .and_then(Value::as_str);
    let k = field("k")
        .or_else(|| field("activation_fn_kwargs").and_then(|a| a.get("k")))
        .and_then(|v| {
            v.as_u64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f > 0.0)
                    .map(|f| f as u64)
            })
        })
        .map(|x| x as usize);
    let arch = match (arch_name, act) {
        ("standard", Some("topk")) | ("topk", _) => Arch::TopK {
            k: k.ok_or_else(|| Error::Input("cfg.json: a topk SAE without k".into()))?,
        },
        ("standard", None | Some("relu")) => Arch::Relu,
        ("jumprelu", _) => Arch::JumpRelu,
        (other, _) => {
            return Err(Error::Input(format!(
                "cfg.json: architecture '{other}' (activation {act:?}) is not supported; \
                 expected standard, topk or jumprelu"
            )))
        }
    };
    let normalize = match field("normalize_activations") {
        None | Some(Value::Bool(false)) => Normalize::None,
        Some(Value::String(s)) if s == "none" => Normalize::None,
        Some(Value::String(s)) if s == "constant_norm_rescale" => Normalize::ConstantNormRescale,
        Some(Value::String(s)) if s == "layer_norm" => Normalize::LayerNorm,
        Some(other) => {
            return Err(Error::Input(format!(
                "cfg.json: normalize_activations {other}: this SAE needs a dataset-wide scale that \
                 is not in the folder (fold it into the weights first); supported: none, \
                 constant_norm_rescale, layer_norm"
            )))
        }
    };
    Ok(SaeConfig {
        arch,
        d_in: usize_of("d_in")?,
        d_sae: usize_of("d_sae")?,
        hook_name,
        apply_b_dec_to_input: field("apply_b_dec_to_input")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        normalize,
        rescale_acts_by_decoder_norm: field("rescale_acts_by_decoder_norm")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        reshape_hook_z: field("reshape_activations").and_then(Value::as_str) == Some("hook_z"),
        model_name: field("model_name")
            .and_then(Value::as_str)
            .map(str::to_string),
        metadata: if meta.is_null() { v.clone() } else { meta },
    })
}

fn take(w: &mut HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
    w.remove(name)
        .ok_or_else(|| Error::Input(format!("the weights file has no tensor '{name}'")))
}

fn from_saelens(cfg: SaeConfig, mut w: HashMap<String, Tensor>) -> Result<Sae> {
    let threshold = match w.remove("threshold") {
        Some(t) => Some(t),
        None => w.remove("log_threshold").map(|t| t.exp()).transpose()?,
    };
    // A legacy all-ones `scaling_factor` is dropped, as SAELens does; any other is refused.
    if let Some(s) = w.remove("scaling_factor") {
        let v: Vec<f32> = s.flatten_all()?.to_vec1()?;
        if v.iter().any(|x| *x != 1.0) {
            return Err(Error::Input(
                "the weights hold a non-trivial scaling_factor (fine-tuning scale); fold it first"
                    .into(),
            ));
        }
    }
    Ok(Sae {
        w_enc: take(&mut w, "W_enc")?,
        b_enc: take(&mut w, "b_enc")?,
        w_dec: take(&mut w, "W_dec")?,
        b_dec: take(&mut w, "b_dec")?,
        threshold: if cfg.arch == Arch::JumpRelu {
            threshold
        } else {
            None
        },
        cfg,
    })
}

fn from_sparsify(dir: &Path, cfg: &Value, mut w: HashMap<String, Tensor>) -> Result<Sae> {
    if cfg.get("transcode").and_then(Value::as_bool) == Some(true) || w.contains_key("W_skip") {
        return Err(Error::Input(
            "sparsify transcoders / skip connections are not supported".into(),
        ));
    }
    let activation = cfg
        .get("activation")
        .and_then(Value::as_str)
        .unwrap_or("topk");
    if activation != "topk" {
        return Err(Error::Input(format!(
            "sparsify activation '{activation}': expected topk"
        )));
    }
    let k = cfg
        .get("k")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::Input("cfg.json: no k".into()))? as usize;
    let enc = take(&mut w, "encoder.weight")?; // [d_sae, d_in]
    let (n, d) = enc.dims2()?;
    let hook_name = sparsify_hook_name(dir);
    let run: Value = dir
        .parent()
        .map(|p| p.join("config.json"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    Ok(Sae {
        cfg: SaeConfig {
            arch: Arch::TopK { k },
            d_in: d,
            d_sae: n,
            hook_name,
            apply_b_dec_to_input: true,
            normalize: Normalize::None,
            rescale_acts_by_decoder_norm: false,
            reshape_hook_z: false,
            model_name: run.get("model").and_then(Value::as_str).map(str::to_string),
            metadata: json!({"sparsify_cfg": cfg, "sparsify_run": run}),
        },
        w_enc: enc.t()?.contiguous()?,
        b_enc: take(&mut w, "encoder.bias")?,
        w_dec: take(&mut w, "W_dec")?,
        b_dec: take(&mut w, "b_dec")?,
        threshold: None,
    })
}

/// sparsify names folders by module: `layers.N` is block N's output.
fn sparsify_hook_name(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.strip_prefix("layers.") {
        Some(n) if n.parse::<usize>().is_ok() => format!("blocks.{n}.hook_resid_post"),
        _ if name == "embed_tokens" => "hook_embed".into(),
        _ => name,
    }
}

/// Every tensor of a safetensors file as f32 on the CPU.
fn read_weights(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let all = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
        Error::Input(format!(
            "{}: not a readable safetensors file (truncated or corrupt?): {e}",
            path.display()
        ))
    })?;
    all.into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
        .collect()
}
