#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, over binaries packed by
# tools/gpu_pack.sh: the GPU tests, every step's --check at fp16 and bf16, the
# micro-benchmarks and the per-step comparison. Ends with a short table.
#
#   bash .gpu/gpu_run.sh [tests] [check] [bench] [fp8] [tp] [pytorch] [compare] [breakdown] [baseline] [autotune]
#   (default: all but autotune; baseline runs only when tools/gpu_pack.sh packed one:
#   BASELINE=<rev>; autotune times steps 02-04 and 06 with GEMM_AUTOTUNE=1 and 0 in turns)
# (tp needs 2 or more GPUs: step 07's --check at tp 2, then its timing at tp 1 and at every
# tp up to the GPUs there are.)
# `grade` (not in the default set) grades the GPU exercises as packed by gpu_pack.sh: every
# reference solution must pass all its cases (and prints its speed line), every untouched stub
# must fail all of them, every planted bug at least one (grade_gpu_exercises, below).
# Logs and JSON go to $OUT (the device tool brings them back) or ./out.
set -uo pipefail
BIN=.gpu/bin
[ -d "$BIN" ] || tar xzf .gpu/bin.tgz -C .gpu  # tools/gpu_pack.sh ships them compressed
OUT=${OUT:-out}
mkdir -p "$OUT"
what="${*:-tests check bench fp8 tp pytorch compare breakdown}"
summary="$OUT/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"

if [[ $what == *tests* ]]; then
  for t in "$BIN"/*_test; do
    [ -x "$t" ] || continue
    out=$("$t" 2>&1); rc=$?
    echo "$out" >> "$OUT/tests.log"
    p=$(echo "$out" | grep -ao '^\[  PASSED  \] [0-9]*' | awk '{s+=$NF} END{print s+0}')
    f=$(echo "$out" | grep -ao '^\[  FAILED  \] [0-9]*' | awk '{s+=$NF} END{print s+0}')
    s=$(echo "$out" | grep -ao '^\[  SKIPPED \] [0-9]*' | awk '{s+=$NF} END{print s+0}')
    [ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
    note "test $(basename "$t"): $p passed, $f failed, $s skipped"
    [ "$f" -ne 0 ] && echo "$out" | grep -aE 'FAIL|rel.err|error' | head -20
  done
fi

if [[ $what == *check* ]]; then
  runs=()
  for s in "$BIN"/step*; do [ -x "$s" ] && [[ $s != *_test && $s != *_demo ]] && runs+=("$s"); done
  runs+=("$BIN/step06_parallel_layers --unfused" "$BIN/step06_parallel_layers --fp8")
  for r in "${runs[@]}"; do
    for dt in fp16 bf16; do
      out=$($r --check --dtype "$dt" 2>&1); rc=$?
      echo "$out" >> "$OUT/check.log"
      note "check $(basename "$r") $dt: $(echo "$out" | grep -aE 'CHECK|error' | tail -1) (rc $rc)"
    done
  done
fi

if [[ $what == *fp8* ]] && [ -x "$BIN/step05_fp8" ]; then  # the scaling log of 40 steps, drawn
  "$BIN/step05_fp8" --iters 40 --fp8-log "$OUT/fp8_scaling.csv" | tail -2 | tee -a "$summary"
  python3 tools/plot_fp8_scaling.py "$OUT/fp8_scaling.csv" "$OUT/fp8_scaling.svg"
  "$BIN/step05_train_demo" > "$OUT/fp8_training.log" 2>&1  # does it still train: 16-bit vs FP8
  tail -3 "$OUT/fp8_training.log" | tee -a "$summary"
fi

if [[ $what == *bench* ]]; then
  for b in "$BIN"/*_bench; do
    [ -x "$b" ] || continue
    "$b" 2>&1 | tee -a "$OUT/bench.log" | tail -8 | tee -a "$summary"
  done
fi

gpus=$(nvidia-smi -L | wc -l)
if [[ $what == *tp* ]] && [ "$gpus" -ge 2 ] && [ -x "$BIN/step07_tensor_parallel" ]; then
  export NCCL_NVLS_ENABLE=0
  for dt in fp16 bf16; do
    "$BIN/step07_tensor_parallel" --tp 2 --preset small --check --no-sweep --dtype $dt 2>&1 | tee -a "$OUT/tp.log" |
      grep -aE "check|error" | sed "s/^/tp check $dt: /" >> "$summary"
  done
  for tp in 1 2 4 8; do
    [ "$tp" -le "$gpus" ] || break
    sweep=--no-sweep; [ "$tp" -eq "$gpus" ] && sweep=
    "$BIN/step07_tensor_parallel" --tp $tp $sweep 2>&1 | tee -a "$OUT/tp.log" | grep -aE "^rank 0:|error|<-" |
      sed "s/^/tp $tp: /" >> "$summary"
  done
fi

if [[ $what == *pytorch* ]] && python3 -c "import torch, safetensors" 2>/dev/null; then
  PYTHONUNBUFFERED=1 python3 tools/pytorch_compare.py --bin "$BIN" --json "$OUT/pytorch.json" 2>&1 |
    tee "$OUT/pytorch.log" | grep -E "PyTorch|max rel|PYTORCH" >> "$summary"
fi

if [[ $what == *compare* ]] && [ -x "$BIN/compare" ]; then
  base=(); [ -f "$OUT/pytorch.json" ] && base=(--pytorch "$OUT/pytorch.json")
  for dt in fp16 bf16; do
    "$BIN/compare" --dtype $dt --json "$OUT/compare_$dt.json" --svg "$OUT/compare_$dt.svg" "${base[@]}" 2>&1 |
      tee "$OUT/compare_$dt.log" | tail -18 >> "$summary"
    base=()  # PyTorch was timed at fp16
  done
fi
# Where each step's time goes, by category, beside each category's floor (fp16, PyTorch's
# peers too when they were timed): the table, JSON and the stacked chart.
if [[ $what == *breakdown* ]] && [ -x "$BIN/compare" ]; then
  base=(); [ -f "$OUT/pytorch.json" ] && base=(--pytorch "$OUT/pytorch.json")
  "$BIN/compare" --breakdown --skip-check --json "$OUT/breakdown_fp16.json" --svg "$OUT/breakdown_fp16.svg" \
    "${base[@]}" 2>&1 | tee "$OUT/breakdown_fp16.log" | sed -n '/^Where each step/,$p' >> "$summary"
fi
# This version against the baseline's binaries (BASELINE=<rev> tools/gpu_pack.sh), taking
# turns so that both see the same machine: attention_bench, gemm_bench, steps 04-06.
if [[ $what == *baseline* || -z "$*" ]] && [ -f .gpu/baseline.tgz ]; then
  tar xzf .gpu/baseline.tgz -C .gpu
  BASE=.gpu/baseline; rev=$(cat $BASE/REVISION)
  for round in 1 2; do
    for who in new $rev; do
      dir=$BIN; [ "$who" = new ] || dir=$BASE
      "$dir/attention_bench" 2>&1 | tee -a "$OUT/baseline.log" | grep -E "^ *128 " | sed "s/^/attention $who: /" >> "$summary"
    done
  done
  for round in 1 2 3; do
    for run in "step04_transformer_layer" "step05_fp8" "step06_parallel_layers" "step06_parallel_layers --unfused"; do
      for who in new $rev; do
        dir=$BIN; [ "$who" = new ] || dir=$BASE
        ms=$($dir/$run --iters 20 2>&1 | tee -a "$OUT/baseline.log" | grep -aoE "Mean time: [0-9.]+ ms" | head -1)
        note "baseline round $round: $run ($who): $ms"
      done
    done
  done
fi

# cuBLASLt's heuristic choice (the default) against autotuning (modules/gemm.h), taking
# turns on one machine.
if [[ $what == *autotune* ]]; then
  for round in 1 2 3; do
    for run in step02_te_modules step03_fused_modules step04_transformer_layer step06_parallel_layers; do
      for dt in fp16 bf16; do
        for tune in 1 0; do
          ms=$(GEMM_AUTOTUNE=$tune $BIN/$run --iters 20 --dtype $dt 2>&1 | grep -aoE "Mean time: [0-9.]+ ms" | head -1)
          note "autotune round $round: $run $dt GEMM_AUTOTUNE=$tune: $ms"
        done
      done
    done
  done
fi

# The GPU exercises (.gpu/bin/grade/<exercise>/{solution,stub,<bug>}, from gpu_pack.sh): read
# each binary's cmocka output the way tools/grade.sh does (tools/cmocka_report.awk) and check
# that the graded tests bite. The solutions' speed lines go to the summary.
grade_gpu_binary() {  # exercise, binary, variant (solution, stub or a bug's name)
  local ex="$1" bin="$2" variant="$3" out table pass fail skip cases verdict
  out=$(LD_LIBRARY_PATH="$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$bin" 2>&1)
  printf '=== %s %s\n%s\n' "$ex" "$variant" "$out" >> "$OUT/grade.log"
  table=$(echo "$out" | awk -f "$grade_report")
  pass=$(echo "$table" | grep -c '^PASS')
  fail=$(echo "$table" | grep -cE '^(FAIL|CRASH)')
  skip=$(echo "$table" | grep -c '^SKIP')
  cases=$(echo "$table" | awk -F'\t' '$1 == "CASES" {print $3}')
  case "$variant" in
    solution) verdict=ok; { [ "$pass" -gt 0 ] && [ "$pass" -eq "${cases:-0}" ]; } || verdict="ERROR: the solution does not pass every case" ;;
    stub) verdict=ok; { [ "$pass" -eq 0 ] && [ "$skip" -eq 0 ]; } || verdict="ERROR: the stub passes or skips a case" ;;
    *) verdict=caught; [ "$fail" -gt 0 ] || verdict="ERROR: NOT CAUGHT by any case" ;;
  esac
  [[ $verdict == ERROR* ]] && grade_bad=1
  note "grade $ex $variant: $pass passed, $fail failed, $skip skipped of ${cases:-?} - $verdict"
  if [ "$variant" = solution ]; then
    echo "$table" | awk -F'\t' '$1 == "SPEED" {print "  " $3}' | tee -a "$summary"
  else
    echo "$table" | awk -F'\t' '$1 == "FAIL" || $1 == "CRASH" {print "  first failure, " $2 ": " substr($3, 1, 400); exit}'
  fi
}

grade_gpu_exercises() {
  local dir ex bin
  grade_report=.gpu/tools/cmocka_report.awk; [ -f "$grade_report" ] || grade_report=tools/cmocka_report.awk
  grade_bad=0
  [ -d "$BIN/grade" ] || { note "grade: no $BIN/grade (pack with tools/gpu_pack.sh)"; return; }
  for dir in "$BIN"/grade/*/; do
    ex=$(basename "$dir")
    grade_gpu_binary "$ex" "$dir/solution" solution
    grade_gpu_binary "$ex" "$dir/stub" stub
    for bin in "$dir"/*; do
      case "$(basename "$bin")" in solution|stub) continue ;; esac
      grade_gpu_binary "$ex" "$bin" "$(basename "$bin")"
    done
  done
  note "grade: $([ "$grade_bad" -eq 0 ] && echo "every solution passes, every stub and planted bug fails" || echo "ERRORS above")"
}
[[ $what == *grade* ]] && grade_gpu_exercises

echo "================ summary"
cat "$summary"
