//! Drift: rigid translation of each frame against the reference, measured by FFT cross-correlation
//! of the Hann-windowed frames (sub-pixel by a parabola through the peak) and undone by resampling.
//!
//! Plain correlation, not whitened phase correlation: on shot-noisy 176×176 crops of the golden
//! frame it measured random sub-pixel shifts with a median error of 0.02–0.04 px where full
//! whitening gave 0.10–0.44 px and lost the peak entirely in one case of 20; on smooth noise-free
//! images whitening is dominated by the window's leakage and reports no shift at all.
//!
//! Convention: a frame whose content moved by (dx, dy) pixels — frame(x, y) = ref(x − dx, y − dy) —
//! has shift (dx, dy); the corrected frame is frame(x + dx, y + dy). Content that moved a whole
//! pixel or more out of the frame is outside the overlap: patches touching it are excluded.
//!
//! Tracking ([`Registrar::track`]): drift is slow and smooth, so each frame is also correlated with
//! the previous analysed frame. That step must be plausible ([`MAX_STEP_PX`] per frame), and the
//! reference peak is looked for only where the step puts it — a crystal correlates with itself one
//! lattice vector away too, and damage can make that wrong peak the highest. When the reference
//! correlation has faded the step alone carries the track ([`Lock::Chained`]); a jump or a
//! collapsed peak is reported ([`Lock::Jump`], [`Lock::Lost`]) and such a frame is not compared.

use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use realfft::{RealFftPlanner, RealToComplex};
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};
use serde::{Deserialize, Serialize};

use crate::frame::Frame;
use crate::patches::Rect;

/// Whether and how frames are registered to the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Registration {
    #[value(alias = "none")]
    Off,
    /// Whole-pixel shift: moves pixels without interpolating, so noise keeps its texture.
    Integer,
    /// Sub-pixel shift by Lanczos-3 interpolation (the default)
    //
    // On a drifting, undamaged simulated series it kept the noise floor flat where whole-pixel
    // correction let it creep up and no correction flagged every patch within a few frames.
    // Bilinear interpolation, used before, smoothed a lattice of 8 px period by 8 % per axis at
    // half-pixel shifts and so raised every patch's dissimilarity as the drift grew (a false
    // alarm on the last frame of an undamaged suite series).
    #[default]
    #[value(alias = "on")]
    Subpixel,
}

/// Measured translation of a frame relative to the reference, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Shift {
    pub dx_px: f64,
    pub dy_px: f64,
    /// Correlation at the peak, normalised by both windowed frames' energy (1 = identical content,
    /// near 0 = nothing in common: treat the shift as unreliable).
    pub peak: f64,
}

/// How a frame's drift was established.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "lock")]
pub enum Lock {
    /// Measured against the reference, where the step from the previous frame said it would be.
    Reference,
    /// The reference correlation was too weak (heavy damage, little left in common): the drift is
    /// the previous frame's plus the step measured against the previous frame.
    Chained,
    /// The content moved by more than is physically plausible since the previous analysed frame
    /// (`step_px`, over `frames` frames): a stage jump or a torn frame. Not compared; the next frame
    /// says whether the new position holds.
    Jump { step_px: f64, frames: u64 },
    /// Neither the reference nor the previous frame correlates with this one any more (the peak
    /// collapsed to `peak_ratio` of its usual height): not compared.
    Lost { peak_ratio: f64 },
}

impl Lock {
    /// Whether the frame may be compared with the reference (and raise alarms).
    pub fn usable(self) -> bool {
        matches!(self, Self::Reference | Self::Chained)
    }

    /// One line for logs and reports.
    pub fn describe(self) -> String {
        match self {
            Self::Reference => "registered to the reference".into(),
            Self::Chained => "registered through the previous frame (reference correlation too weak)".into(),
            Self::Jump { step_px, frames } => format!(
                "drift jumped {step_px:.1} px in {frames} frame(s), more than the {:.0} px per frame drift can move",
                MAX_STEP_PX
            ),
            Self::Lost { peak_ratio } => format!(
                "registration lost: the correlation peak fell to {:.0} % of its usual height",
                100.0 * peak_ratio
            ),
        }
    }
}

/// A frame's measured drift and how it was established.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Tracked {
    pub shift: Shift,
    #[serde(flatten)]
    pub lock: Lock,
}

/// The most a frame's content may move from one frame to the next and still be drift (px per
/// frame). Stage and thermal drift move STEM frames by well under a pixel per frame; a step of
/// several pixels is a stage jump, a torn frame or a correlation peak on the wrong lattice site.
pub const MAX_STEP_PX: f64 = 3.0;
/// How far the reference peak may lie from where the step from the previous frame puts it (px):
/// several times the measurement error, well below a lattice spacing (the next equivalent peak).
const AGREE_PX: f64 = 1.5;
/// A correlation peak below this share of its recent height has collapsed.
const COLLAPSE_RATIO: f64 = 0.35;
/// Recent frames whose steps and peaks form the motion model.
const HISTORY: usize = 8;

/// A frame's spectrum, kept for the next frame's step: the non-negative horizontal frequencies
/// only (a real frame's spectrum holds the rest as their complex conjugates), stored transposed,
/// `[kx][ky]` with `kx` in `0..=w/2`.
struct Spectrum {
    data: Vec<Complex32>,
    energy: f64,
}

/// Where the track is.
struct Track {
    /// The last frame the track accepted: its spectrum, index and drift.
    previous: Option<(Spectrum, u64, Shift)>,
    /// A frame that jumped away from the track: if the next frame agrees with it, the jump was
    /// real and the track moves there.
    candidate: Option<(Spectrum, u64, Shift)>,
    /// Recent per-frame steps (dx, dy) and peak heights against the reference and the previous frame.
    steps: std::collections::VecDeque<(f64, f64)>,
    reference_peaks: std::collections::VecDeque<f64>,
    step_peaks: std::collections::VecDeque<f64>,
}

/// Holds the reference spectrum and the track: each frame costs one forward FFT and one inverse
/// FFT (carrying both correlations, against the reference and against the previous frame).
///
/// The transforms run on the frame zero-padded to a size whose only prime factors are 2, 3 and 5
/// ([`fft_len`]): rustfft transforms 1024 points 5× faster than 1020 (= 4·3·5·17; 0.85 against
/// 4.2 ms for 1,024 rows on AMD EPYC Zen 5). The window takes the frame to zero at its edges, so
/// the padding only removes wrap-around products: the correlation is the same up to rounding.
///
/// The forward transform is real-to-complex along rows (half the work and half the bytes), and
/// spectra stay transposed, so each frame moves its data through two transposes where a plain 2-D
/// transform there and back takes four, and both are fused with a pass of transforms
/// ([`columns_fft`]): at 1024² every pass is 8 MiB, more than the cache keeps while the trunk runs,
/// and the passes, not the arithmetic, set registration's time. On the 2-core Intel Xeon (Emerald
/// Rapids) a 1024² frame's track took 9.5 ms with separate transposes and 6.6 ms fused (with the
/// cheaper peak search and energy sum, medians of alternating runs).
pub struct Registrar {
    /// Transform size (the frame padded).
    w: usize,
    h: usize,
    /// Horizontal frequencies a spectrum keeps: `w / 2 + 1`.
    hw: usize,
    /// Frame size.
    fw: usize,
    fh: usize,
    window: Vec<f32>,
    reference: Spectrum,
    row_fwd: Arc<dyn RealToComplex<f32>>,
    col_fwd: Arc<dyn Fft<f32>>,
    row_inv: Arc<dyn Fft<f32>>,
    col_inv: Arc<dyn Fft<f32>>,
    track: Track,
    /// Transform-sized buffers no longer in use, for the next frame: a 2048² frame's are 32 MiB,
    /// which glibc maps and unmaps on every allocation, page-faulting each frame anew.
    spare: Mutex<Vec<Vec<Complex32>>>,
}

/// A correlation surface, normalised so that identical content gives 1 at the true shift: one
/// part of an inverse transform, read in place. Its values are worked out where they are read, so a
/// surface only searched near one point costs nothing elsewhere.
struct Surface<'a> {
    w: usize,
    h: usize,
    data: &'a [Complex32],
    imag: bool,
    norm: f64,
}

impl Surface<'_> {
    fn value(&self, c: Complex32) -> f32 {
        ((if self.imag { c.im } else { c.re }) as f64 / self.norm) as f32
    }

    fn at(&self, x: usize, y: usize) -> f64 {
        self.value(self.data[y * self.w + x]) as f64
    }

    fn wrap(i: usize, n: usize) -> f64 {
        if i > n / 2 { i as f64 - n as f64 } else { i as f64 }
    }

    /// The sub-pixel shift and height of the peak at integer position (px, py).
    fn refine(&self, px: usize, py: usize) -> Shift {
        let (w, h) = (self.w, self.h);
        let left = self.at((px + w - 1) % w, py);
        let right = self.at((px + 1) % w, py);
        let up = self.at(px, (py + h - 1) % h);
        let down = self.at(px, (py + 1) % h);
        let c = self.at(px, py);
        Shift {
            dx_px: Self::wrap(px, w) + parabola(left, c, right),
            dy_px: Self::wrap(py, h) + parabola(up, c, down),
            peak: c,
        }
    }

    /// The highest point anywhere.
    fn global(&self) -> Shift {
        // Ties go to the lowest index: no shift on a flat surface. The norm is positive, so the
        // raw part orders the points as the normalised values do; per-element division was most
        // of the search's time.
        const CHUNK: usize = 1 << 14;
        let part = |c: &Complex32| if self.imag { c.im } else { c.re };
        let best = self
            .data
            .par_chunks(CHUNK)
            .enumerate()
            .map(|(ci, chunk)| {
                let mut best = (ci * CHUNK, f32::NEG_INFINITY);
                for (i, c) in chunk.iter().enumerate() {
                    let v = part(c);
                    if v > best.1 {
                        best = (ci * CHUNK + i, v);
                    }
                }
                best
            })
            .reduce(|| (0, f32::NEG_INFINITY), |a, b| if b.1 > a.1 || (b.1 == a.1 && b.0 < a.0) { b } else { a })
            .0;
        self.refine(best % self.w, best / self.w)
    }

    /// The highest local maximum within `radius` px of `(cx, cy)` (shift coordinates), if any.
    fn near(&self, cx: f64, cy: f64, radius: f64) -> Option<Shift> {
        let (w, h) = (self.w as i64, self.h as i64);
        let r = radius.ceil() as i64;
        let mut best: Option<(usize, usize, f64)> = None;
        for oy in -r..=r {
            for ox in -r..=r {
                let (sx, sy) = (cx.round() as i64 + ox, cy.round() as i64 + oy);
                if ((sx as f64 - cx).powi(2) + (sy as f64 - cy).powi(2)).sqrt() > radius {
                    continue;
                }
                let (x, y) = (sx.rem_euclid(w) as usize, sy.rem_euclid(h) as usize);
                let v = self.at(x, y);
                let is_max = (-1..=1i64).all(|dy| {
                    (-1..=1i64).all(|dx| {
                        (dx == 0 && dy == 0)
                            || self.at((x as i64 + dx).rem_euclid(w) as usize, (y as i64 + dy).rem_euclid(h) as usize)
                                <= v
                    })
                });
                if is_max && best.is_none_or(|b| v > b.2) {
                    best = Some((x, y, v));
                }
            }
        }
        best.map(|(x, y, _)| self.refine(x, y))
    }
}

/// The inverse transform holding two correlation surfaces (see [`Registrar::correlate_pair`]).
struct Pair {
    w: usize,
    h: usize,
    cross: Vec<Complex32>,
    norm_b: f64,
    norm_c: f64,
}

impl Pair {
    /// With `b` (`imag` false) or with `c` (`imag` true).
    fn surface(&self, imag: bool) -> Surface<'_> {
        let norm = if imag { self.norm_c } else { self.norm_b };
        Surface { w: self.w, h: self.h, data: &self.cross, imag, norm }
    }
}

fn median(v: &std::collections::VecDeque<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s: Vec<f64> = v.iter().copied().collect();
    s.sort_by(f64::total_cmp);
    Some(s[s.len() / 2])
}

fn push(v: &mut std::collections::VecDeque<f64>, x: f64) {
    if v.len() == HISTORY {
        v.pop_front();
    }
    v.push_back(x);
}

impl Registrar {
    /// `reference` is frame `index` of its series.
    pub fn new(reference: &Frame, index: u64) -> Self {
        let (fw, fh) = (reference.width(), reference.height());
        let (w, h) = (fft_len(fw), fft_len(fh));
        let mut planner = FftPlanner::new();
        let hann = |n: usize| -> Vec<f32> {
            (0..n).map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()) as f32).collect()
        };
        let (wx, wy) = (hann(fw), hann(fh));
        let window = (0..fh)
            .flat_map(|y| {
                let wyy = wy[y];
                wx.iter().map(move |&a| a * wyy)
            })
            .collect();
        let mut r = Self {
            w,
            h,
            hw: w / 2 + 1,
            fw,
            fh,
            window,
            reference: Spectrum { data: Vec::new(), energy: 0.0 },
            row_fwd: RealFftPlanner::new().plan_fft_forward(w),
            col_fwd: planner.plan_fft_forward(h),
            row_inv: planner.plan_fft_inverse(w),
            col_inv: planner.plan_fft_inverse(h),
            track: Track {
                previous: None,
                candidate: None,
                steps: Default::default(),
                reference_peaks: Default::default(),
                step_peaks: Default::default(),
            },
            spare: Mutex::new(Vec::new()),
        };
        r.reference = r.spectrum(reference);
        // The reference is where the track starts: frame `index`, no drift.
        let start = Spectrum { data: r.reference.data.clone(), energy: r.reference.energy };
        r.track.previous = Some((start, index, Shift { dx_px: 0.0, dy_px: 0.0, peak: 1.0 }));
        r
    }

    /// A buffer of `len` values; its contents are whatever it last held. A kept buffer of the same
    /// length is preferred, so that none grows (and is filled) anew.
    fn buffer(&self, len: usize) -> Vec<Complex32> {
        let reused = self.spare.lock().ok().and_then(|mut s| {
            let i = s.iter().position(|v| v.len() == len).or(s.len().checked_sub(1))?;
            Some(s.swap_remove(i))
        });
        let mut v = reused.unwrap_or_default();
        v.resize(len, Complex32::new(0.0, 0.0));
        v
    }

    /// Keeps `v` for a later [`Self::buffer`]: a frame holds four at once (its spectrum, the
    /// previous frame's, the cross-spectrum and the transpose scratch), so four are kept.
    fn recycle(&self, v: Vec<Complex32>) {
        if let Ok(mut s) = self.spare.lock()
            && s.len() < 4
        {
            s.push(v);
        }
    }

    /// Windowed, mean-subtracted spectrum and its energy Σ v²; invalid pixels take the mean.
    fn spectrum(&self, f: &Frame) -> Spectrum {
        let mean = f.valid_mean() as f32;
        let (fw, w, h, hw) = (self.fw, self.w, self.h, self.hw);
        let zero = Complex32::new(0.0, 0.0);
        let pixels = f.pixels();
        let r2c = &*self.row_fwd;
        // Rows, real to complex: `[y][kx]`. Rows past the frame are zero and stay zero.
        let mut rows = self.buffer(h * hw);
        let energy = rows
            .par_chunks_mut(hw * ROWS_PER_TASK)
            .enumerate()
            .map_init(
                || (vec![0f32; w], r2c.make_scratch_vec()),
                |(line, scratch), (block, out)| {
                    let mut e = 0.0f64;
                    for (i, row) in out.chunks_exact_mut(hw).enumerate() {
                        let y = block * ROWS_PER_TASK + i;
                        if y >= self.fh {
                            row.fill(zero);
                            continue;
                        }
                        let src = &pixels[y * fw..(y + 1) * fw];
                        let win = &self.window[y * fw..(y + 1) * fw];
                        for ((o, &v), &wv) in line.iter_mut().zip(src).zip(win) {
                            *o = (v - mean) * wv;
                        }
                        if let Some(mask) = f.invalid_mask() {
                            for (o, &bad) in line.iter_mut().zip(&mask[y * fw..(y + 1) * fw]) {
                                if bad {
                                    *o = 0.0;
                                }
                            }
                        }
                        e += energy_f64(&line[..fw]);
                        line[fw..].fill(0.0);
                        // The lengths are the plan's own, so the transform cannot refuse them.
                        if let Err(err) = r2c.process_with_scratch(line, row, scratch) {
                            unreachable!("real FFT of {w} points: {err}");
                        }
                    }
                    e
                },
            )
            .sum();
        // Columns: transposed, `[kx][ky]`, and left so.
        let mut data = self.buffer(hw * h);
        columns_fft(&rows, hw, &mut data, h, &*self.col_fwd);
        self.recycle(rows);
        Spectrum { data, energy }
    }

    /// The inverse transform of the cross-spectrum `A·B* + i·A·C*` (`C` = 0 without `c`), `[y][x]`:
    /// the correlation of `a` with `b` in the real part, with `c` in the imaginary part. Both are
    /// real, so their spectra `P = A·B*`, `Q = A·C*` hold the half the spectra do not keep as
    /// `P(−k) = P(k)*`: row `kx` of the plane is row `w − kx` of the half, conjugated, its `ky`
    /// reversed (`−ky` mod h).
    fn inverse_cross(&self, a: &Spectrum, b: &Spectrum, c: Option<&Spectrum>) -> Vec<Complex32> {
        let (w, h, hw) = (self.w, self.h, self.hw);
        let i = Complex32::new(0.0, 1.0);
        let mut cross = self.buffer(w * h);
        let col_inv = &*self.col_inv;
        let zero = Complex32::new(0.0, 0.0);
        // Each row is built and transformed (along ky) while it is in the cache.
        let scratch_len = col_inv.get_inplace_scratch_len();
        cross.par_chunks_mut(h).enumerate().for_each_init(
            || vec![zero; scratch_len],
            |scratch, (kx, row)| {
                let m = if kx < hw { kx } else { w - kx };
                let (ra, rb) = (&a.data[m * h..(m + 1) * h], &b.data[m * h..(m + 1) * h]);
                let rc = c.map(|c| &c.data[m * h..(m + 1) * h]);
                let pq = |ka: usize| {
                    let f = ra[ka];
                    let q = rc.map_or(Complex32::new(0.0, 0.0), |rc| f * rc[ka].conj());
                    (f * rb[ka].conj(), q)
                };
                if kx < hw {
                    for (ky, o) in row.iter_mut().enumerate() {
                        let (p, q) = pq(ky);
                        *o = p + i * q;
                    }
                } else {
                    // ky = 0 mirrors to itself, ky to h − ky.
                    for (ky, o) in row.iter_mut().enumerate() {
                        let (p, q) = pq(if ky == 0 { 0 } else { h - ky });
                        *o = p.conj() + i * q.conj();
                    }
                }
                col_inv.process_with_scratch(row, scratch);
            },
        );
        let mut out = self.buffer(w * h);
        columns_fft(&cross, h, &mut out, w, &*self.row_inv);
        self.recycle(cross);
        out
    }

    /// The highest peak of the cross-correlation of `a` with `b`: the shift of `a`'s content from
    /// `b`'s.
    fn correlate(&self, a: &Spectrum, b: &Spectrum) -> Shift {
        let cross = self.inverse_cross(a, b, None);
        let norm = (self.w * self.h) as f64 * (a.energy * b.energy).sqrt().max(f64::MIN_POSITIVE);
        let shift = Surface { w: self.w, h: self.h, data: &cross, imag: false, norm }.global();
        self.recycle(cross);
        shift
    }

    /// Cross-correlations of `a` with `b` and with `c` from one inverse FFT: both are real, so
    /// IFFT(A·B* + i·A·C*) holds the first in its real part and the second in its imaginary part.
    fn correlate_pair(&self, a: &Spectrum, b: &Spectrum, c: &Spectrum) -> Pair {
        let cross = self.inverse_cross(a, b, Some(c));
        let size = (self.w * self.h) as f64;
        let norm_b = size * (a.energy * b.energy).sqrt().max(f64::MIN_POSITIVE);
        let norm_c = size * (a.energy * c.energy).sqrt().max(f64::MIN_POSITIVE);
        Pair { w: self.w, h: self.h, cross, norm_b, norm_c }
    }

    /// Shift of `frame` relative to the reference alone: the highest correlation peak, no motion
    /// model (same size required; checked by the caller).
    pub fn measure(&self, frame: &Frame) -> Shift {
        let spec = self.spectrum(frame);
        let shift = self.correlate(&spec, &self.reference);
        self.recycle(spec.data);
        shift
    }

    /// Drift of frame `index` (later than every frame before it), measured against the reference
    /// and constrained by the track: the step from the previous analysed frame must be plausible,
    /// and the reference peak is taken where that step says it is, never on another lattice site.
    pub fn track(&mut self, frame: &Frame, index: u64) -> Tracked {
        let spec = self.spectrum(frame);
        let Some((prev, prev_index, prev_shift)) = self.track.previous.take() else {
            // Cannot happen (the reference starts the track); measure plainly.
            let shift = self.correlate(&spec, &self.reference);
            self.track.previous = Some((spec, index, shift));
            return Tracked { shift, lock: Lock::Reference };
        };
        let gap = index.saturating_sub(prev_index).max(1);
        let velocity = {
            let n = self.track.steps.len().max(1) as f64;
            let (sx, sy) = self.track.steps.iter().fold((0.0, 0.0), |(a, b), s| (a + s.0, b + s.1));
            (sx / n, sy / n)
        };
        let plausible = |step: Shift| {
            let (ex, ey) = (velocity.0 * gap as f64, velocity.1 * gap as f64);
            ((step.dx_px - ex).powi(2) + (step.dy_px - ey).powi(2)).sqrt() <= MAX_STEP_PX * gap as f64
        };
        let usual_ref = median(&self.track.reference_peaks);
        let usual_step = median(&self.track.step_peaks);
        let collapsed = |peak: f64, usual: Option<f64>| usual.is_some_and(|u| peak < COLLAPSE_RATIO * u);
        let predicted = Shift {
            dx_px: prev_shift.dx_px + velocity.0 * gap as f64,
            dy_px: prev_shift.dy_px + velocity.1 * gap as f64,
            peak: f64::NAN,
        };
        // The reference surface is needed whenever the step holds, the usual case: both come from
        // one inverse FFT.
        let pair = self.correlate_pair(&spec, &prev, &self.reference);
        let step = pair.surface(false).global();
        let step_ok = plausible(step) && !collapsed(step.peak, usual_step);
        // A frame the track could not follow: does this one agree with it? Then the track goes on
        // from there — from where it jumped to (a jump keeps the content: the step's peak stayed
        // high), or from where the motion model put it (the content changed: the peak collapsed).
        let via_candidate = if step_ok {
            None
        } else {
            self.track.candidate.take().and_then(|(c, c_index, c_shift)| {
                let s = self.correlate(&spec, &c);
                let cg = index.saturating_sub(c_index).max(1) as f64;
                let near = s.dx_px.hypot(s.dy_px) <= MAX_STEP_PX * cg;
                (near && !collapsed(s.peak, usual_step)).then_some((s, c_shift))
            })
        };
        let (step, base) = match (step_ok, via_candidate) {
            (true, _) => (step, prev_shift),
            (false, Some((s, c_shift))) => {
                self.track.steps.clear();
                (s, c_shift)
            }
            (false, None) => {
                self.recycle(pair.cross);
                self.track.previous = Some((prev, prev_index, prev_shift));
                let step_px = step.dx_px.hypot(step.dy_px);
                if collapsed(step.peak, usual_step) {
                    let ratio = usual_step.map_or(0.0, |u| step.peak / u.max(f64::MIN_POSITIVE));
                    self.track.candidate = Some((spec, index, predicted));
                    return Tracked { shift: predicted, lock: Lock::Lost { peak_ratio: ratio } };
                }
                let chained =
                    Shift { dx_px: prev_shift.dx_px + step.dx_px, dy_px: prev_shift.dy_px + step.dy_px, ..step };
                self.track.candidate = Some((spec, index, chained));
                return Tracked { shift: chained, lock: Lock::Jump { step_px, frames: gap } };
            }
        };
        let (cx, cy) = (base.dx_px + step.dx_px, base.dy_px + step.dy_px);
        let direct = pair.surface(true).near(cx, cy, AGREE_PX);
        self.recycle(pair.cross);
        // The step's peak has not collapsed (checked above), so the chain holds where the
        // reference no longer does.
        let (shift, lock) = match direct {
            Some(d) if !collapsed(d.peak, usual_ref) => (d, Lock::Reference),
            _ => (Shift { dx_px: cx, dy_px: cy, peak: step.peak }, Lock::Chained),
        };
        if lock == Lock::Reference {
            push(&mut self.track.reference_peaks, shift.peak);
        }
        push(&mut self.track.step_peaks, step.peak);
        let per_frame = ((shift.dx_px - base.dx_px) / gap as f64, (shift.dy_px - base.dy_px) / gap as f64);
        if self.track.steps.len() == HISTORY {
            self.track.steps.pop_front();
        }
        self.track.steps.push_back(per_frame);
        if let Some((c, ..)) = self.track.candidate.take() {
            self.recycle(c.data);
        }
        self.recycle(prev.data);
        self.track.previous = Some((spec, index, shift));
        Tracked { shift, lock }
    }
}

/// Vertex offset of the parabola through (−1, a), (0, b), (1, c), limited to ±0.5.
fn parabola(a: f64, b: f64, c: f64) -> f64 {
    // On a Gaussian-shaped peak the parabola through the logarithms is exact, where the parabola
    // through the values pulls the vertex toward the centre pixel (by up to 0.05 px for the broad
    // peaks of smooth, damaged frames, which then adds up along a chain of steps).
    if a > 0.0 && b > 0.0 && c > 0.0 {
        let (la, lb, lc) = (a.ln(), b.ln(), c.ln());
        let d = la - 2.0 * lb + lc;
        if d < -1e-12 {
            return (0.5 * (la - lc) / d).clamp(-0.5, 0.5);
        }
    }
    let d = a - 2.0 * b + c;
    if d.abs() < 1e-12 { 0.0 } else { (0.5 * (a - c) / d).clamp(-0.5, 0.5) }
}

/// The transform length for `n` samples: the smallest `m ≥ n` whose prime factors are 2, 3 and 5.
fn fft_len(n: usize) -> usize {
    let smooth = |mut m: usize| {
        for p in [2, 3, 5] {
            while m.is_multiple_of(p) {
                m /= p;
            }
        }
        m == 1
    };
    (n.max(1)..).find(|&m| smooth(m)).unwrap_or(n)
}

/// Σ v² in f64, in eight independent sums: one running sum waits out the add's latency at every
/// value (1.4 ms of a 1024² frame's forward pass on the Intel Xeon, more than its transforms).
fn energy_f64(v: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = v.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&x| (x as f64) * (x as f64)).sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += (x as f64) * (x as f64);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Rows of the real-to-complex pass per rayon task: enough to amortise the task, few enough to
/// balance 2 cores.
const ROWS_PER_TASK: usize = 16;

/// Columns gathered and transformed together by [`columns_fft`]: eight complex values are one
/// 64-byte cache line of each source row.
const BAND: usize = 8;

/// The 1-D transform along the columns of the row-major `src` (`rows` rows of `cols` values),
/// written transposed: row `c` of `dst` (`len` = `rows` values) is the transform of column `c`.
///
/// A transpose fused with the transforms: a task gathers [`BAND`] columns — one whole cache line
/// from each source row — into a scratch block that stays in L2, transforms each there and writes
/// it out once. A transpose followed by in-place transforms moves the whole plane twice more, and at
/// a power-of-two size (1024² frames) its strided writes all fall in one L1 set: on the 2-core Intel
/// Xeon (Emerald Rapids), the inverse's 1024 × 1024 transpose alone took 2.2 ms and its row
/// transforms 0.8 ms; fused, both together take ≈ 1.1 ms (see `Registrar::inverse_cross`). Each
/// transform is independent, so the result is the same bit for bit whatever the threads.
fn columns_fft(src: &[Complex32], cols: usize, dst: &mut [Complex32], len: usize, fft: &dyn Fft<f32>) {
    let zero = Complex32::new(0.0, 0.0);
    debug_assert_eq!(src.len(), len * cols);
    debug_assert_eq!(dst.len(), cols * len);
    dst.par_chunks_mut(len * BAND).enumerate().for_each_init(
        || (vec![zero; len * BAND], vec![zero; fft.get_outofplace_scratch_len()]),
        |(block, scratch), (band, out)| {
            let c0 = band * BAND;
            let n = out.len() / len;
            for (r, row) in src.chunks_exact(cols).enumerate() {
                for (i, v) in row[c0..c0 + n].iter().enumerate() {
                    block[i * len + r] = *v;
                }
            }
            for (input, output) in block.chunks_exact_mut(len).zip(out.chunks_exact_mut(len)) {
                fft.process_outofplace_with_scratch(input, output, scratch);
            }
        },
    );
}

/// Shifts smaller than this (per axis) are not corrected: they are below what the measurement
/// resolves in noisy frames (median error 0.02–0.04 px, worst 0.13 px), and interpolating for them
/// would only smooth the noise.
pub const DEAD_BAND_PX: f64 = 0.1;

/// Undoes `shift`: the corrected frame and the region where it holds real pixels.
pub fn apply(frame: &Frame, shift: Shift, mode: Registration) -> (Frame, Rect) {
    let (w, h) = (frame.width(), frame.height());
    let band = |d: f64| if d.abs() < DEAD_BAND_PX { 0.0 } else { d };
    let (dx, dy) = match mode {
        Registration::Off => return (frame.clone(), Rect { x0: 0, y0: 0, x1: w, y1: h }),
        Registration::Integer => (shift.dx_px.round(), shift.dy_px.round()),
        Registration::Subpixel => (band(shift.dx_px), band(shift.dy_px)),
    };
    if dx == 0.0 && dy == 0.0 {
        return (frame.clone(), Rect { x0: 0, y0: 0, x1: w, y1: h });
    }
    // Output x samples source x + dx. A source position less than one pixel beyond the edge still
    // lies on the edge pixel's footprint and is read clamped to it, so a shift below one pixel
    // loses no column; only content that moved a whole pixel or more out of the field is outside.
    let span = |d: f64, n: usize| -> (usize, usize) {
        let lo = ((-1.0 - d).floor() + 1.0).max(0.0) as usize;
        let hi = (n as f64 - d).ceil().clamp(0.0, n as f64) as usize;
        (lo.min(hi), hi)
    };
    let (x0, x1) = span(dx, w);
    let (y0, y1) = span(dy, h);
    let (out, invalid) = resample_separable(frame, dx, dy, (x0, x1), (y0, y1));
    let shifted = Frame::from_f32(w, h, out).map(|f| f.with_invalid(invalid));
    // from_f32 cannot fail here: same size as a valid frame and finite values.
    let shifted = shifted.unwrap_or_else(|_| frame.clone());
    (shifted, Rect { x0, y0, x1, y1 })
}

/// Lanczos-3 weights of the six taps at `floor(s) − 2 ..= floor(s) + 3` for a sample at `s`
/// with fractional part `frac`, normalised to sum 1 (so a flat image stays flat). At a half-pixel
/// shift its response stays within 1 % of flat up to 0.13 cycles/px and within 2.5 % up to 0.25
/// (bilinear: 92 % and 71 %), where a lattice and the pre-filtered noise live, so the resampled
/// frame keeps the reference's contrast whatever the shift's fraction.
fn lanczos3(frac: f64) -> [f32; 6] {
    let sinc =
        |t: f64| if t.abs() < 1e-12 { 1.0 } else { (std::f64::consts::PI * t).sin() / (std::f64::consts::PI * t) };
    let mut w = [0f64; 6];
    for (k, wk) in w.iter_mut().enumerate() {
        let t = frac - (k as f64 - 2.0);
        // Exactly 0 at whole-pixel distances (sin(πk) is not), so a whole-pixel shift copies
        // pixels and an invalid neighbour does not spread.
        *wk = if (t - t.round()).abs() < 1e-9 { f64::from(t.round() == 0.0) } else { sinc(t) * sinc(t / 3.0) };
    }
    let sum: f64 = w.iter().sum();
    w.map(|v| (v / sum) as f32)
}

/// `frame` sampled at (x + dx, y + dy) for x in `xs`, y in `ys` (zero and invalid elsewhere), in two
/// separable Lanczos-3 passes; sources beyond the edge are read clamped to it. A pixel is invalid
/// when any tap with weight is.
fn resample_separable(
    frame: &Frame,
    dx: f64,
    dy: f64,
    (x0, x1): (usize, usize),
    (y0, y1): (usize, usize),
) -> (Vec<f32>, Vec<bool>) {
    let (w, h) = (frame.width(), frame.height());
    let (src, mask) = (frame.pixels(), frame.invalid_mask());
    let (wx, wy) = (lanczos3(dx - dx.floor()), lanczos3(dy - dy.floor()));
    let (ox, oy) = (dx.floor() as i64 - 2, dy.floor() as i64 - 2);
    let clamp = |i: i64, n: usize| i.clamp(0, n as i64 - 1) as usize;
    // Horizontal pass over every source row a vertical tap can reach.
    let (r0, r1) = (clamp(y0 as i64 + oy, h), clamp(y1 as i64 - 1 + oy + 5, h) + 1);
    let mut tmp = vec![0f32; w * h];
    let mut tmp_bad = vec![false; w * h];
    tmp.par_chunks_mut(w).zip(tmp_bad.par_chunks_mut(w)).enumerate().skip(r0).take(r1 - r0).for_each(
        |(y, (tmp_row, bad_row))| {
            let row = &src[y * w..(y + 1) * w];
            let mask_row = mask.map(|m| &m[y * w..(y + 1) * w]);
            // Interior outputs (all six taps inside the row) as six shifted multiply-adds over the
            // whole run, which vectorise; the few edge outputs read their taps clamped.
            let lo = ((-ox).max(0) as usize).clamp(x0, x1);
            let hi = ((w as i64 - 5 - ox).max(0) as usize).clamp(lo, x1);
            let out = &mut tmp_row[lo..hi];
            for (k, &wk) in wx.iter().enumerate() {
                let start = (lo as i64 + ox + k as i64) as usize;
                for (o, v) in out.iter_mut().zip(&row[start..start + (hi - lo)]) {
                    *o += wk * v;
                }
            }
            for x in (x0..lo).chain(hi..x1) {
                let base = x as i64 + ox;
                tmp_row[x] = wx.iter().enumerate().map(|(k, &wk)| wk * row[clamp(base + k as i64, w)]).sum();
            }
            if let Some(m) = mask_row {
                for x in x0..x1 {
                    let base = x as i64 + ox;
                    bad_row[x] = wx.iter().enumerate().any(|(k, &wk)| wk != 0.0 && m[clamp(base + k as i64, w)]);
                }
            }
        },
    );
    let mut out = vec![0f32; w * h];
    let mut invalid = vec![true; w * h];
    // Vertical pass: each output row is a weighted sum of six whole rows (vectorises).
    out.par_chunks_mut(w).zip(invalid.par_chunks_mut(w)).enumerate().skip(y0).take(y1 - y0).for_each(
        |(y, (out_row, invalid_row))| {
            let rows: [usize; 6] = std::array::from_fn(|k| clamp(y as i64 + oy + k as i64, h));
            let out_row = &mut out_row[x0..x1];
            for (k, &wk) in wy.iter().enumerate() {
                let src = &tmp[rows[k] * w + x0..rows[k] * w + x1];
                for (o, v) in out_row.iter_mut().zip(src) {
                    *o += wk * v;
                }
            }
            if mask.is_none() {
                invalid_row[x0..x1].fill(false);
                return;
            }
            for (x, bad) in invalid_row[x0..x1].iter_mut().enumerate() {
                *bad = wy.iter().enumerate().any(|(k, &wk)| wk != 0.0 && tmp_bad[rows[k] * w + x0 + x]);
            }
        },
    );
    (out, invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lattice(w: usize, h: usize, ox: f64, oy: f64) -> Frame {
        let px = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f64 - ox, (i / w) as f64 - oy);
                ((x * 0.45).sin() * (y * 0.31).cos() + 0.3 * ((x + 2.0 * y) * 0.11).sin()) as f32
            })
            .collect();
        Frame::from_f32(w, h, px).expect("frame")
    }

    #[test]
    fn measures_integer_and_subpixel_shifts() {
        let r = lattice(96, 80, 0.0, 0.0);
        let reg = Registrar::new(&r, 0);
        let s = reg.measure(&lattice(96, 80, 3.0, -2.0));
        assert!((s.dx_px - 3.0).abs() < 0.1 && (s.dy_px + 2.0).abs() < 0.1, "{s:?}");
        let s = reg.measure(&lattice(96, 80, -1.4, 2.6));
        assert!((s.dx_px + 1.4).abs() < 0.25 && (s.dy_px - 2.6).abs() < 0.25, "{s:?}");
    }

    /// The straightforward transform: full complex 2-D FFTs of the windowed, padded frames, the
    /// cross-spectrum over the whole plane, and the inverse back — what the half, transposed
    /// spectra must reproduce.
    fn plain_pair(reg: &Registrar, a: &Frame, b: &Frame, c: &Frame) -> Vec<Complex32> {
        let (w, h) = (reg.w, reg.h);
        let mut planner = FftPlanner::new();
        let mut fft2 = |data: &mut Vec<Complex32>, inverse: bool| {
            let (row, col) = if inverse {
                (planner.plan_fft_inverse(w), planner.plan_fft_inverse(h))
            } else {
                (planner.plan_fft_forward(w), planner.plan_fft_forward(h))
            };
            data.chunks_exact_mut(w).for_each(|r| row.process(r));
            for x in 0..w {
                let mut column: Vec<Complex32> = (0..h).map(|y| data[y * w + x]).collect();
                col.process(&mut column);
                for (y, v) in column.into_iter().enumerate() {
                    data[y * w + x] = v;
                }
            }
        };
        let spectrum = |f: &Frame| {
            let mean = f.valid_mean() as f32;
            let mut d = vec![Complex32::new(0.0, 0.0); w * h];
            for y in 0..reg.fh {
                for x in 0..reg.fw {
                    d[y * w + x].re = (f.pixels()[y * reg.fw + x] - mean) * reg.window[y * reg.fw + x];
                }
            }
            d
        };
        let (mut sa, mut sb, mut sc) = (spectrum(a), spectrum(b), spectrum(c));
        for d in [&mut sa, &mut sb, &mut sc] {
            fft2(d, false);
        }
        let i = Complex32::new(0.0, 1.0);
        let mut cross: Vec<Complex32> = (0..w * h).map(|k| sa[k] * sb[k].conj() + i * (sa[k] * sc[k].conj())).collect();
        fft2(&mut cross, true);
        cross
    }

    /// The fused gather-and-transform equals transposing and transforming each column on its own,
    /// for column counts that fill no band, some bands and a partial last band.
    #[test]
    fn columns_fft_transforms_every_column_transposed() {
        for (rows, cols) in [(16, 5), (24, 8), (30, 19), (64, 513)] {
            let fft = FftPlanner::<f32>::new().plan_fft_forward(rows);
            let src: Vec<Complex32> =
                (0..rows * cols).map(|i| Complex32::new((i % 7) as f32 - 3.0, (i % 5) as f32 * 0.5)).collect();
            let mut dst = vec![Complex32::new(f32::NAN, f32::NAN); rows * cols];
            columns_fft(&src, cols, &mut dst, rows, &*fft);
            for c in 0..cols {
                let mut col: Vec<Complex32> = (0..rows).map(|r| src[r * cols + c]).collect();
                fft.process(&mut col);
                for (r, (a, b)) in dst[c * rows..(c + 1) * rows].iter().zip(&col).enumerate() {
                    assert!(
                        (a - b).norm() <= 1e-5 * (1.0 + b.norm()),
                        "{rows}×{cols}, column {c}, row {r}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn half_transposed_spectra_give_the_plain_transforms_correlations() {
        // Even and odd transform widths (96, and 75 = 3·5²): the half spectrum keeps w/2 + 1
        // columns either way, and the mirrored half must land on the right frequencies.
        for (w, h) in [(96, 80), (75, 64), (90, 75)] {
            let (a, b, c) = (lattice(w, h, 1.3, -0.6), lattice(w, h, 0.0, 0.0), lattice(w, h, -2.0, 1.5));
            let reg = Registrar::new(&b, 0);
            assert_eq!((reg.w, reg.h), (w, h), "sizes chosen to need no padding");
            let ours = reg.correlate_pair(&reg.spectrum(&a), &reg.spectrum(&b), &reg.spectrum(&c)).cross;
            let plain = plain_pair(&reg, &a, &b, &c);
            let scale = plain.iter().fold(0f32, |m, v| m.max(v.re.abs()).max(v.im.abs()));
            let worst = ours.iter().zip(&plain).fold(0f32, |m, (x, y)| m.max((x - y).norm()));
            assert!(worst <= 1e-5 * scale, "{w}×{h}: max |Δ| {worst:e} of {scale:e}");
        }
    }

    #[test]
    fn a_frame_padded_for_the_transform_measures_the_same_shift() {
        // 102 = 2·3·17 and 85 = 5·17 are padded to 108 and 90: the same content cropped to a size
        // that needs no padding (96×80, above) must give the same shift, within the measurement's
        // own error.
        assert_eq!(
            (fft_len(102), fft_len(85), fft_len(1020), fft_len(1024), fft_len(2048)),
            (108, 90, 1024, 1024, 2048)
        );
        for (dx, dy) in [(3.0, -2.0), (-1.4, 2.6), (0.3, 0.0)] {
            let padded = Registrar::new(&lattice(102, 85, 0.0, 0.0), 0).measure(&lattice(102, 85, dx, dy));
            let plain = Registrar::new(&lattice(96, 80, 0.0, 0.0), 0).measure(&lattice(96, 80, dx, dy));
            assert!((padded.dx_px - dx).abs() < 0.25 && (padded.dy_px - dy).abs() < 0.25, "{padded:?}");
            assert!(
                (padded.dx_px - plain.dx_px).abs() < 0.1 && (padded.dy_px - plain.dy_px).abs() < 0.1,
                "{padded:?} {plain:?}"
            );
            assert!((padded.peak - plain.peak).abs() < 0.05, "{padded:?} {plain:?}");
        }
    }

    #[test]
    fn correction_restores_the_reference_inside_the_overlap() {
        let r = lattice(64, 64, 0.0, 0.0);
        let moved = lattice(64, 64, 4.0, -3.0);
        let shift = Shift { dx_px: 4.0, dy_px: -3.0, peak: 1.0 };
        let (fixed, rect) = apply(&moved, shift, Registration::Integer);
        assert_eq!(rect, Rect { x0: 0, y0: 3, x1: 60, y1: 64 });
        for y in rect.y0..rect.y1 {
            for x in rect.x0..rect.x1 {
                assert!((fixed.at(x, y) - r.at(x, y)).abs() < 1e-5);
            }
        }
        assert!(!fixed.is_valid(63) && fixed.is_valid(3 * 64));
    }

    #[test]
    fn a_shift_below_one_pixel_loses_no_column() {
        let f = lattice(60, 40, 0.0, 0.0);
        for d in [0.11, 0.5, 0.9, -0.3, -0.95] {
            let (_, rect) = apply(&f, Shift { dx_px: d, dy_px: -d, peak: 1.0 }, Registration::Subpixel);
            assert_eq!(rect, Rect { x0: 0, y0: 0, x1: 60, y1: 40 }, "shift {d}");
        }
        // A whole pixel or more has left the field.
        let (_, rect) = apply(&f, Shift { dx_px: 1.4, dy_px: -2.0, peak: 1.0 }, Registration::Subpixel);
        assert_eq!(rect, Rect { x0: 0, y0: 2, x1: 59, y1: 40 });
    }

    /// A textured crystal: a lattice of period 12 px with random column brightness, so the true
    /// peak is the highest but lattice-equivalent peaks are close.
    fn crystal(w: usize, h: usize, ox: f64, oy: f64, damage: f64) -> Frame {
        let bright = |i: i64, j: i64| 0.8 + 0.4 * (((i * 7919 + j * 104729) % 97) as f64 / 97.0);
        let px = (0..w * h)
            .map(|k| {
                let (x, y) = ((k % w) as f64 - ox, (k / w) as f64 - oy);
                let (i, j) = ((x / 12.0).round() as i64, (y / 12.0).round() as i64);
                let (cx, cy) = (i as f64 * 12.0, j as f64 * 12.0);
                let col = bright(i, j) * (-((x - cx).powi(2) + (y - cy).powi(2)) / 8.0).exp();
                // Amorphous texture: value noise on a 3 px lattice, fixed to the specimen.
                let noise = |i: i64, j: i64| (((i * 73_856_093) ^ (j * 19_349_663)).rem_euclid(1000) as f64) / 1000.0;
                let (u, v) = (x / 3.0, y / 3.0);
                let (i0, j0) = (u.floor() as i64, v.floor() as i64);
                let (fu, fv) = (u - u.floor(), v - v.floor());
                let amorphous = (1.0 - fu) * (1.0 - fv) * noise(i0, j0)
                    + fu * (1.0 - fv) * noise(i0 + 1, j0)
                    + (1.0 - fu) * fv * noise(i0, j0 + 1)
                    + fu * fv * noise(i0 + 1, j0 + 1)
                    - 0.5;
                ((1.0 - damage) * col + damage * (0.3 + 0.2 * amorphous)) as f32
            })
            .collect();
        Frame::from_f32(w, h, px).expect("frame")
    }

    #[test]
    fn tracking_follows_slow_drift_and_flags_a_jump_then_follows_it() {
        let (w, h) = (120, 96);
        let mut reg = Registrar::new(&crystal(w, h, 0.0, 0.0, 0.0), 0);
        let truth = |i: usize| -> (f64, f64) {
            let (mut x, mut y) = (0.2 * i as f64, -0.15 * i as f64);
            if i >= 6 {
                x += 7.0; // a stage jump between frames 5 and 6
                y -= 5.0;
            }
            (x, y)
        };
        for i in 1..12 {
            let (tx, ty) = truth(i);
            let t = reg.track(&crystal(w, h, tx, ty, 0.0), i as u64);
            if i == 6 {
                assert!(matches!(t.lock, Lock::Jump { .. }), "frame {i}: {t:?}");
            } else {
                assert!(t.lock.usable(), "frame {i}: {t:?}");
                assert!((t.shift.dx_px - tx).abs() < 0.15 && (t.shift.dy_px - ty).abs() < 0.15, "frame {i}: {t:?}");
            }
        }
    }

    #[test]
    fn tracking_flags_a_frame_with_nothing_in_common_and_goes_on() {
        let (w, h) = (120, 96);
        let mut reg = Registrar::new(&crystal(w, h, 0.0, 0.0, 0.0), 0);
        for i in 1..8 {
            let (tx, ty) = (0.2 * i as f64, 0.1 * i as f64);
            let f = if i == 4 {
                // The beam blanked halfway: a flat frame with a little noise.
                let px = (0..w * h).map(|k| 0.3 + 0.01 * ((k * 7919 % 101) as f32 / 101.0)).collect();
                Frame::from_f32(w, h, px).expect("frame")
            } else {
                crystal(w, h, tx, ty, 0.0)
            };
            let t = reg.track(&f, i as u64);
            if i == 4 {
                assert!(!t.lock.usable(), "frame {i}: {t:?}");
            } else {
                assert!(t.lock.usable(), "frame {i}: {t:?}");
                assert!((t.shift.dx_px - tx).abs() < 0.15 && (t.shift.dy_px - ty).abs() < 0.15, "frame {i}: {t:?}");
            }
        }
    }

    #[test]
    fn tracking_holds_through_heavy_damage() {
        let (w, h) = (120, 96);
        let mut reg = Registrar::new(&crystal(w, h, 0.0, 0.0, 0.0), 0);
        for i in 1..12 {
            let (tx, ty) = (0.25 * i as f64, -0.2 * i as f64);
            let t = reg.track(&crystal(w, h, tx, ty, (i as f64 / 10.0).min(0.97)), i as u64);
            assert!(t.lock.usable(), "frame {i}: {t:?}");
            assert!((t.shift.dx_px - tx).abs() < 0.2 && (t.shift.dy_px - ty).abs() < 0.2, "frame {i}: {t:?}");
        }
    }
}
