#!/usr/bin/env bash
# Installs what beamwatch needs to build and test on Debian/Ubuntu, then runs the command given
# (if any) with the toolchain on PATH:
#   ./tools/setup.sh cargo run --release -- demo
#   ./tools/setup.sh cargo test --release
# Safe to run again: it only installs what is missing. Needs root or sudo for apt.
set -euo pipefail

# System packages: a C toolchain (C parts of some crates), pkg-config and the HDF5 library
# (session files and microscope HDF5 formats); Chromium and its WebDriver for the live view's
# browser tests (tests/view.rs drives the page headless); python3-venv for the Python client's
# environment (Debian's python3 has no `-m venv` without it).
packages=(build-essential pkg-config libhdf5-dev ca-certificates curl chromium chromium-driver python3-venv)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Rust toolchain (rustup) when cargo is absent.
if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "setup: installing the Rust toolchain (rustup)"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi
# NVRTC (CUDA's run-time compiler) for the GPU path: beamwatch compiles kernels/*.cu when it starts
# on a GPU, and the tests compile every kernel for sm_80 and sm_90 even where there is no GPU. The
# library comes from PyPI's nvidia-cuda-nvrtc-cu12 wheel (pip checks the wheel's sha256 against
# PyPI's index); no CUDA toolkit is installed. Set BEAMWATCH_SKIP_NVRTC=1 to leave it out.
nvrtc_version=12.9.86
here="$(cd "$(dirname "$0")/.." && pwd)"
nvrtc_dir="$here/.tools/nvrtc"
nvrtc_lib="$nvrtc_dir/nvidia/cuda_nvrtc/lib"
if [ -z "${BEAMWATCH_SKIP_NVRTC:-}" ]; then
    if [ ! -e "$nvrtc_lib/libnvrtc.so.12" ]; then
        if ! python3 -m pip --version >/dev/null 2>&1; then
            sudo=""
            [ "$(id -u)" -eq 0 ] || sudo="sudo"
            echo "setup: installing python3-pip (to fetch the NVRTC wheel)"
            $sudo apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-pip
        fi
        echo "setup: fetching NVRTC $nvrtc_version (nvidia-cuda-nvrtc-cu12 from PyPI) into .tools/nvrtc"
        wheels="$here/.tools/wheels"
        mkdir -p "$wheels"
        # `pip download` + unzip rather than `pip install --target`: works on Debian's externally
        # managed Python too, and touches no Python environment.
        python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
            --python-version 3 --implementation py -d "$wheels" "nvidia-cuda-nvrtc-cu12==$nvrtc_version"
        rm -rf "$nvrtc_dir.partial"
        python3 -m zipfile -e "$wheels"/nvidia_cuda_nvrtc_cu12-"$nvrtc_version"-*.whl "$nvrtc_dir.partial"
        rm -rf "$nvrtc_dir"
        mv "$nvrtc_dir.partial" "$nvrtc_dir"
    fi
    export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # The NVRTC tests fail rather than skip when the library cannot be loaded after all this.
    export BEAMWATCH_REQUIRE_NVRTC=1
fi

# The Python client (tools/python) in a virtual environment at .tools/venv, with what its tests
# and examples use: pyzmq and numpy (the client), h5py (session files), rosettasciio (microscope
# file formats). tests/python_client.rs runs the client against the daemon with
# $BEAMWATCH_PYTHON. The client is installed editable, so changes to it need no reinstall.
venv="$here/.tools/venv"
if ! "$venv/bin/python" -c "import zmq, numpy, h5py, rsciio, beamwatch_client" >/dev/null 2>&1; then
    # A venv that no longer runs (Python upgraded, checkout moved) is made again.
    if [ -e "$venv" ] && ! "$venv/bin/python" -c "" >/dev/null 2>&1; then
        rm -rf "$venv"
    fi
    echo "setup: creating the Python environment .tools/venv (pyzmq, numpy, h5py, rosettasciio, tools/python)"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q pyzmq numpy h5py rosettasciio -e "$here/tools/python"
fi
export BEAMWATCH_PYTHON="$venv/bin/python"
# The C bitshuffle library, only for tools/bench_bitshuffle.py (the decoder benchmark's anchor):
# it builds from source where no wheel fits, so a failure here is reported and not fatal.
if ! "$venv/bin/python" -c "import bitshuffle" >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install -q bitshuffle \
        || echo "setup: bitshuffle did not install; tools/bench_bitshuffle.py will not run (nothing else needs it)"
fi

echo "setup: ready ($(cargo --version))"
if [ "$#" -gt 0 ]; then
    exec "$@"
fi
