//! The two linear passes around a Winograd convolution's GEMMs ([`crate::engine::winograd`]), on
//! fp32 activations `[slot][patch][channel]`: each output row is a short sum of scaled input rows
//! ([`Axis`](crate::engine::winograd::Axis)'s terms), so both passes stream whole rows of
//! `patches × channels` values. Both axes are transformed in one sweep per block of columns, so
//! the intermediate (one axis done) stays in L1/L2 and each pass reads its input and writes its
//! output once.
//!
//! Measured per 1020² frame on the 2-core Intel Xeon (`bench --layers`, thread-ms): layer1's input
//! and output transforms ≈ 21 and 18 around 52 of GEMMs; layer2's ≈ 9 and 9 around 64. Far from
//! the arithmetic's bound (≈ 5 thread-ms for layer1's input side at two vector FMAs a cycle), but
//! a version that transformed tile by tile in registers, with the tables as constants, took 4 %
//! longer per frame (6 alternating rounds, 209.4 against 218.5 ms).

use crate::engine::winograd::Winograd;

/// Columns per block: the intermediate of a 5×5 map (5 rows × 9 points × 256 floats) is 45 KiB.
const BLOCK: usize = 256;

/// Most terms in one row of a transform: a tile's `m + 2` ≤ 5 inputs, or its ≤ 5 points.
const MAX_TERMS: usize = 5;

/// `dst = Σ c · src`, 64 values at a time accumulated in registers.
#[inline(always)]
fn combine(dst: &mut [f32], terms: &[(&[f32], f32)]) {
    const L: usize = 64;
    let len = dst.len();
    let full = len / L * L;
    for j in (0..full).step_by(L) {
        let mut acc = [0f32; L];
        for &(src, c) in terms {
            let s: &[f32; L] = src[j..j + L].try_into().expect("64 lanes");
            for (a, v) in acc.iter_mut().zip(s) {
                *a += c * v;
            }
        }
        dst[j..j + L].copy_from_slice(&acc);
    }
    for j in full..len {
        dst[j] = terms.iter().fold(0.0, |a, &(src, c)| a + c * src[j]);
    }
}

/// Gathers up to [`MAX_TERMS`] `(row, coefficient)` pairs without allocating.
fn terms<'a>(
    list: &[(usize, f32)],
    row: impl Fn(usize) -> &'a [f32],
    out: &mut [(&'a [f32], f32); MAX_TERMS],
) -> usize {
    assert!(list.len() <= MAX_TERMS, "a transform row has {} terms", list.len());
    for (o, &(i, c)) in out.iter_mut().zip(list) {
        *o = (row(i), c);
    }
    list.len()
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
    let (h, wd) = (w.y.len, w.x.len);
    let px_n = w.x.points();
    let n_cols = cols.len();
    assert!(cols.end <= row_len && input.len() >= h * wd * row_len, "winograd input");
    assert!(v.len() >= w.points() * n_cols, "winograd transformed-input buffer");
    if tmp.len() < h * px_n * BLOCK {
        tmp.resize(h * px_n * BLOCK, 0.0);
    }
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
    let (h, wd) = (w.y.len, w.x.len);
    let (py_n, px_n) = (w.y.points(), w.x.points());
    let n_cols = cols.len();
    assert!(cout > 0 && row_len.is_multiple_of(cout), "rows hold whole patches");
    assert!(cols.start.is_multiple_of(cout) && n_cols.is_multiple_of(cout) && cols.end <= row_len, "whole patches");
    assert!(m.len() >= w.points() * n_cols && out.len() >= h * wd * row_len, "winograd output buffers");
    assert!(residual.is_none_or(|r| r.len() >= h * wd * row_len), "residual buffer");
    // Whole patches per block, so the bias lines up with each block's start.
    let block = cout * (BLOCK / cout).max(1);
    if tmp.len() < py_n * wd * block {
        tmp.resize(py_n * wd * block, 0.0);
    }
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
