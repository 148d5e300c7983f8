//! Integer kernels for the per-pattern reduction of u16 patterns: one pass over the pixels for
//! the total and both first moments, optionally one contiguous pass adding the pattern into a u32
//! summed pattern (faster on its own than inside the column strips: the prefetchers follow it),
//! then one dense pass per mask detector over the rows it touches. The pattern stays in L1/L2
//! between the passes.
//!
//! Everything is integer arithmetic, so the sums are exact and every code path gives the same
//! bits. The AVX2 and AVX-512 paths are the same source compiled for wider vectors, chosen at run
//! time ([`Isa::detect`]); the portable path runs elsewhere, and the tests compare them.
//!
//! Moments without multiplies or per-row horizontal sums: per column x, `run[x]` is the column's
//! running sum and `before[x]` adds up `run[x]` before each row, so after the rows y0..y1
//! Σ_y (y − y0)·v = (y1 − 1 − y0)·run[x] − before[x]; Σx·I comes from the column totals at the end.
//! The pattern is walked in strips of 64 (then 32) columns, whose accumulators stay in registers.

/// Rows per block: `before[x]` ≤ 256²/2 · 65535 < 2³², so u32 cannot overflow; blocks are folded
/// into u64.
const BLOCK_ROWS: usize = 256;

/// u32 lanes of the masked sums: one 512-bit register, two 256-bit ones.
const LANES: usize = 16;

/// A mask detector as dense weights over the whole rows it touches: `weights[i]` is 0xFFFF where
/// pixel `first_px + i` is in the mask, else 0 (so Σ (v & w) is the masked sum, branch-free).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskWeights {
    pub first_px: usize,
    pub weights: Vec<u16>,
}

impl MaskWeights {
    /// From runs of pixel indices [start, end) (sorted or not); empty runs give empty weights.
    pub fn from_runs(runs: &[(u32, u32)], width: usize) -> Self {
        let (Some(lo), Some(hi)) = (runs.iter().map(|r| r.0).min(), runs.iter().map(|r| r.1).max()) else {
            return Self { first_px: 0, weights: Vec::new() };
        };
        // Whole rows: the span is contiguous in the pattern.
        let first_px = lo as usize / width * width;
        let end = (hi as usize).div_ceil(width) * width;
        let mut weights = vec![0u16; end - first_px];
        for &(a, b) in runs {
            weights[a as usize - first_px..b as usize - first_px].fill(u16::MAX);
        }
        Self { first_px, weights }
    }
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

/// The moments of `pixels` (rows of `width`), `mask_sums[k] = Σ pixels & masks[k]`, and, when
/// `sum_into` is given (same length as `pixels`), every pixel added to it (the caller keeps it
/// from overflowing: at most 65537 patterns per u32).
///
/// Panics if `pixels.len()` is not a multiple of `width`, a mask reaches past `pixels`,
/// `mask_sums` is shorter than `masks` or `sum_into` has another length: the callers check sizes.
pub fn reduce(
    isa: Isa,
    pixels: &[u16],
    width: usize,
    masks: &[MaskWeights],
    mask_sums: &mut [u64],
    sum_into: Option<&mut [u32]>,
) -> Moments {
    assert!(width > 0 && pixels.len() % width == 0, "{} pixels in rows of {width}", pixels.len());
    assert!(sum_into.as_ref().is_none_or(|s| s.len() == pixels.len()), "summed pattern of another size");
    assert!(mask_sums.len() >= masks.len(), "a sum per mask");
    match isa {
        Isa::Portable => reduce_body(pixels, width, masks, mask_sums, sum_into),
        // SAFETY: these variants are only used where the CPU reported the features (detect /
        // available), and the bodies are safe code.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { reduce_avx2(pixels, width, masks, mask_sums, sum_into) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { reduce_avx512(pixels, width, masks, mask_sums, sum_into) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn reduce_avx2(
    pixels: &[u16],
    width: usize,
    masks: &[MaskWeights],
    mask_sums: &mut [u64],
    sum_into: Option<&mut [u32]>,
) -> Moments {
    reduce_body(pixels, width, masks, mask_sums, sum_into)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn reduce_avx512(
    pixels: &[u16],
    width: usize,
    masks: &[MaskWeights],
    mask_sums: &mut [u64],
    sum_into: Option<&mut [u32]>,
) -> Moments {
    reduce_body(pixels, width, masks, mask_sums, sum_into)
}

#[inline(always)]
fn reduce_body(
    pixels: &[u16],
    width: usize,
    masks: &[MaskWeights],
    mask_sums: &mut [u64],
    sum_into: Option<&mut [u32]>,
) -> Moments {
    let height = pixels.len() / width;
    let mut m = Moments::default();
    // Strips of 64 and 32 columns keep their accumulators in registers; the rest (widths that
    // are not a multiple of 32) go through the slice loop.
    let mut x0 = 0;
    while x0 + 64 <= width {
        strip::<64>(pixels, width, height, x0, &mut m);
        x0 += 64;
    }
    while x0 + 32 <= width {
        strip::<32>(pixels, width, height, x0, &mut m);
        x0 += 32;
    }
    if x0 < width {
        strip_tail(pixels, width, height, x0, &mut m);
    }
    // Row-major, apart from the strips: contiguous streams are what the prefetchers follow.
    if let Some(acc) = sum_into {
        let whole = pixels.len() - pixels.len() % LANES;
        for (a, v) in acc[..whole].chunks_exact_mut(LANES).zip(pixels[..whole].chunks_exact(LANES)) {
            for j in 0..LANES {
                a[j] += u32::from(v[j]);
            }
        }
        for (a, &v) in acc[whole..].iter_mut().zip(&pixels[whole..]) {
            *a += u32::from(v);
        }
    }
    for (mask, s) in masks.iter().zip(mask_sums.iter_mut()) {
        *s = masked_sum(&pixels[mask.first_px..mask.first_px + mask.weights.len()], &mask.weights);
    }
    m
}

/// The moments of columns x0..x0 + S, added to `m`.
#[inline(always)]
fn strip<const S: usize>(pixels: &[u16], width: usize, height: usize, x0: usize, m: &mut Moments) {
    for y0 in (0..height).step_by(BLOCK_ROWS) {
        let y1 = (y0 + BLOCK_ROWS).min(height);
        let mut run = [0u32; S];
        let mut before = [0u32; S];
        for y in y0..y1 {
            let at = y * width + x0;
            let row: &[u16; S] = pixels[at..at + S].try_into().expect("S pixels");
            for j in 0..S {
                before[j] += run[j];
                run[j] += u32::from(row[j]);
            }
        }
        fold(&run, &before, x0, y0, y1, m);
    }
}

/// [`strip`] for the last columns x0..width (fewer than 32), through slices.
#[inline(always)]
fn strip_tail(pixels: &[u16], width: usize, height: usize, x0: usize, m: &mut Moments) {
    let cols = width - x0;
    let (mut run, mut before) = ([0u32; 32], [0u32; 32]);
    let (run, before) = (&mut run[..cols], &mut before[..cols]);
    for y0 in (0..height).step_by(BLOCK_ROWS) {
        let y1 = (y0 + BLOCK_ROWS).min(height);
        run.fill(0);
        before.fill(0);
        for y in y0..y1 {
            let at = y * width + x0;
            for ((b, r), &v) in before.iter_mut().zip(run.iter_mut()).zip(&pixels[at..at + cols]) {
                *b += *r;
                *r += u32::from(v);
            }
        }
        fold(run, before, x0, y0, y1, m);
    }
}

/// Column totals `run` and `before` sums of the rows y0..y1 (columns from x0) into `m`.
#[inline(always)]
fn fold(run: &[u32], before: &[u32], x0: usize, y0: usize, y1: usize, m: &mut Moments) {
    let last = (y1 - 1 - y0) as u64;
    let (mut t, mut sx, mut sy_rel) = (0u64, 0u64, 0u64);
    for (x, (&r, &b)) in run.iter().zip(before).enumerate() {
        let r = u64::from(r);
        t += r;
        sx += (x0 + x) as u64 * r;
        sy_rel += last * r - u64::from(b);
    }
    m.total += t;
    m.sum_x += sx;
    m.sum_y += sy_rel + y0 as u64 * t;
}

/// Σ v & w.
#[inline(always)]
fn masked_sum(v: &[u16], w: &[u16]) -> u64 {
    let mut s = 0u64;
    let mut chunks = v.chunks_exact(LANES).zip(w.chunks_exact(LANES));
    // At most 65536 chunks per u32 lane before it could overflow.
    loop {
        let mut lanes = [0u32; LANES];
        let mut n = 0;
        for (c, m) in chunks.by_ref().take(65536) {
            for j in 0..LANES {
                lanes[j] += u32::from(c[j] & m[j]);
            }
            n += 1;
        }
        s += lanes.iter().map(|&l| u64::from(l)).sum::<u64>();
        if n < 65536 {
            break;
        }
    }
    let done = v.len() - v.len() % LANES;
    s + v[done..].iter().zip(&w[done..]).map(|(&x, &m)| u64::from(x & m)).sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A run of mask `mask`'s pixels [start, end).
    #[derive(Clone, Copy, Debug)]
    struct Run {
        start: u32,
        end: u32,
        mask: u32,
    }

    /// Straight from the definitions, in u128 (no overflow possible).
    fn naive(
        pixels: &[u16],
        width: usize,
        runs: &[Run],
        masks: usize,
        sum_into: Option<&mut [u32]>,
    ) -> (u128, u128, u128, Vec<u128>) {
        // The runs, not the weights: the weights are what is tested.
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
                            runs.push(Run {
                                start: (y * width + s) as u32,
                                end: (y * width + x) as u32,
                                mask: mask as u32,
                            });
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
        let weights: Vec<MaskWeights> = (0..masks as u32)
            .map(|k| {
                let mine: Vec<(u32, u32)> = runs.iter().filter(|r| r.mask == k).map(|r| (r.start, r.end)).collect();
                MaskWeights::from_runs(&mine, width)
            })
            .collect();
        let mut want_acc: Vec<u32> = (0..pixels.len() as u32).map(|i| i.wrapping_mul(2654435761) >> 4).collect();
        let start_acc = want_acc.clone();
        let (t, sx, sy, r) = naive(pixels, width, runs, masks, Some(&mut want_acc));
        for isa in Isa::available() {
            for add in [false, true] {
                let mut sums = vec![0u64; masks];
                let mut acc = start_acc.clone();
                let m = reduce(isa, pixels, width, &weights, &mut sums, add.then_some(&mut acc[..]));
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
        for (w, h) in [
            (1usize, 5usize),
            (7, 3),
            (3, 600),
            (1030, 260),
            (16, 16),
            (17, 9),
            (96, 96),
            (97, 31),
            (192, 192),
            (4099, 2),
            (8200, 1),
        ] {
            let c = (w as f64 / 2.0 - 0.3, h as f64 / 2.0 + 0.2);
            let runs = ring_runs(w, h, c, &[(0.0, w.min(h) as f64 / 6.0), (w.min(h) as f64 / 4.0, w as f64 * 2.0)]);
            let sparse: Vec<u16> =
                (0..w * h).map(|_| if rng.random_range(0..10) == 0 { rng.random_range(1..4) } else { 0 }).collect();
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
