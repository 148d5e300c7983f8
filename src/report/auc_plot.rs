//! Detection quality over a series: AUC of the per-patch dissimilarity against the true damaged
//! patches, per frame and per cumulative dose, one line per setting.

use plotters::prelude::*;

use super::ReportError;
use super::canvas::{self, Canvas, FONT, draw_err};
use super::dose_plot::{fmt_tick, tick_decimals};

pub struct AucLine {
    pub label: String,
    /// (frame, cumulative dose in e⁻/Å² if known, AUC) of every frame where the AUC is defined.
    pub points: Vec<(f64, Option<f64>, f64)>,
}

pub struct AucPlot<'a> {
    pub title: String,
    pub subtitle: String,
    pub lines: &'a [AucLine],
    /// The true onset frame, drawn as a vertical marker.
    pub onset_frame: Option<usize>,
    pub warning: Option<String>,
}

const W: u32 = 1300;
const H: u32 = 560;
const PALETTE: [RGBColor; 10] = canvas::TAB10;

pub fn render(p: &AucPlot<'_>) -> Result<Canvas, ReportError> {
    let max_frame = p.lines.iter().flat_map(|l| l.points.iter().map(|q| q.0)).fold(1.0, f64::max);
    let max_dose = p.lines.iter().flat_map(|l| l.points.iter().filter_map(|q| q.1)).fold(0.0, f64::max);
    let mut c = Canvas::new(W, H, [255, 255, 255]);
    c.draw(|root| {
        canvas::text(root, &p.title, 12, 8, 18.0, BLACK)?;
        canvas::text(root, &p.subtitle, 12, 32, 14.0, RGBColor(60, 60, 60))?;
        let bottom = if p.warning.is_some() { 24 } else { 4 };
        let body = root.margin(56, bottom, 4, 8);
        let (left, right) = body.split_horizontally((W / 2) as i32);
        for (area, by_dose) in [(left, false), (right, true)] {
            let x1 = if by_dose { max_dose.max(1.0) * 1.02 } else { max_frame + 0.5 };
            let x0 = if by_dose { 0.0 } else { 0.5 };
            let mut chart = ChartBuilder::on(&area)
                .margin(6)
                .x_label_area_size(48)
                .y_label_area_size(60)
                .build_cartesian_2d(x0..x1, 0.0..1.02)
                .map_err(draw_err)?;
            let xd = tick_decimals(x0, x1, 10);
            chart
                .configure_mesh()
                .x_labels(10)
                .y_labels(11)
                .x_label_formatter(&|v| fmt_tick(*v, xd))
                .y_label_formatter(&|v| format!("{v:.1}"))
                .x_desc(if by_dose { "cumulative dose (e⁻/Å²)" } else { "frame" })
                .y_desc("AUC, damaged vs intact patches")
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 15))
                .bold_line_style(RGBColor(220, 220, 220))
                .light_line_style(RGBColor(245, 245, 245))
                .draw()
                .map_err(draw_err)?;
            // Chance level.
            chart
                .draw_series(DashedLineSeries::new(vec![(x0, 0.5), (x1, 0.5)], 6, 4, RGBColor(120, 120, 120).into()))
                .map_err(draw_err)?;
            if let Some(o) = p.onset_frame.filter(|_| !by_dose) {
                let x = o as f64;
                chart
                    .draw_series(LineSeries::new(vec![(x, 0.0), (x, 1.02)], RGBColor(230, 120, 0).stroke_width(1)))
                    .map_err(draw_err)?
                    .label("true onset")
                    .legend(|(x, y)| PathElement::new(vec![(x - 2, y), (x + 14, y)], RGBColor(230, 120, 0)));
            }
            for (k, line) in p.lines.iter().enumerate() {
                let colour = PALETTE[k % PALETTE.len()];
                let style = if k < PALETTE.len() { colour.stroke_width(2) } else { colour.stroke_width(1) };
                let pts: Vec<(f64, f64)> = line
                    .points
                    .iter()
                    .filter_map(|&(f, d, a)| if by_dose { d.map(|d| (d, a)) } else { Some((f, a)) })
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), style))
                    .map_err(draw_err)?
                    .label(line.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x - 2, y), (x + 14, y)], style));
                chart.draw_series(pts.iter().map(|&xy| Circle::new(xy, 2, colour.filled()))).map_err(draw_err)?;
            }
            if !by_dose {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::LowerRight)
                    .margin(8)
                    .label_font((FONT, 12))
                    .background_style(WHITE.mix(0.88))
                    .border_style(RGBColor(160, 160, 160))
                    .draw()
                    .map_err(draw_err)?;
            }
        }
        if let Some(w) = &p.warning {
            canvas::text(root, w, 12, (H - 20) as i32, 14.0, RGBColor(200, 0, 0))?;
        }
        Ok(())
    })?;
    Ok(c)
}
