//! A plan's weights packed once, at load time, into the GEMM library's panel layout and number
//! format, so that no GEMM call packs or converts a weight again.

use gemmkit::{MatRef, PackedLhs, bf16, prepack_lhs};

use crate::engine::plan::{ConvPlan, Plan};

/// One convolution: a packed bf16 `Wᵀ` (`cout × n_taps·cin`) per class, and the bias in bf16.
pub struct PackedConv {
    pub classes: Vec<PackedLhs<bf16>>,
    pub bias: Vec<bf16>,
}

impl PackedConv {
    pub fn new(p: &ConvPlan) -> Self {
        let classes = p
            .classes
            .iter()
            .map(|c| {
                // The plan stores `[n_taps·cin][cout]` row-major; read as `Wᵀ` through its strides.
                let w: Vec<bf16> = c.weight.iter().map(|&v| bf16::from_f32(v)).collect();
                let k = c.n_taps * p.cin;
                prepack_lhs(MatRef::new(&w, p.cout, k, 1, p.cout as isize))
            })
            .collect();
        Self { classes, bias: p.bias.iter().map(|&v| bf16::from_f32(v)).collect() }
    }
}

pub struct PackedBlock {
    pub conv1: PackedConv,
    pub conv2: PackedConv,
    pub downsample: Option<PackedConv>,
}

/// Every convolution; the stem stays f32 (one input channel, 2.8 % of the work).
pub struct PackedTrunk {
    /// The stem's `Wᵀ` (`cout × k²`).
    pub stem: PackedLhs<f32>,
    pub blocks: Vec<PackedBlock>,
}

impl PackedTrunk {
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
