//! `tools/gpu-check.sh` as CI runs it: the bundle a GPU machine needs is gathered (binaries, their
//! shared libraries, NVRTC, golden files) and fits the device tool's limit; its run half works
//! here — NVRTC compiles every kernel, and the summary JSON records that there is no GPU rather
//! than pretending the GPU tests passed on one — and, with `nvidia-smi` faked, its GPU-only
//! branches run, fail and still leave a summary and packed logs.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

/// The newest executable `target/release/deps/<name>-<hash>` (cargo test builds every test binary
/// before running any).
fn test_binary(name: &str) -> PathBuf {
    let deps = Path::new(env!("CARGO_BIN_EXE_beamwatch")).parent().expect("target dir").join("deps");
    let prefix = format!("{name}-");
    std::fs::read_dir(&deps)
        .expect("deps dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let f = p.file_name().and_then(|f| f.to_str()).unwrap_or("");
            f.starts_with(&prefix) && !f.contains('.') && f[prefix.len()..].chars().all(|c| c.is_ascii_hexdigit())
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| panic!("no {name} test binary in {} (cargo test --release --no-run first)", deps.display()))
}

fn gpu_check(args: &[&Path]) -> Command {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut c = Command::new(root.join("tools/gpu-check.sh"));
    c.args(args)
        .env("GPU_CHECK_BEAMWATCH", env!("CARGO_BIN_EXE_beamwatch"))
        .env("GPU_CHECK_GPU_TESTS", test_binary("gpu"))
        .env("GPU_CHECK_NVRTC_TESTS", test_binary("kernels_nvrtc"))
        .env("BEAMWATCH_SHARED", common::shared())
        .env("BEAMWATCH_SHARED_ORIG", common::shared());
    c
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("gpu-check.json")).expect("summary")).expect("JSON")
}

#[test]
fn the_gpu_check_bundle_is_gathered_within_the_limit_and_its_run_half_records_no_gpu_here() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (bundle, out) = (tmp.path().join("bundle"), tmp.path().join("out"));
    let o = gpu_check(&[Path::new("gather"), &bundle]).output().expect("run tools/gpu-check.sh gather");
    assert!(o.status.success(), "gpu-check gather failed:\n{}", String::from_utf8_lossy(&o.stderr));
    let o = gpu_check(&[Path::new("run"), &bundle, &out]).output().expect("run tools/gpu-check.sh run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "gpu-check run failed:\n{err}\n{}", String::from_utf8_lossy(&o.stdout));
    let j = summary(&out);
    println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
    let mib = j["bundle_mib"].as_f64().expect("bundle size");
    assert!(mib > 5.0 && mib <= 57.0, "bundle of {mib} MiB");
    // The carried binary starts with the carried libraries, and none of them is part of glibc:
    // those call glibc's private symbols and would not load beside another machine's libc.
    let first = j["binary"][0].as_str().unwrap_or("");
    assert!(first.starts_with("beamwatch "), "the carried binary does not start: {}", j["binary"]);
    let libs: Vec<&str> =
        j["carried_libs"].as_array().expect("carried libs").iter().filter_map(|v| v.as_str()).collect();
    assert!(libs.iter().any(|l| l.starts_with("libhdf5")), "libhdf5 travels: {libs:?}");
    let glibc = [
        "libc.",
        "libm.",
        "libdl.",
        "libpthread.",
        "librt.",
        "ld-linux",
        "libresolv.",
        "libnss_",
        "libnsl.",
        "libutil.",
        "libanl.",
        "libmvec.",
    ];
    let own: Vec<&&str> = libs.iter().filter(|l| glibc.iter().any(|g| l.starts_with(g))).collect();
    assert!(own.is_empty(), "glibc's own libraries in the bundle: {own:?}");
    assert_eq!(j["kernels_nvrtc_tests"]["passed"], true, "NVRTC compile in the bundle's environment");
    assert_eq!(j["gpu_tests"]["passed"], true);
    let has_gpu = Command::new("nvidia-smi").arg("-L").output().is_ok_and(|o| o.status.success());
    if has_gpu {
        assert_eq!(j["gpu_tests"]["required_gpu"], true);
        return;
    }
    assert_eq!(j["gpu"], "no GPU", "without a GPU the summary says so");
    assert_eq!(j["gpu_tests"]["required_gpu"], false);
    assert!(j["bench_cuda"].as_object().is_some_and(|m| m.is_empty()), "no GPU figures without a GPU");
    assert_eq!(j["left_out_for_time"], serde_json::json!([]), "nothing left out without a GPU");

    // The run half as the GPU machine takes it, with `nvidia-smi` faked: the GPU-only branches
    // (weights regeneration, GPU tests first with skips turned into failures, the benches, the
    // anchor, the time budget) run and fail here, and the summary and the packing must survive
    // that, leaving at most the 8 files the device tool brings back.
    let fake = tmp.path().join("fakebin");
    std::fs::create_dir_all(&fake).expect("fake bin dir");
    let smi = fake.join("nvidia-smi");
    std::fs::write(
        &smi,
        "#!/bin/sh\ncase \"$1\" in\n-L) echo 'GPU 0: NVIDIA H200 (fake)';;\n--query-gpu*) echo 'NVIDIA H200 (fake), 580.00, 143771 MiB';;\n*) echo fake;;\nesac\n",
    )
    .expect("fake nvidia-smi");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out2 = tmp.path().join("out-fake-gpu");
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap_or_default());
    let o = gpu_check(&[Path::new("run"), &bundle, &out2])
        .env("PATH", path)
        .env("GPU_CHECK_BUDGET", "70")
        .env("GPU_CHECK_T_TESTS", "20")
        .output()
        .expect("run tools/gpu-check.sh run with a fake GPU");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the GPU tests passed on a faked GPU:\n{err}");
    let j = summary(&out2);
    println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
    assert_eq!(j["gpu"], "NVIDIA H200 (fake), 580.00, 143771 MiB");
    assert_eq!(j["gpu_tests"]["required_gpu"], true);
    let lines: Vec<&str> =
        j["gpu_tests"]["lines"].as_array().expect("lines").iter().filter_map(|v| v.as_str()).collect();
    let first_failed = lines.iter().find(|l| l.starts_with("FAILED (exit")).expect("a failed GPU test");
    assert!(first_failed.contains(": gpu_"), "the tests that need a GPU run first: {first_failed}");
    // Every bench either ran (and its failure is recorded with its log) or is listed as left out.
    let benches = j["bench_cuda"].as_object().expect("bench_cuda");
    let left_out: Vec<&str> =
        j["left_out_for_time"].as_array().expect("left out").iter().filter_map(|v| v.as_str()).collect();
    assert!(benches.values().all(|b| b.get("error").is_some()), "a bench without a GPU produced figures: {benches:?}");
    let benches_left_out = left_out.iter().filter(|s| s.starts_with("bench ")).count();
    assert_eq!(benches.len() + benches_left_out, 4, "benches run {:?}, left out {left_out:?}", benches.keys());
    let files: Vec<String> = std::fs::read_dir(&out2)
        .expect("out dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.len() <= 8 && files.contains(&"gpu-check.json".into()) && files.contains(&"logs.tar.gz".into()),
        "{files:?}"
    );
}
