#!/usr/bin/env bash
# The main job: builds every step and runs the per-step comparison (table + JSON + SVG in
# out/). On a machine without a GPU it says so and runs the CPU reference instead.
#
#   tools/compare.sh                       quickstart config, fp16
#   tools/compare.sh --dtype bf16 --steps 01,04 --iters 20
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh
bazel build //steps/compare:compare
mkdir -p out
bazel-bin/steps/compare/compare --json out/compare.json --svg out/compare.svg "$@"
