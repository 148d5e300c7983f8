#!/usr/bin/env bash
# gpu-check: the first run of beamwatch's GPU path, in one go, on a machine that has the NVIDIA
# driver, PyTorch and onnxruntime but no Rust toolchain and no libhdf5 (kernels/README.md).
#
#   tools/gpu-check.sh gather [BUNDLE]   here: build the release binary and the GPU test binaries,
#                                        gather them with their shared libraries (ldd), NVRTC, the
#                                        golden files and the weights' generator into BUNDLE
#                                        (default .tools/gpu-check), compressed, and check the size.
#   tools/gpu-check.sh run [BUNDLE] [OUT] there: print the driver, run the GPU tests with every skip
#                                        turned into a failure (BEAMWATCH_REQUIRE_GPU=1), bench
#                                        --backend cuda at 1024² and 2048² in fp32 and bf16, and write
#                                        OUT/gpu-check.json.
#   tools/gpu-check.sh local [OUT]       both halves on this machine (CI): without a GPU the JSON
#                                        records "no GPU" and the NVRTC compile still runs.
#
# The device tool: carry .tools/gpu-check and run `tools/gpu-check.sh run .tools/gpu-check $OUT`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# The device tool carries at most 64 MiB with the working tree (≈ 6 MiB of tracked files).
MAX_MIB=${GPU_CHECK_MAX_MIB:-57}
# xz level for the bundle: -6 keeps NVRTC (102 MB) at ≈ 31 MB.
XZ_LEVEL=${GPU_CHECK_XZ:--6}

say() { echo "gpu-check: $*" >&2; }

# unxz_to SRC.xz DEST: with xz where the machine has it, else Python's own lzma module.
unxz_to() {
    if command -v xz >/dev/null; then
        xz -dc "$1" >"$2"
    else
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"
    fi
}

# Absolute path of one cargo test binary (built if needed).
test_binary() {
    cargo test --release --no-run --test "$1" --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    try: m=json.loads(l)
    except ValueError: continue
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["name"]==sys.argv[1]: print(m["executable"])' "$1" | tail -n1
}

pack() { # pack SRC DEST.xz: strip binaries, compress
    local src=$1 dest=$2 tmp
    tmp=$(mktemp)
    cp "$src" "$tmp"
    strip --strip-unneeded "$tmp" 2>/dev/null || true
    xz -T2 "$XZ_LEVEL" -c "$tmp" >"$dest"
    rm -f "$tmp"
}

gather() {
    local B=${1:-.tools/gpu-check}
    export PATH=$HOME/.cargo/bin:$PATH
    local gpu nvrtc_test bin
    if [ -n "${GPU_CHECK_BEAMWATCH:-}" ]; then
        # Called from `cargo test` (tests/gpu_check.rs), which has built everything already.
        bin=$GPU_CHECK_BEAMWATCH gpu=${GPU_CHECK_GPU_TESTS:?} nvrtc_test=${GPU_CHECK_NVRTC_TESTS:?}
    else
        say "building the release binary and the GPU test binaries"
        cargo build --release --quiet
        bin=target/release/beamwatch
        gpu=$(test_binary gpu)
        nvrtc_test=$(test_binary kernels_nvrtc)
    fi
    [ -x "$bin" ] && [ -x "$gpu" ] && [ -x "$nvrtc_test" ] || { say "binaries not found ($bin, $gpu, $nvrtc_test)"; exit 1; }
    rm -rf "$B" && mkdir -p "$B/bin" "$B/lib" "$B/nvrtc" "$B/shared/golden" "$B/shared/weights"
    pack "$bin" "$B/bin/beamwatch.xz"
    pack "$gpu" "$B/bin/gpu-tests.xz"
    pack "$nvrtc_test" "$B/bin/kernels-nvrtc.xz"
    # Shared libraries beyond the C runtime, which every Linux machine has. Every library of glibc
    # itself stays behind too (libresolv, libnss_*, …): they call glibc's private symbols, so this
    # machine's copy would not load beside the GPU machine's own libc (Debian 12's glibc 2.36 here,
    # Ubuntu's 2.39 there).
    ldd "$bin" "$gpu" | awk '/=> \//{print $3}' | sort -u |
        grep -Ev '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*|libgcc_s|libresolv|libnss_[^/]*|libnsl|libutil|libanl|libmvec|libthread_db|libBrokenLocale)\.so' |
        while read -r lib; do xz -T2 "$XZ_LEVEL" -c "$lib" >"$B/lib/$(basename "$lib").xz"; done
    local nv=${NVRTC_DIR:-$ROOT/.tools/nvrtc/nvidia/cuda_nvrtc/lib}
    if [ -e "$nv/libnvrtc.so.12" ]; then
        for f in libnvrtc.so.12 libnvrtc-builtins.so.12.9; do
            [ -e "$nv/$f" ] && xz -T2 "$XZ_LEVEL" -c "$nv/$f" >"$B/nvrtc/$f.xz"
        done
    else
        say "no NVRTC at $nv: the run will use the GPU machine's own"
    fi
    local shared=${BEAMWATCH_SHARED:-$ROOT/../shared}
    cp "$shared"/golden/*.npy "$B/shared/golden/"
    cp "$shared/weights/make_synthetic_weights.py" "$B/shared/weights/"
    sha256sum "$shared/weights/resnet18_synthetic_seed0.safetensors" | cut -d' ' -f1 >"$B/shared/weights/expected.sha256"
    git rev-parse HEAD >"$B/commit" 2>/dev/null || echo unknown >"$B/commit"
    local kib
    kib=$(du -sk "$B" | cut -f1)
    echo "$kib" >"$B/size_kib"
    say "bundle $B: $((kib / 1024)) MiB (limit $MAX_MIB MiB)"
    [ "$kib" -le $((MAX_MIB * 1024)) ] || { say "bundle over $MAX_MIB MiB"; exit 1; }
}

run() {
    local B=${1:-.tools/gpu-check} OUT=${2:-gpu-check-out}
    B=$(cd "$B" && pwd)
    mkdir -p "$OUT"
    OUT=$(cd "$OUT" && pwd)
    # One time budget for every step (the device tool's command limit is 480 s on a 15-minute
    # lease): each step gets its own limit or what is left of the budget, whichever is less, and a
    # step with under 15 s left is skipped and logged, so the summary and the packing always run.
    local t0 budget
    t0=$(date +%s)
    budget=${GPU_CHECK_BUDGET:-420}
    left_for() { # left_for OWN_LIMIT: seconds this step may take (at least 1: `timeout 0` never stops)
        local left=$((t0 + budget - $(date +%s)))
        [ "$left" -ge 1 ] || left=1
        if [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
    }
    local W
    W=$(mktemp -d)
    mkdir -p "$W/bin" "$W/lib" "$W/nvrtc"
    for f in "$B"/bin/*.xz; do unxz_to "$f" "$W/bin/$(basename "$f" .xz)"; chmod +x "$W/bin/$(basename "$f" .xz)"; done
    for f in "$B"/lib/*.xz; do [ -e "$f" ] && unxz_to "$f" "$W/lib/$(basename "$f" .xz)"; done
    local nvrtc_source="bundled NVRTC 12.9"
    if compgen -G "$B/nvrtc/*.xz" >/dev/null; then
        for f in "$B"/nvrtc/*.xz; do unxz_to "$f" "$W/nvrtc/$(basename "$f" .xz)"; done
        # cudarc asks for libnvrtc.so before libnvrtc.so.12: without this name the machine's own
        # (CUDA 13's) would be found first on the system path.
        ln -sf libnvrtc.so.12 "$W/nvrtc/libnvrtc.so"
    else
        # The machine's own NVRTC (CUDA toolkit or PyTorch's wheel), under a name cudarc tries.
        local found
        found=$(ls /usr/local/cuda/lib64/libnvrtc.so* 2>/dev/null | head -n1 || true)
        [ -n "$found" ] || found=$(python3 -c 'import nvidia.cuda_nvrtc as m, glob, os; print(sorted(glob.glob(os.path.join(list(m.__path__)[0], "lib", "libnvrtc.so*")))[0])' 2>/dev/null || true)
        [ -n "$found" ] && ln -sf "$found" "$W/nvrtc/libnvrtc.so"
        nvrtc_source="machine's own: ${found:-none found}"
    fi
    # Only our binaries see the carried libraries: PyTorch (weights, anchor) keeps the machine's own.
    local LDP="$W/lib:$W/nvrtc:${LD_LIBRARY_PATH:-}"
    export BEAMWATCH_SHARED="$B/shared" BEAMWATCH_REQUIRE_NVRTC=1
    local gpu_present=false driver="no NVIDIA driver (nvidia-smi absent)"
    if command -v nvidia-smi >/dev/null && timeout 30 nvidia-smi -L >/dev/null 2>&1; then
        gpu_present=true
        driver=$(timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n1 || true)
        timeout 30 nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
        export BEAMWATCH_REQUIRE_GPU=1
    fi
    say "GPU: $driver; NVRTC: $nvrtc_source"
    # Weights: regenerated from their deterministic generator where PyTorch is (46 MB do not fit
    # the bundle); here the original is used.
    local weights="$B/shared/weights/resnet18_synthetic_seed0.safetensors" weights_note
    if [ -e "${BEAMWATCH_SHARED_ORIG:-$ROOT/../shared}/weights/resnet18_synthetic_seed0.safetensors" ] && [ "$gpu_present" = false ]; then
        weights="${BEAMWATCH_SHARED_ORIG:-$ROOT/../shared}/weights/resnet18_synthetic_seed0.safetensors"
        weights_note="original file"
        ln -sf "$weights" "$B/shared/weights/resnet18_synthetic_seed0.safetensors" 2>/dev/null || true
    else
        # Never through a link a local run left (it points at the original).
        rm -f "$weights"
        (cd "$B/shared/weights" && timeout "$(left_for 180)" python3 make_synthetic_weights.py resnet18_synthetic_seed0.safetensors >"$OUT/weights.log" 2>&1) || true
        if [ ! -s "$weights" ]; then
            weights_note="regeneration failed (weights.log): the tests and benches that need the weights fail"
        elif [ "$(sha256sum "$weights" 2>/dev/null | cut -d' ' -f1)" = "$(cat "$B/shared/weights/expected.sha256")" ]; then
            weights_note="regenerated, identical (sha256)"
        else
            weights_note="regenerated, NOT identical to the original (GPU and CPU still run the same weights)"
        fi
    fi
    say "weights: $weights_note"
    local rc_nvrtc rc_gpu
    set +e
    # Each step has its own time limit, so that one hung kernel cannot eat a short lease; a step
    # stopped at its limit exits 124 and its log says how far it came.
    # Does the carried binary start on this machine's libc at all? (`ldd` names what is missing.)
    LD_LIBRARY_PATH="$LDP" "$W/bin/beamwatch" --version >"$OUT/binaries.log" 2>&1 ||
        say "the beamwatch binary does not start here: $(head -c 400 "$OUT/binaries.log")"
    LD_LIBRARY_PATH="$LDP" ldd "$W/bin/beamwatch" "$W/bin/gpu-tests" >>"$OUT/binaries.log" 2>&1
    say "NVRTC compile tests"
    LD_LIBRARY_PATH="$LDP" timeout -k 10 "$(left_for "${GPU_CHECK_T_NVRTC:-90}")" "$W/bin/kernels-nvrtc" --test-threads=1 >"$OUT/kernels_nvrtc.log" 2>&1
    rc_nvrtc=$?
    say "GPU tests, one process each (rc nvrtc $rc_nvrtc)"
    # One process per test: a kernel that faults leaves its CUDA context unusable for the rest of
    # the process, so the other tests (the other kernel families among them) still run and report.
    # Blocking launches: a faulting kernel is reported at its own launch, not at a later copy. All
    # tests share one time limit; what it leaves out is logged as not run. The tests that need a
    # GPU (gpu_*) run first; the CPU-only ones, which CI runs anyway, after them.
    local names name left rc deadline
    deadline=$(( $(date +%s) + $(left_for "${GPU_CHECK_T_TESTS:-240}") ))
    names=$(LD_LIBRARY_PATH="$LDP" "$W/bin/gpu-tests" --list 2>"$OUT/gpu_tests.log" | sed -n 's/: test$//p' |
        awk '/^gpu_/ { print; next } { rest[++k] = $0 } END { for (i = 1; i <= k; i++) print rest[i] }')
    rc_gpu=0
    [ -n "$names" ] || { say "the GPU test binary lists no tests"; rc_gpu=1; }
    for name in $names; do
        left=$(( deadline - $(date +%s) ))
        if [ "$left" -le 5 ]; then
            echo "NOT RUN (time limit): $name" >>"$OUT/gpu_tests.log"
            rc_gpu=124
            continue
        fi
        echo "== $name" >>"$OUT/gpu_tests.log"
        LD_LIBRARY_PATH="$LDP" CUDA_LAUNCH_BLOCKING=1 timeout -k 10 "$left" "$W/bin/gpu-tests" --exact "$name" --test-threads=1 --nocapture >>"$OUT/gpu_tests.log" 2>&1
        rc=$?
        if [ "$rc" != 0 ]; then
            echo "FAILED (exit $rc): $name" >>"$OUT/gpu_tests.log"
            rc_gpu=$rc
        fi
    done
    say "GPU tests rc $rc_gpu"
    local benches=() anchor="" skipped=()
    bench() { # bench SIZE PRECISION: fp32 (FFMA or 3×TF32, as the start-up probe chooses) or bf16;
        # --layers adds every convolution timed on its own on each kernel family, tile and K split
        # (gpu_convs); gpu_conv_launches says which launch each convolution got.
        local tag="$1_$2" lim
        lim=$(left_for "${GPU_CHECK_T_BENCH:-90}")
        if [ "$lim" -lt 15 ]; then
            skipped+=("bench $tag")
            return
        fi
        say "bench --backend cuda --size $1 --precision $2"
        LD_LIBRARY_PATH="$LDP" timeout -k 10 "$lim" "$W/bin/beamwatch" bench --backend cuda --size "$1" --frames 20 --metric resnet18 \
            --layers --precision "$2" --weights "$weights" >"$OUT/bench_cuda_$tag.json" 2>"$OUT/bench_cuda_$tag.log"
        benches+=("$OUT/bench_cuda_$tag.json")
    }
    if [ "$gpu_present" = true ]; then
        # The 1024² figures first, then the anchor, then 2048²: what a short budget keeps.
        bench 1024 fp32
        bench 1024 bf16
        # The anchor: PyTorch's trunk on the same patch counts (tools/torch_gpu_anchor.py).
        local lim
        lim=$(left_for "${GPU_CHECK_T_ANCHOR:-90}")
        if [ "$lim" -lt 15 ]; then
            skipped+=("PyTorch anchor")
        elif python3 -c 'import torch, torchvision, safetensors' 2>/dev/null; then
            say "PyTorch anchor"
            timeout -k 10 "$lim" python3 "$ROOT/tools/torch_gpu_anchor.py" "$weights" --patches 2601,10404 \
                >"$OUT/torch_anchor.json" 2>"$OUT/torch_anchor.log" && anchor="$OUT/torch_anchor.json"
        fi
        bench 2048 fp32
        bench 2048 bf16
    fi
    [ "${#skipped[@]}" -eq 0 ] || say "left out for the time budget: ${skipped[*]}"
    python3 - "$OUT" "$gpu_present" "$driver" "$nvrtc_source" "$weights_note" "$rc_nvrtc" "$rc_gpu" "$(cat "$B/commit")" "$(( $(date +%s) - t0 ))" "$(cat "$B/size_kib")" "$anchor" "$B" "$(IFS='|'; echo "${skipped[*]:-}")" "${benches[@]}" <<'PY' ||
import json, sys, pathlib
out, gpu, driver, nvrtc, weights, rc_nvrtc, rc_gpu, commit, secs, size_kib, anchor, bundle, skipped, *benches = sys.argv[1:]
out = pathlib.Path(out)
def lines(name, keys):
    p = out / name
    return [l for l in p.read_text(errors="replace").splitlines() if any(k in l for k in keys)] if p.exists() else []
summary = {
    "commit": commit,
    "gpu": driver if gpu == "true" else "no GPU",
    "nvrtc": nvrtc,
    "weights": weights,
    "binary": lines("binaries.log", ["beamwatch", "not found", "GLIBC"])[:6],
    "carried_libs": sorted(p.name[:-3] for p in pathlib.Path(bundle, "lib").glob("*.xz")),
    "kernels_nvrtc_tests": {"passed": rc_nvrtc == "0", "lines": lines("kernels_nvrtc.log", ["test result", "panicked"])},
    "gpu_tests": {"passed": rc_gpu == "0", "required_gpu": gpu == "true",
                  "lines": lines("gpu_tests.log", ["GPU", "max rel", "vs PyTorch", "skipped", "panicked", "FAILED", "NOT RUN", "probe", "fp32 on"])},
    "bench_cuda": {},
    "torch_anchor": None,
    "left_out_for_time": [s for s in skipped.split("|") if s] if skipped else [],
    "seconds": int(secs),
    "bundle_mib": round(int(size_kib) / 1024, 1),
}
if anchor:
    try:
        summary["torch_anchor"] = json.loads(pathlib.Path(anchor).read_text())
    except (OSError, ValueError) as e:
        summary["torch_anchor"] = {"error": str(e), "log": lines("torch_anchor.log", [""])[-5:]}
for b in benches:
    try:
        summary["bench_cuda"][pathlib.Path(b).stem] = json.loads(pathlib.Path(b).read_text())
    except (OSError, ValueError) as e:
        summary["bench_cuda"][pathlib.Path(b).stem] = {"error": str(e), "log": lines(pathlib.Path(b).stem + ".log", [""])[-5:]}
(out / "gpu-check.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
PY
        say "the summary failed: the logs still travel in logs.tar.gz"
    rm -rf "$W"
    # The device tool brings back at most 8 files from $OUT: the logs travel as one archive beside
    # the summary and console.log (which `tee` is still writing: neither packed nor deleted).
    (cd "$OUT" && find . -maxdepth 1 -type f ! -name gpu-check.json ! -name logs.tar.gz ! -name console.log -printf '%f\n' |
        tar czf logs.tar.gz -T -) || say "packing the logs failed"
    (cd "$OUT" && find . -maxdepth 1 -type f ! -name gpu-check.json ! -name logs.tar.gz ! -name console.log -delete) || true
    set -e
    [ "$rc_nvrtc" = 0 ] && [ "$rc_gpu" = 0 ]
}

case "${1:-}" in
gather) gather "${2:-}" ;;
run) run "${2:-}" "${3:-}" ;;
local)
    B=$(mktemp -d)/bundle
    gather "$B"
    run "$B" "${2:-gpu-check-out}"
    rm -rf "$(dirname "$B")"
    ;;
*)
    sed -n '2,16p' "$0"
    exit 2
    ;;
esac
