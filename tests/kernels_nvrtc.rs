//! Every CUDA kernel compiles with NVRTC for sm_80 (A100) and sm_90 (H100). Needs no GPU: only the
//! NVRTC library, which `tools/setup.sh` installs from PyPI's nvidia-cuda-nvrtc-cu12 wheel and puts
//! on LD_LIBRARY_PATH (it also sets BEAMWATCH_REQUIRE_NVRTC=1, so CI fails instead of skipping).

use beamwatch::engine::cuda::kernels::{SOURCES, compile, nvrtc_available};

fn nvrtc_or_skip() -> bool {
    if nvrtc_available() {
        return true;
    }
    assert!(
        std::env::var_os("BEAMWATCH_REQUIRE_NVRTC").is_none(),
        "BEAMWATCH_REQUIRE_NVRTC is set but libnvrtc.so.12 cannot be loaded (LD_LIBRARY_PATH={:?})",
        std::env::var_os("LD_LIBRARY_PATH")
    );
    eprintln!("skipped: libnvrtc.so.12 not found (run the tests through tools/setup.sh)");
    false
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    if !nvrtc_or_skip() {
        return;
    }
    for arch in ["sm_80", "sm_90"] {
        for src in SOURCES {
            let ptx = compile(src, arch).unwrap_or_else(|e| panic!("{e}"));
            let text = ptx.to_src();
            let target = format!(".target {arch}");
            assert!(text.contains(&target), "{}: PTX for {arch} lacks `{target}`", src.file);
            for f in src.functions {
                assert!(text.contains(&format!(".entry {f}(")), "{}: no entry point {f} in the {arch} PTX", src.file);
            }
        }
    }
}

#[test]
fn a_broken_kernel_reports_file_arch_and_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let bad = beamwatch::engine::cuda::kernels::KernelSource {
        file: "broken.cu",
        source: "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }",
        functions: &["k"],
    };
    let msg = compile(&bad, "sm_90").expect_err("must not compile").to_string();
    assert!(msg.contains("broken.cu") && msg.contains("sm_90") && msg.contains("undefined_name"), "{msg}");
}
