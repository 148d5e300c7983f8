//! kernels/conv.cu `conv_mma_tf32x3<BN>` (fp32 on TF32 tensor cores, three products per pair),
//! transcribed like `conv_mma_bf16` (`super::mma`): thread by thread for the `cp.async` copies
//! into the race-checked shared buffers, warp by warp for `mma.sync` m16n8k8, whose operands are
//! assembled from the lanes' registers by the PTX ISA's fragment layout for TF32.

use super::mma::{Geometry, accumulate, store_accumulators};
use super::*;
use beamwatch::engine::cuda::tables::{ConvMath, MMA_THREADS, TF_PITCH, TF_TILE_K};

const KS: usize = TF_TILE_K;

/// `cvt.rna.tf32.f32`: 10 stored mantissa bits, round to nearest, ties away from zero (finite x).
fn tf32(x: f32) -> f32 {
    f32::from_bits((x.to_bits() + 0x1000) & 0xffff_e000)
}

/// `split_tf32`: hi = tf32(x), lo = tf32(x − hi).
fn split(x: f32) -> (f32, f32) {
    let hi = tf32(x);
    (hi, tf32(x - hi))
}

fn as_word(s: usize, r: usize, k: usize) -> usize {
    (s * BM + r) * TF_PITCH + k
}

fn bs_word(g: &Geometry, s: usize, c: usize, k: usize) -> usize {
    2 * BM * TF_PITCH + (s * g.bn + c) * TF_PITCH + k
}

/// What one block reads: f32 weights.
type Block<'a> = MmaBlock<'a, f32>;

/// One thread's registers outside the accumulators.
struct Thread {
    tid: u32,
    kq: usize,
    a_pos0: usize,
    a_patch0: usize,
    a_tap: usize,
    a_ci: usize,
}

impl Thread {
    fn new(b: &Block, tid: usize) -> Self {
        let kq = (tid & 3) * 4;
        let a_m0 = b.m0 + tid / 4;
        let k = b.k_begin + kq;
        Self { tid: tid as u32, kq, a_pos0: a_m0 / b.n, a_patch0: a_m0 % b.n, a_tap: k / b.cin, a_ci: k % b.cin }
    }

    /// `copy_slice`: 16-byte copies of slice `k0` into buffer `s`, zero-filled outside the class,
    /// cout or K. The race check sees them when issued; the kernel waits before the barrier.
    fn copy_slice(&self, g: &Geometry, b: &Block, sh: &mut Shared, k0: usize, s: usize) {
        let k_ok = k0 + self.kq < b.k_len;
        let n_pos = b.m_rows / b.n;
        let (mut pos, mut patch) = (self.a_pos0, self.a_patch0);
        let a_copies = BM * KS / 4 / MMA_THREADS;
        for i in 0..a_copies {
            if i > 0 {
                patch += MMA_THREADS / 4;
                while patch >= b.n {
                    patch -= b.n;
                    pos += 1;
                }
            }
            let row = self.tid as usize / 4 + (MMA_THREADS / 4) * i;
            assert_eq!(pos * b.n + patch, b.m0 + row, "row {i} of thread {}", self.tid);
            let mut v = [0f32; 4];
            if k_ok && pos < n_pos {
                let slot = b.gather[pos * b.n_taps + self.a_tap] as usize;
                v = load4(b.input, (slot * b.n + patch) * b.cin + self.a_ci);
            }
            sh.write4(self.tid, as_word(s, row, self.kq), v);
        }
        for j in 0..g.bn * KS / 4 / MMA_THREADS {
            let row = (self.tid as usize + MMA_THREADS * j) / 4;
            let co = b.n0 + row;
            let mut v = [0f32; 4];
            if co < b.cout && k_ok {
                v = load4(b.w, b.w_off + co * b.w_len + k0 + self.kq);
            }
            sh.write4(self.tid, bs_word(g, s, row, self.kq), v);
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

/// `mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32` for one warp, by the PTX ISA's TF32 fragment
/// layout (g = lane / 4, t = lane % 4): A register q of lane (g, t) is row g + 8·(q % 2), column
/// t + 4·(q / 2); B register q is row (k) t + 4q of column g; C as for every m16n8 shape
/// ([`accumulate`]).
fn mma(a: &[[f32; 4]; 32], b: &[[f32; 2]; 32], c: &mut [[f32; 4]; 32]) {
    let mut am = [[0f32; 8]; 16];
    let mut bm = [[0f32; 8]; 8];
    for lane in 0..32 {
        let (g, t) = (lane / 4, lane % 4);
        for q in 0..4 {
            am[g + 8 * (q % 2)][t + 4 * (q / 2)] = a[lane][q];
        }
        for q in 0..2 {
            bm[t + 4 * q][g] = b[lane][q];
        }
    }
    accumulate(&am, &bm, c);
}

/// kernels/conv.cu `conv_mma_tf32x3<BN>` over its whole grid. Every output element must be
/// written exactly once.
pub(super) fn conv_tf32x3(
    t: &ConvTables,
    tile: ConvTile,
    input: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    n: usize,
) -> Vec<f32> {
    conv_tf32x3_split(t, tile, 1, input, residual, relu, n)
}

/// [`conv_tf32x3`] with K split `splits` ways over the grid's z, then `splitk_reduce` ([`Stores`]).
pub(super) fn conv_tf32x3_split(
    t: &ConvTables,
    tile: ConvTile,
    splits: usize,
    input: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    n: usize,
) -> Vec<f32> {
    let g = Geometry::of(tile);
    let w_t = t.weights_f32_t();
    let mut stores = Stores::new(t, n, splits);
    let (bias, ep_residual, ep_relu) = stores.epilogue(t, residual, relu);
    let (gx, gy, _) = t.grid(n, tile);
    let shared_words = 2 * (BM + g.bn) * TF_PITCH;
    assert_eq!(4 * shared_words, ConvMath::Tf32x3.shared_bytes(tile));
    for blk in grid_blocks(gx, gy, splits) {
        let b = Block::at(t, input, &w_t, n, blk, splits, KS, g.bn);
        let (k_begin, k_end) = (b.k_begin, b.k_len);
        let mut sh = Shared::new(shared_words);
        let mut th: Vec<Thread> = (0..MMA_THREADS).map(|tid| Thread::new(&b, tid)).collect();
        let mut acc = vec![[[[0f32; 4]; 4]; 4]; MMA_THREADS];
        for t in &th {
            t.copy_slice(&g, &b, &mut sh, k_begin, (k_begin / KS) & 1);
        }
        sh.barrier();
        for k0 in (k_begin..k_end).step_by(KS) {
            let s = (k0 / KS) & 1;
            for (wi, warp) in th.chunks_mut(32).enumerate() {
                for t in warp.iter_mut() {
                    if k0 + KS < k_end {
                        t.advance(&b);
                        t.copy_slice(&g, &b, &mut sh, k0 + KS, s ^ 1);
                    }
                }
                let (wm, wn) = (wi / g.wn, wi % g.wn);
                for kk in [0, 8] {
                    // Every lane's fragments, split into hi and lo as the kernel reads them.
                    let (mut bh, mut bl) = ([[[0f32; 2]; 32]; 4], [[[0f32; 2]; 32]; 4]);
                    let (mut ah, mut al) = (vec![[[0f32; 4]; 32]; g.mt], vec![[[0f32; 4]; 32]; g.mt]);
                    for (l, t) in warp.iter().enumerate() {
                        let (gi, tq) = (l >> 2, l & 3);
                        for j in 0..4 {
                            let c = wn * 32 + 8 * j + gi;
                            for q in 0..2 {
                                (bh[j][l][q], bl[j][l][q]) = split(sh.read(t.tid, bs_word(&g, s, c, kk + tq + 4 * q)));
                            }
                        }
                        for i in 0..g.mt {
                            let r = wm * (BM / g.wm) + 16 * i + gi;
                            let words = [(r, tq), (r + 8, tq), (r, tq + 4), (r + 8, tq + 4)];
                            for (q, (row, k)) in words.into_iter().enumerate() {
                                (ah[i][l][q], al[i][l][q]) = split(sh.read(t.tid, as_word(s, row, kk + k)));
                            }
                        }
                    }
                    for i in 0..g.mt {
                        for j in 0..4 {
                            let mut c: [[f32; 4]; 32] = std::array::from_fn(|l| acc[wi * 32 + l][i][j]);
                            mma(&al[i], &bh[j], &mut c);
                            mma(&ah[i], &bl[j], &mut c);
                            mma(&ah[i], &bh[j], &mut c);
                            for (l, v) in c.into_iter().enumerate() {
                                acc[wi * 32 + l][i][j] = v;
                            }
                        }
                    }
                }
            }
            sh.barrier();
        }
        let acc: Vec<&[[[f32; 4]; 4]]> = acc.iter().map(|a| &a[..g.mt]).collect();
        store_accumulators(&g, t.cout, &b.out_tile(), &acc, (&bias, ep_residual, ep_relu), &mut stores);
    }
    stores.finish(t, residual, relu)
}

/// The 3×TF32 kernel transcribed is fp32-accurate: within 1e-6 of the plain f64 convolution's
/// largest output (measured ≤ 1.0e-7; the FFMA kernel's bound is 1e-5) on every shape of
/// [`CONV_SHAPES`] — cin 4 included (a slice of 16 spans four taps), partial tiles in M, N and K —
/// with both widths. One TF32 product per pair (no lo terms) is 1.3e-5 off on layer2's shape,
/// which this bound catches.
#[test]
fn the_3xtf32_conv_kernel_transcribed_is_fp32_accurate() {
    let mut worst = 0f64;
    for si in 0..CONV_SHAPES.len() {
        let c = ConvCase::new(si);
        let plain = direct_conv(&c.conv, &c.plan, (c.side, c.side), &c.input, c.n, Some(&c.residual));
        for tile in ConvTile::ALL {
            let gpu = conv_tf32x3(&c.tables, tile, &c.input, Some(&c.residual), true, c.n);
            let d = max_rel(&gpu, &plain);
            worst = worst.max(d);
            println!("{}, {}: vs plain {d:.2e}", c.describe(), ConvMath::Tf32x3.kernel(tile));
            assert!(d < 1e-6, "{} with {}: {d:.2e}", c.describe(), ConvMath::Tf32x3.kernel(tile));
        }
    }
    // Without the lo terms, the same transcription is TF32's own error: far above the bound.
    let c = ConvCase::new(3);
    let plain = direct_conv(&c.conv, &c.plan, (c.side, c.side), &c.input, c.n, Some(&c.residual));
    let tf32_only: Vec<f32> = {
        let mut conv = c.conv.clone();
        conv.weight = conv.weight.iter().map(|v| tf32(*v)).collect();
        let input: Vec<f32> = c.input.iter().map(|v| tf32(*v)).collect();
        direct_conv(&conv, &c.plan, (c.side, c.side), &input, c.n, Some(&c.residual))
    };
    let d1 = max_rel(&tf32_only, &plain);
    println!("3×TF32 worst {worst:.2e}; one TF32 product per pair {d1:.2e}");
    assert!(d1 > 10.0 * worst && d1 > 1e-6, "the bound does not tell 3×TF32 from TF32 ({d1:.2e})");
}

/// Split-K on the 3×TF32 kernel, transcribed (both tile widths, 2–4 splits, empty splits where K
/// has fewer slices than splits, then `splitk_reduce`), stays within the unsplit kernel's fp32 bound
/// of the plain convolution on every shape of [`CONV_SHAPES`], and is not the unsplit kernel's
/// result bit for bit (the sums are grouped differently), so the split path is what ran.
#[test]
fn the_3xtf32_kernel_split_over_k_transcribed_stays_fp32_accurate() {
    let (mut worst, mut empty_splits, mut regrouped) = (0f64, false, false);
    for si in 0..CONV_SHAPES.len() {
        let c = ConvCase::new(si);
        let plain = direct_conv(&c.conv, &c.plan, (c.side, c.side), &c.input, c.n, Some(&c.residual));
        let unsplit = conv_tf32x3(&c.tables, c.tables.tile(), &c.input, Some(&c.residual), true, c.n);
        for (splits, tile) in [(2, ConvTile::Narrow), (3, ConvTile::Wide), (MAX_SPLITS, c.tables.tile())] {
            let gpu = conv_tf32x3_split(&c.tables, tile, splits, &c.input, Some(&c.residual), true, c.n);
            let d = max_rel(&gpu, &plain);
            worst = worst.max(d);
            empty_splits |= (0..c.tables.n_classes)
                .any(|k| ((c.tables.desc[5 * k + 2] as usize) * c.conv.cin).div_ceil(KS) < splits);
            regrouped |= gpu != unsplit;
            println!("{}, {} ×{splits}: vs plain {d:.2e}", c.describe(), ConvMath::Tf32x3.kernel(tile));
            assert!(d < 1e-6, "{} with {} ×{splits}: {d:.2e}", c.describe(), ConvMath::Tf32x3.kernel(tile));
        }
        // Without residual or ReLU: the reduction's other branches.
        let gpu = conv_tf32x3_split(&c.tables, c.tables.tile(), 2, &c.input, None, false, c.n);
        let d = max_rel(&gpu, &cpu::conv_once(&c.plan, &c.input, c.n, None, false));
        assert!(d < 1e-6, "{} ×2 without residual and ReLU: {d:.2e}", c.describe());
    }
    println!("3×TF32 split-K worst {worst:.2e}");
    assert!(
        empty_splits && regrouped,
        "the cases miss an empty split ({empty_splits}) or a regrouped sum ({regrouped})"
    );
}

/// The fragment loads of every warp hit 32 distinct banks (pitch 20 floats).
#[test]
fn the_3xtf32_kernels_fragment_loads_have_no_bank_conflicts() {
    for tile in ConvTile::ALL {
        let g = Geometry::of(tile);
        for warp in 0..8 {
            let (wm, wn) = (warp / g.wn, warp % g.wn);
            for s in 0..2 {
                for kk in [0, 4, 8, 12] {
                    for i in 0..g.mt {
                        for dr in [0, 8] {
                            let a: Vec<usize> = (0..32)
                                .map(|l| as_word(s, wm * (BM / g.wm) + 16 * i + (l >> 2) + dr, kk + (l & 3)))
                                .collect();
                            assert_eq!(banks(&a), 1, "A fragment load");
                        }
                    }
                    for j in 0..4 {
                        let b: Vec<usize> =
                            (0..32).map(|l| bs_word(&g, s, wn * 32 + 8 * j + (l >> 2), kk + (l & 3))).collect();
                        assert_eq!(banks(&b), 1, "B fragment load");
                    }
                }
            }
        }
    }
}

/// Most distinct words one bank serves in one 32-bit access of a warp.
fn banks(words: &[usize]) -> usize {
    let mut per_bank = vec![std::collections::BTreeSet::new(); 32];
    for &w in words {
        per_bank[w % 32].insert(w);
    }
    per_bank.iter().map(|s| s.len()).max().unwrap_or(0)
}

/// The whole trunk with every convolution on the 3×TF32 kernel, transcribed, gives the CPU path's
/// features within 1e-5 (the FFMA kernels' bound in `device_tables_run_as_the_kernels_index_them_…`).
#[test]
fn the_trunk_on_the_3xtf32_kernel_transcribed_gives_the_cpu_features() {
    let engine = Engine::new(&network(), 20, 2).expect("engine");
    let dp = DevicePlan::new(engine.plan()).expect("device plan");
    let pixels = golden_patches("golden_frame.npy")[..6 * 400].to_vec();
    let dev = rel_dev(&emulate_with(&dp, &pixels, conv_tf32x3), &engine.cpu_features(&pixels));
    println!("3×TF32 trunk (transcribed) vs CPU path, max |Δ|/max per layer: {}", exp(&dev));
    assert!(dev.iter().all(|d| *d < 1e-5), "{dev:?}");
}
