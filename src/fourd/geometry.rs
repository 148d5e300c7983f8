//! The navigation shape of a 4D-STEM series and the position of each pattern in it.

use serde::Serialize;

use super::FourDError;

/// Scan rows × columns (probe positions per scan = rows × cols), raster order, row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ScanShape {
    pub rows: usize,
    pub cols: usize,
}

/// Where the scan shape came from (recorded in the provenance).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeSource {
    Config,
    CommandLine,
    /// Stream v2 start message `user_data` (keys documented in docs/wire-format.md).
    StreamUserData,
    /// Stream v1 header appendix.
    HeaderAppendix,
    /// A file's own metadata (EMD datacube, NeXus scan axes).
    FileMetadata,
    /// The square root of the announced image count (a warning is logged).
    PerfectSquare,
}

/// One pattern's place: which scan of the series, and the probe position in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanPos {
    pub scan: u64,
    pub row: usize,
    pub col: usize,
}

impl ScanShape {
    pub fn positions(&self) -> u64 {
        self.rows as u64 * self.cols as u64
    }

    /// Image index (0-based, in the series) → its scan and position.
    pub fn position(&self, index: u64) -> ScanPos {
        let p = self.positions().max(1);
        let within = index % p;
        ScanPos {
            scan: index / p,
            row: (within / self.cols.max(1) as u64) as usize,
            col: (within % self.cols.max(1) as u64) as usize,
        }
    }
}

/// Hints a series carries about its shape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShapeHints {
    /// From the command line (highest priority).
    pub command_line: Option<ScanShape>,
    /// From `[fourd] scan_rows / scan_cols`.
    pub config: Option<ScanShape>,
    /// From the stream (v2 user_data, v1 header appendix) or a file's metadata, with its source.
    pub stream: Option<(ScanShape, ShapeSource)>,
    /// The number of images announced for the series.
    pub images: Option<u64>,
}

/// Chooses the shape: command line, config, stream/file, perfect square of the image count — in
/// that order; checks it divides the announced image count. Returns the shape, its source and
/// the number of scans when the image count is known.
pub fn resolve_shape(hints: &ShapeHints) -> Result<(ScanShape, ShapeSource, Option<u64>), FourDError> {
    let usable = |s: &ScanShape| s.rows > 0 && s.cols > 0;
    let mut tried: Vec<String> = Vec::new();
    let mut chosen = None;
    for (shape, source, what) in [
        (hints.command_line, ShapeSource::CommandLine, "command line"),
        (hints.config, ShapeSource::Config, "config [fourd] scan_rows/scan_cols"),
        (
            hints.stream.map(|(s, _)| s),
            hints.stream.map_or(ShapeSource::StreamUserData, |(_, src)| src),
            "stream/file metadata",
        ),
    ] {
        match shape {
            Some(s) if usable(&s) => {
                chosen = Some((s, source));
                break;
            }
            Some(s) => tried.push(format!("{what} gave an empty shape {}×{}", s.rows, s.cols)),
            None => tried.push(format!("no {what} shape")),
        }
    }
    if chosen.is_none() {
        match hints.images {
            Some(n) if n > 0 => match exact_sqrt(n) {
                Some(side) => {
                    let side = side as usize;
                    tracing::warn!(
                        images = n,
                        "no scan shape given: assuming a square {side}×{side} scan from the image count \
                         (set [fourd] scan_rows/scan_cols or --scan-shape if wrong)"
                    );
                    chosen = Some((ScanShape { rows: side, cols: side }, ShapeSource::PerfectSquare));
                }
                None => tried.push(format!("{n} images is not a perfect square")),
            },
            Some(_) => tried.push("the image count announced is 0".into()),
            None => tried.push("no image count announced".into()),
        }
    }
    let Some((shape, source)) = chosen else {
        return Err(FourDError::NoShape { why: format!("tried: {}", tried.join("; ")) });
    };
    let scans = match hints.images {
        Some(images) => {
            let positions = shape.positions();
            if images % positions != 0 {
                return Err(FourDError::ShapeDoesNotDivide { rows: shape.rows, cols: shape.cols, positions, images });
            }
            Some(images / positions)
        }
        None => None,
    };
    Ok((shape, source, scans))
}

/// The integer square root of `n` when `n` is a perfect square.
fn exact_sqrt(n: u64) -> Option<u64> {
    let mut r = (n as f64).sqrt() as u64;
    // f64 is off by one for huge n; step to the exact floor root.
    while r.saturating_mul(r) > n {
        r -= 1;
    }
    while (r + 1).saturating_mul(r + 1) <= n {
        r += 1;
    }
    (r * r == n).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(rows: usize, cols: usize) -> ScanShape {
        ScanShape { rows, cols }
    }

    #[test]
    fn priority_command_line_then_config_then_stream_then_square() {
        let mut h = ShapeHints {
            command_line: Some(shape(4, 8)),
            config: Some(shape(8, 4)),
            stream: Some((shape(2, 16), ShapeSource::StreamUserData)),
            images: Some(64),
        };
        assert_eq!(resolve_shape(&h), Ok((shape(4, 8), ShapeSource::CommandLine, Some(2))));
        h.command_line = None;
        assert_eq!(resolve_shape(&h), Ok((shape(8, 4), ShapeSource::Config, Some(2))));
        h.config = None;
        assert_eq!(resolve_shape(&h), Ok((shape(2, 16), ShapeSource::StreamUserData, Some(2))));
        h.stream = Some((shape(2, 16), ShapeSource::FileMetadata));
        assert_eq!(resolve_shape(&h), Ok((shape(2, 16), ShapeSource::FileMetadata, Some(2))));
        h.stream = None;
        assert_eq!(resolve_shape(&h), Ok((shape(8, 8), ShapeSource::PerfectSquare, Some(1))));
    }

    #[test]
    fn no_shape_says_what_was_tried() {
        let h = ShapeHints { images: Some(50), ..Default::default() };
        match resolve_shape(&h) {
            Err(FourDError::NoShape { why }) => {
                assert!(why.contains("50 images is not a perfect square"), "{why}");
                assert!(why.contains("command line"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(resolve_shape(&ShapeHints::default()), Err(FourDError::NoShape { .. })));
    }

    #[test]
    fn shape_that_does_not_divide_is_an_error() {
        let h = ShapeHints { config: Some(shape(3, 5)), images: Some(31), ..Default::default() };
        assert_eq!(
            resolve_shape(&h),
            Err(FourDError::ShapeDoesNotDivide { rows: 3, cols: 5, positions: 15, images: 31 })
        );
    }

    #[test]
    fn unknown_image_count_gives_no_scan_count_and_big_squares_are_exact() {
        let h = ShapeHints { config: Some(shape(3, 5)), ..Default::default() };
        assert_eq!(resolve_shape(&h), Ok((shape(3, 5), ShapeSource::Config, None)));
        assert_eq!(exact_sqrt(4_000_000_000 * 4_000_000_000), Some(4_000_000_000));
        assert_eq!(exact_sqrt(4_000_000_000 * 4_000_000_000 - 1), None);
        let h = ShapeHints { images: Some(256 * 256 * 5), ..Default::default() };
        // 327,680 is not a square: k scans of an unknown area cannot be guessed.
        assert!(resolve_shape(&h).is_err());
    }

    #[test]
    fn position_is_raster_order_over_scans() {
        let s = shape(3, 4);
        assert_eq!(s.position(0), ScanPos { scan: 0, row: 0, col: 0 });
        assert_eq!(s.position(5), ScanPos { scan: 0, row: 1, col: 1 });
        assert_eq!(s.position(12 + 11), ScanPos { scan: 1, row: 2, col: 3 });
    }
}
