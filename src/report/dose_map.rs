//! The critical-dose map: the reference frame in gray with every patch that ever exceeded the damage
//! threshold tinted by the cumulative dose at which it first did. Bright (yellow) = crossed early =
//! the most beam-sensitive areas; patches that never crossed stay untinted. Without a known dose, the
//! frame of the first crossing takes the dose's place. A scale bar in nm when the pixel size is known.

use plotters::prelude::*;

use super::ReportError;
use super::canvas::{self, Canvas};
use super::dose_plot::XAxis;
use super::format;
use super::overlay::viridis;
use crate::frame::Frame;
use crate::patches::PatchGrid;

/// First dose at which each patch's dissimilarity exceeds its threshold (`thresholds`, row-major;
/// NaN: never judged); `series` holds (cumulative dose, row-major per-patch dissimilarity with NaN
/// for patches not analysed) in acquisition order. `None`: never exceeded (or never analysed). A
/// frame with fewer patches than the first one only informs the patches it has.
pub fn first_crossings(series: &[(f64, &[f32])], thresholds: &[f32]) -> Vec<Option<f64>> {
    let n = series.iter().map(|(_, d)| d.len()).max().unwrap_or(0);
    let mut first = vec![None; n];
    for (dose, dissimilarity) in series {
        for ((slot, &v), &t) in first.iter_mut().zip(dissimilarity.iter()).zip(thresholds) {
            // NaN compares false, so a patch not analysed in this frame (or not judged) is skipped.
            if slot.is_none() && v > t {
                *slot = Some(*dose);
            }
        }
    }
    first
}

/// First crossings over a replayed series, as the map shows them: `frames` holds (frame number,
/// cumulative dose, per-patch dissimilarity) of every analysed frame in order; the calibration
/// frames (they set the thresholds, nobody judges them) are left out, as the analysis leaves them
/// out of its judgement. The value of a crossing is its dose, or its frame number when `axis` is
/// [`XAxis::Frame`] (dose unknown).
pub fn series_crossings(
    frames: &[(u64, f64, &[f32])],
    calibration: &[u64],
    thresholds: &[f32],
    axis: XAxis,
) -> Vec<Option<f64>> {
    let series: Vec<(f64, &[f32])> = frames
        .iter()
        .filter(|(index, ..)| !calibration.contains(index))
        .map(|&(index, dose, d)| (axis.x(index, dose), d))
        .filter(|(x, _)| x.is_finite())
        .collect();
    first_crossings(&series, thresholds)
}

pub struct DoseMap<'a> {
    pub reference: &'a Frame,
    pub grid: PatchGrid,
    /// Per patch, row-major (see [`first_crossings`]): the dose of the first crossing, or its frame
    /// number when `axis` is [`XAxis::Frame`].
    pub first_crossing_dose: &'a [Option<f64>],
    pub axis: XAxis,
    /// Size of one frame pixel in nm, for the scale bar; `None`: unknown (no bar, the legend says so).
    pub pixel_size_nm: Option<f64>,
    pub title: String,
    pub subtitle: String,
    /// Shown in red at the bottom (e.g. "SYNTHETIC weights").
    pub warning: Option<String>,
}

const TOP: u32 = 58;
const LEFT: u32 = 12;
/// Where the frame's top-left pixel is drawn on the canvas.
pub const IMAGE_ORIGIN: (u32, u32) = (LEFT, TOP);
const BAR_GAP: u32 = 22;
const BAR_W: u32 = 22;
/// Tick labels, the rotated bar label and the "early/late" notes right of the bar.
const RIGHT: u32 = 150;
/// Below the image: the legend line and the warning line.
const BOTTOM: u32 = 64;
/// Below the colour bar: its two-line note.
const BAR_BOTTOM: u32 = 44;
const ALPHA: f32 = 0.6;
/// Frames smaller than this are enlarged, larger than `MAX_SIDE` reduced (block mean), so the map is
/// readable and a report that embeds it stays a sensible size.
const MIN_SIDE: u32 = 560;
const MAX_SIDE: u32 = 1400;
/// The colour-bar label for each x axis.
fn bar_label(axis: XAxis) -> &'static str {
    match axis {
        XAxis::Dose => "dose at first crossing (e⁻/Å²)",
        XAxis::Frame => "frame of first crossing (dose unknown)",
    }
}

/// Reversed viridis over the colour-bar range: the lowest dose (most alarming) is the bright yellow end.
fn dose_colour(dose: f64, (lo, hi): (f64, f64)) -> [u8; 3] {
    viridis(1.0 - ((dose - lo) / (hi - lo)) as f32)
}

/// Display size as a ratio num/den of the frame size: an integer enlargement or reduction.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Scale {
    num: u32,
    den: u32,
}

impl Scale {
    fn for_frame(side: u32) -> Self {
        if side > MAX_SIDE {
            Self { num: 1, den: side.div_ceil(MAX_SIDE) }
        } else {
            Self { num: MIN_SIDE.div_ceil(side.max(1)).clamp(1, 8), den: 1 }
        }
    }
    /// Frame pixel → display pixel.
    fn to_display(self, v: u32) -> u32 {
        v * self.num / self.den
    }
    /// The frame pixels [start, end) shown by display pixel `d` (clipped to `len`).
    fn source(self, d: u32, len: u32) -> (u32, u32) {
        let start = (d * self.den / self.num).min(len - 1);
        (start, ((d + 1) * self.den / self.num).clamp(start + 1, len))
    }
}

/// Mean gray (0..255) of the valid frame pixels behind one display pixel; black where none is valid.
fn gray_at(frame: &Frame, (x0, x1): (u32, u32), (y0, y1): (u32, u32), (lo, gain): (f32, f32)) -> u8 {
    let w = frame.width();
    let (mut sum, mut n) = (0.0f32, 0u32);
    for y in y0..y1 {
        for x in x0..x1 {
            let i = y as usize * w + x as usize;
            if frame.is_valid(i) {
                sum += frame.pixels()[i];
                n += 1;
            }
        }
    }
    if n == 0 { 0 } else { ((sum / n as f32 - lo) * gain).clamp(0.0, 255.0) as u8 }
}

fn draw_frame(c: &mut Canvas, frame: &Frame, s: Scale) {
    let (fw, fh) = (frame.width() as u32, frame.height() as u32);
    let (lo, hi) = super::overlay::display_range(frame);
    let gain = 255.0 / (hi - lo);
    for y in 0..s.to_display(fh) {
        let ys = s.source(y, fh);
        for x in 0..s.to_display(fw) {
            let g = gray_at(frame, s.source(x, fw), ys, (lo, gain));
            c.put(LEFT + x, TOP + y, [g, g, g]);
        }
    }
}

/// Colour-bar range: from 0 when the earliest crossing is near the start, else from a round value
/// below it, up to a round value above the latest crossing.
fn bar_range(doses: &[Option<f64>], axis: XAxis) -> (f64, f64) {
    let finite = doses.iter().flatten().copied().filter(|d| d.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), d| (lo.min(d), hi.max(d)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let lo = if lo <= 0.5 * hi { lo.min(0.0) } else { lo };
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        return (lo - 0.5, hi + 0.5);
    }
    let step = bar_step((lo, hi), axis);
    ((lo / step + 1e-9).floor() * step, (hi / step - 1e-9).ceil() * step)
}

/// Colour-bar tick step: 1, 2 or 5 × 10ⁿ (whole frames when the bar counts frames).
fn bar_step((lo, hi): (f64, f64), axis: XAxis) -> f64 {
    let step = format::nice_step(hi - lo, BAR_STEPS);
    if axis == XAxis::Frame { step.max(1.0) } else { step }
}

/// Colour-bar ticks on round steps within the bar range.
pub fn bar_ticks(range: (f64, f64), axis: XAxis) -> Vec<f64> {
    let step = bar_step(range, axis);
    format::ticks(range.0, range.1, BAR_STEPS)
        .into_iter()
        .filter(|v| (v / step - (v / step).round()).abs() < 1e-6)
        .collect()
}

/// About this many colour-bar steps.
const BAR_STEPS: usize = 6;

/// Tints crossed patches and draws the patch grid (white, like the overlay).
fn draw_patches(c: &mut Canvas, m: &DoseMap<'_>, s: Scale, range: (f64, f64)) {
    let grid = m.grid;
    for p in 0..grid.len() {
        let (px, py) = grid.origin(p);
        let (x0, y0) = (s.to_display(px as u32), s.to_display(py as u32));
        let (x1, y1) = (s.to_display((px + grid.patch_px) as u32), s.to_display((py + grid.patch_px) as u32));
        let tint = m.first_crossing_dose.get(p).copied().flatten().filter(|d| d.is_finite());
        let colour = tint.map(|d| dose_colour(d, range));
        for y in y0..y1 {
            for x in x0..x1 {
                if x == x0 || y == y0 {
                    c.blend(LEFT + x, TOP + y, [255, 255, 255], 0.35);
                } else if let Some(col) = colour {
                    c.blend(LEFT + x, TOP + y, col, ALPHA);
                }
            }
        }
    }
}

/// Canvas width: the image and colour bar, or the title lines if wider (≈ 0.6 em per character).
fn canvas_width(m: &DoseMap<'_>, iw: u32) -> u32 {
    let text_w = [(&m.title, 18.0), (&m.subtitle, 14.0), (&m.warning.clone().unwrap_or_default(), 14.0)]
        .iter()
        .map(|(t, sz)| (t.chars().count() as f64 * sz * 0.6) as u32)
        .max()
        .unwrap_or(0);
    (LEFT + iw + BAR_GAP + BAR_W + RIGHT).max(LEFT + text_w + 12)
}

pub fn render(m: &DoseMap<'_>) -> Result<Canvas, ReportError> {
    let (fw, fh) = (m.reference.width() as u32, m.reference.height() as u32);
    let s = Scale::for_frame(fw.max(fh));
    let (iw, ih) = (s.to_display(fw), s.to_display(fh));
    // Tall enough that the rotated bar label clears the notes at the ends of the bar.
    let bh = ih.max(320);
    let height = TOP + (ih + BOTTOM).max(bh + BAR_BOTTOM);
    let mut c = Canvas::new(canvas_width(m, iw), height, [255, 255, 255]);
    draw_frame(&mut c, m.reference, s);
    let range = bar_range(m.first_crossing_dose, m.axis);
    draw_patches(&mut c, m, s, range);
    let (bx, by) = (LEFT + iw + BAR_GAP, TOP);
    // Colour bar: top = highest dose (dark), bottom = lowest dose (bright).
    for y in 0..bh {
        let dose = range.1 - (range.1 - range.0) * y as f64 / (bh - 1).max(1) as f64;
        let col = dose_colour(dose, range);
        for x in 0..BAR_W {
            c.put(bx + x, by + y, col);
        }
    }
    let crossed = m.first_crossing_dose.iter().take(m.grid.len()).flatten().filter(|d| d.is_finite()).count();
    let nm_per_px = m.pixel_size_nm.map(|nm| nm * s.den as f64 / s.num as f64);
    let scale_bar = canvas::scale_bar(&mut c, (LEFT, TOP, iw, ih), nm_per_px)?;
    let label = bar_label(m.axis);
    c.draw(|area| {
        let black = RGBColor(0, 0, 0);
        canvas::text(area, &m.title, LEFT as i32, 8, 18.0, black)?;
        canvas::text(area, &m.subtitle, LEFT as i32, 32, 14.0, RGBColor(60, 60, 60))?;
        let bar = [(bx as i32, by as i32), ((bx + BAR_W) as i32, (by + bh) as i32)];
        area.draw(&Rectangle::new(bar, black)).map_err(|e| e.to_string())?;
        let step = bar_step(range, m.axis);
        let mut label_w = 0;
        for v in bar_ticks(range, m.axis) {
            let y = by as i32 + ((range.1 - v) / (range.1 - range.0) * (bh - 1) as f64).round() as i32;
            let x = (bx + BAR_W) as i32;
            area.draw(&PathElement::new(vec![(x, y), (x + 5, y)], black)).map_err(|e| e.to_string())?;
            let label = format::tick_label(v, step);
            label_w = label_w.max(canvas::text_size(area, &label, 12.0).0 as i32);
            canvas::text(area, &label, x + 8, y - 7, 12.0, black)?;
        }
        // The bar label runs up along the bar, right of the tick labels.
        let label_x = (bx + BAR_W) as i32 + 8 + label_w + 10;
        let (lw, _) = canvas::text_size(area, label, 14.0);
        let style = (canvas::FONT, 14).into_font().transform(FontTransform::Rotate270).color(&black);
        let label_y = by as i32 + (bh as i32 + lw as i32) / 2;
        area.draw(&Text::new(label, (label_x, label_y), style)).map_err(|e| e.to_string())?;
        let notes_x = (bx as i32).min(label_x - 60);
        let gray = RGBColor(60, 60, 60);
        // Under the top tick label: above the bar it could run into a long subtitle.
        canvas::text(area, "(crossed late)", (bx + BAR_W) as i32 + 8, by as i32 + 10, 12.0, gray)?;
        canvas::text(area, "crossed early:", notes_x, (by + bh) as i32 + 6, 12.0, gray)?;
        canvas::text(area, "most beam-sensitive", notes_x, (by + bh) as i32 + 20, 12.0, gray)?;
        let below = (TOP + ih) as i32;
        legend(area, crossed, m.grid.len(), below + 8)?;
        if scale_bar.is_none() {
            let note = if m.pixel_size_nm.is_some() {
                "image too small for a scale bar"
            } else {
                "pixel size unknown: no scale bar"
            };
            canvas::text(area, note, LEFT as i32 + 20, below + 25, 12.0, gray)?;
        }
        if let Some(w) = &m.warning {
            canvas::text(area, w, LEFT as i32, below + 38, 14.0, RGBColor(200, 0, 0))?;
        }
        Ok(())
    })?;
    Ok(c)
}

/// "never crossed" with an untinted swatch, and how many patches did cross.
fn legend(area: &canvas::Area<'_>, crossed: usize, total: usize, y: i32) -> Result<(), String> {
    let x = LEFT as i32;
    let swatch = [(x, y), (x + 14, y + 14)];
    area.draw(&Rectangle::new(swatch, RGBColor(150, 150, 150).filled())).map_err(|e| e.to_string())?;
    area.draw(&Rectangle::new(swatch, RGBColor(0, 0, 0))).map_err(|e| e.to_string())?;
    let text = format!("untinted: never crossed ({} of {total} patches); tinted: {crossed} crossed", total - crossed);
    canvas::text(area, &text, x + 20, y + 1, 14.0, RGBColor(0, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_crossing_is_the_first_dose_above_threshold() {
        let t = [0.3; 5];
        // Patches: 0 crosses at 20, falls back, crosses again at 40; 1 never analysed;
        // 2 analysed only from the second frame and crosses at 30; 3 never crosses; 4 sits exactly on
        // the threshold (not above) and then crosses.
        let f1 = [0.1, f32::NAN, f32::NAN, 0.1, 0.3];
        let f2 = [0.5, f32::NAN, 0.2, 0.2, 0.3];
        let f3 = [0.2, f32::NAN, 0.6, 0.29, 0.31];
        let f4 = [0.7, f32::NAN, 0.1, 0.1, 0.9];
        let series: Vec<(f64, &[f32])> = vec![(10.0, &f1), (20.0, &f2), (30.0, &f3), (40.0, &f4)];
        assert_eq!(first_crossings(&series, &t), vec![Some(20.0), None, Some(30.0), None, Some(30.0)]);
        assert!(first_crossings(&[], &t).is_empty());
        // Each patch against its own threshold; an unjudged patch never crosses.
        let own = [0.6, 0.3, f32::NAN, 0.1, 0.3];
        assert_eq!(first_crossings(&series, &own), vec![Some(40.0), None, None, Some(20.0), Some(30.0)]);
    }

    /// A lattice of bright columns, enough to see the map drawn over it.
    fn lattice(w: usize, h: usize) -> Frame {
        let px = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                50.0 * (1.0 + (x * 0.6).cos() * (y * 0.6).cos())
            })
            .collect();
        Frame::from_f32(w, h, px).expect("frame")
    }

    #[test]
    fn map_renders_to_png_of_expected_size() {
        let frame = lattice(200, 160);
        let grid = PatchGrid::new(200, 160, 20).expect("grid");
        let doses: Vec<Option<f64>> = (0..grid.len()).map(|p| (p % 3 != 0).then_some(p as f64 * 50.0)).collect();
        let m = DoseMap {
            reference: &frame,
            grid,
            first_crossing_dose: &doses,
            axis: XAxis::Dose,
            pixel_size_nm: Some(0.05),
            title: "critical-dose map".into(),
            subtitle: "threshold 0.3".into(),
            warning: Some("SYNTHETIC weights".into()),
        };
        let c = render(&m).expect("render");
        // 200 px enlarged ×3 to 600.
        assert_eq!(c.width, LEFT + 600 + BAR_GAP + BAR_W + RIGHT);
        assert_eq!(c.height, TOP + 480 + BOTTOM);
        let bytes = c.png_bytes(std::path::Path::new("map.png")).expect("encode");
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).expect("decode");
        assert_eq!((img.width(), img.height()), (c.width, c.height));
    }

    #[test]
    fn map_with_nothing_crossed_or_short_dose_list_renders() {
        let frame = lattice(64, 64);
        let grid = PatchGrid::new(64, 64, 16).expect("grid");
        let m = DoseMap {
            reference: &frame,
            grid,
            first_crossing_dose: &[None, Some(5.0)],
            axis: XAxis::Frame,
            pixel_size_nm: None,
            title: String::new(),
            subtitle: String::new(),
            warning: None,
        };
        assert!(render(&m).is_ok());
        let none = DoseMap { first_crossing_dose: &[], ..m };
        assert!(render(&none).is_ok());
    }

    #[test]
    fn large_frames_are_reduced_small_ones_enlarged() {
        assert_eq!(Scale::for_frame(4096), Scale { num: 1, den: 3 });
        assert_eq!(Scale::for_frame(100), Scale { num: 6, den: 1 });
        let s = Scale { num: 1, den: 3 };
        assert_eq!(s.source(0, 10), (0, 3));
        assert_eq!(s.source(3, 10), (9, 10));
        let s = Scale { num: 3, den: 1 };
        assert_eq!(s.source(5, 10), (1, 2));
    }

    #[test]
    fn low_dose_is_the_bright_end() {
        let bright = |c: [u8; 3]| c.iter().map(|&v| v as u32).sum::<u32>();
        assert!(bright(dose_colour(0.0, (0.0, 100.0))) > bright(dose_colour(100.0, (0.0, 100.0))));
        assert_eq!(bar_range(&[Some(120.0), Some(4870.0), None], XAxis::Dose), (0.0, 5000.0));
        // Frames count in whole steps.
        let frames = bar_range(&[Some(3.0), Some(5.0)], XAxis::Frame);
        assert_eq!(bar_ticks(frames, XAxis::Frame), vec![3.0, 4.0, 5.0]);
    }
}
