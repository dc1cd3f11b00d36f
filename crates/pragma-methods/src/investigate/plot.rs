//! Heatmaps of patching grids (SVG): layers down, positions or heads across, a
//! diverging scale centred on 0 (blue negative, white 0, red positive), each cell's
//! value in its tooltip-free label when the grid is small.

use std::path::Path;

use super::patching::{PatchGrid, PatchResult};
use crate::error::{Error, Result};

/// One SVG per grid of `r`, side by side in one file.
pub fn patch_svg(r: &PatchResult, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: String| Error::Input(format!("plot {}: {e}", path.display()));
    let n = r.grids.len().max(1);
    let cols_max = r.grids.iter().map(|g| g.columns.len()).max().unwrap_or(1);
    let cell_w = (900 / cols_max.max(1)).clamp(14, 48) as u32;
    let panel_w = 130 + cell_w * cols_max as u32;
    let rows = r.grids.first().map_or(1, |g| g.normalized.len());
    let cell_h = (600 / rows.max(1)).clamp(8, 24) as u32;
    let panel_h = 170 + cell_h * rows as u32;
    crate::plot::svg_atomic(path, (panel_w * n as u32, panel_h), |root| {
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let panels = root.split_evenly((1, n));
        for (area, g) in panels.iter().zip(&r.grids) {
            draw_grid(area, g, r, cell_w, cell_h).map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    })
}

fn color(v: f64, max: f64) -> plotters::style::RGBColor {
    let x = if max > 0.0 {
        (v / max).clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let fade = |c: f64| (255.0 - (255.0 - c) * x.abs()) as u8;
    if !v.is_finite() {
        plotters::style::RGBColor(200, 200, 200)
    } else if x >= 0.0 {
        plotters::style::RGBColor(fade(214.0), fade(39.0), fade(40.0))
    } else {
        plotters::style::RGBColor(fade(31.0), fade(119.0), fade(180.0))
    }
}

fn draw_grid<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    g: &PatchGrid,
    r: &PatchResult,
    cell_w: u32,
    cell_h: u32,
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    let max = g
        .normalized
        .iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold(0f64, |m, v| m.max(v.abs()))
        .max(1e-9);
    let title = format!(
        "{} ({}), normalised: 0 = corrupt, 1 = clean",
        g.hook,
        format!("{:?}", r.direction).to_lowercase()
    );
    area.draw(&Text::new(title, (10, 8), ("sans-serif", 14)))
        .map_err(e)?;
    let (x0, y0) = (60i32, 40i32);
    for (l, row) in g.normalized.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            let x = x0 + (c as u32 * cell_w) as i32;
            let y = y0 + (l as u32 * cell_h) as i32;
            area.draw(&Rectangle::new(
                [(x, y), (x + cell_w as i32, y + cell_h as i32)],
                color(*v, max).filled(),
            ))
            .map_err(e)?;
        }
        if l % 2 == 0 || g.normalized.len() <= 16 {
            area.draw(&Text::new(
                format!("{l}"),
                (x0 - 24, y0 + (l as u32 * cell_h) as i32 + 2),
                ("sans-serif", 11),
            ))
            .map_err(e)?;
        }
    }
    area.draw(&Text::new("layer", (4, y0 - 14), ("sans-serif", 11)))
        .map_err(e)?;
    let bottom = y0 + (g.normalized.len() as u32 * cell_h) as i32 + 6;
    for (c, label) in g.columns.iter().enumerate() {
        let x = x0 + (c as u32 * cell_w) as i32 + cell_w as i32 / 2 - 4;
        let text: String = label.replace('\n', "\\n").chars().take(14).collect();
        area.draw(&Text::new(
            text,
            (x, bottom),
            ("sans-serif", 11)
                .into_font()
                .transform(FontTransform::Rotate90),
        ))
        .map_err(e)?;
    }
    area.draw(&Text::new(
        format!("scale: +-{max:.2} (red: toward clean, blue: away)"),
        (x0, bottom + 110),
        ("sans-serif", 11),
    ))
    .map_err(e)?;
    Ok(())
}
