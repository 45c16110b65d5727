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
# Wanted for a test only; where it cannot be installed, that test is skipped and says so.
optional=(
  chromium-headless-shell                  # renders report.html in a real browser
)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=() missing_optional=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
for p in "${optional[@]}"; do installed "$p" || missing_optional+=("$p"); done
[ ${#missing[@]} -eq 0 ] && [ ${#missing_optional[@]} -eq 0 ] && exit 0

echo "tpipe: installing missing Debian packages: ${missing[*]} ${missing_optional[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    [ ${#missing[@]} -eq 0 ] && { echo "tpipe: not installing ${missing_optional[*]} (not root): its test is skipped"; exit 0; }
    echo "tpipe: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
[ ${#missing[@]} -eq 0 ] || $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
if [ ${#missing_optional[@]} -gt 0 ]; then
  $sudo apt-get install -y -qq --no-install-recommends "${missing_optional[@]}" ||
    echo "tpipe: could not install ${missing_optional[*]}: the test that needs it is skipped"
fi
