//! GGUF checkpoints (llama.cpp's format), read with candle's GGUF reader.
//!
//! Matmul weights stay in their file dtype ([`QuantWeight`]) unless the f32 mode asks
//! for them dequantized at load. llama.cpp's converter permutes the rows
//! of Q and K for the `llama` architecture (so that its interleaved RoPE matches HF's
//! rotate-half); we undo that here so the model sees HF layout from every format.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};

use crate::config::{Arch, Config, Llama3RopeScaling};
use crate::error::{Error, Result};
use crate::llama::{Part, WeightSource};
use crate::quant::QuantWeight;

/// Check every tensor of a GGUF `content` against the file's `size` (bytes): dimensions
/// whose product overflows, element counts that are not whole blocks, and tensor data
/// that runs past the end of the file are [`Error::CorruptGguf`] naming `path` and the
/// tensor. Call before reading any tensor: candle's reader multiplies these sizes
/// unchecked (a crash the fuzz targets found).
pub fn check_extents(content: &Content, size: u64, path: &Path) -> Result<()> {
    let corrupt = |reason: String| Error::CorruptGguf {
        path: path.to_path_buf(),
        reason,
    };
    let mut need = content.tensor_data_offset;
    for (name, info) in &content.tensor_infos {
        let dims = info.shape.dims();
        let n = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| {
                corrupt(format!(
                    "tensor '{name}' has dimensions {dims:?}, whose product overflows"
                ))
            })?;
        if n == 0 {
            // candle reads an empty tensor through a dangling pointer (a crash the
            // `gguf_model` fuzz target found); no real checkpoint has one.
            return Err(corrupt(format!(
                "tensor '{name}' has dimensions {dims:?}: no elements"
            )));
        }
        let bs = info.ggml_dtype.block_size();
        if n % bs != 0 {
            return Err(corrupt(format!(
                "tensor '{name}' has {n} elements, not a multiple of its block size {bs}"
            )));
        }
        let end = (n / bs)
            .checked_mul(info.ggml_dtype.type_size())
            .and_then(|b| u64::try_from(b).ok())
            .and_then(|b| {
                content
                    .tensor_data_offset
                    .checked_add(info.offset)?
                    .checked_add(b)
            })
            .ok_or_else(|| {
                corrupt(format!(
                    "tensor '{name}': its offset and size run past any file"
                ))
            })?;
        need = need.max(end);
    }
    if size < need {
        return Err(corrupt(format!(
            "truncated: tensor data needs {need} bytes, the file has {size}"
        )));
    }
    Ok(())
}

/// candle's GGUF header reader, with a panic inside it (an overflow on a hostile length
/// field) turned into an error like its others.
pub fn read_content<R: Read + Seek>(reader: &mut R) -> std::result::Result<Content, String> {
    match crate::guard::catch(|| Content::read(reader)) {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(p) => Err(format!("unreadable header ({p})")),
    }
}

pub const SUPPORTED_DTYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K";

/// An open GGUF file: its metadata, tensor index and a reader.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    reader: BufReader<File>,
    /// The whole file mapped read-only: block-quantized matrices are used in place.
    /// `None` where mapping failed (then tensors are read into memory).
    map: Option<std::sync::Arc<memmap2::Mmap>>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut reader = BufReader::new(file);
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut reader, &mut magic).map_err(|e| Error::io(path, e))?;
        if n < 4 || &magic != b"GGUF" {
            return Err(Error::NotGguf {
                path: path.to_path_buf(),
                found: String::from_utf8_lossy(&magic[..n]).into_owned(),
            });
        }
        reader.rewind().map_err(|e| Error::io(path, e))?;
        let content = crate::guard::catch(|| Content::read(&mut reader))
            .map_err(|p| Error::CorruptGguf {
                path: path.to_path_buf(),
                reason: format!("unreadable header ({p})"),
            })?
            .map_err(|e| classify(path, e))?;
        // SAFETY: the map is read-only and private to this process; as with llama.cpp's
        // mmap, a file truncated or rewritten by another process while pragma runs would
        // fault. Mapping is an optimisation: on failure the tensors are read instead.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(reader.get_ref()) }
            .ok()
            .map(std::sync::Arc::new);
        let mut f = Self {
            path: path.to_path_buf(),
            content,
            reader,
            map,
        };
        f.check_extent()?;
        Ok(f)
    }

    /// Reject a truncated file up front rather than at the last tensor.
    fn check_extent(&mut self) -> Result<()> {
        let size = self
            .reader
            .seek(std::io::SeekFrom::End(0))
            .map_err(|e| Error::io(&self.path, e))?;
        check_extents(&self.content, size, &self.path)
    }

    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn missing(&self, key: &str) -> Error {
        Error::MissingMetadata {
            source_name: self.path.display().to_string(),
            key: key.to_string(),
        }
    }

    pub fn meta_str(&self, key: &str) -> Result<&str> {
        match self.meta(key) {
            Some(Value::String(s)) => Ok(s),
            _ => Err(self.missing(key)),
        }
    }

    pub fn meta_usize(&self, key: &str) -> Result<usize> {
        self.meta(key)
            .and_then(value_as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| self.missing(key))
    }

    pub fn meta_f64(&self, key: &str) -> Result<f64> {
        match self.meta(key) {
            Some(Value::F32(v)) => Ok(*v as f64),
            Some(Value::F64(v)) => Ok(*v),
            Some(v) => value_as_u64(v)
                .map(|v| v as f64)
                .ok_or_else(|| self.missing(key)),
            None => Err(self.missing(key)),
        }
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Dtype of each tensor, for `pragma info`.
    pub fn dtype_counts(&self) -> Vec<(String, usize)> {
        let mut m: HashMap<String, usize> = HashMap::new();
        for info in self.content.tensor_infos.values() {
            *m.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort();
        v
    }

    /// Dequantize one tensor to f32, in HF orientation `[rows, cols]`.
    pub fn tensor_f32(&mut self, name: &str) -> Result<Tensor> {
        if !self.has_tensor(name) {
            return Err(Error::MissingTensor {
                source_name: self.path.display().to_string(),
                name: name.to_string(),
            });
        }
        let q = self
            .content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| classify(&self.path, e))?;
        Ok(q.dequantize(&Device::Cpu)?)
    }

    /// A 2-D tensor in its file dtype, unless that is F32 (`None`: read it with
    /// [`Self::tensor_f32`]).
    pub fn tensor_quant(&mut self, name: &str) -> Result<Option<QuantWeight>> {
        let Some(info) = self.content.tensor_infos.get(name) else {
            return Ok(None);
        };
        let dtype = info.ggml_dtype;
        if dtype == GgmlDType::F32 {
            return Ok(None);
        }
        let dims = info.shape.dims().to_vec();
        if dims.len() != 2 {
            return Ok(None);
        }
        let len = dims[0] * dims[1] / dtype.block_size() * dtype.type_size();
        let start = self.content.tensor_data_offset + info.offset;
        if let Some(map) = &self.map {
            return QuantWeight::mapped(dtype, dims[0], dims[1], map.clone(), start as usize, len)
                .map(Some)
                .map_err(|e| Error::CorruptGguf {
                    path: self.path.clone(),
                    reason: format!("tensor '{name}': {e}"),
                });
        }
        // The bytes straight from the file into aligned storage: one copy, none made by a
        // reader in between (a 1B model's embedding is 150 MB).
        let mut data = QuantWeight::alloc(len);
        self.reader
            .seek(std::io::SeekFrom::Start(start))
            .and_then(|_| {
                self.reader
                    .read_exact(&mut QuantWeight::bytes_mut(&mut data)[..len])
            })
            .map_err(|e| Error::io(&self.path, e))?;
        QuantWeight::from_aligned(dtype, dims[0], dims[1], data, len)
            .map(Some)
            .map_err(|e| Error::CorruptGguf {
                path: self.path.clone(),
                reason: format!("tensor '{name}': {e}"),
            })
    }

    /// Bytes the weights take in memory: as stored (native mode; F32 tensors stay f32),
    /// or 4 per element (f32 mode).
    pub fn weight_bytes(&self, f32_mode: bool) -> u64 {
        self.content
            .tensor_infos
            .values()
            .map(|i| {
                let n = i.shape.elem_count() as u64;
                if f32_mode {
                    4 * n
                } else {
                    n / i.ggml_dtype.block_size() as u64 * i.ggml_dtype.type_size() as u64
                }
            })
            .sum()
    }

    /// The architecture config from `{arch}.*` metadata.
    pub fn config(&self) -> Result<Config> {
        let arch_name = self.meta_str("general.architecture")?.to_string();
        let arch = Arch::parse(&arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let d_model = self.meta_usize(&key("embedding_length"))?;
        let n_heads = self.meta_usize(&key("attention.head_count"))?;
        let n_kv_heads = self
            .meta_usize(&key("attention.head_count_kv"))
            .unwrap_or(n_heads);
        let d_head = self
            .meta_usize(&key("attention.key_length"))
            .unwrap_or(d_model / n_heads.max(1));
        let vocab_size = match self.meta_usize(&key("vocab_size")) {
            Ok(v) => v,
            Err(_) => match self.meta("tokenizer.ggml.tokens") {
                Some(Value::Array(a)) => a.len(),
                _ => return Err(self.missing(&key("vocab_size"))),
            },
        };
        let rope_scaling = match self.meta_str(&key("rope.scaling.type")) {
            Ok("llama3") => Some(Llama3RopeScaling {
                factor: self.meta_f64(&key("rope.scaling.factor"))?,
                low_freq_factor: self
                    .meta_f64(&key("rope.scaling.low_freq_factor"))
                    .unwrap_or(1.0),
                high_freq_factor: self
                    .meta_f64(&key("rope.scaling.high_freq_factor"))
                    .unwrap_or(4.0),
                original_max_position_embeddings: self
                    .meta_usize(&key("rope.scaling.original_context_length"))
                    .unwrap_or(8192),
            }),
            _ => None,
        };
        let cfg = Config {
            arch,
            n_layers: self.meta_usize(&key("block_count"))?,
            d_model,
            d_mlp: self.meta_usize(&key("feed_forward_length"))?,
            n_heads,
            n_kv_heads,
            d_head,
            vocab_size,
            context_length: self.meta_usize(&key("context_length"))?,
            rms_norm_eps: self.meta_f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: self.meta_f64(&key("rope.freq_base")).unwrap_or(10_000.0),
            rope_scaling,
            rope_freq_factors: None,
            qkv_bias: self.has_tensor("blk.0.attn_q.bias"),
            qk_norm: self.has_tensor("blk.0.attn_q_norm.weight"),
            tie_embeddings: !self.has_tensor("output.weight"),
            gemma: None,
        };
        let cfg = match arch {
            Arch::Gemma3 => Config {
                gemma: Some(self.gemma_config(&arch_name, &cfg)?),
                ..cfg
            },
            _ => cfg,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

impl GgufFile {
    /// Gemma 3's extras, as llama.cpp reads them (`llama-model.cpp`, `LLM_ARCH_GEMMA3`):
    /// the sliding window from metadata (required), every 6th layer global unless
    /// `attention.sliding_window_pattern` says otherwise, local RoPE base 10 000 unless
    /// `rope.freq_base_swa` is given, queries scaled by 1/sqrt(d_head) (the 62-layer 27B
    /// by 1/sqrt(d_model / n_heads), its `query_pre_attn_scalar`).
    fn gemma_config(&self, arch: &str, cfg: &Config) -> Result<crate::config::Gemma> {
        let key = |k: &str| format!("{arch}.{k}");
        let query_dim = if cfg.n_layers == 62 {
            cfg.d_model / cfg.n_heads
        } else {
            cfg.d_head
        };
        let rope_scale_global = match self.meta_str(&key("rope.scaling.type")) {
            Ok("linear") => self.meta_f64(&key("rope.scaling.factor"))?,
            _ => 1.0,
        };
        Ok(crate::config::Gemma {
            embed_scale: (cfg.d_model as f64).sqrt(),
            query_scale: 1.0 / (query_dim as f64).sqrt(),
            sliding_window: self.meta_usize(&key("attention.sliding_window"))?,
            sliding_pattern: self
                .meta_usize(&key("attention.sliding_window_pattern"))
                .unwrap_or(6),
            rope_theta_local: self
                .meta_f64(&key("rope.freq_base_swa"))
                .unwrap_or(10_000.0),
            rope_scale_global,
            attn_softcap: self.meta_f64(&key("attn_logit_softcapping")).ok(),
            final_softcap: self.meta_f64(&key("final_logit_softcapping")).ok(),
        })
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn value_as_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(x) => Some(x as u64),
        Value::U16(x) => Some(x as u64),
        Value::U32(x) => Some(x as u64),
        Value::U64(x) => Some(x),
        Value::I8(x) if x >= 0 => Some(x as u64),
        Value::I16(x) if x >= 0 => Some(x as u64),
        Value::I32(x) if x >= 0 => Some(x as u64),
        Value::I64(x) if x >= 0 => Some(x as u64),
        _ => None,
    }
}

/// Turn candle's reader errors into ours: unknown dtypes and short reads.
fn classify(path: &Path, e: candle_core::Error) -> Error {
    let msg = e.to_string();
    const UNKNOWN: &str = "unknown dtype for tensor ";
    if let Some(i) = msg.find(UNKNOWN) {
        let id: String = msg[i + UNKNOWN.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return Error::UnsupportedDtype {
            path: path.to_path_buf(),
            found: format!("ggml type id {id}"),
            supported: SUPPORTED_DTYPES,
        };
    }
    Error::CorruptGguf {
        path: path.to_path_buf(),
        reason: msg.lines().next().unwrap_or("").to_string(),
    }
}

/// Row `r` of the HF layout is row `unpermute_rows(..)[r]` of llama.cpp's layout. An
/// error unless the rows split into `n_head` heads of an even size (a file whose tensor
/// disagrees with its head count; the `gguf_model` fuzz target found the division by
/// zero this was).
fn unpermute_rows(rows: usize, n_head: usize) -> Result<Vec<usize>> {
    if n_head == 0
        || !rows.is_multiple_of(n_head)
        || (rows / n_head) < 2
        || !(rows / n_head).is_multiple_of(2)
    {
        return Err(Error::Config(format!(
            "a Q/K weight has {rows} rows, which do not split into {n_head} heads of an even size"
        )));
    }
    let dh = rows / n_head;
    let half = dh / 2;
    Ok((0..rows)
        .map(|r| {
            let (h, s, i) = (r / dh, (r % dh) / half, r % half);
            h * dh + 2 * i + s
        })
        .collect())
}

/// Undo llama.cpp's Q/K row permutation: `[n_head, dh/2, 2, d] -> [n_head, 2, dh/2, d]`.
fn unpermute(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    let rows = dims[0];
    let dh = rows / n_head;
    let rest: Vec<usize> = dims[1..].to_vec();
    let mut shape = vec![n_head, dh / 2, 2];
    shape.extend(&rest);
    let t = w.reshape(shape)?.transpose(1, 2)?.contiguous()?;
    Ok(t.reshape(dims)?)
}

/// Reads llama-family weights from a GGUF file.
pub struct GgufWeights<'a> {
    pub file: &'a mut GgufFile,
    pub cfg: Config,
}

impl WeightSource for GgufWeights<'_> {
    fn source_name(&self) -> String {
        self.file.path.display().to_string()
    }
    fn embedding(&mut self) -> Result<Tensor> {
        self.file.tensor_f32("token_embd.weight")
    }
    fn lm_head(&mut self) -> Result<Option<Tensor>> {
        if self.file.has_tensor("output.weight") {
            Ok(Some(self.file.tensor_f32("output.weight")?))
        } else {
            Ok(None)
        }
    }
    fn final_norm(&mut self) -> Result<Tensor> {
        self.file.tensor_f32("output_norm.weight")
    }
    fn block(&mut self, layer: usize, part: Part) -> Result<Tensor> {
        let name = match part {
            Part::AttnNorm => "attn_norm.weight",
            Part::Q => "attn_q.weight",
            Part::K => "attn_k.weight",
            Part::V => "attn_v.weight",
            Part::QBias => "attn_q.bias",
            Part::KBias => "attn_k.bias",
            Part::VBias => "attn_v.bias",
            Part::QNorm => "attn_q_norm.weight",
            Part::KNorm => "attn_k_norm.weight",
            Part::O => "attn_output.weight",
            Part::MlpNorm => "ffn_norm.weight",
            Part::Gate => "ffn_gate.weight",
            Part::Up => "ffn_up.weight",
            Part::Down => "ffn_down.weight",
            Part::PostAttnNorm => "post_attention_norm.weight",
            Part::PostMlpNorm => "post_ffw_norm.weight",
        };
        let t = self.file.tensor_f32(&format!("blk.{layer}.{name}"))?;
        Ok(match self.permuted_heads(part) {
            Some(n_head) => unpermute(&t, n_head)?,
            None => t,
        })
    }
    fn block_quant(&mut self, layer: usize, part: Part) -> Result<Option<QuantWeight>> {
        let name = match part {
            Part::Q => "attn_q.weight",
            Part::K => "attn_k.weight",
            Part::V => "attn_v.weight",
            Part::O => "attn_output.weight",
            Part::Gate => "ffn_gate.weight",
            Part::Up => "ffn_up.weight",
            Part::Down => "ffn_down.weight",
            _ => return Ok(None),
        };
        let q = self.file.tensor_quant(&format!("blk.{layer}.{name}"))?;
        Ok(match (q, self.permuted_heads(part)) {
            (Some(q), Some(n_head)) => {
                let p = q.permute_rows(&unpermute_rows(q.rows, n_head)?);
                q.release_pages();
                Some(p)
            }
            (q, _) => q,
        })
    }
    fn embedding_quant(&mut self) -> Result<Option<QuantWeight>> {
        self.file.tensor_quant("token_embd.weight")
    }
    fn lm_head_is_tied(&mut self) -> Result<bool> {
        Ok(!self.file.has_tensor("output.weight"))
    }
    fn lm_head_quant(&mut self) -> Result<Option<QuantWeight>> {
        let name = if self.file.has_tensor("output.weight") {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        self.file.tensor_quant(name)
    }
}

impl GgufWeights<'_> {
    /// Only llama.cpp's `llama` converter permutes Q/K rows (Mistral GGUFs use it too):
    /// the head count to undo it with, for the parts it touched.
    fn permuted_heads(&self, part: Part) -> Option<usize> {
        if !matches!(self.cfg.arch, Arch::Llama | Arch::Mistral) {
            return None;
        }
        match part {
            Part::Q | Part::QBias => Some(self.cfg.n_heads),
            Part::K | Part::KBias => Some(self.cfg.n_kv_heads),
            _ => None,
        }
    }
}
