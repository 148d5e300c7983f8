use ndarray::{Array1, Array2};
use ndarray_npy::read_npy;
use std::path::PathBuf;

fn shared() -> PathBuf { PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared") }

#[test]
fn golden_features() {
    let sd = beamwatch::weights::StateDict::read(&shared().join("weights/resnet18_synthetic_seed0.safetensors")).unwrap();
    let net = beamwatch::engine::Network::from_state_dict(&sd).unwrap();
    let eng = beamwatch::engine::Engine::new(&net, 20, 2).unwrap();
    println!("macs/patch {} dense {}", eng.plan().macs_per_patch(), eng.plan().dense_macs_per_patch(&net));
    let f: Array2<f32> = read_npy(shared().join("golden/golden_frame.npy")).unwrap();
    let mut px = Vec::new();
    for r in 0..10 { for c in 0..10 { for y in 0..20 { for x in 0..20 { px.push(f[[r*20+y, c*20+x]]); } } } }
    let feats = eng.features(&px);
    for (l, name) in ["golden_layer1_gap.npy","golden_layer2_gap.npy","golden_layer3_gap.npy","golden_features.npy"].iter().enumerate() {
        let g: Array2<f32> = read_npy(shared().join("golden").join(name)).unwrap();
        let gmax = g.iter().fold(0f32, |a, v| a.max(v.abs()));
        let mut maxd = 0f32;
        for i in 0..100 { for (j, v) in feats.row(l, i).iter().enumerate() { maxd = maxd.max((v - g[[i, j]]).abs()); } }
        println!("{name}: max abs diff {maxd:e}, rel {:e}", maxd / gmax);
    }
    let _c: Array1<f32> = read_npy(shared().join("golden/golden_cosine.npy")).unwrap();
}
