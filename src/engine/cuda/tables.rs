//! The CPU [`Plan`] flattened into the arrays the kernels read: the GPU runs the very same
//! padding-free classes, gathers and packed weights as the CPU path, so both compute the same sums.
//!
//! Launch sequence for a batch of `n` patches (`[n][patch²]` scaled pixels), buffers
//! `[slot][patch][channel]`:
//! 1. `stem_conv` → S (`stem.positions` slots, 64 channels)
//! 2. `max_pool(S)` → X (layer1's slot order)
//! 3. per block: `conv_tiled_*(X → R)` for the downsample (no ReLU, no residual) when there is one,
//!    else R = X; `conv_tiled_*(X → T, ReLU)`; `conv_tiled_*(T → Y, + R, ReLU)`; X ← Y; after the
//!    second block of layer l, `global_avg_pool(X)` → features of layer l (`[n][C_l]`).

use super::super::EngineError;
use super::super::plan::{ConvPlan, Plan};

/// Output rows per block of `conv_tiled_*`, its K slice and the padding of its transposed A tile;
/// must match kernels/conv.cu (`CT_BM`, `CT_BK`, `CT_APAD`).
pub const CONV_TILE_M: usize = 128;
pub const CONV_TILE_K: usize = 8;
pub const CONV_A_PAD: usize = 4;
/// Every load and store of the kernel is a float4: cin and cout must be multiples of this.
pub const CONV_VECTOR: usize = 4;

/// kernels/conv.cu's tensor-core kernels (`conv_mma_bf16<BN>`, `conv_mma_tf32x3<BN>`): threads per
/// block; the bf16 kernel's K slice and shared row pitch (in bf16), the TF32 kernel's (in floats).
/// Must match `MMA_THREADS`, `MMA_BK`, `MMA_PITCH`, `TF_BK` and `TF_PITCH`.
pub const MMA_THREADS: usize = 256;
pub const MMA_TILE_K: usize = 32;
pub const MMA_PITCH: usize = 40;
pub const TF_TILE_K: usize = 16;
pub const TF_PITCH: usize = 20;
/// The bf16 kernel's weight copies are 8 bf16 along k and its stores pairs of channels: cin and
/// cout must be multiples of this (ResNet-18's are 64–512).
pub const MMA_VECTOR: usize = 8;
/// Most K splits one launch of a tensor-core kernel takes (`split_k_range` in kernels/conv.cu):
/// the partial sums of every split of ResNet-18's largest output fit one activation buffer.
pub const MAX_SPLITS: usize = 4;

/// Split `z` of `splits` of a K of `slices` slices: slices `[z·slices/splits, (z+1)·slices/splits)`,
/// balanced, empty only when `slices < splits` — kernels/conv.cu's `split_k_range`.
pub fn split_slices(slices: usize, z: usize, splits: usize) -> (usize, usize) {
    (z * slices / splits, (z + 1) * slices / splits)
}

/// The arithmetic a convolution runs on: which of kernels/conv.cu's kernel families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvMath {
    /// `conv_tiled_*`: f32 FFMA.
    Ffma,
    /// `conv_mma_tf32x3_*`: every product as three TF32 tensor-core products, fp32-level accuracy
    /// (sm_80 and later).
    Tf32x3,
    /// `conv_mma_bf16_*`: bf16 operands on tensor cores, f32 sums (sm_80 and later).
    Bf16,
}

impl ConvMath {
    pub const ALL: [Self; 3] = [Self::Ffma, Self::Tf32x3, Self::Bf16];

    pub fn kernel(self, tile: ConvTile) -> &'static str {
        match (self, tile) {
            (Self::Ffma, _) => tile.kernel(),
            (Self::Tf32x3, ConvTile::Wide) => "conv_mma_tf32x3_128x128",
            (Self::Tf32x3, ConvTile::Narrow) => "conv_mma_tf32x3_128x64",
            (Self::Bf16, ConvTile::Wide) => "conv_mma_bf16_128x128",
            (Self::Bf16, ConvTile::Narrow) => "conv_mma_bf16_128x64",
        }
    }

    pub fn threads(self, tile: ConvTile) -> usize {
        match self {
            Self::Ffma => tile.threads(),
            Self::Tf32x3 | Self::Bf16 => MMA_THREADS,
        }
    }

    /// Static shared memory of one block: both buffers of the A and B slices.
    pub fn shared_bytes(self, tile: ConvTile) -> usize {
        match self {
            Self::Ffma => tile.shared_bytes(),
            Self::Tf32x3 => 4 * 2 * TF_PITCH * (CONV_TILE_M + tile.n()),
            Self::Bf16 => 2 * 2 * MMA_PITCH * (CONV_TILE_M + tile.n()),
        }
    }

    /// Whether the kernel family takes this convolution (every table of [`ConvTables::new`] fits
    /// the f32 ones).
    pub fn fits(self, t: &ConvTables) -> bool {
        match self {
            Self::Ffma | Self::Tf32x3 => true,
            Self::Bf16 => t.cin.is_multiple_of(MMA_VECTOR) && t.cout.is_multiple_of(MMA_VECTOR),
        }
    }

    /// Whether it needs tensor cores (compute capability 8.0 or later).
    pub fn tensor_cores(self) -> bool {
        self != Self::Ffma
    }

    /// k per slice of the main loop.
    pub fn tile_k(self) -> usize {
        match self {
            Self::Ffma => CONV_TILE_K,
            Self::Tf32x3 => TF_TILE_K,
            Self::Bf16 => MMA_TILE_K,
        }
    }

    /// Whether the kernels split K over the grid's z (the tensor-core ones). `conv_tiled` does
    /// not: the split's bounds raised it from 128 / 125 registers (sm_80 / sm_90) to 129–137
    /// (ptxas, NVRTC 12.9), over the 128 its second block per SM needs.
    pub fn splits_k(self) -> bool {
        self.tensor_cores()
    }
}

/// The two instantiations of kernels/conv.cu's `conv_tiled<BN>`: 128×BN output tiles, 2·BN threads
/// of 8×8 outputs each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvTile {
    /// 128×128, for cout a multiple of 128 (layers 2–4).
    Wide,
    /// 128×64, for layer1's 64 channels and any cout 128 does not divide.
    Narrow,
}

impl ConvTile {
    pub const ALL: [Self; 2] = [Self::Wide, Self::Narrow];

    /// Columns of the output tile (BN).
    pub fn n(self) -> usize {
        match self {
            Self::Wide => 128,
            Self::Narrow => 64,
        }
    }

    pub fn threads(self) -> usize {
        2 * self.n()
    }

    pub fn kernel(self) -> &'static str {
        match self {
            Self::Wide => "conv_tiled_128x128",
            Self::Narrow => "conv_tiled_128x64",
        }
    }

    /// Static shared memory of one block: both buffers of the A and B slices.
    pub fn shared_bytes(self) -> usize {
        4 * 2 * CONV_TILE_K * ((CONV_TILE_M + CONV_A_PAD) + self.n())
    }
}

/// How one convolution is launched: its tile and K splits (grid z; 1 for none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub tile: ConvTile,
    pub splits: usize,
}

/// One convolution as `conv_tiled_*` reads it.
#[derive(Clone, Debug)]
pub struct ConvTables {
    pub cin: usize,
    pub cout: usize,
    pub out_slots: usize,
    pub n_classes: usize,
    /// Positions of the largest class (the grid covers its rows).
    pub max_pos: usize,
    /// `[class][5]`: first slot, positions, taps, offset into `gathers`, offset into `weights`.
    pub desc: Vec<i32>,
    pub gathers: Vec<i32>,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

impl ConvTables {
    pub fn new(p: &ConvPlan) -> Result<Self, EngineError> {
        if p.cin == 0 || p.cout == 0 || !p.cout.is_multiple_of(CONV_VECTOR) || !p.cin.is_multiple_of(CONV_VECTOR) {
            return Err(EngineError::Plan(format!(
                "conv {}→{} channels: the GPU kernel needs multiples of {CONV_VECTOR}",
                p.cin, p.cout
            )));
        }
        let (mut desc, mut gathers, mut weights) = (Vec::new(), Vec::new(), Vec::new());
        for c in &p.classes {
            desc.extend([c.first_slot, c.n_pos, c.n_taps, gathers.len(), weights.len()].map(to_i32));
            gathers.extend(c.gather.iter().map(|&s| to_i32(s)));
            weights.extend_from_slice(&c.weight);
        }
        if weights.len() > i32::MAX as usize || gathers.len() > i32::MAX as usize {
            return Err(EngineError::Plan("plan tables exceed 2^31 entries".into()));
        }
        Ok(Self {
            cin: p.cin,
            cout: p.cout,
            out_slots: p.out_slots(),
            n_classes: p.classes.len(),
            max_pos: p.classes.iter().map(|c| c.n_pos).max().unwrap_or(0),
            desc,
            gathers,
            weights,
            bias: p.bias.clone(),
        })
    }

    /// Whether every class's rows, gathers and weights lie inside the tables and the channel
    /// counts fit the kernel: what a launch relies on for tables not made by [`Self::new`].
    pub fn consistent(&self) -> bool {
        let channels_ok = self.cin > 0
            && self.cout > 0
            && self.cin.is_multiple_of(CONV_VECTOR)
            && self.cout.is_multiple_of(CONV_VECTOR)
            && self.bias.len() >= self.cout;
        channels_ok
            && self.n_classes > 0
            && self.desc.len() == 5 * self.n_classes
            && self.desc.chunks_exact(5).all(|d| {
                let [first, pos, taps, g, w] = [d[0], d[1], d[2], d[3], d[4]].map(|v| usize::try_from(v).ok());
                match (first, pos, taps, g, w) {
                    (Some(first), Some(pos), Some(taps), Some(g), Some(w)) => {
                        pos > 0
                            && taps > 0
                            && first + pos <= self.out_slots
                            && g + pos * taps <= self.gathers.len()
                            && w + taps * self.cin * self.cout <= self.weights.len()
                            // 16-byte weight copies of the tensor-core kernels: 8 bf16 or 4 f32.
                            && w.is_multiple_of(MMA_VECTOR)
                            && self.gathers[g..g + pos * taps].iter().all(|&s| s >= 0)
                    }
                    _ => false,
                }
            })
    }

    /// The weights as the tensor-core kernels read them: per class, `W_t[co][k]` (k = tap·cin + ci
    /// contiguous, as their B fragments want it), each value through `f`, at the same offsets as
    /// [`Self::weights`] (`[k][co]`, the same size).
    fn weights_t<T: Copy + Default>(&self, f: impl Fn(f32) -> T) -> Vec<T> {
        let mut out = vec![T::default(); self.weights.len()];
        for d in self.desc.chunks_exact(5) {
            let (taps, off) = (d[2] as usize, d[4] as usize);
            let k_len = taps * self.cin;
            let (src, dst) = (&self.weights[off..off + k_len * self.cout], &mut out[off..off + k_len * self.cout]);
            for (k, row) in src.chunks_exact(self.cout).enumerate() {
                for (co, &v) in row.iter().enumerate() {
                    dst[co * k_len + k] = f(v);
                }
            }
        }
        out
    }

    /// [`Self::weights_t`] for `conv_mma_tf32x3`: f32 (it splits them itself).
    pub fn weights_f32_t(&self) -> Vec<f32> {
        self.weights_t(|v| v)
    }

    /// [`Self::weights_t`] for `conv_mma_bf16`: rounded to bf16 (nearest, ties to even), as bits.
    pub fn weights_bf16_t(&self) -> Vec<u16> {
        self.weights_t(|v| half::bf16::from_f32(v).to_bits())
    }

    /// Floats of the output for `n` patches (`[out slot][n][cout]`): one plane of split-K's
    /// partial sums.
    pub fn out_len(&self, n: usize) -> usize {
        self.out_slots * n * self.cout
    }

    /// K slices of the class with the most taps on `math`'s kernels: more splits than this leave
    /// every split of that class empty but one.
    pub fn max_slices(&self, math: ConvMath) -> usize {
        self.desc.chunks_exact(5).map(|d| (d[2] as usize * self.cin).div_ceil(math.tile_k())).max().unwrap_or(0)
    }

    /// K splits this convolution may take on `math` for `n` patches with `partial_len` floats of
    /// partial-sum buffer: the family splits K, at most [`MAX_SPLITS`], no more than its longest
    /// class has K slices, and every plane inside the buffer.
    pub fn max_splits(&self, math: ConvMath, n: usize, partial_len: usize) -> usize {
        if !math.splits_k() {
            return 1;
        }
        let by_buffer = partial_len / self.out_len(n).max(1);
        MAX_SPLITS.min(self.max_slices(math)).min(by_buffer).max(1)
    }

    /// Every launch this convolution takes on `math`, the default first (the tile that fits cout,
    /// no split): both tiles where the wide one fits cout (only the narrow one where it does not: a
    /// wide tile over 64 channels is half idle), each with every split of [`Self::max_splits`].
    pub fn launch_candidates(&self, math: ConvMath, n: usize, partial_len: usize) -> Vec<Launch> {
        let default = self.tile();
        let tiles: &[ConvTile] = if default == ConvTile::Wide { &ConvTile::ALL } else { &[ConvTile::Narrow] };
        let most = self.max_splits(math, n, partial_len);
        tiles.iter().flat_map(|&tile| (1..=most).map(move |splits| Launch { tile, splits })).collect()
    }

    /// Row tiles of class `c` for `n` patches.
    fn class_tiles(&self, c: usize, n: usize) -> usize {
        (self.desc[5 * c + 1] as usize * n).div_ceil(CONV_TILE_M)
    }

    /// The tile the trunk launches this convolution with: the wide one when it divides cout, so
    /// no column tile is partial.
    pub fn tile(&self) -> ConvTile {
        if self.cout.is_multiple_of(ConvTile::Wide.n()) { ConvTile::Wide } else { ConvTile::Narrow }
    }

    /// `conv_tiled_*` grid for `n` patches: (every class's row tiles back to back, column tiles, 1).
    /// Sized to the work: a grid over the largest class × all classes left 42 % of the blocks idle.
    pub fn grid(&self, n: usize, tile: ConvTile) -> (u32, u32, u32) {
        let rows: usize = (0..self.n_classes).map(|c| self.class_tiles(c, n)).sum();
        (rows as u32, self.cout.div_ceil(tile.n()) as u32, 1)
    }

    /// The (class, row tile) block `x` of the grid computes — kernels/conv.cu's own loop, here so
    /// the tests can check every output row is covered once without a GPU.
    pub fn block_tile(&self, n: usize, x: usize) -> (usize, usize) {
        let (mut c, mut tile) = (0, x);
        while c + 1 < self.n_classes {
            let t = self.class_tiles(c, n);
            if tile < t {
                break;
            }
            tile -= t;
            c += 1;
        }
        (c, tile)
    }
}

fn to_i32(v: usize) -> i32 {
    // Plan sizes are bounded by PATCH_MAX (256 px): slots ≤ 128², taps ≤ 9, weights ≤ 9·512·512.
    i32::try_from(v).unwrap_or(i32::MAX)
}

#[derive(Clone, Debug)]
pub struct StemTables {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub out_w: usize,
    pub positions: usize,
    pub cout: usize,
    /// `[k²][cout]`.
    pub weight: Vec<f32>,
    /// `[positions][cout]`.
    pub bias_map: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct PoolTables {
    pub slots: usize,
    /// `[slots + 1]`: window s is `windows[win_off[s]..win_off[s + 1]]`.
    pub win_off: Vec<i32>,
    pub windows: Vec<i32>,
}

#[derive(Clone, Debug)]
pub struct BlockTables {
    pub conv1: ConvTables,
    pub conv2: ConvTables,
    pub downsample: Option<ConvTables>,
}

#[derive(Clone, Debug)]
pub struct DevicePlan {
    pub patch: usize,
    pub stem: StemTables,
    pub pool: PoolTables,
    /// layer l = blocks[2l], blocks[2l + 1].
    pub blocks: Vec<BlockTables>,
}

impl DevicePlan {
    pub fn new(plan: &Plan) -> Result<Self, EngineError> {
        let s = &plan.stem;
        let stem = StemTables {
            k: s.k,
            stride: s.stride,
            pad: s.pad,
            out_w: s.out_w,
            positions: s.out_h * s.out_w,
            cout: s.cout,
            weight: s.weight.clone(),
            bias_map: s.bias_map.clone(),
        };
        let mut win_off = vec![0i32];
        let mut windows = Vec::new();
        for w in &plan.pool.windows {
            windows.extend(w.iter().map(|&i| to_i32(i)));
            win_off.push(to_i32(windows.len()));
        }
        let pool = PoolTables { slots: plan.pool.windows.len(), win_off, windows };
        let blocks = plan
            .blocks
            .iter()
            .map(|b| {
                Ok(BlockTables {
                    conv1: ConvTables::new(&b.conv1)?,
                    conv2: ConvTables::new(&b.conv2)?,
                    downsample: b.downsample.as_ref().map(ConvTables::new).transpose()?,
                })
            })
            .collect::<Result<_, EngineError>>()?;
        Ok(Self { patch: plan.patch, stem, pool, blocks })
    }

    /// Floats of the largest activation tensor per patch (stem output or any block tensor).
    pub fn max_activation_per_patch(&self) -> usize {
        let blocks = self.blocks.iter().flat_map(|b| {
            [Some(&b.conv1), Some(&b.conv2), b.downsample.as_ref()].into_iter().flatten().map(|c| c.out_slots * c.cout)
        });
        blocks.chain([self.stem.positions * self.stem.cout, self.pool.slots * self.stem.cout]).max().unwrap_or(0)
    }
}
