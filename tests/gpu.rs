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

use beamwatch::engine::cuda::tables::{ConvTables, DevicePlan};
use beamwatch::engine::{ActiveBackend, BackendChoice, Engine, Features, Network};
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

/// kernels/conv.cu `conv_classes` over its grid: each block's (class, row tile) as the kernel
/// finds it, the rows of partial tiles cut at the class's end, the same desc/gather/weight/residual
/// indexing; the K loop and the column tiles are not transcribed. Every output row must be
/// written exactly once.
fn conv_classes(t: &ConvTables, input: &[f32], residual: Option<&[f32]>, relu: bool, n: usize) -> Vec<f32> {
    use beamwatch::engine::cuda::tables::CONV_TILE_M;
    let (cin, cout) = (t.cin, t.cout);
    let mut out = vec![f32::NAN; t.out_slots * n * cout];
    let mut writes = vec![0u8; t.out_slots * n];
    let (gx, _, gz) = t.grid(n);
    assert_eq!(gz, 1);
    for x in 0..gx as usize {
        let (c, tile) = t.block_tile(n, x);
        let d = &t.desc[5 * c..5 * c + 5];
        let (first_slot, n_pos, n_taps) = (d[0] as usize, d[1] as usize, d[2] as usize);
        let gather = &t.gathers[d[3] as usize..];
        let w = &t.weights[d[4] as usize..];
        let base = first_slot * n * cout;
        let m0 = tile * CONV_TILE_M;
        assert!(m0 < n_pos * n, "block {x} (class {c}, tile {tile}) has no rows: the grid is larger than the work");
        for m in m0..(m0 + CONV_TILE_M).min(n_pos * n) {
            writes[first_slot * n + m] += 1;
            let (pos, patch) = (m / n, m % n);
            for co in 0..cout {
                let mut acc = 0f32;
                for k in 0..n_taps * cin {
                    let (tap, ci) = (k / cin, k % cin);
                    let slot = gather[pos * n_taps + tap] as usize;
                    acc += input[(slot * n + patch) * cin + ci] * w[k * cout + co];
                }
                let mut v = acc + t.bias[co];
                if let Some(r) = residual {
                    v += r[base + m * cout + co];
                }
                if relu {
                    v = v.max(0.0);
                }
                out[base + m * cout + co] = v;
            }
        }
    }
    assert!(out.iter().all(|v| !v.is_nan()), "the classes do not cover every output slot");
    assert!(writes.iter().all(|w| *w == 1), "an output row is written by more than one block");
    out
}

/// The launch sequence of `Trunk::run_trunk` (stem_conv, max_pool, blocks, global_avg_pool).
fn emulate(dp: &DevicePlan, pixels: &[f32]) -> Features {
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
                        acc += pixels[i * p * p + iy as usize * p + ix as usize] * st.weight[(ky * st.k + kx) * st.cout + co];
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
        let r = b.downsample.as_ref().map(|ds| conv_classes(ds, &x, None, false, n));
        let t = conv_classes(&b.conv1, &x, None, true, n);
        x = conv_classes(&b.conv2, &t, Some(r.as_deref().unwrap_or(&x)), true, n);
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
                    println!("{patch} px: {} KiB/patch, {} GiB free → {n} patches ({:.2} GiB)", bytes >> 10, free / gib, used as f64 / gib as f64);
                    assert!(used as f64 <= free as f64 * FREE_MEMORY_SHARE, "{patch} px at {free} B free: {used} B");
                }
                None => assert!(64 * bytes > (free as f64 * FREE_MEMORY_SHARE) as usize, "{patch} px: 64 patches would fit"),
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
    let base = ["bench", "--size", "120", "--frames", "1", "--metric", "resnet18", "--weights", w.to_str().expect("path")];
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
    let frame = |n: &str| -> Vec<f32> { read_npy::<_, Array2<f32>>(golden(n)).expect("frame").iter().copied().collect() };
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
