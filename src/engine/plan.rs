//! The trunk compiled for one patch size: every convolution becomes a few GEMMs that never multiply
//! zero padding.
//!
//! On a 20×20 patch the feature maps are 10×10, 5×5, 3×3, 2×2 and 1×1, where most 3×3 taps fall on
//! padding (at 1×1 only the centre tap is real). Output positions whose in-bounds taps are the same
//! rectangle form a *class*; a class is one GEMM whose K covers only those taps, with the weights for
//! them packed once here. This is exact: the skipped products are products with zero.
//!
//! Activations are laid out `[slot][patch][channel]`. A tensor's `order[slot]` is the spatial index
//! (y·w + x) stored in that slot; each producer chooses an order in which its classes are contiguous,
//! so a class's GEMM writes straight into its output slots. A residual sum needs both operands in the
//! same order, so a block's conv2 (and its downsample) adopt the order of the tensor they are added to.

use super::EngineError;
use super::network::{FoldedConv, Network};
use super::winograd::Winograd;

/// A 3×3 convolution runs as Winograd GEMMs (fp32 CPU path) when its point grid multiplies at most
/// this fraction of the padding-free classes' position-taps: the transforms cost the rest. Measured
/// on the 2-core Intel Xeon (`bench`, fp32, alternating rounds): at 20 px, 5×5 maps (81/169 = 0.48)
/// and 3×3 (25/49 = 0.51) took the frame from 231 to 213 ms; at 32 px, admitting layer2's 4×4 maps
/// (64/100 = 0.64) beside layer1's 8×8 (0.35) gave 142.4 against 147.6 ms (4 rounds), 150.4 against
/// 159.6 with neither (3 rounds). At 2×2 maps the Toeplitz form (9/16 = 0.56) took the 20 px frame
/// from 207.5 to 189.4 ms. Those were F(3,3) and F(2,3) tiles; with tiles up to F(5,3) the 5×5
/// maps take 49 points (0.29), the 8×8 144 (0.30) and the 4×4 36 (0.36).
const WINOGRAD_MAX_FRACTION: f64 = 0.75;

/// A Winograd pass's transformed input and products together stay within this per worker thread.
/// It bounds the memory that large maps would take (layer1 at 128 px patches: 2,116 points, 66 MiB
/// at 64 patches) and leaves those maps their classes: at 20 and 32 px every Winograd map passes 96
/// patches at a time (layer1: 2.3 and 6.8 MiB), at 64 px layer1's 16×16 maps 28. Measured at 64 px
/// with F(3,3) and F(2,3) tiles (`bench --patch 64`, 3 alternating rounds, Intel Xeon): classes only
/// 193.4 ms per frame, Winograd in passes of 20 187.3, in passes of 64 (25 MiB) 180.0.
const WINOGRAD_PASS_BYTES: usize = 8 << 20;

const WINOGRAD: (f64, usize) = (WINOGRAD_MAX_FRACTION, WINOGRAD_PASS_BYTES);

/// The valid kernel-tap interval `[lo, hi)` along one axis for output coordinate `o`.
fn tap_range(o: usize, stride: usize, pad: usize, k: usize, len: usize) -> (usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let lo = (-start).max(0) as usize;
    let hi = (len as isize - start).min(k as isize).max(0) as usize;
    (lo, hi.max(lo))
}

fn out_len(len: usize, k: usize, stride: usize, pad: usize) -> usize {
    (len + 2 * pad - k) / stride + 1
}

/// Class key of an output position: its valid tap rectangle.
type ClassKey = (usize, usize, usize, usize);

#[derive(Clone, Copy)]
struct ConvGeom {
    k: usize,
    stride: usize,
    pad: usize,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
}

impl ConvGeom {
    fn of(c: &FoldedConv, in_h: usize, in_w: usize) -> Self {
        Self {
            k: c.k,
            stride: c.stride,
            pad: c.pad,
            in_h,
            in_w,
            out_h: out_len(in_h, c.k, c.stride, c.pad),
            out_w: out_len(in_w, c.k, c.stride, c.pad),
        }
    }

    fn key(&self, spatial: usize) -> ClassKey {
        let (oy, ox) = (spatial / self.out_w, spatial % self.out_w);
        let (y0, y1) = tap_range(oy, self.stride, self.pad, self.k, self.in_h);
        let (x0, x1) = tap_range(ox, self.stride, self.pad, self.k, self.in_w);
        (y0, y1, x0, x1)
    }

    /// Output positions sorted so that each class is contiguous (row-major inside a class).
    fn class_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.out_h * self.out_w).collect();
        order.sort_by_key(|&s| self.key(s));
        order
    }
}

/// One GEMM: the output slots `first_slot..first_slot + n_pos` that share a tap rectangle.
#[derive(Clone, Debug)]
pub struct ClassPlan {
    pub first_slot: usize,
    pub n_pos: usize,
    pub n_taps: usize,
    /// `[n_pos][n_taps]`: the input slot each (position, tap) reads.
    pub gather: Vec<usize>,
    /// When the class reads one tap from consecutive input slots, the GEMM reads the input in place.
    pub direct: Option<usize>,
    /// `[n_taps · cin][cout]`, row-major, rows ordered (tap, input channel) like the gathered columns.
    pub weight: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct ConvPlan {
    pub cin: usize,
    pub cout: usize,
    pub out_h: usize,
    pub out_w: usize,
    /// slot → spatial index of the output.
    pub order: Vec<usize>,
    pub classes: Vec<ClassPlan>,
    pub bias: Vec<f32>,
    /// Multiply-adds per patch actually performed.
    pub macs: usize,
    /// Gathered-column floats per patch (workspace sizing).
    pub col_len: usize,
    /// The same convolution as Winograd GEMMs, where that multiplies less ([`Winograd::plan`]):
    /// the fp32 CPU path runs it, the bf16 path only where its transforms have ±1 coefficients
    /// ([`Winograd::unit_coefficients`]); the GPU kernels run the classes.
    pub winograd: Option<Winograd>,
}

impl ConvPlan {
    pub fn out_slots(&self) -> usize {
        self.order.len()
    }

    /// One convolution planned on its own, its input stored row-major (slot = y·w + x): for tests
    /// that run a single convolution of any shape through the CPU path and the GPU kernels. Classes
    /// only (the GPU kernels' reference), or with `winograd`, Winograd wherever the shape allows it
    /// (3×3, stride 1, pad 1, maps of 2 or more), multiplying less or not.
    pub fn standalone(conv: &FoldedConv, in_h: usize, in_w: usize, winograd: bool) -> Result<Self, EngineError> {
        let in_order: Vec<usize> = (0..in_h * in_w).collect();
        let limits = if winograd { (f64::INFINITY, usize::MAX) } else { (0.0, 0) };
        Self::build(conv, in_h, in_w, &in_order, None, limits)
    }

    fn build(
        conv: &FoldedConv,
        in_h: usize,
        in_w: usize,
        in_order: &[usize],
        out_order: Option<Vec<usize>>,
        (winograd_max_fraction, winograd_pass_bytes): (f64, usize),
    ) -> Result<Self, EngineError> {
        let g = ConvGeom::of(conv, in_h, in_w);
        let order = out_order.unwrap_or_else(|| g.class_order());
        if order.len() != g.out_h * g.out_w {
            return Err(EngineError::Plan(format!("order has {} slots, expected {}", order.len(), g.out_h * g.out_w)));
        }
        let mut in_slot = vec![usize::MAX; in_h * in_w];
        for (slot, &sp) in in_order.iter().enumerate() {
            in_slot[sp] = slot;
        }
        let mut classes: Vec<ClassPlan> = Vec::new();
        let mut seen: Vec<ClassKey> = Vec::new();
        let (mut macs, mut col_len) = (0, 0);
        let mut slot = 0;
        while slot < order.len() {
            let key = g.key(order[slot]);
            if seen.contains(&key) {
                return Err(EngineError::Plan(format!("class {key:?} is not contiguous in the requested order")));
            }
            seen.push(key);
            let end = (slot..order.len()).find(|&s| g.key(order[s]) != key).unwrap_or(order.len());
            let (y0, y1, x0, x1) = key;
            let taps: Vec<(usize, usize)> = (y0..y1).flat_map(|ky| (x0..x1).map(move |kx| (ky, kx))).collect();
            let mut gather = Vec::with_capacity((end - slot) * taps.len());
            for &sp in &order[slot..end] {
                let (oy, ox) = (sp / g.out_w, sp % g.out_w);
                for &(ky, kx) in &taps {
                    let iy = oy * g.stride + ky - g.pad;
                    let ix = ox * g.stride + kx - g.pad;
                    let s = in_slot[iy * in_w + ix];
                    if s == usize::MAX {
                        return Err(EngineError::Plan("input order does not cover the input".into()));
                    }
                    gather.push(s);
                }
            }
            let direct = (taps.len() == 1 && gather.windows(2).all(|w| w[1] == w[0] + 1)).then(|| gather[0]);
            let mut weight = Vec::with_capacity(taps.len() * conv.cin * conv.cout);
            for &(ky, kx) in &taps {
                for ci in 0..conv.cin {
                    weight.extend((0..conv.cout).map(|co| conv.w(co, ci, ky, kx)));
                }
            }
            let n_pos = end - slot;
            macs += n_pos * taps.len() * conv.cin * conv.cout;
            if direct.is_none() {
                col_len += n_pos * taps.len() * conv.cin;
            }
            classes.push(ClassPlan { first_slot: slot, n_pos, n_taps: taps.len(), gather, direct, weight });
            slot = end;
        }
        let position_taps = macs / (conv.cin * conv.cout).max(1);
        let winograd = (g.out_h == in_h && g.out_w == in_w)
            .then(|| {
                Winograd::plan(
                    conv,
                    in_h,
                    in_w,
                    in_order,
                    &order,
                    position_taps,
                    winograd_max_fraction,
                    winograd_pass_bytes,
                )
            })
            .flatten();
        Ok(Self {
            cin: conv.cin,
            cout: conv.cout,
            out_h: g.out_h,
            out_w: g.out_w,
            order,
            classes,
            bias: conv.bias.clone(),
            macs,
            col_len,
            winograd,
        })
    }
}

/// conv1 (+ folded bn1) on the gray patch, as one GEMM over a full im2col (the stem is 2% of the
/// work; its padding waste is small), plus the per-position normalisation correction.
#[derive(Clone, Debug)]
pub struct StemPlan {
    pub k: usize,
    pub k2: usize,
    pub stride: usize,
    pub pad: usize,
    pub cout: usize,
    pub out_h: usize,
    pub out_w: usize,
    /// `[k²][cout]`.
    pub weight: Vec<f32>,
    /// `[pos][cout]`: folded bias minus the in-bounds taps' normalisation shift.
    pub bias_map: Vec<f32>,
    pub macs: usize,
}

/// 3×3 stride-2 max-pool (pad 1) over the stem output; writes in layer1's order.
#[derive(Clone, Debug)]
pub struct PoolPlan {
    pub out_h: usize,
    pub out_w: usize,
    /// slot → spatial.
    pub order: Vec<usize>,
    /// `[slot]`: the stem positions in the window.
    pub windows: Vec<Vec<usize>>,
}

#[derive(Clone, Debug)]
pub struct BlockPlan {
    pub conv1: ConvPlan,
    pub conv2: ConvPlan,
    pub downsample: Option<ConvPlan>,
}

/// The whole trunk for `patch`×`patch` inputs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub patch: usize,
    pub stem: StemPlan,
    pub pool: PoolPlan,
    /// layer l = blocks[2l], blocks[2l+1].
    pub blocks: Vec<BlockPlan>,
}

/// Smallest and largest supported patch edge in pixels.
pub const PATCH_MIN: usize = 8;
pub const PATCH_MAX: usize = 256;

impl Plan {
    pub fn new(net: &Network, patch: usize) -> Result<Self, EngineError> {
        if !(PATCH_MIN..=PATCH_MAX).contains(&patch) {
            return Err(EngineError::PatchSize(patch));
        }
        let stem = stem_plan(net, patch);
        let (ph, pw) = (out_len(stem.out_h, 3, 2, 1), out_len(stem.out_w, 3, 2, 1));
        // Layer1's residual is the pool output, so the pool writes in layer1's class order.
        let l1 = &net.layers[0][0].conv1;
        let pool_order = ConvGeom::of(l1, ph, pw).class_order();
        let pool = pool_plan(stem.out_h, stem.out_w, ph, pw, pool_order);
        let mut blocks = Vec::with_capacity(8);
        let (mut h, mut w, mut order) = (ph, pw, pool.order.clone());
        for layer in &net.layers {
            for b in layer {
                let conv1 = ConvPlan::build(&b.conv1, h, w, &order, None, WINOGRAD)?;
                let conv2_order = if b.downsample.is_none() { Some(order.clone()) } else { None };
                let conv2 = ConvPlan::build(&b.conv2, conv1.out_h, conv1.out_w, &conv1.order, conv2_order, WINOGRAD)?;
                let downsample = match &b.downsample {
                    Some(d) => Some(ConvPlan::build(d, h, w, &order, Some(conv2.order.clone()), WINOGRAD)?),
                    None => None,
                };
                (h, w, order) = (conv2.out_h, conv2.out_w, conv2.order.clone());
                blocks.push(BlockPlan { conv1, conv2, downsample });
            }
        }
        Ok(Self { patch, stem, pool, blocks })
    }

    /// Multiply-adds per patch this plan performs.
    pub fn macs_per_patch(&self) -> usize {
        self.stem.macs
            + self
                .blocks
                .iter()
                .map(|b| b.conv1.macs + b.conv2.macs + b.downsample.as_ref().map_or(0, |d| d.macs))
                .sum::<usize>()
    }

    /// Multiply-adds per patch in the fp32 CPU path's GEMMs: Winograd's where a convolution has it.
    pub fn fp32_cpu_macs_per_patch(&self) -> usize {
        let conv = |p: &ConvPlan| p.winograd.as_ref().map_or(p.macs, |w| w.macs);
        self.stem.macs
            + self
                .blocks
                .iter()
                .map(|b| conv(&b.conv1) + conv(&b.conv2) + b.downsample.as_ref().map_or(0, conv))
                .sum::<usize>()
    }

    /// Multiply-adds per patch of the unmodified RGB network, padding included (for comparison).
    pub fn dense_macs_per_patch(&self, net: &Network) -> usize {
        let mut total = self.stem.out_h * self.stem.out_w * 3 * self.stem.k2 * self.stem.cout;
        for (b, nb) in self.blocks.iter().zip(net.layers.iter().flatten()) {
            let dense = |p: &ConvPlan, c: &FoldedConv| p.out_h * p.out_w * c.cin * c.cout * c.k * c.k;
            total += dense(&b.conv1, &nb.conv1) + dense(&b.conv2, &nb.conv2);
            if let (Some(p), Some(c)) = (&b.downsample, &nb.downsample) {
                total += dense(p, c);
            }
        }
        total
    }

    /// Spatial size after each layer (`[layer1, layer2, layer3, layer4]`).
    pub fn layer_sizes(&self) -> [(usize, usize); 4] {
        std::array::from_fn(|l| (self.blocks[2 * l + 1].conv2.out_h, self.blocks[2 * l + 1].conv2.out_w))
    }
}

fn stem_plan(net: &Network, patch: usize) -> StemPlan {
    let c = &net.stem.conv;
    let k2 = c.k * c.k;
    let (oh, ow) = (out_len(patch, c.k, c.stride, c.pad), out_len(patch, c.k, c.stride, c.pad));
    let mut bias_map = Vec::with_capacity(oh * ow * c.cout);
    let mut macs = 0;
    for oy in 0..oh {
        for ox in 0..ow {
            let mut inside = Vec::with_capacity(k2);
            for ky in 0..c.k {
                for kx in 0..c.k {
                    let iy = (oy * c.stride + ky) as isize - c.pad as isize;
                    let ix = (ox * c.stride + kx) as isize - c.pad as isize;
                    let ok = iy >= 0 && ix >= 0 && (iy as usize) < patch && (ix as usize) < patch;
                    if ok {
                        inside.push(ky * c.k + kx);
                    }
                }
            }
            macs += k2 * c.cout;
            for co in 0..c.cout {
                let s: f64 = inside.iter().map(|&t| net.stem.shift[co * k2 + t] as f64).sum();
                bias_map.push((c.bias[co] as f64 - s) as f32);
            }
        }
    }
    let mut weight = vec![0f32; k2 * c.cout];
    for co in 0..c.cout {
        for t in 0..k2 {
            weight[t * c.cout + co] = c.weight[co * k2 + t];
        }
    }
    StemPlan { k: c.k, k2, stride: c.stride, pad: c.pad, cout: c.cout, out_h: oh, out_w: ow, weight, bias_map, macs }
}

fn pool_plan(in_h: usize, in_w: usize, out_h: usize, out_w: usize, order: Vec<usize>) -> PoolPlan {
    let windows = order
        .iter()
        .map(|&sp| {
            let (oy, ox) = (sp / out_w, sp % out_w);
            let (y0, y1) = tap_range(oy, 2, 1, 3, in_h);
            let (x0, x1) = tap_range(ox, 2, 1, 3, in_w);
            (y0..y1).flat_map(|ky| (x0..x1).map(move |kx| (oy * 2 + ky - 1) * in_w + (ox * 2 + kx - 1))).collect()
        })
        .collect();
    PoolPlan { out_h, out_w, order, windows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_ranges_at_borders() {
        // 3×3, pad 1 on a 5-long axis: first and last positions lose one tap.
        assert_eq!(tap_range(0, 1, 1, 3, 5), (1, 3));
        assert_eq!(tap_range(2, 1, 1, 3, 5), (0, 3));
        assert_eq!(tap_range(4, 1, 1, 3, 5), (0, 2));
        // 1×1 map: only the centre tap.
        assert_eq!(tap_range(0, 1, 1, 3, 1), (1, 2));
        // stride 2 from 2 to 1: taps 1..3 land on inputs 0..1.
        assert_eq!(tap_range(0, 2, 1, 3, 2), (1, 3));
    }
}
