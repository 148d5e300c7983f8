//! The GPU path. Three layers of evidence, weakest-hardware first:
//! 1. everywhere: the device tables (the arrays the kernels read) run through a literal CPU
//!    transcription of each kernel's index arithmetic give the CPU path's features — a wrong
//!    gather, weight or residual offset in the tables fails here without a GPU;
//! 2. without a GPU: `--backend cuda` is a clear error and `auto` a clean CPU fallback;
//! 3. with a GPU (skipped, saying why, without one): GPU features and similarities equal the CPU
//!    path and PyTorch's golden outputs within 1e-4 relative.

mod common;

use ndarray::{Array1, Array2};
use ndarray_npy::read_npy;

use beamwatch::engine::cuda::tables::{
    CONV_A_PAD, CONV_TILE_K, CONV_TILE_M, ConvMath, ConvTables, ConvTile, DevicePlan, MAX_SPLITS, split_slices,
};

#[path = "gpu/mma.rs"]
mod mma;
#[path = "gpu/tf32x3.rs"]
mod tf32x3;
use beamwatch::engine::network::FoldedConv;
use beamwatch::engine::plan::ConvPlan;
use beamwatch::engine::{ActiveBackend, BackendChoice, Engine, Features, Network, Precision, cpu};
use beamwatch::weights::StateDict;
use beamwatch::weights::layout::LAYER_CHANNELS;
use common::*;

fn network() -> Network {
    let sd = StateDict::read(&synthetic_weights()).expect("synthetic weights");
    Network::from_state_dict(&sd).expect("network")
}

/// Largest |a − b| over the largest |b|, per layer.
fn rel_dev(a: &Features, b: &Features) -> [f64; 4] {
    std::array::from_fn(|l| {
        let max = b.layers[l].iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        let d = a.layers[l].iter().zip(&b.layers[l]).fold(0f64, |m, (x, y)| m.max((x - y).abs() as f64));
        d / max
    })
}

fn exp(d: &[f64; 4]) -> String {
    d.iter().map(|v| format!("{v:.2e}")).collect::<Vec<_>>().join(", ")
}

// ---- 1. the device tables, executed by a transcription of the kernels --------------------------

const BM: usize = CONV_TILE_M;
const BK: usize = CONV_TILE_K;
/// Row pitch of the transposed A tile `As[2][BK][BM + CT_APAD]`.
const A_PITCH: usize = CONV_TILE_M + CONV_A_PAD;
const NEVER: u32 = u32::MAX;
const MANY: u32 = u32::MAX;

/// One block's shared memory (`As` then `Bs`, as declared in kernels/conv.cu) with a race check:
/// between two barriers no thread may read a word another thread wrote, nor overwrite a word
/// another thread read or wrote; no word may be read before it was written. A missing barrier or
/// a double buffer written while it is read fails here.
struct Shared {
    v: Vec<f32>,
    w_epoch: Vec<u32>,
    writer: Vec<u32>,
    r_epoch: Vec<u32>,
    reader: Vec<u32>,
    epoch: u32,
}

impl Shared {
    fn new(words: usize) -> Self {
        let never = vec![NEVER; words];
        Self {
            v: vec![0.0; words],
            w_epoch: never.clone(),
            writer: never.clone(),
            r_epoch: never.clone(),
            reader: never,
            epoch: 0,
        }
    }

    fn barrier(&mut self) {
        self.epoch += 1;
    }

    fn read(&mut self, tid: u32, i: usize) -> f32 {
        assert!(self.w_epoch[i] != NEVER, "thread {tid} reads shared word {i}, never written");
        assert!(
            self.w_epoch[i] != self.epoch || self.writer[i] == tid,
            "race: thread {tid} reads shared word {i} that thread {} wrote since the last barrier",
            self.writer[i]
        );
        if self.r_epoch[i] != self.epoch {
            (self.r_epoch[i], self.reader[i]) = (self.epoch, tid);
        } else if self.reader[i] != tid {
            self.reader[i] = MANY;
        }
        self.v[i]
    }

    fn write(&mut self, tid: u32, i: usize, v: f32) {
        let e = self.epoch;
        assert!(
            self.w_epoch[i] != e || self.writer[i] == tid,
            "race: threads {} and {tid} write shared word {i}",
            self.writer[i]
        );
        assert!(
            self.r_epoch[i] != e || self.reader[i] == tid,
            "race: thread {tid} overwrites shared word {i} read since the last barrier"
        );
        (self.w_epoch[i], self.writer[i], self.v[i]) = (e, tid, v);
    }

    /// A float4 access: 16-byte aligned (both arrays start 16-byte aligned; `As` is 8448 bytes).
    fn read4(&mut self, tid: u32, i: usize) -> [f32; 4] {
        assert_eq!(i % 4, 0, "unaligned float4 shared load at word {i}");
        std::array::from_fn(|j| self.read(tid, i + j))
    }

    fn write4(&mut self, tid: u32, i: usize, v: [f32; 4]) {
        assert_eq!(i % 4, 0, "unaligned float4 shared store at word {i}");
        for (j, x) in v.into_iter().enumerate() {
            self.write(tid, i + j, x);
        }
    }
}

/// A float4 global load: in bounds (else the index panics) and 16-byte aligned.
fn load4(buf: &[f32], off: usize) -> [f32; 4] {
    assert_eq!(off % 4, 0, "unaligned float4 global load at {off}");
    [buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]
}

/// `conv_tiled<BN>`'s compile-time shape.
#[derive(Clone, Copy)]
struct Geometry {
    bn: usize,
    threads: usize,
    tx_n: usize,
    a_loads: usize,
    b_row4: usize,
}

impl Geometry {
    fn of(tile: ConvTile) -> Self {
        let bn = tile.n();
        let threads = 2 * bn;
        assert_eq!(threads, tile.threads());
        Self { bn, threads, tx_n: bn / 8, a_loads: BM * BK / 4 / threads, b_row4: bn / 4 }
    }

    fn as_idx(&self, s: usize, k: usize, m: usize, pitch: usize) -> usize {
        (s * BK + k) * pitch + m
    }

    fn bs_idx(&self, s: usize, k: usize, c: usize) -> usize {
        2 * BK * A_PITCH + (s * BK + k) * self.bn + c
    }

    fn shared_words(&self) -> usize {
        2 * BK * A_PITCH + 2 * BK * self.bn
    }
}

/// What one block reads (the kernel's locals before the K loop).
struct Block<'a> {
    input: &'a [f32],
    gather: &'a [i32],
    w: &'a [f32],
    n: usize,
    cin: usize,
    cout: usize,
    n_taps: usize,
    m_rows: usize,
    k_len: usize,
    m0: usize,
    n0: usize,
}

/// One thread's registers.
struct Thread {
    tid: u32,
    tx: usize,
    ty: usize,
    a_kq: usize,
    a_gather: [Option<usize>; 2],
    a_patch: [usize; 2],
    a_row: [usize; 2],
    a_tap: usize,
    a_ci: usize,
    b_k: usize,
    b_c: usize,
    b_col_ok: bool,
    a_reg: [[f32; 4]; 2],
    b_reg: [f32; 4],
    acc: [[f32; 8]; 8],
}

impl Thread {
    fn new(g: &Geometry, b: &Block, tid: usize) -> Self {
        let a_kq = (tid & 1) * 4;
        let (mut a_gather, mut a_patch, mut a_row) = ([None; 2], [0; 2], [0; 2]);
        for i in 0..g.a_loads {
            a_row[i] = (tid + g.threads * i) / 2;
            let m = b.m0 + a_row[i];
            a_gather[i] = (m < b.m_rows).then(|| (m / b.n) * b.n_taps);
            a_patch[i] = if m < b.m_rows { m % b.n } else { 0 };
        }
        let b_c = (tid % g.b_row4) * 4;
        Self {
            tid: tid as u32,
            tx: tid % g.tx_n,
            ty: tid / g.tx_n,
            a_kq,
            a_gather,
            a_patch,
            a_row,
            a_tap: a_kq / b.cin,
            a_ci: a_kq % b.cin,
            b_k: tid / g.b_row4,
            b_c,
            b_col_ok: b.n0 + b_c < b.cout,
            a_reg: [[0.0; 4]; 2],
            b_reg: [0.0; 4],
            acc: [[0.0; 8]; 8],
        }
    }

    fn fetch(&mut self, g: &Geometry, b: &Block, k0: usize) {
        let k_ok = k0 + self.a_kq < b.k_len;
        for i in 0..g.a_loads {
            self.a_reg[i] = [0.0; 4];
            if let (true, Some(gi)) = (k_ok, self.a_gather[i]) {
                let slot = b.gather[gi + self.a_tap] as usize;
                self.a_reg[i] = load4(b.input, (slot * b.n + self.a_patch[i]) * b.cin + self.a_ci);
            }
        }
        self.b_reg = [0.0; 4];
        if k0 + self.b_k < b.k_len && self.b_col_ok {
            self.b_reg = load4(b.w, (k0 + self.b_k) * b.cout + b.n0 + self.b_c);
        }
    }

    fn stash(&self, g: &Geometry, sh: &mut Shared, s: usize) {
        for i in 0..g.a_loads {
            for j in 0..4 {
                sh.write(self.tid, g.as_idx(s, self.a_kq + j, self.a_row[i], A_PITCH), self.a_reg[i][j]);
            }
        }
        sh.write4(self.tid, g.bs_idx(s, self.b_k, self.b_c), self.b_reg);
    }

    fn advance(&mut self, b: &Block) {
        self.a_ci += BK;
        while self.a_ci >= b.cin {
            self.a_ci -= b.cin;
            self.a_tap += 1;
        }
    }

    fn multiply(&mut self, g: &Geometry, sh: &mut Shared, s: usize) {
        for kk in 0..BK {
            let a0 = sh.read4(self.tid, g.as_idx(s, kk, 4 * self.ty, A_PITCH));
            let a1 = sh.read4(self.tid, g.as_idx(s, kk, 64 + 4 * self.ty, A_PITCH));
            let b0 = sh.read4(self.tid, g.bs_idx(s, kk, 4 * self.tx));
            let b1 = sh.read4(self.tid, g.bs_idx(s, kk, g.bn / 2 + 4 * self.tx));
            let a: [f32; 8] = std::array::from_fn(|i| if i < 4 { a0[i] } else { a1[i - 4] });
            let bv: [f32; 8] = std::array::from_fn(|j| if j < 4 { b0[j] } else { b1[j - 4] });
            for i in 0..8 {
                for j in 0..8 {
                    // fmaf, as the kernel.
                    self.acc[i][j] = a[i].mul_add(bv[j], self.acc[i][j]);
                }
            }
        }
    }
}

/// kernels/conv.cu `conv_tiled<BN>` over its whole grid, block by block and, between barriers,
/// thread by thread: the class search, the per-thread load assignments, the K slices with their
/// prefetch into registers and the two shared buffers (race-checked), the guards at every edge,
/// the 8×8 register tile and the float4 epilogue. Every output element must be written exactly
/// once and no element outside the convolution's output.
fn conv_tiled(
    t: &ConvTables,
    tile: ConvTile,
    input: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    n: usize,
) -> Vec<f32> {
    let g = Geometry::of(tile);
    let (cin, cout) = (t.cin, t.cout);
    let mut out = vec![f32::NAN; t.out_slots * n * cout];
    let mut writes = vec![0u8; out.len()];
    let (gx, gy, gz) = t.grid(n, tile);
    assert_eq!(gz, 1);
    for bx in 0..gx as usize {
        // The kernel's class search, and the host's copy of it.
        let (mut cls, mut tile_i) = (0, bx);
        while cls + 1 < t.n_classes {
            let tiles = (t.desc[5 * cls + 1] as usize * n).div_ceil(BM);
            if tile_i < tiles {
                break;
            }
            tile_i -= tiles;
            cls += 1;
        }
        assert_eq!((cls, tile_i), t.block_tile(n, bx));
        let d = &t.desc[5 * cls..5 * cls + 5];
        let (first_slot, n_pos, n_taps) = (d[0] as usize, d[1] as usize, d[2] as usize);
        for by in 0..gy as usize {
            let b = Block {
                input,
                gather: &t.gathers[d[3] as usize..],
                w: &t.weights[d[4] as usize..],
                n,
                cin,
                cout,
                n_taps,
                m_rows: n_pos * n,
                k_len: n_taps * cin,
                m0: tile_i * BM,
                n0: by * g.bn,
            };
            assert!(
                b.m0 < b.m_rows,
                "block {bx} (class {cls}, tile {tile_i}) has no rows: the grid is larger than the work"
            );
            let mut sh = Shared::new(g.shared_words());
            let mut th: Vec<Thread> = (0..g.threads).map(|tid| Thread::new(&g, &b, tid)).collect();
            let slices = b.k_len.div_ceil(BK);
            for t in &mut th {
                t.fetch(&g, &b, 0);
                t.stash(&g, &mut sh, 0);
            }
            sh.barrier();
            for ks in 0..slices {
                let (s, more) = (ks & 1, ks + 1 < slices);
                for t in &mut th {
                    if more {
                        t.advance(&b);
                        t.fetch(&g, &b, (ks + 1) * BK);
                    }
                    t.multiply(&g, &mut sh, s);
                    if more {
                        t.stash(&g, &mut sh, s ^ 1);
                    }
                }
                sh.barrier();
            }
            let base = first_slot * n * cout;
            for th in &th {
                for i in 0..8 {
                    let m = b.m0 + if i < 4 { 4 * th.ty + i } else { 64 + 4 * th.ty + i - 4 };
                    if m >= b.m_rows {
                        continue;
                    }
                    for h in 0..2 {
                        let co = b.n0 + if h == 0 { 4 * th.tx } else { g.bn / 2 + 4 * th.tx };
                        if co >= cout {
                            continue;
                        }
                        let bv = load4(&t.bias, co);
                        let mut v: [f32; 4] = std::array::from_fn(|j| th.acc[i][4 * h + j] + bv[j]);
                        if let Some(r) = residual {
                            let rv = load4(r, base + m * cout + co);
                            for j in 0..4 {
                                v[j] += rv[j];
                            }
                        }
                        if relu {
                            v = v.map(|x| if x > 0.0 { x } else { 0.0 });
                        }
                        let o = base + m * cout + co;
                        assert_eq!(o % 4, 0, "unaligned float4 store");
                        for j in 0..4 {
                            out[o + j] = v[j];
                            writes[o + j] += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(writes.iter().all(|w| *w == 1), "an output element is written twice or never");
    out
}

/// The blocks of a grid (x, y, z), z outermost: split-K's z is the K split.
fn grid_blocks(gx: u32, gy: u32, gz: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..gz).flat_map(move |z| (0..gx as usize).flat_map(move |x| (0..gy as usize).map(move |y| (x, y, z))))
}

/// kernels/conv.cu `split_k_range`: split `z` of `splits` of a K of `k_len` in slices of `ks`, as
/// `[begin, end)` in k, the end capped at K; checked against the host's `split_slices`.
fn split_k_range(k_len: usize, ks: usize, z: usize, splits: usize) -> (usize, usize) {
    let slices = k_len.div_ceil(ks);
    let (begin, end) = (z * slices / splits, (z + 1) * slices / splits);
    assert_eq!((begin, end), split_slices(slices, z, splits));
    (begin * ks, k_len.min(end * ks))
}

/// Where a tensor-core launch's blocks store, each element counted: with one split the output
/// itself (bias, residual and ReLU applied by the kernel); with several, plane z of split-K's
/// partial-sum buffer, the launch passing zero bias, no residual and no ReLU, and [`Stores::finish`]
/// is `splitk_reduce`.
struct Stores {
    splits: usize,
    plane: usize,
    buf: Vec<f32>,
    writes: Vec<u8>,
}

impl Stores {
    fn new(t: &ConvTables, n: usize, splits: usize) -> Self {
        assert!((1..=MAX_SPLITS).contains(&splits));
        let plane = t.out_len(n);
        Self { splits, plane, buf: vec![f32::NAN; splits * plane], writes: vec![0; splits * plane] }
    }

    /// The kernel's bias, residual and ReLU, as the host launches it.
    fn epilogue<'a>(
        &self,
        t: &ConvTables,
        residual: Option<&'a [f32]>,
        relu: bool,
    ) -> (Vec<f32>, Option<&'a [f32]>, bool) {
        if self.splits > 1 { (vec![0.0; t.cout], None, false) } else { (t.bias.clone(), residual, relu) }
    }

    /// Element `o` of plane `z` (the kernel's `out + z·plane + o`).
    fn store(&mut self, z: usize, o: usize, v: f32) {
        assert!(z < self.splits && o < self.plane, "store outside the planes: plane {z}, element {o}");
        self.buf[z * self.plane + o] = v;
        self.writes[z * self.plane + o] += 1;
    }

    /// Every element of every plane written once; with splits, `splitk_reduce` over the planes: a
    /// float4 at a time, planes summed in z order, then bias, residual, ReLU.
    fn finish(self, t: &ConvTables, residual: Option<&[f32]>, relu: bool) -> Vec<f32> {
        assert!(self.writes.iter().all(|w| *w == 1), "an output element is written twice or never");
        if self.splits == 1 {
            return self.buf;
        }
        assert_eq!(self.plane % 4, 0);
        let mut out = vec![0f32; self.plane];
        for i in (0..self.plane).step_by(4) {
            let mut v = load4(&self.buf, i);
            for z in 1..self.splits {
                let p = load4(&self.buf, z * self.plane + i);
                v = std::array::from_fn(|j| v[j] + p[j]);
            }
            let bv = load4(&t.bias, i % t.cout);
            v = std::array::from_fn(|j| v[j] + bv[j]);
            if let Some(r) = residual {
                let rv = load4(r, i);
                v = std::array::from_fn(|j| v[j] + rv[j]);
            }
            if relu {
                v = v.map(|x| if x > 0.0 { x } else { 0.0 });
            }
            out[i..i + 4].copy_from_slice(&v);
        }
        out
    }
}

/// What one block of a tensor-core kernel reads (the kernel's locals before the K loop), with
/// weights of type `W` (bf16 bits or f32, transposed per class).
struct MmaBlock<'a, W> {
    input: &'a [f32],
    gather: &'a [i32],
    /// The whole transposed weight array and this class's offset into it (alignment is of the whole).
    w: &'a [W],
    w_off: usize,
    n: usize,
    cin: usize,
    cout: usize,
    n_taps: usize,
    m_rows: usize,
    /// This split's k range `[k_begin, k_len)` (the kernel's `k_begin` and `K`) and the class's
    /// own K, the weight rows' length (`w_len`).
    k_begin: usize,
    k_len: usize,
    w_len: usize,
    m0: usize,
    n0: usize,
    /// The class's first output slot and the block's split (grid z), for the epilogue.
    first_slot: usize,
    z: usize,
}

impl<'a, W> MmaBlock<'a, W> {
    /// Block `(x, y, z)` of a launch with `splits` K splits, K slices of `ks` and tiles `bn` wide:
    /// the kernel's class search (`class_tile`) and `split_k_range`.
    #[allow(clippy::too_many_arguments)]
    fn at(
        t: &'a ConvTables,
        input: &'a [f32],
        w: &'a [W],
        n: usize,
        (x, y, z): (usize, usize, usize),
        splits: usize,
        ks: usize,
        bn: usize,
    ) -> Self {
        let (cls, tile_i) = t.block_tile(n, x);
        let d = &t.desc[5 * cls..5 * cls + 5];
        let (first_slot, n_pos, n_taps) = (d[0] as usize, d[1] as usize, d[2] as usize);
        let (k_begin, k_len) = split_k_range(n_taps * t.cin, ks, z, splits);
        let b = Self {
            input,
            gather: &t.gathers[d[3] as usize..],
            w,
            w_off: d[4] as usize,
            n,
            cin: t.cin,
            cout: t.cout,
            n_taps,
            m_rows: n_pos * n,
            k_begin,
            k_len,
            w_len: n_taps * t.cin,
            m0: tile_i * BM,
            n0: y * bn,
            first_slot,
            z,
        };
        assert!(b.m0 < b.m_rows, "block {x} has no rows");
        b
    }

    /// Where its output tile lies, for `store_accumulators`.
    fn out_tile(&self) -> mma::OutTile {
        mma::OutTile {
            first_slot: self.first_slot,
            m0: self.m0,
            n0: self.n0,
            m_rows: self.m_rows,
            n: self.n,
            z: self.z,
        }
    }
}

/// A convolution kernel's transcription: (tables, tile, input, residual, ReLU, patches) → output.
type ConvFn = fn(&ConvTables, ConvTile, &[f32], Option<&[f32]>, bool, usize) -> Vec<f32>;

/// The launch sequence of `Trunk::run_trunk` (stem_conv, max_pool, blocks, global_avg_pool).
fn emulate(dp: &DevicePlan, pixels: &[f32]) -> Features {
    emulate_with(dp, pixels, conv_tiled)
}

/// [`emulate`] with every convolution run by `conv`.
fn emulate_with(dp: &DevicePlan, pixels: &[f32], conv: ConvFn) -> Features {
    let p = dp.patch;
    let n = pixels.len() / (p * p);
    let st = &dp.stem;
    let mut a = vec![0f32; st.positions * n * st.cout];
    for pos in 0..st.positions {
        let (oy, ox) = (pos / st.out_w, pos % st.out_w);
        for i in 0..n {
            for co in 0..st.cout {
                let mut acc = 0f32;
                for ky in 0..st.k {
                    let iy = (oy * st.stride + ky) as isize - st.pad as isize;
                    if iy < 0 || iy >= p as isize {
                        continue;
                    }
                    for kx in 0..st.k {
                        let ix = (ox * st.stride + kx) as isize - st.pad as isize;
                        if ix < 0 || ix >= p as isize {
                            continue;
                        }
                        acc += pixels[i * p * p + iy as usize * p + ix as usize]
                            * st.weight[(ky * st.k + kx) * st.cout + co];
                    }
                }
                a[(pos * n + i) * st.cout + co] = (acc + st.bias_map[pos * st.cout + co]).max(0.0);
            }
        }
    }
    let nc = n * st.cout;
    let mut x = vec![0f32; dp.pool.slots * nc];
    for s in 0..dp.pool.slots {
        for within in 0..nc {
            let mut m = 0f32;
            for w in dp.pool.win_off[s] as usize..dp.pool.win_off[s + 1] as usize {
                m = m.max(a[dp.pool.windows[w] as usize * nc + within]);
            }
            x[s * nc + within] = m;
        }
    }
    let mut feats = Features::zeros(n);
    for (bi, b) in dp.blocks.iter().enumerate() {
        let r = b.downsample.as_ref().map(|ds| conv(ds, ds.tile(), &x, None, false, n));
        let t = conv(&b.conv1, b.conv1.tile(), &x, None, true, n);
        x = conv(&b.conv2, b.conv2.tile(), &t, Some(r.as_deref().unwrap_or(&x)), true, n);
        if bi % 2 == 1 {
            let (l, slots) = (bi / 2, b.conv2.out_slots);
            let total = n * LAYER_CHANNELS[l];
            for e in 0..total {
                let s: f32 = (0..slots).map(|t| x[t * total + e]).sum();
                feats.layers[l][e] = s * (1.0 / slots as f32);
            }
        }
    }
    feats
}

#[test]
fn device_tables_run_as_the_kernels_index_them_give_the_cpu_features() {
    let net = network();
    // 20 px (the seed's patch) and 32 px (more positions, other class shapes).
    for patch in [20usize, 32] {
        let engine = Engine::new(&net, patch, 2).expect("engine");
        let dp = DevicePlan::new(engine.plan()).expect("device plan");
        let pixels: Vec<f32> = if patch == 20 {
            golden_patches("golden_frame.npy")[..6 * 400].to_vec()
        } else {
            (0..5 * patch * patch).map(|i| ((i * 7919 % 1000) as f32 / 1000.0).powi(2)).collect()
        };
        let emulated = emulate(&dp, &pixels);
        let cpu = engine.cpu_features(&pixels);
        let dev = rel_dev(&emulated, &cpu);
        println!("patch {patch}: kernels' indexing vs CPU path, max |Δ|/max per layer: {}", exp(&dev));
        for (l, d) in dev.iter().enumerate() {
            assert!(*d < 1e-5, "patch {patch}, layer{}: {d:.2e}", l + 1);
        }
        assert!(dp.max_activation_per_patch() > 0);
    }
}

/// A deterministic value in [-1, 1) for index `i` of stream `seed`.
fn noise(seed: usize, i: usize) -> f32 {
    let h = (i as u64 ^ (seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// The plain convolution (zero padding, f64 sums) in the plan's slot orders: input slot = y·w + x
/// (`ConvPlan::standalone`), output slot s holds spatial position `order[s]`.
fn direct_conv(
    c: &FoldedConv,
    plan: &ConvPlan,
    in_hw: (usize, usize),
    input: &[f32],
    n: usize,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let (in_h, in_w) = in_hw;
    let mut out = vec![0f32; plan.out_slots() * n * c.cout];
    for (slot, &sp) in plan.order.iter().enumerate() {
        let (oy, ox) = (sp / plan.out_w, sp % plan.out_w);
        for i in 0..n {
            for co in 0..c.cout {
                let mut acc = c.bias[co] as f64;
                for ky in 0..c.k {
                    for kx in 0..c.k {
                        let (iy, ix) = (
                            (oy * c.stride + ky) as isize - c.pad as isize,
                            (ox * c.stride + kx) as isize - c.pad as isize,
                        );
                        if iy < 0 || ix < 0 || iy >= in_h as isize || ix >= in_w as isize {
                            continue;
                        }
                        let s_in = iy as usize * in_w + ix as usize;
                        for ci in 0..c.cin {
                            acc += input[(s_in * n + i) * c.cin + ci] as f64 * c.w(co, ci, ky, kx) as f64;
                        }
                    }
                }
                let o = (slot * n + i) * c.cout + co;
                if let Some(r) = residual {
                    acc += r[o] as f64;
                }
                out[o] = acc.max(0.0) as f32;
            }
        }
    }
    out
}

fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    let max = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs() as f64)) / max
}

/// Convolution shapes for the conv kernel's tests: (cin, cout, k, stride, input side, patches).
/// Every ResNet-18 convolution shape (3×3 stride 1 and 2, 1×1 downsample, 64–512 channels) and odd
/// shapes that leave partial tiles in every dimension — M (class rows ≠ k·128, above and below
/// 128), N (cout not a multiple of 64 or 128) and K (taps·cin not a multiple of 8; cin = 4 < the K
/// slice, so one slice spans two taps).
const CONV_SHAPES: &[(usize, usize, usize, usize, usize, usize)] = &[
    (64, 64, 3, 1, 10, 3),  // layer1 (a 10×10 map: 64 interior positions · 3 = 192 rows)
    (64, 128, 3, 2, 5, 7),  // layer2.0.conv1
    (64, 128, 1, 2, 5, 7),  // layer2.0.downsample
    (128, 128, 3, 1, 6, 9), // layer2 (16 interior positions · 9 = 144 rows)
    (128, 256, 3, 2, 3, 9), // layer3.0.conv1
    (128, 256, 1, 2, 3, 9), // layer3.0.downsample
    (256, 256, 3, 1, 2, 9), // layer3
    (256, 512, 3, 2, 2, 5), // layer4.0.conv1
    (256, 512, 1, 2, 2, 5), // layer4.0.downsample
    (512, 512, 3, 1, 1, 5), // layer4 on a 1×1 map: the centre tap only
    (20, 72, 3, 1, 6, 9),   // K = 9·20 = 180, cout 72
    (4, 12, 3, 1, 4, 40),   // cin 4: a K slice spans two taps; 160 interior rows
    (12, 200, 3, 2, 7, 5),  // cout 200 = 128 + 72 = 3·64 + 8; K = 108
];

/// One of [`CONV_SHAPES`] with deterministic weights, input and residual.
struct ConvCase {
    conv: FoldedConv,
    plan: ConvPlan,
    tables: ConvTables,
    side: usize,
    n: usize,
    input: Vec<f32>,
    residual: Vec<f32>,
}

impl ConvCase {
    fn new(si: usize) -> Self {
        Self::of(CONV_SHAPES[si], si)
    }

    /// `shape` as in [`CONV_SHAPES`]; `si` seeds the values.
    fn of(shape: (usize, usize, usize, usize, usize, usize), si: usize) -> Self {
        let (cin, cout, k, stride, side, n) = shape;
        let conv = FoldedConv {
            cout,
            cin,
            k,
            stride,
            pad: k / 2,
            weight: (0..cout * cin * k * k).map(|i| noise(3 * si, i) / (cin * k * k) as f32).collect(),
            bias: (0..cout).map(|i| 0.1 * noise(3 * si + 1, i)).collect(),
        };
        let plan = ConvPlan::standalone(&conv, side, side, false).expect("plan");
        let tables = ConvTables::new(&plan).expect("tables");
        assert!(tables.consistent());
        // A weight offset the tensor-core kernels' 16-byte copies could not take is refused.
        let mut odd = tables.clone();
        odd.desc[4] += 4;
        odd.weights.extend([0.0; 4]);
        assert!(!odd.consistent(), "a weight offset of 4 floats passes");
        let input = (0..side * side * n * cin).map(|i| noise(3 * si + 2, i).max(0.0)).collect();
        let residual = (0..plan.out_slots() * n * cout).map(|i| 0.5 * noise(1000 + si, i)).collect();
        Self { conv, plan, tables, side, n, input, residual }
    }

    fn describe(&self) -> String {
        let c = &self.conv;
        format!("{}→{} {}×{}/{} on {}², {} patches", c.cin, c.cout, c.k, c.k, c.stride, self.side, self.n)
    }
}

/// The conv kernel's tiling, transcribed, against the engine's CPU convolution and the plain
/// convolution on [`CONV_SHAPES`], with both tile widths.
#[test]
fn the_tiled_conv_kernel_transcribed_equals_the_cpu_convolution_with_partial_tiles_everywhere() {
    let (mut partial_m, mut full_and_partial_m, mut partial_k) = (false, false, false);
    let mut partial_n = [false; 2];
    for si in 0..CONV_SHAPES.len() {
        let c = ConvCase::new(si);
        let (t, n, cin, cout) = (&c.tables, c.n, c.conv.cin, c.conv.cout);
        let cpu = cpu::conv_once(&c.plan, &c.input, n, Some(&c.residual), true);
        let plain = direct_conv(&c.conv, &c.plan, (c.side, c.side), &c.input, n, Some(&c.residual));
        let d_cpu = max_rel(&cpu, &plain);
        assert!(d_cpu < 1e-5, "{}: the CPU path vs the plain convolution {d_cpu:.2e}", c.describe());
        for k in 0..t.n_classes {
            let (rows, kk) = (t.desc[5 * k + 1] as usize * n, t.desc[5 * k + 2] as usize * cin);
            partial_m |= !rows.is_multiple_of(CONV_TILE_M);
            full_and_partial_m |= rows > CONV_TILE_M && !rows.is_multiple_of(CONV_TILE_M);
            partial_k |= !kk.is_multiple_of(CONV_TILE_K);
        }
        for (ti, tile) in ConvTile::ALL.into_iter().enumerate() {
            partial_n[ti] |= !cout.is_multiple_of(tile.n());
            let gpu = conv_tiled(t, tile, &c.input, Some(&c.residual), true, n);
            let (d, d_plain) = (max_rel(&gpu, &cpu), max_rel(&gpu, &plain));
            println!("{}, {}: vs CPU {d:.2e}, vs plain {d_plain:.2e}", c.describe(), tile.kernel());
            assert!(d < 1e-5 && d_plain < 1e-5, "{} with {}: {d:.2e}, {d_plain:.2e}", c.describe(), tile.kernel());
        }
        // Without residual or ReLU: the epilogue's other branch.
        let gpu = conv_tiled(t, t.tile(), &c.input, None, false, n);
        let d = max_rel(&gpu, &cpu::conv_once(&c.plan, &c.input, n, None, false));
        assert!(d < 1e-5, "{} without residual and ReLU: {d:.2e}", c.describe());
    }
    assert!(partial_m && full_and_partial_m && partial_k && partial_n == [true; 2], "the shapes miss an edge");
}

/// Split-K's ranges (kernels/conv.cu `split_k_range`, the host's `split_slices`) cover every K
/// slice once, in order, balanced to within one slice, and leave a split empty only when there are
/// fewer slices than splits; `max_slices` is the longest class's count.
#[test]
fn split_k_ranges_cover_every_slice_once_and_balance() {
    for slices in 0..=40 {
        for splits in 1..=MAX_SPLITS {
            let ranges: Vec<_> = (0..splits).map(|z| split_slices(slices, z, splits)).collect();
            assert_eq!(ranges[0].0, 0);
            assert_eq!(ranges[splits - 1].1, slices);
            assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0), "{slices} slices ×{splits}: {ranges:?}");
            let sizes: Vec<usize> = ranges.iter().map(|r| r.1 - r.0).collect();
            let (lo, hi) = (sizes.iter().min().copied().unwrap_or(0), sizes.iter().max().copied().unwrap_or(0));
            assert!(hi - lo <= 1, "{slices} slices ×{splits}: {sizes:?}");
            assert_eq!(lo == 0, slices < splits, "{slices} slices ×{splits}: {sizes:?}");
        }
    }
    let c = ConvCase::new(0); // layer1's 3×3 on a 10×10 map: 9 taps in the interior class
    assert_eq!(c.tables.max_slices(ConvMath::Bf16), (9 * 64usize).div_ceil(32));
    assert_eq!(c.tables.max_slices(ConvMath::Tf32x3), 9 * 64 / 16);
}

/// The launches the GPU trunk measures per convolution: the default (the tile that fits cout, no
/// split) first; both tiles where the wide one fits cout, only the narrow one over 64 channels;
/// splits only on the tensor-core families, capped by the longest class's K slices and by the
/// partial-sum buffer.
#[test]
fn launch_candidates_start_with_the_default_and_respect_every_cap() {
    use beamwatch::engine::cuda::tables::Launch;
    let n = 2601;
    let layer4 = ConvCase::of((512, 512, 3, 1, 1, 5), 0).tables; // one tap: 512 of K
    let layer1 = ConvCase::new(0).tables; // cout 64
    let room = MAX_SPLITS * layer4.out_len(n);
    let wide = Launch { tile: ConvTile::Wide, splits: 1 };
    let ffma = layer4.launch_candidates(ConvMath::Ffma, n, room);
    assert_eq!(ffma, vec![wide, Launch { tile: ConvTile::Narrow, splits: 1 }]);
    let bf16 = layer4.launch_candidates(ConvMath::Bf16, n, room);
    assert_eq!(bf16.len(), 2 * MAX_SPLITS);
    assert_eq!(bf16[0], wide);
    assert!(bf16.iter().all(|l| (1..=MAX_SPLITS).contains(&l.splits)));
    // The buffer holds two planes: two splits at most.
    let tight = layer4.launch_candidates(ConvMath::Tf32x3, n, 2 * layer4.out_len(n) + 3);
    assert_eq!(tight.iter().map(|l| l.splits).max(), Some(2));
    // 64 channels: the narrow tile alone.
    let l1 = layer1.launch_candidates(ConvMath::Tf32x3, n, MAX_SPLITS * layer1.out_len(n));
    assert!(l1.iter().all(|l| l.tile == ConvTile::Narrow) && l1[0].splits == 1 && l1.len() == MAX_SPLITS);
    // K of 4·3·3 = 36 is 3 slices of 16 (3×TF32) and 2 of 32 (bf16): no more splits than slices.
    let tiny = ConvCase::of((4, 16, 3, 1, 4, 40), 7).tables;
    assert_eq!(tiny.max_splits(ConvMath::Tf32x3, 40, usize::MAX), 3);
    assert_eq!(tiny.max_splits(ConvMath::Ffma, 40, usize::MAX), 1);
}

/// Every shared-memory access of a warp, with the kernel's own index arithmetic, is free of bank
/// conflicts: 32-bit accesses touch 32 distinct banks (or the same word), float4 accesses do per
/// quarter-warp. Without the A tile's padding its transposed store would be a 2-way conflict.
#[test]
fn the_tiled_conv_kernels_shared_memory_accesses_have_no_bank_conflicts() {
    /// Most distinct words one bank serves in one phase of the access.
    fn ways(words: &[usize], width: usize) -> usize {
        words
            .chunks(32 / width)
            .map(|phase| {
                let mut per_bank = vec![std::collections::BTreeSet::new(); 32];
                for &w in phase {
                    for b in 0..width {
                        per_bank[(w + b) % 32].insert(w + b);
                    }
                }
                per_bank.iter().map(|s| s.len()).max().unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }
    let dummy_in = vec![0f32; 4];
    for tile in ConvTile::ALL {
        let g = Geometry::of(tile);
        let b = Block {
            input: &dummy_in,
            gather: &[0],
            w: &dummy_in,
            n: 1,
            cin: 64,
            cout: 512,
            n_taps: 1,
            m_rows: BM,
            k_len: 64,
            m0: 0,
            n0: 0,
        };
        let th: Vec<Thread> = (0..g.threads).map(|tid| Thread::new(&g, &b, tid)).collect();
        for warp in th.chunks(32) {
            for s in 0..2 {
                for i in 0..g.a_loads {
                    for j in 0..4 {
                        let store: Vec<usize> =
                            warp.iter().map(|t| g.as_idx(s, t.a_kq + j, t.a_row[i], A_PITCH)).collect();
                        assert_eq!(ways(&store, 1), 1, "{}: A store", tile.kernel());
                        let unpadded: Vec<usize> =
                            warp.iter().map(|t| g.as_idx(s, t.a_kq + j, t.a_row[i], BM)).collect();
                        assert_eq!(
                            ways(&unpadded, 1),
                            2,
                            "{}: the padding is what removes the conflict",
                            tile.kernel()
                        );
                    }
                }
                let b_store: Vec<usize> = warp.iter().map(|t| g.bs_idx(s, t.b_k, t.b_c)).collect();
                assert_eq!(ways(&b_store, 4), 1, "{}: B store", tile.kernel());
                for kk in 0..BK {
                    for half in [0, 64] {
                        let a: Vec<usize> = warp.iter().map(|t| g.as_idx(s, kk, half + 4 * t.ty, A_PITCH)).collect();
                        assert_eq!(ways(&a, 4), 1, "{}: A fragment load", tile.kernel());
                    }
                    for half in [0, g.bn / 2] {
                        let bl: Vec<usize> = warp.iter().map(|t| g.bs_idx(s, kk, half + 4 * t.tx)).collect();
                        assert_eq!(ways(&bl, 4), 1, "{}: B fragment load", tile.kernel());
                    }
                }
            }
        }
        // The static shared memory the kernel declares, as the host computes it.
        assert_eq!(4 * g.shared_words(), tile.shared_bytes());
    }
}

/// GPU passes are sized by bytes of device memory, not by a patch count: a fixed 16,384-patch
/// workspace would be ≈ 16 GiB at 64 px patches and ≈ 64 GiB at 128 px.
#[test]
fn gpu_passes_are_sized_by_device_memory() {
    use beamwatch::engine::cuda::trunk::{FREE_MEMORY_SHARE, MAX_BATCH, batch_limit, workspace_bytes_per_patch};
    let net = network();
    let gib = 1usize << 30;
    let mut per_patch = Vec::new();
    for patch in [20usize, 64, 128] {
        let engine = Engine::new(&net, patch, 1).expect("engine");
        let dp = DevicePlan::new(engine.plan()).expect("device plan");
        let bytes = workspace_bytes_per_patch(patch, dp.max_activation_per_patch());
        per_patch.push(bytes);
        for free in [2 * gib, 16 * gib, 80 * gib] {
            match batch_limit(bytes, free) {
                Some(n) => {
                    assert!(n <= MAX_BATCH && n >= 64);
                    let used = n * bytes;
                    println!(
                        "{patch} px: {} KiB/patch, {} GiB free → {n} patches ({:.2} GiB)",
                        bytes >> 10,
                        free / gib,
                        used as f64 / gib as f64
                    );
                    assert!(used as f64 <= free as f64 * FREE_MEMORY_SHARE, "{patch} px at {free} B free: {used} B");
                }
                None => {
                    assert!(64 * bytes > (free as f64 * FREE_MEMORY_SHARE) as usize, "{patch} px: 64 patches would fit")
                }
            }
        }
    }
    assert!(per_patch[0] < per_patch[1] && per_patch[1] < per_patch[2], "{per_patch:?}");
    // 20 px patches on a large GPU still run a 2048² frame (10,404 patches) in one pass.
    assert_eq!(batch_limit(per_patch[0], 80 * gib), Some(MAX_BATCH));
    // 128 px patches: far fewer than MAX_BATCH per pass.
    assert!(batch_limit(per_patch[2], 16 * gib).is_some_and(|n| n < MAX_BATCH / 2));
}

// ---- 2. without a GPU -------------------------------------------------------------------------

/// `BEAMWATCH_REQUIRE_GPU=1` (set by `tools/gpu-check.sh` on a GPU machine) turns "no usable GPU"
/// into a failure, so a GPU that fails to open can never pass as a skip.
fn gpu_required() -> bool {
    std::env::var("BEAMWATCH_REQUIRE_GPU").is_ok_and(|v| v.trim() == "1")
}

fn gpu_present() -> Option<String> {
    match Engine::for_backend(&network(), 20, 1, BackendChoice::Cuda) {
        Ok(e) => Some(e.backend().to_string()),
        Err(e) => {
            let why = format!("{e} ({:?})", std::error::Error::source(&e).map(|s| s.to_string()));
            assert!(!gpu_required(), "BEAMWATCH_REQUIRE_GPU=1 but the GPU path does not open: {why}");
            eprintln!("no usable GPU here: {why}");
            None
        }
    }
}

#[test]
fn without_a_gpu_cuda_is_a_clear_error_and_auto_falls_back_to_the_cpu() {
    if let Some(gpu) = gpu_present() {
        eprintln!("skipped: this machine has a usable GPU ({gpu}); the fallback needs a machine without one");
        return;
    }
    let net = network();
    let err = Engine::for_backend(&net, 20, 1, BackendChoice::Cuda).err().expect("cuda must fail without a GPU");
    let cause = std::error::Error::source(&err).map(|s| s.to_string()).unwrap_or_default();
    assert!(err.to_string().contains("--backend cuda needs a usable GPU"), "{err}");
    assert!(
        cause.contains("libcuda") || cause.contains("GPU") || cause.contains("NVRTC"),
        "the cause says what is missing: {cause}"
    );
    let auto = Engine::for_backend(&net, 20, 1, BackendChoice::Auto).expect("auto falls back");
    assert_eq!(auto.backend(), ActiveBackend::Cpu { threads: 1 });
    // The fallback engine computes (it is the CPU path).
    let px = golden_patches("golden_frame.npy")[..400].to_vec();
    assert_eq!(auto.features(&px), auto.cpu_features(&px));

    // The command line: cuda → one error line and a non-zero exit; auto → one info line, CPU figures.
    let tmp = tempfile::tempdir().expect("tmp");
    let w = synthetic_weights();
    let base =
        ["bench", "--size", "120", "--frames", "1", "--metric", "resnet18", "--weights", w.to_str().expect("path")];
    let mut args = base.to_vec();
    args.extend(["--backend", "cuda"]);
    let o = beamwatch(&args, tmp.path());
    assert_clean_error(&o, "GPU");
    let mut args = base.to_vec();
    args.extend(["--backend", "auto"]);
    let o = beamwatch(&args, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let fallback: Vec<String> = stderr(&o).lines().filter(|l| l.contains("no usable GPU")).map(String::from).collect();
    assert_eq!(fallback.len(), 1, "one log line says why the CPU path runs: {}", stderr(&o));
    assert!(fallback[0].contains("CPU path"), "{}", fallback[0]);
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("bench JSON");
    assert_eq!(r["backend"], "cpu");
}

// ---- 3. with a GPU ----------------------------------------------------------------------------

/// The fp32 conv kernels themselves (FFMA and 3×TF32) on [`CONV_SHAPES`] — ResNet-18's shapes
/// and the partial column and K tiles the trunk never launches — against the CPU convolution, and
/// how close the hardware comes to the transcriptions (FFMA: same fmaf order, ideally bit-exact).
#[test]
fn gpu_conv_kernels_equal_the_cpu_convolution_with_partial_tiles_everywhere() {
    let Some(gpu) = gpu_present() else {
        eprintln!("skipped: no usable GPU (NVIDIA driver + libnvrtc.so.12) on this machine");
        return;
    };
    let engine = Engine::for_backend(&network(), 20, 1, BackendChoice::Cuda).expect("cuda engine");
    for si in 0..CONV_SHAPES.len() {
        let c = ConvCase::new(si);
        let cpu = cpu::conv_once(&c.plan, &c.input, c.n, Some(&c.residual), true);
        for (math, transcribed) in [(ConvMath::Ffma, conv_tiled as ConvFn), (ConvMath::Tf32x3, tf32x3::conv_tf32x3)] {
            for tile in ConvTile::ALL {
                let name = math.kernel(tile);
                let dev = engine
                    .with_gpu_trunk(|tr| tr.conv_once(&c.tables, tile, math, 1, &c.input, Some(&c.residual), true, c.n))
                    .expect("GPU trunk")
                    .unwrap_or_else(|e| panic!("{gpu}: {} with {name}: {e}", c.describe()));
                let emulated = transcribed(&c.tables, tile, &c.input, Some(&c.residual), true, c.n);
                let (d, d_t) = (max_rel(&dev, &cpu), max_rel(&dev, &emulated));
                println!(
                    "GPU {name} {}: vs CPU {d:.2e}, vs transcription {d_t:.2e} (bit-exact: {})",
                    c.describe(),
                    dev == emulated
                );
                assert!(d < 1e-5, "{} with {name}: {d:.2e}", c.describe());
            }
        }
    }
}

/// Split-K on the GPU: both tensor-core families with 2–4 K splits (and `splitk_reduce`) on
/// [`CONV_SHAPES`] against their transcriptions (1e-5; 3×TF32 also against the CPU convolution),
/// and the whole trunk with every convolution split as far as it goes against the CPU path.
#[test]
fn gpu_split_k_equals_its_transcription_and_the_cpu_path() {
    let Some(gpu) = gpu_present() else {
        eprintln!("skipped: no usable GPU (NVIDIA driver + libnvrtc.so.12) on this machine");
        return;
    };
    let engine = Engine::for_backend(&network(), 20, 2, BackendChoice::Cuda).expect("cuda engine");
    for si in 0..CONV_SHAPES.len() {
        let c = ConvCase::new(si);
        let cpu = cpu::conv_once(&c.plan, &c.input, c.n, Some(&c.residual), true);
        for splits in 2..=MAX_SPLITS {
            for math in [ConvMath::Tf32x3, ConvMath::Bf16].into_iter().filter(|m| m.fits(&c.tables)) {
                let tile = c.tables.tile();
                let name = math.kernel(tile);
                let dev = engine
                    .with_gpu_trunk(|tr| {
                        tr.conv_once(&c.tables, tile, math, splits, &c.input, Some(&c.residual), true, c.n)
                    })
                    .expect("GPU trunk")
                    .unwrap_or_else(|e| panic!("{gpu}: {} with {name} ×{splits}: {e}", c.describe()));
                let emulated = match math {
                    ConvMath::Bf16 => {
                        mma::conv_mma_split(&c.tables, tile, splits, &c.input, Some(&c.residual), true, c.n)
                    }
                    _ => tf32x3::conv_tf32x3_split(&c.tables, tile, splits, &c.input, Some(&c.residual), true, c.n),
                };
                let d = max_rel(&dev, &emulated);
                println!("GPU {name} ×{splits} {}: vs transcription {d:.2e}", c.describe());
                assert!(d < 1e-5, "{} with {name} ×{splits}: {d:.2e}", c.describe());
                if math == ConvMath::Tf32x3 {
                    let d = max_rel(&dev, &cpu);
                    assert!(d < 1e-5, "{} with {name} ×{splits} vs CPU: {d:.2e}", c.describe());
                }
            }
        }
    }
    let px = golden_patches("golden_frame.npy");
    let cpu = engine.cpu_features(&px);
    engine.with_gpu_trunk(|t| t.set_fp32_math(ConvMath::Tf32x3)).expect("GPU trunk").expect("3×TF32");
    engine.with_gpu_trunk(|t| t.force_splits(Some(MAX_SPLITS))).expect("GPU trunk");
    let f = engine.features(&px);
    assert!(matches!(engine.backend(), ActiveBackend::Cuda { .. }), "the GPU path failed and fell back");
    let launches = engine.with_gpu_trunk(|t| t.conv_launches(px.len() / 400)).expect("GPU trunk").expect("launches");
    println!("forced splits: {launches:?}");
    assert!(launches.iter().any(|l| l.splits > 1), "no convolution was split");
    let dev = rel_dev(&f, &cpu);
    println!("3×TF32, every convolution split: GPU vs CPU features, max |Δ|/max per layer: {}", exp(&dev));
    assert!(dev.iter().all(|d| *d < 1e-4), "{dev:?}");
    engine.with_gpu_trunk(|t| t.force_splits(None)).expect("GPU trunk");
}

/// fp32 on either kernel family (FFMA, 3×TF32), whichever the start-up probe chose: the GPU's
/// features equal the CPU path's within 1e-4 on the golden frame.
#[test]
fn gpu_fp32_features_on_either_kernel_family_equal_the_cpu_path() {
    let Some(gpu) = gpu_present() else {
        eprintln!("skipped: no usable GPU (NVIDIA driver + libnvrtc.so.12) on this machine");
        return;
    };
    let engine = Engine::for_backend(&network(), 20, 2, BackendChoice::Cuda).expect("cuda engine");
    println!("{gpu}; fp32 probe: {:?}", engine.with_gpu_trunk(|t| t.fp32_probe()).flatten());
    let px = golden_patches("golden_frame.npy");
    let cpu = engine.cpu_features(&px);
    for math in [ConvMath::Ffma, ConvMath::Tf32x3] {
        engine.with_gpu_trunk(|t| t.set_fp32_math(math)).expect("GPU trunk").expect("fp32 kernels");
        let f = engine.features(&px);
        assert!(matches!(engine.backend(), ActiveBackend::Cuda { .. }), "{math:?}: the GPU path failed and fell back");
        let dev = rel_dev(&f, &cpu);
        println!("fp32 on {math:?}: GPU vs CPU features, max |Δ|/max per layer: {}", exp(&dev));
        assert!(dev.iter().all(|d| *d < 1e-4), "{math:?}: {dev:?}");
    }
}

/// The bf16 tensor-core kernels on the GPU against their transcription (same roundings of the
/// operands, f32 sums in the hardware's order) and the rounded convolution, partial tiles included.
#[test]
fn gpu_bf16_conv_kernels_equal_their_transcription() {
    let Some(gpu) = gpu_present() else {
        eprintln!("skipped: no usable GPU (NVIDIA driver + libnvrtc.so.12) on this machine");
        return;
    };
    let engine = Engine::for_backend(&network(), 20, 1, BackendChoice::Cuda).expect("cuda engine");
    for c in mma::mma_cases() {
        for tile in ConvTile::ALL {
            let dev = engine
                .with_gpu_trunk(|tr| {
                    tr.conv_once(&c.tables, tile, ConvMath::Bf16, 1, &c.input, Some(&c.residual), true, c.n)
                })
                .expect("GPU trunk")
                .unwrap_or_else(|e| panic!("{gpu}: {} with {}: {e}", c.describe(), ConvMath::Bf16.kernel(tile)));
            let emulated = mma::conv_mma(&c.tables, tile, &c.input, Some(&c.residual), true, c.n);
            let d = max_rel(&dev, &emulated);
            println!("GPU {} {}: vs transcription {d:.2e}", ConvMath::Bf16.kernel(tile), c.describe());
            assert!(d < 1e-5, "{} with {}: {d:.2e}", c.describe(), ConvMath::Bf16.kernel(tile));
        }
    }
}

/// `precision = "bf16"` on the GPU: the trunk's convolutions on tensor cores, within the bf16
/// tolerances the CPU's bf16 path is held to (tests/bf16.rs) of PyTorch's golden features and cosines.
#[test]
fn gpu_bf16_features_stay_within_the_bf16_tolerance() {
    let Some(gpu) = gpu_present() else {
        eprintln!("skipped: no usable GPU (NVIDIA driver + libnvrtc.so.12) on this machine");
        return;
    };
    let engine = Engine::for_backend(&network(), 20, 2, BackendChoice::Cuda)
        .expect("cuda engine")
        .with_precision(Precision::Bf16);
    assert_eq!(engine.precision(), Precision::Bf16, "{gpu}: the GPU did not take bf16");
    let (a, b) = (golden_patches("golden_frame.npy"), golden_patches("golden_frame_damaged.npy"));
    let (fa, fb) = (engine.features(&a), engine.features(&b));
    assert!(matches!(engine.backend(), ActiveBackend::Cuda { .. }), "the GPU path failed and fell back");
    let (e, dcos) = bf16_against_golden(&fa, &fb);
    println!("GPU bf16 vs PyTorch fp32: layer4 max |Δ|/max {e:.2e}; golden pair max |Δcos| {dcos:.2e}");
    assert!(e < BF16_FEATURE_TOL && dcos < BF16_GOLDEN_COSINE_TOL, "{e:.2e} {dcos:.2e}");
    assert!(e > 1e-5, "bf16 features equal fp32's ({e:.1e}): is bf16 running at all?");
}

#[test]
fn gpu_features_and_similarities_equal_the_cpu_path_and_pytorch_within_1e4() {
    let Some(gpu) = gpu_present() else {
        eprintln!("skipped: no usable GPU (NVIDIA driver + libnvrtc.so.12) on this machine");
        return;
    };
    println!("GPU: {gpu}");
    let net = network();
    let engine = Engine::for_backend(&net, 20, 2, BackendChoice::Cuda).expect("cuda engine");
    for name in ["golden_frame.npy", "golden_frame_damaged.npy"] {
        let px = golden_patches(name);
        let gpu_f = engine.features(&px);
        assert!(matches!(engine.backend(), ActiveBackend::Cuda { .. }), "the GPU path failed and fell back");
        let dev = rel_dev(&gpu_f, &engine.cpu_features(&px));
        println!("{name}: GPU vs CPU features, max |Δ|/max per layer: {}", exp(&dev));
        assert!(dev.iter().all(|d| *d < 1e-4), "{name}: {dev:?}");
        // The resnet18 metric asks for layer4 alone: the same numbers, the other layers not copied.
        let l4 = engine.features_of_layers(&px, [false, false, false, true]);
        assert_eq!(l4.layers[3], gpu_f.layers[3], "{name}: layer4 alone differs");
        assert!(l4.layers[0].iter().all(|v| *v == 0.0), "{name}: layer1 was copied back");
    }
    // A batch larger than one pass (MAX_BATCH) and not a multiple of the tiles.
    let big: Vec<f32> = (0..(beamwatch::engine::cuda::trunk::MAX_BATCH + 37) * 400)
        .map(|i| ((i * 2_654_435_761usize) % 1000) as f32 / 1000.0)
        .collect();
    let big_gpu = engine.features(&big);
    // features() falls back to the CPU when a GPU pass fails: without this, CPU would be compared with CPU.
    assert!(matches!(engine.backend(), ActiveBackend::Cuda { .. }), "the two-pass batch fell back to the CPU");
    let dev = rel_dev(&big_gpu, &engine.cpu_features(&big));
    println!("{} patches: GPU vs CPU max rel {}", big.len() / 400, exp(&dev));
    assert!(dev.iter().all(|d| *d < 1e-4), "{dev:?}");

    // The all-GPU frame path (extraction from an f32 frame, cosine on the device) on the golden
    // pair against PyTorch's cosine similarities.
    let frame =
        |n: &str| -> Vec<f32> { read_npy::<_, Array2<f32>>(golden(n)).expect("frame").iter().copied().collect() };
    let frames = vec![frame("golden_frame.npy"), frame("golden_frame_damaged.npy")];
    let golden_cos: Array1<f32> = read_npy(golden("golden_cosine.npy")).expect("golden cosine");
    let sims = engine
        .with_gpu_trunk(|trunk| {
            let mut p = beamwatch::engine::cuda::frame::FramePipeline::<f32>::new(trunk, 200, 200, 0.0, 1.0)?;
            p.run(&frames, 0.9)?;
            Ok::<_, beamwatch::engine::cuda::CudaError>(p.similarities().to_vec())
        })
        .expect("GPU trunk")
        .expect("frame pipeline");
    assert_eq!(sims.len(), 100);
    let d = sims.iter().zip(golden_cos.iter()).fold(0f32, |m, (a, b)| m.max((a - b).abs() / b.abs()));
    println!("frame pipeline cosine vs PyTorch: max relative {d:.2e}");
    assert!(d < 1e-4, "{d:.2e}");
}
