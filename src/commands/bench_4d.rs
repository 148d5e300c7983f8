//! `beamwatch bench-4d --decode-only`: bitshuffle-LZ4 decoding of 4D-STEM diffraction patterns,
//! the first stage of the 4D-STEM path — the old decoder (allocating, portable untranspose:
//! [`decode_bslz4_scalar`]) against the buffer-reusing SIMD [`decode_bslz4_into`] on the same
//! blobs, alternating, in the same run.
//!
//! The patterns are synthetic electron-counting frames like an ARINA's: u16, Poisson counts of
//! about one electron per pixel with a bright central disk, compressed in 8192-byte blocks as
//! DECTRIS does. The blobs can be written out so that the C bitshuffle library decodes the very
//! same bytes (`tools/bench_bitshuffle.py`).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use serde::Serialize;

use crate::decode::bslz4::{DEFAULT_BLOCK_BYTES, decode_bslz4_into, decode_bslz4_scalar, encode_bslz4};

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
    /// `decode_bslz4_into`: the caller's buffers, the SIMD untranspose where the CPU has it.
    pub new: Rate,
    pub kernel: String,
}

/// Synthetic electron-counting patterns (u16 little-endian bytes), deterministic from `seed`:
/// about 0.6 e⁻ per pixel outside a central disk of radius px/12 at 25 e⁻ per pixel.
pub fn counting_patterns(pattern_px: usize, patterns: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let c = (pattern_px as f64 - 1.0) / 2.0;
    let r2 = (pattern_px as f64 / 12.0).powi(2);
    let means: Vec<f64> = (0..pattern_px * pattern_px)
        .map(|i| {
            let (y, x) = ((i / pattern_px) as f64 - c, (i % pattern_px) as f64 - c);
            if x * x + y * y <= r2 { 25.0 } else { 0.6 }
        })
        .collect();
    let dists: Vec<Poisson<f64>> = [0.6, 25.0].iter().filter_map(|&m| Poisson::new(m).ok()).collect();
    (0..patterns)
        .map(|_| {
            means
                .iter()
                .flat_map(|&m| {
                    let d = &dists[usize::from(m > 1.0)];
                    (d.sample(&mut rng) as u16).to_le_bytes()
                })
                .collect()
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

/// Decodes `blobs` once on each of `threads` threads (each its own share), old or new decoder.
/// Returns the wall time in seconds and whether every pattern decoded to `expected_bytes`.
fn decode_all(blobs: &[Vec<u8>], expected_bytes: usize, threads: usize, new: bool) -> (f64, bool) {
    let share = blobs.len().div_ceil(threads.max(1)).max(1);
    let start = Instant::now();
    let ok = std::thread::scope(|s| {
        let handles: Vec<_> = blobs
            .chunks(share)
            .map(|chunk| {
                s.spawn(move || {
                    let mut ok = true;
                    if new {
                        let mut out = vec![0u8; expected_bytes];
                        let mut scratch = Vec::new();
                        for b in chunk {
                            ok &= decode_bslz4_into(b, 2, &mut out, &mut scratch).is_ok();
                        }
                        std::hint::black_box(&out);
                    } else {
                        for b in chunk {
                            ok &= std::hint::black_box(decode_bslz4_scalar(b, 2, expected_bytes)).is_ok();
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

/// Times old and new decoders on `patterns` synthetic patterns of `pattern_px`² u16 pixels, on
/// `threads` threads, alternating old/new over `rounds` rounds (the best round of each counts:
/// the 2-core machine is shared and the best round is the least disturbed).
pub fn bench_decode(pattern_px: usize, patterns: usize, threads: usize) -> DecodeBench {
    let blobs = compress_patterns(&counting_patterns(pattern_px, patterns.max(1), 20));
    bench_blobs(&blobs, pattern_px, threads, 5)
}

/// [`bench_decode`] on given blobs (all of `pattern_px`² u16 pixels).
pub fn bench_blobs(blobs: &[Vec<u8>], pattern_px: usize, threads: usize, rounds: usize) -> DecodeBench {
    let bytes = pattern_px * pattern_px * 2;
    let (mut old_s, mut new_s) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..rounds.max(1) {
        let (t, ok) = decode_all(blobs, bytes, threads, false);
        assert!(ok, "the benchmark's own blobs decode");
        old_s = old_s.min(t);
        let (t, ok) = decode_all(blobs, bytes, threads, true);
        assert!(ok, "the benchmark's own blobs decode");
        new_s = new_s.min(t);
    }
    let rate =
        |s: f64| Rate { patterns_per_s: blobs.len() as f64 / s, mb_per_s_out: (blobs.len() * bytes) as f64 / s / 1e6 };
    DecodeBench {
        pattern_px,
        patterns: blobs.len(),
        threads,
        compressed_bytes_per_pattern: blobs.iter().map(Vec::len).sum::<usize>() as f64 / blobs.len().max(1) as f64,
        old: rate(old_s),
        new: rate(new_s),
        kernel: format!("{:?}", crate::decode::bslz4::Kernel::detect()),
    }
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
