//! `similarity.csv`: one row per patch per compared frame.

use std::fmt::Write as _;
use std::path::Path;

use super::{ReportError, write_atomic};
use crate::damage::SimilarityMap;
use crate::patches::PatchStatus;

pub const HEADER: &str = "frame,row,col,x_px,y_px,similarity,dissimilarity,status";

/// Appends the rows of one frame's map. Excluded patches have empty similarity fields.
pub fn push_rows(out: &mut String, frame: usize, map: &SimilarityMap) {
    for p in 0..map.status.len() {
        let (row, col) = (p / map.grid.cols, p % map.grid.cols);
        let (x, y) = map.grid.origin(p);
        let status = match map.status[p] {
            PatchStatus::Ok => "ok".to_string(),
            PatchStatus::Filled(n) => format!("filled_{n}px"),
            PatchStatus::Masked => "masked".into(),
            PatchStatus::OutsideOverlap => "outside_overlap".into(),
        };
        if map.status[p].analysed() {
            let _ =
                writeln!(out, "{frame},{row},{col},{x},{y},{},{},{status}", map.similarity[p], map.dissimilarity[p]);
        } else {
            let _ = writeln!(out, "{frame},{row},{col},{x},{y},,,{status}");
        }
    }
}

/// Writes `similarity.csv` for `(frame index, map)` pairs.
pub fn write(path: &Path, maps: &[(usize, &SimilarityMap)]) -> Result<(), ReportError> {
    let mut out = String::with_capacity(64 * maps.iter().map(|(_, m)| m.status.len()).sum::<usize>() + 64);
    out.push_str(HEADER);
    out.push('\n');
    for (frame, map) in maps {
        push_rows(&mut out, *frame, map);
    }
    write_atomic(path, out.as_bytes())
}
