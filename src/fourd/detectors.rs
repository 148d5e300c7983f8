//! Virtual detectors: each pattern reduced to one number per detector.

use serde::{Deserialize, Serialize};

use super::FourDError;
use super::kernels::{self, Isa, MaskWeights};

/// What a virtual detector measures.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum DetectorKind {
    /// Disk around the centre; radius in detector pixels or (with `pixel_mrad`) mrad.
    Disk {
        radius_px: Option<f64>,
        radius_mrad: Option<f64>,
    },
    /// Annulus inner ≤ r < outer around the centre.
    Annulus {
        inner_px: Option<f64>,
        outer_px: Option<f64>,
        inner_mrad: Option<f64>,
        outer_mrad: Option<f64>,
    },
    /// Every valid pixel.
    Sum,
    /// Centre of mass, x (columns) or y (rows), in detector pixels relative to the centre.
    ComX,
    ComY,
}

/// A configured detector: a name (`bf`, `adf`, …) and what it measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
// Not deny_unknown_fields here: serde cannot combine it with `flatten` (every key would be
// refused, `kind` too); the flattened DetectorKind refuses unknown keys itself.
pub struct DetectorSpec {
    pub name: String,
    #[serde(flatten)]
    pub kind: DetectorKind,
}

/// bf (disk), adf (annulus), sum, com_x, com_y with radii relative to the detector size (resolved
/// against the found bright-field disk when radii are not given: see [`VirtualDetectors::new`]).
pub fn default_detectors() -> Vec<DetectorSpec> {
    let d = |name: &str, kind| DetectorSpec { name: name.into(), kind };
    vec![
        d("bf", DetectorKind::Disk { radius_px: None, radius_mrad: None }),
        d("adf", DetectorKind::Annulus { inner_px: None, outer_px: None, inner_mrad: None, outer_mrad: None }),
        d("sum", DetectorKind::Sum),
        d("com_x", DetectorKind::ComX),
        d("com_y", DetectorKind::ComY),
    ]
}

/// The detectors resolved for one pattern size and centre: pixel index lists, ready to apply.
///
/// Geometry convention: pixel (column x, row y) has its centre at (x, y) in detector pixels, so a
/// pattern's pixel `i` sits at (i % width, i / width). A disk holds the pixels whose centre is at
/// r < R from `centre_px`, an annulus those at inner ≤ r < outer. Centre of mass is the
/// intensity-weighted mean of (x − cx) resp. (y − cy) over the valid pixels (0 when they sum to 0).
#[derive(Clone, Debug)]
pub struct VirtualDetectors {
    pub names: Vec<String>,
    pub centre_px: (f64, f64),
    /// The bright-field disk radius used for defaults (found or configured), px.
    pub bf_radius_px: f64,
    pub width: usize,
    pub height: usize,
    outputs: Vec<Output>,
    /// Per mask detector: runs of consecutive pixel indices [start, end) (a disk or annulus is at
    /// most two runs per row, so summing runs is a few contiguous loops rather than a gather).
    masks: Vec<Vec<(u32, u32)>>,
    /// Per detector: (inner, outer) radius in px for disks and annuli (disk inner = 0).
    radii_px: Vec<Option<(f64, f64)>>,
    /// Column coordinates 0, 1, … as f64 for the x moment.
    xs: Vec<f64>,
    needs_moments: bool,
    /// Per mask detector: its dense weights, for the u16 path.
    weights: Vec<MaskWeights>,
    /// The instruction set the u16 kernels run with (detected once).
    isa: Isa,
}

#[derive(Clone, Copy, Debug)]
enum Output {
    Mask(usize),
    Sum,
    ComX,
    ComY,
}

/// One radius from its px or mrad setting: both set is ambiguous, mrad needs `pixel_mrad`,
/// neither gives `default` (None when the caller has no default).
fn radius_px(
    name: &str,
    what: &str,
    px: Option<f64>,
    mrad: Option<f64>,
    pixel_mrad: Option<f64>,
    default: Option<f64>,
) -> Result<f64, FourDError> {
    let err = |why: String| FourDError::Detector { name: name.into(), why };
    let r = match (px, mrad) {
        (Some(_), Some(_)) => return Err(err(format!("{what} given both in px and in mrad: give one"))),
        (Some(px), None) => px,
        (None, Some(mrad)) => match pixel_mrad {
            Some(p) if p.is_finite() && p > 0.0 => mrad / p,
            Some(p) => return Err(err(format!("{what} in mrad needs a positive pixel_mrad, got {p}"))),
            None => return Err(err(format!("{what} in mrad needs [fourd] pixel_mrad (mrad per detector pixel)"))),
        },
        (None, None) => match default {
            Some(d) => d,
            None => return Err(err(format!("{what} is not set"))),
        },
    };
    if !(r.is_finite() && r >= 0.0) {
        return Err(err(format!("{what} must be a finite radius ≥ 0 px, got {r}")));
    }
    Ok(r)
}

/// The radii settings of a spec checked on their own (both px and mrad, mrad without
/// `pixel_mrad`, explicit outer ≤ inner), before any pattern size or centre is known.
pub(crate) fn check_spec(spec: &DetectorSpec, pixel_mrad: Option<f64>) -> Result<(), FourDError> {
    let name = spec.name.as_str();
    match spec.kind {
        DetectorKind::Disk { radius_px: px, radius_mrad: mrad } => {
            radius_px(name, "radius", px, mrad, pixel_mrad, Some(1.0))?;
        }
        DetectorKind::Annulus { inner_px, outer_px, inner_mrad, outer_mrad } => {
            let inner = radius_px(name, "inner radius", inner_px, inner_mrad, pixel_mrad, Some(0.0))?;
            let explicit_outer = outer_px.is_some() || outer_mrad.is_some();
            let outer = radius_px(name, "outer radius", outer_px, outer_mrad, pixel_mrad, Some(0.0))?;
            let explicit_inner = inner_px.is_some() || inner_mrad.is_some();
            if explicit_inner && explicit_outer && outer <= inner {
                return Err(FourDError::Detector {
                    name: name.into(),
                    why: format!("outer radius {outer:.2} px ≤ inner radius {inner:.2} px"),
                });
            }
        }
        DetectorKind::Sum | DetectorKind::ComX | DetectorKind::ComY => {}
    }
    Ok(())
}

/// Whether a spec needs the bright-field radius for a default.
pub(crate) fn needs_bf_radius(spec: &DetectorSpec) -> bool {
    match spec.kind {
        DetectorKind::Disk { radius_px, radius_mrad } => radius_px.is_none() && radius_mrad.is_none(),
        DetectorKind::Annulus { inner_px, outer_px, inner_mrad, outer_mrad } => {
            (inner_px.is_none() && inner_mrad.is_none()) || (outer_px.is_none() && outer_mrad.is_none())
        }
        _ => false,
    }
}

/// Runs of pixel indices whose centre lies at inner ≤ r < outer from `c` (inner < 0: a disk).
fn ring_runs(width: usize, height: usize, c: (f64, f64), inner: f64, outer: f64) -> Vec<(u32, u32)> {
    let (inner2, outer2) = (if inner > 0.0 { inner * inner } else { -1.0 }, outer * outer);
    let mut runs = Vec::new();
    for y in 0..height {
        let dy2 = (y as f64 - c.1).powi(2);
        let mut start: Option<usize> = None;
        for x in 0..=width {
            let inside = x < width && {
                let r2 = (x as f64 - c.0).powi(2) + dy2;
                r2 >= inner2 && r2 < outer2
            };
            match (inside, start) {
                (true, None) => start = Some(x),
                (false, Some(s)) => {
                    runs.push(((y * width + s) as u32, (y * width + x) as u32));
                    start = None;
                }
                _ => {}
            }
        }
    }
    runs
}

/// Sum of f32 values in f64 with independent accumulators (so the compiler can vectorise; integer
/// data stays exact because every partial sum is an integer below 2^53).
#[inline]
fn sum_f64(v: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            acc[j] += c[j] as f64;
        }
    }
    let mut s: f64 = acc.iter().sum();
    for &x in rest {
        s += x as f64;
    }
    s
}

/// As [`sum_f64`], leaving out pixels marked invalid.
#[inline]
fn sum_f64_valid(v: &[f32], invalid: &[bool]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = v.chunks_exact(8).zip(invalid.chunks_exact(8));
    let n = v.len() - v.len() % 8;
    for (c, m) in chunks {
        for j in 0..8 {
            acc[j] += if m[j] { 0.0 } else { c[j] as f64 };
        }
    }
    let mut s: f64 = acc.iter().sum();
    for (&x, &m) in v[n..].iter().zip(&invalid[n..]) {
        if !m {
            s += x as f64;
        }
    }
    s
}

/// Row sum and x-weighted row sum (x = column index).
#[inline]
fn row_moments(row: &[f32], xs: &[f64], invalid: Option<&[bool]>) -> (f64, f64) {
    let mut s = [0.0f64; 4];
    let mut sx = [0.0f64; 4];
    let n = row.len() - row.len() % 4;
    match invalid {
        None => {
            for (c, x) in row[..n].chunks_exact(4).zip(xs[..n].chunks_exact(4)) {
                for j in 0..4 {
                    let v = c[j] as f64;
                    s[j] += v;
                    sx[j] += v * x[j];
                }
            }
        }
        Some(m) => {
            for ((c, x), m) in row[..n].chunks_exact(4).zip(xs[..n].chunks_exact(4)).zip(m[..n].chunks_exact(4)) {
                for j in 0..4 {
                    let v = if m[j] { 0.0 } else { c[j] as f64 };
                    s[j] += v;
                    sx[j] += v * x[j];
                }
            }
        }
    }
    let (mut s, mut sx) = (s.iter().sum::<f64>(), sx.iter().sum::<f64>());
    for i in n..row.len() {
        if invalid.is_some_and(|m| m[i]) {
            continue;
        }
        let v = row[i] as f64;
        s += v;
        sx += v * xs[i];
    }
    (s, sx)
}

impl VirtualDetectors {
    /// Resolves `specs` for `width × height` patterns around `centre_px`. Radii left unset follow
    /// the bright-field disk radius `bf_radius_px`: bf = 1.0×, adf = 1.5× … 4× (clipped to the
    /// detector). mrad radii need `pixel_mrad`.
    pub fn new(
        specs: &[DetectorSpec],
        width: usize,
        height: usize,
        centre_px: (f64, f64),
        bf_radius_px: f64,
        pixel_mrad: Option<f64>,
    ) -> Result<Self, FourDError> {
        let n = width as u64 * height as u64;
        if width == 0 || height == 0 || n > u32::MAX as u64 {
            return Err(FourDError::Detector {
                name: specs.first().map_or_else(String::new, |s| s.name.clone()),
                why: format!("pattern size {width}×{height} px is not usable"),
            });
        }
        let (cx, cy) = centre_px;
        let bf = (bf_radius_px.is_finite() && bf_radius_px > 0.0).then_some(bf_radius_px);
        // Distance from the centre to the nearest detector edge (pixel i covers [i − ½, i + ½]).
        let edge = (cx + 0.5).min(width as f64 - 0.5 - cx).min(cy + 0.5).min(height as f64 - 0.5 - cy);
        let mut out = Self {
            names: Vec::with_capacity(specs.len()),
            centre_px,
            bf_radius_px,
            width,
            height,
            outputs: Vec::with_capacity(specs.len()),
            masks: Vec::new(),
            radii_px: Vec::with_capacity(specs.len()),
            xs: (0..width).map(|x| x as f64).collect(),
            needs_moments: false,
            weights: Vec::new(),
            isa: Isa::detect(),
        };
        for spec in specs {
            let name = spec.name.as_str();
            if out.names.iter().any(|n| n == name) {
                return Err(FourDError::Detector { name: name.into(), why: "name used twice".into() });
            }
            let (output, radii) = match spec.kind {
                DetectorKind::Disk { radius_px: px, radius_mrad: mrad } => {
                    let r = radius_px(name, "radius", px, mrad, pixel_mrad, bf)?;
                    if r <= 0.0 {
                        return Err(FourDError::Detector { name: name.into(), why: "disk radius must be > 0".into() });
                    }
                    out.masks.push(ring_runs(width, height, centre_px, -1.0, r));
                    (Output::Mask(out.masks.len() - 1), Some((0.0, r)))
                }
                DetectorKind::Annulus { inner_px, outer_px, inner_mrad, outer_mrad } => {
                    let inner = radius_px(name, "inner radius", inner_px, inner_mrad, pixel_mrad, bf.map(|b| 1.5 * b))?;
                    let outer = radius_px(
                        name,
                        "outer radius",
                        outer_px,
                        outer_mrad,
                        pixel_mrad,
                        bf.map(|b| (4.0 * b).min(edge)),
                    )?;
                    if outer <= inner {
                        return Err(FourDError::Detector {
                            name: name.into(),
                            why: format!("outer radius {outer:.2} px ≤ inner radius {inner:.2} px"),
                        });
                    }
                    out.masks.push(ring_runs(width, height, centre_px, inner, outer));
                    (Output::Mask(out.masks.len() - 1), Some((inner, outer)))
                }
                DetectorKind::Sum => (Output::Sum, None),
                DetectorKind::ComX => (Output::ComX, None),
                DetectorKind::ComY => (Output::ComY, None),
            };
            out.needs_moments |= !matches!(output, Output::Mask(_));
            out.names.push(name.into());
            out.outputs.push(output);
            out.radii_px.push(radii);
        }
        out.weights = out.masks.iter().map(|runs| MaskWeights::from_runs(runs, width)).collect();
        Ok(out)
    }

    /// [`Self::apply`] for u16 patterns, in one pass over the pixels with exact integer sums (mask
    /// detectors and `sum` are the exact integer sums; centre of mass divides exact Σx·I, Σy·I
    /// once). Pixels marked in `invalid` are left out. A slice of the wrong length gives NaN.
    pub fn apply_u16(&self, pixels: &[u16], invalid: Option<&[bool]>, out: &mut [f64]) {
        let n = self.width * self.height;
        if pixels.len() != n || invalid.is_some_and(|m| m.len() != n) {
            out.iter_mut().for_each(|o| *o = f64::NAN);
            return;
        }
        match invalid {
            None => self.reduce_u16(pixels, out, None),
            Some(m) => {
                // Leaving a pixel out of every sum is counting it as 0.
                let zeroed: Vec<u16> = pixels.iter().zip(m).map(|(&v, &bad)| if bad { 0 } else { v }).collect();
                self.reduce_u16(&zeroed, out, None);
            }
        }
    }

    /// The detector values of a u16 pattern of the right size (checked by the caller) into `out`,
    /// and, when `sum_into` is given (same length as the pattern), the pattern added to it: one
    /// pass over the pixels. The caller keeps the u32 sums from overflowing (≤ 65537 patterns).
    pub(crate) fn reduce_u16(&self, pixels: &[u16], out: &mut [f64], sum_into: Option<&mut [u32]>) {
        let mut on_stack = [0u64; 8];
        let mut on_heap = Vec::new();
        let sums = if self.masks.len() <= on_stack.len() {
            &mut on_stack[..self.masks.len()]
        } else {
            on_heap.resize(self.masks.len(), 0);
            &mut on_heap[..]
        };
        let m = kernels::reduce(self.isa, pixels, self.width, &self.weights, sums, sum_into);
        // u64 → f64 is exact below 2⁵³ (a 4096² pattern of 65535s sums to 2⁴⁰).
        let total = m.total as f64;
        for (o, output) in out.iter_mut().zip(&self.outputs) {
            *o = match *output {
                Output::Mask(k) => sums[k] as f64,
                Output::Sum => total,
                Output::ComX if m.total != 0 => m.sum_x as f64 / total - self.centre_px.0,
                Output::ComY if m.total != 0 => m.sum_y as f64 / total - self.centre_px.1,
                Output::ComX | Output::ComY => 0.0,
            };
        }
    }

    /// One value per detector into `out` (len = names.len()). Pixels marked in `invalid` are left
    /// out. Mask detectors sum in f64, so integer data gives exact integer sums.
    ///
    /// A `pixels` (or `invalid`) slice of the wrong length gives NaN for every detector.
    pub fn apply(&self, pixels: &[f32], invalid: Option<&[bool]>, out: &mut [f64]) {
        let n = self.width * self.height;
        if pixels.len() != n || invalid.is_some_and(|m| m.len() != n) {
            out.iter_mut().for_each(|o| *o = f64::NAN);
            return;
        }
        // One pass for the total and both first moments (rows give y for free).
        let (mut total, mut mx, mut my) = (0.0, 0.0, 0.0);
        if self.needs_moments {
            for y in 0..self.height {
                let r = y * self.width..(y + 1) * self.width;
                let (s, sx) = row_moments(&pixels[r.clone()], &self.xs, invalid.map(|m| &m[r]));
                total += s;
                mx += sx;
                my += s * y as f64;
            }
        }
        for (o, output) in out.iter_mut().zip(&self.outputs) {
            *o = match *output {
                Output::Mask(k) => {
                    let runs = &self.masks[k];
                    match invalid {
                        None => runs.iter().map(|&(a, b)| sum_f64(&pixels[a as usize..b as usize])).sum(),
                        Some(m) => runs
                            .iter()
                            .map(|&(a, b)| sum_f64_valid(&pixels[a as usize..b as usize], &m[a as usize..b as usize]))
                            .sum(),
                    }
                }
                Output::Sum => total,
                Output::ComX if total != 0.0 => mx / total - self.centre_px.0,
                Output::ComY if total != 0.0 => my / total - self.centre_px.1,
                Output::ComX | Output::ComY => 0.0,
            };
        }
    }

    /// Index of the detector called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// (inner, outer) radius in px of detector `k` when it is a disk (inner 0) or an annulus.
    pub fn radii_px(&self, k: usize) -> Option<(f64, f64)> {
        self.radii_px.get(k).copied().flatten()
    }

    /// Number of pixels detector `k` covers (all pixels for sum and centre of mass).
    pub fn pixel_count(&self, k: usize) -> usize {
        match self.outputs.get(k) {
            Some(Output::Mask(m)) => self.masks[*m].iter().map(|&(a, b)| (b - a) as usize).sum(),
            Some(_) => self.width * self.height,
            None => 0,
        }
    }
}

/// 3×3 box smoothing with the edges averaged over the pixels that exist.
pub(crate) fn box3(img: &[f64], width: usize, height: usize) -> Vec<f64> {
    let mut out = vec![0.0; img.len()];
    for y in 0..height {
        for x in 0..width {
            let (mut s, mut n) = (0.0, 0.0);
            for yy in y.saturating_sub(1)..(y + 2).min(height) {
                for xx in x.saturating_sub(1)..(x + 2).min(width) {
                    s += img[yy * width + xx];
                    n += 1.0;
                }
            }
            out[y * width + x] = s / n;
        }
    }
    out
}

/// Median of `v` (reorders it); 0 for an empty slice.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    *m
}

/// The direct-beam centre (x, y) and bright-field disk radius of a mean pattern.
///
/// Light 3×3 smoothing (against hot pixels and Poisson noise); the background is the median.
/// The regions (4-connected) standing above 20 % of the way from the background to the maximum are
/// compared by their integrated intensity above the background: the direct beam is the largest,
/// even where a small Bragg spot peaks higher (up to about 4× the beam). That region is then taken again at half of its own
/// maximum. Centre = its background-subtracted centroid; radius = √(area/π). A flat or empty
/// pattern gives the detector centre and a radius of 1/8 of its smaller side.
pub fn find_centre(mean: &[f64], width: usize, height: usize) -> ((f64, f64), f64) {
    let n = width * height;
    let fallback =
        (((width as f64 - 1.0) / 2.0, (height as f64 - 1.0) / 2.0), (width.min(height) as f64 / 8.0).max(1.0));
    if n == 0 || mean.len() != n {
        return fallback;
    }
    let s = box3(mean, width, height);
    let Some(max) = s.iter().copied().filter(|v| v.is_finite()).max_by(f64::total_cmp) else {
        return fallback;
    };
    let bg = median(&mut s.iter().copied().filter(|v| v.is_finite()).collect::<Vec<_>>());
    if max.is_nan() || max <= bg {
        return fallback;
    }
    // Low enough that the beam stands out even next to a spot peaking ~4× higher.
    let select = bg + 0.2 * (max - bg);
    let mut seen = vec![false; n];
    let mut best: Option<Region> = None;
    for seed in 0..n {
        if seen[seed] || s[seed].is_nan() || s[seed] <= select {
            continue;
        }
        let r = flood(&s, width, height, seed, select, bg, &mut seen);
        if best.as_ref().is_none_or(|b| r.weight > b.weight) {
            best = Some(r);
        }
    }
    let Some(beam) = best else { return fallback };
    let own = bg + 0.5 * (beam.max - bg);
    let r = flood(&s, width, height, beam.argmax, own, bg, &mut vec![false; n]);
    if r.weight.is_nan() || r.weight <= 0.0 {
        return fallback;
    }
    ((r.wx / r.weight, r.wy / r.weight), (r.area as f64 / std::f64::consts::PI).sqrt().max(1.0))
}

struct Region {
    area: usize,
    weight: f64,
    wx: f64,
    wy: f64,
    max: f64,
    argmax: usize,
}

/// The 4-connected region of pixels above `threshold` around `seed` (marked in `seen`), with its
/// area, weight Σ(s − bg), weighted coordinate sums and maximum.
fn flood(s: &[f64], width: usize, height: usize, seed: usize, threshold: f64, bg: f64, seen: &mut [bool]) -> Region {
    let mut r = Region { area: 0, weight: 0.0, wx: 0.0, wy: 0.0, max: f64::NEG_INFINITY, argmax: seed };
    let mut stack = vec![seed];
    seen[seed] = true;
    while let Some(i) = stack.pop() {
        let (x, y) = (i % width, i / width);
        r.area += 1;
        let w = s[i] - bg;
        r.weight += w;
        r.wx += w * x as f64;
        r.wy += w * y as f64;
        if s[i] > r.max {
            r.max = s[i];
            r.argmax = i;
        }
        let neighbours = [
            (x > 0).then(|| i - 1),
            (x + 1 < width).then(|| i + 1),
            (y > 0).then(|| i - width),
            (y + 1 < height).then(|| i + width),
        ];
        for j in neighbours.into_iter().flatten() {
            if !seen[j] && s[j] > threshold {
                seen[j] = true;
                stack.push(j);
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn spec(name: &str, kind: DetectorKind) -> DetectorSpec {
        DetectorSpec { name: name.into(), kind }
    }

    /// Brute force, straight from the definitions in the doc comment.
    fn brute(pixels: &[f32], invalid: Option<&[bool]>, w: usize, c: (f64, f64), inner: f64, outer: f64) -> f64 {
        let mut s = 0.0;
        for (i, &v) in pixels.iter().enumerate() {
            let r = ((((i % w) as f64) - c.0).powi(2) + (((i / w) as f64) - c.1).powi(2)).sqrt();
            if r >= inner && r < outer && !invalid.is_some_and(|m| m[i]) {
                s += v as f64;
            }
        }
        s
    }

    #[test]
    fn masks_sum_and_com_equal_brute_force_exactly_on_integer_data() {
        let (w, h) = (96, 90);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let pixels: Vec<f32> = (0..w * h).map(|_| rng.random_range(0..60000u32) as f32).collect();
        let invalid: Vec<bool> = (0..w * h).map(|i| i % 37 == 0).collect();
        let c = (47.3, 44.6);
        let specs = vec![
            spec("bf", DetectorKind::Disk { radius_px: Some(9.5), radius_mrad: None }),
            spec(
                "adf",
                DetectorKind::Annulus { inner_px: None, outer_px: None, inner_mrad: Some(12.0), outer_mrad: None },
            ),
            spec("sum", DetectorKind::Sum),
            spec("com_x", DetectorKind::ComX),
            spec("com_y", DetectorKind::ComY),
        ];
        let d = VirtualDetectors::new(&specs, w, h, c, 8.0, Some(0.5)).expect("resolves");
        assert_eq!(d.radii_px(1), Some((24.0, 32.0)));
        let mut out = vec![0.0; 5];
        for inv in [None, Some(&invalid[..])] {
            d.apply(&pixels, inv, &mut out);
            assert_eq!(out[0], brute(&pixels, inv, w, c, -1.0, 9.5));
            assert_eq!(out[1], brute(&pixels, inv, w, c, 24.0, 32.0));
            assert_eq!(out[2], brute(&pixels, inv, w, c, -1.0, f64::INFINITY));
            let (mut t, mut sx, mut sy) = (0.0, 0.0, 0.0);
            for (i, &v) in pixels.iter().enumerate() {
                if !inv.is_some_and(|m| m[i]) {
                    t += v as f64;
                    sx += v as f64 * ((i % w) as f64 - c.0);
                    sy += v as f64 * ((i / w) as f64 - c.1);
                }
            }
            assert!((out[3] - sx / t).abs() < 1e-9, "{} {}", out[3], sx / t);
            assert!((out[4] - sy / t).abs() < 1e-9, "{} {}", out[4], sy / t);
        }
        assert_eq!(d.pixel_count(2), w * h);
        // Zero pattern: centre of mass 0, not NaN.
        d.apply(&vec![0.0; w * h], None, &mut out);
        assert_eq!(out, vec![0.0; 5]);
        // Wrong length: NaN, not a panic.
        d.apply(&pixels[1..], None, &mut out);
        assert!(out.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn the_u16_pass_equals_brute_force_and_the_f32_path() {
        let (w, h) = (97, 61);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let invalid: Vec<bool> = (0..w * h).map(|i| i % 29 == 3).collect();
        // Two overlapping disks, an annulus clipped by the edge, sum and centre of mass.
        let specs = vec![
            spec("bf", DetectorKind::Disk { radius_px: Some(9.5), radius_mrad: None }),
            spec("big", DetectorKind::Disk { radius_px: Some(20.0), radius_mrad: None }),
            spec(
                "adf",
                DetectorKind::Annulus {
                    inner_px: Some(12.0),
                    outer_px: Some(45.0),
                    inner_mrad: None,
                    outer_mrad: None,
                },
            ),
            spec("sum", DetectorKind::Sum),
            spec("com_x", DetectorKind::ComX),
            spec("com_y", DetectorKind::ComY),
        ];
        let c = (50.3, 27.6);
        let d = VirtualDetectors::new(&specs, w, h, c, 8.0, None).expect("resolves");
        let sparse: Vec<u16> =
            (0..w * h).map(|_| if rng.random_range(0..4) == 0 { rng.random_range(1..5) } else { 0 }).collect();
        let random: Vec<u16> = (0..w * h).map(|_| rng.random()).collect();
        let full = vec![u16::MAX; w * h];
        for pixels in [sparse, random, full, vec![0; w * h]] {
            let f: Vec<f32> = pixels.iter().map(|&v| f32::from(v)).collect();
            for inv in [None, Some(&invalid[..])] {
                let (mut a, mut b) = (vec![0.0; 6], vec![0.0; 6]);
                d.apply_u16(&pixels, inv, &mut a);
                d.apply(&f, inv, &mut b);
                assert_eq!(a[..4], b[..4]);
                assert_eq!(a[0], brute(&f, inv, w, c, -1.0, 9.5));
                assert_eq!(a[1], brute(&f, inv, w, c, -1.0, 20.0));
                assert_eq!(a[2], brute(&f, inv, w, c, 12.0, 45.0));
                assert_eq!(a[3], brute(&f, inv, w, c, -1.0, f64::INFINITY));
                for k in 4..6 {
                    assert!((a[k] - b[k]).abs() < 1e-9, "{k}: {} vs {}", a[k], b[k]);
                }
            }
        }
        // Wrong lengths: NaN, not a panic.
        let mut out = vec![0.0; 6];
        d.apply_u16(&[1; 10], None, &mut out);
        assert!(out.iter().all(|v| v.is_nan()));
        d.apply_u16(&vec![1; w * h], Some(&[false; 3]), &mut out);
        assert!(out.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn default_radii_follow_the_bright_field_disk_and_clip_to_the_detector() {
        let d = VirtualDetectors::new(&default_detectors(), 96, 96, (47.5, 47.5), 8.0, None).expect("resolves");
        assert_eq!(d.names, ["bf", "adf", "sum", "com_x", "com_y"]);
        assert_eq!(d.radii_px(0), Some((0.0, 8.0)));
        assert_eq!(d.radii_px(1), Some((12.0, 32.0)));
        let d = VirtualDetectors::new(&default_detectors(), 96, 96, (47.5, 47.5), 15.0, None).expect("resolves");
        assert_eq!(d.radii_px(1), Some((22.5, 48.0)));
        let d = VirtualDetectors::new(&default_detectors(), 96, 96, (30.0, 47.5), 15.0, None).expect("resolves");
        assert_eq!(d.radii_px(1), Some((22.5, 30.5)));
        // The disk covers the pixels at r < 8: count them independently.
        let mut n = 0;
        for y in 0..96 {
            for x in 0..96 {
                if ((x as f64 - 30.0).powi(2) + (y as f64 - 47.5).powi(2)).sqrt() < 15.0 {
                    n += 1;
                }
            }
        }
        assert_eq!(d.pixel_count(0), n);
    }

    #[test]
    fn radius_errors_say_what_is_wrong() {
        let err =
            |kind| VirtualDetectors::new(&[spec("x", kind)], 64, 64, (32.0, 32.0), 6.0, None).err().expect("an error");
        let e = err(DetectorKind::Disk { radius_px: None, radius_mrad: Some(3.0) });
        assert!(matches!(&e, FourDError::Detector { name, why } if name == "x" && why.contains("pixel_mrad")), "{e}");
        let e = err(DetectorKind::Disk { radius_px: Some(3.0), radius_mrad: Some(3.0) });
        assert!(e.to_string().contains("both"), "{e}");
        let e = err(DetectorKind::Annulus {
            inner_px: Some(20.0),
            outer_px: Some(10.0),
            inner_mrad: None,
            outer_mrad: None,
        });
        assert!(e.to_string().contains("outer radius"), "{e}");
        // Default outer radius clipped below the inner one near an edge.
        let e = VirtualDetectors::new(&default_detectors(), 64, 64, (3.0, 32.0), 6.0, None).err().expect("an error");
        assert!(matches!(&e, FourDError::Detector { name, .. } if name == "adf"), "{e}");
        // No bright-field radius and no radius given.
        let e =
            VirtualDetectors::new(&default_detectors(), 64, 64, (32.0, 32.0), f64::NAN, None).err().expect("an error");
        assert!(e.to_string().contains("not set"), "{e}");
        let two = [spec("a", DetectorKind::Sum), spec("a", DetectorKind::ComX)];
        assert!(VirtualDetectors::new(&two, 8, 8, (4.0, 4.0), 2.0, None).is_err());
    }

    /// Disk of radius 8 at (47.3, 45.8) on 96×96 with weaker Bragg spots, a diffuse background and
    /// Poisson-like noise.
    pub(crate) fn synthetic_mean(seed: u64) -> Vec<f64> {
        let (w, h) = (96, 96);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut img = vec![0.0; w * h];
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = (x as f64 - 47.3, y as f64 - 45.8);
                let r = (dx * dx + dy * dy).sqrt();
                let mut v = 20.0 + 30.0 * (-r / 30.0).exp();
                // Anti-aliased disk edge: the fraction of the pixel inside the radius.
                v += 1000.0 * (8.0 - r + 0.5).clamp(0.0, 1.0);
                for (sx, sy) in [(-22.0, 0.0), (22.0, 0.0), (0.0, 22.0), (0.0, -22.0), (22.0, 22.0), (-22.0, -22.0)] {
                    let d2 = (dx - sx).powi(2) + (dy - sy).powi(2);
                    v += 400.0 * (-d2 / (2.0 * 1.5 * 1.5)).exp();
                }
                img[y * w + x] = v + v.sqrt() * (rng.random::<f64>() - 0.5) * 3.46;
            }
        }
        img
    }

    #[test]
    fn centre_and_radius_of_a_noisy_disk_with_bragg_spots() {
        for seed in 0..4 {
            let img = synthetic_mean(seed);
            let ((cx, cy), r) = find_centre(&img, 96, 96);
            assert!((cx - 47.3).abs() < 0.5 && (cy - 45.8).abs() < 0.5, "centre ({cx}, {cy})");
            assert!((r - 8.0).abs() < 1.0, "radius {r}");
        }
        // A hot pixel brighter than the beam does not win after smoothing.
        let mut img = synthetic_mean(9);
        img[10 * 96 + 10] = 5000.0;
        let ((cx, cy), _) = find_centre(&img, 96, 96);
        assert!((cx - 47.3).abs() < 0.5 && (cy - 45.8).abs() < 0.5, "centre ({cx}, {cy})");
        // A small spot peaking above the beam is not the beam.
        let mut img = synthetic_mean(10);
        for y in 5..8 {
            for x in 80..83 {
                img[y * 96 + x] += 2500.0;
            }
        }
        let ((cx, cy), r) = find_centre(&img, 96, 96);
        assert!((cx - 47.3).abs() < 0.5 && (cy - 45.8).abs() < 0.5 && (r - 8.0).abs() < 1.0, "({cx}, {cy}) r {r}");
        // Flat pattern: the detector centre.
        assert_eq!(find_centre(&vec![3.0; 64 * 32], 64, 32), ((31.5, 15.5), 4.0));
    }
}
