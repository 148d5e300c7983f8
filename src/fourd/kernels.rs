//! Integer kernels for the per-pattern reduction of u16 patterns: in one pass over each row, the
//! row's sum and x-moment, the sums over the virtual detectors' pixel runs in that row, and
//! (optionally) the row added into a u32 summed pattern.
//!
//! Everything is integer arithmetic, so the sums are exact and every code path gives the same
//! bits. The AVX2 and AVX-512 paths are the same source compiled for wider vectors, chosen at run
//! time ([`Isa::detect`]); the portable path runs elsewhere, and the tests compare them.

/// u32 lanes of the inner loops: one 512-bit register, two 256-bit ones.
const LANES: usize = 16;

/// Chunks of [`LANES`] pixels per segment. Within a segment a lane's running sum is at most
/// 256 · 65535 and its moment accumulator at most 256²/2 · 65535 < 2³², so u32 lanes cannot
/// overflow; segments are folded into u64.
const SEGMENT_CHUNKS: usize = 256;

/// A virtual detector's pixel run [start, end) (pattern indices, within one pattern row) and the
/// detector's mask number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub start: u32,
    pub end: u32,
    pub mask: u32,
}

/// Exact per-pattern sums from [`reduce`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moments {
    /// Σ I over every pixel.
    pub total: u64,
    /// Σ x·I (x = column).
    pub sum_x: u64,
    /// Σ y·I (y = row).
    pub sum_y: u64,
}

/// Which instruction set the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The widest this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// Every path this CPU runs (the tests compare them).
    pub fn available() -> Vec<Self> {
        let mut v = vec![Self::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                v.push(Self::Avx2);
            }
            if Self::detect() == Self::Avx512 {
                v.push(Self::Avx512);
            }
        }
        v
    }
}

/// One pass over `pixels` (rows of `width`): the moments, `run_sums[r.mask] += Σ pixels[r]` for
/// every run (sorted by start, each within one row), and, when `sum_into` is given, every pixel
/// added to it (same length as `pixels`; the caller keeps it from overflowing: at most 65537
/// patterns per u32). `run_sums` must be long enough for every run's mask.
///
/// Panics if `pixels.len()` is not a multiple of `width`, a run lies outside `pixels`, or
/// `sum_into` has another length: the callers check sizes first.
pub fn reduce(
    isa: Isa,
    pixels: &[u16],
    width: usize,
    runs: &[Run],
    run_sums: &mut [u64],
    sum_into: Option<&mut [u32]>,
) -> Moments {
    assert!(width > 0 && pixels.len() % width == 0, "{} pixels in rows of {width}", pixels.len());
    assert!(sum_into.as_ref().is_none_or(|s| s.len() == pixels.len()), "summed pattern of another size");
    match isa {
        Isa::Portable => reduce_body(pixels, width, runs, run_sums, sum_into),
        // SAFETY: these variants are only used where the CPU reported the features (detect /
        // available), and the bodies are safe code.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { reduce_avx2(pixels, width, runs, run_sums, sum_into) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { reduce_avx512(pixels, width, runs, run_sums, sum_into) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn reduce_avx2(
    pixels: &[u16],
    width: usize,
    runs: &[Run],
    run_sums: &mut [u64],
    sum_into: Option<&mut [u32]>,
) -> Moments {
    reduce_body(pixels, width, runs, run_sums, sum_into)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn reduce_avx512(
    pixels: &[u16],
    width: usize,
    runs: &[Run],
    run_sums: &mut [u64],
    sum_into: Option<&mut [u32]>,
) -> Moments {
    reduce_body(pixels, width, runs, run_sums, sum_into)
}

#[inline(always)]
fn reduce_body(
    pixels: &[u16],
    width: usize,
    runs: &[Run],
    run_sums: &mut [u64],
    mut sum_into: Option<&mut [u32]>,
) -> Moments {
    let mut m = Moments::default();
    let mut next_run = 0;
    for (y, row) in pixels.chunks_exact(width).enumerate() {
        let (s, sx) = match sum_into.as_deref_mut() {
            Some(acc) => row_moments_add(row, &mut acc[y * width..(y + 1) * width]),
            None => row_moments(row),
        };
        m.total += s;
        m.sum_x += sx;
        m.sum_y += y as u64 * s;
        // This row's runs, while the row is in L1.
        let row_end = ((y + 1) * width) as u32;
        while let Some(r) = runs.get(next_run).filter(|r| r.start < row_end) {
            run_sums[r.mask as usize] += sum(&pixels[r.start as usize..r.end as usize]);
            next_run += 1;
        }
    }
    // Runs past the last row cannot be: they would have panicked on the slice above.
    m
}

/// (Σ v, Σ x·v) over a row, x from 0.
#[inline(always)]
fn row_moments(row: &[u16]) -> (u64, u64) {
    moments_impl::<false>(row, &mut [])
}

/// [`row_moments`], also adding the row into `acc` (same length).
#[inline(always)]
fn row_moments_add(row: &[u16], acc: &mut [u32]) -> (u64, u64) {
    moments_impl::<true>(row, acc)
}

/// Σ x·v without multiplies: per lane, Σ_c c·v_c = (C − 1)·Σ v_c − Σ_c (C − 1 − c)·v_c, and the
/// second sum is the running sum added up before each chunk.
#[inline(always)]
fn moments_impl<const ADD: bool>(row: &[u16], acc: &mut [u32]) -> (u64, u64) {
    let (mut s, mut sx) = (0u64, 0u64);
    let seg_px = SEGMENT_CHUNKS * LANES;
    let whole = row.len() - row.len() % LANES;
    let mut x0 = 0;
    while x0 < whole {
        let end = (x0 + seg_px).min(whole);
        let chunks = (end - x0) / LANES;
        let mut run = [0u32; LANES];
        let mut before = [0u32; LANES];
        for c in 0..chunks {
            let at = x0 + c * LANES;
            let v: &[u16; LANES] = row[at..at + LANES].try_into().expect("LANES pixels");
            for j in 0..LANES {
                before[j] += run[j];
                run[j] += u32::from(v[j]);
            }
            if ADD {
                let a: &mut [u32; LANES] = (&mut acc[at..at + LANES]).try_into().expect("LANES sums");
                for j in 0..LANES {
                    a[j] += u32::from(v[j]);
                }
            }
        }
        // Segment: Σ v and Σ (x − x0)·v = Σ_j [LANES·((C − 1)·T_j − before_j) + j·T_j].
        let (mut seg_s, mut seg_sx) = (0u64, 0u64);
        for j in 0..LANES {
            let t = u64::from(run[j]);
            seg_s += t;
            seg_sx += LANES as u64 * ((chunks as u64 - 1) * t - u64::from(before[j])) + j as u64 * t;
        }
        s += seg_s;
        sx += seg_sx + x0 as u64 * seg_s;
        x0 = end;
    }
    for x in whole..row.len() {
        let v = u64::from(row[x]);
        s += v;
        sx += x as u64 * v;
        if ADD {
            acc[x] += row[x] as u32;
        }
    }
    (s, sx)
}

/// Σ v.
#[inline(always)]
fn sum(v: &[u16]) -> u64 {
    let mut s = 0u64;
    let mut chunks = v.chunks_exact(LANES);
    // 65536 chunks per u32 lane at most before it could overflow; runs are far shorter, but a
    // run may be a whole row of a huge detector.
    loop {
        let mut lanes = [0u32; LANES];
        let mut n = 0;
        for c in chunks.by_ref().take(65536) {
            for j in 0..LANES {
                lanes[j] += u32::from(c[j]);
            }
            n += 1;
        }
        s += lanes.iter().map(|&l| u64::from(l)).sum::<u64>();
        if n < 65536 {
            break;
        }
    }
    s + chunks.remainder().iter().map(|&x| u64::from(x)).sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Straight from the definitions, in u128 (no overflow possible).
    fn naive(
        pixels: &[u16],
        width: usize,
        runs: &[Run],
        masks: usize,
        sum_into: Option<&mut [u32]>,
    ) -> (u128, u128, u128, Vec<u128>) {
        let (mut t, mut sx, mut sy) = (0u128, 0u128, 0u128);
        for (i, &v) in pixels.iter().enumerate() {
            let v = u128::from(v);
            t += v;
            sx += (i % width) as u128 * v;
            sy += (i / width) as u128 * v;
        }
        let mut r = vec![0u128; masks];
        for run in runs {
            for i in run.start..run.end {
                r[run.mask as usize] += u128::from(pixels[i as usize]);
            }
        }
        if let Some(acc) = sum_into {
            for (a, &v) in acc.iter_mut().zip(pixels) {
                *a += u32::from(v);
            }
        }
        (t, sx, sy, r)
    }

    /// Runs of a disk and an annulus around `c` (as the detectors make them), row by row.
    fn ring_runs(width: usize, height: usize, c: (f64, f64), rings: &[(f64, f64)]) -> Vec<Run> {
        let mut runs = Vec::new();
        for y in 0..height {
            for (mask, &(inner, outer)) in rings.iter().enumerate() {
                let mut start = None;
                for x in 0..=width {
                    let r = ((x as f64 - c.0).powi(2) + (y as f64 - c.1).powi(2)).sqrt();
                    let inside = x < width && r >= inner && r < outer;
                    match (inside, start) {
                        (true, None) => start = Some(x),
                        (false, Some(s)) => {
                            runs.push(Run { start: (y * width + s) as u32, end: (y * width + x) as u32, mask: mask as u32 });
                            start = None;
                        }
                        _ => {}
                    }
                }
            }
        }
        runs.sort_by_key(|r| r.start);
        runs
    }

    fn check(pixels: &[u16], width: usize, runs: &[Run], masks: usize, what: &str) {
        let mut want_acc: Vec<u32> = (0..pixels.len() as u32).map(|i| i.wrapping_mul(2654435761) >> 4).collect();
        let start_acc = want_acc.clone();
        let (t, sx, sy, r) = naive(pixels, width, runs, masks, Some(&mut want_acc));
        for isa in Isa::available() {
            for add in [false, true] {
                let mut sums = vec![0u64; masks];
                let mut acc = start_acc.clone();
                let m = reduce(isa, pixels, width, runs, &mut sums, add.then_some(&mut acc[..]));
                let got = (u128::from(m.total), u128::from(m.sum_x), u128::from(m.sum_y));
                assert_eq!(got, (t, sx, sy), "{what}: {isa:?} add {add}");
                assert_eq!(sums.iter().map(|&s| u128::from(s)).collect::<Vec<_>>(), r, "{what}: {isa:?}");
                assert!(if add { acc == want_acc } else { acc == start_acc }, "{what}: {isa:?} summed pattern");
            }
        }
    }

    #[test]
    fn every_path_equals_the_definition_on_random_and_adversarial_patterns() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // Odd widths (partial 16-pixel chunks), rows longer than a segment (4096 px), one column.
        for (w, h) in [(1usize, 5usize), (7, 3), (16, 16), (17, 9), (96, 96), (97, 31), (192, 192), (4099, 2), (8200, 1)] {
            let c = (w as f64 / 2.0 - 0.3, h as f64 / 2.0 + 0.2);
            let runs = ring_runs(w, h, c, &[(0.0, w.min(h) as f64 / 6.0), (w.min(h) as f64 / 4.0, w as f64 * 2.0)]);
            let sparse: Vec<u16> = (0..w * h).map(|_| if rng.random_range(0..10) == 0 { rng.random_range(1..4) } else { 0 }).collect();
            let random: Vec<u16> = (0..w * h).map(|_| rng.random()).collect();
            // Every pixel at the maximum: the largest lane sums and moments there can be.
            let full = vec![u16::MAX; w * h];
            let zeros = vec![0u16; w * h];
            for (name, p) in [("sparse", &sparse), ("random", &random), ("full", &full), ("zeros", &zeros)] {
                check(p, w, &runs, 2, &format!("{name} {w}×{h}"));
            }
        }
    }

    #[test]
    fn overlapping_masks_and_a_run_covering_a_whole_long_row() {
        let w = 5000;
        let p: Vec<u16> = (0..2 * w).map(|i| (i * 7919 % 65536) as u16).collect();
        let runs = [
            Run { start: 0, end: w as u32, mask: 1 },
            Run { start: 3, end: 9, mask: 0 },
            Run { start: w as u32, end: 2 * w as u32, mask: 0 },
            Run { start: w as u32 + 10, end: w as u32 + 11, mask: 2 },
        ];
        check(&p, w, &runs, 3, "long rows");
    }
}
