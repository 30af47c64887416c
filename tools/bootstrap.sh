#!/usr/bin/env bash
# Installs what the build needs, from Debian's packages, if it is missing. Idempotent:
# a second run installs nothing. The CUDA toolkit itself (nvcc, cuBLAS, NCCL) is a
# prerequisite: the README says where it comes from.
set -euo pipefail
case "${1:-}" in
  -h|--help)
    echo "usage: tools/bootstrap.sh   install the Debian packages the build needs (idempotent); check for nvcc"
    exit 0 ;;
  "") ;;
  *) echo "usage: tools/bootstrap.sh   (it takes no arguments)" >&2; exit 2 ;;
esac

packages=(
  bazel-bootstrap     # Bazel 4.2.3, the build
  bazel-rules-java    # @rules_java, which Bazel 4 loads even for C (WORKSPACE points at it)
  libcmocka-dev       # unit tests
  libjansson-dev      # JSON parser for the safetensors header
  g++                 # Bazel's C/C++ toolchain and nvcc's host compiler
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

CUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}"
if [ ! -x "$CUDA_ROOT/bin/nvcc" ]; then
  echo "bootstrap: the CUDA toolkit is not at $CUDA_ROOT (no bin/nvcc)." >&2
  echo "  Install it (NVIDIA's CUDA 12.8+ or 13 toolkit for Debian 12), or set CUDA_ROOT." >&2
  exit 1
fi
