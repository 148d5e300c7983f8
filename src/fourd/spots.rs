//! Bragg spots: found in the reference scan's mean pattern, integrated per scan.

use serde::{Deserialize, Serialize};

/// `[fourd.spots]`: how spots are found and integrated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpotOptions {
    /// At most this many spots (strongest first).
    pub max_spots: usize,
    /// Integration disk radius, px (`None`: from the spot's own width).
    pub radius_px: Option<f64>,
    /// A spot must stand this many noise σ above its local background.
    pub min_snr: f64,
}

impl Default for SpotOptions {
    fn default() -> Self {
        Self { max_spots: 24, radius_px: None, min_snr: 5.0 }
    }
}

/// One Bragg spot: position, integration disk and background annulus (px).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Spot {
    pub x_px: f64,
    pub y_px: f64,
    pub radius_px: f64,
    pub background_inner_px: f64,
    pub background_outer_px: f64,
}

/// Spot integration disk radius = this many σ of the spot's profile, plus one pixel (3σ holds
/// 99 % of a Gaussian; the extra pixel absorbs the pixel grid).
const RADIUS_SIGMAS: f64 = 3.0;
/// Background annulus of a spot: [r + 1, r + 3] px around its integration disk of radius r.
pub const BACKGROUND_GAP_PX: f64 = 1.0;
pub const BACKGROUND_WIDTH_PX: f64 = 2.0;

/// Spots in `mean` (the direct beam at `centre_px` with radius `bf_radius_px` excluded).
///
/// Candidates are the local maxima (5×5) of the lightly smoothed (3×3) pattern at ≥ 1.3× the
/// bright-field radius from the centre. For each, the position (background-subtracted centroid),
/// the profile width σ (second moment) and the local background are refined together; the
/// integration radius is 3σ + 1 px (or `opts.radius_px`), the background annulus
/// [r + 1, r + 3] px. A spot is kept when its integrated intensity stands `min_snr` noise σ
/// above zero, the noise per pixel being 1.4826 × the median absolute deviation of its background
/// annulus (0 noise in an exact pattern: kept when the intensity is positive). Kept spots are the
/// strongest first, disks not overlapping each other, disk and annulus fully on the detector and
/// clear of the bright-field disk; at most `max_spots`.
pub fn find_spots(
    mean: &[f64],
    width: usize,
    height: usize,
    centre_px: (f64, f64),
    bf_radius_px: f64,
    opts: &SpotOptions,
) -> Vec<Spot> {
    if width < 5 || height < 5 || mean.len() != width * height || opts.max_spots == 0 {
        return Vec::new();
    }
    let bf = if bf_radius_px.is_finite() && bf_radius_px > 0.0 { bf_radius_px } else { 0.0 };
    let s = super::detectors::box3(mean, width, height);
    let max_radius = (width.min(height) as f64 / 6.0).max(2.0);
    let mut candidates: Vec<Candidate> = Vec::new();
    for y in 2..height - 2 {
        for x in 2..width - 2 {
            let i = y * width + x;
            let v = s[i];
            if !v.is_finite() || dist((x as f64, y as f64), centre_px) < 1.3 * bf {
                continue;
            }
            // Strict maximum over earlier neighbours, ≥ over later ones: one winner on a plateau.
            let mut is_max = true;
            'win: for yy in y - 2..=y + 2 {
                for xx in x - 2..=x + 2 {
                    let j = yy * width + xx;
                    if j != i && (s[j] > v || (j < i && s[j] == v)) {
                        is_max = false;
                        break 'win;
                    }
                }
            }
            if !is_max {
                continue;
            }
            if let Some(c) = refine(mean, width, height, (x as f64, y as f64), opts.radius_px, max_radius) {
                candidates.push(c);
            }
        }
    }
    candidates.sort_by(|a, b| b.intensity.total_cmp(&a.intensity));
    let mut kept: Vec<Spot> = Vec::new();
    for c in candidates {
        if kept.len() >= opts.max_spots {
            break;
        }
        let spot = c.spot;
        let o = spot.background_outer_px;
        let inside = spot.x_px - o >= 0.0
            && spot.y_px - o >= 0.0
            && spot.x_px + o <= (width - 1) as f64
            && spot.y_px + o <= (height - 1) as f64;
        let clear_of_beam = dist((spot.x_px, spot.y_px), centre_px) >= bf + o;
        let apart = kept.iter().all(|k| dist((k.x_px, k.y_px), (spot.x_px, spot.y_px)) >= k.radius_px + spot.radius_px);
        if c.snr >= opts.min_snr && inside && clear_of_beam && apart {
            kept.push(spot);
        }
    }
    kept
}

struct Candidate {
    spot: Spot,
    intensity: f64,
    snr: f64,
}

fn spot_at(x: f64, y: f64, r: f64) -> Spot {
    Spot {
        x_px: x,
        y_px: y,
        radius_px: r,
        background_inner_px: r + BACKGROUND_GAP_PX,
        background_outer_px: r + BACKGROUND_GAP_PX + BACKGROUND_WIDTH_PX,
    }
}

/// Pixels (index, distance) within `outer` of `c`, clipped to the pattern.
fn pixels_within(width: usize, height: usize, c: (f64, f64), outer: f64) -> impl Iterator<Item = (usize, f64)> {
    let x0 = (c.0 - outer).floor().max(0.0) as usize;
    let y0 = (c.1 - outer).floor().max(0.0) as usize;
    let x1 = ((c.0 + outer).ceil().max(0.0) as usize).min(width.saturating_sub(1));
    let y1 = ((c.1 + outer).ceil().max(0.0) as usize).min(height.saturating_sub(1));
    (y0..=y1)
        .flat_map(move |y| (x0..=x1).map(move |x| (y * width + x, dist((x as f64, y as f64), c))))
        .filter(move |&(_, d)| d < outer)
}

/// Position, width and background of the spot near `start`, refined together a few times, with
/// its background-subtracted intensity and SNR; `None` when nothing stands above the background.
fn refine(
    mean: &[f64],
    width: usize,
    height: usize,
    start: (f64, f64),
    radius_px: Option<f64>,
    max_radius: f64,
) -> Option<Candidate> {
    let (mut c, mut r) = (start, radius_px.unwrap_or(3.0).clamp(1.0, max_radius));
    for _ in 0..4 {
        let spot = spot_at(c.0, c.1, r);
        let (bg, _) = background(mean, width, height, &spot, &[]);
        // A sloping background (the diffuse halo around the beam) would pull the centroid uphill:
        // take out the plane fitted to the annulus.
        let (gx, gy) = background_slope(mean, width, height, &spot);
        let (mut w, mut wx, mut wy) = (0.0, 0.0, 0.0);
        for (i, _) in pixels_within(width, height, c, r) {
            let v = mean[i] - bg - gx * ((i % width) as f64 - c.0) - gy * ((i / width) as f64 - c.1);
            w += v;
            wx += v * (i % width) as f64;
            wy += v * (i / width) as f64;
        }
        if w.is_nan() || w <= 0.0 {
            return None;
        }
        let nc = (wx / w, wy / w);
        // The centroid must stay on the maximum it started from (not slide to a neighbour).
        if dist(nc, start) > 2.0 {
            return None;
        }
        c = nc;
        if radius_px.is_none() {
            let mut w2 = 0.0;
            let mut m2 = 0.0;
            for (i, d) in pixels_within(width, height, c, r) {
                let v = mean[i] - bg;
                w2 += v;
                m2 += v * d * d;
            }
            // Per-axis σ² = ⟨r²⟩ / 2 for a round spot.
            let sigma = if w2 > 0.0 && m2 > 0.0 { (m2 / w2 / 2.0).sqrt() } else { 0.5 };
            r = (RADIUS_SIGMAS * sigma + 1.0).clamp(1.5, max_radius);
        }
    }
    let spot = spot_at(c.0, c.1, r);
    let (bg, noise) = background(mean, width, height, &spot, &[]);
    let (mut sum, mut n) = (0.0, 0.0);
    for (i, _) in pixels_within(width, height, c, r) {
        sum += mean[i];
        n += 1.0;
    }
    let intensity = sum - n * bg;
    let sigma_i = noise * n.sqrt() * (1.0 + n / annulus_area(&spot)).sqrt();
    let snr = if sigma_i > 0.0 {
        intensity / sigma_i
    } else if intensity > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    (intensity.is_finite() && intensity > 0.0).then_some(Candidate { spot, intensity, snr })
}

/// Slope (per px in x, in y) of the plane fitted to the spot's background annulus.
fn background_slope(img: &[f64], width: usize, height: usize, spot: &Spot) -> (f64, f64) {
    let c = (spot.x_px, spot.y_px);
    let pts: Vec<(f64, f64, f64)> = pixels_within(width, height, c, spot.background_outer_px)
        .filter(|&(_, d)| d >= spot.background_inner_px)
        .map(|(i, _)| ((i % width) as f64 - c.0, (i / width) as f64 - c.1, img[i]))
        .collect();
    if pts.len() < 3 {
        return (0.0, 0.0);
    }
    let n = pts.len() as f64;
    let (mx, my, mv) = pts.iter().fold((0.0, 0.0, 0.0), |a, p| (a.0 + p.0 / n, a.1 + p.1 / n, a.2 + p.2 / n));
    let (mut sxx, mut syy, mut sxy, mut sxv, mut syv) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(x, y, v) in &pts {
        let (x, y, v) = (x - mx, y - my, v - mv);
        sxx += x * x;
        syy += y * y;
        sxy += x * y;
        sxv += x * v;
        syv += y * v;
    }
    let det = sxx * syy - sxy * sxy;
    if det.abs() < 1e-12 || !det.is_finite() {
        return (0.0, 0.0);
    }
    ((sxv * syy - syv * sxy) / det, (syv * sxx - sxv * sxy) / det)
}

fn annulus_area(s: &Spot) -> f64 {
    std::f64::consts::PI * (s.background_outer_px.powi(2) - s.background_inner_px.powi(2))
}

/// Mean of the spot's background annulus (pixels inside another spot's disk left out) and the
/// per-pixel noise there (1.4826 × MAD).
fn background(img: &[f64], width: usize, height: usize, spot: &Spot, others: &[Spot]) -> (f64, f64) {
    let c = (spot.x_px, spot.y_px);
    let mut vals: Vec<f64> = pixels_within(width, height, c, spot.background_outer_px)
        .filter(|&(i, d)| {
            d >= spot.background_inner_px
                && !others.iter().any(|o| {
                    !std::ptr::eq(o, spot)
                        && dist(((i % width) as f64, (i / width) as f64), (o.x_px, o.y_px)) < o.radius_px
                })
        })
        .map(|(i, _)| img[i])
        .collect();
    if vals.is_empty() {
        return (0.0, 0.0);
    }
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    let med = super::detectors::median(&mut vals);
    let mut dev: Vec<f64> = vals.iter().map(|v| (v - med).abs()).collect();
    (mean, 1.4826 * super::detectors::median(&mut dev))
}

/// Background-subtracted integrated intensity of each spot in `summed` (a sum of patterns; the
/// operation is linear, so the sum of per-pattern intensities equals the intensity of the sum).
///
/// Intensity = Σ disk − (disk pixel count) × mean of the background annulus; annulus pixels that
/// fall inside another spot's disk are left out of that mean. Pixel centres at integer (x, y);
/// disk r < radius, annulus inner ≤ r < outer.
pub fn integrate_spots(summed: &[f64], width: usize, spots: &[Spot]) -> Vec<f64> {
    if width == 0 || !summed.len().is_multiple_of(width) {
        return vec![f64::NAN; spots.len()];
    }
    let height = summed.len() / width;
    spots
        .iter()
        .map(|spot| {
            let (bg, _) = background(summed, width, height, spot, spots);
            let (mut sum, mut n) = (0.0, 0.0);
            for (i, _) in pixels_within(width, height, (spot.x_px, spot.y_px), spot.radius_px) {
                sum += summed[i];
                n += 1.0;
            }
            sum - n * bg
        })
        .collect()
}

fn dist(a: (f64, f64), b: (f64, f64)) -> f64 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const W: usize = 96;
    const C: (f64, f64) = (47.6, 48.2);
    const SIGMA: f64 = 1.5;

    /// The lattice: spots at C + i·a + j·b (|i|,|j| ≤ 2, not the origin), amplitudes from `amp`.
    fn lattice() -> Vec<(f64, f64)> {
        let (a, b) = ((19.0, 3.0), (-2.5, 18.5));
        let mut v = Vec::new();
        for i in -2i32..=2 {
            for j in -2i32..=2 {
                if (i, j) != (0, 0) {
                    v.push((C.0 + i as f64 * a.0 + j as f64 * b.0, C.1 + i as f64 * a.1 + j as f64 * b.1));
                }
            }
        }
        v
    }

    /// Diffuse background + BF disk + Gaussian spots of total intensity `total(k)`; optional noise.
    fn pattern(total: impl Fn(usize) -> f64, noise: Option<u64>) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(noise.unwrap_or(0));
        let spots = lattice();
        let mut img = vec![0.0; W * W];
        for y in 0..W {
            for x in 0..W {
                let r = dist((x as f64, y as f64), C);
                let mut v = 5.0 + 40.0 * (-r / 25.0).exp() + 2000.0 * (9.0 - r + 0.5).clamp(0.0, 1.0);
                for (k, &(sx, sy)) in spots.iter().enumerate() {
                    let d2 = (x as f64 - sx).powi(2) + (y as f64 - sy).powi(2);
                    v += total(k) / (2.0 * std::f64::consts::PI * SIGMA * SIGMA) * (-d2 / (2.0 * SIGMA * SIGMA)).exp();
                }
                if noise.is_some() {
                    v += v.sqrt() * 0.1 * (rng.random::<f64>() - 0.5) * 3.46;
                }
                img[y * W + x] = v;
            }
        }
        img
    }

    fn amplitude(k: usize) -> f64 {
        800.0 + 60.0 * k as f64
    }

    #[test]
    fn lattice_spots_found_at_their_positions_with_their_intensity() {
        for noise in [None, Some(3)] {
            let img = pattern(amplitude, noise);
            let opts = SpotOptions { max_spots: 100, ..Default::default() };
            let found = find_spots(&img, W, W, C, 9.0, &opts);
            // Every lattice spot whose annulus lies on the detector and clear of the beam.
            let expected: Vec<(usize, (f64, f64))> = lattice()
                .into_iter()
                .enumerate()
                .filter(|&(_, (x, y))| x >= 9.0 && y >= 9.0 && x <= 86.0 && y <= 86.0)
                .collect();
            assert!(expected.len() >= 12, "{}", expected.len());
            assert_eq!(found.len(), expected.len(), "{noise:?}: {found:?}");
            let intensity = integrate_spots(&img, W, &found);
            for (k, (x, y)) in &expected {
                let (j, s) = found
                    .iter()
                    .enumerate()
                    .min_by(|a, b| {
                        dist((a.1.x_px, a.1.y_px), (*x, *y)).total_cmp(&dist((b.1.x_px, b.1.y_px), (*x, *y)))
                    })
                    .expect("spots");
                assert!(dist((s.x_px, s.y_px), (*x, *y)) < 0.2, "spot {k} at {x},{y}: found {s:?}");
                assert!(s.radius_px >= 4.0 && s.radius_px <= 7.0, "{s:?}");
                let rel = intensity[j] / amplitude(*k) - 1.0;
                assert!(rel.abs() < 0.02, "spot {k}: {} vs {} ({noise:?})", intensity[j], amplitude(*k));
            }
            // Strongest first.
            let first = found[0].clone();
            let strongest = expected.iter().max_by(|a, b| amplitude(a.0).total_cmp(&amplitude(b.0))).expect("some");
            assert!(dist((first.x_px, first.y_px), strongest.1) < 0.2);
        }
    }

    #[test]
    fn at_most_max_spots_and_weak_spots_fail_the_snr() {
        let img = pattern(amplitude, Some(4));
        let found = find_spots(&img, W, W, C, 9.0, &SpotOptions { max_spots: 3, ..Default::default() });
        assert_eq!(found.len(), 3);
        // Spots far below the noise are not found.
        let img = pattern(|_| 0.5, Some(4));
        let found = find_spots(&img, W, W, C, 9.0, &SpotOptions::default());
        assert!(found.is_empty(), "{found:?}");
        // A fixed radius is used as given.
        let img = pattern(amplitude, None);
        let found = find_spots(&img, W, W, C, 9.0, &SpotOptions { radius_px: Some(4.0), ..Default::default() });
        assert!(!found.is_empty() && found.iter().all(|s| s.radius_px == 4.0 && s.background_outer_px == 7.0));
    }

    #[test]
    fn integration_is_linear_and_subtracts_a_flat_background() {
        let spots = vec![spot_at(20.0, 20.0, 3.0)];
        let mut img = vec![10.0; 40 * 40];
        img[20 * 40 + 20] += 100.0;
        img[20 * 40 + 22] += 50.0;
        // r = 3: in neither the disk (r < 3) nor the annulus [4, 6).
        img[20 * 40 + 23] += 1000.0;
        let i = integrate_spots(&img, 40, &spots);
        assert_eq!(i, vec![150.0]);
        let doubled: Vec<f64> = img.iter().map(|v| v * 2.0).collect();
        assert_eq!(integrate_spots(&doubled, 40, &spots), vec![300.0]);
    }
}
