//! Ground truth per patch, from a per-pixel damage map in reference-frame coordinates.

use crate::patches::PatchGrid;

/// A patch is damaged when at least this share of its pixels carry any damage.
pub const DAMAGED_COVERAGE: f32 = 0.05;

/// Per patch: `Some(true)` damaged, `Some(false)` intact (no damaged pixel at all), `None` only
/// grazed by damage (under [`DAMAGED_COVERAGE`]) — left out of the AUC rather than counted either way.
pub fn patch_labels(damage: &[f32], width: usize, grid: &PatchGrid) -> Vec<Option<bool>> {
    let p = grid.patch_px;
    (0..grid.rows * grid.cols)
        .map(|k| {
            let (r, c) = (k / grid.cols, k % grid.cols);
            let mut hit = 0usize;
            for y in r * p..(r + 1) * p {
                hit += damage[y * width + c * p..y * width + (c + 1) * p].iter().filter(|&&v| v > 0.0).count();
            }
            let cover = hit as f32 / (p * p) as f32;
            if hit == 0 {
                Some(false)
            } else if cover >= DAMAGED_COVERAGE {
                Some(true)
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_decides_the_label() {
        let grid = PatchGrid::new(40, 20, 20).expect("grid");
        let mut d = vec![0f32; 40 * 20];
        // Patch 1: 30 damaged pixels (7.5 %) → damaged. Patch 0: 5 pixels (1.25 %) → left out.
        for v in d.iter_mut().skip(20).step_by(40).take(15) {
            *v = 1.0;
        }
        for y in 0..15 {
            d[y * 40 + 21] = 0.3;
        }
        for y in 0..5 {
            d[y * 40] = 1.0;
        }
        assert_eq!(patch_labels(&d, 40, &grid), vec![None, Some(true)]);
        assert_eq!(patch_labels(&vec![0.0; 800], 40, &grid), vec![Some(false), Some(false)]);
    }
}
