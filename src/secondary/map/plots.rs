//! Pictures of the map: the plane with the predicted target as background and the compounds on it
//! (the paper's Figs. 4 and 7), the W trade-off (Fig. 2), and reconstruction diagnostics (Fig. 3).

use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use crate::report::ReportError;
use crate::report::canvas::{self, Area, Canvas, FONT, draw_err};

fn viridis(v: f64, lo: f64, hi: f64) -> RGBColor {
    ViridisRGB::get_color_normalized(v.clamp(lo, hi), lo, hi)
}

pub fn family_color(f: &str) -> Option<RGBColor> {
    Some(match f {
        "garnet" => RGBColor(228, 26, 28),
        "NASICON" => RGBColor(255, 127, 0),
        "argyrodite" => RGBColor(152, 78, 163),
        "LGPS" => RGBColor(0, 0, 0),
        "thio-LISICON" => RGBColor(166, 86, 40),
        "LISICON" => RGBColor(247, 129, 191),
        "perovskite" => RGBColor(55, 126, 184),
        _ => return None,
    })
}

/// One compound on the map.
pub struct MapPoint<'a> {
    pub x_comp: f64,
    /// NaN: no structure (drawn on the composition strip).
    pub x_struct: f64,
    pub target: f64,
    pub family: &'a str,
    pub test: bool,
}

pub struct MapPlot<'a> {
    pub title: String,
    pub subtitle: String,
    pub points: &'a [MapPoint<'a>],
    /// Predicted target on a grid: x centres, y centres, values[y][x].
    pub grid_x: &'a [f64],
    pub grid_y: &'a [f64],
    pub grid: &'a ndarray::Array2<f64>,
    pub target_label: String,
}

const MAP_W: u32 = 1100;
const MAP_H: u32 = 860;

fn range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v.filter(|x| x.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    if !lo.is_finite() {
        (0.0, 1.0)
    } else if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    }
}

pub fn render_map(p: &MapPlot<'_>) -> Result<Canvas, ReportError> {
    let gx = range(p.grid_x.iter().copied().chain(p.points.iter().map(|q| q.x_comp)));
    let gy = range(p.grid_y.iter().copied().chain(p.points.iter().map(|q| q.x_struct)));
    let half = |a: &[f64]| if a.len() > 1 { (a[1] - a[0]) / 2.0 } else { 0.5 };
    let (hx, hy) = (half(p.grid_x), half(p.grid_y));
    let xr = (gx.0 - hx, gx.1 + hx);
    let yr = (gy.0 - hy, gy.1 + hy);
    // Colours span the measured targets; the head's extrapolation far from data is clamped to them.
    let tr = range(p.points.iter().map(|q| q.target));
    let mut c = Canvas::new(MAP_W, MAP_H, [255, 255, 255]);
    c.draw(|root| {
        canvas::text(root, &p.title, 12, 8, 18.0, BLACK)?;
        canvas::text(root, &p.subtitle, 12, 32, 13.0, RGBColor(70, 70, 70))?;
        let body = root.margin(56, 6, 4, 4);
        let (left, right) = body.split_horizontally(MAP_W - 150);
        let (top, strip) = left.split_vertically(MAP_H as i32 - 56 - 6 - 110);
        let mut chart = ChartBuilder::on(&top)
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("x_comp (encoded composition, no units)")
            .y_desc("x_struct (encoded structure, no units)")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(draw_err)?;
        // Background: the head's prediction over the plane, lightened so points stay readable.
        let cells = p.grid.indexed_iter().map(|((r, cix), &v)| {
            let (x, y) = (p.grid_x[cix], p.grid_y[r]);
            let col = viridis(v, tr.0, tr.1);
            let light = RGBColor(
                ((col.0 as f64) * 0.55 + 255.0 * 0.45) as u8,
                ((col.1 as f64) * 0.55 + 255.0 * 0.45) as u8,
                ((col.2 as f64) * 0.55 + 255.0 * 0.45) as u8,
            );
            Rectangle::new([(x - hx, y - hy), (x + hx, y + hy)], light.filled())
        });
        chart.draw_series(cells).map_err(draw_err)?;
        let placed: Vec<&MapPoint<'_>> = p.points.iter().filter(|q| q.x_struct.is_finite()).collect();
        for q in placed.iter().filter(|q| family_color(q.family).is_some()) {
            let fc = family_color(q.family).unwrap_or(BLACK);
            chart.draw_series(std::iter::once(Circle::new((q.x_comp, q.x_struct), 8, fc.stroke_width(2)))).map_err(draw_err)?;
        }
        chart
            .draw_series(placed.iter().map(|q| {
                let col = viridis(q.target, tr.0, tr.1);
                EmptyElement::at((q.x_comp, q.x_struct))
                    + Circle::new((0, 0), 4, col.filled())
                    + Circle::new((0, 0), 4, if q.test { RED.stroke_width(1) } else { BLACK.mix(0.6).stroke_width(1) })
            }))
            .map_err(draw_err)?;
        // Compounds without a CIF: composition axis only.
        let mut sc = ChartBuilder::on(&strip)
            .margin_left(8)
            .margin_right(8)
            .margin_top(4)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .caption("no CIF: placed on the composition axis only (x_comp), coloured by measured target", (FONT, 13))
            .build_cartesian_2d(xr.0..xr.1, 0.0..1.0)
            .map_err(draw_err)?;
        sc.configure_mesh().disable_mesh().y_labels(0).label_style((FONT, 12)).draw().map_err(draw_err)?;
        let bare: Vec<&MapPoint<'_>> = p.points.iter().filter(|q| !q.x_struct.is_finite()).collect();
        sc.draw_series(bare.iter().map(|q| {
            let y = 0.15 + 0.7 * ((q.target - tr.0) / (tr.1 - tr.0)).clamp(0.0, 1.0);
            Circle::new((q.x_comp, y), 3, viridis(q.target, tr.0, tr.1).filled())
        }))
        .map_err(draw_err)?;
        colour_bar(&right, tr, &p.target_label)?;
        // Family legend.
        let mut y = 360;
        canvas::text(&right, "families (ring):", 6, y, 13.0, BLACK)?;
        for f in ["garnet", "NASICON", "perovskite", "argyrodite", "LGPS", "thio-LISICON", "LISICON"] {
            y += 20;
            let col = family_color(f).unwrap_or(BLACK);
            right.draw(&Circle::new((16, y + 7), 7, col.stroke_width(2))).map_err(draw_err)?;
            canvas::text(&right, f, 30, y, 13.0, BLACK)?;
        }
        y += 28;
        right.draw(&Circle::new((16, y + 7), 4, RED.stroke_width(1))).map_err(draw_err)?;
        canvas::text(&right, "test compound", 30, y, 13.0, BLACK)?;
        Ok(())
    })?;
    Ok(c)
}

fn colour_bar(area: &Area<'_>, (lo, hi): (f64, f64), label: &str) -> Result<(), String> {
    canvas::text(area, label, 6, 8, 13.0, BLACK)?;
    let bar = area.margin(34, 0, 6, 0);
    let (bar, _) = bar.split_vertically(300);
    let mut ch = ChartBuilder::on(&bar).y_label_area_size(0).x_label_area_size(0).right_y_label_area_size(60).build_cartesian_2d(0.0..1.0, lo..hi).map_err(draw_err)?;
    ch.configure_mesh().disable_mesh().disable_x_axis().y_labels(8).label_style((FONT, 12)).draw().map_err(draw_err)?;
    let steps = 120;
    ch.draw_series((0..steps).map(|i| {
        let a = lo + (hi - lo) * i as f64 / steps as f64;
        let b = lo + (hi - lo) * (i + 1) as f64 / steps as f64;
        Rectangle::new([(0.0, a), (1.0, b)], viridis((a + b) / 2.0, lo, hi).filled())
    }))
    .map_err(draw_err)?;
    Ok(())
}

/// One row of the trade-off: W and test-set R² per block (NaN allowed).
pub struct TradeoffRow {
    pub w: f64,
    pub r2_comp: f64,
    pub r2_struct: f64,
    pub r2_target: f64,
}

pub fn render_tradeoff(rows: &[TradeoffRow], ridge_r2: Option<f64>, title: &str) -> Result<Canvas, ReportError> {
    let (w, h) = (1200u32, 440u32);
    let mut c = Canvas::new(w, h, [255, 255, 255]);
    let labels: Vec<String> = rows.iter().map(|r| format!("{}", r.w)).collect();
    c.draw(|root| {
        canvas::text(root, title, 12, 8, 17.0, BLACK)?;
        let body = root.margin(40, 4, 4, 4);
        let panels = body.split_evenly((1, 3));
        type Get = fn(&TradeoffRow) -> f64;
        let series: [(&str, Get); 3] = [
            ("composition reconstruction R²", |r| r.r2_comp),
            ("structure reconstruction R²", |r| r.r2_struct),
            ("target R² (log10 σ)", |r| r.r2_target),
        ];
        for (k, (panel, (name, get))) in panels.iter().zip(series).enumerate() {
            let vals: Vec<f64> = rows.iter().map(get).collect();
            let extra = if k == 2 { ridge_r2 } else { None };
            let (lo, hi) = range(vals.iter().copied().chain(extra).chain([0.0]));
            let pad = 0.08 * (hi - lo);
            let top = if hi <= 1.0 { (hi + pad).min(1.05) } else { hi + pad };
            let mut ch = ChartBuilder::on(panel)
                .margin(10)
                .caption(name, (FONT, 15))
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d(-0.5..(rows.len() as f64 - 0.5), (lo - pad)..top)
                .map_err(draw_err)?;
            let lab = labels.clone();
            let fmt = move |v: &f64| {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < lab.len() { lab[i as usize].clone() } else { String::new() }
            };
            ch.configure_mesh()
                .x_labels(rows.len() * 2 + 1)
                .x_label_formatter(&fmt)
                .x_desc("W (weight of the target loss)")
                .label_style((FONT, 12))
                .axis_desc_style((FONT, 13))
                .light_line_style(RGBColor(240, 240, 240))
                .draw()
                .map_err(draw_err)?;
            let pts: Vec<(f64, f64)> = vals.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| (i as f64, v)).collect();
            ch.draw_series(LineSeries::new(pts.clone(), RGBColor(31, 119, 180).stroke_width(2))).map_err(draw_err)?;
            ch.draw_series(pts.iter().map(|&p| Circle::new(p, 5, RGBColor(31, 119, 180).filled()))).map_err(draw_err)?;
            if let Some(rr) = extra.filter(|v| v.is_finite()) {
                ch.draw_series(DashedLineSeries::new(vec![(-0.5, rr), (rows.len() as f64 - 0.5, rr)], 8, 5, RGBColor(214, 39, 40).stroke_width(2)))
                    .map_err(draw_err)?
                    .label(format!("ridge baseline {rr:.3}"))
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RGBColor(214, 39, 40).stroke_width(2)));
                ch.configure_series_labels().position(SeriesLabelPosition::LowerRight).label_font((FONT, 12)).background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(draw_err)?;
            }
        }
        Ok(())
    })?;
    Ok(c)
}

/// Reconstruction and prediction on the test set: decoded vs input values (as a density, all values
/// of all test compounds flattened, like the paper's Fig. 3a,b) and predicted vs measured target.
pub struct Diagnostics<'a> {
    pub title: String,
    pub comp: (&'a [f64], &'a [f64]),
    pub structure: (&'a [f64], &'a [f64]),
    pub target: (&'a [f64], &'a [f64]),
    pub r2: (f64, f64, f64),
    pub target_label: String,
}

pub fn render_diagnostics(d: &Diagnostics<'_>) -> Result<Canvas, ReportError> {
    let (w, h) = (1200u32, 440u32);
    let mut c = Canvas::new(w, h, [255, 255, 255]);
    c.draw(|root| {
        canvas::text(root, &d.title, 12, 8, 17.0, BLACK)?;
        let body = root.margin(40, 4, 4, 4);
        let panels = body.split_evenly((1, 3));
        for (k, panel) in panels.iter().enumerate() {
            let (inp, out, name, r2, dens) = match k {
                0 => (d.comp.0, d.comp.1, "composition (scaled)", d.r2.0, true),
                1 => (d.structure.0, d.structure.1, "structure (scaled)", d.r2.1, true),
                _ => (d.target.0, d.target.1, d.target_label.as_str(), d.r2.2, false),
            };
            let (lo, hi) = if dens { (0.0, 1.0) } else { range(inp.iter().chain(out).copied()) };
            let pad = if dens { 0.0 } else { 0.05 * (hi - lo) };
            let (lo, hi) = (lo - pad, hi + pad);
            let mut ch = ChartBuilder::on(panel)
                .margin(10)
                .caption(format!("{name}: R² = {r2:.3}"), (FONT, 14))
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d(lo..hi, lo..hi)
                .map_err(draw_err)?;
            ch.configure_mesh()
                .x_desc(if dens { "input" } else { "measured" })
                .y_desc(if dens { "decoded" } else { "predicted" })
                .label_style((FONT, 12))
                .axis_desc_style((FONT, 13))
                .light_line_style(RGBColor(240, 240, 240))
                .draw()
                .map_err(draw_err)?;
            if dens {
                let cells = 80usize;
                let mut counts = vec![0u32; cells * cells];
                for (&a, &b) in inp.iter().zip(out) {
                    let i = ((a.clamp(0.0, 1.0)) * (cells as f64 - 1e-9)) as usize;
                    let j = ((b.clamp(0.0, 1.0)) * (cells as f64 - 1e-9)) as usize;
                    counts[j * cells + i] += 1;
                }
                let maxc = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
                let s = 1.0 / cells as f64;
                ch.draw_series(counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(idx, &cnt)| {
                    let (i, j) = (idx % cells, idx / cells);
                    let t = ((cnt as f64).ln_1p() / maxc.ln_1p()).clamp(0.05, 1.0);
                    let g = (230.0 * (1.0 - t)) as u8;
                    Rectangle::new([(i as f64 * s, j as f64 * s), ((i + 1) as f64 * s, (j + 1) as f64 * s)], RGBColor(g, g, (g as f64 * 0.6 + 90.0) as u8).filled())
                }))
                .map_err(draw_err)?;
            } else {
                ch.draw_series(inp.iter().zip(out).map(|(&a, &b)| Circle::new((a, b), 3, RGBColor(31, 119, 180).filled()))).map_err(draw_err)?;
            }
            ch.draw_series(LineSeries::new(vec![(lo, lo), (hi, hi)], RGBColor(214, 39, 40).stroke_width(1))).map_err(draw_err)?;
        }
        Ok(())
    })?;
    Ok(c)
}
