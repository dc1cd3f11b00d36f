//! The probe sweep's plot: test AUROC by layer with CI bands, baselines as lines.

use std::path::Path;

use super::{LayerResult, ProbeReport, Scored};
use crate::error::{Error, Result};

/// AUROC vs layer with CI bands for both probe kinds; baselines as horizontal lines.
pub fn plot_svg(r: &ProbeReport, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: String| Error::Input(format!("plot {}: {e}", path.display()));
    let xs: Vec<f64> = r.layers.iter().map(|l| l.layer as f64).collect();
    let (x0, x1) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let lo = r
        .layers
        .iter()
        .flat_map(|l| [l.logistic.test_auroc_ci.0, l.diff_means.test_auroc_ci.0])
        .chain(r.baselines.iter().map(|b| b.scored.test_auroc_ci.0))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::min);
    let y0 = (lo - 0.05).clamp(0.0, 0.5);
    crate::plot::svg_atomic(path, (860, 520), |root| {
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{}: test AUROC by layer (95% CI)", r.dataset),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(x0.min(x1)..x1.max(x0 + 1.0), y0..1.0)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("layer")
            .y_desc("test AUROC")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        type Get = fn(&LayerResult) -> &Scored;
        let kinds: [(&str, RGBColor, Get); 2] = [
            ("logistic", RGBColor(31, 119, 180), |l| &l.logistic),
            ("diff of means", RGBColor(214, 39, 40), |l| &l.diff_means),
        ];
        for (name, color, get) in kinds {
            let upper: Vec<(f64, f64)> = r
                .layers
                .iter()
                .map(|l| (l.layer as f64, get(l).test_auroc_ci.1))
                .collect();
            let mut band = upper.clone();
            band.extend(
                r.layers
                    .iter()
                    .rev()
                    .map(|l| (l.layer as f64, get(l).test_auroc_ci.0)),
            );
            // No band where the CIs were not computed (--bootstrap 0).
            if band.iter().all(|p| p.1.is_finite()) {
                chart
                    .draw_series(std::iter::once(Polygon::new(band, color.mix(0.15))))
                    .map_err(|e| err(e.to_string()))?;
            }
            chart
                .draw_series(LineSeries::new(
                    r.layers.iter().map(|l| (l.layer as f64, get(l).test_auroc)),
                    color.stroke_width(2),
                ))
                .map_err(|e| err(e.to_string()))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        let greys = [
            RGBColor(80, 80, 80),
            RGBColor(44, 160, 44),
            RGBColor(148, 103, 189),
        ];
        for (k, b) in r.baselines.iter().enumerate() {
            let c = greys[k % greys.len()];
            let v = b.scored.test_auroc;
            chart
                .draw_series(LineSeries::new(
                    vec![(x0, v), (x1, v)],
                    ShapeStyle::from(&c).stroke_width(1),
                ))
                .map_err(|e| err(e.to_string()))?
                .label(format!("{} baseline ({v:.3})", b.name))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        Ok(())
    })
}
