//! Write the model seeds of the fuzz corpora (`fuzz/seeds/`): tiny random llamas as GGUF
//! (F32 and Q8_0) and as an HF folder (config.json, model.safetensors, tokenizer.json,
//! tokenizer_config.json with its chat template). Run by `scripts/fuzz/make_seeds.py`:
//!
//! ```sh
//! cargo run -p pragma-model --example fuzz_seeds -- OUT_DIR
//! ```
//!
//! The models are tiny so the fuzzer's mutations land in headers and metadata, not in
//! weights: one layer, `d_model` 8 (F32) or 32 (Q8_0, whose blocks are 32 wide).

use candle_core::quantized::GgmlDType;
use pragma_model::testing::{tiny_config, tiny_weights, write_gguf, write_hf};
use pragma_model::Arch;

fn main() -> pragma_model::Result<()> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "seeds".into()));
    std::fs::create_dir_all(&out).expect("create the output folder");
    for (name, d_model, dtype) in [("f32", 8, GgmlDType::F32), ("q8_0", 32, GgmlDType::Q8_0)] {
        let mut cfg = tiny_config(Arch::Llama);
        cfg.n_layers = 1;
        cfg.d_model = d_model;
        cfg.d_mlp = d_model;
        cfg.n_heads = 2;
        cfg.n_kv_heads = 1;
        cfg.d_head = d_model / 2;
        cfg.context_length = 16;
        let w = tiny_weights(&cfg, 1)?;
        write_gguf(&out.join(format!("tiny-{name}.gguf")), &cfg, &w, dtype)?;
        if name == "f32" {
            write_hf(&out.join("hf"), &cfg, &w)?;
        }
    }
    println!("wrote {}", out.display());
    Ok(())
}
