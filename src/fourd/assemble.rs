//! Patterns in arrival order → completed scans.

use super::detectors::VirtualDetectors;
use super::geometry::{ScanPos, ScanShape};
use super::spots::Spot;
use super::{FourDConfig, FourDError};

/// One completed (or, at the end of a series, incomplete) scan.
#[derive(Clone, Debug)]
pub struct ScanResult {
    pub scan: u64,
    pub shape: ScanShape,
    /// One image per detector (same order as `detector_names`), rows × cols, row-major.
    pub detector_names: Vec<String>,
    pub images: Vec<Vec<f32>>,
    /// true where no pattern (missing) or more than one (duplicate) arrived: masked, never shifted.
    pub masked: Vec<bool>,
    pub missing: u64,
    pub duplicates: u64,
    /// false for a scan cut short by the end of the series.
    pub complete: bool,
    /// Spot intensities of the whole scan (one per spot), and per region (regions row-major).
    pub spot_intensity: Vec<f64>,
    pub region_spot_intensity: Vec<Vec<f64>>,
    /// Total counts per position (the `sum` detector, for the beam-current estimate), summed.
    pub total_counts: f64,
}

/// Events while patterns arrive.
#[derive(Clone, Debug)]
pub enum ScanEvent {
    /// Rows newly filled in the current scan (for the live view).
    Rows { scan: u64, rows: std::ops::Range<usize> },
    Complete(Box<ScanResult>),
}

/// Assembles scans from patterns. Holds at most `centre_patterns` patterns (until the centre is
/// known), one summed pattern per region and the images of the scan being filled.
pub struct ScanAssembler {
    pub shape: ScanShape,
    pub detectors: Option<VirtualDetectors>,
    pub spots: Vec<Spot>,
}

impl ScanAssembler {
    pub fn new(cfg: &FourDConfig, shape: ScanShape) -> Result<Self, FourDError> {
        todo!("fourd-core {cfg:?} {shape:?}")
    }

    /// One pattern at series image `index`. Its position comes from the index alone; a pattern
    /// for a scan already completed is counted late and dropped.
    pub fn push(
        &mut self,
        index: u64,
        width: usize,
        height: usize,
        pixels: &[f32],
        invalid: Option<&[bool]>,
    ) -> Result<Vec<ScanEvent>, FourDError> {
        todo!("fourd-core {index} {width} {height} {} {}", pixels.len(), invalid.is_some())
    }

    /// The series ended: the scan being filled (if any pattern arrived for it) comes out
    /// incomplete, masked where nothing arrived.
    pub fn finish(&mut self) -> Vec<ScanEvent> {
        todo!("fourd-core")
    }

    pub fn position(&self, index: u64) -> ScanPos {
        self.shape.position(index)
    }

    /// Patterns dropped because they came after their scan was completed.
    pub fn late(&self) -> u64 {
        todo!("fourd-core")
    }
}
