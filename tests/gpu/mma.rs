//! kernels/conv.cu `conv_mma_bf16<BN>` (the bf16 tensor-core convolution, `precision = "bf16"` on
//! the GPU), transcribed like `conv_tiled` above: block by block, thread by thread between barriers
//! for the loads and the race-checked shared buffers, and warp by warp for `mma.sync`, whose
//! operands are assembled from the 32 lanes' registers by the fragment layout the PTX ISA defines
//! for m16n8k16 (not by the kernel's own reading of it), so a load that puts an element in the
//! wrong register or half of one fails here.

use super::*;
use beamwatch::engine::cuda::tables::{ConvMath, MMA_PITCH, MMA_THREADS, MMA_TILE_K};

const KS: usize = MMA_TILE_K;

/// `f32` → bf16 bits, round to nearest even (the kernel's `cvt.rn.bf16x2.f32`).
fn bf16_bits(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

fn bf16_value(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// `pack_bf16x2(lo, hi)`: `lo` in the low half.
fn pack(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) as u32 | (bf16_bits(hi) as u32) << 16
}

/// The halves of a 32-bit register, low first.
fn halves(w: u32) -> [f32; 2] {
    [bf16_value(w as u16), bf16_value((w >> 16) as u16)]
}

/// `conv_mma_bf16<BN>`'s compile-time shape (the warp layout is `conv_mma_tf32x3`'s too).
#[derive(Clone, Copy)]
pub(super) struct Geometry {
    pub(super) bn: usize,
    /// Warps across the columns and the rows; m16 tiles per warp.
    pub(super) wn: usize,
    pub(super) wm: usize,
    pub(super) mt: usize,
    a_loads: usize,
    b_loads: usize,
}

impl Geometry {
    pub(super) fn of(tile: ConvTile) -> Self {
        let bn = tile.n();
        let (wn, threads) = (bn / 32, MMA_THREADS);
        let wm = 8 / wn;
        assert_eq!(wm * wn * 32, threads);
        Self { bn, wn, wm, mt: BM / wm / 16, a_loads: BM * KS / 4 / threads, b_loads: bn * KS / 8 / threads }
    }

    /// The 32-bit word of `As[s][r][k]` (k even): shared memory as words of two bf16.
    fn as_word(&self, s: usize, r: usize, k: usize) -> usize {
        assert_eq!(k % 2, 0);
        ((s * BM + r) * MMA_PITCH + k) / 2
    }

    fn bs_word(&self, s: usize, c: usize, k: usize) -> usize {
        assert_eq!(k % 2, 0);
        (2 * BM * MMA_PITCH + (s * self.bn + c) * MMA_PITCH + k) / 2
    }

    fn shared_words(&self) -> usize {
        (2 * BM + 2 * self.bn) * MMA_PITCH / 2
    }
}

/// What one block reads: bf16 weights.
type Block<'a> = MmaBlock<'a, u16>;

/// One thread's registers.
struct Thread {
    tid: u32,
    a_kq: usize,
    /// Position and patch of the thread's first A row (`a_pos0`, `a_patch0`).
    a_pos0: usize,
    a_patch0: usize,
    a_tap: usize,
    a_ci: usize,
    b_kq: usize,
    a_reg: Vec<[f32; 4]>,
    /// `acc[i][j][r]`, as the kernel's.
    acc: Vec<[[f32; 4]; 4]>,
}

impl Thread {
    fn new(g: &Geometry, b: &Block, tid: usize) -> Self {
        let a_kq = (tid & 7) * 4;
        let a_m0 = b.m0 + tid / 8;
        Self {
            tid: tid as u32,
            a_kq,
            a_pos0: a_m0 / b.n,
            a_patch0: a_m0 % b.n,
            a_tap: (b.k_begin + a_kq) / b.cin,
            a_ci: (b.k_begin + a_kq) % b.cin,
            b_kq: (tid & 3) * 8,
            a_reg: vec![[0.0; 4]; g.a_loads],
            acc: vec![[[0.0; 4]; 4]; g.mt],
        }
    }

    /// Slice `k0`'s activations into registers: row i of the thread is the first row + 32·i,
    /// followed as the kernel does (patch += 32, carried into the position).
    fn fetch(&mut self, b: &Block, k0: usize) {
        let k_ok = k0 + self.a_kq < b.k_len;
        let n_pos = b.m_rows / b.n;
        let (mut pos, mut patch) = (self.a_pos0, self.a_patch0);
        for (i, reg) in self.a_reg.iter_mut().enumerate() {
            if i > 0 {
                patch += MMA_THREADS / 8;
                while patch >= b.n {
                    patch -= b.n;
                    pos += 1;
                }
            }
            assert_eq!(
                pos * b.n + patch,
                b.m0 + (self.tid as usize + MMA_THREADS * i) / 8,
                "row {i} of thread {}",
                self.tid
            );
            *reg = [0.0; 4];
            if k_ok && pos < n_pos {
                let slot = b.gather[pos * b.n_taps + self.a_tap] as usize;
                *reg = load4(b.input, (slot * b.n + patch) * b.cin + self.a_ci);
            }
        }
    }

    /// `copy_weights`: slice `k0`'s weights straight into buffer `s` (cp.async, 16 bytes per copy,
    /// zero-filled past cout or K). The race check sees the copies when they are issued; the
    /// kernel waits for them before the barrier that ends the slice.
    fn copy_weights(&self, g: &Geometry, b: &Block, sh: &mut Shared, k0: usize, s: usize) {
        for j in 0..g.b_loads {
            let row = (self.tid as usize + MMA_THREADS * j) / 4;
            let co = b.n0 + row;
            let mut v = [0u32; 4];
            if co < b.cout && k0 + self.b_kq < b.k_len {
                // 8 bf16 from global memory: 16-byte aligned, in bounds.
                let off = b.w_off + co * b.w_len + k0 + self.b_kq;
                assert_eq!(off % 8, 0, "unaligned 16-byte weight copy at bf16 {off}");
                let w = &b.w[off..off + 8];
                v = std::array::from_fn(|q| w[2 * q] as u32 | (w[2 * q + 1] as u32) << 16);
            }
            sh.write4(self.tid, g.bs_word(s, row, self.b_kq), v.map(f32::from_bits));
        }
    }

    fn stash(&self, g: &Geometry, sh: &mut Shared, s: usize) {
        for (i, a) in self.a_reg.iter().enumerate() {
            let w = g.as_word(s, (self.tid as usize + MMA_THREADS * i) / 8, self.a_kq);
            assert_eq!(w % 2, 0, "unaligned uint2 shared store");
            sh.write(self.tid, w, f32::from_bits(pack(a[0], a[1])));
            sh.write(self.tid, w + 1, f32::from_bits(pack(a[2], a[3])));
        }
    }

    fn advance(&mut self, b: &Block) {
        self.a_ci += KS;
        while self.a_ci >= b.cin {
            self.a_ci -= b.cin;
            self.a_tap += 1;
        }
    }
}

/// One lane's `mma` operands for one k16 step, read as the kernel reads them.
struct Fragments {
    a: Vec<[u32; 4]>,
    b: [[u32; 2]; 4],
}

fn read_word(sh: &mut Shared, tid: u32, w: usize) -> u32 {
    sh.read(tid, w).to_bits()
}

/// Lane `lane` of warp `warp`: the kernel's fragment loads at k16 step `kk` of buffer `s`.
fn load_fragments(g: &Geometry, sh: &mut Shared, tid: u32, s: usize, kk: usize) -> Fragments {
    let (lane, warp) = (tid as usize & 31, tid as usize >> 5);
    let (wm, wn) = (warp / g.wn, warp % g.wn);
    let (gi, t) = (lane >> 2, lane & 3);
    let a = (0..g.mt)
        .map(|i| {
            let r = wm * (BM / g.wm) + 16 * i + gi;
            [
                read_word(sh, tid, g.as_word(s, r, kk + 2 * t)),
                read_word(sh, tid, g.as_word(s, r + 8, kk + 2 * t)),
                read_word(sh, tid, g.as_word(s, r, kk + 8 + 2 * t)),
                read_word(sh, tid, g.as_word(s, r + 8, kk + 8 + 2 * t)),
            ]
        })
        .collect();
    let b = std::array::from_fn(|j| {
        let c = wn * 32 + 8 * j + gi;
        [read_word(sh, tid, g.bs_word(s, c, kk + 2 * t)), read_word(sh, tid, g.bs_word(s, c, kk + 8 + 2 * t))]
    });
    Fragments { a, b }
}

/// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` for one warp, by the PTX ISA's fragment
/// layout (groupID g = lane / 4, t = lane % 4): A register q of lane (g, t) holds row g + 8·(q % 2),
/// columns 2t + 8·(q / 2) + {0, 1}; B register q holds rows (k) 2t + 8q + {0, 1} of column g; C
/// element r is row g + 8·(r / 2), column 2t + r % 2. Products of bf16 are exact in f32; the sum
/// of each step is rounded once (the hardware's own summation order is not specified).
fn mma(a: &[[u32; 4]; 32], b: &[[u32; 2]; 32], c: &mut [[f32; 4]; 32]) {
    let mut am = [[0f32; 16]; 16];
    let mut bm = [[0f32; 8]; 16];
    for lane in 0..32 {
        let (g, t) = (lane / 4, lane % 4);
        for q in 0..4 {
            let [lo, hi] = halves(a[lane][q]);
            let (row, col) = (g + 8 * (q % 2), 2 * t + 8 * (q / 2));
            (am[row][col], am[row][col + 1]) = (lo, hi);
        }
        for q in 0..2 {
            let [lo, hi] = halves(b[lane][q]);
            let k = 2 * t + 8 * q;
            (bm[k][g], bm[k + 1][g]) = (lo, hi);
        }
    }
    accumulate(&am, &bm, c);
}

/// C += A·B for one warp's m16n8k`K` mma, C scattered over the lanes as the PTX ISA lays it out for
/// every m16n8 shape: element r of lane (g, t) is row g + 8·(r / 2), column 2t + r % 2. The
/// products are exact in f32 for bf16 and TF32 operands; each step's sum is rounded once.
pub(super) fn accumulate<const K: usize>(am: &[[f32; K]; 16], bm: &[[f32; 8]; K], c: &mut [[f32; 4]; 32]) {
    for (lane, cl) in c.iter_mut().enumerate() {
        let (g, t) = (lane / 4, lane % 4);
        for (r, v) in cl.iter_mut().enumerate() {
            let (row, col) = (g + 8 * (r / 2), 2 * t + r % 2);
            let sum: f64 = (0..K).map(|k| am[row][k] as f64 * bm[k][col] as f64).sum();
            *v = (*v as f64 + sum) as f32;
        }
    }
}

/// kernels/conv.cu `conv_mma_bf16<BN>` over its whole grid, with `w_bf16` from
/// `ConvTables::weights_bf16_t`. Every output element must be written exactly once.
pub(super) fn conv_mma(
    t: &ConvTables,
    tile: ConvTile,
    input: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    n: usize,
) -> Vec<f32> {
    conv_mma_split(t, tile, 1, input, residual, relu, n)
}

/// [`conv_mma`] with K split `splits` ways over the grid's z, then `splitk_reduce` ([`Stores`]).
pub(super) fn conv_mma_split(
    t: &ConvTables,
    tile: ConvTile,
    splits: usize,
    input: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    n: usize,
) -> Vec<f32> {
    assert!(ConvMath::Bf16.fits(t));
    let g = Geometry::of(tile);
    let w_bf16 = t.weights_bf16_t();
    let mut stores = Stores::new(t, n, splits);
    let (bias, ep_residual, ep_relu) = stores.epilogue(t, residual, relu);
    let (gx, gy, _) = t.grid(n, tile);
    for blk in grid_blocks(gx, gy, splits) {
        let b = Block::at(t, input, &w_bf16, n, blk, splits, KS, g.bn);
        let (k_begin, k_end) = (b.k_begin, b.k_len);
        let mut sh = Shared::new(g.shared_words());
        let mut th: Vec<Thread> = (0..MMA_THREADS).map(|tid| Thread::new(&g, &b, tid)).collect();
        for t in &mut th {
            t.fetch(&b, k_begin);
            t.copy_weights(&g, &b, &mut sh, k_begin, (k_begin / KS) & 1);
            t.stash(&g, &mut sh, (k_begin / KS) & 1);
        }
        sh.barrier();
        for k0 in (k_begin..k_end).step_by(KS) {
            let (s, more) = ((k0 / KS) & 1, k0 + KS < k_end);
            for warp in th.chunks_mut(32) {
                for t in warp.iter_mut() {
                    if more {
                        t.advance(&b);
                        t.fetch(&b, k0 + KS);
                        t.copy_weights(&g, &b, &mut sh, k0 + KS, s ^ 1);
                    }
                }
                for kk in [0, 16] {
                    let frags: Vec<Fragments> =
                        warp.iter().map(|t| load_fragments(&g, &mut sh, t.tid, s, kk)).collect();
                    for i in 0..g.mt {
                        for j in 0..4 {
                            let a: [[u32; 4]; 32] = std::array::from_fn(|l| frags[l].a[i]);
                            let bf: [[u32; 2]; 32] = std::array::from_fn(|l| frags[l].b[j]);
                            let mut c: [[f32; 4]; 32] = std::array::from_fn(|l| warp[l].acc[i][j]);
                            mma(&a, &bf, &mut c);
                            for (l, t) in warp.iter_mut().enumerate() {
                                t.acc[i][j] = c[l];
                            }
                        }
                    }
                }
                for t in warp.iter() {
                    if more {
                        t.stash(&g, &mut sh, s ^ 1);
                    }
                }
            }
            sh.barrier();
        }
        let acc: Vec<&[[[f32; 4]; 4]]> = th.iter().map(|t| &t.acc[..]).collect();
        store_accumulators(&g, t.cout, &b.out_tile(), &acc, (&bias, ep_residual, ep_relu), &mut stores);
    }
    stores.finish(t, residual, relu)
}

/// Where one block's output tile lies.
pub(super) struct OutTile {
    pub(super) first_slot: usize,
    pub(super) m0: usize,
    pub(super) n0: usize,
    pub(super) m_rows: usize,
    pub(super) n: usize,
    /// The block's split (grid z).
    pub(super) z: usize,
}

/// `mma_epilogue`, which both tensor-core kernels share: thread `tid`'s `acc[tid][i][j][r]` is row
/// 16i + g + 8·(r / 2), column 8j + 2t + r % 2 of its warp's tile (the mma's C fragment); bias,
/// residual and ReLU (`epilogue`, as the launch passes them) in f32, float2 stores into plane `z`
/// of `stores`, each counted.
pub(super) fn store_accumulators(
    g: &Geometry,
    cout: usize,
    at: &OutTile,
    acc: &[&[[[f32; 4]; 4]]],
    epilogue: (&[f32], Option<&[f32]>, bool),
    stores: &mut Stores,
) {
    let (bias, residual, relu) = epilogue;
    let base = at.first_slot * at.n * cout;
    for (tid, a) in acc.iter().enumerate() {
        let (lane, warp) = (tid & 31, tid >> 5);
        let (wm, wn, gi, tq) = (warp / g.wn, warp % g.wn, lane >> 2, lane & 3);
        for (i, ai) in a.iter().enumerate().take(g.mt) {
            for h in 0..2 {
                let m = at.m0 + wm * (BM / g.wm) + 16 * i + gi + 8 * h;
                if m >= at.m_rows {
                    continue;
                }
                for (j, aij) in ai.iter().enumerate() {
                    let co = at.n0 + wn * 32 + 8 * j + 2 * tq;
                    if co >= cout {
                        continue;
                    }
                    let o = base + m * cout + co;
                    assert_eq!(o % 2, 0, "unaligned float2 store");
                    let mut v = [aij[2 * h] + bias[co], aij[2 * h + 1] + bias[co + 1]];
                    if let Some(r) = residual {
                        v = [v[0] + r[o], v[1] + r[o + 1]];
                    }
                    if relu {
                        v = v.map(|x| if x > 0.0 { x } else { 0.0 });
                    }
                    for (q, x) in v.into_iter().enumerate() {
                        stores.store(at.z, o + q, x);
                    }
                }
            }
        }
    }
}

/// Shapes the tensor-core kernel takes beyond ResNet-18's: cin 8 (a K slice of 32 spans four
/// taps), K not a multiple of 32, cout not a multiple of 64 (24) or of either tile (200 = 3·64 + 8).
const MMA_EXTRA_SHAPES: &[(usize, usize, usize, usize, usize, usize)] = &[(8, 24, 3, 1, 6, 9), (16, 200, 3, 2, 7, 5)];

/// Every case the tensor-core kernel takes: ResNet-18's shapes from [`CONV_SHAPES`] and the extra ones.
pub(super) fn mma_cases() -> Vec<ConvCase> {
    let resnet = (0..CONV_SHAPES.len()).map(ConvCase::new).filter(|c| ConvMath::Bf16.fits(&c.tables));
    resnet.chain(MMA_EXTRA_SHAPES.iter().enumerate().map(|(i, &s)| ConvCase::of(s, 100 + i))).collect()
}

/// The case's convolution with its input and weights rounded to bf16, as the kernel multiplies them.
fn rounded(c: &ConvCase) -> (FoldedConv, Vec<f32>) {
    let r = |v: &f32| bf16_value(bf16_bits(*v));
    let mut conv = c.conv.clone();
    conv.weight = conv.weight.iter().map(r).collect();
    (conv, c.input.iter().map(r).collect())
}

/// The tensor-core kernel transcribed equals the plain convolution of the bf16-rounded operands
/// (f64 sums) to f32 accumulation's error, and the fp32 convolution within bf16's rounding, on
/// ResNet-18's shapes and shapes with partial tiles in M, N and K, with both tile widths.
#[test]
fn the_bf16_tensor_core_conv_kernel_transcribed_equals_the_rounded_convolution() {
    let (mut partial_m, mut partial_k) = (false, false);
    let mut partial_n = [false; 2];
    let cases = mma_cases();
    assert!(cases.len() >= 12, "every ResNet-18 shape fits the kernel");
    for c in &cases {
        let (t, n) = (&c.tables, c.n);
        let (conv_r, input_r) = rounded(c);
        let exact = direct_conv(&conv_r, &c.plan, (c.side, c.side), &input_r, n, Some(&c.residual));
        let fp32 = direct_conv(&c.conv, &c.plan, (c.side, c.side), &c.input, n, Some(&c.residual));
        for k in 0..t.n_classes {
            partial_m |= !(t.desc[5 * k + 1] as usize * n).is_multiple_of(CONV_TILE_M);
            partial_k |= !(t.desc[5 * k + 2] as usize * c.conv.cin).is_multiple_of(MMA_TILE_K);
        }
        for (ti, tile) in ConvTile::ALL.into_iter().enumerate() {
            partial_n[ti] |= !c.conv.cout.is_multiple_of(tile.n());
            let gpu = conv_mma(t, tile, &c.input, Some(&c.residual), true, n);
            let (d, d_fp32) = (max_rel(&gpu, &exact), max_rel(&gpu, &fp32));
            println!(
                "{}, {}: vs rounded operands {d:.2e}, vs fp32 {d_fp32:.2e}",
                c.describe(),
                ConvMath::Bf16.kernel(tile)
            );
            assert!(
                d < 1e-5,
                "{} with {}: {d:.2e} from the rounded convolution",
                c.describe(),
                ConvMath::Bf16.kernel(tile)
            );
            // Two roundings of 2⁻⁹ on every product, summed over up to 4,608 terms of either sign.
            assert!(d_fp32 < 1e-2, "{} with {}: {d_fp32:.2e} from fp32", c.describe(), ConvMath::Bf16.kernel(tile));
        }
        let gpu = conv_mma(t, t.tile(), &c.input, None, false, n);
        let plain = direct_conv(&conv_r, &c.plan, (c.side, c.side), &input_r, n, None);
        // direct_conv applies ReLU; compare where the kernel's output is positive and its sign elsewhere.
        let d = gpu.iter().zip(&plain).fold(0f64, |m, (a, b)| m.max((a.max(0.0) - b).abs() as f64));
        let scale = plain.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        assert!(d / scale < 1e-5, "{} without residual and ReLU: {:.2e}", c.describe(), d / scale);
        assert!(gpu.iter().any(|v| *v < 0.0), "{}: no negative output without ReLU", c.describe());
    }
    assert!(partial_m && partial_k && partial_n == [true; 2], "the shapes miss an edge");
}

/// The fragment loads of every warp hit 32 distinct banks (the pitch of 40 bf16 is what does it:
/// with 32 they would be 4-way), and the shared memory the host expects is what the kernel declares.
/// Split-K on the bf16 kernel, transcribed (2–4 splits, both widths, empty splits, then
/// `splitk_reduce`), equals the convolution of the bf16-rounded operands to f32 accumulation's
/// error, as the unsplit kernel does, on [`mma_cases`].
#[test]
fn the_bf16_kernel_split_over_k_transcribed_equals_the_rounded_convolution() {
    let (mut worst, mut empty_splits) = (0f64, false);
    for c in mma_cases() {
        let (conv, input) = rounded(&c);
        let plain = direct_conv(&conv, &c.plan, (c.side, c.side), &input, c.n, Some(&c.residual));
        for (splits, tile) in [(2, ConvTile::Wide), (3, ConvTile::Narrow), (MAX_SPLITS, c.tables.tile())] {
            let gpu = conv_mma_split(&c.tables, tile, splits, &c.input, Some(&c.residual), true, c.n);
            let d = max_rel(&gpu, &plain);
            worst = worst.max(d);
            empty_splits |= (0..c.tables.n_classes)
                .any(|k| ((c.tables.desc[5 * k + 2] as usize) * c.conv.cin).div_ceil(KS) < splits);
            assert!(d < 1e-5, "{} with {} ×{splits}: {d:.2e}", c.describe(), ConvMath::Bf16.kernel(tile));
        }
    }
    println!("bf16 split-K vs the rounded convolution: worst {worst:.2e}");
    assert!(empty_splits, "no case has fewer K slices than splits");
}

#[test]
fn the_bf16_conv_kernels_fragment_loads_have_no_bank_conflicts() {
    fn ways(words: &[usize]) -> usize {
        let mut per_bank = vec![std::collections::BTreeSet::new(); 32];
        for &w in words {
            per_bank[w % 32].insert(w);
        }
        per_bank.iter().map(|s| s.len()).max().unwrap_or(0)
    }
    for tile in ConvTile::ALL {
        let g = Geometry::of(tile);
        assert_eq!(4 * g.shared_words(), ConvMath::Bf16.shared_bytes(tile));
        for warp in 0..8 {
            let (wm, wn) = (warp / g.wn, warp % g.wn);
            for s in 0..2 {
                for kk in [0, 16] {
                    for half in [0, 8] {
                        for i in 0..g.mt {
                            for dr in [0, 8] {
                                let rows = |lane: usize| wm * (BM / g.wm) + 16 * i + (lane >> 2) + dr;
                                let a: Vec<usize> =
                                    (0..32).map(|l| g.as_word(s, rows(l), kk + half + 2 * (l & 3))).collect();
                                assert_eq!(ways(&a), 1, "{}: A fragment load", ConvMath::Bf16.kernel(tile));
                                let pitch32: Vec<usize> =
                                    (0..32).map(|l| (rows(l) * 32 + kk + half + 2 * (l & 3)) / 2).collect();
                                assert_eq!(
                                    ways(&pitch32),
                                    4,
                                    "{}: unpadded rows would conflict",
                                    ConvMath::Bf16.kernel(tile)
                                );
                            }
                        }
                        for j in 0..4 {
                            let b: Vec<usize> = (0..32)
                                .map(|l| g.bs_word(s, wn * 32 + 8 * j + (l >> 2), kk + half + 2 * (l & 3)))
                                .collect();
                            assert_eq!(ways(&b), 1, "{}: B fragment load", ConvMath::Bf16.kernel(tile));
                        }
                    }
                }
            }
        }
    }
}

/// The whole trunk as the GPU runs it with `precision = "bf16"` (every convolution on the
/// tensor-core kernel, transcribed): its error against PyTorch's golden features and cosines is
/// the GPU's bf16 error, measured here without a GPU, and must stay within the CPU bf16 path's
/// tolerances. Where `mma.sync` sums in another order the GPU differs from this by f32 roundings
/// (`gpu_bf16_conv_kernels_equal_their_transcription` checks that on hardware).
#[test]
fn the_gpu_bf16_trunk_transcribed_stays_within_the_bf16_tolerance() {
    let engine = Engine::new(&network(), 20, 1).expect("engine");
    let dp = DevicePlan::new(engine.plan()).expect("device plan");
    assert!(
        dp.blocks.iter().all(|b| ConvMath::Bf16.fits(&b.conv1) && ConvMath::Bf16.fits(&b.conv2)),
        "every ResNet-18 convolution fits"
    );
    let (a, b) = (golden_patches("golden_frame.npy"), golden_patches("golden_frame_damaged.npy"));
    let (fa, fb) = (emulate_with(&dp, &a, conv_mma), emulate_with(&dp, &b, conv_mma));
    let (e, dcos) = bf16_against_golden(&fa, &fb);
    println!(
        "GPU bf16 trunk (transcribed) vs PyTorch fp32: layer4 max |Δ|/max {e:.2e}; golden pair max |Δcos| {dcos:.2e}"
    );
    assert!(e < BF16_FEATURE_TOL && dcos < BF16_GOLDEN_COSINE_TOL, "{e:.2e} {dcos:.2e}");
    assert!(e > 1e-5, "bf16 features equal fp32's ({e:.1e})");
}
