//! A plan's weights packed once, at load time, into the GEMM library's panel layout and number
//! format, so that no GEMM call packs or converts a weight again.
//!
//! The bf16 path keeps activations `[channel][slot][patch]`, so an input read whole is already a
//! row-major `cin·in_slots × patches` matrix. A class of one output position whose taps read every
//! input slot once (at 2×2 and 1×1 maps, where every 3×3 window covers the whole map) then needs
//! no gather: its weights are packed with their columns in the input's `(channel, slot)` order
//! instead. When every class of a convolution is such a class, their weights stack into one
//! `cout·out_slots`-row matrix whose product is the whole output, `[channel][slot][patch]` as it
//! lies: one GEMM, which packs the input once for all output positions instead of once per position.

use gemmkit::{MatRef, PackedLhs, bf16, prepack_lhs};

use super::winograd::MAX_DIRECT_TERMS;
use crate::engine::plan::{ClassPlan, ConvPlan, Plan};
use crate::engine::winograd::{TermRows, Winograd};

/// One class's packed bf16 `Wᵀ` (`cout × n_taps·cin`).
pub struct PackedClass {
    pub w: PackedLhs<bf16>,
    /// Columns in `(channel, input slot)` order: the GEMM reads the whole input in place.
    pub in_place: bool,
}

/// One convolution: its classes' packed weights (or all of them stacked), or its Winograd points',
/// and the bias in bf16.
pub struct PackedConv {
    /// The convolution as Winograd GEMMs, where the plan has them with ±1 coefficients; then
    /// `classes` is empty and `whole` is `None`.
    pub winograd: Option<PackedWinograd>,
    pub classes: Vec<PackedClass>,
    /// Every class in place: `cout·out_slots × cin·in_slots`, rows `(channel, output slot)`; then
    /// `classes` is empty.
    pub whole: Option<PackedLhs<bf16>>,
    pub bias: Vec<bf16>,
    /// `bias` per row of `whole` (each channel's, once per output slot).
    pub whole_bias: Vec<bf16>,
}

/// A convolution's Winograd GEMMs for the bf16 path (`super::bf16::winograd_conv`).
pub struct PackedWinograd {
    /// Per point, the transformed `Uᵀ` (`cout × cin`) in bf16.
    pub points: Vec<PackedLhs<bf16>>,
    /// The transforms in 2D ([`Winograd::direct_terms`]).
    pub input_terms: TermRows,
    pub output_terms: TermRows,
    /// Patches per pass.
    pub group: usize,
}

impl PackedWinograd {
    /// Where every coefficient is ±1 and the 2D term lists are short enough.
    fn new(w: &Winograd, cin: usize, cout: usize) -> Option<Self> {
        if !w.unit_coefficients() {
            return None;
        }
        let (input_terms, output_terms) = w.direct_terms();
        if input_terms.iter().chain(&output_terms).any(|t| t.len() > MAX_DIRECT_TERMS) {
            return None;
        }
        // `U` is `[point][cin][cout]`: each point's `Uᵀ` is its block read column-major.
        let points = w
            .weight
            .chunks_exact(cin * cout)
            .map(|u| {
                let u: Vec<bf16> = u.iter().map(|&v| bf16::from_f32(v)).collect();
                prepack_lhs(MatRef::new(&u, cout, cin, 1, cout as isize))
            })
            .collect();
        Some(Self { points, input_terms, output_terms, group: w.group })
    }
}

/// For a class that reads every one of `in_slots` input slots once: the tap reading each slot.
fn tap_of_slot(c: &ClassPlan, in_slots: usize) -> Option<Vec<usize>> {
    if c.n_pos != 1 || c.n_taps != in_slots {
        return None;
    }
    let mut tap = vec![usize::MAX; in_slots];
    for (t, &s) in c.gather.iter().enumerate() {
        if s >= in_slots || tap[s] != usize::MAX {
            return None;
        }
        tap[s] = t;
    }
    Some(tap)
}

impl PackedConv {
    /// `in_slots`: the input's slots. `in_place`: pack in-place classes as such (tests compare
    /// with the gathered form). `winograd`: pack the Winograd points instead of the classes where
    /// the plan has them.
    pub fn new(p: &ConvPlan, in_slots: usize, in_place: bool, winograd: bool) -> Self {
        let (cin, cout) = (p.cin, p.cout);
        let bias: Vec<bf16> = p.bias.iter().map(|&v| bf16::from_f32(v)).collect();
        if let Some(w) = p.winograd.as_ref().filter(|_| winograd).and_then(|w| PackedWinograd::new(w, cin, cout)) {
            return Self { winograd: Some(w), classes: Vec::new(), whole: None, bias, whole_bias: Vec::new() };
        }
        let taps: Vec<Option<Vec<usize>>> =
            p.classes.iter().map(|c| if in_place { tap_of_slot(c, in_slots) } else { None }).collect();
        // `[k][cout]` row-major → bf16 `Wᵀ` (`cout` rows); in place, column `(ci, s)` is the
        // weight row `(tap reading s, ci)`.
        let columns = |c: &ClassPlan, tap: &Option<Vec<usize>>| -> Vec<bf16> {
            let k = c.n_taps * cin;
            let mut w = vec![bf16::ZERO; cout * k];
            for j in 0..k {
                let src = match tap {
                    Some(tap) => tap[j % in_slots] * cin + j / in_slots,
                    None => j,
                };
                for (co, &v) in c.weight[src * cout..(src + 1) * cout].iter().enumerate() {
                    w[co * k + j] = bf16::from_f32(v);
                }
            }
            w
        };
        let out_slots = p.out_slots();
        let whole = (taps.iter().all(Option::is_some) && p.classes.len() == out_slots).then(|| {
            let k = cin * in_slots;
            let mut w = vec![bf16::ZERO; cout * out_slots * k];
            for (c, tap) in p.classes.iter().zip(&taps) {
                let cw = columns(c, tap);
                for co in 0..cout {
                    let row = co * out_slots + c.first_slot;
                    w[row * k..(row + 1) * k].copy_from_slice(&cw[co * k..(co + 1) * k]);
                }
            }
            prepack_lhs(MatRef::from_row_major(&w, cout * out_slots, k))
        });
        // The stacked matrix replaces the classes' own (no copy of them is kept).
        let classes = if whole.is_some() {
            Vec::new()
        } else {
            p.classes
                .iter()
                .zip(&taps)
                .map(|(c, tap)| {
                    let k = c.n_taps * cin;
                    PackedClass {
                        w: prepack_lhs(MatRef::from_row_major(&columns(c, tap), cout, k)),
                        in_place: tap.is_some(),
                    }
                })
                .collect()
        };
        let whole_bias = match whole {
            Some(_) => bias.iter().flat_map(|&b| std::iter::repeat_n(b, out_slots)).collect(),
            None => Vec::new(),
        };
        Self { winograd: None, classes, whole, bias, whole_bias }
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
        let mut slots = plan.pool.order.len();
        let blocks = plan
            .blocks
            .iter()
            .map(|b| {
                let packed = PackedBlock {
                    conv1: PackedConv::new(&b.conv1, slots, true, true),
                    conv2: PackedConv::new(&b.conv2, b.conv1.out_slots(), true, true),
                    downsample: b.downsample.as_ref().map(|d| PackedConv::new(d, slots, true, true)),
                };
                slots = b.conv2.out_slots();
                packed
            })
            .collect();
        let st = &plan.stem;
        let stem = prepack_lhs(MatRef::new(&st.weight, st.cout, st.k2, 1, st.cout as isize));
        Self { stem, blocks }
    }
}
