//! Classical per-patch comparisons the seed paper argues against and users still ask for: SSIM, PSNR
//! and normalised cross-correlation, on the scaled patch values (data range 1).

/// SSIM as scikit-image's `structural_similarity` computes it with its defaults on a float image
/// with `data_range = 1`: 7×7 uniform windows, sample covariance (N − 1), K1 = 0.01, K2 = 0.03,
/// averaged over every window position that lies fully inside the patch.
pub fn ssim(a: &[f32], b: &[f32], p: usize) -> f64 {
    const WIN: usize = 7;
    const C1: f64 = 0.01 * 0.01;
    const C2: f64 = 0.03 * 0.03;
    if p < WIN {
        return f64::NAN;
    }
    // Summed-area tables of a, b, a², b², ab: every window sum in O(1).
    let n = p + 1;
    let mut sat = vec![[0f64; 5]; n * n];
    for y in 0..p {
        let mut row = [0f64; 5];
        for x in 0..p {
            let (u, v) = (a[y * p + x] as f64, b[y * p + x] as f64);
            for (r, q) in row.iter_mut().zip([u, v, u * u, v * v, u * v]) {
                *r += q;
            }
            let above = sat[y * n + x + 1];
            sat[(y + 1) * n + x + 1] = std::array::from_fn(|k| above[k] + row[k]);
        }
    }
    let np = (WIN * WIN) as f64;
    let cov_norm = np / (np - 1.0);
    let positions = p - WIN + 1;
    let mut total = 0.0;
    for y in 0..positions {
        for x in 0..positions {
            let s: [f64; 5] = std::array::from_fn(|k| {
                sat[(y + WIN) * n + x + WIN][k] - sat[y * n + x + WIN][k] - sat[(y + WIN) * n + x][k]
                    + sat[y * n + x][k]
            });
            let (ux, uy) = (s[0] / np, s[1] / np);
            let vx = cov_norm * (s[2] / np - ux * ux);
            let vy = cov_norm * (s[3] / np - uy * uy);
            let vxy = cov_norm * (s[4] / np - ux * uy);
            total += ((2.0 * ux * uy + C1) * (2.0 * vxy + C2)) / ((ux * ux + uy * uy + C1) * (vx + vy + C2));
        }
    }
    total / (positions * positions) as f64
}

/// Root-mean-square difference of the scaled values.
pub fn rmse(a: &[f32], b: &[f32]) -> f64 {
    let se: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    (se / a.len().max(1) as f64).sqrt()
}

/// PSNR in dB for data range 1; +∞ for identical patches.
pub fn psnr_db(rmse: f64) -> f64 {
    if rmse == 0.0 { f64::INFINITY } else { -20.0 * rmse.log10() }
}

/// Pearson correlation of the pixel values. A constant patch has no correlation to measure: two
/// equal constant patches count as identical (1), a constant and a non-constant one as unrelated (0).
pub fn ncc(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().max(1) as f64;
    let (ma, mb) = (a.iter().map(|&v| v as f64).sum::<f64>() / n, b.iter().map(|&v| v as f64).sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    const TINY: f64 = 1e-20;
    match (saa > TINY, sbb > TINY) {
        (true, true) => sab / (saa * sbb).sqrt(),
        (false, false) if (ma - mb).abs() < 1e-9 => 1.0,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(p: usize) -> Vec<f32> {
        (0..p * p).map(|i| ((i * 37 % 101) as f32) / 100.0).collect()
    }

    #[test]
    fn identical_patches_are_perfectly_similar() {
        let a = ramp(20);
        assert!((ssim(&a, &a, 20) - 1.0).abs() < 1e-12);
        assert_eq!(rmse(&a, &a), 0.0);
        assert_eq!(psnr_db(0.0), f64::INFINITY);
        assert!((ncc(&a, &a) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ssim_of_a_constant_offset_matches_the_formula() {
        // b = a + c: variances and covariance unchanged, only the luminance term moves:
        // SSIM = mean over windows of (2·ux·(ux+c) + C1) / (ux² + (ux+c)² + C1).
        let p = 9;
        let a = ramp(p);
        let c = 0.2f32;
        let b: Vec<f32> = a.iter().map(|v| v + c).collect();
        let mut expect = 0.0;
        for y in 0..3 {
            for x in 0..3 {
                let mut s = 0.0;
                for dy in 0..7 {
                    for dx in 0..7 {
                        s += a[(y + dy) * p + x + dx] as f64;
                    }
                }
                let ux = s / 49.0;
                let uy = ux + c as f64;
                expect += (2.0 * ux * uy + 1e-4) / (ux * ux + uy * uy + 1e-4);
            }
        }
        expect /= 9.0;
        assert!((ssim(&a, &b, p) - expect).abs() < 1e-6, "{} vs {expect}", ssim(&a, &b, p));
    }

    #[test]
    fn ncc_and_rmse_by_hand() {
        let a = [0.0f32, 1.0, 2.0, 3.0];
        let b = [3.0f32, 2.0, 1.0, 0.0];
        assert!((ncc(&a, &b) + 1.0).abs() < 1e-12);
        assert!((rmse(&a, &b) - 5f64.sqrt()).abs() < 1e-12);
        assert!((psnr_db(0.1) - 20.0).abs() < 1e-9);
        assert_eq!(ncc(&[1.0; 4], &[1.0; 4]), 1.0);
        assert_eq!(ncc(&[1.0; 4], &a), 0.0);
    }
}
