//! Non-overlapping square patches, row-major (patch p = row · cols + col).
//!
//! A right or bottom remainder narrower than one patch is not analysed; every output says how many
//! pixels that is. Invalid pixels (detector gaps) inside a patch are replaced by the mean of the
//! patch's valid pixels when they are few; a patch with too many, or one that reaches outside the
//! region both frames cover after drift correction, is excluded from the analysis.

use serde::Serialize;

use crate::frame::{Frame, Scaling};

#[derive(Debug, thiserror::Error, PartialEq)]
#[must_use]
pub enum PatchError {
    #[error("frame of {width}×{height} px is smaller than one {patch}×{patch} px patch")]
    TooSmall { width: usize, height: usize, patch: usize },
    #[error("patch size must be at least 1 px")]
    Zero,
}

/// The patch layout of a frame size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PatchGrid {
    pub patch_px: usize,
    pub rows: usize,
    pub cols: usize,
    pub width_px: usize,
    pub height_px: usize,
}

impl PatchGrid {
    pub fn new(width: usize, height: usize, patch: usize) -> Result<Self, PatchError> {
        if patch == 0 {
            return Err(PatchError::Zero);
        }
        let (rows, cols) = (height / patch, width / patch);
        if rows == 0 || cols == 0 {
            return Err(PatchError::TooSmall { width, height, patch });
        }
        Ok(Self { patch_px: patch, rows, cols, width_px: width, height_px: height })
    }

    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn remainder_right_px(&self) -> usize {
        self.width_px - self.cols * self.patch_px
    }

    pub fn remainder_bottom_px(&self) -> usize {
        self.height_px - self.rows * self.patch_px
    }

    /// One sentence for outputs.
    pub fn remainder_note(&self) -> String {
        let (r, b) = (self.remainder_right_px(), self.remainder_bottom_px());
        if r == 0 && b == 0 {
            format!(
                "{}×{} patches of {} px cover the whole {}×{} px frame",
                self.cols, self.rows, self.patch_px, self.width_px, self.height_px
            )
        } else {
            format!(
                "{}×{} patches of {} px; the rightmost {r} px columns and bottom {b} px rows of the {}×{} px frame \
                 (narrower than a patch) are not analysed",
                self.cols, self.rows, self.patch_px, self.width_px, self.height_px
            )
        }
    }

    /// Top-left pixel (x, y) of patch p.
    pub fn origin(&self, p: usize) -> (usize, usize) {
        ((p % self.cols) * self.patch_px, (p / self.cols) * self.patch_px)
    }
}

/// A rectangle of pixels, half-open: x0 ≤ x < x1, y0 ≤ y < y1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rect {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl Rect {
    pub fn contains_patch(&self, x: usize, y: usize, patch: usize) -> bool {
        x >= self.x0 && y >= self.y0 && x + patch <= self.x1 && y + patch <= self.y1
    }
}

/// Why a patch is or is not analysed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchStatus {
    Ok,
    /// Analysed, with this many invalid pixels filled by the patch's valid mean.
    Filled(u32),
    /// Excluded: more invalid pixels than allowed.
    Masked,
    /// Excluded: not fully inside the region both frames cover after drift correction.
    OutsideOverlap,
}

impl PatchStatus {
    pub fn analysed(self) -> bool {
        matches!(self, Self::Ok | Self::Filled(_))
    }

    /// The status as session files and the live view store it: 0 analysed, 1 analysed with gaps
    /// filled, 2 excluded (gaps), 3 excluded (outside the drift overlap).
    pub fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Filled(_) => 1,
            Self::Masked => 2,
            Self::OutsideOverlap => 3,
        }
    }
}

/// A frame cut into patches: scaled gray values `[n][patch²]` and a status per patch.
#[derive(Clone, Debug)]
pub struct Patches {
    pub grid: PatchGrid,
    pub pixels: Vec<f32>,
    pub status: Vec<PatchStatus>,
}

impl Patches {
    pub fn patch(&self, p: usize) -> &[f32] {
        let pp = self.grid.patch_px * self.grid.patch_px;
        &self.pixels[p * pp..(p + 1) * pp]
    }

    pub fn n_analysed(&self) -> usize {
        self.status.iter().filter(|s| s.analysed()).count()
    }
}

/// Cuts `frame` into `grid`'s patches, scaled by `scaling`. `overlap`: the region valid after drift
/// correction (`None` = whole frame). `max_invalid_fraction`: the share of invalid pixels a patch may
/// have and still be analysed.
pub fn extract(
    frame: &Frame,
    grid: &PatchGrid,
    scaling: &Scaling,
    overlap: Option<Rect>,
    max_invalid_fraction: f32,
) -> Patches {
    let p = grid.patch_px;
    let pp = p * p;
    let w = frame.width();
    let src = frame.pixels();
    let mut pixels = vec![0f32; grid.len() * pp];
    let mut status = vec![PatchStatus::Ok; grid.len()];
    let max_invalid = (max_invalid_fraction.clamp(0.0, 1.0) * pp as f32).floor() as usize;
    for (idx, (dst, st)) in pixels.chunks_exact_mut(pp).zip(status.iter_mut()).enumerate() {
        let (x0, y0) = grid.origin(idx);
        if overlap.is_some_and(|r| !r.contains_patch(x0, y0, p)) {
            *st = PatchStatus::OutsideOverlap;
            continue;
        }
        for (r, row) in dst.chunks_exact_mut(p).enumerate() {
            let s = (y0 + r) * w + x0;
            for (d, &v) in row.iter_mut().zip(&src[s..s + p]) {
                *d = scaling.apply(v);
            }
        }
        let Some(mask) = frame.invalid_mask() else { continue };
        let bad: Vec<usize> = (0..pp).filter(|&i| mask[(y0 + i / p) * w + x0 + i % p]).collect();
        if bad.is_empty() {
            continue;
        }
        if bad.len() > max_invalid {
            *st = PatchStatus::Masked;
            continue;
        }
        let (sum, n) = (0..pp)
            .filter(|i| bad.binary_search(i).is_err())
            .fold((0f64, 0usize), |(s, n), i| (s + dst[i] as f64, n + 1));
        let fill = if n > 0 { (sum / n as f64) as f32 } else { 0.0 };
        for &i in &bad {
            dst[i] = fill;
        }
        *st = PatchStatus::Filled(bad.len() as u32);
    }
    Patches { grid: *grid, pixels, status }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::ScaleMode;

    #[test]
    fn grid_reports_remainder() {
        let g = PatchGrid::new(45, 41, 20).expect("grid");
        assert_eq!((g.rows, g.cols, g.remainder_right_px(), g.remainder_bottom_px()), (2, 2, 5, 1));
        assert!(g.remainder_note().contains("rightmost 5 px"));
        assert_eq!(g.origin(3), (20, 20));
        assert!(matches!(PatchGrid::new(19, 40, 20), Err(PatchError::TooSmall { .. })));
    }

    #[test]
    fn patches_are_row_major_and_gaps_are_filled_or_masked() {
        // 4×2 frame, patch 2: patch 0 = x 0..2, patch 1 = x 2..4.
        let data: Vec<u16> = vec![1, 2, 3, 65535, 5, 6, 65535, 65535];
        let f = Frame::from_ints(4, 2, &data, true).expect("frame");
        let g = PatchGrid::new(4, 2, 2).expect("grid");
        let s = Scaling::from_reference(ScaleMode::None, &f).expect("scaling");
        let p = extract(&f, &g, &s, None, 0.25);
        assert_eq!(p.patch(0), &[1.0, 2.0, 5.0, 6.0]);
        assert_eq!(p.status[0], PatchStatus::Ok);
        assert_eq!(p.status[1], PatchStatus::Masked); // 3 of 4 pixels are gaps
        let p = extract(&f, &g, &s, None, 0.75);
        assert_eq!(p.status[1], PatchStatus::Filled(3));
        assert_eq!(p.patch(1), &[3.0, 3.0, 3.0, 3.0]);
        let p = extract(&f, &g, &s, Some(Rect { x0: 1, y0: 0, x1: 4, y1: 2 }), 1.0);
        assert_eq!(p.status[0], PatchStatus::OutsideOverlap);
    }
}
