//! Damage versus cumulative dose: every analysed frame as a point, the fitted damage curve through
//! them with its critical dose, the alarm threshold as a dashed line and alarms as vertical markers.

use plotters::coord::ranged1d::Ranged;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::ReportError;
use super::canvas::{self, Area, Canvas, FONT, draw_err};
use crate::alarms::forecast::Fit;

pub struct DosePlot<'a> {
    pub title: String,
    pub subtitle: String,
    /// (cumulative dose in e⁻/Å², value) of every analysed frame.
    pub points: &'a [(f64, f64)],
    /// y-axis label, e.g. "mean 1 − SSIM".
    pub y_label: String,
    /// Fitted damage curve drawn through the points; its critical dose is quoted only when
    /// `fit.determined()`.
    pub fit: Option<Fit>,
    /// Alarm threshold, drawn as a dashed horizontal line.
    pub threshold: Option<f64>,
    /// Alarms: (cumulative dose, label), drawn as vertical markers with short labels.
    pub alarms: &'a [(f64, String)],
    /// Shown in red at the bottom (e.g. "SYNTHETIC weights").
    pub warning: Option<String>,
}

pub const WIDTH: u32 = 900;
pub const HEIGHT: u32 = 560;
const LEFT: i32 = 12;
/// Below the title and subtitle.
const CHART_TOP: u32 = 56;
const WARNING_H: u32 = 24;
const X_LABELS: usize = 10;
const Y_LABELS: usize = 8;
/// Rows of alarm labels stacked at the top of the plot before further labels are dropped.
const ALARM_ROWS: usize = 3;
const ALARM_ROW_PX: i32 = 16;
/// Alarm labels longer than this are cut (the full text is in the JSON and HTML report).
const ALARM_LABEL_CHARS: usize = 24;
/// Samples along the fitted curve (enough for a smooth line with a kink at the onset dose).
const CURVE_SAMPLES: usize = 400;

const POINT: RGBColor = RGBColor(31, 119, 180);
const CURVE: RGBColor = RGBColor(214, 39, 40);
const THRESHOLD: RGBColor = RGBColor(90, 90, 90);
const ALARM: RGBColor = RGBColor(230, 120, 0);
const WARNING: RGBColor = RGBColor(200, 0, 0);

/// Decimals that tell apart the axis ticks plotters will place on `lo..hi` (plotters' steps are
/// 1, 2 or 5 × 10ᵏ, so one significant digit of the step is enough).
pub(crate) fn tick_decimals(lo: f64, hi: f64, max_ticks: usize) -> usize {
    let ticks = RangedCoordf64::from(lo..hi).key_points(max_ticks);
    let step = ticks.windows(2).map(|w| (w[1] - w[0]).abs()).fold(f64::INFINITY, f64::min);
    if !step.is_finite() || step <= 0.0 {
        return 2;
    }
    (-step.log10().floor()).clamp(0.0, 8.0) as usize
}

/// A tick label: fixed decimals, and never "-0".
pub(crate) fn fmt_tick(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
        s.trim_start_matches('-').to_owned()
    } else {
        s
    }
}

/// A dose for annotations: whole e⁻/Å² when large, a few significant digits when small.
pub(crate) fn fmt_dose(d: f64) -> String {
    match d.abs() {
        a if a >= 100.0 => format!("{d:.0}"),
        a if a >= 10.0 => format!("{d:.1}"),
        _ => format!("{d:.2}"),
    }
}

/// Three significant digits without exponent for ordinary magnitudes (thresholds, signal values).
pub(crate) fn fmt_sig3(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let mag = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&mag) {
        return format!("{v:.2e}");
    }
    let decimals = (2 - mag).max(0) as usize;
    format!("{v:.decimals$}")
}

/// Cuts `s` to `max` characters with an ellipsis.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_owned() } else { s.chars().take(max - 1).chain(['…']).collect() }
}

/// The finite points only: a NaN would poison the axis ranges.
fn finite_points(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect()
}

/// x range: from 0 (dose accumulates from zero) to a little past the last dose or alarm.
fn x_range(points: &[(f64, f64)], alarms: &[(f64, String)]) -> (f64, f64) {
    let xs = points.iter().map(|p| p.0).chain(alarms.iter().map(|a| a.0)).filter(|x| x.is_finite());
    let (lo, hi) = xs.fold((0.0f64, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if hi > lo { (lo, hi + 0.04 * (hi - lo)) } else { (lo, lo + 1.0) }
}

/// y range over the points, the fitted curve and the threshold, padded; the top leaves room for alarm
/// labels. A non-negative signal keeps 0 as its floor rather than a padded negative value.
fn y_range(points: &[(f64, f64)], curve: &[(f64, f64)], threshold: Option<f64>, alarms: bool) -> (f64, f64) {
    let ys = points.iter().chain(curve).map(|p| p.1).chain(threshold).filter(|y| y.is_finite());
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if lo > hi {
        return (0.0, 1.0);
    }
    if hi == lo {
        // One value (a lone point or just the threshold): show it with 0 below it.
        return match lo {
            0.0 => (0.0, 1.0),
            v if v > 0.0 => (0.0, 1.5 * v),
            v => (1.5 * v, 0.0),
        };
    }
    let span = hi - lo;
    let top = if alarms { 0.22 } else { 0.08 };
    let bottom = lo - 0.08 * span;
    (if lo >= 0.0 { bottom.max(0.0) } else { bottom }, hi + top * span)
}

/// The fitted curve sampled over the x range.
fn curve_points(fit: Option<&Fit>, (x0, x1): (f64, f64)) -> Vec<(f64, f64)> {
    let Some(fit) = fit else { return Vec::new() };
    (0..=CURVE_SAMPLES)
        .map(|i| x0 + (x1 - x0) * i as f64 / CURVE_SAMPLES as f64)
        .map(|d| (d, fit.predict(d)))
        .filter(|(_, s)| s.is_finite())
        .collect()
}

/// Legend text of the fitted curve: the critical dose only when the data determine it.
fn fit_label(fit: &Fit) -> String {
    let onset = format!("D₀ = {} e⁻/Å²", fmt_dose(fit.onset_dose_e_per_a2));
    match fit.critical_dose_sigma_e_per_a2 {
        Some(sigma) if fit.determined() => {
            format!("fit: Dc = {} ± {} e⁻/Å², {onset}", fmt_dose(fit.critical_dose_e_per_a2), fmt_dose(sigma))
        }
        _ => format!("fit ({onset}): critical dose not determined"),
    }
}

pub fn render(p: &DosePlot<'_>) -> Result<Canvas, ReportError> {
    let points = finite_points(p.points);
    let alarms: Vec<&(f64, String)> = p.alarms.iter().filter(|a| a.0.is_finite()).collect();
    let xr = x_range(&points, p.alarms);
    let curve = curve_points(p.fit.as_ref(), xr);
    let threshold = p.threshold.filter(|t| t.is_finite());
    let yr = y_range(&points, &curve, threshold, !alarms.is_empty());
    let mut c = Canvas::new(WIDTH, HEIGHT, [255, 255, 255]);
    c.draw(|root| {
        canvas::text(root, &p.title, LEFT, 8, 18.0, BLACK)?;
        canvas::text(root, &p.subtitle, LEFT, 32, 14.0, RGBColor(60, 60, 60))?;
        let bottom = if p.warning.is_some() { WARNING_H } else { 4 };
        let chart_area = root.margin(CHART_TOP, bottom, 4, 24);
        let mut chart = ChartBuilder::on(&chart_area)
            .margin_top(4)
            .x_label_area_size(52)
            .y_label_area_size(84)
            .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
            .map_err(draw_err)?;
        let (xd, yd) = (tick_decimals(xr.0, xr.1, X_LABELS), tick_decimals(yr.0, yr.1, Y_LABELS));
        chart
            .configure_mesh()
            .x_labels(X_LABELS)
            .y_labels(Y_LABELS)
            .x_label_formatter(&|v| fmt_tick(*v, xd))
            .y_label_formatter(&|v| fmt_tick(*v, yd))
            .x_desc("cumulative dose (e⁻/Å²)")
            .y_desc(p.y_label.as_str())
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .bold_line_style(RGBColor(220, 220, 220))
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(draw_err)?;
        draw_markers(&mut chart, threshold, &alarms, xr, yr)?;
        draw_data(&mut chart, &points, &curve, p.fit.as_ref())?;
        let has_legend = !points.is_empty() || p.fit.is_some() || threshold.is_some() || !alarms.is_empty();
        if has_legend {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .margin(10)
                .legend_area_size(22)
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.88))
                .border_style(RGBColor(160, 160, 160))
                .draw()
                .map_err(draw_err)?;
        }
        let plot = chart.plotting_area().get_pixel_range();
        if points.is_empty() {
            let note = "no analysed frames";
            let (w, _) = canvas::text_size(root, note, 16.0);
            let cx = (plot.0.start + plot.0.end) / 2 - w as i32 / 2;
            canvas::text(root, note, cx, (plot.1.start + plot.1.end) / 2 - 24, 16.0, RGBColor(90, 90, 90))?;
        }
        let mut label_at: Vec<(i32, &str)> =
            alarms.iter().map(|(d, s)| (chart.backend_coord(&(*d, yr.1)).0, s.as_str())).collect();
        // Left to right, so the row packing below sees each label after its left neighbours.
        label_at.sort_by_key(|a| a.0);
        alarm_labels(root, &label_at, plot.1.start + 4, plot.0.end)?;
        if let Some(w) = &p.warning {
            canvas::text(root, w, LEFT, (HEIGHT - WARNING_H + 4) as i32, 14.0, WARNING)?;
        }
        Ok(())
    })?;
    Ok(c)
}

type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The threshold as a dashed line across the plot and each alarm as a thin vertical line.
fn draw_markers<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    threshold: Option<f64>,
    alarms: &[&(f64, String)],
    xr: (f64, f64),
    yr: (f64, f64),
) -> Result<(), String> {
    if let Some(t) = threshold {
        chart
            .draw_series(DashedLineSeries::new(vec![(xr.0, t), (xr.1, t)], 8, 6, THRESHOLD.stroke_width(2)))
            .map_err(draw_err)?
            .label(format!("threshold {}", fmt_sig3(t)))
            .legend(|(x, y)| {
                // Two dashes; composed elements take coordinates relative to the anchor.
                let dash = |x0: i32| PathElement::new(vec![(x0, 0), (x0 + 5, 0)], THRESHOLD.stroke_width(2));
                EmptyElement::at((x, y)) + dash(-2) + dash(7)
            });
    }
    for (i, (dose, _)) in alarms.iter().enumerate() {
        let line = chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(*dose, yr.0), (*dose, yr.1)],
                ALARM.mix(0.8).stroke_width(1),
            )))
            .map_err(draw_err)?;
        if i == 0 {
            line.label("alarm").legend(|(x, y)| PathElement::new(vec![(x + 6, y - 7), (x + 6, y + 7)], ALARM));
        }
    }
    Ok(())
}

/// The fitted curve under the points, so every point stays visible.
fn draw_data<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    points: &[(f64, f64)],
    curve: &[(f64, f64)],
    fit: Option<&Fit>,
) -> Result<(), String> {
    if let Some(fit) = fit {
        chart
            .draw_series(LineSeries::new(curve.iter().copied(), CURVE.stroke_width(2)))
            .map_err(draw_err)?
            .label(fit_label(fit))
            .legend(|(x, y)| PathElement::new(vec![(x - 2, y), (x + 14, y)], CURVE.stroke_width(2)));
    }
    if !points.is_empty() {
        chart
            .draw_series(points.iter().map(|&xy| Circle::new(xy, 3, POINT.filled())))
            .map_err(draw_err)?
            .label(format!("analysed frames ({})", points.len()))
            .legend(|(x, y)| Circle::new((x + 6, y), 3, POINT.filled()));
    }
    Ok(())
}

/// Alarm labels at the top of the plot, right of their markers, stacked into a few rows so close
/// alarms do not overprint each other; labels that fit in no row are dropped and counted.
fn alarm_labels(root: &Area<'_>, at: &[(i32, &str)], top: i32, right: i32) -> Result<(), String> {
    let mut row_end = [i32::MIN; ALARM_ROWS];
    let mut dropped = 0;
    for &(x, label) in at {
        let label = shorten(label, ALARM_LABEL_CHARS);
        let w = canvas::text_size(root, &label, 12.0).0 as i32;
        // Right of the marker unless that runs off the plot.
        let x0 = if x + 4 + w <= right { x + 4 } else { x - 4 - w };
        match row_end.iter().position(|&end| x0 > end + 6) {
            Some(row) => {
                row_end[row] = x0 + w;
                boxed_text(root, &label, x0, top + row as i32 * ALARM_ROW_PX + 4, w)?;
            }
            None => dropped += 1,
        }
    }
    if dropped > 0 {
        let note = format!("+{dropped} more alarm{}", if dropped == 1 { "" } else { "s" });
        let w = canvas::text_size(root, &note, 12.0).0 as i32;
        boxed_text(root, &note, right - w - 4, top + ALARM_ROWS as i32 * ALARM_ROW_PX + 4, w)?;
    }
    Ok(())
}

/// An alarm label on a white box, so the marker lines of neighbouring alarms do not cross its text.
fn boxed_text(root: &Area<'_>, s: &str, x: i32, y: i32, w: i32) -> Result<(), String> {
    // Glyphs of a 12 px label reach from about 3 px above `y` to 11 px below it.
    let bg = [(x - 2, y - 4), (x + w + 2, y + 12)];
    root.draw(&Rectangle::new(bg, WHITE.mix(0.9).filled())).map_err(draw_err)?;
    canvas::text(root, s, x, y, 12.0, ALARM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(c: &Canvas) -> image::DynamicImage {
        let bytes = c.png_bytes(std::path::Path::new("test.png")).expect("encode");
        image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).expect("decode")
    }

    fn fit() -> Fit {
        Fit {
            critical_dose_e_per_a2: 1500.0,
            onset_dose_e_per_a2: 400.0,
            critical_dose_sigma_e_per_a2: Some(120.0),
            saturation: 0.45,
            noise_floor: 0.1,
            rms_residual: 0.01,
            points: 50,
        }
    }

    fn plot<'a>(points: &'a [(f64, f64)], alarms: &'a [(f64, String)]) -> DosePlot<'a> {
        DosePlot {
            title: "damage vs dose".into(),
            subtitle: "series.h5".into(),
            points,
            y_label: "mean 1 − SSIM".into(),
            fit: Some(fit()),
            threshold: Some(0.3),
            alarms,
            warning: Some("SYNTHETIC weights".into()),
        }
    }

    #[test]
    fn plot_renders_to_png_of_expected_size() {
        let points: Vec<(f64, f64)> = (0..50).map(|i| i as f64 * 100.0).map(|d| (d, fit().predict(d))).collect();
        let alarms = vec![(2000.0, "mean above threshold".to_string())];
        let img = decode(&render(&plot(&points, &alarms)).expect("render"));
        assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
    }

    #[test]
    fn plot_with_no_points_or_non_finite_points_does_not_panic() {
        let mut p = plot(&[], &[]);
        p.fit = None;
        p.threshold = None;
        let c = render(&p).expect("empty plot");
        assert_eq!((c.width, c.height), (WIDTH, HEIGHT));
        let bad = [(f64::NAN, 0.2), (100.0, f64::INFINITY), (200.0, 0.3)];
        let alarms = vec![(f64::NAN, "nan".to_string())];
        let mut p = plot(&bad, &alarms);
        p.threshold = Some(f64::NAN);
        assert!(render(&p).is_ok());
    }

    #[test]
    fn tick_labels_have_few_digits() {
        assert_eq!(tick_decimals(0.0, 5200.0, 10), 0);
        assert_eq!(tick_decimals(0.0, 0.55, 8), 1);
        assert_eq!(tick_decimals(0.0, 0.33, 8), 2);
        assert_eq!(fmt_tick(0.1 + 0.2, 2), "0.30");
        assert_eq!(fmt_tick(-0.0001, 2), "0.00");
        assert_eq!(fmt_sig3(0.3), "0.300");
        assert_eq!(fmt_dose(1523.7), "1524");
    }

    #[test]
    fn fit_label_says_when_critical_dose_is_undetermined() {
        assert!(fit_label(&fit()).contains("Dc = 1500 ± 120"));
        let loose = Fit { critical_dose_sigma_e_per_a2: Some(3000.0), ..fit() };
        assert!(fit_label(&loose).contains("critical dose not determined"));
        let none = Fit { critical_dose_sigma_e_per_a2: None, ..fit() };
        assert!(!fit_label(&none).contains("Dc ="));
    }
}
