//! `tools/gpu-check.sh`'s local half, as CI runs it: the bundle a GPU machine needs is gathered
//! (binaries, their shared libraries, NVRTC, golden files), fits the device tool's limit, and its
//! run half works here — NVRTC compiles every kernel, and the summary JSON records that there is
//! no GPU rather than pretending the GPU tests passed on one.

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

#[test]
fn the_gpu_check_bundle_is_gathered_within_the_limit_and_its_run_half_records_no_gpu_here() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(root.join("tools/gpu-check.sh"))
        .args(["local", out.to_str().expect("path")])
        .env("GPU_CHECK_BEAMWATCH", env!("CARGO_BIN_EXE_beamwatch"))
        .env("GPU_CHECK_GPU_TESTS", test_binary("gpu"))
        .env("GPU_CHECK_NVRTC_TESTS", test_binary("kernels_nvrtc"))
        .env("BEAMWATCH_SHARED", common::shared())
        .env("BEAMWATCH_SHARED_ORIG", common::shared())
        .output()
        .expect("run tools/gpu-check.sh");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "gpu-check local failed:\n{err}\n{}", String::from_utf8_lossy(&o.stdout));
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("gpu-check.json")).expect("summary")).expect("JSON");
    println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
    let mib = j["bundle_mib"].as_f64().expect("bundle size");
    assert!(mib > 5.0 && mib <= 57.0, "bundle of {mib} MiB");
    // The carried binary starts with the carried libraries, and none of them is part of glibc:
    // those call glibc's private symbols and would not load beside another machine's libc.
    let first = j["binary"][0].as_str().unwrap_or("");
    assert!(first.starts_with("beamwatch "), "the carried binary does not start: {}", j["binary"]);
    let libs: Vec<&str> = j["carried_libs"].as_array().expect("carried libs").iter().filter_map(|v| v.as_str()).collect();
    assert!(libs.iter().any(|l| l.starts_with("libhdf5")), "libhdf5 travels: {libs:?}");
    let glibc = ["libc.", "libm.", "libdl.", "libpthread.", "librt.", "ld-linux", "libresolv.", "libnss_", "libnsl.", "libutil.", "libanl.", "libmvec."];
    let own: Vec<&&str> = libs.iter().filter(|l| glibc.iter().any(|g| l.starts_with(g))).collect();
    assert!(own.is_empty(), "glibc's own libraries in the bundle: {own:?}");
    assert_eq!(j["kernels_nvrtc_tests"]["passed"], true, "NVRTC compile in the bundle's environment");
    assert_eq!(j["gpu_tests"]["passed"], true);
    let has_gpu = Command::new("nvidia-smi").arg("-L").output().is_ok_and(|o| o.status.success());
    if has_gpu {
        assert_eq!(j["gpu_tests"]["required_gpu"], true);
    } else {
        assert_eq!(j["gpu"], "no GPU", "without a GPU the summary says so");
        assert_eq!(j["gpu_tests"]["required_gpu"], false);
        assert!(j["bench_cuda"].as_object().is_some_and(|m| m.is_empty()), "no GPU figures without a GPU");
        assert_eq!(j["left_out_for_time"], serde_json::json!([]), "nothing left out without a GPU");
    }
}
