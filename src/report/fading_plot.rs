//! Bragg-spot fading against cumulative dose: the integrated spot intensity of every scan, relative
//! to the first scan, for the whole scan and each region, with the fitted I₀·exp(−D/Dc) + c curves
//! and their critical doses Dc ± σ in the legend (or "not determined" where the data do not fix it).

use plotters::prelude::*;

use super::ReportError;
use super::canvas::{self, Canvas, FONT, draw_err};
use super::format::{self, fmt_tick, tick_decimals};
use crate::fourd::FadingFit;

pub const WIDTH: u32 = 900;
pub const HEIGHT: u32 = 560;
const LEFT: i32 = 12;
const CHART_TOP: u32 = 56;
const WARNING_H: u32 = 24;
const CURVE_SAMPLES: usize = 200;

/// The whole scan first, then the regions.
const COLOURS: [RGBColor; 10] = canvas::TAB10;

/// One fading history: a name ("whole scan", "region 1 (rows 0–15, cols 0–15)"), the points and
/// the fit (`None`: not determined).
pub struct Track<'a> {
    pub name: String,
    /// (cumulative dose after the scan in e⁻/Å², integrated spot intensity in counts).
    pub points: &'a [(f64, f64)],
    pub fit: Option<&'a FadingFit>,
}

pub struct FadingPlot<'a> {
    pub title: String,
    pub subtitle: String,
    /// The whole scan first, then the regions.
    pub tracks: Vec<Track<'a>>,
    /// Shown in red at the bottom (e.g. "dose estimated from counts").
    pub warning: Option<String>,
}

/// Intensities relative to the first scan's (so every track starts at 1), the fit scaled the same.
fn relative(points: &[(f64, f64)]) -> Option<(f64, Vec<(f64, f64)>)> {
    let first = points.iter().find(|(d, i)| d.is_finite() && i.is_finite() && *i > 0.0)?.1;
    Some((first, points.iter().filter(|(d, i)| d.is_finite() && i.is_finite()).map(|&(d, i)| (d, i / first)).collect()))
}

fn legend(name: &str, fit: Option<&FadingFit>) -> String {
    match fit {
        Some(f) => {
            format!("{name}: Dc = {} ± {} e⁻/Å²", format::dose(f.dc_e_per_a2), format::dose(f.dc_sigma_e_per_a2))
        }
        None => format!("{name}: Dc not determined"),
    }
}

pub fn render(p: &FadingPlot<'_>) -> Result<Canvas, ReportError> {
    let rel: Vec<Option<(f64, Vec<(f64, f64)>)>> = p.tracks.iter().map(|t| relative(t.points)).collect();
    let x_hi = rel.iter().flatten().flat_map(|(_, v)| v.iter().map(|p| p.0)).fold(0.0f64, f64::max);
    let xr = (0.0, if x_hi > 0.0 { x_hi * 1.05 } else { 1.0 });
    let y_hi = rel.iter().flatten().flat_map(|(_, v)| v.iter().map(|p| p.1)).fold(1.0f64, f64::max);
    let yr = (0.0, (y_hi * 1.1).max(1.1));
    let mut c = Canvas::new(WIDTH, HEIGHT, [255, 255, 255]);
    c.draw(|root| {
        canvas::text(root, &p.title, LEFT, 8, 18.0, BLACK)?;
        canvas::text(root, &p.subtitle, LEFT, 32, 14.0, RGBColor(60, 60, 60))?;
        let bottom = if p.warning.is_some() { WARNING_H } else { 4 };
        let area = root.margin(CHART_TOP, bottom, 4, 24);
        let mut chart = ChartBuilder::on(&area)
            .margin_top(4)
            .x_label_area_size(52)
            .y_label_area_size(84)
            .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
            .map_err(draw_err)?;
        let (xd, yd) = (tick_decimals(xr.0, xr.1, 10), tick_decimals(yr.0, yr.1, 8));
        chart
            .configure_mesh()
            .x_labels(10)
            .y_labels(8)
            .x_label_formatter(&|v| fmt_tick(*v, xd))
            .y_label_formatter(&|v| fmt_tick(*v, yd))
            .x_desc("cumulative dose (e⁻/Å²)")
            .y_desc("Bragg spot intensity / first scan")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .bold_line_style(RGBColor(220, 220, 220))
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(draw_err)?;
        for (i, (t, r)) in p.tracks.iter().zip(&rel).enumerate() {
            let Some((first, pts)) = r else { continue };
            let colour = COLOURS[i % COLOURS.len()];
            let width = if i == 0 { 3 } else { 2 };
            if let Some(f) = t.fit {
                let curve: Vec<(f64, f64)> = (0..=CURVE_SAMPLES)
                    .map(|k| xr.1 * k as f64 / CURVE_SAMPLES as f64)
                    .map(|d| (d, (f.i0 * (-d / f.dc_e_per_a2).exp() + f.background) / first))
                    .filter(|p| p.1.is_finite())
                    .collect();
                chart.draw_series(LineSeries::new(curve, colour.stroke_width(width))).map_err(draw_err)?;
            }
            chart
                .draw_series(pts.iter().map(|&xy| Circle::new(xy, if i == 0 { 4 } else { 3 }, colour.filled())))
                .map_err(draw_err)?
                .label(legend(&t.name, t.fit))
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, colour.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(10)
            .legend_area_size(22)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.88))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(draw_err)?;
        if let Some(w) = &p.warning {
            canvas::text(root, w, LEFT, (HEIGHT - WARNING_H + 4) as i32, 14.0, RGBColor(200, 0, 0))?;
        }
        Ok(())
    })?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(dc: f64) -> FadingFit {
        FadingFit {
            i0: 900.0,
            dc_e_per_a2: dc,
            dc_sigma_e_per_a2: dc / 20.0,
            background: 100.0,
            fraction_lost: 0.5,
            points: 8,
        }
    }

    #[test]
    fn renders_tracks_with_and_without_a_fit() {
        let whole: Vec<(f64, f64)> =
            (0..8).map(|k| 40.0 * k as f64).map(|d| (d, 900.0 * (-d / 120.0).exp() + 100.0)).collect();
        let flat: Vec<(f64, f64)> = (0..8).map(|k| (40.0 * k as f64, 1000.0)).collect();
        let (f1, f2) = (fit(120.0), fit(60.0));
        let p = FadingPlot {
            title: "Bragg spot fading".into(),
            subtitle: "series 1".into(),
            tracks: vec![
                Track { name: "whole scan".into(), points: &whole, fit: Some(&f1) },
                Track { name: "region 1".into(), points: &whole, fit: Some(&f2) },
                Track { name: "region 2".into(), points: &flat, fit: None },
                Track { name: "empty".into(), points: &[], fit: None },
            ],
            warning: Some("test".into()),
        };
        let c = render(&p).expect("render");
        assert_eq!((c.width, c.height), (WIDTH, HEIGHT));
        assert!(legend("whole scan", Some(&f1)).contains("Dc = 120 ± 6"), "{}", legend("whole scan", Some(&f1)));
        assert!(legend("region 2", None).contains("not determined"));
    }

    #[test]
    fn relative_starts_at_one_and_skips_non_finite() {
        let (first, r) = relative(&[(0.0, 200.0), (10.0, f64::NAN), (20.0, 100.0)]).expect("points");
        assert_eq!(first, 200.0);
        assert_eq!(r, vec![(0.0, 1.0), (20.0, 0.5)]);
        assert!(relative(&[]).is_none());
    }
}
