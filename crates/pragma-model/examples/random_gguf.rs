//! Write a random-weight GGUF with a real model's shapes, to measure memory and speed
//! at scale without downloading one (no machine here reaches a model hub), and to compare
//! with llama.cpp on the same file (`scripts/fixtures/make_random_llamacpp_fixture.py`).
//!
//! `cargo run --release -p pragma-model --example random_gguf -- SHAPE DTYPE OUT.gguf [SEED]`
//!
//! SHAPE: `llama-3.2-1b`, `llama-3.1-8b-4l` or `wide-test` (`pragma_model::testing::shape`).
//! DTYPE: q4_k, q8_0, q4_1 or f16 for the matrices (norms f32). Weights:
//! `pragma_model::testing::random_weights` (uniform, scale 1/sqrt(fan_in)), SEED default 0;
//! the tokenizer is the tiny test vocabulary, padded with plain tokens to the shape's.
//! The same arguments write the same bytes.
use candle_core::quantized::GgmlDType;
use pragma_model::testing::{random_weights, shape, write_gguf_mixed};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, dtype, out, seed) = match args.as_slice() {
        [n, d, o] => (n, d, o, 0),
        [n, d, o, s] => (n, d, o, s.parse::<u64>()?),
        _ => {
            return Err(
                "usage: random_gguf SHAPE (llama-3.2-1b | llama-3.1-8b-4l | wide-test) \
                        DTYPE (q4_k | q8_0 | q4_1 | f16) OUT.gguf [SEED]"
                    .into(),
            )
        }
    };
    let cfg = shape(name)?;
    let dt = match dtype.as_str() {
        "q4_k" => GgmlDType::Q4K,
        "q8_0" => GgmlDType::Q8_0,
        "q4_1" => GgmlDType::Q4_1,
        "f16" => GgmlDType::F16,
        s => return Err(format!("DTYPE {s}: expected q4_k, q8_0, q4_1 or f16").into()),
    };
    let w = random_weights(&cfg, seed)?;
    eprintln!(
        "{name}: {:.3} B parameters, writing {dtype} to {out}",
        cfg.n_params() as f64 / 1e9
    );
    write_gguf_mixed(std::path::Path::new(out), &cfg, &w, &|_| dt)?;
    Ok(())
}
