//! pragma-eval's statistics against scipy and scikit-learn on fixed inputs
//! (fixtures/eval/stats.json, made by scripts/fixtures/make_eval_stats_fixture.py).

use pragma_eval::stats::{mean_ci, Draws};
use pragma_methods::linear::auroc;

fn fixture() -> serde_json::Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/eval/stats.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).expect("fixture")).expect("json")
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("f64"))
        .collect()
}

/// The percentile bootstrap interval of a mean matches scipy.stats.bootstrap within
/// Monte Carlo error: both use 20,000 resamples; the 2.5% and 97.5% quantiles of the
/// resampled means then have a standard error of about 0.5% of the interval's width (x has
/// 50 values), so 3% of the width is a 6-sigma band. The mean itself is exact.
#[test]
fn bootstrap_interval_of_a_mean_matches_scipy() {
    let f = fixture();
    let m = &f["mean_ci"];
    let x = f64s(&m["x"]);
    let e = mean_ci(&x, 20_000, 0);
    assert!((e.mean - m["mean"].as_f64().expect("m")).abs() < 1e-12);
    let (lo, hi) = (m["lo"].as_f64().expect("lo"), m["hi"].as_f64().expect("hi"));
    let tol = 0.03 * (hi - lo);
    assert!(
        (e.lo - lo).abs() < tol,
        "lo {} vs scipy {lo} (tol {tol})",
        e.lo
    );
    assert!(
        (e.hi - hi).abs() < tol,
        "hi {} vs scipy {hi} (tol {tol})",
        e.hi
    );
}

/// AUROC with ties equals sklearn's roc_auc_score and scipy's Mann-Whitney U / (n1 n2),
/// to 1e-12; the two-level bootstrap's point estimate for one seed is that AUROC.
#[test]
fn auroc_with_ties_matches_sklearn() {
    let f = fixture();
    let a = &f["auroc"];
    let s = f64s(&a["scores"]);
    let l: Vec<u8> = f64s(&a["labels"]).into_iter().map(|v| v as u8).collect();
    let got = auroc(&s, &l).expect("auroc");
    assert!(
        (got - a["sklearn"].as_f64().expect("s")).abs() < 1e-12,
        "{got}"
    );
    assert!((got - a["mannwhitney_u_over_n1n2"].as_f64().expect("u")).abs() < 1e-12);
    let d = Draws::new(&[&l], 500, 0, false);
    let e = d.auroc(&[(&s, &l)]);
    assert!((e.mean - got).abs() < 1e-12);
    assert!(e.lo < got && got < e.hi, "{e:?}");
}

/// The one-sided Fisher exact test (the exact permutation test of a frequency
/// difference) matches scipy.stats.fisher_exact(alternative="greater") to 1e-10 relative.
#[test]
fn fisher_exact_matches_scipy() {
    let f = fixture();
    let lf = pragma_eval::stats::ln_factorials(2000);
    let tables = f["fisher_greater"]["tables"].as_array().expect("t");
    let want = f64s(&f["fisher_greater"]["p"]);
    for (t, w) in tables.iter().zip(want) {
        let t: Vec<usize> = f64s(t).into_iter().map(|v| v as usize).collect();
        let got = pragma_eval::stats::fisher_greater(t[0], t[1], t[2], t[3], &lf);
        assert!(
            (got - w).abs() <= 1e-10 * w.max(1e-300) + 1e-15,
            "{t:?}: {got} vs scipy {w}"
        );
    }
}

/// Benjamini-Hochberg adjusted p-values match scipy.stats.false_discovery_control to 1e-12.
#[test]
fn benjamini_hochberg_matches_scipy() {
    let f = fixture();
    let p = f64s(&f["bh"]["p"]);
    let want = f64s(&f["bh"]["adjusted"]);
    let got = pragma_eval::stats::bh_adjust(&p);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-12, "{g} vs scipy {w}");
    }
}
