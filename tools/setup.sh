#!/usr/bin/env bash
# Installs what beamwatch needs to build and test on Debian/Ubuntu, then runs the command given
# (if any) with the toolchain on PATH:
#   ./tools/setup.sh cargo run --release -- demo
#   ./tools/setup.sh cargo test --release
# Safe to run again: it only installs what is missing. Needs root or sudo for apt.
set -euo pipefail

# System packages: a C toolchain (C parts of some crates), pkg-config and the HDF5 library
# (session files and microscope HDF5 formats).
packages=(build-essential pkg-config libhdf5-dev ca-certificates curl)
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
echo "setup: ready ($(cargo --version))"
if [ "$#" -gt 0 ]; then
    exec "$@"
fi
