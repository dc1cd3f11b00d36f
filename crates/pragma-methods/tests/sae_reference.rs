//! SAEs against the real Python libraries and a torch autograd reference
//! (`fixtures/sae/`, made by `scripts/fixtures/make_sae_fixtures.py` with SAELens 6.54.12,
//! EleutherAI sparsify 1.3.3 and torch 1.13):
//! - folders saved by SAELens (standard, topk, jumprelu, batchtopk -> jumprelu), a pre-6.0
//!   SAELens cfg, and a sparsify folder load in pragma and encode/decode as the libraries
//!   do, within 1e-5 (absolute; activations are O(1));
//! - pragma's saved folders load back to the same outputs;
//! - one training step (loss parts, every gradient, one Adam step and the decoder
//!   renormalisation) equals the float64 torch autograd reference of docs/SAE.md: loss
//!   within 1e-5 relative, gradients within 2e-5 of their largest magnitude, weights after
//!   the step within 2e-6 (f32 arithmetic against float64); also for Matryoshka prefixes.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use pragma_methods::sae::training::{
    loss_and_grads, project_decoder_grad, Adam, Objective, Params,
};
use pragma_methods::sae::{Arch, Sae};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/sae")
}

fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(name), &Device::Cpu).expect("fixture")
}

fn vecf(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.to_vec1())
        .expect("vec")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn saelens_and_sparsify_folders_encode_and_decode_as_the_libraries_do() {
    let io = load("io.safetensors");
    let x = io["x"].clone();
    let cases = [
        ("saelens/standard", "saelens.standard", "relu"),
        ("saelens/topk", "saelens.topk", "topk"),
        ("saelens/jumprelu", "saelens.jumprelu", "jumprelu"),
        ("saelens/batchtopk", "saelens.batchtopk", "jumprelu"),
        ("saelens_legacy/topk", "saelens_legacy.topk", "topk"),
        ("sparsify/layers.3", "sparsify", "topk"),
    ];
    for (dir, key, arch) in cases {
        let sae = Sae::load(&fixtures().join(dir)).expect(dir);
        assert_eq!(sae.cfg.arch.name(), arch, "{dir}");
        assert_eq!(sae.cfg.hook_name, "blocks.3.hook_resid_post", "{dir}");
        let f = sae.encode(&x).expect("encode");
        let out = sae.decode(&f).expect("decode");
        let df = max_abs_diff(&vecf(&f), &vecf(&io[&format!("{key}.feature_acts")]));
        let dout = max_abs_diff(&vecf(&out), &vecf(&io[&format!("{key}.sae_out")]));
        eprintln!("{dir}: feature_acts {df:.2e}, sae_out {dout:.2e}");
        assert!(df < 1e-5 && dout < 1e-5, "{dir}: {df} {dout}");
        // Written by pragma (SAELens v6), read back: the same outputs.
        let tmp = tempfile::tempdir().expect("tmp");
        sae.save(tmp.path(), None).expect("save");
        let back = Sae::load(tmp.path()).expect("reload");
        let f2 = back.encode(&x).expect("encode");
        assert_eq!(vecf(&f2), vecf(&f), "{dir}: round trip");
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join("cfg.json")).expect("cfg"),
        )
        .expect("json");
        assert_eq!(cfg["metadata"]["hook_name"], "blocks.3.hook_resid_post");
    }
}

#[test]
fn one_training_step_equals_the_torch_reference() {
    let t = load("train_step.safetensors");
    let (d, n) = (16usize, 48usize);
    for (name, arch, widths) in [
        ("topk", Arch::TopK { k: 4 }, vec![]),
        ("batchtopk", Arch::BatchTopK { k: 4 }, vec![]),
        ("relu", Arch::Relu, vec![]),
        ("jumprelu", Arch::JumpRelu, vec![]),
        // Matryoshka: BatchTopK with nested prefixes of 12 and 24 of the 48 latents.
        ("matryoshka", Arch::BatchTopK { k: 4 }, vec![12, 24]),
    ] {
        let g = |k: &str| vecf(&t[&format!("{name}.{k}")]);
        // SAELens W_enc [d, n] -> pragma's rows per latent [n, d].
        let transpose = |w: Vec<f32>| -> Vec<f32> {
            let mut out = vec![0.0; d * n];
            for i in 0..d {
                for j in 0..n {
                    out[j * d + i] = w[i * n + j];
                }
            }
            out
        };
        let params = |stage: &str| Params {
            d_in: d,
            d_sae: n,
            w_enc_t: transpose(g(&format!("{stage}.W_enc"))),
            b_enc: g(&format!("{stage}.b_enc")),
            w_dec: g(&format!("{stage}.W_dec")),
            b_dec: g(&format!("{stage}.b_dec")),
            log_threshold: if arch == Arch::JumpRelu {
                g(&format!("{stage}.log_threshold"))
            } else {
                Vec::new()
            },
        };
        let mut p = params("before");
        let x = g("x");
        let dead: Vec<bool> = if matches!(arch, Arch::TopK { .. } | Arch::BatchTopK { .. }) {
            g("dead_mask").iter().map(|v| *v != 0.0).collect()
        } else {
            vec![false; n]
        };
        let obj = Objective {
            arch,
            aux_alpha: 1.0 / 32.0,
            lambda: 0.01,
            bandwidth: 0.001 * (d as f32).sqrt(),
            matryoshka: widths.clone(),
        };
        let (mut grad, stats) = loss_and_grads(&p, &x, 64, Some(&dead), &obj);
        let rel = |a: f64, b: f32| (a - b as f64).abs() / (b as f64).abs().max(1e-12);
        assert!(
            rel(stats.loss, g("loss")[0]) < 1e-5,
            "{name}: loss {} vs {}",
            stats.loss,
            g("loss")[0]
        );
        assert!(rel(stats.fvu, g("fvu")[0]) < 1e-5, "{name}: fvu");
        match arch {
            Arch::TopK { .. } | Arch::BatchTopK { .. } => {
                assert!(
                    rel(stats.aux, g("aux")[0]) < 1e-5,
                    "{name}: aux {} vs {}",
                    stats.aux,
                    g("aux")[0]
                )
            }
            _ => assert!(
                rel(stats.sparsity, g("sparsity")[0]) < 1e-5,
                "{name}: sparsity"
            ),
        }
        if !widths.is_empty() {
            assert!(
                rel(stats.inner, g("inner")[0]) < 1e-5,
                "{name}: inner {} vs {}",
                stats.inner,
                g("inner")[0]
            );
        }
        if name == "batchtopk" {
            let want = g("threshold_after")[0];
            let got = stats.min_selected.expect("min");
            assert!(
                (got - want).abs() < 1e-6,
                "{name}: threshold {got} vs {want}"
            );
        }
        let close = |ours: &[f32], theirs: &[f32], what: &str| {
            let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            let err = max_abs_diff(ours, theirs) / scale;
            eprintln!("{name} {what}: {err:.2e} of max |ref| {scale:.3e}");
            assert!(err < 2e-5, "{name} {what}: {err}");
        };
        close(&grad.w_dec, &g("grad_raw.W_dec"), "grad W_dec (raw)");
        project_decoder_grad(&p, &mut grad);
        close(&grad.w_dec, &g("grad.W_dec"), "grad W_dec (projected)");
        close(&grad.w_enc_t, &transpose(g("grad.W_enc")), "grad W_enc");
        close(&grad.b_enc, &g("grad.b_enc"), "grad b_enc");
        close(&grad.b_dec, &g("grad.b_dec"), "grad b_dec");
        if arch == Arch::JumpRelu {
            close(
                &grad.log_threshold,
                &g("grad.log_threshold"),
                "grad log_threshold",
            );
        }
        let mut adam = Adam::new(&p);
        adam.update(&mut p, &grad, 1e-3);
        p.normalize_decoder();
        let after = params("after");
        for ((part, ours), (_, theirs)) in p.parts().into_iter().zip(after.parts()) {
            let d = max_abs_diff(ours, theirs);
            assert!(d < 2e-6, "{name} after {part}: {d}");
        }
    }
}
