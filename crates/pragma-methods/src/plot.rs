//! SVG plots written atomically: plotters draws into a string, which is then written with
//! [`pragma_model::io::write_atomic`] (temp file + rename), so a killed run never leaves
//! a half-written plot.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::{DrawingArea, IntoDrawingArea, SVGBackend};

use crate::error::Result;

/// Draw a `size` (width, height in pixels) SVG with `draw`, then write it to `path`
/// atomically. `draw` gets the root drawing area and should `present()` it.
pub(crate) fn svg_atomic(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<SVGBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    let mut svg = String::new();
    draw(SVGBackend::with_string(&mut svg, size).into_drawing_area())?;
    pragma_model::io::write_atomic(path, svg.as_bytes())?;
    Ok(())
}
