//! The bf16 CPU path: its error against fp32 and PyTorch's golden features, measured here and held
//! to a tolerance set from that measurement (README "Precision"). On a CPU without AVX512-BF16
//! the engine must fall back to fp32 and give fp32's features; where it has it, `precision = "bf16"`
//! must run whichever format the engine's start-up probe measured faster.

mod common;

use std::sync::Arc;

use beamwatch::damage::{AnalysisSettings, Analyzer, Metric};
use beamwatch::engine::{Engine, Network, Precision};
use beamwatch::frame::Frame;
use beamwatch::simulate::{Damage, Disc, Specimen};
use beamwatch::weights::StateDict;
use common::*;

fn plain_engine() -> Engine {
    let sd = StateDict::read(&synthetic_weights()).expect("synthetic weights");
    Engine::new(&Network::from_state_dict(&sd).expect("network"), 20, 2).expect("engine")
}

/// bf16 wherever the CPU has AVX512-BF16, whether or not it is faster here: these tests are about
/// its numbers.
fn engine(precision: Precision) -> Engine {
    plain_engine().with_precision_unmeasured(precision)
}

/// Every patch's cosine on a 1020² frame, bf16 against fp32: measured 2.41e-3 (Zen 5), 2.57e-3 with
/// layer3 as Winograd GEMMs (Intel Xeon); the other tolerances are in `common`.
const FRAME_COSINE_TOL: f64 = 5e-3;

#[test]
fn bf16_features_and_cosines_stay_within_their_measured_tolerance() {
    let bf = engine(Precision::Bf16);
    let fp = engine(Precision::Fp32);
    if !beamwatch::engine::cpu::precision::native_bf16() {
        // The fallback is the test here: the engine says fp32 and computes fp32.
        assert_eq!(bf.precision(), Precision::Fp32);
        let px = golden_patches("golden_frame.npy");
        assert_eq!(bf.features(&px), fp.features(&px));
        println!("this CPU has no AVX512-BF16: bf16 falls back to fp32 (checked)");
        return;
    }
    assert_eq!(bf.precision(), Precision::Bf16);
    let (a, b) = (golden_patches("golden_frame.npy"), golden_patches("golden_frame_damaged.npy"));
    let (e, dcos) = bf16_against_golden(&bf.features(&a), &bf.features(&b));
    println!("bf16 vs PyTorch fp32: layer4 max |Δ| / max |golden| = {e:.2e}; golden pair max |Δcos| = {dcos:.2e}");
    assert!(e < BF16_FEATURE_TOL, "bf16 layer4 deviates {e:.2e} relative (tolerance {BF16_FEATURE_TOL:.1e})");
    assert!(
        dcos < BF16_GOLDEN_COSINE_TOL,
        "bf16 golden cosines deviate {dcos:.2e} (tolerance {BF16_GOLDEN_COSINE_TOL:.1e})"
    );
    // bf16 is not fp32: a test that could not tell them apart would prove nothing.
    assert!(e > 1e-5, "bf16 features equal fp32's ({e:.1e}): is bf16 running at all?");

    // A 1020² frame with drift and a damaged disc, through the whole analysis: every patch's
    // cosine under bf16 against fp32.
    let size = 1020;
    let s = Specimen::new(size, size, 10.0, 1);
    let c = size as f64 / 2.0;
    let damage = Damage {
        discs: vec![Disc { cx: c, cy: c, radius_px: size as f64 / 6.0, edge_px: 8.0, amount: 0.8 }],
        ..Damage::default()
    };
    let frame = |d: &Damage, shift, seed| {
        Frame::from_f32(size, size, s.render_counts(d, shift, Some(50.0), seed)).expect("frame")
    };
    let (reference, damaged) = (frame(&Damage::default(), (0.0, 0.0), 1), frame(&damage, (0.7, -0.4), 2));
    let similarity = |e: Engine| {
        let mut an = Analyzer::new(AnalysisSettings::new(Metric::Resnet18), Some(Arc::new(e))).expect("analyzer");
        an.set_reference(&reference).expect("reference");
        an.analyse(&damaged).expect("analysis").map.similarity
    };
    let (s_bf, s_fp) = (similarity(bf), similarity(fp));
    assert_eq!(s_bf.len(), 2601);
    let mut worst = 0f64;
    for (x, y) in s_bf.iter().zip(&s_fp) {
        assert_eq!(x.is_nan(), y.is_nan());
        if !x.is_nan() {
            worst = worst.max((*x as f64 - *y as f64).abs());
        }
    }
    println!("bf16 vs fp32 on a 1020² frame (2,601 patches): max |Δcos| = {worst:.2e}");
    assert!(worst < FRAME_COSINE_TOL, "bf16 frame cosines deviate {worst:.2e} (tolerance {FRAME_COSINE_TOL:.1e})");
}

#[test]
fn asking_for_bf16_keeps_it_only_where_it_measured_faster() {
    let e = plain_engine().with_precision(Precision::Bf16);
    let px = golden_patches("golden_frame.npy");
    if !beamwatch::engine::cpu::precision::native_bf16() {
        assert_eq!(e.precision(), Precision::Fp32);
        assert!(e.precision_probe().is_none(), "no bf16 to time on this CPU");
        println!("this CPU has no AVX512-BF16: nothing to time, fp32 runs");
        return;
    }
    let probe = e.precision_probe().expect("bf16 asked for on an AVX512-BF16 CPU: the probe must have run");
    println!("probe: {probe}; kept {:?}", e.precision());
    assert!(probe.patches >= 8 && probe.fp32_ms > 0.0 && probe.bf16_ms > 0.0, "{probe:?}");
    let expected = if probe.keeps_bf16() { Precision::Bf16 } else { Precision::Fp32 };
    assert_eq!(e.precision(), expected, "the engine must run what its own probe chose");
    // And compute it: the same features, bit for bit, as an engine built for that precision.
    assert_eq!(e.features(&px), engine(expected).features(&px));
    // fp32 asked for is never timed.
    assert!(plain_engine().with_precision(Precision::Fp32).precision_probe().is_none());
}

#[test]
fn bf16_features_do_not_depend_on_how_the_patches_are_chunked() {
    // Chunks of 1 patch run every class as one small GEMM; one chunk of 2,601 patches splits the
    // large classes into column blocks, some cut inside a position's run of patches.
    let bf = engine(Precision::Bf16);
    if bf.precision() != Precision::Bf16 {
        println!("this CPU has no AVX512-BF16: nothing to compare (the fallback is checked above)");
        return;
    }
    let a = golden_patches("golden_frame.npy");
    let mut px = Vec::with_capacity(a.len() * 27);
    for _ in 0..27 {
        px.extend_from_slice(&a);
    }
    let n = px.len() / 400;
    let whole = bf.with_chunk(n).features(&px);
    let single = engine(Precision::Bf16).with_chunk(1).features(&px[..100 * 400]);
    let mut worst = 0f64;
    for l in 0..4 {
        for i in 0..100 {
            for (x, y) in whole.row(l, i).iter().zip(single.row(l, i)) {
                worst = worst.max((x - y).abs() as f64 / y.abs().max(1e-3) as f64);
            }
        }
    }
    println!("bf16, one chunk of {n} against chunks of 1: max relative |Δ| = {worst:.2e}");
    assert!(worst == 0.0, "chunking changed bf16 features by {worst:.2e}");
}
