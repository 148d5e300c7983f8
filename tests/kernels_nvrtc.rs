//! Every CUDA kernel compiles with NVRTC for sm_80 (A100) and sm_90 (H100). Needs no GPU: only the
//! NVRTC library, which `tools/setup.sh` installs from PyPI's nvidia-cuda-nvrtc-cu12 wheel and puts
//! on LD_LIBRARY_PATH (it also sets BEAMWATCH_REQUIRE_NVRTC=1, so CI fails instead of skipping).

use beamwatch::engine::cuda::kernels::{
    Loaded, SOURCES, blocks_per_sm, compile, compile_cubin, compile_for, nvrtc_available, parse_ptxas_log,
    plan_for_device, resources, supported_archs,
};
use beamwatch::engine::cuda::tables::{ConvMath, ConvTile};

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

/// A CUBIN is an ELF image of machine code for one architecture: the driver loads it without a
/// PTX JIT, so a driver older than NVRTC (R535–R570 against NVRTC 12.9's PTX ISA 8.8) still runs it.
#[test]
fn every_kernel_compiles_to_a_cubin_for_sm75_sm80_and_sm90() {
    if !nvrtc_or_skip() {
        return;
    }
    let archs = supported_archs().expect("NVRTC lists its architectures");
    assert!(archs.contains(&75) && archs.contains(&80) && archs.contains(&90), "NVRTC supports {archs:?}");
    // sm_75 (T4) too: it has no tensor-core kernels of ours, but their file must still build there,
    // or its FFMA kernels would not load either.
    for sm in [75, 80, 90] {
        for src in SOURCES {
            let bin = compile_cubin(src, sm).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&bin[..4], b"\x7fELF", "{}: the sm_{sm} CUBIN is not an ELF image", src.file);
            // ELF e_flags carry the SM version in their low byte for CUDA images.
            let e_flags = u32::from_le_bytes([bin[48], bin[49], bin[50], bin[51]]);
            assert_eq!(e_flags & 0xff, sm as u32, "{}: CUBIN e_flags {e_flags:#x} are not for sm_{sm}", src.file);
            for f in src.functions {
                let name = f.as_bytes();
                assert!(bin.windows(name.len()).any(|w| w == name), "{}: no symbol {f} in the sm_{sm} CUBIN", src.file);
            }
        }
    }
}

#[test]
fn a_known_gpu_gets_a_cubin_and_a_newer_one_ptx_it_can_jit() {
    let nvrtc = [75, 80, 86, 89, 90];
    assert_eq!(plan_for_device((9, 0), &nvrtc).unwrap(), Loaded::Cubin { arch: "sm_90".into() });
    assert_eq!(plan_for_device((8, 6), &nvrtc).unwrap(), Loaded::Cubin { arch: "sm_86".into() });
    // A GPU newer than this NVRTC: PTX for the newest architecture below it, JIT-compiled by its driver.
    assert_eq!(plan_for_device((12, 0), &nvrtc).unwrap(), Loaded::Ptx { arch: "compute_90".into() });
    assert!(plan_for_device((6, 1), &nvrtc).is_err(), "a GPU older than every architecture NVRTC has");
    if nvrtc_or_skip() {
        let how = Loaded::Cubin { arch: "sm_90".into() };
        for src in SOURCES {
            compile_for(src, &how).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// The conv kernels' budget (kernels/README.md's estimate): ptxas's own report, through NVRTC's
/// `--ptxas-options=-v` log, for sm_80 and sm_90: no register spills, the static shared memory the
/// host expects, and at least 2 (128×128) or 3 (128×64) resident blocks per SM; the tensor-core
/// kernels (3×TF32, bf16) at least 2.
#[test]
fn the_tiled_conv_kernels_fit_their_register_and_shared_memory_budget() {
    if !nvrtc_or_skip() {
        return;
    }
    let conv = SOURCES.iter().find(|s| s.file == "conv.cu").expect("conv.cu is embedded");
    for sm in [80, 90] {
        let res = resources(conv, sm).unwrap_or_else(|e| panic!("{e}"));
        for tile in ConvTile::ALL {
            let r = res
                .iter()
                .find(|r| r.function == tile.kernel())
                .unwrap_or_else(|| panic!("{} not in {res:?}", tile.kernel()));
            let blocks = blocks_per_sm(r.registers, tile.threads(), r.static_shared_bytes as usize, sm);
            println!(
                "sm_{sm} {}: {} registers, {} B spilled, {} B shared, {blocks} blocks ({} warps) per SM",
                tile.kernel(),
                r.registers,
                r.spill_store_bytes,
                r.static_shared_bytes,
                blocks * tile.threads() / 32
            );
            assert!(r.registers > 0, "no register count parsed for {}", tile.kernel());
            assert_eq!((r.spill_store_bytes, r.spill_load_bytes), (0, 0), "sm_{sm} {} spills", tile.kernel());
            assert_eq!(r.static_shared_bytes as usize, tile.shared_bytes(), "sm_{sm} {}", tile.kernel());
            let want = match tile {
                ConvTile::Wide => 2,
                ConvTile::Narrow => 3,
            };
            assert!(blocks >= want, "sm_{sm} {}: {blocks} blocks per SM, the estimate assumes {want}", tile.kernel());

            // The tensor-core kernels of the same width (256 threads each).
            for math in [ConvMath::Tf32x3, ConvMath::Bf16] {
                let name = math.kernel(tile);
                let r = res.iter().find(|r| r.function == name).unwrap_or_else(|| panic!("{name} not in {res:?}"));
                let threads = math.threads(tile);
                let blocks = blocks_per_sm(r.registers, threads, r.static_shared_bytes as usize, sm);
                println!(
                    "sm_{sm} {name}: {} registers, {} B spilled, {} B shared, {blocks} blocks ({} warps) per SM",
                    r.registers,
                    r.spill_store_bytes,
                    r.static_shared_bytes,
                    blocks * threads / 32
                );
                assert!(r.registers > 0, "no register count parsed for {name}");
                assert_eq!((r.spill_store_bytes, r.spill_load_bytes), (0, 0), "sm_{sm} {name} spills");
                assert_eq!(r.static_shared_bytes as usize, math.shared_bytes(tile), "sm_{sm} {name}");
                assert!(blocks >= 2, "sm_{sm} {name}: {blocks} blocks per SM");
            }
        }
    }
}

#[test]
fn ptxas_reports_are_parsed_and_occupancy_follows_the_limits() {
    let log = "ptxas info    : Compiling entry function 'f' for 'sm_90'\n\
               ptxas info    : Function properties for f\n\
               ptxas         .     8 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n\
               ptxas info    : Used 168 registers, used 1 barriers, 16640 bytes smem\n";
    let r = &parse_ptxas_log(log)[0];
    assert_eq!(
        (r.function.as_str(), r.registers, r.spill_store_bytes, r.spill_load_bytes, r.static_shared_bytes),
        ("f", 168, 8, 4, 16640)
    );
    // 168 registers · 256 threads = 43,008 of 65,536: one block; 128 → two; 64 → four (thread limit 8).
    assert_eq!(blocks_per_sm(168, 256, 16_640, 90), 1);
    assert_eq!(blocks_per_sm(128, 256, 16_640, 90), 2);
    assert_eq!(blocks_per_sm(64, 256, 0, 90), 4);
    // Shared memory bound: 100 KiB blocks, 2 on sm_90 (228 KiB), 1 on sm_80 (164 KiB).
    assert_eq!(blocks_per_sm(32, 128, 100 * 1024, 90), 2);
    assert_eq!(blocks_per_sm(32, 128, 100 * 1024, 80), 1);
}
