//! Exactness of the feature engine against PyTorch's golden outputs (../shared/golden, synthetic
//! weights) and against an independent, deliberately naive f64 ResNet-18 at other patch sizes.

mod common;

use ndarray::{Array1, Array2};
use ndarray_npy::{NpzReader, read_npy};

use beamwatch::engine::{Engine, Features, Network};
use beamwatch::weights::{StateDict, layout::LAYER_CHANNELS};
use common::*;

fn engine(patch: usize) -> Engine {
    let sd = StateDict::read(&synthetic_weights()).expect("synthetic weights");
    Engine::new(&Network::from_state_dict(&sd).expect("network"), patch, 2).expect("engine")
}

/// Largest |ours − golden| relative to the largest |golden|.
fn rel_err(ours: &Features, layer: usize, golden: &Array2<f32>) -> f64 {
    let gmax = golden.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let mut d = 0f64;
    for i in 0..golden.nrows() {
        for (j, v) in ours.row(layer, i).iter().enumerate() {
            d = d.max((*v as f64 - golden[[i, j]] as f64).abs());
        }
    }
    d / gmax
}

#[test]
fn features_and_layer_taps_match_pytorch_within_1e4() {
    let feats = engine(20).features(&golden_patches("golden_frame.npy"));
    assert_eq!(feats.n, 100);
    for (l, name) in ["golden_layer1_gap.npy", "golden_layer2_gap.npy", "golden_layer3_gap.npy", "golden_features.npy"]
        .iter()
        .enumerate()
    {
        let g: Array2<f32> = read_npy(golden(name)).expect("golden");
        assert_eq!(g.shape(), &[100, LAYER_CHANNELS[l]]);
        let e = rel_err(&feats, l, &g);
        println!("layer{}: max |Δ| / max |golden| = {e:.2e}", l + 1);
        assert!(e < 1e-4, "layer{} deviates {e:.2e} relative", l + 1);
    }
    let dmg = engine(20).features(&golden_patches("golden_frame_damaged.npy"));
    let g: Array2<f32> = read_npy(golden("golden_features_damaged.npy")).expect("golden");
    assert!(rel_err(&dmg, 3, &g) < 1e-4);
}

#[test]
fn large_chunks_still_match_pytorch() {
    // 27 copies of the golden patches in chunks of 1,350: every per-tap GEMM then spans 1,350 rows
    // or more (runs of positions × patches), where the golden test's 50-patch chunks span few. A
    // GEMM that read or wrote the wrong rows would put another patch's features here.
    let px = golden_patches("golden_frame.npy");
    let mut many = Vec::with_capacity(px.len() * 27);
    for _ in 0..27 {
        many.extend_from_slice(&px);
    }
    let feats = engine(20).with_chunk(1350).features(&many);
    assert_eq!(feats.n, 2700);
    let g: Array2<f32> = read_npy(golden("golden_features.npy")).expect("golden");
    let gmax = g.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let mut worst = 0f64;
    for i in 0..2700 {
        for (j, v) in feats.row(3, i).iter().enumerate() {
            worst = worst.max((*v as f64 - g[[i % 100, j]] as f64).abs() / gmax);
        }
    }
    println!("2,700 patches in chunks of 1,350: layer4 max |Δ| / max |golden| = {worst:.2e}");
    assert!(worst < 1e-4, "layer4 deviates {worst:.2e} relative in large chunks");
}

fn read_csv_similarity(path: &std::path::Path) -> Vec<f64> {
    let text = std::fs::read_to_string(path).expect("similarity.csv");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(beamwatch::report::csv::HEADER));
    lines.map(|l| l.split(',').nth(5).expect("similarity column").parse().expect("number")).collect()
}

/// `beamwatch compare` on the golden pair with the synthetic weights; returns the output directory.
fn compare_golden(tmp: &std::path::Path, extra: &[&str]) -> std::path::PathBuf {
    let out = tmp.join("out");
    let (a, b, w) = (golden("golden_frame.npy"), golden("golden_frame_damaged.npy"), synthetic_weights());
    let mut args = vec![
        "compare",
        a.to_str().expect("path"),
        b.to_str().expect("path"),
        "--out",
        out.to_str().expect("path"),
        "--weights",
        w.to_str().expect("path"),
        // The golden outputs are the paper's method: no pre-filter.
        "--prefilter-sigma",
        "0",
    ];
    args.extend(extra);
    let o = beamwatch(&args, tmp);
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

#[test]
fn compare_command_reproduces_golden_cosines() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = compare_golden(tmp.path(), &[]);
    let ours = read_csv_similarity(&out.join("similarity.csv"));
    let golden_cos: Array1<f32> = read_npy(golden("golden_cosine.npy")).expect("golden cosine");
    assert_eq!(ours.len(), 100);
    let worst = ours.iter().zip(golden_cos.iter()).map(|(a, b)| (a - *b as f64).abs()).fold(0.0, f64::max);
    println!("compare vs golden_cosine.npy: max |Δcos| = {worst:.2e}");
    assert!(worst < 1e-5, "cosine deviates by {worst:e}");
    // The summary records metric and weights; the worst patch is the golden argmin (56 = r5 c6).
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(summary["provenance"]["metric"]["name"], "resnet18");
    assert_eq!(
        summary["provenance"]["weights"]["sha256"],
        "109e037f47a6a43ddfca0256eaf0468423a4dd60eb3c8817943070c031f909ac"
    );
    assert_eq!(summary["provenance"]["weights"]["origin"], "synthetic");
    assert_eq!(summary["frames"][0]["summary"]["max_at"], serde_json::json!([5, 6]));
    assert!(out.join("frame_0001.png").is_file());
}

#[test]
fn lpips_metric_is_the_mean_of_the_golden_layer_cosines() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = compare_golden(tmp.path(), &["--metric", "lpips"]);
    let ours = read_csv_similarity(&out.join("similarity.csv"));
    let mut npz = NpzReader::new(std::fs::File::open(golden("golden_cosine_layers.npz")).expect("npz")).expect("npz");
    let layers: Vec<Array1<f32>> = (1..=4).map(|l| npz.by_name(&format!("layer{l}")).expect("layer")).collect();
    for (p, v) in ours.iter().enumerate() {
        let mean = layers.iter().map(|c| c[p] as f64).sum::<f64>() / 4.0;
        assert!((v - mean).abs() < 1e-5, "patch {p}: {v} vs {mean}");
    }
}

// ---- An independent reference: the torchvision trunk written out naively in f64 ----

struct Map {
    c: usize,
    h: usize,
    w: usize,
    v: Vec<f64>,
}

fn conv(sd: &StateDict, name: &str, x: &Map, stride: usize, pad: usize) -> Map {
    let t = &sd.tensors[&format!("{name}.weight")];
    let (co, ci, k) = (t.shape[0], t.shape[1], t.shape[2]);
    assert_eq!(ci, x.c);
    let oh = (x.h + 2 * pad - k) / stride + 1;
    let ow = (x.w + 2 * pad - k) / stride + 1;
    let mut v = vec![0f64; co * oh * ow];
    for o in 0..co {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut s = 0f64;
                for c in 0..ci {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < x.h && (ix as usize) < x.w {
                                s += t.data[((o * ci + c) * k + ky) * k + kx] as f64
                                    * x.v[(c * x.h + iy as usize) * x.w + ix as usize];
                            }
                        }
                    }
                }
                v[(o * oh + oy) * ow + ox] = s;
            }
        }
    }
    Map { c: co, h: oh, w: ow, v }
}

fn bn(sd: &StateDict, name: &str, x: &mut Map, relu: bool) {
    let g = |s: &str| &sd.tensors[&format!("{name}.{s}")].data;
    let (w, b, m, var) = (g("weight"), g("bias"), g("running_mean"), g("running_var"));
    let hw = x.h * x.w;
    for c in 0..x.c {
        for i in 0..hw {
            let y = (x.v[c * hw + i] - m[c] as f64) / (var[c] as f64 + 1e-5).sqrt() * w[c] as f64 + b[c] as f64;
            x.v[c * hw + i] = if relu { y.max(0.0) } else { y };
        }
    }
}

fn maxpool(x: &Map) -> Map {
    let (oh, ow) = ((x.h + 2 - 3) / 2 + 1, (x.w + 2 - 3) / 2 + 1);
    let mut v = vec![f64::NEG_INFINITY; x.c * oh * ow];
    for c in 0..x.c {
        for oy in 0..oh {
            for ox in 0..ow {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
                        if iy >= 0 && ix >= 0 && (iy as usize) < x.h && (ix as usize) < x.w {
                            let s = &mut v[(c * oh + oy) * ow + ox];
                            *s = s.max(x.v[(c * x.h + iy as usize) * x.w + ix as usize]);
                        }
                    }
                }
            }
        }
    }
    Map { c: x.c, h: oh, w: ow, v }
}

fn gap(x: &Map) -> Vec<f64> {
    let hw = (x.h * x.w) as f64;
    (0..x.c).map(|c| x.v[c * x.h * x.w..(c + 1) * x.h * x.w].iter().sum::<f64>() / hw).collect()
}

/// torchvision resnet18 trunk on one gray patch replicated to RGB: GAP after each layer.
fn naive_trunk(sd: &StateDict, patch: &[f32], p: usize) -> Vec<Vec<f64>> {
    const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
    const STD: [f64; 3] = [0.229, 0.224, 0.225];
    let v = (0..3).flat_map(|c| patch.iter().map(move |&g| (g as f64 - MEAN[c]) / STD[c])).collect();
    let mut x = conv(sd, "conv1", &Map { c: 3, h: p, w: p, v }, 2, 3);
    bn(sd, "bn1", &mut x, true);
    let mut x = maxpool(&x);
    let mut taps = Vec::new();
    for l in 1..=4 {
        for b in 0..2 {
            let pre = format!("layer{l}.{b}");
            let stride = if b == 0 && l > 1 { 2 } else { 1 };
            let mut y = conv(sd, &format!("{pre}.conv1"), &x, stride, 1);
            bn(sd, &format!("{pre}.bn1"), &mut y, true);
            let mut y = conv(sd, &format!("{pre}.conv2"), &y, 1, 1);
            bn(sd, &format!("{pre}.bn2"), &mut y, false);
            let res = if b == 0 && l > 1 {
                let mut d = conv(sd, &format!("{pre}.downsample.0"), &x, 2, 0);
                bn(sd, &format!("{pre}.downsample.1"), &mut d, false);
                d
            } else {
                Map { c: x.c, h: x.h, w: x.w, v: x.v.clone() }
            };
            for (a, r) in y.v.iter_mut().zip(&res.v) {
                *a = (*a + r).max(0.0);
            }
            x = y;
        }
        taps.push(gap(&x));
    }
    taps
}

#[test]
fn padding_free_plan_equals_naive_trunk_at_other_patch_sizes() {
    let sd = StateDict::read(&synthetic_weights()).expect("weights");
    let net = Network::from_state_dict(&sd).expect("network");
    for p in [16usize, 23, 32] {
        let eng = Engine::new(&net, p, 2).expect("engine").with_chunk(2);
        // Three patches of a smooth pattern with noise-like texture, values in 0..1.
        let px: Vec<f32> = (0..3 * p * p)
            .map(|i| {
                let (n, y, x) = (i / (p * p), (i / p) % p, i % p);
                (0.5 + 0.3 * ((x as f32 * 0.7 + n as f32).sin() * (y as f32 * 0.45).cos())
                    + 0.1 * (((i * 7919) % 101) as f32 / 101.0))
                    .clamp(0.0, 1.0)
            })
            .collect();
        let ours = eng.features(&px);
        for n in 0..3 {
            let reference = naive_trunk(&sd, &px[n * p * p..(n + 1) * p * p], p);
            for (l, r) in reference.iter().enumerate() {
                let rmax = r.iter().fold(0f64, |m, v| m.max(v.abs()));
                let d = ours.row(l, n).iter().zip(r).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
                assert!(d / rmax < 1e-5, "patch {p}px #{n} layer{}: {:.2e}", l + 1, d / rmax);
            }
        }
        let plan = eng.plan();
        assert!(plan.macs_per_patch() < plan.dense_macs_per_patch(&net), "padding skip saves work at {p} px");
    }
}

// ---- Winograd (the fp32 CPU path's small-map 3×3 convolutions) ----

/// Where the plan runs Winograd at 20 px: layer1's four convolutions (5×5 maps: 81 points for 169
/// position-taps), layer2's three stride-1 ones (3×3: 25 for 49) and layer3's (2×2: 9 for 16);
/// not at 1×1 (one tap) nor for the strided ones.
#[test]
fn winograd_runs_where_it_multiplies_less() {
    let sd = StateDict::read(&synthetic_weights()).expect("weights");
    let plan = beamwatch::engine::Plan::new(&Network::from_state_dict(&sd).expect("network"), 20).expect("plan");
    let points: Vec<Option<usize>> = plan
        .blocks
        .iter()
        .flat_map(|b| [&b.conv1, &b.conv2].into_iter().chain(b.downsample.as_ref()))
        .map(|c| c.winograd.as_ref().map(|w| w.points()))
        .collect();
    #[rustfmt::skip]
    let want = [Some(49), Some(49), Some(49), Some(49), None, Some(25), None, Some(25), Some(25), None, Some(9), None, Some(9), Some(9), None, None, None, None, None];
    assert_eq!(points, want);
    // The bf16 path takes those whose transforms have only ±1 coefficients: layer3's 2×2 maps.
    let unit: Vec<bool> = plan
        .blocks
        .iter()
        .flat_map(|b| [&b.conv1, &b.conv2])
        .filter_map(|c| c.winograd.as_ref().map(|w| w.unit_coefficients()))
        .collect();
    assert_eq!(unit, [false, false, false, false, false, false, false, true, true, true]);
    assert!(plan.fp32_cpu_macs_per_patch() < plan.macs_per_patch() * 4 / 5);
    assert!(
        plan.blocks
            .iter()
            .flat_map(|b| [&b.conv1, &b.conv2])
            .filter_map(|c| c.winograd.as_ref())
            .all(|w| w.group == 96)
    );

    // A pass's buffers are held to 8 MiB: at 64 px layer1's 16×16 maps (576 points, 288 KiB a
    // patch) pass 28 patches at a time; at 128 px layer1's and layer2's maps (2,116 and 576 points)
    // would pass fewer than 16 and keep their classes, layer3's 8×8 and layer4's 4×4 do not.
    let net = Network::from_state_dict(&sd).expect("network");
    let groups = |patch: usize| -> Vec<Option<usize>> {
        let plan = beamwatch::engine::Plan::new(&net, patch).expect("plan");
        plan.blocks.iter().map(|b| b.conv2.winograd.as_ref().map(|w| w.group)).collect()
    };
    assert_eq!(groups(64)[..2], [Some(28), Some(28)]);
    let g128 = groups(128);
    assert_eq!(g128[..4], [None, None, None, None]);
    assert!(g128[4..].iter().all(|g| g.is_some_and(|g| g >= 16)), "{g128:?}");
}

/// A Winograd convolution against the same convolution's padding-free classes, on map sizes that
/// cut into every tile (the 2-long product, 3, 4, 5, 3+3, 4+4, 5+5), more patches than one pass
/// takes (96: the 130-patch case) and fewer, with and without residual and ReLU. Measured worst
/// 2.4e-6 of the largest output (Intel Xeon; 7.8e-7 with F(3,3) and F(2,3) tiles only); the bound
/// is 5e-6.
#[test]
fn winograd_convolution_equals_the_classes() {
    use beamwatch::engine::cpu::conv_once;
    use beamwatch::engine::network::FoldedConv;
    use beamwatch::engine::plan::ConvPlan;
    let noise = |seed: usize, i: usize| (((i * 2654435761 + seed * 40503) % 1000) as f32 / 500.0) - 1.0;
    let mut worst = 0f64;
    for (si, &(side, cin, cout, n)) in [
        (2, 16, 16, 3),
        (3, 32, 48, 70),
        (4, 16, 32, 65),
        (5, 64, 64, 130),
        (6, 24, 16, 7),
        (8, 16, 16, 9),
        (10, 16, 16, 2),
    ]
    .iter()
    .enumerate()
    {
        let conv = FoldedConv {
            cout,
            cin,
            k: 3,
            stride: 1,
            pad: 1,
            weight: (0..cout * cin * 9).map(|i| noise(3 * si, i) / (cin * 9) as f32 * 3.0).collect(),
            bias: (0..cout).map(|i| 0.1 * noise(3 * si + 1, i)).collect(),
        };
        let wino = ConvPlan::standalone(&conv, side, side, true).expect("plan");
        let classes = ConvPlan::standalone(&conv, side, side, false).expect("plan");
        assert!(wino.winograd.is_some() && classes.winograd.is_none(), "{side}×{side} plans Winograd");
        let input: Vec<f32> = (0..side * side * n * cin).map(|i| noise(3 * si + 2, i).max(0.0)).collect();
        let residual: Vec<f32> = (0..side * side * n * cout).map(|i| noise(3 * si + 5, i)).collect();
        for (res, relu) in [(Some(&residual[..]), true), (None, false)] {
            let a = conv_once(&wino, &input, n, res, relu);
            let b = conv_once(&classes, &input, n, res, relu);
            let bmax = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
            let d = a.iter().zip(&b).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max) / bmax;
            println!("{side}×{side}, {cin}→{cout}, {n} patches, residual {}: max |Δ| / max = {d:.2e}", res.is_some());
            assert!(d < 5e-6, "{side}×{side} {cin}→{cout} ({n} patches): Winograd deviates {d:.2e}");
            worst = worst.max(d);
        }
    }
    println!("worst {worst:.2e}");
}
