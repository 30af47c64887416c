#!/usr/bin/env bash
# Builds everything here and packs the binaries for the GPU machine, which has the CUDA
# toolkit but no Bazel and no cmocka: every cc_binary and cc_test goes into .gpu/bin
# (git-ignored) with libcmocka.so.0 and libcupti.so.13 beside them, plus tools/gpu_run.sh. Our
# binaries look beside themselves first (rpath $ORIGIN, then the toolkit's lib64): they load
# the packed libcupti, the one whose headers they were built with, wherever (or whether) the
# GPU machine's toolkit keeps its own (extras/CUPTI/lib64 in the .run and .deb layouts). Then, with the device tool: carry ".gpu", run "bash .gpu/gpu_run.sh".
#
#   .gpu/bin.txz       the default build (.bazelrc: machine code for sm_80, sm_86, sm_89,
#                      sm_90a and PTX for compute_90)
#   .gpu/portable.txz  everything again with --config=portable: PTX for compute_80 only, which
#                      the GPU's driver JIT-compiles, as it does for an sm_80 binary on a newer
#                      GPU; on a Hopper GPU it runs the non-Hopper kernels from compute_80 code.
#                      `gpu_run.sh portable` runs the GPU tests and every step's --check on it.
#   .gpu/portable.txz  also holds sm86_only/step01_naive: machine code for sm_86 only, which
#                      a GPU of another major version cannot run (`gpu_run.sh nocode` expects
#                      it to say so in a sentence, not fail a launch with "no kernel image").
#
# The binaries travel as tar + xz with a 128 MiB dictionary (the device tool carries 64 MiB
# at most): every binary holds the same kernels, and a dictionary larger than one binary
# stores them once. (Measured 2026-11-29 on the default build's 38 binaries, 410 MiB: gzip
# 85 MB, this 5.2 MB.) gpu_run.sh unpacks them.
#
#   tools/gpu_pack.sh [bazel flags]       e.g. --define=CUDA_ARCHS=90a for a quicker build
#   PORTABLE=0 tools/gpu_pack.sh          without the portable build (half the build time)
#   BASELINE=<git revision> tools/gpu_pack.sh   also packs that revision's benchmarks and
#       steps 04-07 (.gpu/baseline.txz), so that `gpu_run.sh baseline` times the two versions
#       side by side in one run (a worktree of the revision, built with the same flags)
# The GPU exercises' graded tests are also packed built with the untouched stubs and with each
# planted bug (.gpu/bin/grade/<exercise>/), for `gpu_run.sh grade` (pack_graded_gpu_exercises).
set -euo pipefail
case "${1:-}" in
  -h|--help)
    echo "usage: tools/gpu_pack.sh [bazel flags...]   build everything, pack the binaries into .gpu/ for the GPU machine"
    echo "       BASELINE=<git revision> tools/gpu_pack.sh   also pack that revision's benchmarks and steps 04-07"
    exit 0 ;;
esac
cd "$(dirname "$0")/.."
if [ -n "${BASELINE:-}" ]; then  # checked before the long build
  rev=$(git rev-parse --short --verify --quiet "$BASELINE^{commit}") ||
    { echo "BASELINE=$BASELINE: not a revision of this repository" >&2; exit 1; }
fi
tools/bootstrap.sh

# .gpu/$1.txz from the folder .gpu/$1, which is then removed.
compress() {
  tar cf - -C .gpu "$1" | xz -T2 --lzma2=preset=1,dict=128MiB > ".gpu/$1.txz"
  rm -rf ".gpu/$1"
}

# libcupti (the breakdown's timer, common/gpu/gpu_phase.h) into folder $1, under the name our
# binaries ask for (libcupti.so.13), from where one of them finds it here.
pack_libcupti() {
  local dir=$1 bin name path
  bin=$(ls "$dir"/step01_naive 2>/dev/null || ls "$dir"/* | head -1)
  read -r name path < <(ldd "$bin" | awk '$1 ~ /^libcupti\.so/ {print $1, $3; exit}') || true
  if [ -z "${path:-}" ] || [ ! -f "$path" ]; then
    echo "gpu_pack: $bin does not find libcupti here (ldd: ${name:-no libcupti}): is CUPTI installed?" >&2
    exit 1
  fi
  cp -L "$path" "$dir/$name"
}

# Builds //... with the given flags and copies every test and binary into .gpu/$1.
build_into() {
  local name=$1 dir=.gpu/$1
  shift
  bazel build //... "$@"
  mkdir -p "$dir"
  local targets
  targets=$(bazel query 'kind("cc_test|cc_binary", //...)' 2>/dev/null)
  for t in $targets; do
    path="bazel-bin/${t#//}"; path="${path/://}"
    [ -x "$path" ] && cp "$path" "$dir/"
  done
  cp "$(ldconfig -p | awk '/libcmocka.so.0 /{print $NF; exit}')" "$dir/libcmocka.so.0"
  pack_libcupti "$dir"
  echo "$name: $(ls "$dir" | wc -l) files, built with: bazel build //... $*" > "$dir/BUILT_WITH"
}

# The flags are checked before .gpu is emptied, so that a bad one leaves the last pack as it was
# (Bazel analyses without building: --nobuild).
case "${PORTABLE:-1}" in 0|1) ;; *) echo "gpu_pack: PORTABLE=$PORTABLE: 0 (no portable build) or 1 (the default)" >&2; exit 2 ;; esac
flag_log=$(mktemp)
if ! bazel build --nobuild //... "$@" >"$flag_log" 2>&1; then
  tail -5 "$flag_log"; rm -f "$flag_log"
  echo "gpu_pack: Bazel refused the flags ($*); .gpu is left as it was" >&2
  exit 2
fi
rm -f "$flag_log"
rm -rf .gpu && mkdir -p .gpu
if [ "${PORTABLE:-1}" != 0 ]; then
  # First, so that the default build is the one left in bazel-bin.
  build_into portable "$@" --config=portable
  bazel build //steps/01_naive:step01_naive "$@" --define=CUDA_ARCHS=86
  mkdir -p .gpu/portable/sm86_only && cp bazel-bin/steps/01_naive/step01_naive .gpu/portable/sm86_only/
  pack_libcupti .gpu/portable/sm86_only
  compress portable
fi
build_into bin "$@"
cp tools/gpu_run.sh .gpu/
mkdir -p .gpu/tools && cp tools/pytorch_compare.py tools/torch_categories.py tools/attention_peers.py \
  tools/plot_fp8_scaling.py tools/profile_step.sh tools/profile_stalls.sh .gpu/tools/
if [ -n "${BASELINE:-}" ]; then
  wt=$(mktemp -d)/baseline
  git worktree add --detach "$wt" "$rev" >/dev/null
  trap 'git worktree remove --force "$wt" 2>/dev/null || true' EXIT  # also when its build fails
  # Found by name, so that a revision from before or after a move of folders packs the same.
  mapfile -t baseline_targets < <(cd "$wt" && bazel query 'kind(cc_binary, //...)' 2>/dev/null |
    grep -E ':(attention_bench|gemm_bench|step04_transformer_layer|step05_fp8|step06_parallel_layers|step07_tensor_parallel)$')
  (cd "$wt" && bazel build "${baseline_targets[@]}" "$@")
  mkdir -p .gpu/baseline
  for t in "${baseline_targets[@]}"; do
    path="$wt/bazel-bin/${t#//}"; cp "${path/://}" .gpu/baseline/
  done
  echo "$rev" > .gpu/baseline/REVISION
  (cd "$wt" && bazel clean --expunge >/dev/null 2>&1 || true)
  git worktree remove --force "$wt"
  compress baseline
fi

# The GPU exercises, for `gpu_run.sh grade`: each graded GPU test built with the reference
# solution, with the untouched stub and with each planted bug (tools/exercises.bzl:
# --define=EXERCISES=<exercise>[.<bug>]), as .gpu/bin/grade/<exercise>/{solution,stub,<bug>}.
pack_graded_gpu_exercises() {
  local tests t exercise bin variant define
  tests=$(bazel query 'attr(tags, "\bgraded\b", attr(tags, "\bgpu\b", tests(//...)))' 2>/dev/null)
  cp tools/cmocka_report.awk .gpu/tools/
  for t in $tests; do
    exercise=$(bazel query "$t" --output=build 2>/dev/null | grep -o 'exercise=[a-z0-9_]*' | head -1 | cut -d= -f2)
    bin="bazel-bin/${t#//}"; bin="${bin/://}"
    mkdir -p ".gpu/bin/grade/$exercise"
    for variant in solution stub $(cd tools/solutions/bugs && ls "$exercise".*.sed 2>/dev/null | sed 's/\.sed$//'); do
      case "$variant" in
        solution) define=() ;;
        stub) define=(--define=EXERCISES="$exercise") ;;
        *) define=(--define=EXERCISES="$variant") ;;
      esac
      bazel build "$@" "${define[@]}" "$t" >.gpu/grade_build.log 2>&1 ||
        { tail -20 .gpu/grade_build.log; echo "gpu_pack: $t did not build as $variant" >&2; exit 1; }
      cp "$bin" ".gpu/bin/grade/$exercise/${variant#"$exercise".}"
    done
  done
  bazel build "$@" $tests >/dev/null 2>&1  # leave bazel-bin with the solutions, as //... built it
  rm -f .gpu/grade_build.log
}
pack_graded_gpu_exercises "$@"
count=$(ls .gpu/bin | wc -l)
compress bin
echo "packed $count files into .gpu ($(du -sh .gpu | cut -f1)): $(cd .gpu && ls *.txz | tr '\n' ' ')"
