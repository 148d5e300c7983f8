//! One series' analysis: a reference frame (its patches and features computed once) and the
//! comparison of every later frame with it. Shared by `compare`, the daemon and replay.

use std::sync::Arc;

use serde::Serialize;

use super::calibrate::{Calibration, NoiseFloor, PatchThreshold};
use super::{Metric, SimilarityMap, Summary, classical};
use crate::engine::profile::{self, Op, Part};
use crate::engine::{Engine, Features};
use crate::frame::{Frame, ScaleMode, Scaling, ScalingError};
use crate::patches::{self, PatchError, PatchGrid, PatchStatus, Patches};
use crate::register::{self, Lock, Registrar, Registration, Shift, Tracked};

/// What the analysis does; the same for every frame of a series and recorded in every output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AnalysisSettings {
    pub metric: Metric,
    pub patch_px: usize,
    /// How the per-patch damage threshold on the dissimilarity is set.
    pub threshold: PatchThreshold,
    pub min_region_patches: usize,
    pub scale: ScaleMode,
    pub registration: Registration,
    /// Largest share of invalid (gap) pixels a patch may hold and still be analysed.
    pub max_invalid_fraction: f32,
    /// Gaussian pre-filter applied to every frame (reference included) before anything else; 0 = off.
    pub prefilter_sigma_px: f32,
}

/// Chosen by measurement: see "Known-truth evaluation" in the README.
pub const DEFAULT_PREFILTER_SIGMA_PX: f32 = 2.0;

impl AnalysisSettings {
    pub fn new(metric: Metric) -> Self {
        Self {
            metric,
            patch_px: 20,
            threshold: PatchThreshold::default(),
            min_region_patches: 2,
            scale: ScaleMode::Reference,
            registration: Registration::Subpixel,
            max_invalid_fraction: 0.25,
            prefilter_sigma_px: DEFAULT_PREFILTER_SIGMA_PX,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum AnalysisError {
    #[error("metric {0} needs ResNet-18 weights but no feature engine was given")]
    NoEngine(Metric),
    #[error("the feature engine runs {engine} px patches but the analysis asks for {asked} px")]
    PatchMismatch { engine: usize, asked: usize },
    #[error("no reference frame yet")]
    NoReference,
    #[error("frame is {got_w}×{got_h} px but the reference is {ref_w}×{ref_h} px")]
    ShapeMismatch { ref_w: usize, ref_h: usize, got_w: usize, got_h: usize },
    /// The frame's drift could not be established: comparing it would only show the misregistration.
    #[error("{}; not compared (measured drift ({:+.2}, {:+.2}) px)", .0.lock.describe(), .0.shift.dx_px, .0.shift.dy_px)]
    NotRegistered(Tracked),
    #[error(transparent)]
    Patch(#[from] PatchError),
    #[error(transparent)]
    Scaling(#[from] ScalingError),
}

/// One frame compared with the reference.
#[derive(Clone, Debug)]
pub struct FrameAnalysis {
    pub map: SimilarityMap,
    pub summary: Summary,
    /// Measured drift (when registration is on).
    pub shift: Option<Shift>,
    /// How the drift was established (when registration is on).
    pub lock: Option<Lock>,
    /// The drift-corrected frame the patches were cut from (when registration is on).
    pub aligned: Option<Frame>,
}

struct Reference {
    width: usize,
    height: usize,
    grid: PatchGrid,
    scaling: Scaling,
    patches: Patches,
    features: Option<Features>,
    registrar: Option<Registrar>,
}

pub struct Analyzer {
    settings: AnalysisSettings,
    engine: Option<Arc<Engine>>,
    reference: Option<Reference>,
    /// The series' per-patch threshold (calibrated from its first frames, or fixed).
    calibration: Calibration,
    /// The index `analyse` gives the next frame.
    next_index: u64,
}

impl Analyzer {
    pub fn new(settings: AnalysisSettings, engine: Option<Arc<Engine>>) -> Result<Self, AnalysisError> {
        match &engine {
            None if settings.metric.uses_features() => return Err(AnalysisError::NoEngine(settings.metric)),
            Some(e) if settings.metric.uses_features() && e.patch() != settings.patch_px => {
                return Err(AnalysisError::PatchMismatch { engine: e.patch(), asked: settings.patch_px });
            }
            _ => {}
        }
        let calibration = Calibration::new(settings.threshold);
        Ok(Self { settings, engine, reference: None, calibration, next_index: 0 })
    }

    pub fn settings(&self) -> &AnalysisSettings {
        &self.settings
    }

    pub fn grid(&self) -> Option<PatchGrid> {
        self.reference.as_ref().map(|r| r.grid)
    }

    pub fn scaling(&self) -> Option<Scaling> {
        self.reference.as_ref().map(|r| r.scaling)
    }

    /// The series' calibrated noise floor, once calibrated.
    pub fn noise_floor(&self) -> Option<&NoiseFloor> {
        self.calibration.noise_floor()
    }

    /// The per-patch thresholds frames are judged by now (NaN: not judged); `None` before the
    /// reference or while the threshold is being calibrated.
    pub fn patch_thresholds(&self) -> Option<Vec<f32>> {
        self.calibration.thresholds(self.grid()?.len())
    }

    pub fn has_reference(&self) -> bool {
        self.reference.is_some()
    }

    /// Makes `frame` the reference (a new series starts here); it is frame 0 of the series' track.
    pub fn set_reference(&mut self, frame: &Frame) -> Result<(), AnalysisError> {
        self.set_reference_at(frame, 0)
    }

    /// Makes `frame`, frame `index` of its series, the reference.
    pub fn set_reference_at(&mut self, frame: &Frame, index: u64) -> Result<(), AnalysisError> {
        let frame = &*self.prefiltered(frame);
        let grid = PatchGrid::new(frame.width(), frame.height(), self.settings.patch_px)?;
        let scaling = Scaling::from_reference(self.settings.scale, frame)?;
        scaling.check(frame)?;
        let patches = patches::extract(frame, &grid, &scaling, None, self.settings.max_invalid_fraction);
        let features = self.features(&patches);
        let registrar = (self.settings.registration != Registration::Off).then(|| Registrar::new(frame, index));
        self.reference = Some(Reference {
            width: frame.width(),
            height: frame.height(),
            grid,
            scaling,
            patches,
            features,
            registrar,
        });
        self.next_index = index + 1;
        self.calibration = Calibration::new(self.settings.threshold);
        Ok(())
    }

    fn prefiltered<'f>(&self, frame: &'f Frame) -> std::borrow::Cow<'f, Frame> {
        match self.settings.prefilter_sigma_px {
            s if s > 0.0 => std::borrow::Cow::Owned(frame.gaussian_filtered(s)),
            _ => std::borrow::Cow::Borrowed(frame),
        }
    }

    fn features(&self, patches: &Patches) -> Option<Features> {
        match (&self.engine, self.settings.metric.uses_features()) {
            (Some(engine), true) => {
                Some(engine.features_of_layers(&patches.pixels, self.settings.metric.feature_layers()))
            }
            _ => None,
        }
    }

    /// Compares the next frame of the series with the reference.
    pub fn analyse(&mut self, frame: &Frame) -> Result<FrameAnalysis, AnalysisError> {
        let index = self.next_index;
        self.analyse_at(frame, index)
    }

    /// Compares frame `index` of the series (later than every frame before it; frames passed over
    /// leave gaps) with the reference.
    pub fn analyse_at(&mut self, frame: &Frame, index: u64) -> Result<FrameAnalysis, AnalysisError> {
        self.next_index = index + 1;
        let span = profile::span(Part::Registration, Op::Other);
        let filtered = self.prefiltered(frame);
        let s = self.settings.clone();
        let r = self.reference.as_mut().ok_or(AnalysisError::NoReference)?;
        if frame.width() != r.width || frame.height() != r.height {
            return Err(AnalysisError::ShapeMismatch {
                ref_w: r.width,
                ref_h: r.height,
                got_w: frame.width(),
                got_h: frame.height(),
            });
        }
        r.scaling.check(frame)?;
        // The drift is measured on the filtered frame (less noise), but undone on the frame as it
        // came, and only then filtered: the filter's edge handling then sees the same content at
        // the frame's edges as in the reference, instead of content moved by the drift.
        let (aligned, overlap, tracked) = match r.registrar.as_mut() {
            Some(reg) => {
                let tracked = reg.track(&filtered, index);
                if !tracked.lock.usable() {
                    return Err(AnalysisError::NotRegistered(tracked));
                }
                let (f, rect) = register::apply(frame, tracked.shift, s.registration);
                let aligned = match self.prefiltered(&f) {
                    std::borrow::Cow::Owned(g) => g,
                    std::borrow::Cow::Borrowed(_) => f,
                };
                (std::borrow::Cow::Owned(aligned), Some(rect), Some(tracked))
            }
            None => (filtered, None, None),
        };
        drop(span);
        let r = self.reference.as_ref().ok_or(AnalysisError::NoReference)?;
        let span = profile::span(Part::Patches, Op::Other);
        let patches = patches::extract(&aligned, &r.grid, &r.scaling, overlap, s.max_invalid_fraction);
        let status: Vec<PatchStatus> = patches
            .status
            .iter()
            .zip(&r.patches.status)
            .map(|(&now, &then)| if then.analysed() { now } else { then })
            .collect();
        let n = r.grid.len();
        let mut similarity = vec![f32::NAN; n];
        let mut dissimilarity = vec![f32::NAN; n];
        drop(span);
        let features = self.features(&patches);
        let _span = profile::span(Part::Compare, Op::Other);
        let r = self.reference.as_ref().ok_or(AnalysisError::NoReference)?;
        for p in (0..n).filter(|&p| status[p].analysed()) {
            let (sim, dis) = match (s.metric, &features, &r.features) {
                (Metric::Resnet18, Some(f), Some(rf)) => {
                    let c = cosine(f.row(3, p), rf.row(3, p));
                    (c, 1.0 - c)
                }
                (Metric::Lpips, Some(f), Some(rf)) => {
                    let c = (0..4).map(|l| cosine(f.row(l, p), rf.row(l, p))).sum::<f64>() / 4.0;
                    (c, 1.0 - c)
                }
                (Metric::Ssim, ..) => {
                    let v = classical::ssim(patches.patch(p), r.patches.patch(p), r.grid.patch_px);
                    (v, 1.0 - v)
                }
                (Metric::Ncc, ..) => {
                    let v = classical::ncc(patches.patch(p), r.patches.patch(p));
                    (v, 1.0 - v)
                }
                (Metric::Psnr, ..) => {
                    let e = classical::rmse(patches.patch(p), r.patches.patch(p));
                    (classical::psnr_db(e), e)
                }
                // new() guarantees an engine for feature metrics.
                _ => return Err(AnalysisError::NoEngine(s.metric)),
            };
            similarity[p] = sim as f32;
            dissimilarity[p] = dis as f32;
        }
        let map = SimilarityMap { grid: r.grid, similarity, dissimilarity, status };
        let thresholds = self.calibration.judge(&map, index);
        let typical = thresholds.as_ref().and(self.calibration.typical());
        let z = thresholds.as_ref().and_then(|_| self.calibration.z_scores(&map));
        let correlation = self.calibration.noise_floor().and_then(|f| f.neighbour_correlation).unwrap_or([0.0; 2]);
        let summary = Summary::of(
            &map,
            thresholds.as_deref(),
            typical,
            z.as_deref().map(|z| (z, correlation)),
            s.min_region_patches,
        );
        // Registered frames are owned already: no copy.
        let aligned = tracked.is_some().then(|| aligned.into_owned());
        Ok(FrameAnalysis { map, summary, shift: tracked.map(|t| t.shift), lock: tracked.map(|t| t.lock), aligned })
    }
}

/// Cosine similarity in f64. Two all-zero vectors are identical (1); one all-zero vector shares no
/// direction with anything (0).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    match (aa > 0.0, bb > 0.0) {
        (true, true) => ab / (aa * bb).sqrt(),
        (false, false) => 1.0,
        _ => 0.0,
    }
}
