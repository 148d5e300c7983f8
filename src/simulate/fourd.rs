//! A 4D-STEM simulator: a probe scans a crystal over a rows × cols grid, k times, and a pixelated
//! detector records one diffraction pattern per probe position — a bright-field disk, a square
//! lattice of Bragg spots and a diffuse background, with Poisson counts — while the beam damages
//! the crystal with a known critical dose per region of the scan.
//!
//! Model (the truth the tests and the 4D-STEM analysis check against):
//! - a pattern holds `electrons_per_pattern` electrons in expectation, split into the BF disk, the
//!   Bragg spots and the diffuse background; the split varies over the scan (grains of different
//!   Bragg strength, a thickness modulation of the BF share), so virtual images are not flat;
//! - the scan is cut into `regions_rows × regions_cols` regions, region r with critical dose Dc_r;
//!   a position's Bragg intensity in scan s is I₀·exp(−D/Dc_r) with D = s · dose per scan (the dose
//!   the position received in the scans before); what the spots lose goes into the diffuse
//!   background (amorphisation), so the expected total stays `electrons_per_pattern`;
//! - dose per scan D = I·t_dwell/(e·step²) with I = electrons_per_pattern · e / t_dwell, so
//!   D = electrons_per_pattern / step² (e⁻/Å²).
//!
//! Everything is seeded: [`FourdSim::pattern`] of a (scan, row, col) is the same every call.

use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::publish::{PublishError, PublishOptions, SendSocket, open, send};
use crate::decode::{WireFormat, dectris_v1, dectris_v2};
use crate::frame::PixelType;

const ELECTRON_CHARGE_C: f64 = 1.602_176_634e-19;

/// Everything a simulated 4D-STEM series is made of.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FourdSpec {
    pub scan_rows: usize,
    pub scan_cols: usize,
    pub scans: usize,
    /// Square detector, pixels per side (96: an ARINA binned 2×2).
    pub detector_px: usize,
    pub electrons_per_pattern: f64,
    /// Dwell time per probe position = the detector's frame time.
    pub dwell_time_us: f64,
    /// Scan step (scan pixel size).
    pub pixel_size_a: f64,
    pub regions_rows: usize,
    pub regions_cols: usize,
    /// Critical dose per region, row-major over the regions (repeated if shorter).
    pub critical_doses_e_per_a2: Vec<f64>,
    pub seed: u64,
}

impl Default for FourdSpec {
    fn default() -> Self {
        Self {
            scan_rows: 32,
            scan_cols: 32,
            scans: 8,
            detector_px: 96,
            electrons_per_pattern: 5000.0,
            dwell_time_us: 100.0,
            pixel_size_a: 11.0,
            regions_rows: 2,
            regions_cols: 2,
            critical_doses_e_per_a2: vec![60.0, 120.0, 240.0, 480.0],
            seed: 1,
        }
    }
}

impl FourdSpec {
    /// e⁻/Å² each probe position receives per scan.
    pub fn dose_per_scan_e_per_a2(&self) -> f64 {
        self.electrons_per_pattern / (self.pixel_size_a * self.pixel_size_a)
    }

    /// The beam current that puts `electrons_per_pattern` into one dwell.
    pub fn beam_current_pa(&self) -> f64 {
        self.electrons_per_pattern * ELECTRON_CHARGE_C / (self.dwell_time_us * 1e-6) * 1e12
    }

    pub fn patterns(&self) -> usize {
        self.scan_rows * self.scan_cols * self.scans
    }
}

/// One Bragg spot: position on the detector and its share of the Bragg intensity.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spot {
    pub x: f64,
    pub y: f64,
    pub weight: f64,
}

/// A region of the scan and its critical dose (rows and cols: half-open ranges of scan positions).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Region {
    pub rows: [usize; 2],
    pub cols: [usize; 2],
    pub critical_dose_e_per_a2: f64,
}

/// The simulated series: spec, detector geometry and the per-pixel profiles.
pub struct FourdSim {
    pub spec: FourdSpec,
    pub spots: Vec<Spot>,
    pub bf_radius_px: f64,
    pub spot_sigma_px: f64,
    /// Normalised (sum 1) detector profiles.
    bf: Vec<f64>,
    bragg: Vec<f64>,
    diffuse: Vec<f64>,
    /// Per-grain Bragg strength (4 × 4 grains over the scan), in [0, 1).
    grains: Vec<f64>,
}

/// Cheap integer mixing (SplitMix64) for per-pattern seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn normalise(v: &mut [f64]) {
    let s: f64 = v.iter().sum();
    if s > 0.0 {
        v.iter_mut().for_each(|x| *x /= s);
    }
}

/// The expected shares of one pattern.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shares {
    pub bf: f64,
    /// Bragg share at this dose.
    pub bragg: f64,
    /// Bragg share before any dose.
    pub bragg0: f64,
    pub diffuse: f64,
}

impl FourdSim {
    pub fn new(spec: FourdSpec) -> Self {
        let n = spec.detector_px;
        let c = (n as f64 - 1.0) / 2.0;
        let bf_radius_px = n as f64 / 12.0;
        let spot_sigma_px = (n as f64 / 64.0).max(0.8);
        let g = n as f64 / 6.0;
        let mut spots = Vec::new();
        for i in -2i32..=2 {
            for j in -2i32..=2 {
                let r2 = f64::from(i * i + j * j);
                if r2 == 0.0 || r2 > 5.0 {
                    continue;
                }
                // Outer reflections weaker, as a Debye-Waller-like falloff.
                spots.push(Spot { x: c + f64::from(j) * g, y: c + f64::from(i) * g, weight: (-r2 / 6.0).exp() });
            }
        }
        let wsum: f64 = spots.iter().map(|s| s.weight).sum();
        spots.iter_mut().for_each(|s| s.weight /= wsum);
        let mut bf = vec![0.0; n * n];
        let mut bragg = vec![0.0; n * n];
        let mut diffuse = vec![0.0; n * n];
        let sd = n as f64 / 4.0;
        for y in 0..n {
            for x in 0..n {
                let (dx, dy) = (x as f64 - c, y as f64 - c);
                let r = (dx * dx + dy * dy).sqrt();
                // A disk with a one-pixel soft edge.
                bf[y * n + x] = (bf_radius_px + 0.5 - r).clamp(0.0, 1.0);
                diffuse[y * n + x] = (-(r * r) / (2.0 * sd * sd)).exp();
                bragg[y * n + x] = spots
                    .iter()
                    .map(|s| {
                        let d2 = (x as f64 - s.x).powi(2) + (y as f64 - s.y).powi(2);
                        s.weight * (-d2 / (2.0 * spot_sigma_px * spot_sigma_px)).exp()
                    })
                    .sum();
            }
        }
        normalise(&mut bf);
        normalise(&mut bragg);
        normalise(&mut diffuse);
        let grains = (0..16).map(|g| (mix(spec.seed ^ mix(g)) >> 11) as f64 / (1u64 << 53) as f64).collect();
        Self { spec, spots, bf_radius_px, spot_sigma_px, bf, bragg, diffuse, grains }
    }

    /// Region index (row-major over the regions) of a scan position.
    pub fn region(&self, row: usize, col: usize) -> usize {
        let s = &self.spec;
        let rr = (row * s.regions_rows / s.scan_rows.max(1)).min(s.regions_rows.max(1) - 1);
        let rc = (col * s.regions_cols / s.scan_cols.max(1)).min(s.regions_cols.max(1) - 1);
        rr * s.regions_cols + rc
    }

    pub fn critical_dose(&self, region: usize) -> f64 {
        let d = &self.spec.critical_doses_e_per_a2;
        if d.is_empty() { f64::INFINITY } else { d[region % d.len()] }
    }

    pub fn regions(&self) -> Vec<Region> {
        let s = &self.spec;
        let mut out = Vec::new();
        for rr in 0..s.regions_rows {
            for rc in 0..s.regions_cols {
                out.push(Region {
                    rows: [
                        (rr * s.scan_rows).div_ceil(s.regions_rows),
                        ((rr + 1) * s.scan_rows).div_ceil(s.regions_rows),
                    ],
                    cols: [
                        (rc * s.scan_cols).div_ceil(s.regions_cols),
                        ((rc + 1) * s.scan_cols).div_ceil(s.regions_cols),
                    ],
                    critical_dose_e_per_a2: self.critical_dose(rr * s.regions_cols + rc),
                });
            }
        }
        out
    }

    /// Cumulative dose a position has received before scan `scan` (e⁻/Å²).
    pub fn dose_before(&self, scan: usize) -> f64 {
        scan as f64 * self.spec.dose_per_scan_e_per_a2()
    }

    /// The expected shares at a position in scan `scan`: grains set the Bragg strength, a
    /// thickness modulation the BF share; faded Bragg intensity goes to the diffuse background.
    pub fn shares(&self, scan: usize, row: usize, col: usize) -> Shares {
        let s = &self.spec;
        let grain = (row * 4 / s.scan_rows.max(1)).min(3) * 4 + (col * 4 / s.scan_cols.max(1)).min(3);
        let bragg0 = 0.12 + 0.2 * self.grains[grain];
        let phase = std::f64::consts::TAU * (row as f64 / 11.0 + col as f64 / 7.0);
        let bf = 0.45 + 0.15 * phase.sin();
        let bragg = bragg0 * (-self.dose_before(scan) / self.critical_dose(self.region(row, col))).exp();
        Shares { bf, bragg, bragg0, diffuse: 1.0 - bf - bragg }
    }

    /// Expected counts per detector pixel of a pattern (sums to `electrons_per_pattern`).
    pub fn mean_pattern(&self, scan: usize, row: usize, col: usize) -> Vec<f64> {
        let sh = self.shares(scan, row, col);
        let n = self.spec.electrons_per_pattern;
        (0..self.bf.len())
            .map(|i| n * (sh.bf * self.bf[i] + sh.bragg * self.bragg[i] + sh.diffuse * self.diffuse[i]))
            .collect()
    }

    /// The pattern at a position in scan `scan`: Poisson counts of [`Self::mean_pattern`],
    /// seeded by (seed, scan, row, col), so the same call always gives the same pattern.
    pub fn pattern(&self, scan: usize, row: usize, col: usize) -> Vec<u16> {
        let key = mix(self.spec.seed ^ mix((scan as u64) << 40 ^ (row as u64) << 20 ^ col as u64));
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        self.mean_pattern(scan, row, col)
            .into_iter()
            .map(|l| match Poisson::new(l) {
                Ok(p) => p.sample(&mut rng).min(f64::from(u16::MAX - 1)) as u16,
                Err(_) => 0,
            })
            .collect()
    }

    /// The `beamwatch` object of the stream header: scan shape and dose inputs (docs/wire-format.md).
    pub fn header_json(&self) -> serde_json::Value {
        let s = &self.spec;
        serde_json::json!({"beamwatch": {
            "scan_rows": s.scan_rows, "scan_cols": s.scan_cols, "scans": s.scans,
            "beam_current_pa": s.beam_current_pa(), "dwell_time_us": s.dwell_time_us,
            "pixel_size_a": s.pixel_size_a, "dose_per_scan_e_per_a2": s.dose_per_scan_e_per_a2(),
        }})
    }

    /// The truth file: everything the analysis should recover.
    pub fn truth(&self) -> serde_json::Value {
        let s = &self.spec;
        let c = (s.detector_px as f64 - 1.0) / 2.0;
        serde_json::json!({
            "spec": s,
            "scan_shape": [s.scan_rows, s.scan_cols],
            "scans": s.scans,
            "detector_shape": [s.detector_px, s.detector_px],
            "dose_per_scan_e_per_a2": s.dose_per_scan_e_per_a2(),
            "beam_current_pa": s.beam_current_pa(),
            "dose_model": "position dose before scan s = s × dose_per_scan; Bragg share × exp(−D/Dc_region), the loss going to the diffuse background",
            "regions": self.regions(),
            "pattern_centre_xy": [c, c],
            "bf_radius_px": self.bf_radius_px,
            "spot_sigma_px": self.spot_sigma_px,
            "spots": self.spots,
        })
    }

    /// Stream header (v1: dheader, detector config, header appendix; v2: start with user_data).
    pub fn start_message(&self, format: WireFormat, series: u64) -> Vec<Vec<u8>> {
        let s = &self.spec;
        let (n, frames, t) = (s.detector_px, s.patterns() as u64, s.dwell_time_us * 1e-6);
        match format {
            WireFormat::DectrisV2 => dectris_v2::encode_start_with_user_data(
                series,
                n,
                n,
                PixelType::U16,
                frames,
                t,
                &["threshold_1"],
                Some(&self.header_json()),
            ),
            _ => {
                let mut parts = dectris_v1::encode_header(series, n, n, PixelType::U16, frames, t);
                parts.push(self.header_json().to_string().into_bytes());
                parts
            }
        }
    }

    /// The message of pattern `index` (scan-major, then row, then column), bitshuffle-LZ4 u16.
    pub fn image_message(&self, format: WireFormat, series: u64, index: usize) -> Result<Vec<Vec<u8>>, PublishError> {
        let s = &self.spec;
        let per_scan = (s.scan_rows * s.scan_cols).max(1);
        let (scan, within) = (index / per_scan, index % per_scan);
        let px = self.pattern(scan, within / s.scan_cols.max(1), within % s.scan_cols.max(1));
        let bytes: Vec<u8> = px.iter().flat_map(|v| v.to_le_bytes()).collect();
        let ts = (index as f64 * s.dwell_time_us * 1e3) as u64;
        let n = s.detector_px;
        match format {
            WireFormat::DectrisV2 => Ok(dectris_v2::encode_image(
                series,
                index as u64,
                n,
                n,
                PixelType::U16,
                &[("threshold_1", &bytes)],
                "bslz4",
                ts,
            )),
            _ => dectris_v1::encode_image(series, index as u64, n, n, PixelType::U16, &bytes, "bs16-lz4<", ts)
                .map_err(|e| PublishError::Encode(e.to_string())),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct FourdReport {
    pub endpoint: String,
    pub patterns_sent: u64,
    pub messages_sent: u64,
    pub seconds: f64,
}

/// Sends the series over the simulator's socket (`opts.format` dectris-v1 or dectris-v2) at
/// `patterns_per_s` (0: as fast as the receiver takes them). `bound` receives the endpoint.
pub async fn publish(
    sim: std::sync::Arc<FourdSim>,
    opts: &PublishOptions,
    patterns_per_s: f64,
    shutdown: CancellationToken,
    bound: Option<tokio::sync::oneshot::Sender<String>>,
) -> Result<FourdReport, PublishError> {
    let format = match opts.format {
        WireFormat::DectrisV2 => WireFormat::DectrisV2,
        _ => WireFormat::DectrisV1,
    };
    let (mut out, ep) = open(opts).await?;
    if let Some(b) = bound {
        let _ = b.send(ep.clone());
    }
    if opts.socket == SendSocket::Pub {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let id = opts.first_series_id;
    let total = sim.spec.patterns();
    // Patterns are rendered and compressed on their own thread, a bounded number ahead.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let render = {
        let sim = sim.clone();
        std::thread::spawn(move || {
            for i in 0..total {
                if tx.blocking_send(sim.image_message(format, id, i)).is_err() {
                    return;
                }
            }
        })
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(opts.wait_for_peer_s);
    let mut report = FourdReport { endpoint: ep.clone(), patterns_sent: 0, messages_sent: 0, seconds: 0.0 };
    send(&mut out, sim.start_message(format, id), deadline, &ep).await?;
    report.messages_sent += 1;
    // The rate counts from the first message a receiver took, not from the wait for one.
    let started = Instant::now();
    let period = (patterns_per_s > 0.0).then(|| Duration::from_secs_f64(1.0 / patterns_per_s));
    let mut next = Instant::now();
    while let Some(parts) = rx.recv().await {
        let parts = parts?;
        if let Some(p) = period {
            next += p;
            if next > Instant::now() {
                tokio::select! {
                    _ = tokio::time::sleep_until(next.into()) => {},
                    _ = shutdown.cancelled() => break,
                }
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        send(&mut out, parts, deadline, &ep).await?;
        report.patterns_sent += 1;
        report.messages_sent += 1;
    }
    drop(rx);
    let _ = render.join();
    let end = match format {
        WireFormat::DectrisV2 => dectris_v2::encode_end(id),
        _ => dectris_v1::encode_end(id),
    };
    send(&mut out, end, deadline, &ep).await?;
    report.messages_sent += 1;
    report.seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    out.close().await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> FourdSim {
        FourdSim::new(FourdSpec { scan_rows: 8, scan_cols: 8, scans: 4, ..FourdSpec::default() })
    }

    #[test]
    fn counts_are_conserved_in_expectation_at_every_dose() {
        let sim = small();
        for scan in 0..4 {
            for (row, col) in [(0, 0), (3, 6), (7, 7)] {
                let total: f64 = sim.mean_pattern(scan, row, col).iter().sum();
                assert!((total - 5000.0).abs() < 1e-6, "scan {scan} ({row},{col}): {total}");
            }
        }
        // Sampled: 64 patterns of scan 3 sum to 64 × 5000 within 5 σ of Poisson noise.
        let sum: f64 = (0..64).map(|p| sim.pattern(3, p / 8, p % 8).iter().map(|&v| f64::from(v)).sum::<f64>()).sum();
        let expected = 64.0 * 5000.0;
        assert!((sum - expected).abs() < 5.0 * expected.sqrt(), "{sum} vs {expected}");
    }

    /// Background-subtracted spot intensity of a pattern: disks of radius 4 around each spot minus
    /// the mean of a ring 6-8 px out, as a spot-integration method would measure it.
    fn spot_intensity(sim: &FourdSim, px: &[u16]) -> f64 {
        let n = sim.spec.detector_px;
        let mut total = 0.0;
        for s in &sim.spots {
            let (mut disk, mut nd, mut ring, mut nr) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
            for y in 0..n {
                for x in 0..n {
                    let r = ((x as f64 - s.x).powi(2) + (y as f64 - s.y).powi(2)).sqrt();
                    let v = f64::from(px[y * n + x]);
                    if r <= 4.0 {
                        (disk, nd) = (disk + v, nd + 1.0);
                    } else if (6.0..=8.0).contains(&r) {
                        (ring, nr) = (ring + v, nr + 1.0);
                    }
                }
            }
            total += disk - nd * ring / nr.max(1.0);
        }
        total
    }

    #[test]
    fn spots_of_each_region_fade_with_its_critical_dose() {
        let sim = small();
        let d = sim.spec.dose_per_scan_e_per_a2();
        for region in 0..4 {
            let positions: Vec<(usize, usize)> =
                (0..64).map(|p| (p / 8, p % 8)).filter(|&(r, c)| sim.region(r, c) == region).collect();
            assert_eq!(positions.len(), 16);
            let measure =
                |scan| positions.iter().map(|&(r, c)| spot_intensity(&sim, &sim.pattern(scan, r, c))).sum::<f64>();
            let i0 = measure(0);
            for scan in [1usize, 3] {
                let want = (-(scan as f64) * d / sim.critical_dose(region)).exp();
                let got = measure(scan) / i0;
                // Poisson error of ≈ 16 × 1000 spot counts plus the background: a few per cent.
                assert!((got - want).abs() < 0.05 + 0.05 * want, "region {region} scan {scan}: {got:.3} vs {want:.3}");
            }
        }
        // The diffuse background takes what the spots lose.
        let (a, b) = (sim.shares(0, 0, 0), sim.shares(3, 0, 0));
        assert!(b.diffuse > a.diffuse && (a.bragg - b.bragg - (b.diffuse - a.diffuse)).abs() < 1e-12);
    }

    #[test]
    fn patterns_are_deterministic_by_seed_and_vary_over_the_scan() {
        let sim = small();
        assert_eq!(sim.pattern(2, 3, 4), sim.pattern(2, 3, 4));
        assert_ne!(sim.pattern(2, 3, 4), sim.pattern(2, 3, 5));
        let other = FourdSim::new(FourdSpec { seed: 2, scan_rows: 8, scan_cols: 8, scans: 4, ..FourdSpec::default() });
        assert_ne!(sim.pattern(2, 3, 4), other.pattern(2, 3, 4));
        // Real-space contrast: the BF and Bragg shares differ between positions.
        let bf: Vec<f64> = (0..8).map(|c| sim.shares(0, 0, c).bf).collect();
        assert!(bf.iter().cloned().fold(0.0, f64::max) - bf.iter().cloned().fold(1.0, f64::min) > 0.1, "{bf:?}");
    }

    #[test]
    fn the_header_carries_scan_shape_and_dose() {
        let sim = small();
        let want = sim.spec.dose_per_scan_e_per_a2();
        // v1: the appendix is the header's third part; the first two still decode as a series start.
        let v1 = sim.start_message(WireFormat::DectrisV1, 7);
        assert_eq!(v1.len(), 3);
        let appendix: serde_json::Value = serde_json::from_slice(&v1[2]).expect("json");
        assert_eq!(appendix["beamwatch"]["scan_rows"], 8);
        assert_eq!(appendix["beamwatch"]["scan_cols"], 8);
        assert!((appendix["beamwatch"]["dose_per_scan_e_per_a2"].as_f64().unwrap_or(0.0) - want).abs() < 1e-9);
        let refs: Vec<&[u8]> = v1.iter().map(Vec::as_slice).collect();
        match crate::decode::Decoder::new(WireFormat::Auto, None, true).decode(&refs) {
            Ok(crate::decode::Message::SeriesStart(s)) => {
                assert_eq!((s.frames_expected, s.shape), (Some(256), Some((96, 96))));
            }
            other => panic!("{other:?}"),
        }
        // v2: user_data in the start message.
        let v2 = sim.start_message(WireFormat::DectrisV2, 7);
        let m: ciborium::Value = ciborium::from_reader(v2[0].as_slice()).expect("cbor");
        let ud: serde_json::Value = m
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some("user_data")))
            .and_then(|(_, v)| v.deserialized().ok())
            .expect("user_data");
        assert_eq!(ud["beamwatch"]["scan_rows"], 8);
        assert_eq!(ud["beamwatch"]["scans"], 4);
        assert!((ud["beamwatch"]["beam_current_pa"].as_f64().unwrap_or(0.0) - sim.spec.beam_current_pa()).abs() < 1e-9);
        // An image message decodes back to the pattern, bit for bit.
        for format in [WireFormat::DectrisV1, WireFormat::DectrisV2] {
            let mut dec = crate::decode::Decoder::new(format, None, false);
            let refs: Vec<Vec<u8>> = sim.start_message(format, 7);
            let r: Vec<&[u8]> = refs.iter().map(Vec::as_slice).collect();
            assert!(dec.decode(&r).is_ok());
            let msg = sim.image_message(format, 7, 64 + 9).expect("encode");
            let r: Vec<&[u8]> = msg.iter().map(Vec::as_slice).collect();
            match dec.decode(&r) {
                Ok(crate::decode::Message::Frame(f)) => {
                    let want: Vec<f32> = sim.pattern(1, 1, 1).iter().map(|&v| f32::from(v)).collect();
                    assert_eq!(f.index, 73);
                    assert!(f.frame.pixels() == want.as_slice(), "{format:?}");
                }
                other => panic!("{format:?}: {other:?}"),
            }
        }
    }
}
