//! The two linear passes around a Winograd convolution's GEMMs ([`crate::engine::winograd`]): each
//! output row is a short sum of scaled input rows, so both passes stream whole rows. Sums are in
//! f32 whatever the stored format.
//!
//! - fp32 activations `[slot][patch][channel]`, a row is `patches × channels` values
//!   ([`input_transform`], [`output_transform`]): one axis at a time
//!   ([`Axis`](crate::engine::winograd::Axis)'s terms), both in one sweep per block of columns, so
//!   the intermediate (one axis done) stays in L1/L2 and each pass reads its input and writes its
//!   output once.
//! - bf16 activations `[channel][slot][patch]`, a row is one channel's patches of a pass
//!   ([`input_transform_bf16`], [`output_transform_bf16`]): both axes at once
//!   ([`Winograd::direct_terms`], ≤ 4 terms a row on the 2×2 maps bf16 takes), no intermediate;
//!   the transformed input and the products are bf16, rounded once each.
//!
//! Measured per 1020² frame on the 2-core Intel Xeon (`bench --layers`, thread-ms, fp32): layer1's
//! input and output transforms ≈ 21 and 18 around 52 of GEMMs with F(3,3) + F(2,3) tiles, ≈ 14 and
//! 15 around 29 with one F(5,3) tile per axis; layer2's ≈ 7 and 8 around 60. Far from the
//! arithmetic's bound, and no faster with fused multiply-adds or other block widths, so bound by
//! memory; a version that transformed tile by tile in registers, with the tables as constants, took
//! 4 % longer per frame (6 alternating rounds, 209.4 against 218.5 ms).

use gemmkit::bf16;

use crate::engine::winograd::Winograd;

/// Columns per block: the intermediate of a 5×5 map (5 rows × 7 points × 256 floats) is 35 KiB;
/// 128 and 1,024 columns were no faster (`bench --layers`, Intel Xeon).
const BLOCK: usize = 256;

/// Most terms in one row of a transform: a tile's `m + 2` ≤ 7 inputs, or its ≤ 7 points.
const MAX_TERMS: usize = 2 + crate::engine::winograd::MAX_TILE;

/// Lanes a sum keeps in registers.
const LANES: usize = 64;

/// A stored value the transforms read and write.
pub trait Value: Copy + Default {
    fn get(self) -> f32;
    fn put(v: f32) -> Self;
}

impl Value for f32 {
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
    #[inline(always)]
    fn put(v: f32) -> Self {
        v
    }
}

impl Value for bf16 {
    #[inline(always)]
    fn get(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    /// Round to nearest, ties to even, for finite values, in integer operations that vectorise
    /// (`half`'s conversion branches on NaN).
    #[inline(always)]
    fn put(v: f32) -> Self {
        let bits = v.to_bits();
        bf16::from_bits(((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16)
    }
}

/// `Σ c · src` over [`LANES`] values at a time (fewer at the end), each handed to `store(j, sum)`
/// with `j` its offset in the row.
#[inline(always)]
fn sum_rows<S: Value>(len: usize, terms: &[(&[S], f32)], mut store: impl FnMut(usize, &[f32])) {
    let full = len / LANES * LANES;
    for j in (0..full).step_by(LANES) {
        let mut acc = [0f32; LANES];
        for &(src, c) in terms {
            let s: &[S; LANES] = src[j..j + LANES].try_into().expect("a full block of lanes");
            for (a, v) in acc.iter_mut().zip(s) {
                *a += c * v.get();
            }
        }
        store(j, &acc);
    }
    if full < len {
        let mut acc = [0f32; LANES];
        for (i, a) in acc[..len - full].iter_mut().enumerate() {
            *a = terms.iter().fold(0.0, |a, &(src, c)| a + c * src[full + i].get());
        }
        store(full, &acc[..len - full]);
    }
}

/// `dst = Σ c · src`.
#[inline(always)]
fn combine<S: Value, D: Value>(dst: &mut [D], terms: &[(&[S], f32)]) {
    sum_rows(dst.len(), terms, |j, acc| {
        for (d, a) in dst[j..j + acc.len()].iter_mut().zip(acc) {
            *d = D::put(*a);
        }
    });
}

/// Gathers up to [`MAX_TERMS`] `(row, coefficient)` pairs without allocating.
fn terms<'a, T>(list: &[(usize, f32)], row: impl Fn(usize) -> &'a [T], out: &mut [(&'a [T], f32); MAX_TERMS]) -> usize {
    assert!(list.len() <= MAX_TERMS, "a transform row has {} terms", list.len());
    for (o, &(i, c)) in out.iter_mut().zip(list) {
        *o = (row(i), c);
    }
    list.len()
}

fn scratch(tmp: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if tmp.len() < len {
        tmp.resize(len, 0.0);
    }
    &mut tmp[..len]
}

/// Columns `cols` of `input` `[slot][row_len]` (row_len = patches × cin) → `v`
/// `[point][cols.len()]`.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn input_transform(
    w: &Winograd,
    input: &[f32],
    row_len: usize,
    cols: std::ops::Range<usize>,
    v: &mut [f32],
    tmp: &mut Vec<f32>,
) {
    let n_cols = cols.len();
    let (h, wd) = (w.y.len, w.x.len);
    let px_n = w.x.points();
    assert!(cols.end <= row_len && input.len() >= h * wd * row_len, "winograd input");
    assert!(v.len() >= w.points() * n_cols, "winograd transformed-input buffer");
    let tmp = scratch(tmp, h * px_n * BLOCK);
    for c0 in (0..n_cols).step_by(BLOCK) {
        let bw = BLOCK.min(n_cols - c0);
        let j0 = cols.start + c0;
        // Along x: t[iy][px] from the row iy's inputs.
        let mut buf = [(&[][..], 0f32); MAX_TERMS];
        for iy in 0..h {
            for (px, list) in w.x.input_terms.iter().enumerate() {
                let k = terms(list, |ix| &input[w.input_slot[iy * wd + ix] * row_len + j0..][..bw], &mut buf);
                combine(&mut tmp[(iy * px_n + px) * BLOCK..][..bw], &buf[..k]);
            }
        }
        // Along y: v[py][px] from t's column px.
        let t: &[f32] = tmp;
        let mut buf = [(&[][..], 0f32); MAX_TERMS];
        for (py, list) in w.y.input_terms.iter().enumerate() {
            for px in 0..px_n {
                let k = terms(list, |iy| &t[(iy * px_n + px) * BLOCK..][..bw], &mut buf);
                combine(&mut v[(py * px_n + px) * n_cols + c0..][..bw], &buf[..k]);
            }
        }
    }
}

/// `m` `[point][cols.len()]` → columns `cols` of `out` `[slot][row_len]` (row_len = patches ×
/// cout), adding the bias (and the residual, `[slot][row_len]`), then ReLU if asked: the
/// convolution's whole epilogue.
#[allow(clippy::too_many_arguments)]
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn output_transform(
    w: &Winograd,
    m: &[f32],
    row_len: usize,
    cols: std::ops::Range<usize>,
    bias: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
    tmp: &mut Vec<f32>,
) {
    let cout = bias.len();
    let n_cols = cols.len();
    assert!(cout > 0 && row_len.is_multiple_of(cout), "rows hold whole patches");
    assert!(cols.start.is_multiple_of(cout) && n_cols.is_multiple_of(cout) && cols.end <= row_len, "whole patches");
    let (h, wd) = (w.y.len, w.x.len);
    let (py_n, px_n) = (w.y.points(), w.x.points());
    assert!(m.len() >= w.points() * n_cols && out.len() >= h * wd * row_len, "winograd output buffers");
    assert!(residual.is_none_or(|r| r.len() >= h * wd * row_len), "residual buffer");
    // Whole patches per block, so the bias lines up with each block's start.
    let block = cout * (BLOCK / cout).max(1);
    let tmp = scratch(tmp, py_n * wd * block);
    for c0 in (0..n_cols).step_by(block) {
        let bw = block.min(n_cols - c0);
        let j0 = cols.start + c0;
        // Along x: s[py][ox] from the point row py.
        let mut buf = [(&[][..], 0f32); MAX_TERMS];
        for py in 0..py_n {
            for (ox, list) in w.x.output_terms.iter().enumerate() {
                let k = terms(list, |px| &m[(py * px_n + px) * n_cols + c0..][..bw], &mut buf);
                combine(&mut tmp[(py * wd + ox) * block..][..bw], &buf[..k]);
            }
        }
        // Along y, into the output slot, with the epilogue.
        let s: &[f32] = tmp;
        let mut buf = [(&[][..], 0f32); MAX_TERMS];
        for (oy, list) in w.y.output_terms.iter().enumerate() {
            for ox in 0..wd {
                let k = terms(list, |py| &s[(py * wd + ox) * block..][..bw], &mut buf);
                let at = w.output_slot[oy * wd + ox] * row_len + j0;
                let dst = &mut out[at..][..bw];
                combine(dst, &buf[..k]);
                super::bias_residual_relu(dst, bias, residual.map(|r| &r[at..][..bw]), relu);
            }
        }
    }
}

/// Most terms of a direct 2D transform row ([`Winograd::direct_terms`]) the bf16 transforms take.
pub const MAX_DIRECT_TERMS: usize = 16;

/// A bf16 pass's input: patches `patches` of `input` `[channel][in_slots][n]` → `v`
/// `[point][cin][patches.len()]`, each point summed straight from the input slots (`terms`: per
/// point, `(input slot, coefficient)`).
#[allow(clippy::too_many_arguments)]
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn input_transform_bf16(
    terms: &[Vec<(usize, f32)>],
    input: &[bf16],
    in_slots: usize,
    n: usize,
    patches: std::ops::Range<usize>,
    cin: usize,
    v: &mut [bf16],
) {
    let ng = patches.len();
    assert!(patches.end <= n && input.len() >= cin * in_slots * n, "winograd bf16 input");
    assert!(terms.iter().flatten().all(|&(s, _)| s < in_slots), "winograd input slots");
    assert!(terms.iter().all(|t| t.len() <= MAX_DIRECT_TERMS), "direct transform rows");
    assert!(v.len() >= terms.len() * cin * ng, "winograd transformed-input buffer");
    let mut buf = [(&[][..], 0f32); MAX_DIRECT_TERMS];
    for c in 0..cin {
        for (pt, list) in terms.iter().enumerate() {
            for (b, &(s, coef)) in buf.iter_mut().zip(list) {
                *b = (&input[(c * in_slots + s) * n + patches.start..][..ng], coef);
            }
            combine(&mut v[(pt * cin + c) * ng..][..ng], &buf[..list.len()]);
        }
    }
}

/// A bf16 pass's output: the products `m` `[point][cout][patches.len()]` → patches `patches` of
/// `out` `[channel][out_slots][n]`, each output slot summed straight from its points (`terms`: per
/// output slot, `(point, coefficient)`), plus the channel's bias, plus what `out` holds there when
/// `onto_residual`, then ReLU if asked; rounded to bf16 once.
#[allow(clippy::too_many_arguments)]
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn output_transform_bf16(
    terms: &[Vec<(usize, f32)>],
    m: &[bf16],
    n: usize,
    patches: std::ops::Range<usize>,
    bias: &[f32],
    onto_residual: bool,
    relu: bool,
    out: &mut [bf16],
) {
    let (ng, cout, out_slots) = (patches.len(), bias.len(), terms.len());
    let points = terms.iter().flatten().map(|&(p, _)| p + 1).max().unwrap_or(0);
    assert!(patches.end <= n && out.len() >= cout * out_slots * n, "winograd bf16 output");
    assert!(terms.iter().all(|t| t.len() <= MAX_DIRECT_TERMS), "direct transform rows");
    assert!(m.len() >= points * cout * ng, "winograd products buffer");
    let mut buf = [(&[][..], 0f32); MAX_DIRECT_TERMS];
    for (co, &b) in bias.iter().enumerate() {
        for (s, list) in terms.iter().enumerate() {
            for (t, &(pt, coef)) in buf.iter_mut().zip(list) {
                *t = (&m[(pt * cout + co) * ng..][..ng], coef);
            }
            let dst = &mut out[(co * out_slots + s) * n + patches.start..][..ng];
            sum_rows(ng, &buf[..list.len()], |j, acc| {
                for (d, a) in dst[j..j + acc.len()].iter_mut().zip(acc) {
                    let v = a + b + if onto_residual { d.get() } else { 0.0 };
                    *d = bf16::put(if relu && v < 0.0 { 0.0 } else { v });
                }
            });
        }
    }
}
