//! Damage versus cumulative dose: every analysed frame as a point, the damaged area beside it (right
//! axis, %), the fitted damage curve through the points with its critical dose, the alarm threshold
//! as a dashed line and alarms as vertical markers. Without a known dose the x axis is the frame
//! number, and says so.

use plotters::chart::DualCoordChartContext;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::ReportError;
use super::canvas::{self, Area, Canvas, FONT, draw_err};
use super::format::{self, sig};
pub(crate) use super::format::{fmt_tick, tick_decimals};
use crate::alarms::forecast::Fit;

/// What the x axis counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XAxis {
    /// Cumulative dose in e⁻/Å².
    Dose,
    /// Frame number: the dose is unknown.
    Frame,
}

impl XAxis {
    /// The dose axis when every frame's cumulative dose is known (and there is a frame), else the
    /// frame number: a series whose dose became unknown part-way cannot be drawn against dose.
    pub fn of(doses: impl IntoIterator<Item = f64>) -> Self {
        let mut any = false;
        for d in doses {
            if !d.is_finite() {
                return Self::Frame;
            }
            any = true;
        }
        if any { Self::Dose } else { Self::Frame }
    }

    /// The x value of a frame: its cumulative dose, or its number.
    pub fn x(self, frame: u64, cumulative_dose: f64) -> f64 {
        match self {
            Self::Dose => cumulative_dose,
            Self::Frame => frame as f64,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Dose => "cumulative dose (e⁻/Å²)",
            Self::Frame => "frame (dose unknown)",
        }
    }
}

pub struct DosePlot<'a> {
    pub title: String,
    pub subtitle: String,
    pub x_axis: XAxis,
    /// (x, value) of every analysed frame: x is the cumulative dose in e⁻/Å², or the frame number.
    pub points: &'a [(f64, f64)],
    /// (x, damaged-area fraction 0–1) of every judged frame, drawn against the right axis in %.
    pub area: &'a [(f64, f64)],
    /// y-axis label, e.g. "mean 1 − SSIM".
    pub y_label: String,
    /// Fitted damage curve drawn through the points; its critical dose is quoted only when
    /// `fit.determined()`.
    pub fit: Option<Fit>,
    /// Alarm threshold, drawn as a dashed horizontal line.
    pub threshold: Option<f64>,
    /// Alarms: (x as for `points`, label), drawn as vertical markers with short labels.
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
const AREA: RGBColor = RGBColor(44, 160, 44);
/// Damaged-area axis ticks.
const AREA_LABELS: usize = 6;

/// A dose for annotations: 4 significant digits (the shared formatter).
pub(crate) fn fmt_dose(d: f64) -> String {
    format::dose(d)
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

/// Top of the damaged-area axis in %: a round value above the largest area, with room for the alarm
/// labels at the top as the left axis has; 100 % at most unless the data need more.
fn area_top(area: &[(f64, f64)], alarms: bool) -> f64 {
    let max = area.iter().map(|p| 100.0 * p.1).fold(0.0f64, f64::max);
    let padded = max.max(1.0) * if alarms { 1.3 } else { 1.1 };
    let top = format::nice_top(padded, AREA_LABELS - 1);
    if top > 100.0 && padded <= 100.0 { 100.0 } else { top }
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
    let area = finite_points(p.area);
    let alarms: Vec<&(f64, String)> = p.alarms.iter().filter(|a| a.0.is_finite()).collect();
    let xr = x_range(&points, p.alarms);
    // A fit is a curve over dose: it has no place on a frame axis.
    let fit = p.fit.filter(|_| p.x_axis == XAxis::Dose);
    let curve = curve_points(fit.as_ref(), xr);
    let area_top = area_top(&area, !alarms.is_empty());
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
            .right_y_label_area_size(if area.is_empty() { 0 } else { 70 })
            .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
            .map_err(draw_err)?
            .set_secondary_coord(xr.0..xr.1, 0.0..area_top);
        let (xd, yd) = (tick_decimals(xr.0, xr.1, X_LABELS), tick_decimals(yr.0, yr.1, Y_LABELS));
        // Frame numbers are whole: no tick between two frames.
        let whole = p.x_axis == XAxis::Frame;
        let x_fmt = |v: &f64| if whole && v.fract() != 0.0 { String::new() } else { fmt_tick(*v, xd) };
        chart
            .configure_mesh()
            .x_labels(X_LABELS)
            .y_labels(Y_LABELS)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v| fmt_tick(*v, yd))
            .x_desc(p.x_axis.label())
            .y_desc(p.y_label.as_str())
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .bold_line_style(RGBColor(220, 220, 220))
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(draw_err)?;
        if !area.is_empty() {
            let step = format::nice_step(area_top, AREA_LABELS - 1);
            chart
                .configure_secondary_axes()
                .y_labels(AREA_LABELS)
                .y_label_formatter(&|v| format::tick_label(*v, step))
                .y_desc("damaged area (%)")
                .label_style((FONT, 14).into_font().color(&AREA))
                .axis_desc_style((FONT, 16).into_font().color(&AREA))
                .draw()
                .map_err(draw_err)?;
        }
        draw_markers(&mut chart, threshold, &alarms, xr, yr)?;
        draw_area(&mut chart, &area)?;
        draw_data(&mut chart, &points, &curve, fit.as_ref())?;
        let has_legend = !points.is_empty() || fit.is_some() || threshold.is_some() || !alarms.is_empty();
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

type Xy = Cartesian2d<RangedCoordf64, RangedCoordf64>;
type Chart<'a, 'b> = DualCoordChartContext<'a, canvas::Backend<'b>, Xy, Xy>;

/// The damaged area (in %, right axis) as a line with small squares, under the mean's points.
fn draw_area<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, area: &[(f64, f64)]) -> Result<(), String> {
    if area.is_empty() {
        return Ok(());
    }
    let pct: Vec<(f64, f64)> = area.iter().map(|&(x, a)| (x, 100.0 * a)).collect();
    chart
        .draw_secondary_series(LineSeries::new(pct.iter().copied(), AREA.stroke_width(2)))
        .map_err(draw_err)?
        .label("damaged area, % (right axis)")
        .legend(|(x, y)| PathElement::new(vec![(x - 2, y), (x + 14, y)], AREA.stroke_width(2)));
    chart
        .draw_secondary_series(
            pct.iter().map(|&xy| EmptyElement::at(xy) + Rectangle::new([(-2, -2), (2, 2)], AREA.filled())),
        )
        .map_err(draw_err)?;
    Ok(())
}

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
            .label(format!("threshold {}", sig(t, 3)))
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
            .label(format!("mean, analysed frames ({})", points.len()))
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
            x_axis: XAxis::Dose,
            points,
            area: &[],
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
        assert_eq!(sig(0.3, 3), "0.3");
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
