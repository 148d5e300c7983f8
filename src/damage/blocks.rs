//! Joint evidence of small blocks of patches: the onset rule's second test.
//!
//! Early damage covers a few neighbouring patches, each only a little above its noise floor — too
//! little for any one of them to be significant at a rate that keeps a whole field free of false
//! alarms. Summed over a w×w block, independent z-scores grow w² times faster than their noise
//! (`Σz / w` is again a standard normal on undamaged patches; the series' own neighbour correlation,
//! measured at calibration, widens the w² a little), so a block of moderately raised
//! patches is found a frame or more before two of them clear the single-patch threshold
//! (docs/evaluation.md: the onset delay of every metric fell below one frame on the known-truth
//! suite, with no false alarm).
//!
//! Blocks with a patch that is not judged (excluded, not calibrated) are skipped rather than
//! filled: a hole must not dilute or fake the evidence.

use serde::Serialize;

/// Block edges tested, in patches.
pub const BLOCK_EDGES: [usize; 2] = [2, 3];

/// The strongest w×w block of one frame.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Block {
    /// Edge of the block, in patches.
    pub edge_patches: usize,
    /// Block positions tested (every one fully judged): the multiple-comparison count a rule's
    /// threshold is set for.
    pub positions: usize,
    /// Σz / √Var(Σz) of the strongest block: a standard normal where nothing changed.
    pub z: f64,
    /// Top-left patch of the strongest block.
    pub row: usize,
    pub col: usize,
}

/// The strongest block of each edge in [`BLOCK_EDGES`] over per-patch z-scores (`rows × cols`,
/// row-major, NaN: not judged), with the correlation of neighbouring z-scores (edge-sharing,
/// corner-sharing). An edge with no fully judged position is left out.
pub fn strongest(z: &[f32], rows: usize, cols: usize, correlation: [f64; 2]) -> Vec<Block> {
    BLOCK_EDGES
        .iter()
        .filter_map(|&w| {
            if w > rows || w > cols || z.len() != rows * cols {
                return None;
            }
            // Var(Σz) over a w×w block: w² unit variances, 2·2w(w−1) edge-sharing and 2·2(w−1)²
            // corner-sharing covariances (longer ranges are negligible).
            let (wf, [edge, corner]) = (w as f64, correlation.map(|c| c.clamp(0.0, 1.0)));
            let sd = (wf * wf + 4.0 * wf * (wf - 1.0) * edge + 4.0 * (wf - 1.0).powi(2) * corner).sqrt();
            let mut best: Option<Block> = None;
            let mut positions = 0usize;
            for r in 0..=rows - w {
                for c in 0..=cols - w {
                    let mut sum = 0f64;
                    let mut full = true;
                    'block: for y in r..r + w {
                        for x in c..c + w {
                            let v = z[y * cols + x];
                            if !v.is_finite() {
                                full = false;
                                break 'block;
                            }
                            sum += f64::from(v);
                        }
                    }
                    if !full {
                        continue;
                    }
                    positions += 1;
                    let s = sum / sd;
                    if best.as_ref().is_none_or(|b| s > b.z) {
                        best = Some(Block { edge_patches: w, positions: 0, z: s, row: r, col: c });
                    }
                }
            }
            best.map(|b| Block { positions, ..b })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_raised_block_and_skips_holes() {
        // 5 × 6 field of zeros; a 2×2 block of 1.5 at (2, 3): Σz/2 = 3.
        let (rows, cols) = (5, 6);
        let mut z = vec![0f32; rows * cols];
        for (y, x) in [(2, 3), (2, 4), (3, 3), (3, 4)] {
            z[y * cols + x] = 1.5;
        }
        // A single very high patch next to a hole: its blocks are all incomplete.
        z[0] = 9.0;
        z[1] = f32::NAN;
        z[cols] = f32::NAN;
        let b = strongest(&z, rows, cols, [0.0; 2]);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].edge_patches, b[0].row, b[0].col), (2, 2, 3));
        assert!((b[0].z - 3.0).abs() < 1e-6, "Σz/w = {}", b[0].z);
        // 2×2 positions: 4 × 5 = 20, less the 2 touching a hole ((0,0) and (0,1)... and (1,0)).
        assert_eq!(b[0].positions, 20 - 3);
        // 3×3: the best covers the whole raised block: 6 / 3 = 2.
        assert_eq!(b[1].edge_patches, 3);
        assert!((b[1].z - 2.0).abs() < 1e-6, "Σz/w = {}", b[1].z);
    }

    #[test]
    fn correlated_neighbours_widen_the_spread() {
        // All-ones 3×3: Σz = 9. Independent: 9/3 = 3; edge correlation 0.25 and corner 0.1:
        // Var = 9 + 24·0.25 + 16·0.1 = 16.6.
        let b = strongest(&[1.0; 9], 3, 3, [0.25, 0.1]);
        assert!((b[1].z - 9.0 / 16.6f64.sqrt()).abs() < 1e-9, "{}", b[1].z);
        // 2×2: Var = 4 + 8·0.25 + 4·0.1 = 6.4.
        assert!((b[0].z - 4.0 / 6.4f64.sqrt()).abs() < 1e-9, "{}", b[0].z);
    }

    #[test]
    fn small_or_empty_fields_give_no_block() {
        assert!(strongest(&[1.0], 1, 1, [0.0; 2]).is_empty());
        assert_eq!(strongest(&[1.0; 4], 2, 2, [0.0; 2]).len(), 1);
        assert!(strongest(&[f32::NAN; 9], 3, 3, [0.0; 2]).is_empty());
        // A length that does not match the grid is refused, not indexed out of bounds.
        assert!(strongest(&[1.0; 5], 3, 3, [0.0; 2]).is_empty());
    }
}
