#!/usr/bin/env bash
# Turns CUDA_ARCHS (a comma-separated list, set in .bazelrc or with --define=CUDA_ARCHS=...)
# into nvcc's -gencode flags, one per item; tools/cuda/cuda.bzl runs it for every .cu file.
#
#   80, 86, 89, 90a   (or sm_80, ...) machine code (SASS) for that GPU:  -gencode=arch=compute_80,code=sm_80
#                     A GPU runs SASS built for its own major version and an equal or lower
#                     minor one (sm_86 code runs on 8.6 and 8.7, never on 8.0 or 9.0).
#   compute_90        PTX only:  -gencode=arch=compute_90,code=compute_90. The driver
#                     JIT-compiles it, at a program's first launch, for any GPU of that
#                     capability or newer that the binary holds no SASS for.
#
# Refused, with a message: anything else, and GPUs below 8.0 (our kernels use bf16 tensor
# cores). `native` is refused too: nvcc's -arch=native would give an H100 sm_90, not sm_90a
# (so no wgmma kernels), and its output would be cached under a name that says nothing about
# the GPU; tools/cuda_archs.sh asks the GPU here instead and prints the --define to use.
set -euo pipefail
if [ "${1:-}" = --help ] || [ "${1:-}" = -h ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: gencode.sh ARCH[,ARCH...]   e.g. 80,86,89,90a,compute_90" >&2
  exit 2
fi
flags=()
for arch in ${1//,/ }; do
  if [[ $arch =~ ^(sm_)?(([0-9]+)a?)$ ]]; then  # 90a or sm_90a
    arch=${BASH_REMATCH[2]}
    number=${BASH_REMATCH[3]}
    kind=sm
  elif [[ $arch =~ ^compute_([0-9]+)a?$ ]]; then
    number=${BASH_REMATCH[1]}
    kind=compute
  elif [ "$arch" = native ]; then
    echo "CUDA_ARCHS=native is not supported: run 'bazel build \$(tools/cuda_archs.sh) //...'," \
         "which asks this machine's GPU for its compute capability" >&2
    exit 1
  else
    echo "CUDA_ARCHS: '$arch' is not an architecture; expected e.g. 80, 86, 89, 90a (machine code)" \
         "or compute_90 (PTX)" >&2
    exit 1
  fi
  if [ "$number" -lt 80 ]; then
    echo "CUDA_ARCHS: '$arch' is below compute capability 8.0, which every kernel here needs" \
         "(bf16 tensor cores)" >&2
    exit 1
  fi
  if [ $kind = sm ]; then
    flags+=("-gencode=arch=compute_$arch,code=sm_$arch")
  else
    flags+=("-gencode=arch=$arch,code=$arch")
  fi
done
echo "${flags[@]}"
