//! Steering sweeps: layers x scales, a behaviour metric beside a coherence cost, and
//! a norm-matched random vector as the control at every point.
//!
//! Behaviour: the log-odds `log p(yes) - log p(no)` of two answer tokens at the
//! position after each eval prompt (e.g. " Yes" / " No" after "Is this a test?").
//! Coherence cost: the KL divergence of the steered next-token distribution from the
//! unsteered one at the same position, averaged over prompts.

use candle_core::{DType, Device, Tensor, D};
use pragma_model::hooks::{Hooks, Positions};
use pragma_model::llama::{log_softmax, Batch, Logits};
use pragma_model::Model;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::stats::{bootstrap_ci, mean};
use crate::steering::{Operator, SteeringVector};

/// One grid point, for the real vector or its random control.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub layer: usize,
    pub scale: f32,
    pub control: bool,
    /// Mean log-odds over prompts, with a bootstrap 95% CI.
    pub logodds: f64,
    pub logodds_ci: (f64, f64),
    /// Mean KL(unsteered || steered) at the answer position, nats.
    pub kl: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sweep {
    pub yes: String,
    pub no: String,
    pub n_prompts: usize,
    /// Unsteered log-odds, with a bootstrap 95% CI.
    pub baseline: f64,
    pub baseline_ci: (f64, f64),
    pub points: Vec<Point>,
}

/// The single token id of an answer string (e.g. " Yes"), or an error naming it.
pub fn answer_token(model: &Model, s: &str) -> Result<u32> {
    let ids = model.tokenizer.encode(s, false)?;
    match ids.as_slice() {
        [id] => Ok(*id),
        _ => Err(Error::Input(format!(
            "answer '{s}' is {} tokens ({ids:?}); expected exactly one token",
            ids.len()
        ))),
    }
}

/// Last-position log-probabilities `[n, vocab]` for prompts under `hooks`.
fn last_logprobs(model: &Model, prompts: &[Vec<u32>], hooks: &Hooks) -> Result<Tensor> {
    let batch = Batch::new(prompts, model.device())?;
    let (logits, _) = model.transformer.forward(&batch, hooks, Logits::Last)?;
    let logits = logits.ok_or_else(|| Error::Input("no logits".into()))?;
    log_softmax(&logits).map_err(Error::from)
}

fn logodds(lp: &Tensor, yes: u32, no: u32) -> Result<Vec<f64>> {
    let rows: Vec<Vec<f32>> = lp.to_vec2()?;
    Ok(rows
        .iter()
        .map(|r| (r[yes as usize] - r[no as usize]) as f64)
        .collect())
}

/// KL(p || q) per row for log-probabilities `[n, vocab]`.
fn kl_rows(lp: &Tensor, lq: &Tensor) -> Result<Vec<f64>> {
    let kl = (lp.exp()? * (lp - lq)?)?.sum(D::Minus1)?;
    Ok(kl.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
}

/// A random vector with the same norm as `v`, from a seeded normal.
pub fn norm_matched_random(v: &Tensor, seed: u64) -> Result<Tensor> {
    let d = v.dim(0)?;
    // A small deterministic generator keeps controls identical across runs and machines.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let vals: Vec<f32> = (0..d)
        .map(|_| {
            // Box-Muller.
            let (u1, u2) = (next().max(1e-300), next());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect();
    let r = Tensor::from_vec(vals, d, &Device::Cpu)?;
    let norm = |t: &Tensor| -> Result<f32> { Ok(t.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?) };
    let scale = norm(&v.to_dtype(DType::F32)?)? / norm(&r)?.max(1e-12);
    Ok((r * scale as f64)?)
}

/// Run the grid. `prompts` are token ids ending where the answer token would come.
pub fn sweep(
    model: &Model,
    vector: &SteeringVector,
    prompts: &[Vec<u32>],
    layers: &[usize],
    scales: &[f32],
    yes: &str,
    no: &str,
    seed: u64,
) -> Result<Sweep> {
    if prompts.is_empty() {
        return Err(Error::Input("no eval prompts".into()));
    }
    let (y, n) = (answer_token(model, yes)?, answer_token(model, no)?);
    let base_lp = last_logprobs(model, prompts, &Hooks::new())?;
    let base = logodds(&base_lp, y, n)?;
    let mut points = Vec::new();
    for &layer in layers {
        let k = vector
            .meta
            .layers
            .iter()
            .position(|l| *l == layer)
            .ok_or_else(|| {
                Error::Input(format!(
                    "layer {layer} is not in this vector (it has layers {:?})",
                    vector.meta.layers
                ))
            })?;
        let mut control = vector.clone();
        control.directions[k] = norm_matched_random(&vector.directions[k], seed ^ layer as u64)?;
        for &scale in scales {
            for (is_control, v) in [(false, vector), (true, &control)] {
                let hooks = v.hooks(
                    model,
                    Operator::Add,
                    scale,
                    Some(&[layer]),
                    Positions::From(1),
                )?;
                let lp = last_logprobs(model, prompts, &hooks)?;
                let lo = logodds(&lp, y, n)?;
                points.push(Point {
                    layer,
                    scale,
                    control: is_control,
                    logodds: mean(&lo),
                    logodds_ci: bootstrap_ci(&lo, 1000, seed),
                    kl: mean(&kl_rows(&base_lp, &lp)?),
                });
            }
        }
    }
    Ok(Sweep {
        yes: yes.to_string(),
        no: no.to_string(),
        n_prompts: prompts.len(),
        baseline: mean(&base),
        baseline_ci: bootstrap_ci(&base, 1000, seed),
        points,
    })
}

impl Sweep {
    /// A plain-text table: one row per layer x scale, vector beside control.
    pub fn table(&self) -> String {
        let mut s = format!(
            "log-odds log p({:?}) - log p({:?}) over {} prompts; unsteered {:+.3} [{:+.3}, {:+.3}]\n",
            self.yes, self.no, self.n_prompts, self.baseline, self.baseline_ci.0, self.baseline_ci.1
        );
        s.push_str("layer   scale   vector log-odds [95% CI]      KL      random control log-odds [95% CI]   KL\n");
        for p in self.points.iter().filter(|p| !p.control) {
            let c = self
                .points
                .iter()
                .find(|c| c.control && c.layer == p.layer && c.scale == p.scale);
            let ctl = c
                .map(|c| {
                    format!(
                        "{:+8.3} [{:+.3}, {:+.3}]   {:.4}",
                        c.logodds, c.logodds_ci.0, c.logodds_ci.1, c.kl
                    )
                })
                .unwrap_or_default();
            s.push_str(&format!(
                "{:>5} {:>7.2}   {:+8.3} [{:+.3}, {:+.3}]   {:.4}   {}\n",
                p.layer, p.scale, p.logodds, p.logodds_ci.0, p.logodds_ci.1, p.kl, ctl
            ));
        }
        s
    }
}

/// Draw log-odds against scale, one line per layer, controls dashed, as SVG.
pub fn plot_svg(s: &Sweep, path: &std::path::Path) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: String| Error::Input(format!("plot {}: {e}", path.display()));
    let xs: Vec<f64> = s.points.iter().map(|p| p.scale as f64).collect();
    let ys: Vec<f64> = s
        .points
        .iter()
        .flat_map(|p| [p.logodds_ci.0, p.logodds_ci.1])
        .chain([s.baseline])
        .collect();
    let (x0, x1) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let (y0, y1) = ys
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
    let pad = ((y1 - y0) * 0.1).max(0.1);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("steering sweep: log p({:?}) - log p({:?})", s.yes, s.no),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0.min(x1)..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("scale")
        .y_desc("mean log-odds (95% CI)")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let mut layers: Vec<usize> = s.points.iter().map(|p| p.layer).collect();
    layers.dedup();
    for (i, &layer) in layers.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        for control in [false, true] {
            let pts: Vec<&Point> = s
                .points
                .iter()
                .filter(|p| p.layer == layer && p.control == control)
                .collect();
            let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.scale as f64, p.logodds)).collect();
            let label = if control {
                format!("layer {layer} random control")
            } else {
                format!("layer {layer}")
            };
            let style = if control {
                color.mix(0.45).stroke_width(1)
            } else {
                color.stroke_width(2)
            };
            chart
                .draw_series(LineSeries::new(line, style))
                .map_err(|e| err(e.to_string()))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            chart
                .draw_series(pts.iter().map(|p| {
                    PathElement::new(
                        vec![
                            (p.scale as f64, p.logodds_ci.0),
                            (p.scale as f64, p.logodds_ci.1),
                        ],
                        color.mix(if control { 0.45 } else { 1.0 }),
                    )
                }))
                .map_err(|e| err(e.to_string()))?;
        }
    }
    chart
        .draw_series(LineSeries::new(
            vec![(x0, s.baseline), (x1, s.baseline)],
            BLACK.mix(0.5),
        ))
        .map_err(|e| err(e.to_string()))?
        .label("unsteered")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.5)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
