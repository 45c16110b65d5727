#!/usr/bin/env bash
# Installs the Debian packages tpipe needs, only those that are missing.
# Called by `make demo`, `make test` and `make bench`; safe to run again. Debian's python3-torch
# (the same LibTorch) is the oracle of the TorchScript front door's tests and runs the benchmark's
# peers (bench/peers.py).
set -euo pipefail

packages=(
  cmake ninja-build ccache g++ make
  libtorch-dev libgloo-dev libopenblas0   # LibTorch + c10d Gloo headers + fast BLAS
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libfmt-dev
  libssl-dev                               # SHA-256 of checkpoint files (libcrypto)
  librsvg2-bin                             # rsvg-convert, to check SVG output
  bible-kjv                                # corpus for the main job
  python3-torch                            # PyTorch: writes test files and computes reference losses
  iproute2                                 # ip netns: the two-machine test on one machine
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "tpipe: installing missing Debian packages: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "tpipe: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
