//! The fp32 path: activations `[slot][patch][channel]`, row-major GEMMs `C = X·W` on the `gemm`
//! crate that read their input in place (one per class, or one per tap, [`per_tap_in_place`]), then
//! one bias (+ residual) (+ ReLU) pass.
//!
//! The bf16 path (`super::run_chunk_in`) is channel-major with prepacked weights and fused
//! epilogues on gemmkit; the same channel-major scheme in fp32 on gemmkit measured 6–10 % slower
//! per frame than this one on AMD EPYC (Zen 5) (README "Speed"): in this orientation the
//! micro-kernel's long side runs along the output channels, which every layer has in multiples of
//! 64, and that outweighs packing the weights per call.

use std::cell::RefCell;

use super::winograd;
use crate::engine::plan::{ClassPlan, ConvPlan, Plan};
use crate::engine::profile::{self, Op, Part};
use crate::engine::winograd::Winograd;
use crate::weights::layout::LAYER_CHANNELS;

/// Sets how the `gemm` crate treats our weights; called whenever an fp32 trunk is built.
///
/// `gemm` turns a row-major `C = X·W` into `Cᵀ = Wᵀ·Xᵀ`, so the weights are the operand it packs
/// into register panels, and by default it repacked them on every call with more than 48 rows of `C`
/// (positions × patches), i.e. every class of every chunk. A trunk's weights (≈34 MB) do not fit the cache,
/// so each chunk re-read and re-wrote all of them: 8 % of a frame's CPU time in `pack_lhs` (perf,
/// AMD EPYC Zen 5). Read in place instead, row `k` of `W` is `cout` contiguous floats, the
/// micro-kernel's 64-wide column; the frame took 7 % less time (median of alternating runs, README
/// "Speed"). The setting is process-wide, so candle's CPU matmuls (the secondary stages, same
/// crate) run under it too: on generic shapes (m 64–4096, k 64–4096, n 32–1024, B row- or
/// column-major, in cache) it measured neither faster nor slower there, and no result changes
/// (packing only copies).
pub fn configure_gemm() {
    gemm::set_lhs_packing_threshold_single_thread(256);
}

/// `dst[m×n] = lhs[m×k] · rhs[k×n]`, all row-major; `lhs` rows are `lhs_rs` apart.
fn matmul(dst: &mut [f32], lhs: &[f32], lhs_rs: usize, rhs: &[f32], m: usize, k: usize, n: usize) {
    matmul_into(dst, lhs, lhs_rs, rhs, m, k, n, false)
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`: adds onto `dst` when `accumulate`, else overwrites it.
#[allow(clippy::too_many_arguments)]
fn matmul_into(
    dst: &mut [f32],
    lhs: &[f32],
    lhs_rs: usize,
    rhs: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= m * n, "gemm dst too small");
    assert!(k == 0 || lhs.len() >= (m - 1) * lhs_rs + k, "gemm lhs too small");
    assert!(rhs.len() >= k * n, "gemm rhs too small");
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above bound every element the call reads or writes: dst rows are n apart
    // (m·n elements), lhs rows lhs_rs apart with k columns, rhs rows n apart with k rows. The slices
    // do not overlap (dst is &mut). Parallelism::None: no threads outlive the call.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            lhs_rs as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Scratch buffers, reused by each worker thread across chunks and frames.
#[derive(Default)]
struct Workspace {
    x: Vec<f32>,
    y: Vec<f32>,
    t: Vec<f32>,
    r: Vec<f32>,
    col: Vec<f32>,
    /// Winograd: transformed input `[point][n][cin]`, products `[point][n][cout]`, a pass's block.
    wv: Vec<f32>,
    wm: Vec<f32>,
    wt: Vec<f32>,
}

fn grow(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

/// Features of `n` patches: `pixels` is `[n][patch²]` gray values (scaled, not ImageNet-normalised).
/// Writes the global-average-pooled output of layer1..4 into `taps[l]` (`[n][C_l]`).
pub fn run_chunk(plan: &Plan, pixels: &[f32], n: usize, taps: [&mut [f32]; 4]) {
    WORKSPACE.with(|ws| run_chunk_in(plan, pixels, n, taps, &mut ws.borrow_mut()));
}

fn run_chunk_in(plan: &Plan, pixels: &[f32], n: usize, taps: [&mut [f32]; 4], ws: &mut Workspace) {
    let pp = plan.patch * plan.patch;
    assert_eq!(pixels.len(), n * pp, "pixel buffer does not hold n patches");
    let Workspace { x, y, t, r, col, wv, wm, wt } = ws;
    let mut wino = WinogradBuffers { v: wv, m: wm, t: wt };

    // Stem and max-pool, a few patches at a time (see `super::patches_per_stem_pass`).
    let c0 = plan.stem.cout;
    let pooled = grow(x, plan.pool.order.len() * n * c0);
    let sub = super::patches_per_stem_pass(plan);
    for first in (0..n).step_by(sub) {
        let ns = sub.min(n - first);
        stem(plan, &pixels[first * pp..(first + ns) * pp], ns, col, y);
        max_pool(plan, &y[..plan.stem.out_h * plan.stem.out_w * ns * c0], ns, pooled, n, first);
    }

    for (bi, b) in plan.blocks.iter().enumerate() {
        let part = Part::Layer(bi / 2);
        let x_in: &[f32] = x;
        let residual: &[f32] = match &b.downsample {
            Some(ds) => {
                conv(ds, x_in, grow(r, ds.out_slots() * n * ds.cout), n, None, false, part, &mut wino);
                &r[..ds.out_slots() * n * ds.cout]
            }
            None => &x_in[..b.conv2.out_slots() * n * b.conv2.cout],
        };
        let t_len = b.conv1.out_slots() * n * b.conv1.cout;
        conv(&b.conv1, x_in, grow(t, t_len), n, None, true, part, &mut wino);
        let y_len = b.conv2.out_slots() * n * b.conv2.cout;
        conv(&b.conv2, &t[..t_len], grow(y, y_len), n, Some(residual), true, part, &mut wino);
        std::mem::swap(x, y);
        if bi % 2 == 1 {
            let l = bi / 2;
            let c = LAYER_CHANNELS[l];
            let _span = profile::span(part, Op::Epilogue);
            gap(&x[..y_len], b.conv2.out_slots(), n, c, &mut taps[l][..n * c]);
        }
    }
}

/// The stem on `n` patches into `out` (`[position][patch][cout]`): im2col from a zero-padded copy
/// of each patch (rows of k contiguous pixels, no branches), one GEMM, then bias map + ReLU.
fn stem(plan: &Plan, pixels: &[f32], n: usize, col: &mut Vec<f32>, out: &mut Vec<f32>) {
    let pp = plan.patch * plan.patch;
    let st = &plan.stem;
    let positions = st.out_h * st.out_w;
    let (k, pad, stride) = (st.k, st.pad, st.stride);
    let padded_w = plan.patch + 2 * pad;
    let span = profile::span(Part::Stem, Op::Gather);
    let pad_len = padded_w * padded_w;
    let stem_col = grow(col, positions * n * st.k2 + n * pad_len);
    let (stem_col, padded) = stem_col.split_at_mut(positions * n * st.k2);
    // Every patch zero-padded first, then the columns written in their own order (position-major),
    // so the writes run sequentially through the buffer. Written patch by patch, each patch's 100
    // rows of 49 values were scattered `n` rows apart.
    padded.fill(0.0);
    for (px, dst) in pixels.chunks_exact(pp).zip(padded.chunks_exact_mut(pad_len)) {
        for (r, src) in px.chunks_exact(plan.patch).enumerate() {
            let start = (r + pad) * padded_w + pad;
            dst[start..start + plan.patch].copy_from_slice(src);
        }
    }
    for (pos, cols) in stem_col.chunks_exact_mut(n * st.k2).enumerate() {
        let (oy, ox) = (pos / st.out_w, pos % st.out_w);
        for (row, src) in cols.chunks_exact_mut(st.k2).zip(padded.chunks_exact(pad_len)) {
            for (ky, dst) in row.chunks_exact_mut(k).enumerate() {
                let start = (oy * stride + ky) * padded_w + ox * stride;
                copy_window_row(dst, &src[start..start + k]);
            }
        }
    }
    drop(span);
    let stem_out = grow(out, positions * n * st.cout);
    let span = profile::span(Part::Stem, Op::Gemm);
    matmul(stem_out, stem_col, st.k2, &st.weight, positions * n, st.k2, st.cout);
    drop(span);
    let _span = profile::span(Part::Stem, Op::Epilogue);
    stem_bias_relu(stem_out, &st.bias_map, n, st.cout);
}

/// One row of a stem window. ResNet-18's is 7 pixels: as a fixed-size move it is two vector moves
/// inline, where `copy_from_slice` of a run-time length is a `memmove` call per row (490 calls a
/// patch).
#[inline(always)]
fn copy_window_row(dst: &mut [f32], src: &[f32]) {
    match (<&mut [f32; 7]>::try_from(&mut *dst), <&[f32; 7]>::try_from(src)) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => dst.copy_from_slice(src),
    }
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn stem_bias_relu(stem_out: &mut [f32], bias_map: &[f32], n: usize, cout: usize) {
    for (out, bias) in stem_out.chunks_exact_mut(n * cout).zip(bias_map.chunks_exact(cout)) {
        for row in out.chunks_exact_mut(cout) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v = (*v + b).max(0.0);
            }
        }
    }
}

/// Max-pool of the stem output of `n` patches into patches `first..first + n` of `pooled`
/// (`[slot][chunk][channel]`, layer1's slot order). Inputs are ≥ 0 after ReLU, so an in-bounds
/// max equals torchvision's −∞-padded max.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn max_pool(plan: &Plan, stem_out: &[f32], n: usize, pooled: &mut [f32], chunk: usize, first: usize) {
    let c0 = plan.stem.cout;
    let _span = profile::span(Part::MaxPool, Op::Epilogue);
    const L: usize = 64;
    let len = n * c0;
    for (slot, win) in plan.pool.windows.iter().enumerate() {
        let out = &mut pooled[(slot * chunk + first) * c0..(slot * chunk + first + n) * c0];
        // 64 values at a time, their maximum held in registers across the window's positions
        // (as in the bf16 pool, where a row updated in memory stalled every load).
        let full = len / L * L;
        for (j, o) in (0..full).step_by(L).zip(out.chunks_exact_mut(L)) {
            let mut acc = [0f32; L];
            for &src in win {
                let row: &[f32; L] = stem_out[src * len + j..src * len + j + L].try_into().expect("64 values");
                for (a, v) in acc.iter_mut().zip(row) {
                    // A plain compare (values are finite) is one vector max; f32::max's NaN rule is not.
                    *a = if *v > *a { *v } else { *a };
                }
            }
            o.copy_from_slice(&acc);
        }
        let tail = &mut out[full..];
        tail.fill(0.0);
        for &src in win {
            for (o, v) in tail.iter_mut().zip(&stem_out[src * len + full..(src + 1) * len]) {
                *o = if *v > *o { *v } else { *o };
            }
        }
    }
}

/// One convolution on its own, as the CPU path runs it inside the trunk (Winograd where the plan
/// has it): `input` is `[in slot][n][cin]`, the result `[out slot][n][cout]`. The GPU kernels'
/// tests compare with it.
pub fn conv_once(p: &ConvPlan, input: &[f32], n: usize, residual: Option<&[f32]>, relu: bool) -> Vec<f32> {
    let mut out = vec![0f32; p.out_slots() * n * p.cout];
    let (mut v, mut m, mut t) = (Vec::new(), Vec::new(), Vec::new());
    let mut wino = WinogradBuffers { v: &mut v, m: &mut m, t: &mut t };
    conv(p, input, &mut out, n, residual, relu, Part::Layer(0), &mut wino);
    out
}

/// A worker's buffers for [`winograd_conv`].
struct WinogradBuffers<'a> {
    v: &'a mut Vec<f32>,
    m: &'a mut Vec<f32>,
    t: &'a mut Vec<f32>,
}

/// One convolution: Winograd's pointwise GEMMs where the plan has them ([`winograd_conv`]), else
/// per class, GEMMs that read the input in place (one for a class whose single tap reads
/// consecutive slots, else one per tap, [`per_tap_in_place`]) into the class's output slots; then
/// bias (+ residual) (+ ReLU) in one pass.
#[allow(clippy::too_many_arguments)]
fn conv(
    p: &ConvPlan,
    input: &[f32],
    out: &mut [f32],
    n: usize,
    residual: Option<&[f32]>,
    relu: bool,
    part: Part,
    wino: &mut WinogradBuffers,
) {
    if let Some(w) = &p.winograd {
        winograd_conv(p, w, input, out, n, residual, relu, part, wino);
        return;
    }
    let (cin, cout) = (p.cin, p.cout);
    for cls in &p.classes {
        let m = cls.n_pos * n;
        let k = cls.n_taps * cin;
        let dst = &mut out[cls.first_slot * n * cout..(cls.first_slot + cls.n_pos) * n * cout];
        match cls.direct {
            Some(base) => {
                let _span = profile::span(part, Op::Gemm);
                matmul(dst, &input[base * n * cin..(base + cls.n_pos) * n * cin], cin, &cls.weight, m, k, cout)
            }
            None => {
                let _span = profile::span(part, Op::Gemm);
                per_tap_in_place(cls, input, dst, n, cin, cout);
            }
        }
    }
    let len = p.out_slots() * n * cout;
    let out = &mut out[..len];
    let _span = profile::span(part, Op::Epilogue);
    super::bias_residual_relu(out, &p.bias, residual.map(|r| &r[..len]), relu);
}

/// A convolution as Winograd GEMMs (`crate::engine::winograd`): the input transformed to the point
/// grid, one `n × cin · cin × cout` GEMM per point, and the output transform with the epilogue.
#[allow(clippy::too_many_arguments)]
fn winograd_conv(
    p: &ConvPlan,
    w: &Winograd,
    input: &[f32],
    out: &mut [f32],
    n: usize,
    residual: Option<&[f32]>,
    relu: bool,
    part: Part,
    b: &mut WinogradBuffers,
) {
    let (cin, cout, points) = (p.cin, p.cout, w.points());
    let g = w.group;
    let out = &mut out[..p.out_slots() * n * cout];
    for first in (0..n).step_by(g) {
        let ng = g.min(n - first);
        let (vs, ms) = (ng * cin, ng * cout);
        let v = grow(b.v, points * vs);
        {
            let _span = profile::span(part, Op::Gather);
            winograd::input_transform(w, input, n * cin, first * cin..(first + ng) * cin, v, b.t);
        }
        let m = grow(b.m, points * ms);
        {
            let _span = profile::span(part, Op::Gemm);
            for (pt, (dst, lhs)) in m.chunks_exact_mut(ms).zip(v.chunks_exact(vs)).enumerate() {
                matmul(dst, lhs, cin, &w.weight[pt * cin * cout..(pt + 1) * cin * cout], ng, cin, cout);
            }
        }
        let _span = profile::span(part, Op::Epilogue);
        let cols = first * cout..(first + ng) * cout;
        winograd::output_transform(w, m, n * cout, cols, &p.bias, residual, relu, out, b.t);
    }
}

/// A class whose taps read scattered input slots, without gathering them: one GEMM per tap
/// (`k = cin`), each reading its input slots in place (`[slot][n][cin]`: a slot's `n` patches are an
/// `n × cin` row-major matrix) and adding onto the class's output. Positions whose every tap reads
/// the slot after the previous position's share one GEMM (`m` = run × `n`).
///
/// It replaced gathering the class's columns (im2col, `k = taps · cin`) and one GEMM: that copied
/// every input value up to nine times (≈ 390 MB per 1020² frame in layer1) and the GEMM then copied
/// the gathered columns again into its packed panels. Timed in isolation on the 2-core Intel Xeon
/// (Emerald Rapids), 192 patches, 9 positions × 9 taps: 1.09 → 0.81 ms at 64 channels, 3.76 → 3.29
/// at 128, 14.8 → 13.3 at 256 (119 → 158 GFLOP/s at 64). The sums are split by tap, so the results
/// move by rounding (≈ 2e-6 relative; the golden tests hold them to 1e-4 of PyTorch's).
fn per_tap_in_place(cls: &ClassPlan, input: &[f32], dst: &mut [f32], n: usize, cin: usize, cout: usize) {
    let taps = cls.n_taps;
    if taps == 0 {
        dst.fill(0.0);
        return;
    }
    let src = |pos: usize, tap: usize| cls.gather[pos * taps + tap];
    let mut p0 = 0;
    while p0 < cls.n_pos {
        let mut len = 1;
        while p0 + len < cls.n_pos && (0..taps).all(|t| src(p0 + len, t) == src(p0, t) + len) {
            len += 1;
        }
        let out = &mut dst[p0 * n * cout..(p0 + len) * n * cout];
        for tap in 0..taps {
            let s = src(p0, tap);
            let w = &cls.weight[tap * cin * cout..(tap + 1) * cin * cout];
            matmul_into(out, &input[s * n * cin..(s + len) * n * cin], cin, w, len * n, cin, cout, tap > 0);
        }
        p0 += len;
    }
}

/// Global average pool: `[slot][n][c]` → `[n][c]`.
fn gap(x: &[f32], slots: usize, n: usize, c: usize, out: &mut [f32]) {
    out.fill(0.0);
    for s in 0..slots {
        for (o, v) in out.iter_mut().zip(&x[s * n * c..(s + 1) * n * c]) {
            *o += v;
        }
    }
    let inv = 1.0 / slots as f32;
    out.iter_mut().for_each(|v| *v *= inv);
}
