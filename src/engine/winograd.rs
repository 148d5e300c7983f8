//! Winograd's minimal filtering for the 3×3, stride-1 convolutions on small maps: fewer
//! multiplications than the padding-free classes of [`super::plan`], exact up to rounding.
//!
//! Along each axis the map is cut into as few tiles as cover it, of 3 to 5 outputs each, F(3,3) to
//! F(5,3): a tile of `m` outputs reads `m + 2` inputs and multiplies at `m + 2` *points*. In 2D the
//! points of a tile pair multiply pointwise, so a convolution becomes one `n × cin · cin × cout` GEMM
//! per point of the map's point grid. On ResNet-18's 5×5 maps (20 px patches, layer1) that is one
//! F(5,3) tile per axis, 7 × 7 = 49 GEMMs where the classes multiply 13 × 13 = 169 position-taps,
//! and on the 3×3 maps (layer2) 5 × 5 = 25 where they multiply 7 × 7 = 49: 3.4× and 2.0× fewer
//! multiply-adds, for two linear passes (input and output transforms) around the GEMMs, whose cost
//! `cpu::winograd` reports. A 2-long axis is one 2×2 Toeplitz product in 3 points ([`T2_BT`]), so
//! layer3's 2×2 maps take 9 GEMMs for 16 position-taps.
//!
//! The transforms are Toom–Cook interpolation (Lavin & Gray 2016) at the points {0, 1, −1, ½, ∞}
//! (F(3,3)), adding −½ (F(4,3)) and 2 (F(5,3)); F(2,3) at {0, 1, −1, ∞} is kept for its tables,
//! which the tests check. The input tables are the interpolation's, computed in f64 from the points
//! with each row scaled to the smallest integers (the tests hold F(2,3)'s and F(3,3)'s to the
//! tables as written out by hand), so they and the output tables (powers of ½ and 2) are exact in
//! f32; the filter transform `G` takes the rows' scales and is applied to the weights once, in
//! f64. Each larger
//! tile costs accuracy: with F(3,3) and F(2,3) tiles a convolution moved by at most 7.8e-7 of its
//! largest output against the classes, with F(4,3) and F(5,3) by 2.4e-6 (`tests/golden.rs`, bound
//! 5e-6), and the trunk stays within 5.9e-6 of PyTorch's layer taps (bound 1e-4).

use super::network::FoldedConv;

/// Largest tile: F(5,3), 7 points.
pub const MAX_TILE: usize = 5;

/// Evaluation points of F(m, 3) other than ∞: each set extends the one before by a point that keeps
/// the tables' entries small (Lavin & Gray's ±½ and 2).
fn points(m: usize) -> &'static [f64] {
    match m {
        2 => &[0.0, 1.0, -1.0],
        3 => &[0.0, 1.0, -1.0, 0.5],
        4 => &[0.0, 1.0, -1.0, 0.5, -0.5],
        5 => &[0.0, 1.0, -1.0, 0.5, -0.5, 2.0],
        _ => unreachable!("tiles of 2 to {MAX_TILE} outputs"),
    }
}

/// Each row scaled to the smallest integers (exact in f32): by the least multiplier that makes
/// every entry whole, then by the entries' common divisor.
fn integer_rows(rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let whole = |v: f64| (v - v.round()).abs() < 1e-9;
    rows.iter()
        .map(|r| {
            let s = (1..=1 << 12).map(f64::from).find(|s| r.iter().all(|e| whole(e * s))).expect("rational rows");
            let ints: Vec<i64> = r.iter().map(|e| (e * s).round() as i64).collect();
            let gcd = ints.iter().fold(0i64, |a, &b| {
                let (mut a, mut b) = (a.abs(), b.abs());
                while b != 0 {
                    (a, b) = (b, a % b);
                }
                a
            });
            ints.iter().map(|&v| (v / gcd.max(1)) as f64).collect()
        })
        .collect()
}

/// F(m, 3) in one dimension: `y = Aᵀ [(G g) ⊙ (Bᵀ d)]` for `m` outputs of a 3-tap correlation over
/// `m + 2` inputs.
struct Transform1d {
    /// `m × n`.
    at: Vec<Vec<f64>>,
    /// `n × 3`.
    g: Vec<[f64; 3]>,
    /// `n × n`.
    bt: Vec<Vec<f64>>,
}

/// Gauss–Jordan inverse of a small, well-conditioned matrix (Vandermonde at ≤ 7 points).
fn invert(mut a: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut inv: Vec<Vec<f64>> = (0..n).map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect();
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap_or(c);
        a.swap(c, p);
        inv.swap(c, p);
        let d = a[c][c];
        for j in 0..n {
            a[c][j] /= d;
            inv[c][j] /= d;
        }
        for i in 0..n {
            if i != c {
                let f = a[i][c];
                for j in 0..n {
                    a[i][j] -= f * a[c][j];
                    inv[i][j] -= f * inv[c][j];
                }
            }
        }
    }
    inv
}

impl Transform1d {
    /// Toom–Cook: the product of polynomials of degrees `m − 1` (a tile of outputs, transposed) and
    /// 2 (the filter) is evaluated at `n = m + 2` points and interpolated; correlation is its
    /// transpose. `V` evaluates degree < n at the points (row ∞ takes the leading coefficient), so
    /// `Aᵀ = V_mᵀ`, `G = V_3`, `Bᵀ = (V⁻¹)ᵀ`. Each row of `Bᵀ` is scaled to the smallest integers
    /// ([`integer_rows`]), the scale moved into `G` (applied to the weights once, in f64).
    fn new(m: usize) -> Self {
        let n = m + 2;
        let pts = points(m);
        let row = |j: usize, len: usize| -> Vec<f64> {
            match pts.get(j) {
                Some(&a) => (0..len).map(|l| a.powi(l as i32)).collect(),
                None => (0..len).map(|l| if l == len - 1 { 1.0 } else { 0.0 }).collect(),
            }
        };
        let v: Vec<Vec<f64>> = (0..n).map(|j| row(j, n)).collect();
        let vi = invert(v);
        let exact: Vec<Vec<f64>> = (0..n).map(|j| (0..n).map(|l| vi[l][j]).collect()).collect();
        let table = integer_rows(&exact);
        let mut g: Vec<[f64; 3]> = (0..n).map(|j| row(j, 3).try_into().expect("3 coefficients")).collect();
        for ((e, t), gj) in exact.iter().zip(&table).zip(&mut g) {
            let l = (0..n).max_by(|&a, &b| t[a].abs().total_cmp(&t[b].abs())).unwrap_or(0);
            let s = e[l] / t[l];
            assert!(e.iter().zip(t).all(|(e, t)| (e - s * t).abs() < 1e-9), "Bᵀ table is not (V⁻¹)ᵀ scaled by rows");
            gj.iter_mut().for_each(|v| *v *= s);
        }
        let bt = table;
        let at = (0..m).map(|i| (0..n).map(|j| row(j, m)[i]).collect()).collect();
        Self { at, g, bt }
    }
}

/// A 2-long axis (pad 1) as one 2×2 Toeplitz product, `y0 = w1·x0 + w2·x1`, `y1 = w0·x0 + w1·x1`,
/// in 3 multiplications instead of F(2,3)'s 4 (which would also multiply the two padding inputs):
/// `y0 = w1·(x0 + x1) + (w2 − w1)·x1`, `y1 = w1·(x0 + x1) + (w0 − w1)·x0`. Its input transform over
/// `(x0, x1)`, filter transform and output transform:
pub const T2_BT: [[f32; 2]; 3] = [[1., 1.], [0., 1.], [1., 0.]];
const T2_G: [[f64; 3]; 3] = [[0., 1., 0.], [0., -1., 1.], [1., -1., 0.]];
pub const T2_AT: [[f32; 3]; 2] = [[1., 1., 0.], [1., 0., 1.]];

/// A linear map's rows: per output row, the input rows it sums and their coefficients.
pub type TermRows = Vec<Vec<(usize, f32)>>;

/// One axis of length `len` (input = output, pad 1) cut into tiles, and its transforms.
#[derive(Clone, Debug)]
pub struct Axis {
    pub len: usize,
    /// Per point: the input coordinates it reads and their coefficients (`Bᵀ`, padding dropped).
    pub input_terms: Vec<Vec<(usize, f32)>>,
    /// Per output coordinate: the points it sums and their coefficients (`Aᵀ`).
    pub output_terms: Vec<Vec<(usize, f32)>>,
    /// Per point: the filter transform's row (`G`), for the weights.
    g: Vec<[f64; 3]>,
}

/// A table row's nonzero coefficients with their indices.
fn nonzero(row: &[f32]) -> impl Iterator<Item = (usize, f32)> + '_ {
    row.iter().copied().enumerate().filter(|&(_, c)| c != 0.0)
}

impl Axis {
    /// Tile sizes covering `len` outputs: the fewest tiles of at most [`MAX_TILE`] outputs.
    fn tile_sizes(len: usize) -> Vec<usize> {
        match len {
            0 | 1 => vec![],
            2 => vec![2],
            _ => {
                // As few tiles as cover the axis (each adds 2 points), as even as they can be.
                let tiles = len.div_ceil(MAX_TILE);
                (0..tiles).map(|i| len / tiles + usize::from(i < len % tiles)).collect()
            }
        }
    }

    fn new(len: usize) -> Self {
        let mut axis = Self { len, input_terms: Vec::new(), output_terms: vec![Vec::new(); len], g: Vec::new() };
        if len == 2 {
            axis.input_terms = T2_BT.iter().map(|r| nonzero(r).collect()).collect();
            axis.output_terms = T2_AT.iter().map(|r| nonzero(r).collect()).collect();
            axis.g = T2_G.to_vec();
            return axis;
        }
        let mut o0 = 0;
        for m in Self::tile_sizes(len) {
            let first_point = axis.g.len();
            let t = Transform1d::new(m);
            axis.g.extend(&t.g);
            // Small integers and powers of 2 and ½: exact in f32.
            let f32_rows = |rows: &[Vec<f64>]| -> Vec<Vec<f32>> {
                rows.iter().map(|r| r.iter().map(|&v| v as f32).collect()).collect()
            };
            let (bt, at) = (f32_rows(&t.bt), f32_rows(&t.at));
            for row in &bt {
                // Local input l is coordinate o0 − 1 + l; those off the map are padding (zero).
                let terms =
                    nonzero(row).filter_map(|(l, c)| (o0 + l).checked_sub(1).filter(|&i| i < len).map(|i| (i, c)));
                axis.input_terms.push(terms.collect());
            }
            for (i, row) in at.iter().enumerate() {
                axis.output_terms[o0 + i] = nonzero(row).map(|(j, c)| (first_point + j, c)).collect();
            }
            o0 += m;
        }
        axis
    }

    pub fn points(&self) -> usize {
        self.g.len()
    }

    /// Whether every coefficient of the input and output transforms is ±1.
    pub fn unit_coefficients(&self) -> bool {
        self.input_terms.iter().chain(&self.output_terms).flatten().all(|&(_, c)| c.abs() == 1.0)
    }
}

/// A 3×3, stride-1, pad-1 convolution as pointwise GEMMs: transforms of both axes, the slot maps of
/// input and output, and the transformed weights.
#[derive(Clone, Debug)]
pub struct Winograd {
    pub y: Axis,
    pub x: Axis,
    /// spatial index (y·w + x) → input slot.
    pub input_slot: Vec<usize>,
    /// spatial index → output slot.
    pub output_slot: Vec<usize>,
    /// `[point][cin][cout]`, point = py · x.points() + px: `U = G w Gᵀ`.
    pub weight: Vec<f32>,
    /// Multiply-adds per patch in the GEMMs.
    pub macs: usize,
    /// Patches per pass (transform, GEMMs, transform): see [`Winograd::plan`].
    pub group: usize,
}

/// Most patches per pass. A pass's transformed input and products then stay near L2 while the
/// GEMMs read one and write the other (1.1 MiB each at 96 patches on a 5×5 map with 64 channels).
/// Measured on the 2-core Intel Xeon (Emerald Rapids, 2 MiB L2), `bench --size 1020 --layers`, one
/// run each, with the 5×5 (then F(3,3) + F(2,3), 81 points) and 3×3 maps as Winograd: 192 patches
/// (the whole chunk) 225 ms per frame, 96 221, 64 214, 32 225, 16 229; the classes alone took 231.
/// With F(5,3) on the 5×5 maps (49 points), alternating rounds of `bench`: 96 patches 166.2 ms per
/// frame against 169.6 for 64 (6 rounds, 96 faster in each), 128 166.8 (4 rounds); at 32 px 106.0
/// against 113.9 (3 rounds).
pub const MAX_GROUP: usize = 96;
/// Fewest patches per pass: below this the GEMMs (`patches × cin · cin × cout`) grow too short, and
/// a map whose pass would not hold this many within the byte limit keeps its classes.
pub const MIN_GROUP: usize = 16;

impl Winograd {
    /// For a 3×3, stride-1, pad-1 convolution on an `h × w` map, when its point grid multiplies
    /// fewer than `max_fraction` of `direct_position_taps` (the padding-free classes' count) and a
    /// pass of at least [`MIN_GROUP`] patches keeps its transformed input and products (f32, points
    /// × (cin + cout) per patch) within `pass_bytes`; else `None`. The pass then takes as many
    /// patches as fit, at most [`MAX_GROUP`]. `in_order` / `out_order`: slot → spatial index.
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        conv: &FoldedConv,
        h: usize,
        w: usize,
        in_order: &[usize],
        out_order: &[usize],
        direct_position_taps: usize,
        max_fraction: f64,
        pass_bytes: usize,
    ) -> Option<Self> {
        if (conv.k, conv.stride, conv.pad) != (3, 1, 1) || h < 2 || w < 2 {
            return None;
        }
        let (y, x) = (Axis::new(h), Axis::new(w));
        let points = y.points() * x.points();
        if points as f64 > max_fraction * direct_position_taps as f64 {
            return None;
        }
        let bytes_per_patch = points * (conv.cin + conv.cout) * std::mem::size_of::<f32>();
        let group = (pass_bytes / bytes_per_patch.max(1)).min(MAX_GROUP);
        if group < MIN_GROUP {
            return None;
        }
        let inverse = |order: &[usize]| {
            let mut slot = vec![usize::MAX; h * w];
            for (s, &sp) in order.iter().enumerate() {
                slot[sp] = s;
            }
            slot
        };
        let (cin, cout) = (conv.cin, conv.cout);
        let mut weight = vec![0f32; points * cin * cout];
        for (py, gy) in y.g.iter().enumerate() {
            for (px, gx) in x.g.iter().enumerate() {
                let u = &mut weight[(py * x.points() + px) * cin * cout..][..cin * cout];
                for ci in 0..cin {
                    for co in 0..cout {
                        let mut s = 0f64;
                        for (ky, a) in gy.iter().enumerate() {
                            for (kx, b) in gx.iter().enumerate() {
                                s += a * b * conv.w(co, ci, ky, kx) as f64;
                            }
                        }
                        u[ci * cout + co] = s as f32;
                    }
                }
            }
        }
        Some(Self {
            input_slot: inverse(in_order),
            output_slot: inverse(out_order),
            weight,
            macs: points * cin * cout,
            group,
            y,
            x,
        })
    }

    pub fn points(&self) -> usize {
        self.y.points() * self.x.points()
    }

    /// Both transforms written out in 2D: per point, the input slots it sums and their
    /// coefficients (`Bᵀ` of y times `Bᵀ` of x); per output slot, the points it sums (`Aᵀ` times
    /// `Aᵀ`). A term list is as long as the product of the axes' (≤ 4 for 2-long axes), so this
    /// suits the small tiles the bf16 path takes, where it needs no intermediate.
    pub fn direct_terms(&self) -> (TermRows, TermRows) {
        let (wd, px_n) = (self.x.len, self.x.points());
        let input = (0..self.points())
            .map(|pt| {
                let (ty, tx) = (&self.y.input_terms[pt / px_n], &self.x.input_terms[pt % px_n]);
                ty.iter()
                    .flat_map(|&(iy, a)| tx.iter().map(move |&(ix, b)| (iy * wd + ix, a * b)))
                    .map(|(sp, c)| (self.input_slot[sp], c))
                    .collect()
            })
            .collect();
        let mut output = vec![Vec::new(); self.y.len * wd];
        for (oy, ty) in self.y.output_terms.iter().enumerate() {
            for (ox, tx) in self.x.output_terms.iter().enumerate() {
                output[self.output_slot[oy * wd + ox]] =
                    ty.iter().flat_map(|&(py, a)| tx.iter().map(move |&(px, b)| (py * px_n + px, a * b))).collect();
            }
        }
        (input, output)
    }

    /// Whether every coefficient of the input and output transforms is ±1 (2-long axes; F(3,3)'s
    /// tables have 2, 3, ½ and ¼, the larger tiles' larger ones). Only then does the bf16 path use these GEMMs: it
    /// rounds the transformed input and the products to bf16, and larger coefficients amplify
    /// those roundings (README "Precision").
    pub fn unit_coefficients(&self) -> bool {
        self.y.unit_coefficients() && self.x.unit_coefficients()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// F(2,3)'s input transform `Bᵀ` at {0, 1, −1, ∞}: each row of `(V⁻¹)ᵀ` scaled to small integers
    /// (the scale goes into `G`, applied to the weights once).
    const BT2: [[f32; 4]; 4] = [[1., 0., -1., 0.], [0., 1., 1., 0.], [0., -1., 1., 0.], [0., -1., 0., 1.]];
    /// F(3,3)'s `Bᵀ` at {0, 1, −1, ½, ∞}, rows scaled likewise.
    const BT3: [[f32; 5]; 5] = [
        [1., -2., -1., 2., 0.],
        [0., -1., 1., 2., 0.],
        [0., -1., 3., -2., 0.],
        [0., 1., 0., -1., 0.],
        [0., 1., -2., -1., 2.],
    ];
    /// F(2,3)'s output transform `Aᵀ` (fixed by the points).
    const AT2: [[f32; 4]; 2] = [[1., 1., 1., 0.], [0., 1., -1., 1.]];
    /// F(3,3)'s `Aᵀ`.
    const AT3: [[f32; 5]; 3] = [[1., 1., 1., 1., 0.], [0., 1., -1., 0.5, 0.], [0., 1., 1., 0.25, 1.]];

    /// y = Aᵀ[(G g) ⊙ (Bᵀ d)] equals the 3-tap correlation, in f64, for every tile size.
    #[test]
    fn one_dimensional_transforms_correlate() {
        for m in 2..=MAX_TILE {
            let t = Transform1d::new(m);
            let d: Vec<f64> = (0..m + 2).map(|i| (i as f64 * 0.7).sin() + 0.3).collect();
            let g = [0.5, -1.25, 2.0];
            let gg: Vec<f64> = t.g.iter().map(|r| r.iter().zip(&g).map(|(a, b)| a * b).sum()).collect();
            let bd: Vec<f64> = t.bt.iter().map(|r| r.iter().zip(&d).map(|(a, b)| a * b).sum()).collect();
            for i in 0..m {
                let y: f64 = t.at[i].iter().enumerate().map(|(j, a)| a * gg[j] * bd[j]).sum();
                let want: f64 = (0..3).map(|k| g[k] * d[i + k]).sum();
                assert!((y - want).abs() < 1e-12, "F({m},3) output {i}: {y} vs {want}");
            }
            // Aᵀ and the derived Bᵀ as written out for F(2,3) and F(3,3).
            let (at, bt): (Vec<Vec<f32>>, Vec<Vec<f32>>) = match m {
                2 => (AT2.iter().map(|r| r.to_vec()).collect(), BT2.iter().map(|r| r.to_vec()).collect()),
                3 => (AT3.iter().map(|r| r.to_vec()).collect(), BT3.iter().map(|r| r.to_vec()).collect()),
                _ => continue,
            };
            for (a, b) in t.at.iter().zip(&at).chain(t.bt.iter().zip(&bt)) {
                assert!(a.iter().zip(b).all(|(a, b)| (a - *b as f64).abs() < 1e-12), "F({m},3) {a:?} vs {b:?}");
            }
        }
    }

    /// Along a whole axis of any length, `Aᵀ[(G w) ⊙ (Bᵀ x)]` is the pad-1, 3-tap correlation.
    #[test]
    fn every_axis_correlates_with_its_padding() {
        for len in 2..12 {
            let axis = Axis::new(len);
            let x: Vec<f64> = (0..len).map(|i| (i as f64 * 0.9).cos() - 0.2).collect();
            let w = [0.75, -1.5, 2.25];
            let u: Vec<f64> = axis.g.iter().map(|r| r.iter().zip(&w).map(|(a, b)| a * b).sum()).collect();
            let v: Vec<f64> = axis.input_terms.iter().map(|t| t.iter().map(|&(i, c)| c as f64 * x[i]).sum()).collect();
            for (o, terms) in axis.output_terms.iter().enumerate() {
                let y: f64 = terms.iter().map(|&(p, c)| c as f64 * u[p] * v[p]).sum();
                let want: f64 =
                    (0..3).filter_map(|k| (o + k).checked_sub(1).filter(|&i| i < len).map(|i| w[k] * x[i])).sum();
                assert!((y - want).abs() < 1e-12, "length {len}, output {o}: {y} vs {want}");
            }
        }
    }

    /// The 2D terms ([`Winograd::direct_terms`]) with the transformed weights give the pad-1 3×3
    /// correlation, slot orders included.
    #[test]
    fn direct_terms_correlate_in_two_dimensions() {
        for (h, w) in [(2, 2), (2, 5), (3, 3), (5, 5), (4, 7)] {
            let k: Vec<f32> = (0..9).map(|i| ((i * 7 % 9) as f32 - 4.0) * 0.25).collect();
            let conv = FoldedConv { cout: 1, cin: 1, k: 3, stride: 1, pad: 1, weight: k.clone(), bias: vec![0.0] };
            // Slots in reverse spatial order, so the maps are exercised.
            let order: Vec<usize> = (0..h * w).rev().collect();
            let plan = Winograd::plan(&conv, h, w, &order, &order, 1, f64::INFINITY, usize::MAX);
            let wg = plan.expect("a Winograd plan");
            let (input, output) = wg.direct_terms();
            let x: Vec<f64> = (0..h * w).map(|i| (i as f64 * 0.61).sin()).collect();
            let slot_value = |s: usize| x[order[s]];
            let m: Vec<f64> = input
                .iter()
                .enumerate()
                .map(|(p, t)| wg.weight[p] as f64 * t.iter().map(|&(s, c)| c as f64 * slot_value(s)).sum::<f64>())
                .collect();
            for (s, t) in output.iter().enumerate() {
                let y: f64 = t.iter().map(|&(p, c)| c as f64 * m[p]).sum();
                let (oy, ox) = (order[s] / w, order[s] % w);
                let mut want = 0f64;
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = ((oy + ky).checked_sub(1), (ox + kx).checked_sub(1));
                        if let (Some(iy), Some(ix)) = (iy.filter(|&v| v < h), ix.filter(|&v| v < w)) {
                            want += k[ky * 3 + kx] as f64 * x[iy * w + ix];
                        }
                    }
                }
                assert!((y - want).abs() < 1e-5, "{h}×{w}, output ({oy}, {ox}): {y} vs {want}");
            }
        }
    }

    #[test]
    fn tiles_cover_the_axis() {
        for len in 2..40 {
            let t = Axis::tile_sizes(len);
            assert_eq!(t.iter().sum::<usize>(), len, "{len}: {t:?}");
            assert!(t.iter().all(|&m| (2..=MAX_TILE).contains(&m)));
            assert_eq!(t.len(), len.div_ceil(MAX_TILE), "{len}: {t:?}");
            assert!(t.iter().max().unwrap_or(&0) - t.iter().min().unwrap_or(&0) <= 1, "{len}: {t:?}");
            let axis = Axis::new(len);
            let points = if len == 2 { 3 } else { t.iter().map(|m| m + 2).sum::<usize>() };
            assert_eq!(axis.points(), points);
            assert_eq!((axis.input_terms.len(), axis.output_terms.len()), (points, len));
            // Every point reads the map, every output sums points that exist.
            assert!(axis.input_terms.iter().all(|t| !t.is_empty() && t.iter().all(|&(i, _)| i < len)));
            assert!(axis.output_terms.iter().all(|t| !t.is_empty() && t.iter().all(|&(p, _)| p < points)));
        }
        // The 2-long product has only ±1 in its transforms, F(3,3) to F(5,3) do not.
        let unit: Vec<bool> = (2..8).map(|len| Axis::new(len).unit_coefficients()).collect();
        assert_eq!(unit, [true, false, false, false, false, false]);
        assert_eq!(Axis::tile_sizes(5), vec![5]);
        assert_eq!(Axis::tile_sizes(8), vec![4, 4]);
        assert_eq!(Axis::tile_sizes(11), vec![4, 4, 3]);
        assert!(Axis::tile_sizes(1).is_empty());
    }
}
