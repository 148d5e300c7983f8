//! A frame: one 2-D image of a series, held as f32, with the pixels that carry no signal marked.
//!
//! Detectors write gaps, dead and saturated pixels as the dtype maximum (65535 for u16). Those are
//! never signal: with gap masking on they are marked invalid and later filled or excluded per patch.

use serde::{Deserialize, Serialize};

use crate::limits;

/// Pixel type as received (the analysis always runs in f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelType {
    U8,
    U16,
    U32,
    F32,
}

impl PixelType {
    /// The value detectors use for gap / masked pixels; `None` for floats.
    pub fn gap_value(self) -> Option<f64> {
        match self {
            Self::U8 => Some(u8::MAX as f64),
            Self::U16 => Some(u16::MAX as f64),
            Self::U32 => Some(u32::MAX as f64),
            Self::F32 => None,
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::U16 => 2,
            Self::U32 | Self::F32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::U16 => "u16",
            Self::U32 => "u32",
            Self::F32 => "f32",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[must_use]
pub enum FrameError {
    #[error("empty frame ({width}×{height} px)")]
    Empty { width: usize, height: usize },
    #[error("frame of {width}×{height} px exceeds the limit of {max} pixels")]
    TooLarge { width: usize, height: usize, max: usize },
    #[error("{len} pixel values do not fill a {width}×{height} frame")]
    Size { len: usize, width: usize, height: usize },
    #[error("{count} of {total} pixels are NaN or infinite (first at x={x}, y={y})")]
    NonFinite { count: usize, total: usize, x: usize, y: usize },
    #[error("every pixel is a gap or masked pixel (dtype maximum)")]
    AllInvalid,
    #[error("{count} pixels exceed ±{max:e} in magnitude (first {value:e} at x={x}, y={y}): no detector counts that")]
    Absurd { count: usize, value: f32, max: f32, x: usize, y: usize },
}

/// Integer pixel types a frame can be built from.
pub trait IntPixel: Copy {
    const TYPE: PixelType;
    fn to_f32(self) -> f32;
    fn is_gap(self) -> bool;
}

macro_rules! int_pixel {
    ($t:ty, $v:ident) => {
        impl IntPixel for $t {
            const TYPE: PixelType = PixelType::$v;
            fn to_f32(self) -> f32 {
                self as f32
            }
            fn is_gap(self) -> bool {
                self == <$t>::MAX
            }
        }
    };
}
int_pixel!(u8, U8);
int_pixel!(u16, U16);
int_pixel!(u32, U32);

#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    width: usize,
    height: usize,
    pixels: Vec<f32>,
    /// `true` = no signal. `None` when every pixel is valid (the common case costs nothing).
    invalid: Option<Vec<bool>>,
    dtype: PixelType,
}

fn check_dims(width: usize, height: usize, len: usize) -> Result<(), FrameError> {
    if width == 0 || height == 0 {
        return Err(FrameError::Empty { width, height });
    }
    let max = limits::MAX_FRAME_PIXELS;
    if width.checked_mul(height).is_none_or(|n| n > max) {
        return Err(FrameError::TooLarge { width, height, max });
    }
    if len != width * height {
        return Err(FrameError::Size { len, width, height });
    }
    Ok(())
}

/// Unnormalised separable convolution with kernel `k` (odd length), edges clamped. Both passes are
/// written as sums of shifted rows (axpy), which the compiler vectorises: a 1020² frame at σ = 2 px
/// takes a few milliseconds.
fn blur_separable(src: &[f32], w: usize, h: usize, k: &[f32]) -> Vec<f32> {
    let r = k.len() / 2;
    // Horizontal: pad each row by r replicated pixels, then dst += k[j] · padded[j..j + w].
    let mut tmp = vec![0f32; w * h];
    let mut padded = vec![0f32; w + 2 * r];
    for y in 0..h {
        let row = &src[y * w..(y + 1) * w];
        padded[..r].fill(row[0]);
        padded[r..r + w].copy_from_slice(row);
        padded[r + w..].fill(row[w - 1]);
        let dst = &mut tmp[y * w..(y + 1) * w];
        for (j, &kj) in k.iter().enumerate() {
            for (d, &p) in dst.iter_mut().zip(&padded[j..j + w]) {
                *d += kj * p;
            }
        }
    }
    // Vertical: dst row y += k[j] · tmp row clamp(y + j − r).
    let mut out = vec![0f32; w * h];
    for y in 0..h {
        let dst = &mut out[y * w..(y + 1) * w];
        for (j, &kj) in k.iter().enumerate() {
            let sy = (y + j).saturating_sub(r).min(h - 1);
            for (d, &p) in dst.iter_mut().zip(&tmp[sy * w..(sy + 1) * w]) {
                *d += kj * p;
            }
        }
    }
    out
}

impl Frame {
    /// From integer pixels; with `mask_gaps`, pixels at the dtype maximum are marked invalid.
    pub fn from_ints<P: IntPixel>(
        width: usize,
        height: usize,
        data: &[P],
        mask_gaps: bool,
    ) -> Result<Self, FrameError> {
        check_dims(width, height, data.len())?;
        let pixels = data.iter().map(|p| p.to_f32()).collect();
        let invalid = if mask_gaps && data.iter().any(|p| p.is_gap()) {
            Some(data.iter().map(|p| p.is_gap()).collect::<Vec<_>>())
        } else {
            None
        };
        let frame = Self { width, height, pixels, invalid, dtype: P::TYPE };
        if frame.n_invalid() == frame.len() {
            return Err(FrameError::AllInvalid);
        }
        Ok(frame)
    }

    /// From float pixels. NaN or infinite values are an error: a float frame has no gap value, and a
    /// NaN would silently poison every statistic downstream.
    pub fn from_f32(width: usize, height: usize, pixels: Vec<f32>) -> Result<Self, FrameError> {
        check_dims(width, height, pixels.len())?;
        let bad = pixels.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            let first = pixels.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Err(FrameError::NonFinite { count: bad, total: pixels.len(), x: first % width, y: first / width });
        }
        // Finite but absurd values (±3.4e38) overflow the first difference or square taken of them
        // and come back as NaN metrics: refused here like NaN itself.
        let absurd = |v: &f32| v.abs() > limits::MAX_ABS_PIXEL;
        let count = pixels.iter().filter(|v| absurd(v)).count();
        if count > 0 {
            let first = pixels.iter().position(absurd).unwrap_or(0);
            return Err(FrameError::Absurd {
                count,
                value: pixels[first],
                max: limits::MAX_ABS_PIXEL,
                x: first % width,
                y: first / width,
            });
        }
        Ok(Self { width, height, pixels, invalid: None, dtype: PixelType::F32 })
    }

    /// A frame with an explicit invalid mask (registration resampling, tests).
    pub fn with_invalid(mut self, invalid: Vec<bool>) -> Self {
        debug_assert_eq!(invalid.len(), self.pixels.len());
        self.invalid = invalid.iter().any(|&b| b).then_some(invalid);
        self
    }

    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        self.height
    }
    pub fn len(&self) -> usize {
        self.pixels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }
    pub fn dtype(&self) -> PixelType {
        self.dtype
    }
    pub fn pixels(&self) -> &[f32] {
        &self.pixels
    }
    pub fn invalid_mask(&self) -> Option<&[bool]> {
        self.invalid.as_deref()
    }
    pub fn is_valid(&self, i: usize) -> bool {
        self.invalid.as_ref().is_none_or(|m| !m[i])
    }
    pub fn n_invalid(&self) -> usize {
        self.invalid.as_ref().map_or(0, |m| m.iter().filter(|&&b| b).count())
    }
    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.pixels[y * self.width + x]
    }

    /// A Gaussian-smoothed copy (σ in pixels; separable, edges clamped). Gap pixels neither take
    /// part nor change: each output is the weighted mean of the valid pixels under the kernel, so a
    /// detector gap does not bleed into its neighbours. Shot noise dominates a 20×20 patch of a fast
    /// scan, and σ ≈ 1 px removes most of it while atomic columns (several px wide) survive.
    pub fn gaussian_filtered(&self, sigma_px: f32) -> Frame {
        if sigma_px <= 0.0 || !sigma_px.is_finite() {
            return self.clone();
        }
        let r = (3.0 * sigma_px).ceil() as usize;
        let k: Vec<f32> =
            (0..=2 * r).map(|i| (-(((i as f32 - r as f32).powi(2)) / (2.0 * sigma_px * sigma_px))).exp()).collect();
        let (w, h) = (self.width, self.height);
        let pixels = match &self.invalid {
            // Clamped edges replicate pixels, so every output's weights sum to (Σk)²: no second
            // convolution of the mask is needed.
            None => {
                let ks: f32 = k.iter().sum();
                let mut out = blur_separable(&self.pixels, w, h, &k);
                let norm = 1.0 / (ks * ks);
                out.iter_mut().for_each(|v| *v *= norm);
                out
            }
            Some(mask) => {
                let weight: Vec<f32> = mask.iter().map(|&bad| if bad { 0.0 } else { 1.0 }).collect();
                let value: Vec<f32> = self.pixels.iter().zip(&weight).map(|(v, m)| v * m).collect();
                let num = blur_separable(&value, w, h, &k);
                let den = blur_separable(&weight, w, h, &k);
                (0..w * h).map(|i| if !mask[i] && den[i] > 0.0 { num[i] / den[i] } else { self.pixels[i] }).collect()
            }
        };
        Frame { width: w, height: h, pixels, invalid: self.invalid.clone(), dtype: self.dtype }
    }

    /// Min and max over valid pixels.
    /// Minimum and maximum of the valid pixels (`(∞, −∞)` when there are none).
    ///
    /// Every constructor refuses non-finite pixels, so plain compares give the extremes, in sixteen
    /// independent lanes that vectorise: `f32::min`'s NaN rule and a mask test per pixel kept the
    /// loop scalar, 2.9 ms of a 1020² frame (the scaling check of every analysed frame).
    pub fn valid_range(&self) -> (f32, f32) {
        const L: usize = 16;
        let mut lo = [f32::INFINITY; L];
        let mut hi = [f32::NEG_INFINITY; L];
        let mut take = |vals: &[f32], bad: Option<&[bool]>| {
            for (i, &v) in vals.iter().enumerate() {
                let keep = bad.is_none_or(|b| !b[i]);
                let (l, h) = (&mut lo[i % L], &mut hi[i % L]);
                *l = if keep && v < *l { v } else { *l };
                *h = if keep && v > *h { v } else { *h };
            }
        };
        let chunks = self.pixels.chunks_exact(L);
        let tail_at = self.pixels.len() - chunks.remainder().len();
        match self.invalid.as_deref() {
            None => {
                for c in chunks {
                    take(c, None);
                }
                take(&self.pixels[tail_at..], None);
            }
            Some(mask) => {
                for (c, m) in chunks.zip(mask.chunks_exact(L)) {
                    take(c, Some(m));
                }
                take(&self.pixels[tail_at..], Some(&mask[tail_at..]));
            }
        }
        let l = lo.iter().fold(f32::INFINITY, |a, &b| if b < a { b } else { a });
        let h = hi.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
        (l, h)
    }

    /// Mean of valid pixels.
    pub fn valid_mean(&self) -> f64 {
        let (mut s, mut n) = (0f64, 0usize);
        for (i, &v) in self.pixels.iter().enumerate() {
            if self.is_valid(i) {
                s += v as f64;
                n += 1;
            }
        }
        if n == 0 { 0.0 } else { s / n as f64 }
    }
}

/// How raw intensities map to the [0, 1] range the network was trained on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleMode {
    /// (v − min) / (max − min) with min and max of the reference frame's valid pixels, applied to
    /// every frame, so a later loss of intensity shows as a change.
    #[default]
    Reference,
    /// v / dtype maximum for integers; floats as they are.
    Dtype,
    /// Values as they are.
    None,
}

/// `v' = (v − offset) · gain`, fixed for a series.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Scaling {
    pub mode: ScaleMode,
    pub offset: f32,
    pub gain: f32,
}

impl Scaling {
    pub fn from_reference(mode: ScaleMode, reference: &Frame) -> Result<Self, ScalingError> {
        let (offset, gain) = match mode {
            ScaleMode::Reference => {
                let (lo, hi) = reference.valid_range();
                if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
                    return Err(ScalingError::Constant { value: lo });
                }
                (lo, 1.0 / (hi - lo))
            }
            ScaleMode::Dtype => (0.0, reference.dtype().gap_value().map_or(1.0, |m| 1.0 / m as f32)),
            ScaleMode::None => (0.0, 1.0),
        };
        // A range too wide (it overflowed) or too narrow (a gain beyond f32) gives a gain of 0 or
        // ∞, and every metric NaN.
        if !(gain.is_finite() && gain.is_normal() && gain > 0.0 && offset.is_finite()) {
            return Err(ScalingError::Gain { offset, gain });
        }
        Ok(Self { mode, offset, gain })
    }

    /// Checks that `frame`'s valid pixels stay within [`limits::MAX_SCALED_PIXEL`] once scaled:
    /// beyond it the network's sums overflow to NaN.
    pub fn check(&self, frame: &Frame) -> Result<(), ScalingError> {
        let (lo, hi) = frame.valid_range();
        if lo > hi {
            return Ok(());
        }
        let (a, b) = (self.apply(lo), self.apply(hi));
        if !(a.abs() <= limits::MAX_SCALED_PIXEL && b.abs() <= limits::MAX_SCALED_PIXEL) {
            return Err(ScalingError::OutOfRange { lo, hi, scaled_lo: a, scaled_hi: b, max: limits::MAX_SCALED_PIXEL });
        }
        Ok(())
    }

    pub fn apply(&self, v: f32) -> f32 {
        (v - self.offset) * self.gain
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[must_use]
pub enum ScalingError {
    #[error("the reference frame is constant ({value}): nothing to normalise against")]
    Constant { value: f32 },
    #[error("the reference frame's range gives an unusable intensity scale (offset {offset:e}, gain {gain:e})")]
    Gain { offset: f32, gain: f32 },
    #[error(
        "pixels {lo:e} … {hi:e} scale to {scaled_lo:e} … {scaled_hi:e}, beyond ±{max:e} of the reference's range: a bad frame"
    )]
    OutOfRange { lo: f32, hi: f32, scaled_lo: f32, scaled_hi: f32, max: f32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_masked_only_when_asked() {
        let f = Frame::from_ints(2, 2, &[1u16, 65535, 3, 4], true).expect("frame");
        assert_eq!(f.n_invalid(), 1);
        assert!(!f.is_valid(1));
        assert_eq!(f.valid_range(), (1.0, 4.0));
        let g = Frame::from_ints(2, 2, &[1u16, 65535, 3, 4], false).expect("frame");
        assert_eq!(g.n_invalid(), 0);
    }

    /// The lane-wise extremes equal a plain scan, with and without a mask, whatever the length's
    /// remainder after the lanes, and with the extreme in the last lane or the tail.
    #[test]
    fn valid_range_equals_a_plain_scan() {
        for len in [1usize, 15, 16, 17, 33, 250] {
            let px: Vec<f32> = (0..len).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect();
            let mut px_ext = px.clone();
            px_ext[len - 1] = 1e6;
            for pixels in [px, px_ext] {
                let mask: Vec<bool> = (0..len).map(|i| i % 3 == 1).collect();
                let plain = |keep: &dyn Fn(usize) -> bool| {
                    (0..len)
                        .filter(|&i| keep(i))
                        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), i| (l.min(pixels[i]), h.max(pixels[i])))
                };
                let f = Frame::from_f32(len, 1, pixels.clone()).expect("frame");
                assert_eq!(f.valid_range(), plain(&|_| true), "len {len}");
                let g = f.with_invalid(mask.clone());
                assert_eq!(g.valid_range(), plain(&|i| !mask[i]), "len {len}, masked");
            }
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(matches!(Frame::from_f32(0, 3, vec![]), Err(FrameError::Empty { .. })));
        assert!(matches!(Frame::from_f32(2, 2, vec![0.0; 3]), Err(FrameError::Size { .. })));
        let e = Frame::from_f32(2, 2, vec![0.0, f32::NAN, 1.0, f32::INFINITY]);
        assert_eq!(e, Err(FrameError::NonFinite { count: 2, total: 4, x: 1, y: 0 }));
        assert_eq!(Frame::from_ints(1, 2, &[255u8, 255], true), Err(FrameError::AllInvalid));
        assert!(matches!(Frame::from_f32(2, 1, vec![0.0, -3.4e38]), Err(FrameError::Absurd { count: 1, x: 1, .. })));
    }

    #[test]
    fn reference_scaling_maps_reference_range_to_unit() {
        let f = Frame::from_f32(2, 1, vec![10.0, 30.0]).expect("frame");
        let s = Scaling::from_reference(ScaleMode::Reference, &f).expect("scaling");
        assert_eq!((s.apply(10.0), s.apply(30.0), s.apply(20.0)), (0.0, 1.0, 0.5));
        let c = Frame::from_f32(2, 1, vec![3.0, 3.0]).expect("frame");
        assert!(Scaling::from_reference(ScaleMode::Reference, &c).is_err());
        assert!(s.check(&Frame::from_f32(2, 1, vec![10.0, 2e8]).expect("frame")).is_err());
        assert!(s.check(&Frame::from_f32(2, 1, vec![10.0, 2e3]).expect("frame")).is_ok());
    }

    #[test]
    fn gaussian_prefilter_smooths_noise_keeps_flat_fields_and_leaves_gaps_out() {
        // A flat field stays flat (the kernel is normalised, edges clamped).
        let flat = Frame::from_f32(9, 7, vec![5.0; 63]).expect("frame");
        assert!(flat.gaussian_filtered(1.5).pixels().iter().all(|&v| (v - 5.0).abs() < 1e-5));
        // Alternating ±1 noise loses most of its variance at σ = 1 px.
        let noise: Vec<f32> = (0..400).map(|i| if (i % 20 + i / 20) % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let f = Frame::from_f32(20, 20, noise).expect("frame").gaussian_filtered(1.0);
        let var = f.pixels().iter().map(|v| v * v).sum::<f32>() / 400.0;
        assert!(var < 0.05, "variance {var} after filtering (1 before)");
        // A gap pixel (u16 max) neither changes nor bleeds into its neighbours.
        let mut px = vec![100u16; 25];
        px[12] = u16::MAX;
        let g = Frame::from_ints(5, 5, &px, true).expect("frame").gaussian_filtered(1.0);
        assert_eq!(g.pixels()[12], 65535.0);
        assert!(g.pixels().iter().enumerate().all(|(i, &v)| i == 12 || (v - 100.0).abs() < 1e-3), "{:?}", g.pixels());
        assert_eq!(g.n_invalid(), 1);
        assert_eq!(g.dtype(), PixelType::U16);
        // σ = 0 is the identity.
        assert_eq!(flat.gaussian_filtered(0.0), flat);
    }
}
