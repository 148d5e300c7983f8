//! The dissimilarity map over the frame (like the seed paper's Fig. 1E/F): the frame in gray, each
//! analysed patch tinted by its dissimilarity, excluded patches hatched, the patch grid, and a colour
//! bar (ticks on 1, 2, 5 × 10ⁿ steps) with the damage threshold marked, and a scale bar in nm when
//! the pixel size is known.

use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use super::ReportError;
use super::canvas::{self, Canvas};
use super::format;
use crate::damage::SimilarityMap;
use crate::frame::Frame;

pub struct Overlay<'a> {
    pub frame: &'a Frame,
    pub map: &'a SimilarityMap,
    /// Colour scale top (shared by every frame of a run, so colours compare across frames).
    pub vmax: f32,
    pub threshold: f32,
    pub title: String,
    pub subtitle: String,
    pub colorbar_label: String,
    /// Shown in red at the bottom (e.g. "SYNTHETIC weights").
    pub warning: Option<String>,
    /// Size of one frame pixel in nm, for the scale bar; `None`: unknown (no bar, and the legend
    /// says so).
    pub pixel_size_nm: Option<f64>,
}

/// Colour-bar ticks: about this many steps from 0 to the (rounded-up) top.
const BAR_STEPS: usize = 4;

const TOP: u32 = 58;
const LEFT: u32 = 12;
/// Where the frame's top-left pixel is drawn on the canvas.
pub const IMAGE_ORIGIN: (u32, u32) = (LEFT, TOP);
const BAR_GAP: u32 = 22;
const BAR_W: u32 = 22;
const RIGHT: u32 = 120;
const BOTTOM: u32 = 40;
const ALPHA: f32 = 0.55;

/// Viridis colour of `t` in 0..1 (NaN → the bottom colour: plotters' colormap panics on NaN).
pub fn viridis(t: f32) -> [u8; 3] {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let c: RGBColor = ViridisRGB.get_color(t);
    [c.0, c.1, c.2]
}

/// Display gray levels: 0.5 % and 99.5 % of the valid pixels map to black and white.
pub(crate) fn display_range(frame: &Frame) -> (f32, f32) {
    let mut v: Vec<f32> =
        frame.pixels().iter().enumerate().filter(|(i, _)| frame.is_valid(*i)).map(|(_, &x)| x).collect();
    if v.is_empty() {
        return (0.0, 1.0);
    }
    let k = |q: f64| ((v.len() - 1) as f64 * q).round() as usize;
    let (lo_i, hi_i) = (k(0.005), k(0.995));
    let lo = *v.select_nth_unstable_by(lo_i, f32::total_cmp).1;
    let hi = *v.select_nth_unstable_by(hi_i, f32::total_cmp).1;
    if hi > lo { (lo, hi) } else { (lo, lo + 1.0) }
}

/// Colour-bar tick values: 0 to `vmax` (already a tick, see [`format::nice_top`]) in round steps.
pub fn colorbar_ticks(vmax: f32) -> Vec<f64> {
    format::ticks(0.0, vmax as f64, BAR_STEPS)
}

pub fn render(o: &Overlay<'_>) -> Result<Canvas, ReportError> {
    let (fw, fh) = (o.frame.width() as u32, o.frame.height() as u32);
    // Small frames are enlarged (nearest neighbour) so patches are big enough to see.
    let scale = 560u32.div_ceil(fw.max(fh)).clamp(1, 8);
    let (iw, ih) = (fw * scale, fh * scale);
    // Wide enough for the title lines (≈ 0.6 em per character).
    let text_w = [(&o.title, 18.0), (&o.subtitle, 14.0)]
        .iter()
        .map(|(t, sz)| (t.chars().count() as f64 * sz * 0.6) as u32)
        .max()
        .unwrap_or(0);
    let width = (LEFT + iw + BAR_GAP + BAR_W + RIGHT).max(LEFT + text_w + 12);
    let height = TOP + ih.max(200) + BOTTOM;
    let mut c = Canvas::new(width, height, [255, 255, 255]);
    let (lo, hi) = display_range(o.frame);
    let gain = 255.0 / (hi - lo);
    for y in 0..ih {
        for x in 0..iw {
            let i = (y / scale) as usize * fw as usize + (x / scale) as usize;
            let g = if o.frame.is_valid(i) { ((o.frame.pixels()[i] - lo) * gain).clamp(0.0, 255.0) as u8 } else { 0 };
            c.put(LEFT + x, TOP + y, [g, g, g]);
        }
    }
    let grid = o.map.grid;
    let pp = grid.patch_px as u32 * scale;
    // The top rounded up to a tick, so the bar ends on a labelled round value.
    let vmax = format::nice_top(o.vmax.max(f32::EPSILON) as f64, BAR_STEPS) as f32;
    for p in 0..grid.len() {
        let (px, py) = grid.origin(p);
        let (x0, y0) = (LEFT + px as u32 * scale, TOP + py as u32 * scale);
        let analysed = o.map.status[p].analysed();
        let colour = if analysed { viridis(o.map.dissimilarity[p] / vmax) } else { [0, 0, 0] };
        for y in 0..pp {
            for x in 0..pp {
                let on_grid = x == 0 || y == 0;
                if on_grid {
                    c.blend(x0 + x, y0 + y, [255, 255, 255], 0.35);
                } else if analysed {
                    c.blend(x0 + x, y0 + y, colour, ALPHA);
                } else if (x + y) % 6 < 2 {
                    c.put(x0 + x, y0 + y, [200, 40, 40]);
                }
            }
        }
    }
    // Colour bar: top = vmax, bottom = 0.
    let (bx, by, bh) = (LEFT + iw + BAR_GAP, TOP, ih.max(200));
    for y in 0..bh {
        let col = viridis(1.0 - y as f32 / (bh - 1).max(1) as f32);
        for x in 0..BAR_W {
            c.put(bx + x, by + y, col);
        }
    }
    let image_nm_per_px = o.pixel_size_nm.map(|nm| nm / scale as f64);
    let bar = canvas::scale_bar(&mut c, (LEFT, TOP, iw, ih), image_nm_per_px)?;
    let thr_y = by as f32 + (1.0 - (o.threshold / vmax).clamp(0.0, 1.0)) * (bh - 1) as f32;
    c.draw(|area| {
        let black = RGBColor(0, 0, 0);
        canvas::text(area, &o.title, LEFT as i32, 8, 18.0, black)?;
        canvas::text(area, &o.subtitle, LEFT as i32, 32, 14.0, RGBColor(60, 60, 60))?;
        area.draw(&Rectangle::new([(bx as i32, by as i32), ((bx + BAR_W) as i32, (by + bh) as i32)], black))
            .map_err(|e| e.to_string())?;
        let ty = thr_y as i32;
        let ticks = colorbar_ticks(vmax);
        let step = ticks.get(1).copied().unwrap_or(vmax as f64);
        for v in ticks {
            let y = by as i32 + ((1.0 - v / vmax as f64) * (bh - 1) as f64).round() as i32;
            area.draw(&PathElement::new(vec![((bx + BAR_W) as i32, y), ((bx + BAR_W + 5) as i32, y)], black))
                .map_err(|e| e.to_string())?;
            // The threshold label takes precedence over a tick label it would cover.
            if (y - ty).abs() > 16 {
                canvas::text(area, &format::tick_label(v, step), (bx + BAR_W + 8) as i32, y - 7, 12.0, black)?;
            }
        }
        area.draw(&PathElement::new(
            vec![(bx as i32 - 4, ty), ((bx + BAR_W) as i32 + 4, ty)],
            RGBColor(220, 0, 0).stroke_width(2),
        ))
        .map_err(|e| e.to_string())?;
        canvas::text(
            area,
            &format!("threshold {}", format::sig(o.threshold as f64, 3)),
            (bx + BAR_W + 8) as i32,
            ty - 7,
            12.0,
            RGBColor(200, 0, 0),
        )?;
        let label_y = (by + bh + 6) as i32;
        canvas::text(area, &o.colorbar_label, (bx as i32 - 40).max(0), label_y, 12.0, black)?;
        let legend = "red hatching: patch not analysed";
        canvas::text(area, legend, LEFT as i32, label_y, 12.0, RGBColor(200, 40, 40))?;
        if bar.is_none() {
            let w = canvas::text_size(area, legend, 12.0).0 as i32;
            let note = if o.pixel_size_nm.is_some() {
                "  ·  image too small for a scale bar"
            } else {
                "  ·  pixel size unknown: no scale bar"
            };
            canvas::text(area, note, LEFT as i32 + w, label_y, 12.0, RGBColor(60, 60, 60))?;
        }
        if let Some(w) = &o.warning {
            canvas::text(area, w, LEFT as i32, label_y + 15, 12.0, RGBColor(200, 0, 0))?;
        }
        Ok(())
    })?;
    Ok(c)
}
