//! Hugging Face checkpoints: a folder with `config.json`, `*.safetensors` and
//! usually `tokenizer.json` + `tokenizer_config.json`.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Tensor};
use serde::Deserialize;

use crate::config::{Arch, Config, Llama3RopeScaling};
use crate::error::{Error, Result};
use crate::llama::{Part, WeightSource};
use crate::quant::QuantWeight;
use candle_core::quantized::GgmlDType;

#[derive(Deserialize)]
struct HfConfig {
    #[serde(default)]
    architectures: Vec<String>,
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    #[serde(default = "default_ctx")]
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f64,
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    tie_word_embeddings: bool,
    attention_bias: Option<bool>,
}

fn default_ctx() -> usize {
    2048
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}

/// Parse `config.json` into our config.
pub fn read_config(dir: &Path) -> Result<Config> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let hf: HfConfig = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let arch_name = hf
        .model_type
        .clone()
        .or_else(|| hf.architectures.first().cloned())
        .unwrap_or_default();
    let arch = Arch::parse(&arch_name)?;
    let rope_scaling = match &hf.rope_scaling {
        Some(v)
            if v.get("rope_type")
                .or_else(|| v.get("type"))
                .and_then(|t| t.as_str())
                == Some("llama3") =>
        {
            let num = |k: &str, d: f64| v.get(k).and_then(|x| x.as_f64()).unwrap_or(d);
            Some(Llama3RopeScaling {
                factor: num("factor", 8.0),
                low_freq_factor: num("low_freq_factor", 1.0),
                high_freq_factor: num("high_freq_factor", 4.0),
                original_max_position_embeddings: num("original_max_position_embeddings", 8192.0)
                    as usize,
            })
        }
        Some(v) if !v.is_null() => {
            return Err(Error::Config(format!(
                "{}: unsupported rope_scaling {v}: expected null or rope_type \"llama3\"",
                path.display()
            )))
        }
        _ => None,
    };
    let cfg = Config {
        arch,
        n_layers: hf.num_hidden_layers,
        d_model: hf.hidden_size,
        d_mlp: hf.intermediate_size,
        n_heads: hf.num_attention_heads,
        n_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        d_head: hf
            .head_dim
            .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
        vocab_size: hf.vocab_size,
        context_length: hf.max_position_embeddings,
        rms_norm_eps: hf.rms_norm_eps,
        rope_theta: hf.rope_theta,
        rope_scaling,
        rope_freq_factors: None,
        qkv_bias: match arch {
            Arch::Qwen2 => true,
            _ => hf.attention_bias.unwrap_or(false),
        },
        qk_norm: arch == Arch::Qwen3,
        tie_embeddings: hf.tie_word_embeddings,
        gemma: None,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The `*.safetensors` files of a checkpoint folder, sorted.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{}: expected *.safetensors files next to config.json, found none",
            dir.display()
        )));
    }
    Ok(files)
}

/// Memory-mapped safetensors weights with HF names (`model.layers.{i}.self_attn.q_proj.weight`).
pub struct SafetensorsWeights {
    st: MmapedSafetensors,
    dir: PathBuf,
    tie: bool,
}

impl SafetensorsWeights {
    pub fn open(dir: &Path, cfg: &Config) -> Result<Self> {
        let files = safetensors_files(dir)?;
        // SAFETY: the files are mapped read-only; like every mmap reader we rely on
        // nobody truncating them while the model loads (the weights are copied out).
        #[allow(unsafe_code)]
        let st = unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| {
            Error::InvalidInput(format!("{}: not valid safetensors: {e}", dir.display()))
        })?;
        Ok(Self {
            st,
            dir: dir.to_path_buf(),
            tie: cfg.tie_embeddings,
        })
    }

    fn get(&self, name: &str) -> Result<Tensor> {
        let t =
            self.st
                .load(name, &candle_core::Device::Cpu)
                .map_err(|_| Error::MissingTensor {
                    source_name: self.dir.display().to_string(),
                    name: name.to_string(),
                })?;
        Ok(t.to_dtype(DType::F32)?)
    }

    fn has(&self, name: &str) -> bool {
        self.st.get(name).is_ok()
    }

    /// A 2-D F16 or BF16 tensor kept in half precision ([`QuantWeight`] rows; the same
    /// little-endian bytes as GGUF's F16 / BF16); `None` for other dtypes or ranks.
    fn half(&self, name: &str) -> Result<Option<QuantWeight>> {
        let Ok(view) = self.st.get(name) else {
            return Ok(None);
        };
        // (candle's safetensors is another version of the crate than ours: match by name.)
        let dtype = match format!("{:?}", view.dtype()).as_str() {
            "F16" => GgmlDType::F16,
            "BF16" => GgmlDType::BF16,
            _ => return Ok(None),
        };
        let [rows, cols] = view.shape() else {
            return Ok(None);
        };
        QuantWeight::new(dtype, *rows, *cols, view.data().to_vec())
            .map(Some)
            .map_err(|e| Error::InvalidInput(format!("{}: {name}: {e}", self.dir.display())))
    }
}

impl WeightSource for SafetensorsWeights {
    fn source_name(&self) -> String {
        self.dir.display().to_string()
    }
    fn embedding(&mut self) -> Result<Tensor> {
        self.get("model.embed_tokens.weight")
    }
    fn lm_head(&mut self) -> Result<Option<Tensor>> {
        if self.tie && !self.has("lm_head.weight") {
            return Ok(None);
        }
        self.get("lm_head.weight").map(Some)
    }
    fn final_norm(&mut self) -> Result<Tensor> {
        self.get("model.norm.weight")
    }
    fn embedding_quant(&mut self) -> Result<Option<QuantWeight>> {
        self.half("model.embed_tokens.weight")
    }
    fn lm_head_is_tied(&mut self) -> Result<bool> {
        Ok(self.tie && !self.has("lm_head.weight"))
    }
    fn lm_head_quant(&mut self) -> Result<Option<QuantWeight>> {
        if self.tie && !self.has("lm_head.weight") {
            return self.half("model.embed_tokens.weight");
        }
        self.half("lm_head.weight")
    }
    fn block_quant(&mut self, layer: usize, part: Part) -> Result<Option<QuantWeight>> {
        let name = match part {
            Part::Q => "self_attn.q_proj.weight",
            Part::K => "self_attn.k_proj.weight",
            Part::V => "self_attn.v_proj.weight",
            Part::O => "self_attn.o_proj.weight",
            Part::Gate => "mlp.gate_proj.weight",
            Part::Up => "mlp.up_proj.weight",
            Part::Down => "mlp.down_proj.weight",
            _ => return Ok(None),
        };
        self.half(&format!("model.layers.{layer}.{name}"))
    }
    fn block(&mut self, layer: usize, part: Part) -> Result<Tensor> {
        let name = match part {
            Part::AttnNorm => "input_layernorm.weight",
            Part::Q => "self_attn.q_proj.weight",
            Part::K => "self_attn.k_proj.weight",
            Part::V => "self_attn.v_proj.weight",
            Part::QBias => "self_attn.q_proj.bias",
            Part::KBias => "self_attn.k_proj.bias",
            Part::VBias => "self_attn.v_proj.bias",
            Part::QNorm => "self_attn.q_norm.weight",
            Part::KNorm => "self_attn.k_norm.weight",
            Part::O => "self_attn.o_proj.weight",
            Part::MlpNorm => "post_attention_layernorm.weight",
            Part::Gate => "mlp.gate_proj.weight",
            Part::Up => "mlp.up_proj.weight",
            Part::Down => "mlp.down_proj.weight",
            // Gemma's post-norms: pragma reads Gemma from GGUF only (the loader refuses
            // Gemma configs), so these names are never asked for.
            Part::PostAttnNorm | Part::PostMlpNorm => {
                return Err(Error::MissingTensor {
                    source_name: self.source_name(),
                    name: format!("layer {layer} {part:?}"),
                })
            }
        };
        self.get(&format!("model.layers.{layer}.{name}"))
    }
}
