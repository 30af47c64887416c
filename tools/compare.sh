#!/usr/bin/env bash
# The main job: builds every step and runs the per-step comparison (table + JSON + SVG in
# out/). On a machine without a GPU it says so and runs the CPU reference instead.
#
#   tools/compare.sh                       quickstart config, fp16
#   tools/compare.sh --dtype bf16 --steps 01,04 --iters 20
set -euo pipefail
case "${1:-}" in
  -h|--help)
    echo "usage: tools/compare.sh [compare's flags...]   every step side by side; writes out/compare.json and out/compare.svg"
    echo "  (or where --json FILE / --svg FILE say)"
    echo "  e.g. tools/compare.sh --dtype bf16 --steps 01,04 --iters 20"
    echo "  Without a GPU: the CPU reference at the tiny preset, written to the same files."
    echo "  All the flags: bazel run //steps/compare:compare -- --help"
    exit 0 ;;
esac
cd "$(dirname "$0")/.."
tools/bootstrap.sh
bazel build //steps/compare:compare
# out/compare.json and out/compare.svg unless the flags name files of their own.
defaults=()
[[ " $* " == *" --json"* ]] || defaults+=(--json out/compare.json)
[[ " $* " == *" --svg"* ]] || defaults+=(--svg out/compare.svg)
if [ ${#defaults[@]} -gt 0 ]; then
  [ -e out ] && [ ! -d out ] && { echo "compare.sh: out is a file here; the table goes into the folder out/: move the file" >&2; exit 1; }
  mkdir -p out
fi
bazel-bin/steps/compare/compare "${defaults[@]}" "$@"
