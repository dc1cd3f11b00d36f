//! Tiny random models for tests, written as real files (GGUF and HF safetensors)
//! so the whole load path is exercised. Used by this crate's tests and by the
//! crates downstream (store, methods) that need a model without weights on disk.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::config::{Arch, Config};
use crate::error::{Error, Result};

/// GPT-2's byte -> printable-char map used by byte-level BPE vocabularies.
pub fn bytes_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut map = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        map[*b as usize] = char::from_u32(c).unwrap_or('?');
    }
    map
}

/// A tiny byte-level BPE vocabulary: 4 specials, 256 bytes, a few merges.
pub struct TinyVocab {
    pub tokens: Vec<String>,
    pub merges: Vec<String>,
    pub types: Vec<i32>,
}

pub fn tiny_vocab() -> TinyVocab {
    let b2u = bytes_to_unicode();
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut types = vec![3; 4];
    for c in &b2u {
        tokens.push(c.to_string());
        types.push(1);
    }
    let sp = b2u[b' ' as usize];
    let pairs = [
        (format!("{sp}"), "t".to_string()),
        ("h".into(), "e".into()),
        (format!("{sp}t"), "he".into()),
        ("i".into(), "n".into()),
        (format!("{sp}"), "a".into()),
        ("e".into(), "r".into()),
        ("o".into(), "n".into()),
        (format!("{sp}"), "s".into()),
        ("a".into(), "t".into()),
        ("e".into(), "n".into()),
        (format!("{sp}"), "w".into()),
        ("o".into(), "r".into()),
    ];
    let mut merges = Vec::new();
    for (a, b) in pairs {
        merges.push(format!("{a} {b}"));
        tokens.push(format!("{a}{b}"));
        types.push(1);
    }
    TinyVocab {
        tokens,
        merges,
        types,
    }
}

/// The config of a tiny model of `arch`.
pub fn tiny_config(arch: Arch) -> Config {
    let vocab = tiny_vocab().tokens.len();
    Config {
        arch,
        n_layers: 3,
        d_model: 32,
        d_mlp: 64,
        n_heads: 4,
        n_kv_heads: 2,
        d_head: 8,
        vocab_size: vocab,
        context_length: 64,
        rms_norm_eps: 1e-5,
        // Gemma 3's global layers use a different base than its local ones.
        rope_theta: if arch == Arch::Gemma3 { 1e6 } else { 10_000.0 },
        rope_scaling: None,
        rope_freq_factors: None,
        qkv_bias: arch == Arch::Qwen2,
        qk_norm: matches!(arch, Arch::Qwen3 | Arch::Gemma3),
        tie_embeddings: matches!(arch, Arch::Llama | Arch::Gemma3),
        gemma: (arch == Arch::Gemma3).then(|| crate::config::Gemma {
            embed_scale: (32f64).sqrt(),
            query_scale: 1.0 / 8f64.sqrt(),
            sliding_window: 4,
            sliding_pattern: 3,
            rope_theta_local: 10_000.0,
            rope_scale_global: 1.0,
            attn_softcap: None,
            final_softcap: None,
        }),
    }
}

/// Random weights in HF naming and layout (`[out, in]`).
pub fn tiny_weights(cfg: &Config, seed: u64) -> Result<Vec<(String, Tensor)>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rand = |shape: &[usize], scale: f32, offset: f32| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| offset + scale * (rng.random::<f32>() * 2.0 - 1.0))
            .collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    };
    let (d, f, v) = (cfg.d_model, cfg.d_mlp, cfg.vocab_size);
    let (qd, kd) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
    let mut w = vec![
        (
            "model.embed_tokens.weight".to_string(),
            rand(&[v, d], 1.0, 0.0)?,
        ),
        ("model.norm.weight".to_string(), rand(&[d], 0.2, 1.0)?),
    ];
    if !cfg.tie_embeddings {
        w.push(("lm_head.weight".into(), rand(&[v, d], 0.3, 0.0)?));
    }
    for i in 0..cfg.n_layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        w.push((p("input_layernorm.weight"), rand(&[d], 0.2, 1.0)?));
        w.push((p("self_attn.q_proj.weight"), rand(&[qd, d], 0.4, 0.0)?));
        w.push((p("self_attn.k_proj.weight"), rand(&[kd, d], 0.4, 0.0)?));
        w.push((p("self_attn.v_proj.weight"), rand(&[kd, d], 0.3, 0.0)?));
        w.push((p("self_attn.o_proj.weight"), rand(&[d, qd], 0.3, 0.0)?));
        if cfg.qkv_bias {
            w.push((p("self_attn.q_proj.bias"), rand(&[qd], 0.2, 0.0)?));
            w.push((p("self_attn.k_proj.bias"), rand(&[kd], 0.2, 0.0)?));
            w.push((p("self_attn.v_proj.bias"), rand(&[kd], 0.2, 0.0)?));
        }
        if cfg.qk_norm {
            w.push((p("self_attn.q_norm.weight"), rand(&[cfg.d_head], 0.2, 1.0)?));
            w.push((p("self_attn.k_norm.weight"), rand(&[cfg.d_head], 0.2, 1.0)?));
        }
        w.push((p("post_attention_layernorm.weight"), rand(&[d], 0.2, 1.0)?));
        w.push((p("mlp.gate_proj.weight"), rand(&[f, d], 0.3, 0.0)?));
        w.push((p("mlp.up_proj.weight"), rand(&[f, d], 0.3, 0.0)?));
        w.push((p("mlp.down_proj.weight"), rand(&[d, f], 0.3, 0.0)?));
        if cfg.gemma.is_some() {
            // pragma's own names (Hugging Face's Gemma reuses `post_attention_layernorm`
            // for this norm); written to GGUF as `post_attention_norm` / `post_ffw_norm`.
            w.push((p("post_attn_norm.weight"), rand(&[d], 0.2, 1.0)?));
            w.push((p("post_mlp_norm.weight"), rand(&[d], 0.2, 1.0)?));
        }
    }
    Ok(w)
}

const CHAT_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Write an HF folder: `config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`.
pub fn write_hf(dir: &Path, cfg: &Config, weights: &[(String, Tensor)]) -> Result<()> {
    if cfg.gemma.is_some() {
        return Err(Error::InvalidInput(
            "pragma reads Gemma from GGUF only; write_gguf writes a tiny one".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let model_type = cfg.arch.name();
    let mut config = serde_json::json!({
        "architectures": [match cfg.arch { Arch::Llama => "LlamaForCausalLM", Arch::Mistral => "MistralForCausalLM", Arch::Qwen2 => "Qwen2ForCausalLM", Arch::Qwen3 => "Qwen3ForCausalLM", Arch::Gemma3 => "Gemma3ForCausalLM" }],
        "model_type": model_type,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_mlp,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.d_head,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.context_length,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
    });
    if let Some(s) = &cfg.rope_scaling {
        config["rope_scaling"] = serde_json::json!({
            "rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        });
    }
    let write = |name: &str, text: String| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))
    };
    write(
        "config.json",
        serde_json::to_string_pretty(&config).unwrap_or_default(),
    )?;
    crate::io::save_safetensors(&dir.join("model.safetensors"), weights, HashMap::new())?;

    let voc = tiny_vocab();
    let vocab: serde_json::Map<String, serde_json::Value> = voc
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = voc
        .tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| voc.types[*i] == 3)
        .map(|(i, t)| serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let tok = serde_json::json!({
        "version": "1.0",
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "\\p{N}"}, "behavior": "Isolated", "invert": false},
            {"type": "Split", "pattern": {"Regex": "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": voc.merges},
    });
    write("tokenizer.json", tok.to_string())?;
    write(
        "tokenizer_config.json",
        serde_json::json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": false, "chat_template": CHAT_TEMPLATE}).to_string(),
    )?;
    Ok(())
}

/// llama.cpp's Q/K row permutation (what `convert_hf_to_gguf.py` does for llama).
fn permute(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    let dh = dims[0] / n_head;
    let mut shape = vec![n_head, 2, dh / 2];
    shape.extend(&dims[1..]);
    Ok(w.reshape(shape)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

/// Write a GGUF the way llama.cpp's converter would, with tensors stored as `dtype`.
pub fn write_gguf(
    path: &Path,
    cfg: &Config,
    weights: &[(String, Tensor)],
    dtype: GgmlDType,
) -> Result<()> {
    write_gguf_mixed(path, cfg, weights, &|_| dtype)
}

/// [`write_gguf`] with each matrix's dtype chosen by its HF name (as llama.cpp's
/// `Q4_K_M` mixes Q4_K and Q6_K); vectors stay f32.
pub fn write_gguf_mixed(
    path: &Path,
    cfg: &Config,
    weights: &[(String, Tensor)],
    dtype_of: &dyn Fn(&str) -> GgmlDType,
) -> Result<()> {
    let arch = cfg.arch.name();
    let permuted = matches!(cfg.arch, Arch::Llama | Arch::Mistral);
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (name, t) in weights {
        let gguf_name = gguf_name(name);
        let mut t = t.clone();
        if permuted && name.contains("q_proj") {
            t = permute(&t, cfg.n_heads)?;
        }
        if permuted && name.contains("k_proj") {
            t = permute(&t, cfg.n_kv_heads)?;
        }
        // Norms and biases stay f32, as llama.cpp keeps them.
        let dt = if t.rank() == 1 {
            GgmlDType::F32
        } else {
            dtype_of(name)
        };
        tensors.push((gguf_name, QTensor::quantize(&t, dt)?));
    }
    let mut voc = tiny_vocab();
    // A vocabulary larger than the tiny one (random models of real shapes): plain tokens
    // no merge produces fill it, so ids past the BPE's still decode. (As control tokens,
    // 128k of them would make every tokenizer build a matcher for them all.)
    for i in voc.tokens.len()..cfg.vocab_size {
        voc.tokens.push(format!("<reserved_{i}>"));
        voc.types.push(1);
    }
    let k = |s: &str| format!("{arch}.{s}");
    let strs = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String(format!("tiny-{arch}"))),
        (k("block_count"), Value::U32(cfg.n_layers as u32)),
        (k("context_length"), Value::U32(cfg.context_length as u32)),
        (k("embedding_length"), Value::U32(cfg.d_model as u32)),
        (k("feed_forward_length"), Value::U32(cfg.d_mlp as u32)),
        (k("attention.head_count"), Value::U32(cfg.n_heads as u32)),
        (
            k("attention.head_count_kv"),
            Value::U32(cfg.n_kv_heads as u32),
        ),
        (k("attention.key_length"), Value::U32(cfg.d_head as u32)),
        (k("rope.freq_base"), Value::F32(cfg.rope_theta as f32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        (k("vocab_size"), Value::U32(cfg.vocab_size as u32)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        ("tokenizer.ggml.tokens".into(), strs(&voc.tokens)),
        ("tokenizer.ggml.merges".into(), strs(&voc.merges)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(voc.types.iter().map(|&t| Value::I32(t)).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            Value::String(CHAT_TEMPLATE.into()),
        ),
    ];
    if let Some(g) = &cfg.gemma {
        meta.push((
            k("attention.sliding_window"),
            Value::U32(g.sliding_window as u32),
        ));
        meta.push((
            k("attention.sliding_window_pattern"),
            Value::U32(g.sliding_pattern as u32),
        ));
    }
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut buf = std::io::Cursor::new(Vec::new());
    candle_core::quantized::gguf_file::write(&mut buf, &meta_refs, &tensor_refs)?;
    crate::io::write_atomic(path, &buf.into_inner())
}

fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap_or(hf);
    let (i, part) = rest.split_once('.').unwrap_or(("0", rest));
    let part = part
        .replace("input_layernorm", "attn_norm")
        .replace("self_attn.q_proj", "attn_q")
        .replace("self_attn.k_proj", "attn_k")
        .replace("self_attn.v_proj", "attn_v")
        .replace("self_attn.o_proj", "attn_output")
        .replace("self_attn.q_norm", "attn_q_norm")
        .replace("self_attn.k_norm", "attn_k_norm")
        .replace("post_attention_layernorm", "ffn_norm")
        .replace("mlp.gate_proj", "ffn_gate")
        .replace("mlp.up_proj", "ffn_up")
        .replace("mlp.down_proj", "ffn_down")
        .replace("post_attn_norm", "post_attention_norm")
        .replace("post_mlp_norm", "post_ffw_norm");
    format!("blk.{i}.{part}")
}

/// Largest absolute value of a tensor (f32), for tolerance checks.
/// A tiny random model of `arch` written as an f32 GGUF at `dir/tiny.gguf` and loaded.
pub fn tiny_model(dir: &Path, arch: Arch, seed: u64) -> Result<crate::Model> {
    let cfg = tiny_config(arch);
    let p = dir.join("tiny.gguf");
    write_gguf(&p, &cfg, &tiny_weights(&cfg, seed)?, GgmlDType::F32)?;
    crate::Model::load(&p.to_string_lossy(), &mut |_| {})
}

/// One hook's activations for a single token sequence, `[t, ...]`, from a plain forward.
pub fn capture_one(
    model: &crate::Model,
    ids: &[u32],
    point: crate::hooks::HookPoint,
) -> Result<Tensor> {
    let mut hooks = crate::hooks::Hooks::new();
    hooks.capture(point);
    let batch = crate::llama::Batch::single(ids, model.device())?;
    let (_, cache) = model
        .transformer
        .forward(&batch, &hooks, crate::llama::Logits::None)?;
    cache.get_row(point, 0)
}

pub fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(candle_core::DType::F32)
        .and_then(|t| t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .unwrap_or(f32::NAN)
}

/// Largest absolute difference between two same-shape tensors (NaN if shapes differ).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).map(|d| max_abs(&d)).unwrap_or(f32::NAN)
}

/// Pearson correlation of two equal-length vectors.
pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().map(|&x| x as f64).sum::<f64>() / n;
    let mb = b.iter().map(|&x| x as f64).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt()
}

/// The config of a named random-model shape: `llama-3.2-1b` (16 layers, d_model 2048,
/// d_mlp 8192, 32 heads / 8 kv of 64, vocab 128256, tied: 1.24 B parameters),
/// `llama-3.1-8b-4l` (Llama 3.1 8B's layers, d_model 4096, d_mlp 14336, 32 / 8 heads of
/// 128, untied vocab 128256, 4 of its 32 layers) or `wide-test` (2 layers, d_model 256,
/// d_mlp 512, 4 / 2 heads of 64, the tiny vocabulary, untied: every GGUF dtype fits).
pub fn shape(name: &str) -> Result<Config> {
    let mut cfg = tiny_config(Arch::Llama);
    cfg.n_heads = 32;
    cfg.n_kv_heads = 8;
    cfg.tie_embeddings = false;
    match name {
        "llama-3.2-1b" | "llama-3.1-8b-4l" => {
            cfg.vocab_size = 128_256;
            cfg.context_length = 8192;
            cfg.rope_theta = 500_000.0;
            if name == "llama-3.2-1b" {
                (cfg.n_layers, cfg.d_model, cfg.d_mlp, cfg.d_head) = (16, 2048, 8192, 64);
                cfg.tie_embeddings = true;
            } else {
                (cfg.n_layers, cfg.d_model, cfg.d_mlp, cfg.d_head) = (4, 4096, 14336, 128);
            }
        }
        "wide-test" => {
            (cfg.n_layers, cfg.d_model, cfg.d_mlp, cfg.d_head) = (2, 256, 512, 64);
            (cfg.n_heads, cfg.n_kv_heads) = (4, 2);
        }
        s => {
            return Err(Error::InvalidInput(format!(
                "shape {s}: expected llama-3.2-1b, llama-3.1-8b-4l or wide-test"
            )))
        }
    }
    Ok(cfg)
}

/// Random weights for a model of real shapes: uniform with scale 1/sqrt(fan_in) for
/// matrices (activations keep their scale through the layers), 1 for norms; seeded.
pub fn random_weights(cfg: &Config, seed: u64) -> Result<Vec<(String, Tensor)>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut mat = |rows: usize, cols: usize| -> Result<Tensor> {
        let s = 1.0 / (cols as f32).sqrt();
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| s * (rng.random::<f32>() * 2.0 - 1.0))
            .collect();
        Ok(Tensor::from_vec(v, (rows, cols), &Device::Cpu)?)
    };
    let norm =
        |d: usize| -> Result<Tensor> { Ok(Tensor::from_vec(vec![1f32; d], d, &Device::Cpu)?) };
    let (d, f, v) = (cfg.d_model, cfg.d_mlp, cfg.vocab_size);
    let (qd, kd) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
    let mut w = vec![
        ("model.embed_tokens.weight".to_string(), mat(v, d)?),
        ("model.norm.weight".to_string(), norm(d)?),
    ];
    if !cfg.tie_embeddings {
        w.push(("lm_head.weight".into(), mat(v, d)?));
    }
    for i in 0..cfg.n_layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        w.push((p("input_layernorm.weight"), norm(d)?));
        w.push((p("self_attn.q_proj.weight"), mat(qd, d)?));
        w.push((p("self_attn.k_proj.weight"), mat(kd, d)?));
        w.push((p("self_attn.v_proj.weight"), mat(kd, d)?));
        w.push((p("self_attn.o_proj.weight"), mat(d, qd)?));
        w.push((p("post_attention_layernorm.weight"), norm(d)?));
        w.push((p("mlp.gate_proj.weight"), mat(f, d)?));
        w.push((p("mlp.up_proj.weight"), mat(f, d)?));
        w.push((p("mlp.down_proj.weight"), mat(d, f)?));
    }
    Ok(w)
}
