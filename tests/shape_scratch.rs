use std::path::PathBuf;
fn shared() -> PathBuf { PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared") }
fn mm(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize) {
    unsafe { gemm::gemm(m, n, k, dst.as_mut_ptr(), 1, n as isize, false, lhs.as_ptr(), 1, k as isize, rhs.as_ptr(), 1, n as isize, 0.0, 1.0, false, false, false, gemm::Parallelism::None); }
}
#[test]
fn shapes() {
    let sd = beamwatch::weights::StateDict::read(&shared().join("weights/resnet18_synthetic_seed0.safetensors")).unwrap();
    let net = beamwatch::engine::Network::from_state_dict(&sd).unwrap();
    for nchunk in [64usize, 256] {
    let eng = beamwatch::engine::Engine::new(&net, 20, 1).unwrap();
    let plan = eng.plan();
    let mut shapes = vec![(plan.stem.out_h*plan.stem.out_w*nchunk, 49, 64)];
    for b in &plan.blocks { for c in [Some(&b.conv1), Some(&b.conv2), b.downsample.as_ref()].into_iter().flatten() {
        for cl in &c.classes { shapes.push((cl.n_pos*nchunk, cl.n_taps*c.cin, c.cout)); } } }
    let mut total_t = 0.0; let mut total_f = 0.0;
    let mut by_layer = std::collections::BTreeMap::new();
    for &(m,k,n) in &shapes {
        let a = vec![0.5f32; m*k]; let b = vec![0.25f32; k*n]; let mut d = vec![0f32; m*n];
        mm(&mut d,&a,&b,m,k,n);
        let reps = 20;
        let t = std::time::Instant::now(); for _ in 0..reps { mm(&mut d,&a,&b,m,k,n); } let dt = t.elapsed().as_secs_f64()/reps as f64;
        total_t += dt; total_f += 2.0*(m*k*n) as f64;
        *by_layer.entry(n).or_insert((0.0,0.0)) = { let e = by_layer.get(&n).copied().unwrap_or((0.0,0.0)); (e.0+dt, e.1+2.0*(m*k*n) as f64) };
    }
    println!("chunk {nchunk}: gemm only: {:.1} ms per chunk -> {:.1} ms/frame(2601, 1 thread), {:.0} GFLOP/s", total_t*1e3, total_t*1e3*2601.0/nchunk as f64, total_f/total_t/1e9);
    for (n,(t,f)) in by_layer { println!("  cout {n}: {:.2} ms/chunk {:.0} GFLOP/s", t*1e3, f/t/1e9); }
    }
}
