//! Helpers shared by the real-model parity tests (SmolLM2, Gemma 3): their committed
//! fixtures and the tokenizer check against llama.cpp's ids.

#![allow(dead_code)] // each test crate uses a subset

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use pragma_model::Tokenizer;

/// Every tensor of `dir/reference_p{0,1,...}.safetensors`.
pub fn load_reference(dir: &Path) -> HashMap<String, Tensor> {
    let mut all = HashMap::new();
    for i in 0.. {
        let path = dir.join(format!("reference_p{i}.safetensors"));
        if !path.exists() {
            break;
        }
        all.extend(candle_core::safetensors::load(&path, &Device::Cpu).expect("reference fixture"));
    }
    all
}

/// One fixture tensor; panics naming it when missing.
pub fn get(r: &HashMap<String, Tensor>, name: &str) -> Tensor {
    r.get(name)
        .unwrap_or_else(|| panic!("fixture lacks {name}"))
        .clone()
}

/// Token ids stored as i64.
pub fn ids_of(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::I64)
        .expect("i64")
        .to_vec1::<i64>()
        .expect("ids")
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

/// Prompts in the fixture (`p{i}.ids`).
pub fn n_prompts(r: &HashMap<String, Tensor>) -> usize {
    (0..)
        .take_while(|i| r.contains_key(&format!("p{i}.ids")))
        .count()
}

/// `tk` gives llama.cpp's ids on every case of `path` (a `tokenizer.json` fixture, at
/// least `min_cases` of them), and decoding gives the text back where `lossless(text)`.
pub fn check_token_ids(
    tk: &Tokenizer,
    path: &Path,
    min_cases: usize,
    lossless: impl Fn(&str) -> bool,
) {
    let text = std::fs::read_to_string(path).expect("tokenizer fixture");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let cases = v["cases"].as_array().expect("cases");
    assert!(
        cases.len() >= min_cases,
        "expected {min_cases}+ tokenizer cases"
    );
    let mut bad = Vec::new();
    for c in cases {
        let s = c["text"].as_str().expect("text");
        let special = c["special"].as_bool().expect("special");
        let want: Vec<u32> = c["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect();
        let got = tk.encode(s, special).expect("encode");
        if got != want {
            bad.push(format!(
                "{s:?} (special={special}):\n  llama.cpp {want:?}\n  pragma    {got:?}"
            ));
        }
        if !got.is_empty() && lossless(s) {
            assert_eq!(tk.decode(&got).expect("decode"), s, "round trip");
        }
    }
    println!("{} tokenizer cases, {} mismatches", cases.len(), bad.len());
    assert!(
        bad.is_empty(),
        "token ids differ from llama.cpp:\n{}",
        bad.join("\n")
    );
}
