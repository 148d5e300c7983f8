use std::path::PathBuf;
fn shared() -> PathBuf { PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared") }
#[test]
fn prof() {
    let sd = beamwatch::weights::StateDict::read(&shared().join("weights/resnet18_synthetic_seed0.safetensors")).unwrap();
    let net = beamwatch::engine::Network::from_state_dict(&sd).unwrap();
    let n = 2601;
    let px: Vec<f32> = (0..n*400).map(|i| ((i * 7919 % 1000) as f32) / 1000.0).collect();
    let eng = beamwatch::engine::Engine::new(&net, 20, 2).unwrap().with_chunk(192);
    for _ in 0..6 { let _ = eng.features(&px); }
}
