//! `beamwatch bench-4d`: the 4D-STEM pattern path, decode and reduce. In one run, alternating
//! round by round on the same blobs: the old decoder ([`decode_bslz4_scalar`]: allocating,
//! portable untranspose, `lz4_flex`), the buffer-reusing SIMD decoder with `lz4_flex` and with the
//! C liblz4 ([`decode_bslz4_into_with`]), and decode + reduce (decode straight into u16 pixels →
//! [`ScanAssembler::push_u16`], one assembler per thread over its band of scan rows: [`BandReducer`]);
//! then each stage timed alone on one thread. `--decode-only` times the decoders alone.
//!
//! The patterns are synthetic electron-counting diffraction patterns like an ARINA's: u16, Poisson
//! counts on a weak diffuse background with a bright central disk and six Bragg spots, compressed
//! in 8192-byte blocks as DECTRIS does. The C bitshuffle library decodes the very same bytes for
//! the anchor (`tools/bench_bitshuffle.py`, run by the benchmark when its Python is found).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use serde::Serialize;

use crate::decode::bslz4::{
    DEFAULT_BLOCK_BYTES, Lz4, decode_bslz4_into_with, decode_bslz4_scalar, decode_bslz4_u16_into, encode_bslz4,
};
use crate::fourd::assemble::Pixels;
use crate::fourd::{BandAssembler, FourDConfig, ScanEvent, ScanResult, ScanShape, VirtualDetectors, band_rows};

/// One decoder's throughput.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Rate {
    pub patterns_per_s: f64,
    /// Decoded bytes per second, in MB (10⁶ bytes).
    pub mb_per_s_out: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DecodeBench {
    pub pattern_px: usize,
    pub patterns: usize,
    pub threads: usize,
    /// Mean compressed bytes per pattern (decoded: pattern_px² · 2).
    pub compressed_bytes_per_pattern: f64,
    /// The old `decode_bslz4`: a new output vector and scratch block per pattern, scalar untranspose.
    pub old: Rate,
    /// `decode_bslz4_into` with `lz4_flex` for the LZ4 blocks.
    pub new_flex: Rate,
    /// `decode_bslz4_into` as it runs: the caller's buffers, the SIMD untranspose where the CPU
    /// has it, the C liblz4 for the LZ4 blocks.
    pub new: Rate,
    pub kernel: String,
}

/// Synthetic electron-counting diffraction patterns (u16 little-endian bytes), deterministic from
/// `seed`: about 0.6 e⁻ per pixel of diffuse background, a central bright-field disk of radius
/// px/12 at 25 e⁻ per pixel, and six Bragg spots (a hexagon at radius px/4, Gaussian σ = px/64,
/// at least 1 px, peak 12 e⁻ per pixel) that the spot finder finds in a scan's mean pattern.
pub fn counting_patterns(pattern_px: usize, patterns: usize, seed: u64) -> Vec<Vec<u8>> {
    counting_patterns_with_spots(pattern_px, patterns, seed, 12.0)
}

/// [`counting_patterns`] with the Bragg spots' peak at `spot_peak_e` electrons per pixel (faded
/// spots for `bench-4d --live`'s alarms).
pub fn counting_patterns_with_spots(pattern_px: usize, patterns: usize, seed: u64, spot_peak_e: f64) -> Vec<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let c = (pattern_px as f64 - 1.0) / 2.0;
    let r2 = (pattern_px as f64 / 12.0).powi(2);
    let sigma = (pattern_px as f64 / 64.0).max(1.0);
    let ring = pattern_px as f64 / 4.0;
    let spots: Vec<(f64, f64)> = (0..6)
        .map(|k| {
            let a = std::f64::consts::PI / 3.0 * k as f64 + 0.2;
            (c + ring * a.cos(), c + ring * a.sin())
        })
        .collect();
    let dists: Vec<Option<Poisson<f64>>> = (0..pattern_px * pattern_px)
        .map(|i| {
            let (y, x) = ((i / pattern_px) as f64, (i % pattern_px) as f64);
            let mut m = if (x - c).powi(2) + (y - c).powi(2) <= r2 { 25.0 } else { 0.6 };
            for &(sx, sy) in &spots {
                m += spot_peak_e * (-((x - sx).powi(2) + (y - sy).powi(2)) / (2.0 * sigma * sigma)).exp();
            }
            Poisson::new(m).ok()
        })
        .collect();
    (0..patterns)
        .map(|_| {
            dists.iter().flat_map(|d| (d.as_ref().map_or(0.0, |d| d.sample(&mut rng)) as u16).to_le_bytes()).collect()
        })
        .collect()
}

/// The patterns compressed as a detector sends them (bitshuffle-LZ4, u16, 8192-byte blocks).
pub fn compress_patterns(patterns: &[Vec<u8>]) -> Vec<Vec<u8>> {
    patterns.iter().map(|p| encode_bslz4(p, 2, DEFAULT_BLOCK_BYTES)).collect()
}

/// Writes blobs for `tools/bench_bitshuffle.py`: per blob a u64 little-endian length, then the
/// blob with its 12-byte HDF5-filter header.
pub fn write_blobs(path: &Path, blobs: &[Vec<u8>]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for b in blobs {
        f.write_all(&(b.len() as u64).to_le_bytes())?;
        f.write_all(b)?;
    }
    f.flush()
}

/// Which decoder a timed pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decoder {
    /// `decode_bslz4_scalar`: allocating, portable untranspose, `lz4_flex`.
    Old,
    /// `decode_bslz4_into_with` and the given LZ4 block decoder.
    New(Lz4),
}

/// Decodes `n` patterns cycling through `blobs`, split over `threads` threads (each its own
/// share). Returns the wall time in seconds and whether every pattern decoded to `expected_bytes`.
fn decode_all(blobs: &[Vec<u8>], n: usize, expected_bytes: usize, threads: usize, decoder: Decoder) -> (f64, bool) {
    let share = n.div_ceil(threads.max(1)).max(1);
    let start = Instant::now();
    let ok = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(share)
            .map(|first| {
                let range = first..(first + share).min(n);
                s.spawn(move || {
                    let mut ok = true;
                    let blob = |i: usize| &blobs[i % blobs.len()];
                    match decoder {
                        Decoder::New(lz4) => {
                            let mut out = vec![0u8; expected_bytes];
                            let mut scratch = Vec::new();
                            for i in range {
                                ok &= decode_bslz4_into_with(blob(i), 2, &mut out, &mut scratch, lz4).is_ok();
                            }
                            std::hint::black_box(&out);
                        }
                        Decoder::Old => {
                            for i in range {
                                ok &= std::hint::black_box(decode_bslz4_scalar(blob(i), 2, expected_bytes)).is_ok();
                            }
                        }
                    }
                    ok
                })
            })
            .collect();
        handles.into_iter().all(|h| h.join().unwrap_or(false))
    });
    (start.elapsed().as_secs_f64(), ok)
}

fn rate(patterns: usize, bytes_per_pattern: usize, seconds: f64) -> Rate {
    Rate {
        patterns_per_s: patterns as f64 / seconds,
        mb_per_s_out: (patterns * bytes_per_pattern) as f64 / seconds / 1e6,
    }
}

/// Times old and new decoders on `patterns` synthetic patterns of `pattern_px`² u16 pixels, on
/// `threads` threads, alternating old/new over `rounds` rounds (the best round of each counts:
/// the 2-core machine is shared and the best round is the least disturbed).
pub fn bench_decode(pattern_px: usize, patterns: usize, threads: usize) -> DecodeBench {
    let blobs = compress_patterns(&counting_patterns(pattern_px, patterns.max(1), 20));
    bench_blobs(&blobs, pattern_px, threads, 5)
}

/// Best-of-`rounds` seconds of each decoder on `blobs`, alternating: (old, new with lz4_flex, new
/// with liblz4).
fn time_decoders(blobs: &[Vec<u8>], n: usize, bytes: usize, threads: usize, rounds: usize) -> [f64; 3] {
    let decoders = [Decoder::Old, Decoder::New(Lz4::Flex), Decoder::New(Lz4::C)];
    let mut best = [f64::INFINITY; 3];
    for _ in 0..rounds.max(1) {
        for (b, &d) in best.iter_mut().zip(&decoders) {
            let (t, ok) = decode_all(blobs, n, bytes, threads, d);
            assert!(ok, "the benchmark's own blobs decode");
            *b = b.min(t);
        }
    }
    best
}

/// [`bench_decode`] on given blobs (all of `pattern_px`² u16 pixels).
pub fn bench_blobs(blobs: &[Vec<u8>], pattern_px: usize, threads: usize, rounds: usize) -> DecodeBench {
    let bytes = pattern_px * pattern_px * 2;
    let [old_s, flex_s, c_s] = time_decoders(blobs, blobs.len(), bytes, threads, rounds);
    DecodeBench {
        pattern_px,
        patterns: blobs.len(),
        threads,
        compressed_bytes_per_pattern: mean_len(blobs),
        old: rate(blobs.len(), bytes, old_s),
        new_flex: rate(blobs.len(), bytes, flex_s),
        new: rate(blobs.len(), bytes, c_s),
        kernel: format!("{:?}", crate::decode::bslz4::Kernel::detect()),
    }
}

fn mean_len(blobs: &[Vec<u8>]) -> f64 {
    blobs.iter().map(Vec::len).sum::<usize>() as f64 / blobs.len().max(1) as f64
}

/// u16 little-endian bytes → f32 pixels (exact: every u16 is an f32).
pub fn u16_to_f32(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f32::from(u16::from_le_bytes([c[0], c[1]]));
    }
}

/// How the full benchmark runs.
#[derive(Clone, Debug)]
pub struct FullOptions {
    pub pattern_px: usize,
    /// Distinct synthetic patterns generated; the scans cycle through them.
    pub distinct: usize,
    pub scan: ScanShape,
    /// Scans reduced per round (each round: scans × positions patterns).
    pub scans_per_round: usize,
    pub threads: usize,
    pub rounds: usize,
}

/// Nanoseconds per pattern of each stage of decode + reduce, one thread (median over a scan's patterns;
/// the spot integration at each scan's end is left out of the medians, it is once per scan).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StageNs {
    pub decode: f64,
    /// u16 → f32: 0 now, the reduction runs on the decoded u16 pixels (kept for comparison with
    /// earlier figures).
    pub convert: f64,
    /// `VirtualDetectors::apply_u16` (bf, adf, sum, com_x, com_y).
    pub detectors: f64,
    /// The rest of `ScanAssembler::push_u16`: adding the pattern to its region's summed pattern
    /// (for the spot intensities; in the same pass over the pixels) and the scan bookkeeping.
    pub region_sums: f64,
}

/// One size of the full benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct FullBench {
    pub pattern_px: usize,
    pub distinct_patterns: usize,
    /// Patterns per timed pass (decoders alone and decode + reduce alike).
    pub patterns: usize,
    pub threads: usize,
    pub scan_rows: usize,
    pub scan_cols: usize,
    pub compressed_bytes_per_pattern: f64,
    pub kernel: String,
    /// Decoding alone, on `threads` threads.
    pub old: Rate,
    pub new_flex: Rate,
    pub new: Rate,
    /// Decode (`decode_bslz4_u16_into`, liblz4) + `ScanAssembler::push_u16` on `threads`
    /// threads, one assembler per thread over its own band of scan rows.
    pub reduce: Rate,
    pub stages_ns_per_pattern: StageNs,
    /// Scans completed in the last round, summed over the bands.
    pub scans_completed: usize,
    /// Bragg spots found in band 0's reference scan.
    pub spots_found: usize,
    /// The C bitshuffle library on the same blobs, one thread (when its Python package is there).
    pub c_bitshuffle: Option<Rate>,
}

/// One thread's share of decode + reduce: its own [`BandAssembler`] over a band of scan rows, its
/// own decode buffers — the split the live daemon's pattern workers use (frame index → scan row is
/// known on arrival); with the default 2×2 regions and 2 bands, each band holds whole regions.
pub struct BandReducer {
    pub band: BandAssembler,
    scratch: Vec<u8>,
    pixels: Vec<u16>,
    pub results: Vec<ScanResult>,
}

/// The band's rows and assembler, read through the reducer.
impl std::ops::Deref for BandReducer {
    type Target = BandAssembler;
    fn deref(&self) -> &BandAssembler {
        &self.band
    }
}

impl BandReducer {
    pub fn new(cfg: &FourDConfig, scan: ScanShape, bands: usize, b: usize, pattern_px: usize) -> Self {
        let rows = band_rows(scan.rows, bands, b);
        // The band's share of the scan's region rows (2 regions over 2 bands: one each).
        let regions_rows = (cfg.regions_rows / bands.max(1)).max(1);
        let band =
            BandAssembler::new(cfg, scan, rows, regions_rows, None).expect("the benchmark's configuration is valid");
        Self { band, scratch: Vec::new(), pixels: vec![0; pattern_px * pattern_px], results: Vec::new() }
    }

    /// Whether series image `index` falls in this band.
    pub fn owns(&self, index: u64) -> bool {
        self.band.owns(index)
    }

    /// Decodes and reduces series image `index` (which this band owns); scans completed are kept
    /// when `keep` (the correctness test), counted otherwise.
    pub fn push(&mut self, index: u64, blob: &[u8], px: usize, keep: bool) -> usize {
        decode_bslz4_u16_into(blob, &mut self.pixels, &mut self.scratch).expect("the benchmark's own blobs decode");
        let events =
            self.band.push(index, px, px, Pixels::U16(&self.pixels), None).expect("the benchmark's patterns fit");
        self.count(events, keep)
    }

    fn count(&mut self, events: Vec<ScanEvent>, keep: bool) -> usize {
        let mut n = 0;
        for e in events {
            if let ScanEvent::Complete(r) = e {
                n += 1;
                if keep {
                    self.results.push(*r);
                }
            }
        }
        n
    }

    pub fn finish(&mut self, keep: bool) -> usize {
        let events = self.band.finish();
        self.count(events, keep)
    }
}

/// Runs series images `first..first + n` through `reducers` (one thread each, each taking the
/// images of its band, in order); the patterns cycle through `blobs`. Returns scans completed.
pub fn reduce_range(
    reducers: &mut [BandReducer],
    blobs: &[Vec<u8>],
    px: usize,
    first: u64,
    n: u64,
    keep: bool,
) -> usize {
    std::thread::scope(|s| {
        let handles: Vec<_> = reducers
            .iter_mut()
            .map(|r| {
                s.spawn(move || {
                    let mut done = 0;
                    for index in first..first + n {
                        if r.owns(index) {
                            done += r.push(index, &blobs[(index % blobs.len() as u64) as usize], px, keep);
                        }
                    }
                    done
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    })
}

/// The configuration the benchmark reduces with: the default detectors (bf, adf, sum, com_x,
/// com_y; centre and radii found from the first patterns) and the default 2×2 spot regions.
pub fn bench_config() -> FourDConfig {
    FourDConfig { enabled: true, ..FourDConfig::default() }
}

/// The full benchmark for one size: decoders alone (old, new with lz4_flex, new with liblz4) and
/// decode + reduce, alternating over `rounds` rounds (best round of each), then the stages one by
/// one on one thread.
pub fn bench_full(opts: &FullOptions, c_anchor: Option<&Path>) -> FullBench {
    let px = opts.pattern_px;
    let bytes = px * px * 2;
    let blobs = compress_patterns(&counting_patterns(px, opts.distinct.max(1), 20));
    let per_round = opts.scan.positions() * opts.scans_per_round.max(1) as u64;
    let threads = opts.threads.max(1);
    let cfg = bench_config();
    let mut reducers: Vec<BandReducer> =
        (0..threads).map(|b| BandReducer::new(&cfg, opts.scan, threads, b, px)).collect();
    // Warm-up scan: the centre is found and the spots in the reference scan, before timing.
    reduce_range(&mut reducers, &blobs, px, 0, opts.scan.positions(), false);
    let mut next = opts.scan.positions();
    let mut best = [f64::INFINITY; 4];
    let mut scans_completed = 0;
    for _ in 0..opts.rounds.max(1) {
        // The decoders alone decode as many patterns as a reduce round (cycling the same blobs).
        let t = time_decoders(&blobs, per_round as usize, bytes, threads, 1);
        for k in 0..3 {
            best[k] = best[k].min(t[k]);
        }
        let start = Instant::now();
        scans_completed = reduce_range(&mut reducers, &blobs, px, next, per_round, false);
        best[3] = best[3].min(start.elapsed().as_secs_f64());
        next += per_round;
    }
    let spots_found = reducers[0].band.assembler.spots.len();
    let stages = stage_ns(&blobs, px, opts.scan, &cfg);
    let n = per_round as usize;
    FullBench {
        pattern_px: px,
        distinct_patterns: blobs.len(),
        patterns: n,
        threads,
        scan_rows: opts.scan.rows,
        scan_cols: opts.scan.cols,
        compressed_bytes_per_pattern: mean_len(&blobs),
        kernel: format!("{:?}", crate::decode::bslz4::Kernel::detect()),
        old: rate(n, bytes, best[0]),
        new_flex: rate(n, bytes, best[1]),
        new: rate(n, bytes, best[2]),
        reduce: rate(n, bytes, best[3]),
        stages_ns_per_pattern: stages,
        scans_completed,
        spots_found,
        c_bitshuffle: c_anchor.and_then(|py| c_bitshuffle_rate(py, &blobs, px)),
    }
}

/// Each stage timed on its own, one thread, over one scan after a warm-up scan (centre and spots
/// found): decode, detectors, and the rest of `push_u16` (region sums, bookkeeping).
fn stage_ns(blobs: &[Vec<u8>], px: usize, scan: ScanShape, cfg: &FourDConfig) -> StageNs {
    let mut r = BandReducer::new(cfg, scan, 1, 0, px);
    let positions = scan.positions();
    for index in 0..positions {
        r.push(index, &blobs[(index % blobs.len() as u64) as usize], px, false);
    }
    let Some(det): Option<VirtualDetectors> = r.band.assembler.detectors.clone() else {
        return StageNs::default();
    };
    let mut values = vec![0.0; det.names.len()];
    // Per-pattern times, medians per stage: on the shared machine a preempted pattern would
    // otherwise charge its wait to whichever stage it fell in.
    let mut ns: [Vec<u64>; 3] = Default::default();
    for index in positions..2 * positions {
        let blob = &blobs[(index % blobs.len() as u64) as usize];
        let t0 = Instant::now();
        decode_bslz4_u16_into(blob, &mut r.pixels, &mut r.scratch).expect("own blobs decode");
        let t1 = Instant::now();
        det.apply_u16(&r.pixels, None, &mut values);
        std::hint::black_box(&values);
        let t2 = Instant::now();
        let events = r.band.assembler.push_u16(index, px, px, &r.pixels, None).expect("the benchmark's patterns fit");
        let t3 = Instant::now();
        drop(events);
        for (k, (a, b)) in [(t0, t1), (t1, t2), (t2, t3)].into_iter().enumerate() {
            ns[k].push((b - a).as_nanos() as u64);
        }
    }
    let [decode, detectors, push] = ns.map(|mut v| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0) as f64
    });
    // push = detectors + the rest; the rest is what the region sums and bookkeeping cost.
    // No conversion stage any more: the reduction reads the decoded u16 pixels.
    StageNs { decode, convert: 0.0, detectors, region_sums: (push - detectors).max(0.0) }
}

/// The Python with the C bitshuffle library: `BEAMWATCH_PYTHON`, else `.tools/venv/bin/python`
/// under the current directory or the source tree; `None` when it cannot `import bitshuffle`.
pub fn python_with_bitshuffle() -> Option<std::path::PathBuf> {
    let candidates = [
        std::env::var_os("BEAMWATCH_PYTHON").map(std::path::PathBuf::from),
        Some(Path::new(".tools/venv/bin/python").to_path_buf()),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/python")),
    ];
    candidates.into_iter().flatten().find(|py| {
        std::process::Command::new(py)
            .args(["-c", "import bitshuffle"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The script that times the C library (`tools/bench_bitshuffle.py`), from the current directory
/// or the source tree.
pub fn bitshuffle_script() -> Option<std::path::PathBuf> {
    [
        Path::new("tools/bench_bitshuffle.py").to_path_buf(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bench_bitshuffle.py"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// The C bitshuffle library's single-thread rate on `blobs` (tools/bench_bitshuffle.py in `py`,
/// OMP_NUM_THREADS=1); `None` when it cannot run.
fn c_bitshuffle_rate(py: &Path, blobs: &[Vec<u8>], px: usize) -> Option<Rate> {
    let script = bitshuffle_script()?;
    let dir = tempfile_dir()?;
    let path = dir.join(format!("bslz4_{px}.bin"));
    write_blobs(&path, blobs).ok()?;
    let out = std::process::Command::new(py).arg(&script).arg(&path).env("OMP_NUM_THREADS", "1").output().ok();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "96×96         94376       1739": size, patterns/s, MB/s.
    let line = text.lines().find(|l| l.trim_start().starts_with(&format!("{px}×")))?;
    let mut f = line.split_whitespace().skip(1).filter_map(|v| v.parse::<f64>().ok());
    Some(Rate { patterns_per_s: f.next()?, mb_per_s_out: f.next()? })
}

/// A fresh private directory under the system temp directory.
fn tempfile_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("beamwatch-bench4d-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// The CPU model line of /proc/cpuinfo ("model name : …"), or "unknown".
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_patterns_have_a_bright_disk_and_decode_identically() {
        let p = counting_patterns(96, 3, 1);
        let px = |pat: &[u8], i: usize| u16::from_le_bytes([pat[2 * i], pat[2 * i + 1]]) as f64;
        let centre = px(&p[0], 48 * 96 + 48) + px(&p[0], 47 * 96 + 47) + px(&p[0], 48 * 96 + 47);
        let corner = px(&p[0], 0) + px(&p[0], 1) + px(&p[0], 96);
        assert!(centre > 30.0 && corner < 15.0, "centre {centre} corner {corner}");
        let blobs = compress_patterns(&p);
        let b = bench_blobs(&blobs, 96, 2, 1);
        assert_eq!(b.patterns, 3);
        assert!(b.compressed_bytes_per_pattern < (96 * 96 * 2) as f64);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blobs.bin");
        write_blobs(&path, &blobs).expect("write");
        let raw = std::fs::read(&path).expect("read");
        let n = u64::from_le_bytes(raw[..8].try_into().expect("8")) as usize;
        assert_eq!(&raw[8..8 + n], blobs[0].as_slice());
    }
}
