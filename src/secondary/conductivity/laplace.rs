//! Effective conductivity of a pixel map: Laplace's equation ∇·(σ∇V) = 0 on the pixel grid with
//! V = 1 and V = 0 on two opposite edges and no current through the other two, solved by
//! Jacobi-preconditioned conjugate gradients.
//!
//! Neighbouring pixels are joined by the harmonic mean of their conductivities, 2σaσb/(σa+σb) (two
//! half-pixel resistors in series); an electrode touches its edge pixels through half a pixel, 2σ.
//! With that discretisation a map of columns in series gives exactly the harmonic mean of the column
//! conductivities and a map of rows in parallel their arithmetic mean (the unit tests check both).

/// Which way the current flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Electrodes on the left and right edges.
    X,
    /// Electrodes on the top and bottom edges.
    Y,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Solve {
    /// Effective conductivity in the units of the map.
    pub sigma_eff: f64,
    pub iterations: usize,
    /// ‖b − Av‖ / ‖b‖ at the end.
    pub relative_residual: f64,
}

/// Relative residual at which CG stops; the effective conductivity is then good to ~1e-6.
pub const TOLERANCE: f64 = 1e-9;

fn harmonic(a: f64, b: f64) -> f64 {
    if a + b > 0.0 { 2.0 * a * b / (a + b) } else { 0.0 }
}

/// Effective conductivity of `sigma` (`h × w`, row-major, every value > 0) between the two edges
/// facing `dir`.
pub fn effective_conductivity(sigma: &[f64], w: usize, h: usize, dir: Direction) -> Solve {
    match dir {
        Direction::X => solve_x(sigma, w, h),
        Direction::Y => {
            let mut t = vec![0.0; sigma.len()];
            for y in 0..h {
                for x in 0..w {
                    t[x * h + y] = sigma[y * w + x];
                }
            }
            solve_x(&t, h, w)
        }
    }
}

/// Current flows along x: V = 1 left of column 0, V = 0 right of column w − 1.
fn solve_x(sigma: &[f64], w: usize, h: usize) -> Solve {
    let n = w * h;
    if n == 0 {
        return Solve { sigma_eff: 0.0, iterations: 0, relative_residual: 0.0 };
    }
    // Link conductances: gx[y*(w-1)+x] joins (x, y)–(x+1, y); gy[y*w+x] joins (x, y)–(x, y+1).
    let gx: Vec<f64> =
        (0..h).flat_map(|y| (0..w.saturating_sub(1)).map(move |x| (y, x))).map(|(y, x)| harmonic(sigma[y * w + x], sigma[y * w + x + 1])).collect();
    let gy: Vec<f64> = (0..h.saturating_sub(1)).flat_map(|y| (0..w).map(move |x| (y, x))).map(|(y, x)| harmonic(sigma[y * w + x], sigma[(y + 1) * w + x])).collect();
    let g_left: Vec<f64> = (0..h).map(|y| 2.0 * sigma[y * w]).collect();
    let g_right: Vec<f64> = (0..h).map(|y| 2.0 * sigma[y * w + w - 1]).collect();
    let mut diag = vec![0.0; n];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let mut d = 0.0;
            if x > 0 {
                d += gx[y * (w - 1) + x - 1];
            }
            if x + 1 < w {
                d += gx[y * (w - 1) + x];
            }
            if y > 0 {
                d += gy[(y - 1) * w + x];
            }
            if y + 1 < h {
                d += gy[y * w + x];
            }
            if x == 0 {
                d += g_left[y];
            }
            if x + 1 == w {
                d += g_right[y];
            }
            diag[i] = d;
        }
    }
    let apply = |v: &[f64], out: &mut [f64]| {
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let mut s = diag[i] * v[i];
                if x > 0 {
                    s -= gx[y * (w - 1) + x - 1] * v[i - 1];
                }
                if x + 1 < w {
                    s -= gx[y * (w - 1) + x] * v[i + 1];
                }
                if y > 0 {
                    s -= gy[(y - 1) * w + x] * v[i - w];
                }
                if y + 1 < h {
                    s -= gy[y * w + x] * v[i + w];
                }
                out[i] = s;
            }
        }
    };
    let mut b = vec![0.0; n];
    for y in 0..h {
        b[y * w] = g_left[y];
    }
    // A linear ramp is the exact answer for a uniform map and a good start for any other.
    let mut v: Vec<f64> = (0..n).map(|i| 1.0 - ((i % w) as f64 + 0.5) / w as f64).collect();
    let mut r = vec![0.0; n];
    apply(&v, &mut r);
    for i in 0..n {
        r[i] = b[i] - r[i];
    }
    let b_norm = b.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
    let inv_diag: Vec<f64> = diag.iter().map(|&d| if d > 0.0 { 1.0 / d } else { 1.0 }).collect();
    let mut z: Vec<f64> = r.iter().zip(&inv_diag).map(|(a, b)| a * b).collect();
    let mut p = z.clone();
    let mut rz: f64 = r.iter().zip(&z).map(|(a, b)| a * b).sum();
    let mut ap = vec![0.0; n];
    let max_iter = 20 * n + 100;
    let mut it = 0;
    let mut res = r.iter().map(|x| x * x).sum::<f64>().sqrt() / b_norm;
    while res > TOLERANCE && it < max_iter {
        apply(&p, &mut ap);
        let pap: f64 = p.iter().zip(&ap).map(|(a, b)| a * b).sum();
        if pap <= 0.0 {
            break;
        }
        let alpha = rz / pap;
        for i in 0..n {
            v[i] += alpha * p[i];
            r[i] -= alpha * ap[i];
        }
        for i in 0..n {
            z[i] = r[i] * inv_diag[i];
        }
        let rz_new: f64 = r.iter().zip(&z).map(|(a, b)| a * b).sum();
        let beta = rz_new / rz;
        rz = rz_new;
        for i in 0..n {
            p[i] = z[i] + beta * p[i];
        }
        res = r.iter().map(|x| x * x).sum::<f64>().sqrt() / b_norm;
        it += 1;
    }
    // Current into the left electrode's pixels, per unit potential; σ_eff = I · length / section.
    let current: f64 = (0..h).map(|y| g_left[y] * (1.0 - v[y * w])).sum();
    Solve { sigma_eff: current * w as f64 / h as f64, iterations: it, relative_residual: res }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_map_gives_its_conductivity() {
        let s = effective_conductivity(&vec![3.5; 12 * 7], 12, 7, Direction::X);
        assert!((s.sigma_eff - 3.5).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn columns_in_series_give_the_harmonic_mean_rows_in_parallel_the_arithmetic() {
        let (w, h) = (9, 6);
        let col = [1.0, 0.01, 2.0, 0.5, 1.0, 3.0, 0.2, 1.0, 1.0];
        let map: Vec<f64> = (0..w * h).map(|i| col[i % w]).collect();
        let harmonic = w as f64 / col.iter().map(|c| 1.0 / c).sum::<f64>();
        let arithmetic = col.iter().sum::<f64>() / w as f64;
        let sx = effective_conductivity(&map, w, h, Direction::X);
        let sy = effective_conductivity(&map, w, h, Direction::Y);
        assert!((sx.sigma_eff / harmonic - 1.0).abs() < 1e-6, "{sx:?} vs {harmonic}");
        assert!((sy.sigma_eff / arithmetic - 1.0).abs() < 1e-6, "{sy:?} vs {arithmetic}");
    }

    #[test]
    fn an_insulating_wall_blocks_and_a_gap_in_it_lets_current_through() {
        let (w, h) = (10, 10);
        let mut map = vec![1.0; w * h];
        for y in 0..h {
            map[y * w + 5] = 1e-6;
        }
        let blocked = effective_conductivity(&map, w, h, Direction::X).sigma_eff;
        map[4 * w + 5] = 1.0;
        let open = effective_conductivity(&map, w, h, Direction::X).sigma_eff;
        assert!(blocked < 1e-4, "{blocked}");
        assert!(open > 100.0 * blocked && open < 0.5, "{open}");
    }
}
