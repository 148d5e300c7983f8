use std::path::PathBuf;
fn shared() -> PathBuf { PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared") }
#[test]
fn speed() {
    let sd = beamwatch::weights::StateDict::read(&shared().join("weights/resnet18_synthetic_seed0.safetensors")).unwrap();
    let net = beamwatch::engine::Network::from_state_dict(&sd).unwrap();
    let n = 2601;
    let px: Vec<f32> = (0..n*400).map(|i| ((i * 7919 % 1000) as f32) / 1000.0).collect();
    let chunks: Vec<usize> = std::env::var("CHUNKS").unwrap_or("64,128,163,217,326,434".into()).split(',').map(|s| s.parse().unwrap()).collect();
    for round in 0..2 {
    for &chunk in &chunks {
        let eng = beamwatch::engine::Engine::new(&net, 20, 2).unwrap().with_chunk(chunk);
        let _ = eng.features(&px);
        let mut ts = vec![];
        for _ in 0..7 { let t = std::time::Instant::now(); let _ = eng.features(&px); ts.push(t.elapsed().as_secs_f64()*1e3); }
        ts.sort_by(|a,b| a.partial_cmp(b).unwrap());
        println!("r{round} chunk {chunk:4}: min {:.1} median {:.1} ms", ts[0], ts[3]);
    }}
}
