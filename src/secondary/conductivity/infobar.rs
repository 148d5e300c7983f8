//! The annotation band SEMs burn into an exported image (scale bar, magnification, voltage, date):
//! found and cut off before training, so a model cannot learn the date instead of the pellet.
//!
//! A band row is near-uniform background with sparse text: almost every pixel is either within
//! [`NEAR`] of the row's median (the background) or more than [`FAR`] from it (text and lines),
//! and the background is at least half the row. A micrograph row has a continuum of grey levels
//! between those, so it fails. The band is the run of such rows that starts at the top or bottom
//! edge (gaps of up to [`MAX_GAP`] rows inside it, for a scale bar drawn in mid grey), at least
//! [`MIN_ROWS`] rows and at most a third of the image.

/// Background: within this of the row median (gray 0..1; covers JPEG ringing and 8-bit noise).
pub const NEAR: f32 = 0.04;
/// Text and lines: farther than this from the row median.
pub const FAR: f32 = 0.3;
/// Share of a band row's pixels that are background or text.
pub const BAND_SHARE: f64 = 0.93;
/// Share of a band row that is background.
pub const BACKGROUND_SHARE: f64 = 0.5;
pub const MIN_ROWS: usize = 4;
pub const MAX_GAP: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Edge {
    Top,
    Bottom,
}

impl std::fmt::Display for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Top => "top",
            Self::Bottom => "bottom",
        })
    }
}

/// A band of `rows` rows at `edge`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Band {
    pub edge: Edge,
    pub rows: usize,
}

/// Whether row `y` of a `width`-wide image looks like an annotation band row.
pub fn is_band_row(pixels: &[f32], width: usize, y: usize) -> bool {
    let row = &pixels[y * width..(y + 1) * width];
    let mut sorted = row.to_vec();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[width / 2];
    let (mut near, mut far) = (0usize, 0usize);
    for &v in row {
        let d = (v - median).abs();
        if d <= NEAR {
            near += 1;
        } else if d > FAR {
            far += 1;
        }
    }
    let n = width as f64;
    near as f64 >= BACKGROUND_SHARE * n && (near + far) as f64 >= BAND_SHARE * n
}

/// The band at the bottom or the top, if any (the bottom wins when both look like one: SEMs put
/// their data bar there).
pub fn detect(pixels: &[f32], width: usize, height: usize) -> Option<Band> {
    if width == 0 || height < 3 * MIN_ROWS {
        return None;
    }
    let run = |rows: &mut dyn Iterator<Item = usize>| -> usize {
        let (mut last_band, mut gap) = (None, 0usize);
        for (k, y) in rows.enumerate() {
            if is_band_row(pixels, width, y) {
                last_band = Some(k);
                gap = 0;
            } else {
                gap += 1;
                // The band must start at the edge; after it, a run of micrograph rows ends it.
                if last_band.is_none() || gap > MAX_GAP {
                    break;
                }
            }
        }
        last_band.map_or(0, |k| k + 1)
    };
    let max_rows = height / 3;
    let bottom = run(&mut (0..height).rev());
    if (MIN_ROWS..=max_rows).contains(&bottom) {
        return Some(Band { edge: Edge::Bottom, rows: bottom });
    }
    let top = run(&mut (0..height));
    (MIN_ROWS..=max_rows).contains(&top).then_some(Band { edge: Edge::Top, rows: top })
}

/// The image without `band`: (pixels, new height).
pub fn crop(pixels: &[f32], width: usize, height: usize, band: Band) -> (Vec<f32>, usize) {
    let keep = height.saturating_sub(band.rows);
    let start = match band.edge {
        Edge::Top => band.rows,
        Edge::Bottom => 0,
    };
    (pixels[start * width..(start + keep) * width].to_vec(), keep)
}
