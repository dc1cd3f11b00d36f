//! Random-weight GGUFs of K-quant-capable shapes, written by pragma the same way every
//! time, against llama.cpp's logits on the same bytes (fixtures/random, from
//! scripts/fixtures/make_random_llamacpp_fixture.py). pragma's weights stay in the file's
//! dtype (native) and the f32 path must agree with them at prefill to 1e-4 of the logits'
//! scale (the same dequantized values, f32 sums in another order); llama.cpp,
//! which multiplies with 8-bit activations, loosely: per-position Pearson r > 0.999 and
//! the same top-1 token at >= 11 of 12 positions (random weights give flat logits, where
//! near-ties can flip; observed: r >= 0.9998, 12 of 12).

use candle_core::quantized::GgmlDType;
use pragma_model::hooks::Hooks;
use pragma_model::llama::{Batch, Logits};
use pragma_model::testing::{pearson, random_weights, shape, write_gguf_mixed};
use pragma_model::{Model, WeightMode};
use sha2::{Digest, Sha256};

fn fixture(dtype: &str) -> serde_json::Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/random")
        .join(format!("llamacpp_wide_{dtype}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture")).expect("json")
}

fn logits(m: &Model, ids: &[u32]) -> Vec<Vec<f32>> {
    let batch = Batch::single(ids, m.device()).expect("batch");
    let (l, _) = m
        .transformer
        .forward(&batch, &Hooks::new(), Logits::All)
        .expect("forward");
    l.expect("logits")
        .squeeze(0)
        .expect("squeeze")
        .to_vec2()
        .expect("rows")
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|x| x.0)
        .unwrap_or(0)
}

#[test]
fn random_ggufs_match_llama_cpp_loosely_and_the_f32_path_exactly() {
    for (name, dtype) in [("q4_k", GgmlDType::Q4K), ("q8_0", GgmlDType::Q8_0)] {
        let fx = fixture(name);
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("wide.gguf");
        let cfg = shape("wide-test").expect("shape");
        write_gguf_mixed(&p, &cfg, &random_weights(&cfg, 0).expect("w"), &|_| dtype)
            .expect("write");
        let sha = format!("{:x}", Sha256::digest(std::fs::read(&p).expect("read")));
        assert_eq!(
            sha,
            fx["sha256"].as_str().expect("sha"),
            "{name}: the file differs from the fixture's"
        );
        let ids: Vec<u32> = fx["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect();
        let reference: Vec<Vec<f32>> = fx["logits"]
            .as_array()
            .expect("logits")
            .iter()
            .map(|r| {
                r.as_array()
                    .expect("row")
                    .iter()
                    .map(|x| x.as_f64().expect("x") as f32)
                    .collect()
            })
            .collect();
        let path = p.to_str().expect("utf8");
        let native = logits(
            &Model::load_with(path, WeightMode::Native, &mut |_| {}).expect("native"),
            &ids,
        );
        let f32m = logits(
            &Model::load_with(path, WeightMode::F32, &mut |_| {}).expect("f32"),
            &ids,
        );
        let scale = f32m.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
        let d = native
            .iter()
            .flatten()
            .zip(f32m.iter().flatten())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!("{name}: native vs f32 max |diff| {d:.2e} of {scale:.2}");
        assert!(
            d <= 1e-4 * scale,
            "{name}: native vs f32 differ by {d} (scale {scale})"
        );
        let mut agree = 0;
        let mut worst = 1.0f64;
        for (a, b) in native.iter().zip(&reference) {
            worst = worst.min(pearson(a, b));
            agree += usize::from(argmax(a) == argmax(b));
        }
        println!(
            "{name}: min Pearson r {worst:.5}, top-1 agreement {agree}/{}",
            ids.len()
        );
        assert!(worst > 0.999, "{name}: Pearson r {worst}");
        assert!(agree >= 11, "{name}: top-1 agreement {agree}/{}", ids.len());
    }
}
