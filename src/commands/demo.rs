//! `beamwatch demo`: a simulated, drifting STEM series of a crystal that the beam turns amorphous,
//! written as 16-bit TIFFs and analysed with `compare` — offline, with no input needed.

use std::path::PathBuf;

use super::compare::{self, CompareOptions, CompareSummary};
use crate::Error;
use crate::config::AnalysisConfig;
use crate::imagefile;
use crate::register::Registration;
use crate::simulate::{Damage, Disc, Specimen};

pub struct DemoOptions {
    pub out: PathBuf,
    pub weights: Option<PathBuf>,
    pub frames: usize,
    pub size_px: usize,
}

/// Side, frames and dose of the default demo series.
pub const DEFAULT_SIZE_PX: usize = 400;
pub const DEFAULT_FRAMES: usize = 5;
const ELECTRONS_PER_PX: f64 = 60.0;
const DRIFT_PX_PER_FRAME: (f64, f64) = (0.6, -0.35);

pub struct DemoOutcome {
    pub frames_dir: PathBuf,
    pub summary: CompareSummary,
}

pub fn run(opts: &DemoOptions) -> Result<DemoOutcome, Error> {
    let frames_dir = opts.out.join("frames");
    crate::report::ensure_dir(&frames_dir)?;
    let size = opts.size_px.max(64);
    let specimen = Specimen::new(size, size, 12.0, 2024);
    let n = opts.frames.max(2);
    let mut paths = Vec::with_capacity(n);
    for i in 0..n {
        // Damage nucleates at two seeds and spreads with accumulated dose.
        let t = i as f64 / (n - 1) as f64;
        let damage = Damage {
            discs: vec![
                Disc {
                    cx: 0.62 * size as f64,
                    cy: 0.38 * size as f64,
                    radius_px: 0.22 * size as f64 * t,
                    edge_px: 10.0,
                    amount: 0.9 * t.sqrt(),
                },
                Disc {
                    cx: 0.3 * size as f64,
                    cy: 0.7 * size as f64,
                    radius_px: 0.1 * size as f64 * t,
                    edge_px: 6.0,
                    amount: 0.7 * t,
                },
            ],
        };
        let drift = (DRIFT_PX_PER_FRAME.0 * i as f64, DRIFT_PX_PER_FRAME.1 * i as f64);
        let counts = specimen.render_counts(&damage, drift, Some(ELECTRONS_PER_PX), 100 + i as u64);
        let u16s: Vec<u16> = counts.iter().map(|&c| c.clamp(0.0, 65534.0) as u16).collect();
        let path = frames_dir.join(format!("frame_{i:03}.tif"));
        imagefile::write_tiff_u16(&path, size, size, &u16s)?;
        paths.push(path);
    }
    let analysis = AnalysisConfig {
        weights: opts.weights.clone(),
        registration: Registration::Subpixel,
        ..AnalysisConfig::default()
    };
    let summary = compare::run(&CompareOptions {
        reference: paths[0].clone(),
        frames: paths[1..].to_vec(),
        out: opts.out.clone(),
        analysis,
    })?;
    Ok(DemoOutcome { frames_dir, summary })
}
