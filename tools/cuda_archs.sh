#!/usr/bin/env bash
# Prints the --define that builds GPU code for the GPUs of this machine only (a faster build
# than the default's four generations):
#
#   bazel build $(tools/cuda_archs.sh) //...     e.g. --define=CUDA_ARCHS=90a on an H100
#
# It asks nvidia-smi for each GPU's compute capability and writes it as tools/cuda/gencode.sh
# expects: 9.0 becomes 90a (Hopper's wgmma/TMA kernels need it), any other X.Y becomes XY.
# (Not nvcc's -arch=native, which gives an H100 sm_90 without the "a" features.) Exits 1,
# printing the reason on stderr and nothing on stdout, where there is no GPU.
set -euo pipefail
case "${1:-}" in
  -h|--help)
    echo "usage: tools/cuda_archs.sh   print the --define that builds GPU code for this machine's GPUs only"
    echo "  e.g. bazel build \$(tools/cuda_archs.sh) //...   (exit 1, saying why, where there is no GPU)"
    exit 0 ;;
  "") ;;
  *) echo "usage: tools/cuda_archs.sh   (it takes no arguments)" >&2; exit 2 ;;
esac
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "cuda_archs.sh: no nvidia-smi here, so no GPU to build for; use the default build" >&2
  exit 1
fi
if ! caps=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>&1) || [ -z "$caps" ]; then
  echo "cuda_archs.sh: nvidia-smi found no GPU (${caps:-no output}); use the default build" >&2
  exit 1
fi
archs=()
for cap in $(echo "$caps" | tr -d ' ' | sort -u); do
  if ! [[ $cap =~ ^[0-9]+\.[0-9]$ ]]; then
    echo "cuda_archs.sh: nvidia-smi gave '$cap', not a compute capability" >&2
    exit 1
  fi
  arch=${cap/./}
  [ "$arch" = 90 ] && arch=90a
  archs+=("$arch")
done
(IFS=,; echo "--define=CUDA_ARCHS=${archs[*]}")
