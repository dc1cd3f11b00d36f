//! pragma's logistic regression and difference of means against scikit-learn on the same
//! SmolLM2 activations (fixture from scripts/fixtures/make_probe_fixture.py).
//!
//! Tolerances: coefficients within 1e-4 of the largest sklearn coefficient and the
//! intercept within 1e-4 (both solvers are run to a tight tolerance, so this compares the
//! optimum of the same objective); AUROCs within 1e-6; the same C chosen on validation.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use pragma_methods::linear::*;

fn fixture() -> HashMap<String, Tensor> {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/probes/sklearn.safetensors");
    candle_core::safetensors::load(&p, &Device::Cpu).expect("fixture")
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .expect("f64")
        .flatten_all()
        .expect("flat")
        .to_vec1()
        .expect("vec")
}

#[test]
fn logistic_and_diff_means_match_sklearn() {
    let fx = fixture();
    let labels: Vec<u8> = f64s(&fx["labels"]).iter().map(|&v| v as u8).collect();
    let split: Vec<usize> = f64s(&fx["split"]).iter().map(|&v| v as usize).collect();
    let idx = |s: usize| -> Vec<usize> { (0..split.len()).filter(|&i| split[i] == s).collect() };
    let (tr, va, te) = (idx(0), idx(1), idx(2));
    let lab = |ix: &[usize]| -> Vec<u8> { ix.iter().map(|&i| labels[i]).collect() };
    let c_grid = [0.001, 0.01, 0.1, 1.0];
    for layer in [6usize, 18] {
        let x = &fx[&format!("x.{layer}")];
        let (n, d) = x.dims2().expect("dims");
        let x = Matrix::new(f64s(x), n, d);
        let (xtr, xva, xte) = (x.select(&tr), x.select(&va), x.select(&te));
        let st = Standardizer::fit(&xtr);
        let (str_, sva, ste) = (st.apply(&xtr), st.apply(&xva), st.apply(&xte));
        for (k, &c) in c_grid.iter().enumerate() {
            let m = fit_logistic(
                &str_,
                &lab(&tr),
                c,
                None,
                FitOptions {
                    gtol: 1e-9,
                    ..Default::default()
                },
            );
            let coef = f64s(&fx[&format!("coef.{layer}.{k}")]);
            let b = f64s(&fx[&format!("intercept.{layer}.{k}")])[0];
            let scale = coef.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            let diff =
                m.w.iter()
                    .zip(&coef)
                    .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
            let auc = f64s(&fx[&format!("auroc.{layer}.{k}")]);
            let (va_auc, te_auc) = (
                auroc(&m.scores(&sva), &lab(&va)).expect("auc"),
                auroc(&m.scores(&ste), &lab(&te)).expect("auc"),
            );
            println!(
                "layer {layer} C {c}: max |w - w_sklearn| {diff:.2e} (max |w| {scale:.3}), |b - b_sklearn| {:.2e}, AUROC val {va_auc:.4} test {te_auc:.4} (sklearn {:.4} {:.4})",
                (m.b - b).abs(),
                auc[0],
                auc[1]
            );
            assert!(
                diff <= 1e-4 * scale.max(1e-3),
                "layer {layer} C {c}: coefficients differ by {diff}"
            );
            assert!(
                (m.b - b).abs() <= 1e-4,
                "layer {layer} C {c}: intercept {} vs {b}",
                m.b
            );
            assert!((va_auc - auc[0]).abs() < 1e-6 && (te_auc - auc[1]).abs() < 1e-6);
        }
        // The C chosen on validation is sklearn's choice too (default fit options, warm starts).
        let (_, _, c) =
            pragma_methods::probe::fit_logistic_cv(&xtr, &lab(&tr), &xva, &lab(&va), &c_grid);
        assert_eq!(c, f64s(&fx[&format!("best_c.{layer}")])[0], "layer {layer}");
        let dm = fit_diff_means(&xtr, &lab(&tr));
        let a = auroc(&dm.scores(&xte), &lab(&te)).expect("auc");
        let want = f64s(&fx[&format!("diffmeans_auroc.{layer}")])[0];
        println!(
            "layer {layer}: chosen C {c}; diff-means test AUROC {a:.6} (sklearn/numpy {want:.6})"
        );
        assert!((a - want).abs() < 1e-9);
    }
}
