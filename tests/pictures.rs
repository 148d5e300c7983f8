//! The pictures `replay` and `compare` write: scale bars, round colour-bar ticks, text drawn with the
//! font's own spacing, rounded numbers, and a series without dose drawn against the frame number with
//! a critical-dose map that agrees with the alarms.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use beamwatch::damage::SimilarityMap;
use beamwatch::frame::Frame;
use beamwatch::patches::{PatchGrid, PatchStatus};
use beamwatch::report::canvas::{self, Canvas, Line};
use beamwatch::report::dose_plot::{self, DosePlot, XAxis};
use beamwatch::report::{dose_map, format, overlay};
use beamwatch::simulate::series::{Series, SeriesSpec};
use plotters::style::RGBColor;

fn beamwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_beamwatch")).args(args).output().expect("beamwatch runs")
}

/// A lattice of bright columns.
fn lattice(w: usize, h: usize) -> Frame {
    let px = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            50.0 * (1.0 + (x * 0.6).cos() * (y * 0.6).cos())
        })
        .collect();
    Frame::from_f32(w, h, px).expect("frame")
}

fn map(grid: PatchGrid) -> SimilarityMap {
    let n = grid.len();
    let dissimilarity: Vec<f32> = (0..n).map(|p| 0.05 * (p % 7) as f32).collect();
    SimilarityMap {
        grid,
        similarity: dissimilarity.iter().map(|d| 1.0 - d).collect(),
        dissimilarity,
        status: vec![PatchStatus::Ok; n],
    }
}

fn overlay_of(frame: &Frame, map: &SimilarityMap, pixel_size_nm: Option<f64>) -> Canvas {
    overlay::render(&overlay::Overlay {
        frame,
        map,
        vmax: 0.39,
        threshold: 0.2,
        title: "frame 4 — 2600 e⁻/Å²".into(),
        subtitle: "mean 0.1234".into(),
        colorbar_label: "1 − SSIM".into(),
        warning: Some("weights: SYNTHETIC".into()),
        pixel_size_nm,
    })
    .expect("overlay")
}

/// Every horizontal run of pure white pixels inside `rect` = (x, y, w, h): (row, first x, length).
fn white_runs(c: &Canvas, (x0, y0, w, h): (u32, u32, u32, u32), min_len: u32) -> Vec<(u32, u32, u32)> {
    let mut runs = Vec::new();
    for y in y0..y0 + h {
        let mut start = None;
        for x in x0..=x0 + w {
            let white = x < x0 + w && {
                let i = (y as usize * c.width as usize + x as usize) * 3;
                c.rgb[i..i + 3] == [255, 255, 255]
            };
            match (white, start) {
                (true, None) => start = Some(x),
                (false, Some(s)) => {
                    if x - s >= min_len {
                        runs.push((y, s, x - s));
                    }
                    start = None;
                }
                _ => {}
            }
        }
    }
    runs
}

#[test]
fn a_known_pixel_size_draws_a_round_scale_bar_bottom_left() {
    // 100 px of 0.05 nm: 5 nm wide; the bar is 1 nm (a fifth) = 20 frame px, shown ×6 = 120 px.
    let frame = lattice(100, 100);
    let grid = PatchGrid::new(100, 100, 20).expect("grid");
    let m = map(grid);
    let (ox, oy) = overlay::IMAGE_ORIGIN;
    let image = (ox, oy, 600, 600);
    let c = overlay_of(&frame, &m, Some(0.05));
    let runs = white_runs(&c, image, 40);
    assert_eq!(runs.len(), 5, "a bar 5 px thick and nothing else as long and white: {runs:?}");
    for &(y, x, len) in &runs {
        assert_eq!(len, 120, "1 nm at 0.05 nm per frame pixel, ×6");
        assert_eq!(x, ox + 14, "left, inset from the image edge");
        assert!((oy + 600 - 16..oy + 600 - 11).contains(&y), "at the bottom: row {y}");
    }
    // Dark backing around the bar (it must read on bright images too).
    let below_left = ((runs[0].0 - 3) as usize * c.width as usize + (ox + 10) as usize) * 3;
    assert!(c.rgb[below_left..below_left + 3].iter().all(|&v| v < 120), "dark backing");
    // The label: white text above the bar.
    let label_rows = white_runs(&c, (ox + 14, runs[0].0 - 18, 60, 14), 1);
    assert!(!label_rows.is_empty(), "label above the bar");

    // Unknown pixel size: no bar.
    let c = overlay_of(&frame, &m, None);
    assert!(white_runs(&c, image, 40).is_empty(), "no scale bar without a pixel size");

    // The critical-dose map draws the same bar.
    let doses: Vec<Option<f64>> = (0..grid.len()).map(|p| (p % 2 == 0).then_some(100.0 * p as f64)).collect();
    let dm = dose_map::DoseMap {
        reference: &frame,
        grid,
        first_crossing_dose: &doses,
        axis: XAxis::Dose,
        pixel_size_nm: Some(0.05),
        title: "critical-dose map".into(),
        subtitle: String::new(),
        warning: None,
    };
    let c = dose_map::render(&dm).expect("map");
    let (mx, my) = dose_map::IMAGE_ORIGIN;
    let runs = white_runs(&c, (mx, my, 600, 600), 40);
    assert_eq!(runs.len(), 5, "{runs:?}");
    assert!(runs.iter().all(|r| r.2 == 120 && r.1 == mx + 14));
    let c = dose_map::render(&dose_map::DoseMap { pixel_size_nm: None, ..dm }).expect("map");
    assert!(white_runs(&c, (mx, my, 600, 600), 40).is_empty());
}

#[test]
fn scale_bar_lengths_are_round_and_about_a_fifth_of_the_width() {
    for (width_nm, want) in [(5.0, 1.0), (51.2, 10.0), (102.4, 20.0), (0.8, 0.2), (2048.0, 500.0)] {
        assert_eq!(format::scale_bar_nm(width_nm), Some(want), "{width_nm} nm");
    }
}

/// 1, 2 or 5 × 10ⁿ.
fn is_round_step(step: f64) -> bool {
    let m = step / 10f64.powf(step.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().any(|x| (m - x).abs() < 1e-6)
}

#[test]
fn colour_bar_ticks_are_round_with_clean_labels() {
    for vmax in [0.39f64, 0.78, 0.0974, 1.7, 23.0, 0.0031] {
        let top = format::nice_top(vmax, 4);
        assert!(top >= vmax && top < 2.5 * vmax, "{vmax} → {top}");
        let ticks = overlay::colorbar_ticks(top as f32);
        assert!(ticks.len() >= 3, "{vmax}: {ticks:?}");
        assert_eq!(ticks[0], 0.0);
        let step = ticks[1] - ticks[0];
        assert!(is_round_step(step), "{vmax}: step {step}");
        assert!((ticks[ticks.len() - 1] - top).abs() < 1e-6 * top, "the top is a tick: {ticks:?}");
        for t in &ticks {
            let label = format::tick_label(*t, step);
            assert!(label.len() <= 6, "{vmax}: {label}");
            assert!((label.parse::<f64>().expect("number") - t).abs() < 1e-9, "{label} for {t}");
        }
    }
    // The critical-dose map's bar as well, in doses and in whole frames.
    let ticks = dose_map::bar_ticks((0.0, 2600.0), XAxis::Dose);
    assert_eq!(ticks, vec![0.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0]);
    let ticks = dose_map::bar_ticks((2.0, 7.0), XAxis::Frame);
    assert!(ticks.iter().all(|t| t.fract() == 0.0), "{ticks:?}");
}

/// Per column, the darkest ink (0 = none, 1 = black) of `word` drawn black on white by the canvas.
fn drawn_columns(word: &str, size: f64, x0: i32) -> Vec<f32> {
    let mut c = Canvas::new(400, 40, [255, 255, 255]);
    c.draw(|area| canvas::text(area, word, x0, 10, size, RGBColor(0, 0, 0))).expect("text");
    let w = c.width as usize;
    (0..w)
        .map(|x| (0..c.height as usize).map(|y| 1.0 - c.rgb[(y * w + x) * 3] as f32 / 255.0).fold(0.0, f32::max))
        .collect()
}

/// Per column, the coverage the font itself gives `word` with the pen starting at `x0`: each glyph
/// at the kerned sum of the advances before it, its outline at its own offset from the pen.
fn font_columns(word: &str, size: f32, x0: f32, width: usize) -> Vec<f32> {
    use ab_glyph::{Font, FontRef, ScaleFont, point};
    let font = FontRef::try_from_slice(dejavu::sans::regular()).expect("DejaVu Sans");
    let scaled = font.as_scaled(size);
    let mut out = vec![0.0f32; width];
    let (mut pen, mut prev) = (x0, None);
    for ch in word.chars() {
        let id = scaled.glyph_id(ch);
        if let Some(p) = prev {
            pen += scaled.kern(p, id);
        }
        if let Some(outline) = font.outline_glyph(id.with_scale_and_position(size, point(pen, 20.0))) {
            let left = outline.px_bounds().min.x as i32;
            outline.draw(|x, _, cov| {
                let i = (left + x as i32) as usize;
                out[i] = out[i].max(cov);
            });
        }
        pen += scaled.h_advance(id);
        prev = Some(id);
    }
    out
}

#[test]
fn text_is_placed_where_the_font_puts_each_glyph() {
    // plotters' own text drew each glyph from the left edge of its ink at a truncated pen position,
    // dropping the side bearing: N and H moved left, T and f right ("SYN THETIC", "drif t"); 1 to 9
    // columns of these words were off. Now no column has ink where the font has none, or none
    // where the font has solid ink.
    for word in ["SYNTHETIC", "drift", "RMSE", "which", "cumulative dose (e⁻/Å²)"] {
        for size in [12.0, 14.0, 18.0] {
            let drawn = drawn_columns(word, size, 20);
            let font = font_columns(word, canvas::even(size) as f32, 20.0, drawn.len());
            let wrong: Vec<usize> = (0..drawn.len())
                .filter(|&x| (drawn[x] > 0.3 && font[x] == 0.0) || (font[x] > 0.3 && drawn[x] == 0.0))
                .collect();
            assert!(wrong.is_empty(), "{word} at {size} px: columns {wrong:?} differ from the font's layout");
            // And the layout box is the font's advance width, for centring and right-aligning.
            let line = Line::new(word, canvas::even(size), false).expect("font");
            let last = font.iter().rposition(|&c| c > 0.0).expect("ink") as f32;
            assert!(line.advance >= last - 20.0 - 1.0, "{word}: advance {} vs ink to {last}", line.advance);
        }
    }
}

#[test]
fn doses_are_printed_to_four_significant_digits() {
    assert_eq!(format::dose(2599.9999999999995), "2600");
    assert_eq!(format::dose(1523.66), "1524");
    assert_eq!(format::dose(47.123456), "47.12");
    assert_eq!(format::dose(0.3 + 0.6), "0.9");
    assert_eq!(format::dose(0.0123456), "0.01235");
    assert_eq!(format::sig(0.1 + 0.2, 3), "0.3");
}

#[test]
fn without_dose_the_plot_counts_frames() {
    assert_eq!(XAxis::of([10.0, 20.0]), XAxis::Dose);
    assert_eq!(XAxis::of([10.0, f64::NAN]), XAxis::Frame);
    assert_eq!(XAxis::of([f64::NAN; 3]), XAxis::Frame);
    assert_eq!(XAxis::Frame.label(), "frame (dose unknown)");
    assert_eq!(XAxis::Frame.x(7, f64::NAN), 7.0);
    // Frames drawn as points (not "no analysed frames"), the damaged area beside them.
    let points: Vec<(f64, f64)> = (1..20).map(|f| (f as f64, 0.1 + 0.01 * f as f64)).collect();
    let area: Vec<(f64, f64)> = (1..20).map(|f| (f as f64, 0.02 * f as f64)).collect();
    let plot = |area: &[(f64, f64)]| {
        dose_plot::render(&DosePlot {
            title: "damage versus frame".into(),
            subtitle: String::new(),
            x_axis: XAxis::Frame,
            points: &points,
            area,
            y_label: "mean 1 − SSIM".into(),
            fit: None,
            threshold: None,
            alarms: &[(12.0, "onset".into())],
            warning: None,
        })
        .expect("plot")
    };
    let count = |c: &Canvas, rgb: [u8; 3]| c.rgb.chunks(3).filter(|p| *p == rgb).count();
    let with_area = plot(&area);
    assert!(count(&with_area, [31, 119, 180]) > 19 * 9, "every frame's point drawn");
    assert!(count(&with_area, [44, 160, 44]) > 19 * 9, "the damaged-area curve drawn");
    assert_eq!(count(&plot(&[]), [44, 160, 44]), 0);
}

fn replay(tif: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args =
        vec!["replay", tif.to_str().expect("p"), "--out", out.to_str().expect("p"), "--metric", "ssim", "-q"];
    args.extend_from_slice(extra);
    let o = beamwatch(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json")).expect("json")
}

/// The report's text up to the provenance block (which holds the raw JSON).
fn report_text(out: &Path) -> String {
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    html.split("Provenance").next().unwrap_or_default().to_string()
}

/// Numbers with float noise: six or more decimals.
fn noisy_numbers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'.' && i > 0 && b[i - 1].is_ascii_digit() {
            let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n >= 6 {
                out.push(String::from_utf8_lossy(&b[i.saturating_sub(4)..i + 1 + n]).into_owned());
            }
            i += n;
        }
        i += 1;
    }
    out
}

#[test]
fn a_series_without_dose_is_drawn_against_frames_and_its_map_agrees_with_the_alarms() {
    let tmp = tempfile::tempdir().expect("tmp");
    let series = Series::new(SeriesSpec::with_onset(100, 14, 4));
    let tif = tmp.path().join("stack.tif");
    common::write_tiff_stack(&tif, &series);
    let out = tmp.path().join("out");
    let s = replay(&tif, &out, &[]);
    assert!(s["dose_inputs"]["per_frame_e_per_a2"].is_null(), "no dose: {}", s["dose_inputs"]);

    let session = s["outputs"]["session"].as_str().expect("session");
    let r = beamwatch::record::session::SessionReader::open(Path::new(session), false).expect("session");
    let analyses = r.analyses().expect("analyses");
    assert!(analyses.iter().all(|a| !a.cumulative_e_per_a2.is_finite()), "dose unknown");
    let axis = XAxis::of(analyses.iter().map(|a| a.cumulative_e_per_a2));
    assert_eq!(axis, XAxis::Frame);
    let alarms: Vec<serde_json::Value> =
        r.alarms().expect("alarms").iter().filter_map(|a| serde_json::from_str(a).ok()).collect();
    let first_alarm = alarms.iter().filter_map(|a| a["frame"].as_u64()).min().expect("the damage raised alarms");

    // The crossings as the map draws them, against the thresholds the analysis judged by.
    let floor: beamwatch::damage::NoiseFloor =
        serde_json::from_value(s["series"]["noise_floor"].clone()).expect("calibrated noise floor");
    let frames: Vec<(u64, f64, &[f32])> =
        analyses.iter().map(|a| (a.index, a.cumulative_e_per_a2, a.dissimilarity.as_slice())).collect();
    let crossings = dose_map::series_crossings(&frames, &floor.frames, &floor.thresholds(), axis);
    let crossed: Vec<f64> = crossings.iter().flatten().copied().collect();
    assert!(!crossed.is_empty(), "alarms fired, so patches crossed their thresholds");
    let earliest = crossed.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(earliest <= first_alarm as f64, "first crossing at frame {earliest}, first alarm at {first_alarm}");
    assert!(crossed.iter().all(|f| f.fract() == 0.0), "crossings are frame numbers");
    // Every frame that the analysis judged with a patch above its threshold has a crossing at or
    // before it.
    for a in analyses.iter().filter(|a| !floor.frames.contains(&a.index)) {
        let above = a.dissimilarity.iter().zip(floor.thresholds()).any(|(&d, t)| d > t);
        if above {
            assert!(earliest <= a.index as f64, "frame {} has patches above threshold", a.index);
        }
    }

    let text = report_text(&out);
    assert!(text.contains("frame (dose unknown)"), "the map caption says the frame stands in for the dose");
    assert!(text.contains("Damage versus frame"), "the plot is against frames");
    assert!(text.contains("pixel size unknown"), "no scale bar, and the report says why");
    assert!(!text.contains("no analysed frames"));
}

#[test]
fn a_series_with_dose_and_pixel_size_has_scale_bars_and_rounded_numbers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = SeriesSpec::with_onset(100, 10, 4);
    let series = Series::new(spec.clone());
    let tif = tmp.path().join("stack.tif");
    common::write_tiff_stack(&tif, &series);
    let out = tmp.path().join("out");
    // A beam current with float noise in its own digits, so every dose has it too.
    let current = (spec.beam_current_pa() * (1.0 + 1e-13)).to_string();
    let dwell = spec.dwell_time_us.to_string();
    let s = replay(&tif, &out, &["--beam-current-pa", &current, "--dwell-time-us", &dwell, "--pixel-size-a", "0.5"]);
    let text = report_text(&out);
    assert!(text.contains("scale bar in nm (pixel size 0.05 nm)"), "pixel size in the captions");
    assert!(text.contains("Damage versus dose"));
    let noisy = noisy_numbers(&text);
    assert!(noisy.is_empty(), "numbers with float noise in the report: {noisy:?}");

    // The map (100 px frame, ×6) carries a 1 nm bar of 120 px.
    let map_png = s["outputs"]["critical_dose_map_png"].as_str().expect("map");
    let img = image::open(map_png).expect("png").to_rgb8();
    let c = Canvas { width: img.width(), height: img.height(), rgb: img.into_raw() };
    let (mx, my) = dose_map::IMAGE_ORIGIN;
    let runs = white_runs(&c, (mx, my, 600, 600), 40);
    assert_eq!(runs.len(), 5, "{runs:?}");
    assert!(runs.iter().all(|r| r.2 == 120), "{runs:?}");
}
