//! SVG plots written atomically: plotters draws into a string, which is then written with
//! [`pragma_model::io::write_atomic`] (temp file + rename), so a killed run never leaves
//! a half-written plot.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::{DrawingArea, IntoDrawingArea, SVGBackend};

use crate::error::{Error, Result};

/// Draw a `size` (width, height in pixels) SVG with `draw`, which gets the root drawing
/// area, then finish it and write it to `path` atomically.
pub(crate) fn svg_atomic(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<SVGBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(root.clone())?;
        root.present()
            .map_err(|e| Error::Input(format!("plot {}: {e}", path.display())))?;
    }
    pragma_model::io::write_atomic(path, svg.as_bytes())?;
    Ok(())
}
