//! A plan's weights packed once, at load time, into the GEMM library's panel layout and number
//! format, so that no GEMM call packs or converts a weight again.

use gemmkit::{MatRef, PackedLhs, prepack_lhs};

use super::precision::Act;
use crate::engine::plan::{ConvPlan, Plan};

/// One convolution: a packed `Wᵀ` (`cout × n_taps·cin`) per class, and the bias in `T`.
pub struct PackedConv<T> {
    pub classes: Vec<PackedLhs<T>>,
    pub bias: Vec<T>,
}

impl<T: Act> PackedConv<T> {
    pub fn new(p: &ConvPlan) -> Self {
        let classes = p
            .classes
            .iter()
            .map(|c| {
                // The plan stores `[n_taps·cin][cout]` row-major; read as `Wᵀ` through its strides.
                let w: Vec<T> = c.weight.iter().map(|&v| T::from_f32(v)).collect();
                let k = c.n_taps * p.cin;
                prepack_lhs(MatRef::new(&w, p.cout, k, 1, p.cout as isize))
            })
            .collect();
        Self { classes, bias: p.bias.iter().map(|&v| T::from_f32(v)).collect() }
    }
}

pub struct PackedBlock<T> {
    pub conv1: PackedConv<T>,
    pub conv2: PackedConv<T>,
    pub downsample: Option<PackedConv<T>>,
}

/// Every convolution; the stem stays f32 (one input channel, 2.8 % of the work).
pub struct PackedTrunk<T> {
    /// The stem's `Wᵀ` (`cout × k²`).
    pub stem: PackedLhs<f32>,
    pub blocks: Vec<PackedBlock<T>>,
}

impl<T: Act> PackedTrunk<T> {
    pub fn new(plan: &Plan) -> Self {
        let blocks = plan
            .blocks
            .iter()
            .map(|b| PackedBlock {
                conv1: PackedConv::new(&b.conv1),
                conv2: PackedConv::new(&b.conv2),
                downsample: b.downsample.as_ref().map(PackedConv::new),
            })
            .collect();
        let st = &plan.stem;
        let stem = prepack_lhs(MatRef::new(&st.weight, st.cout, st.k2, 1, st.cout as isize));
        Self { stem, blocks }
    }
}
