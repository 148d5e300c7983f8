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
        ScanPos { scan: index / p, row: (within / self.cols.max(1) as u64) as usize, col: (within % self.cols.max(1) as u64) as usize }
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
    todo!("fourd-core: {hints:?}")
}
