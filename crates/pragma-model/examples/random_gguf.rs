//! Write a random-weight GGUF with a real model's shapes, to measure memory and speed
//! at scale without downloading one (no machine here reaches a model hub).
//!
//! `cargo run --release -p pragma-model --example random_gguf -- SHAPE DTYPE OUT.gguf`
//!
//! SHAPE: `llama-3.2-1b` (16 layers, d_model 2048, d_mlp 8192, 32 heads / 8 kv of 64,
//! vocab 128256, tied embeddings: 1.24 B parameters) or `llama-3.1-8b-4l` (Llama 3.1 8B's
//! layer shapes, d_model 4096, d_mlp 14336, 32 heads / 8 kv of 128, untied vocab 128256,
//! with 4 of its 32 layers). DTYPE: q4_k, q8_0, q4_1 or f16 for the matrices (norms
//! f32). Weights are uniform with scale 1/sqrt(fan_in), seed 0; the tokenizer is the
//! tiny test vocabulary padded with control tokens to 128256.
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use pragma_model::config::{Arch, Config};
use rand::{Rng, SeedableRng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [shape, dtype, out] = args.as_slice() else {
        return Err("usage: random_gguf SHAPE (llama-3.2-1b | llama-3.1-8b-4l) DTYPE (q4_k | q8_0 | q4_1 | f16) OUT.gguf".into());
    };
    let mut cfg = pragma_model::testing::tiny_config(Arch::Llama);
    cfg.vocab_size = 128_256;
    cfg.context_length = 8192;
    cfg.rope_theta = 500_000.0;
    cfg.n_heads = 32;
    cfg.n_kv_heads = 8;
    match shape.as_str() {
        "llama-3.2-1b" => {
            cfg.n_layers = 16;
            cfg.d_model = 2048;
            cfg.d_mlp = 8192;
            cfg.d_head = 64;
            cfg.tie_embeddings = true;
        }
        "llama-3.1-8b-4l" => {
            cfg.n_layers = 4;
            cfg.d_model = 4096;
            cfg.d_mlp = 14336;
            cfg.d_head = 128;
            cfg.tie_embeddings = false;
        }
        s => return Err(format!("SHAPE {s}: expected llama-3.2-1b or llama-3.1-8b-4l").into()),
    }
    let dt = match dtype.as_str() {
        "q4_k" => GgmlDType::Q4K,
        "q8_0" => GgmlDType::Q8_0,
        "q4_1" => GgmlDType::Q4_1,
        "f16" => GgmlDType::F16,
        s => return Err(format!("DTYPE {s}: expected q4_k, q8_0, q4_1 or f16").into()),
    };
    let w = weights(&cfg, 0)?;
    eprintln!(
        "{shape}: {:.2} B parameters, writing {dtype} to {out}",
        cfg.n_params() as f64 / 1e9
    );
    pragma_model::testing::write_gguf_mixed(std::path::Path::new(out), &cfg, &w, &|_| dt)?;
    Ok(())
}

/// Uniform weights, scale 1/sqrt(fan_in) for matrices, 1 +- 0.1 for norms.
fn weights(cfg: &Config, seed: u64) -> candle_core::Result<Vec<(String, Tensor)>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut mat = |rows: usize, cols: usize| -> candle_core::Result<Tensor> {
        let s = 1.0 / (cols as f32).sqrt();
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| s * (rng.random::<f32>() * 2.0 - 1.0))
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu)
    };
    let norm = |d: usize| Tensor::from_vec(vec![1f32; d], d, &Device::Cpu);
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
