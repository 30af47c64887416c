#!/usr/bin/env bash
# Builds everything here and packs the binaries for the GPU machine, which has the CUDA
# toolkit but no Bazel and no cmocka: every cc_binary and cc_test goes into .gpu/bin
# (git-ignored) with libcmocka.so.0 beside them (our binaries carry rpath $ORIGIN), plus
# tools/gpu_run.sh. The binaries travel compressed (.gpu/bin.tgz, a quarter of their size:
# the device tool carries 64 MiB at most); gpu_run.sh unpacks them. Then, with the device
# tool: carry ".gpu", run "bash .gpu/gpu_run.sh".
#
#   tools/gpu_pack.sh [bazel flags]
#   BASELINE=<git revision> tools/gpu_pack.sh   also packs that revision's benchmarks and
#       steps 04-06 (.gpu/baseline.tgz), so that `gpu_run.sh baseline` times the two versions
#       side by side in one run (a worktree of the revision, built with the same flags)
set -euo pipefail
case "${1:-}" in
  -h|--help)
    echo "usage: tools/gpu_pack.sh [bazel flags...]   build everything, pack the binaries into .gpu/ for the GPU machine"
    echo "       BASELINE=<git revision> tools/gpu_pack.sh   also pack that revision's benchmarks and steps 04-06"
    exit 0 ;;
esac
cd "$(dirname "$0")/.."
if [ -n "${BASELINE:-}" ]; then  # checked before the long build
  rev=$(git rev-parse --short --verify --quiet "$BASELINE^{commit}") ||
    { echo "BASELINE=$BASELINE: not a revision of this repository" >&2; exit 1; }
fi
tools/bootstrap.sh
bazel build //... "$@"
rm -rf .gpu && mkdir -p .gpu/bin
targets=$(bazel query 'kind("cc_test|cc_binary", //...)' 2>/dev/null)
for t in $targets; do
  path="bazel-bin/${t#//}"; path="${path/://}"
  [ -x "$path" ] && cp "$path" .gpu/bin/
done
cp "$(ldconfig -p | awk '/libcmocka.so.0 /{print $NF; exit}')" .gpu/bin/libcmocka.so.0
cp tools/gpu_run.sh .gpu/
mkdir -p .gpu/tools && cp tools/pytorch_compare.py tools/profile_step.sh tools/profile_stalls.sh .gpu/tools/
if [ -n "${BASELINE:-}" ]; then
  wt=$(mktemp -d)/baseline
  git worktree add --detach "$wt" "$rev" >/dev/null
  trap 'git worktree remove --force "$wt" 2>/dev/null || true' EXIT  # also when its build fails
  # Found by name, so that a revision from before or after a move of folders packs the same.
  mapfile -t baseline_targets < <(cd "$wt" && bazel query 'kind(cc_binary, //...)' 2>/dev/null |
    grep -E ':(attention_bench|gemm_bench|step04_transformer_layer|step05_fp8|step06_parallel_layers)$')
  (cd "$wt" && bazel build "${baseline_targets[@]}" "$@")
  mkdir -p .gpu/baseline
  for t in "${baseline_targets[@]}"; do
    path="$wt/bazel-bin/${t#//}"; cp "${path/://}" .gpu/baseline/
  done
  echo "$rev" > .gpu/baseline/REVISION
  (cd "$wt" && bazel clean --expunge >/dev/null 2>&1 || true)
  git worktree remove --force "$wt"
  tar czf .gpu/baseline.tgz -C .gpu baseline && rm -rf .gpu/baseline
fi
count=$(ls .gpu/bin | wc -l)
tar czf .gpu/bin.tgz -C .gpu bin && rm -rf .gpu/bin
echo "packed $count files into .gpu ($(du -sh .gpu | cut -f1))"
