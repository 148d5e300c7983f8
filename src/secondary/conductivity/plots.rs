//! The pictures: measured vs predicted log10 σ per model (the paper's Fig. 3), the GAP-channel
//! correlation histogram (Fig. 4b) and the segmentation overlays (Fig. 5).

use std::path::Path;

use plotters::prelude::*;

use super::interpret::GroupMasks;
use crate::report::ReportError;
use crate::report::canvas::{self, Canvas, FONT, draw_err};

/// One panel of the diagnostic plot.
pub struct Diagnostic<'a> {
    pub title: String,
    /// (measured, predicted) log10 S/cm, one per sample.
    pub points: &'a [(f64, f64)],
    pub r2: f64,
    pub rmse_log10: f64,
    pub note: Option<String>,
}

const POINT: RGBColor = RGBColor(31, 119, 180);
const DIAGONAL: RGBColor = RGBColor(120, 120, 120);
/// Fig. 4b's colours: yellow for positive, light blue for negative correlation.
const POSITIVE: RGBColor = RGBColor(240, 200, 30);
const NEGATIVE: RGBColor = RGBColor(110, 190, 240);
const WARNING: RGBColor = RGBColor(200, 0, 0);

/// Common axis range for all panels: every measured and predicted value, padded.
pub fn axis_range<'a>(panels: impl IntoIterator<Item = &'a [(f64, f64)]>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for pts in panels {
        for &(a, b) in pts {
            for v in [a, b] {
                if v.is_finite() {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
            }
        }
    }
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return (-7.0, -4.0);
    }
    let pad = 0.06 * (hi - lo);
    (lo - pad, hi + pad)
}

fn draw_panel(area: &canvas::Area<'_>, d: &Diagnostic<'_>, range: (f64, f64)) -> Result<(), String> {
    let (lo, hi) = range;
    let mut chart = ChartBuilder::on(area)
        .caption(&d.title, (FONT, 16))
        .margin(10)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(lo..hi, lo..hi)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_labels(7)
        .y_labels(7)
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .x_desc("measured log10 σ (S/cm)")
        .y_desc("predicted log10 σ (S/cm)")
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(RGBColor(245, 245, 245))
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(LineSeries::new(vec![(lo, lo), (hi, hi)], DIAGONAL.stroke_width(1)))
        .map_err(draw_err)?
        .label("y = x")
        .legend(|(x, y)| PathElement::new(vec![(x - 2, y), (x + 14, y)], DIAGONAL));
    chart
        .draw_series(d.points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).map(|&p| Circle::new(p, 4, POINT.mix(0.75).filled())))
        .map_err(draw_err)?
        .label(format!("R² = {:.3}, RMSE = {:.3} log10 S/cm (n = {})", d.r2, d.rmse_log10, d.points.len()))
        .legend(|(x, y)| Circle::new((x + 6, y), 4, POINT.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .margin(8)
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(160, 160, 160))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

/// One figure with a panel per model, sharing axes; `warning` in red at the bottom.
pub fn diagnostic(panels: &[Diagnostic<'_>], heading: &str, warning: Option<&str>, path: &Path) -> Result<(), ReportError> {
    let cols = panels.len().clamp(1, 3) as u32;
    let rows = panels.len().div_ceil(3).max(1) as u32;
    let (pw, ph) = (460u32, 440u32);
    let top = 36;
    let bottom = if warning.is_some() || panels.iter().any(|p| p.note.is_some()) { 26 } else { 4 };
    let mut c = Canvas::new(cols * pw, top + rows * ph + bottom, [255, 255, 255]);
    let range = axis_range(panels.iter().map(|p| p.points));
    c.draw(|root| {
        canvas::text(root, heading, 12, 8, 18.0, BLACK)?;
        let body = root.margin(top, bottom, 0, 0);
        let areas = body.split_evenly((rows as usize, cols as usize));
        for (area, d) in areas.iter().zip(panels) {
            draw_panel(area, d, range)?;
        }
        let note = panels.iter().filter_map(|p| p.note.as_deref()).next();
        if let Some(w) = warning.or(note) {
            canvas::text(root, w, 12, (top + rows * ph + 4) as i32, 13.0, WARNING)?;
        }
        Ok(())
    })?;
    c.save_png(path)
}

/// Histogram of the GAP channels' correlations with log10 σ, positive bars yellow, negative blue.
pub fn correlation_histogram(corr: &[f64], title: &str, path: &Path) -> Result<(), ReportError> {
    let bins = 20usize;
    let mut counts = vec![0u32; bins];
    // A channel that is 0 on every image (a dead ReLU) has no correlation; it is counted apart.
    for &r in corr {
        if r.is_finite() && r != 0.0 {
            let b = (((r + 1.0) / 2.0 * bins as f64).floor() as isize).clamp(0, bins as isize - 1) as usize;
            counts[b] += 1;
        }
    }
    let ymax = counts.iter().copied().max().unwrap_or(1).max(1) + 1;
    let mut c = Canvas::new(760, 480, [255, 255, 255]);
    let n_pos = corr.iter().filter(|&&r| r > 0.0).count();
    let n_neg = corr.iter().filter(|&&r| r < 0.0).count();
    let n_dead = corr.len() - n_pos - n_neg;
    c.draw(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 16))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(50)
            .build_cartesian_2d(-1.0f64..1.0, 0u32..ymax)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_labels(11)
            .x_label_formatter(&|v| format!("{v:.1}"))
            .x_desc("Pearson correlation of the GAP channel with log10 σ (over training images)")
            .y_desc("channels")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .light_line_style(RGBColor(245, 245, 245))
            .draw()
            .map_err(draw_err)?;
        for (b, &n) in counts.iter().enumerate() {
            let x0 = -1.0 + 2.0 * b as f64 / bins as f64;
            let x1 = x0 + 2.0 / bins as f64;
            let colour = if x0 >= 0.0 { POSITIVE } else { NEGATIVE };
            chart.draw_series(std::iter::once(Rectangle::new([(x0, 0), (x1, n)], colour.filled()))).map_err(draw_err)?;
            chart
                .draw_series(std::iter::once(Rectangle::new([(x0, 0), (x1, n)], RGBColor(90, 90, 90).stroke_width(1))))
                .map_err(draw_err)?;
        }
        let dead = if n_dead > 0 { format!(", {n_dead} constant (dead)") } else { String::new() };
        canvas::text(root, &format!("{n_pos} positive, {n_neg} negative{dead} of {} channels", corr.len()), 80, 40, 13.0, BLACK)?;
        Ok(())
    })?;
    c.save_png(path)
}

/// One image's overlay: the SEM crop, then only the positive group's region, then only the negative
/// group's (the rest dimmed), each enlarged; `caption` above.
pub fn overlay(m: &GroupMasks, crop: usize, caption: &str, path: &Path) -> Result<(), ReportError> {
    let scale = (256usize.div_ceil(crop)).clamp(1, 8) as u32;
    let edge = crop as u32 * scale;
    let (gap, top, left) = (16u32, 62u32, 12u32);
    let width = left * 2 + 3 * edge + 2 * gap;
    let mut c = Canvas::new(width, top + edge + 12, [255, 255, 255]);
    let panels: [(Option<&[bool]>, [u8; 3]); 3] =
        [(None, [0, 0, 0]), (Some(&m.positive), [240, 200, 30]), (Some(&m.negative), [110, 190, 240])];
    for (p, (mask, tint)) in panels.iter().enumerate() {
        let x_off = left + p as u32 * (edge + gap);
        for y in 0..edge {
            for x in 0..edge {
                let k = (y / scale) as usize * crop + (x / scale) as usize;
                let g = (m.crop[k].clamp(0.0, 1.0) * 255.0) as u8;
                let px = [g, g, g];
                c.put(x_off + x, top + y, px);
                match mask {
                    // Outside the region: dimmed to a quarter, as the paper blacks it out.
                    Some(mk) if !mk[k] => c.put(x_off + x, top + y, [g / 4, g / 4, g / 4]),
                    Some(_) => c.blend(x_off + x, top + y, *tint, 0.25),
                    None => {}
                }
            }
        }
    }
    c.draw(|root| {
        canvas::text(root, caption, 12, 6, 14.0, BLACK)?;
        for (p, label) in ["SEM (centre crop)", "positively correlated channels", "negatively correlated channels"]
            .iter()
            .enumerate()
        {
            canvas::text(root, label, (left + p as u32 * (edge + gap)) as i32, 38, 13.0, RGBColor(60, 60, 60))?;
        }
        Ok(())
    })?;
    c.save_png(path)
}
