//! The bf16 path: activations `[channel][slot][patch]`, so a class of output positions is a
//! row-major `cout × (positions·patches)` block, `C = Wᵀ·X`, whose `Wᵀ` is packed once at load time
//! ([`super::packed`]) and whose bias, residual and ReLU the GEMM applies as it stores (gemmkit's
//! fused epilogue): no pass over an activation happens outside a GEMM except the tap gathers. The
//! stem and max-pool run in f32 (one input channel, 2.8 % of the work); the pool converts to bf16,
//! and global average pooling sums in f32.
//!
//! Where the plan has Winograd GEMMs whose transforms have only ±1 coefficients (layer3's 2×2 maps
//! at 20 px), those run instead (`winograd_conv`): 9 GEMMs for 16 position-taps, the transforms
//! summing in f32 and rounding their outputs to bf16. Larger coefficients amplify those roundings:
//! with layer1's and layer2's maps as Winograd too (then F(3,3) and F(2,3) tiles, whose tables hold
//! 2, 3, ½ and ¼), the error against PyTorch's golden features tripled (`tests/bf16.rs`: layer4
//! 4.5e-2 instead of 1.36e-2, golden cosines 6.0e-3 instead of 1.87e-3), so they keep their
//! classes here.

use std::cell::RefCell;

use gemmkit::{Activation, Bias, MatMut, MatRef, Parallelism, bf16};

use super::packed::{PackedConv, PackedTrunk, PackedWinograd};
use super::winograd;
use crate::engine::plan::{ConvPlan, Plan};
use crate::engine::profile::{self, Op, Part};
use crate::weights::layout::LAYER_CHANNELS;

/// Scratch buffers, reused by each worker thread across chunks and frames.
#[derive(Default)]
struct Workspace {
    x: Vec<bf16>,
    t: Vec<bf16>,
    r: Vec<bf16>,
    col: Vec<bf16>,
    stem_col: Vec<f32>,
    stem_out: Vec<f32>,
    pool_row: Vec<f32>,
    gap: Vec<f32>,
    gemm: gemmkit::Workspace,
    /// Winograd: transformed input `[point][cin][patch]` and products `[point][cout][patch]` of
    /// one pass.
    wv: Vec<bf16>,
    wm: Vec<bf16>,
}

/// A worker's scratch for [`conv`]: the GEMM workspace, and the Winograd pass buffers.
struct ConvScratch<'a> {
    v: &'a mut Vec<bf16>,
    m: &'a mut Vec<bf16>,
    gemm: &'a mut gemmkit::Workspace,
}

fn grow<T: Copy>(v: &mut Vec<T>, len: usize, zero: T) -> &mut [T] {
    if v.len() < len {
        v.resize(len, zero);
    }
    &mut v[..len]
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

/// Bytes of the three activation buffers (`x`, `t`, `r`) per patch: each holds the largest
/// tensor of the trunk.
pub fn activation_bytes_per_patch(plan: &Plan) -> usize {
    let convs = plan.blocks.iter().flat_map(|b| [Some(&b.conv1), Some(&b.conv2), b.downsample.as_ref()]).flatten();
    let largest = convs.map(|c| c.cout * c.out_slots()).fold(plan.stem.cout * plan.pool.order.len(), usize::max);
    3 * largest * std::mem::size_of::<bf16>()
}

/// Features of `n` patches in bf16 (see [`super::CpuTrunk::run_chunk`]).
pub fn run_chunk(plan: &Plan, packed: &PackedTrunk, pixels: &[f32], n: usize, taps: [&mut [f32]; 4]) {
    WORKSPACE.with(|ws| run_chunk_in(plan, packed, pixels, n, taps, &mut ws.borrow_mut()));
}

fn run_chunk_in(
    plan: &Plan,
    packed: &PackedTrunk,
    pixels: &[f32],
    n: usize,
    taps: [&mut [f32]; 4],
    ws: &mut Workspace,
) {
    let pp = plan.patch * plan.patch;
    assert_eq!(pixels.len(), n * pp, "pixel buffer does not hold n patches");
    let Workspace { x, t, r, col, stem_col, stem_out, pool_row, gap: gap_acc, gemm, wv, wm } = ws;

    // Stem and max-pool, a few patches at a time (see `super::patches_per_stem_pass`).
    let slots = plan.pool.order.len();
    let pooled = grow(x, plan.stem.cout * slots * n, bf16::ZERO);
    let sub = super::patches_per_stem_pass(plan);
    for first in (0..n).step_by(sub) {
        let ns = sub.min(n - first);
        let px = &pixels[first * pp..(first + ns) * pp];
        stem(plan, &packed.stem, px, ns, stem_col, stem_out, gemm);
        max_pool(
            plan,
            &stem_out[..plan.stem.cout * plan.stem.out_h * plan.stem.out_w * ns],
            ns,
            pool_row,
            pooled,
            n,
            first,
        );
    }

    let mut b = ConvScratch { v: wv, m: wm, gemm };
    let mut x_slots = slots;
    for (bi, (bp, pb)) in plan.blocks.iter().zip(&packed.blocks).enumerate() {
        let part = Part::Layer(bi / 2);
        let x_in: &[bf16] = x;
        let has_downsample = match (&bp.downsample, &pb.downsample) {
            (Some(ds), Some(pds)) => {
                let out = grow(r, ds.cout * ds.out_slots() * n, bf16::ZERO);
                conv(ds, pds, x_in, x_slots, out, col, n, false, false, &mut b, part);
                true
            }
            _ => false,
        };
        let t_len = bp.conv1.cout * bp.conv1.out_slots() * n;
        conv(&bp.conv1, &pb.conv1, x_in, x_slots, grow(t, t_len, bf16::ZERO), col, n, false, true, &mut b, part);
        // conv2 adds onto the residual where it lies: the downsampled input, or the block's
        // input itself, which conv1 has finished reading (same channels and slots as the output).
        let y_len = bp.conv2.cout * bp.conv2.out_slots() * n;
        let t_slots = bp.conv1.out_slots();
        let residual = if has_downsample { &mut r[..y_len] } else { &mut x[..y_len] };
        conv(&bp.conv2, &pb.conv2, &t[..t_len], t_slots, residual, col, n, true, true, &mut b, part);
        if has_downsample {
            std::mem::swap(x, r);
        }
        x_slots = bp.conv2.out_slots();
        if bi % 2 == 1 {
            let l = bi / 2;
            let _span = profile::span(part, Op::Epilogue);
            gap(
                &x[..y_len],
                x_slots,
                n,
                LAYER_CHANNELS[l],
                grow(gap_acc, GAP_BLOCK * n, 0.0),
                &mut taps[l][..n * LAYER_CHANNELS[l]],
            );
        }
    }
}

/// The stem as one channel-major GEMM on `n` patches, `stem_out = [cout][position·patch]`: the
/// patches go patch-minor (`[y][x][patch]`, zero padded), so every im2col row is a run of `n`
/// contiguous pixels; `Wᵀ` is packed at load time.
fn stem(
    plan: &Plan,
    weight: &gemmkit::PackedLhs<f32>,
    pixels: &[f32],
    n: usize,
    stem_col: &mut Vec<f32>,
    stem_out: &mut Vec<f32>,
    gemm: &mut gemmkit::Workspace,
) {
    let st = &plan.stem;
    let positions = st.out_h * st.out_w;
    let (k, pad, stride) = (st.k, st.pad, st.stride);
    let padded_w = plan.patch + 2 * pad;
    let m = positions * n;
    let span = profile::span(Part::Stem, Op::Gather);
    let buf = grow(stem_col, st.k2 * m + padded_w * padded_w * n, 0.0);
    let (cols, padded) = buf.split_at_mut(st.k2 * m);
    padded.fill(0.0);
    for (i, px) in pixels.chunks_exact(plan.patch * plan.patch).enumerate() {
        for (r, src) in px.chunks_exact(plan.patch).enumerate() {
            let start = (r + pad) * padded_w + pad;
            for (c, v) in src.iter().enumerate() {
                padded[(start + c) * n + i] = *v;
            }
        }
    }
    for ky in 0..k {
        for kx in 0..k {
            let row = &mut cols[(ky * k + kx) * m..(ky * k + kx + 1) * m];
            for (pos, dst) in row.chunks_exact_mut(n).enumerate() {
                let (oy, ox) = (pos / st.out_w, pos % st.out_w);
                let src = ((oy * stride + ky) * padded_w + ox * stride + kx) * n;
                dst.copy_from_slice(&padded[src..src + n]);
            }
        }
    }
    drop(span);
    let out = grow(stem_out, st.cout * m, 0.0);
    let _span = profile::span(Part::Stem, Op::Gemm);
    gemmkit::gemm_packed_a_with(
        gemm,
        1.0,
        weight,
        MatRef::from_row_major(cols, st.k2, m),
        0.0,
        MatMut::from_row_major(out, st.cout, m),
        Parallelism::Serial,
    );
}

/// Bias map + ReLU + 3×3/2 max-pool in one pass over the stem output of `n` patches, into
/// patches `first..first + n` of `pooled` (`[channel][slot][chunk]`, layer1's slot order). After
/// ReLU every value is ≥ 0, so an in-bounds max equals torchvision's −∞-padded max, and
/// max(relu(v + b)) = relu(max(v + b)).
///
/// Sixty-four or sixteen patches at a time, the window's maximum held in registers across its
/// positions. It was kept in a row in memory, updated per position by a compare and a masked
/// store; the next position's load of that row then waited on the masked store, which cannot
/// forward (perf: 40 % of the pool's samples on that load). On the 2-core Intel Xeon (Emerald
/// Rapids) the pool took 9.2–10.1 thread-ms per 1020² frame that way and takes 4.4–4.5 now (`bench
/// --layers`, bf16); the Zen 5 measured 10.2 the old way.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn max_pool(
    plan: &Plan,
    stem_out: &[f32],
    n: usize,
    pool_row: &mut Vec<f32>,
    pooled: &mut [bf16],
    chunk: usize,
    first: usize,
) {
    let st = &plan.stem;
    let (c0, m) = (st.cout, st.out_h * st.out_w * n);
    let slots = plan.pool.order.len();
    let window_max = grow(pool_row, n, 0.0);
    let _span = profile::span(Part::MaxPool, Op::Epilogue);
    for (c, (src, dst)) in stem_out.chunks_exact(m).zip(pooled.chunks_exact_mut(slots * chunk)).enumerate() {
        let bias = |p: usize| st.bias_map[p * c0 + c];
        for (win, out) in plan.pool.windows.iter().zip(dst.chunks_exact_mut(chunk)) {
            let out = &mut out[first..first + n];
            let mut j = 0;
            while j + 64 <= n {
                pool_block::<64>(win, src, n, j, &bias, &mut out[j..j + 64]);
                j += 64;
            }
            while j + 16 <= n {
                pool_block::<16>(win, src, n, j, &bias, &mut out[j..j + 16]);
                j += 16;
            }
            // The last patches of a chunk that is not a multiple of 16.
            if j < n {
                let tail = &mut window_max[..n - j];
                tail.fill(0.0);
                for &p in win {
                    let b = bias(p);
                    for (o, v) in tail.iter_mut().zip(&src[p * n + j..(p + 1) * n]) {
                        let t = v + b;
                        *o = if t > *o { t } else { *o };
                    }
                }
                to_bf16_finite(&mut out[j..], tail);
            }
        }
    }
}

/// One window's pooled values of `L` patches from `j` on (see [`max_pool`]): the maximum stays in
/// `L / 16` registers, which also hides the max's latency across the window's positions.
#[inline(always)]
fn pool_block<const L: usize>(
    win: &[usize],
    src: &[f32],
    n: usize,
    j: usize,
    bias: &impl Fn(usize) -> f32,
    out: &mut [bf16],
) {
    let mut acc = [0f32; L];
    for &p in win {
        let b = bias(p);
        let row: &[f32; L] = src[p * n + j..p * n + j + L].try_into().expect("L values");
        for (a, v) in acc.iter_mut().zip(row) {
            // A plain compare (the values are finite) compiles to one vector max; f32::max's NaN
            // rule does not.
            let t = v + b;
            *a = if t > *a { t } else { *a };
        }
    }
    to_bf16_finite(out, &acc);
}

/// One convolution, channel-major: per class, in blocks of output columns (`super::gather_block`),
/// gather the block's columns (unless the input can be read in place), then one GEMM
/// `C = act(Wᵀ·X + bias (+ residual))` into those columns of the class's output slots. When every
/// class reads the whole input in place, the classes' weights are stacked (`PackedConv::whole`)
/// and the convolution is one GEMM.
#[allow(clippy::too_many_arguments)]
fn conv(
    p: &ConvPlan,
    packed: &PackedConv,
    input: &[bf16],
    in_slots: usize,
    out: &mut [bf16],
    col: &mut Vec<bf16>,
    n: usize,
    onto_residual: bool,
    relu: bool,
    bufs: &mut ConvScratch,
    part: Part,
) {
    if let Some(w) = &packed.winograd {
        winograd_conv(p, w, input, in_slots, out, n, onto_residual, relu, bufs, part);
        return;
    }
    let gemm = &mut *bufs.gemm;
    let (cin, cout) = (p.cin, p.cout);
    let out_slots = p.out_slots();
    let len = cout * out_slots * n;
    let out = &mut out[..len];
    // With `onto_residual`, `out` holds the residual and enters as the GEMM's C operand (beta = 1):
    // the sum and ReLU happen as the GEMM stores, after the bias, exactly torchvision's
    // relu(conv2 + bn2 + identity).
    let beta = if onto_residual { bf16::ONE } else { bf16::ZERO };
    let act = relu.then_some(Activation::Relu);
    let (in_rs, out_rs) = ((in_slots * n) as isize, (out_slots * n) as isize);
    // The whole input, `cin·in_slots × n`, for classes that read it in place.
    let whole_input = || MatRef::from_row_major(&input[..cin * in_slots * n], cin * in_slots, n);
    if let Some(w) = &packed.whole {
        let _span = profile::span(part, Op::Gemm);
        let c = MatMut::from_row_major(out, cout * out_slots, n);
        let bias = Some(Bias::PerRow(&packed.whole_bias[..]));
        gemmkit::gemm_packed_a_fused_with(gemm, bf16::ONE, w, whole_input(), beta, c, bias, act, Parallelism::Serial);
        return;
    }
    for (cls, pc) in p.classes.iter().zip(&packed.classes) {
        let m_class = cls.n_pos * n;
        let block = match (cls.direct, pc.in_place) {
            (None, false) => super::gather_block(cls.n_taps * cin, std::mem::size_of::<bf16>()).min(m_class),
            _ => m_class,
        };
        for c0 in (0..m_class).step_by(block) {
            let c1 = (c0 + block).min(m_class);
            let m = c1 - c0;
            let c = MatMut::new(&mut out[cls.first_slot * n + c0..], cout, m, out_rs, 1);
            let b = match cls.direct {
                _ if pc.in_place => whole_input(),
                Some(base) => MatRef::new(&input[base * n + c0..], cin, m, in_rs, 1),
                None => {
                    let _span = profile::span(part, Op::Gather);
                    let k = cls.n_taps * cin;
                    let cols = grow(col, k * m, bf16::ZERO);
                    let (p0, p1) = (c0 / n, (c1 - 1) / n + 1);
                    for tap in 0..cls.n_taps {
                        for ch in 0..cin {
                            let row = &mut cols[(tap * cin + ch) * m..(tap * cin + ch + 1) * m];
                            for pos in p0..p1 {
                                let s = cls.gather[pos * cls.n_taps + tap];
                                let start = (ch * in_slots + s) * n;
                                let (a, b) = ((pos * n).max(c0), ((pos + 1) * n).min(c1));
                                row[a - c0..b - c0].copy_from_slice(&input[start + a - pos * n..start + b - pos * n]);
                            }
                        }
                    }
                    MatRef::from_row_major(cols, k, m)
                }
            };
            let _span = profile::span(part, Op::Gemm);
            let bias = Some(Bias::PerRow(&packed.bias[..]));
            gemmkit::gemm_packed_a_fused_with(gemm, bf16::ONE, &pc.w, b, beta, c, bias, act, Parallelism::Serial);
        }
    }
}

/// A convolution as Winograd GEMMs (`crate::engine::winograd`), a pass of `w.group` patches at a
/// time: the input transformed to the point grid (bf16), one `cout × cin · cin × patches` GEMM per
/// point with the transformed weights packed at load time, and the output transform with the bias,
/// residual and ReLU. Both transforms are written out in 2D (≤ 4 terms a row on 2×2 maps) and run
/// a channel at a time over the pass's patches.
#[allow(clippy::too_many_arguments)]
fn winograd_conv(
    p: &ConvPlan,
    w: &PackedWinograd,
    input: &[bf16],
    in_slots: usize,
    out: &mut [bf16],
    n: usize,
    onto_residual: bool,
    relu: bool,
    b: &mut ConvScratch,
    part: Part,
) {
    let (cin, cout, points) = (p.cin, p.cout, w.points.len());
    assert_eq!(w.output_terms.len(), p.out_slots(), "one output transform row per output slot");
    for first in (0..n).step_by(w.group) {
        let ng = w.group.min(n - first);
        let patches = first..first + ng;
        let v = grow(b.v, points * cin * ng, bf16::ZERO);
        {
            let _span = profile::span(part, Op::Gather);
            winograd::input_transform_bf16(&w.input_terms, input, in_slots, n, patches.clone(), cin, v);
        }
        let m = grow(b.m, points * cout * ng, bf16::ZERO);
        {
            let _span = profile::span(part, Op::Gemm);
            for (u, (vp, mp)) in w.points.iter().zip(v.chunks_exact(cin * ng).zip(m.chunks_exact_mut(cout * ng))) {
                let (rhs, dst) = (MatRef::from_row_major(vp, cin, ng), MatMut::from_row_major(mp, cout, ng));
                gemmkit::gemm_packed_a_with(b.gemm, bf16::ONE, u, rhs, bf16::ZERO, dst, Parallelism::Serial);
            }
        }
        let _span = profile::span(part, Op::Epilogue);
        winograd::output_transform_bf16(&w.output_terms, m, n, patches, &p.bias, onto_residual, relu, out);
    }
}

/// Global average pool: `[c][slot][n]` → `[n][c]` in f32, `GAP_BLOCK` channels at a time so the
/// transposed stores fill whole cache lines.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn gap(x: &[bf16], slots: usize, n: usize, c: usize, acc: &mut [f32], out: &mut [f32]) {
    let inv = 1.0 / slots as f32;
    let acc = &mut acc[..GAP_BLOCK * n];
    for (blk, planes) in x[..c * slots * n].chunks(GAP_BLOCK * slots * n).enumerate() {
        let chans = planes.len() / (slots * n);
        acc.fill(0.0);
        for (ch, plane) in planes.chunks_exact(slots * n).enumerate() {
            let a = &mut acc[ch * n..(ch + 1) * n];
            for row in plane.chunks_exact(n) {
                for (a, v) in a.iter_mut().zip(row) {
                    *a += v.to_f32();
                }
            }
        }
        for (i, dst) in out.chunks_exact_mut(c).take(n).enumerate() {
            for (ch, d) in dst[blk * GAP_BLOCK..blk * GAP_BLOCK + chans].iter_mut().enumerate() {
                *d = acc[ch * n + i] * inv;
            }
        }
    }
}

const GAP_BLOCK: usize = 16;

/// `bf16::from_f32` (round to nearest, ties to even) for finite values, in integer operations
/// that vectorise ([`winograd::Value`]); `half`'s conversion branches on NaN and converts one value
/// at a time.
#[inline]
fn to_bf16_finite(dst: &mut [bf16], src: &[f32]) {
    for (o, v) in dst.iter_mut().zip(src) {
        *o = <bf16 as winograd::Value>::put(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One convolution through `conv` with its weights packed as given, on a fixed random input.
    fn run_conv(p: &ConvPlan, packed: &PackedConv, in_slots: usize, n: usize, residual: bool) -> Vec<f32> {
        let mut s = 0x9E37_79B9u32;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            bf16::from_f32((s >> 8) as f32 / (1u32 << 24) as f32 - 0.3)
        };
        let input: Vec<bf16> = (0..p.cin * in_slots * n).map(|_| rnd()).collect();
        let mut out: Vec<bf16> = (0..p.cout * p.out_slots() * n).map(|_| rnd()).collect();
        let (mut v, mut m, mut gemm) = (Vec::new(), Vec::new(), gemmkit::Workspace::default());
        let mut bufs = ConvScratch { v: &mut v, m: &mut m, gemm: &mut gemm };
        conv(p, packed, &input, in_slots, &mut out, &mut Vec::new(), n, residual, true, &mut bufs, Part::Layer(0));
        out.iter().map(|v| v.to_f32()).collect()
    }

    #[test]
    fn convolutions_read_in_place_or_whole_equal_the_gathered_ones() {
        let net = crate::engine::network::Network::from_state_dict(&crate::weights::random_resnet18(3)).expect("net");
        let plan = Plan::new(&net, 20).expect("plan");
        // layer3's second 3×3 (2×2 → 2×2: every class reads all four slots, so the whole
        // convolution is one GEMM) and layer4's first (2×2 → 1×1: one class, read in place).
        let (l3, l4) = (&plan.blocks[4], &plan.blocks[6]);
        let cases = [(&l3.conv2, l3.conv1.out_slots(), true), (&l4.conv1, l3.conv2.out_slots(), false)];
        for (p, in_slots, residual) in cases {
            let (fast, plain) = (PackedConv::new(p, in_slots, true, false), PackedConv::new(p, in_slots, false, false));
            assert!(plain.whole.is_none() && plain.classes.iter().all(|c| !c.in_place));
            assert!(fast.whole.is_some() && fast.classes.is_empty(), "every class in place: one GEMM");
            let n = 37;
            let (a, b) = (run_conv(p, &fast, in_slots, n, residual), run_conv(p, &plain, in_slots, n, residual));
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            // Only the order of the f32 sums differs: at most one bf16 step (2⁻⁸ relative) apart.
            assert!(worst <= scale / 128.0, "max |Δ| {worst} of {scale}");
            assert!(scale > 0.0);
        }
    }

    /// layer3's second 3×3 (2×2 maps) as Winograd GEMMs against its gathered classes: 130 patches
    /// (a full pass of 96 and a partial one), onto the residual. The classes round once (the
    /// output); Winograd also rounds the transformed input and the products. Measured worst 7.4e-3
    /// of the largest output (Intel Xeon), under two bf16 steps (2⁻⁸ relative); the bound is 2⁻⁶.
    /// layer1's 5×5 maps (an F(5,3) tile per axis) stay on their classes.
    #[test]
    fn winograd_convolutions_equal_the_classes_within_bf16_steps() {
        let net = crate::engine::network::Network::from_state_dict(&crate::weights::random_resnet18(5)).expect("net");
        let plan = Plan::new(&net, 20).expect("plan");
        let l1 = &plan.blocks[0].conv2;
        assert!(l1.winograd.is_some() && PackedConv::new(l1, l1.out_slots(), true, true).winograd.is_none());
        let l3 = &plan.blocks[4];
        let (p, in_slots) = (&l3.conv2, l3.conv1.out_slots());
        let (wino, plain) = (PackedConv::new(p, in_slots, true, true), PackedConv::new(p, in_slots, false, false));
        assert_eq!(wino.winograd.as_ref().map(|w| w.points.len()), Some(9));
        let n = 130;
        let (a, b) = (run_conv(p, &wino, in_slots, n, true), run_conv(p, &plain, in_slots, n, true));
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        eprintln!("bf16 Winograd against classes: max |Δ| = {:.2e} of the largest output", worst / scale);
        assert!(worst <= scale / 64.0, "max |Δ| {worst} of {scale}");
        assert!(scale > 0.0 && a.iter().any(|&v| v > 0.0) && a.contains(&0.0), "ReLU and values");
    }

    #[test]
    fn the_vectorised_conversion_rounds_like_half_for_finite_values() {
        // Ties (low half exactly 0x8000, odd and even), values just either side of a tie, the
        // largest finite f32 (rounds to infinity in both), subnormals, zero and a spread of values.
        let mut v: Vec<f32> =
            [0x3F80_8000u32, 0x3F81_8000, 0x3F80_7FFF, 0x3F80_8001, 0x7F7F_FFFF, 0x0000_8000, 0x0001_8000, 0]
                .iter()
                .map(|&b| f32::from_bits(b))
                .collect();
        let mut s = 0x1234_5678u32;
        for _ in 0..100_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let x = f32::from_bits(s);
            if x.is_finite() {
                v.push(x);
            }
        }
        let mut ours = vec![bf16::ZERO; v.len()];
        to_bf16_finite(&mut ours, &v);
        for (x, o) in v.iter().zip(&ours) {
            assert_eq!(o.to_bits(), bf16::from_f32(*x).to_bits(), "{x:e} ({:#x})", x.to_bits());
        }
    }
}
