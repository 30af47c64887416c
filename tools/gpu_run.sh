#!/usr/bin/env bash
# Runs on the GPU machine, from the folder that holds .gpu/ (the repository root, or wherever
# .gpu/ was copied: the scripts it runs are packed into .gpu/tools/), over binaries packed by
# tools/gpu_pack.sh: the GPU tests, every step's --check at fp16 and bf16, the
# micro-benchmarks and the per-step comparison. Ends with a short table.
usage() {
  cat <<'EOF'
usage: bash .gpu/gpu_run.sh [MODE ...]      (from the folder that holds .gpu/)

MODEs (default: tests check bench fp8 tp pytorch compare breakdown, and baseline when packed):
  tests      every GPU test program of the default build
  check      every step's --check at fp16 and bf16 (step 06 also --unfused and --fp8)
  bench      the micro-benchmarks (attention_bench at fp16 and bf16)
  fp8        step 05's amax/scale log of 40 steps (drawn as SVG) and the training demo
  tp         step 07 (2 or more GPUs): --check at tp 2 for every variant and schedule (overlap
             on/off, LayerNorm outputs gathered again/kept, --fprop-chunks 4, the serial layer with
             --overlap-sm-margin 0 (all SMs; the default leaves 16 to NCCL), --recompute-gelu,
             --recompute-gelu --recompute-layernorm), the collectives' sweep at the small preset,
             the schedules' saved results compared bit for bit, then the quickstart timing at tp 1 and 2,
             overlapped and --no-overlap, fp16 and bf16, activations kept per rank, and the
             issue's goals as ratios (measured on 2 H200s: TP_DTYPES=fp16 alone over 5.5 minutes,
             TP_QUICK=1 with both dtypes over 6.5; the full set at both dtypes does not fit one
             10-minute device call: run the dtypes apart)
  tpknobs    step 07 at tp 2, fp16: the overlap's knobs (--overlap-priority normal, --overlap-ctas
             8 / 16, --overlap-sm-margin 0 / 24, --fprop-chunks 2 / 4, each --fprop-chunks with
             --overlap-ctas 8), --recompute-gelu
             and --recompute-gelu --recompute-layernorm
             beside the default and --no-overlap
             (TP_TURNS=2: twice)
  tpsp       step 07 at tp 2 (2 or more GPUs), issue 22's sequence-parallel line: plain TP, SP, SP
             --recompute-gelu, SP with both recomputations, fp16 and bf16, in turns (TP_TURNS
             rounds, default 3); each turn's time over plain TP's of the same turn, and the median
  envab      an A/B of environment switches in turns (ENVAB="VAR=VALUE ...", ENVAB_TURNS
             rounds, default 3): attention_bench's d 128 and d 64 rows at fp16 and bf16, then
             step 04's time (--iters 20), each with the variables set and without
  attention  the attention table: attention_bench at fp16 and bf16, PyTorch's SDPA backends (cuDNN,
             flash) at the same rows, and every row side by side with ours >= cuDNN marked
             (tools/attention_peers.py --ours; about 2 minutes on an H200)
  pytorch    the same layer in PyTorch (where torch is installed)
  compare    the per-step comparison, fp16 and bf16
  breakdown  where each step's time goes, by category, beside its floor (fp16; PyTorch's peers
             when pytorch ran first); timed with CUPTI, or CUDA events under GPU_PHASE_TIMER=events
  baseline   this version against the one packed with BASELINE=<rev> tools/gpu_pack.sh
  autotune   steps 02-04 and 06 with GEMM_AUTOTUNE=1 and 0 in turns
  epilogues  issue 21's A/B (modules/linear.h): epilogue_bench (fp16), then step 04's --check
             (fp16, bf16) and its time (3 rounds in turns) with every EPILOGUE_<KIND>=kernel
             alone, all four, and none (the default)
  determinism  --deterministic: two runs with one seed save identical files (steps 04-06),
             and what the flag costs step 04
  wgrad      step 04's MLP wgrads on a second stream (its default; --no-overlap-wgrad: one
             stream; issue 21): --check both ways at fp16 and bf16 (also under
             EPILOGUE_BGRAD=kernel), the saved results of both compared bit for bit
             (--deterministic, seq 1024), then the quickstart's time both ways, in turns
             (WGRAD_TURNS rounds, default 3)
  grade      the GPU exercises as packed: every reference solution passes all its cases (and
             prints its speed line), every untouched stub fails all, every planted bug at least one
Every GPU generation on one GPU (each runs tests + check; FP8 runs below compute
capability 8.9 must refuse with a clear message, and count as "refused as expected"):
  sim80      the default build with GPU_SIMULATE_CC=8.0: the GPU acts as an A100
             (no wgmma kernels, A100 shared memory, FP8 refused)
  sim89      the default build with GPU_SIMULATE_CC=8.9: an L4 / L40S (FP8, no wgmma)
  portable   the portable build (.gpu/portable: PTX for compute_80 only, JIT-compiled)
  nocode     a step built for sm_86 only, on a GPU of another major version: it must say
             that it holds no code for this GPU
  arch       tests check sim80 sim89 portable nocode
Logs and JSON go to $OUT, or ./out (copy it back from the GPU machine).
EOF
}
set -uo pipefail
for arg in "$@"; do
  case $arg in
    -h|--help) usage; exit 0 ;;
    tests|check|bench|fp8|tp|tpknobs|tpsp|envab|attention|pytorch|compare|breakdown|baseline|autotune|epilogues|grade|determinism|wgrad|sim80|sim89|portable|nocode|arch) ;;
    *) echo "gpu_run.sh: unknown mode '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done
# envab's variables, checked before any work: VAR=VALUE words, at least one.
read -r -a envab_words <<< "${ENVAB:-}"  # split on blanks, no globbing
if [[ " $* " == *" envab "* ]]; then
  [ ${#envab_words[@]} -gt 0 ] || { echo "gpu_run.sh envab: set ENVAB to the variables to compare (VAR=VALUE ...)" >&2; exit 2; }
  for word in "${envab_words[@]}"; do
    [[ $word =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] ||
      { echo "gpu_run.sh envab: ENVAB takes VAR=VALUE words; '$word' is not one" >&2; exit 2; }
  done
fi
what=" ${*:-tests check bench fp8 tp pytorch compare breakdown} "
what=${what/ arch / tests check sim80 sim89 portable nocode }
wants() { [[ $what == *" $1 "* ]]; }

# .gpu/$1 from .gpu/$1.txz (tools/gpu_pack.sh; .tgz from an older one) unless it is there.
unpack() {
  [ -d ".gpu/$1" ] && return 0
  if [ -f ".gpu/$1.txz" ]; then
    if command -v xz >/dev/null 2>&1; then tar xJf ".gpu/$1.txz" -C .gpu
    else python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' ".gpu/$1.txz" .gpu
    fi
  elif [ -f ".gpu/$1.tgz" ]; then tar xzf ".gpu/$1.tgz" -C .gpu
  else return 1
  fi
}
if ! unpack bin; then
  echo "gpu_run.sh: no .gpu/bin.txz here: run tools/gpu_pack.sh first, and this from the folder holding .gpu/" >&2
  exit 1
fi
BIN=.gpu/bin
OUT=${OUT:-out}
mkdir -p "$OUT"
summary="$OUT/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
# A script of tools/ as packed beside the binaries (.gpu/tools/, gpu_pack.sh), or else from the
# repository this runs in.
tool() { if [ -f ".gpu/tools/$1" ]; then echo ".gpu/tools/$1"; else echo "tools/$1"; fi; }
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | tee -a "$summary"
device_cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' ')

# One row per build and GPU generation for the table at the end: tests (cases passed/failed/
# skipped) and checks (passed/failed/refused as expected).
arch_rows=()
tests_p=0 tests_f=0 tests_s=0 checks_p=0 checks_f=0 checks_r=0

# The GPU test programs in folder $1; $2 labels the lines ("" for the default run).
run_tests() {
  local dir=$1 label=$2 t out rc p f s
  tests_p=0 tests_f=0 tests_s=0
  # The programs run side by side (GPU_TEST_JOBS at once, default 8: most of their time is
  # the CPU reference, and the GPU machine has 16 cores), except those that time the GPU
  # (TIMED_TESTS), which run alone afterwards. Results are reported in name order.
  local tmp; tmp=$(mktemp -d)
  local timed=" ${TIMED_TESTS:-breakdown_gpu_test} " parallel=() alone=()
  for t in "$dir"/*_test; do
    [ -x "$t" ] || continue
    if [[ $timed == *" $(basename "$t") "* ]]; then alone+=("$t"); else parallel+=("$t"); fi
  done
  run_one_test() { "$1" > "$2/$(basename "$1").out" 2>&1; echo $? > "$2/$(basename "$1").rc"; }
  export -f run_one_test
  [ ${#parallel[@]} -gt 0 ] && printf '%s\n' "${parallel[@]}" | xargs -P "${GPU_TEST_JOBS:-8}" -I{} bash -c 'run_one_test "$1" "$2"' _ {} "$tmp"
  for t in "${alone[@]}"; do run_one_test "$t" "$tmp"; done
  printf '%s\n' "${parallel[@]}" "${alone[@]}" | grep . | sort > "$tmp/order"
  while read -r t; do
    out=$(cat "$tmp/$(basename "$t").out"); rc=$(cat "$tmp/$(basename "$t").rc")
    echo "$out" >> "$OUT/tests${label:+_$label}.log"
    p=$(echo "$out" | grep -ao '^\[  PASSED  \] [0-9]*' | awk '{s+=$NF} END{print s+0}')
    f=$(echo "$out" | grep -ao '^\[  FAILED  \] [0-9]*' | awk '{s+=$NF} END{print s+0}')
    s=$(echo "$out" | grep -ao '^\[  SKIPPED \] [0-9]*' | awk '{s+=$NF} END{print s+0}')
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    note "${label:+[$label] }test $(basename "$t"): $p passed, $f failed, $s skipped"
    [ "$f" -ne 0 ] && echo "$out" | grep -aE 'FAIL|rel.err|error' | head -20
    tests_p=$((tests_p + p)) tests_f=$((tests_f + f)) tests_s=$((tests_s + s))
  done < "$tmp/order"
  rm -rf "$tmp"
}

# Every step's --check at fp16 and bf16 with the binaries in $1, on a GPU of compute
# capability $3 ("9.0"; the simulated one where GPU_SIMULATE_CC is set). Below 8.9 the FP8
# runs must refuse, naming FP8 and the minimum: that is a pass ("refused as expected").
run_checks() {
  local dir=$1 label=$2 cc=${3/./}
  checks_p=0 checks_f=0 checks_r=0
  local runs=()
  for s in "$dir"/step*; do [ -x "$s" ] && [[ $s != *_test && $s != *_demo ]] && runs+=("$s"); done
  runs+=("$dir/step06_parallel_layers --unfused" "$dir/step06_parallel_layers --fp8")
  for r in "${runs[@]}"; do
    for dt in fp16 bf16; do
      out=$($r --check --dtype "$dt" 2>&1); rc=$?
      echo "$out" >> "$OUT/check${label:+_$label}.log"
      local result
      if [[ $r == *fp8* ]] && [ "$cc" -lt 89 ]; then
        if [ $rc -eq 1 ] && echo "$out" | grep -q "needs FP8 tensor cores (compute capability 8.9"; then
          result="refused as expected: $(echo "$out" | grep -ao 'needs FP8.*' | head -1)"
          checks_r=$((checks_r + 1))
        else
          result="FAILED: expected the FP8 refusal below 8.9 ($(echo "$out" | tail -1)) (rc $rc)"
          checks_f=$((checks_f + 1))
        fi
      else
        result="$(echo "$out" | grep -aE 'CHECK|error' | tail -1) (rc $rc)"
        if [ $rc -eq 0 ] && [[ $result == *"CHECK PASSED"* ]]; then checks_p=$((checks_p + 1))
        else checks_f=$((checks_f + 1)); fi
      fi
      note "${label:+[$label] }check $(basename "$r") $dt: $result"
    done
  done
}

# tests + check for one build and generation; adds a row to the table.
run_arch() {
  local dir=$1 label=$2 cc=$3 build=$4
  run_tests "$dir" "$label"
  run_checks "$dir" "$label" "$cc"
  arch_rows+=("$(printf '%-9s %-22s %6d %6d %7d   %6d %6d %9d' "$build" "$cc${GPU_SIMULATE_CC:+ (GPU_SIMULATE_CC)}" \
    "$tests_p" "$tests_f" "$tests_s" "$checks_p" "$checks_f" "$checks_r")")
}

# GPU_SIMULATE_CC may also be set for a whole run (e.g. to time the non-Hopper path with
# `GPU_SIMULATE_CC=8.0 bash .gpu/gpu_run.sh compare`): the checks then expect its refusals.
acts_as=${GPU_SIMULATE_CC:-$device_cc}
if wants tests && wants check; then
  run_arch "$BIN" "" "$acts_as" default
else
  wants tests && run_tests "$BIN" ""
  wants check && run_checks "$BIN" "" "$acts_as"
fi
for sim in 8.0 8.9; do
  if wants "sim${sim/./}"; then
    if [ "${device_cc/./}" -lt "${sim/./}" ]; then
      note "[sim ${sim}] skipped: this GPU is ${device_cc}, and can only act as an older one"
      continue
    fi
    GPU_SIMULATE_CC=$sim run_arch "$BIN" "sim${sim/./}" "$sim" default
  fi
done
if wants portable; then
  if unpack portable; then
    # The driver caches what it JIT-compiles on disk: every program has the same kernels, so
    # only the first one to use a module waits for its compilation (ptxas takes about 25 s for
    # step 05's modules on one core). A cache of our own, large enough to hold them all.
    CUDA_CACHE_DISABLE=0 CUDA_CACHE_PATH="$PWD/.gpu/jit_cache" CUDA_CACHE_MAXSIZE=4294967296 \
      run_arch .gpu/portable portable "$device_cc" portable
  else
    note "[portable] skipped: no .gpu/portable.txz (tools/gpu_pack.sh packs it unless PORTABLE=0)"
  fi
fi

if wants nocode; then
  if ! unpack portable || [ ! -x .gpu/portable/sm86_only/step01_naive ]; then
    note "[nocode] skipped: no .gpu/portable/sm86_only/step01_naive (tools/gpu_pack.sh packs it)"
  elif [ "${device_cc%%.*}" = 8 ]; then
    note "[nocode] skipped: this GPU (${device_cc}) can run sm_86 code"
  else
    out=$(.gpu/portable/sm86_only/step01_naive --preset tiny --check 2>&1); rc=$?
    echo "$out" > "$OUT/nocode.log"
    if [ $rc -eq 1 ] && [[ $out == *"holds no GPU code that this"* ]]; then
      note "[nocode] step01_naive built for sm_86 only: refused as expected: $(echo "$out" | tail -1 | cut -c1-160)"
      arch_rows+=("$(printf '%-9s %-22s %6s %6s %7s   %6d %6d %9d' sm86-only "$device_cc" - - - 0 0 1)")
    else
      note "[nocode] step01_naive built for sm_86 only: FAILED: expected the no-code sentence; got (rc $rc): $(echo "$out" | tail -2)"
      arch_rows+=("$(printf '%-9s %-22s %6s %6s %7s   %6d %6d %9d' sm86-only "$device_cc" - - - 0 1 0)")
    fi
  fi
fi

if wants fp8 && [ -x "$BIN/step05_fp8" ]; then  # the scaling log of 40 steps, drawn
  "$BIN/step05_fp8" --iters 40 --fp8-log "$OUT/fp8_scaling.csv" | tail -2 | tee -a "$summary"
  python3 "$(tool plot_fp8_scaling.py)" "$OUT/fp8_scaling.csv" "$OUT/fp8_scaling.svg"
  "$BIN/step05_train_demo" > "$OUT/fp8_training.log" 2>&1  # does it still train: 16-bit vs FP8
  tail -3 "$OUT/fp8_training.log" | tee -a "$summary"
fi

if wants bench; then
  for b in "$BIN"/*_bench; do
    [ -x "$b" ] || continue
    "$b" 2>&1 | tee -a "$OUT/bench.log" | tail -8 | tee -a "$summary"
  done
  [ -x "$BIN/attention_bench" ] &&  # the issue's rows are asked of both dtypes
    "$BIN/attention_bench" --dtype bf16 2>&1 | tee -a "$OUT/bench.log" | tail -8 | tee -a "$summary"
fi

if wants attention; then
  for dt in fp16 bf16; do "$BIN/attention_bench" --dtype $dt > "$OUT/attention_$dt.log" 2>&1; done
  python3 "$(tool attention_peers.py)" --dtype both --json "$OUT/attention_peers.json" \
      --ours "$OUT/attention_fp16.log" "$OUT/attention_bf16.log" 2>&1 | tee "$OUT/attention_peers.log" |
    sed -n '/^attention_peers:/p; /^ours beside/,$p' | tee -a "$summary"
fi

gpus=$(nvidia-smi -L | wc -l)
S07="$BIN/step07_tensor_parallel"
declare -A tp_ms tp_act
# tp_time KEY ARGS...: one run of step 07 at the quickstart size (20 timed steps after 3) with
# ARGS; a summary row with rank 0's time, collectives, activations kept and peak memory; the
# time and activations kept under KEY (tp_ms, tp_act) for the ratios below. Log: tp.log.
tp_time() {
  local key=$1; shift
  local out rc line ms coll act peak
  out=$("$S07" --iters 20 --warmup 3 "$@" 2>&1); rc=$?
  { echo "==== step07_tensor_parallel --iters 20 --warmup 3 $*"; echo "$out"; } >> "$OUT/tp.log"
  line=$(echo "$out" | grep -a "^rank 0:" | head -1)
  if [ $rc -ne 0 ] || [ -z "$line" ]; then
    note "tp time $key: FAILED (rc $rc): $(echo "$out" | grep -a error | head -1)"; return
  fi
  ms=$(echo "$line" | sed -E 's/^rank 0: ([0-9.]+) ms per.*/\1/')
  coll=$(echo "$line" | sed -E 's/.*collectives running ([0-9.]+) ms.*/\1/')
  act=$(echo "$line" | sed -E 's/.*activations kept for backward ([0-9.]+) MiB.*/\1/')
  peak=$(echo "$line" | sed -E 's/.*peak device memory ([0-9]+) MiB.*/\1/')
  tp_ms[$key]=$ms tp_act[$key]=$act
  note "$(printf 'tp time %-44s %8.3f ms  collectives running %6.3f ms  activations %7.1f MiB  peak %5d MiB' \
    "$key" "$ms" "$coll" "$act" "$peak")"
  echo "$out" | grep -a "^Mean time" >> "$OUT/tp_mean_lines.log"
}
# ratio A B: A / B from tp_ms or tp_act values ("-" if either is missing).
ratio() { awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.3f", a / b }'; }

if wants tp && [ "$gpus" -ge 2 ] && [ -x "$S07" ]; then
  export NCCL_NVLS_ENABLE=0
  # 1. --check on every rank (small preset): each variant, both dtypes, each schedule -
  #    backward's collectives overlapped (default) or in line (--no-overlap); under sequence
  #    parallelism the LayerNorm outputs gathered again in backward (default) or kept; under
  #    plain TP the row-parallel forwards in 4 row blocks (--fprop-chunks 4).
  # TP_DTYPES (default "fp16 bf16") and TP_QUICK=1 (no --fprop-chunks / --keep-gathered runs, no
  # bit-for-bit comparison) shorten the run where device time is short. Both recomputations
  # (--recompute-gelu --recompute-layernorm) in every variant and dtype; under TP_QUICK=1 only
  # under sequence parallelism, in the first dtype (2 runs).
  tp_dtypes=${TP_DTYPES:-fp16 bf16} tp_quick=${TP_QUICK:-0} tp_dtype1=${TP_DTYPES:-fp16 bf16}
  tp_dtype1=${tp_dtype1%% *}
  tp_both="--recompute-gelu --recompute-layernorm"
  for v in "" "--parallel" "--sequence-parallel" "--parallel --sequence-parallel"; do
    scheds=("" "--no-overlap")
    scheds+=("--recompute-gelu" "$tp_both")
    if [ "$tp_quick" = 1 ]; then :; elif [[ $v == *sequence* ]]; then scheds+=("--keep-gathered"); else scheds+=("--fprop-chunks 4"); fi
    [ "$tp_quick" != 1 ] && [ -z "$v" ] && scheds+=("--overlap-sm-margin 0")
    for sched in "${scheds[@]}"; do
      for dt in $tp_dtypes; do
        if [ "$tp_quick" = 1 ] && [ "$sched" = "$tp_both" ] && { [[ $v != *sequence* ]] || [ $dt != "$tp_dtype1" ]; }; then
          continue
        fi
        out=$($S07 --tp 2 --preset small --check --no-sweep --dtype $dt $v $sched 2>&1); rc=$?
        echo "$out" >> "$OUT/tp.log"
        echo "$out" | grep -aE "check:|error:|timed out|did not return" | sed "s/^/tp check $dt ${v:-serial} ${sched:-(default)}: /;s/\$/ (rc $rc)/" >> "$summary"
      done
    done
  done
  # 1b. The collectives' sweep at the small preset, on every rank: its calls beside a GEMM were
  #    counted from each rank's own timings and hung there (a call of about 10 us, hundreds per
  #    window, one rank a call ahead) until the ranks agreed on the count (tp_max_over_ranks).
  out=$($S07 --tp 2 --preset small --iters 2 --dtype fp16 2>&1); rc=$?
  echo "$out" >> "$OUT/tp.log"
  echo "tp sweep at the small preset: rc $rc$(echo "$out" | grep -aE "error:|timed out|did not return" | head -1 | sed 's/^/: /')" >> "$summary"
  # 2. The schedule changes no number: with --deterministic (fixed GEMM algorithms and
  #    attention's dQ order) the saved out, dx and gradients of --no-overlap, --recompute-gelu,
  #    --recompute-layernorm (alone and with --recompute-gelu) and --keep-gathered are the
  #    default's, bit for bit (at tp 2 each all-reduced element is one a + b).
  #    (--fprop-chunks is not compared: GEMMs of T/N rows may be planned with another split of
  #    K, which rounds differently; its --check above is what shows it right.)
  for v in "" "--parallel" "--sequence-parallel" "--parallel --sequence-parallel"; do
    [ "$tp_quick" = 1 ] && break
    scheds=("--no-overlap" "--recompute-gelu" "--recompute-layernorm" "$tp_both")
    [[ $v == *sequence* ]] && scheds+=("--keep-gathered")
    base="$OUT/tp_save_default.safetensors"
    $S07 --tp 2 --preset small --deterministic --no-sweep --iters 2 --dtype bf16 $v --save "$base" >> "$OUT/tp.log" 2>&1
    for sched in "${scheds[@]}"; do
      other="$OUT/tp_save_other.safetensors"
      $S07 --tp 2 --preset small --deterministic --no-sweep --iters 2 --dtype bf16 $v $sched --save "$other" >> "$OUT/tp.log" 2>&1
      if cmp -s "$base" "$other"; then r="identical"; else r="DIFFERENT ($(cmp "$base" "$other" 2>&1 | head -1))"; fi
      note "tp same numbers ${v:-serial} $sched vs default (bf16, --deterministic, saved results): $r"
      rm -f "$other"
    done
    rm -f "$base"
  done
  # 3. The quickstart layer: tp 1, then tp 2 in every variant with backward's collectives
  #    overlapped (default) and in line (--no-overlap), both dtypes; sequence parallelism also
  #    with the gathered LayerNorm outputs kept (the memory the re-gather saves). The
  #    all-reduce sweep beside NCCL's own once, at the widest tp.
  for dt in $tp_dtypes; do
    tp_time "tp1 $dt serial" --tp 1 --no-sweep --dtype $dt
    tp_time "tp1 $dt parallel" --tp 1 --no-sweep --dtype $dt --parallel
    for v in serial parallel sp; do
      case $v in serial) a="" ;; parallel) a="--parallel" ;; sp) a="--sequence-parallel" ;; esac
      tp_time "tp2 $dt $v overlap" --tp 2 --no-sweep --dtype $dt $a
      tp_time "tp2 $dt $v no-overlap" --tp 2 --no-sweep --dtype $dt $a --no-overlap
      [ $v != sp ] && [ "$tp_quick" != 1 ] && tp_time "tp2 $dt $v fprop-chunks 4" --tp 2 --no-sweep --dtype $dt $a --fprop-chunks 4
    done
    tp_time "tp2 $dt sp keep-gathered" --tp 2 --no-sweep --dtype $dt --sequence-parallel --keep-gathered
    tp_time "tp2 $dt sp no-register" --tp 2 --no-sweep --dtype $dt --sequence-parallel --no-nccl-register
    tp_time "tp2 $dt serial recompute-gelu" --tp 2 --no-sweep --dtype $dt --recompute-gelu
    tp_time "tp2 $dt sp recompute-gelu" --tp 2 --no-sweep --dtype $dt --sequence-parallel --recompute-gelu
    tp_time "tp2 $dt parallel sp recompute-gelu" --tp 2 --no-sweep --dtype $dt --parallel --sequence-parallel --recompute-gelu
    # Both recomputations (GELU's and the LayerNorm outputs): SP in both layers (TP_QUICK=1: these
    # two, first dtype only), plain serial TP with both too.
    if [ "$tp_quick" != 1 ] || [ $dt = "$tp_dtype1" ]; then
      tp_time "tp2 $dt sp recompute-both" --tp 2 --no-sweep --dtype $dt --sequence-parallel $tp_both
      tp_time "tp2 $dt parallel sp recompute-both" --tp 2 --no-sweep --dtype $dt --parallel --sequence-parallel $tp_both
    fi
    [ "$tp_quick" != 1 ] && tp_time "tp2 $dt serial recompute-both" --tp 2 --no-sweep --dtype $dt $tp_both
  done
  for dt in $tp_dtypes; do
    s1=${tp_ms[tp1 $dt serial]:-}
    for v in serial parallel sp; do
      chunks=""; [ $v != sp ] && chunks=", $(ratio "$s1" "${tp_ms[tp2 $dt $v fprop-chunks 4]:-}")x overlapped with --fprop-chunks 4"
      note "tp goal $dt $v tp 2 over tp 1 serial: $(ratio "$s1" "${tp_ms[tp2 $dt $v overlap]:-}")x overlapped, $(ratio "$s1" "${tp_ms[tp2 $dt $v no-overlap]:-}")x in line$chunks (goal for serial: 1.90x); overlap's gain (in line / overlapped): $(ratio "${tp_ms[tp2 $dt $v no-overlap]:-}" "${tp_ms[tp2 $dt $v overlap]:-}")x"
    done
    note "tp goal $dt parallel vs serial at tp 2 (overlapped): serial / parallel = $(ratio "${tp_ms[tp2 $dt serial overlap]:-}" "${tp_ms[tp2 $dt parallel overlap]:-}"), with --fprop-chunks 4 on both $(ratio "${tp_ms[tp2 $dt serial fprop-chunks 4]:-}" "${tp_ms[tp2 $dt parallel fprop-chunks 4]:-}") (goal >= 1.08)"
    note "tp goal $dt sequence-parallel vs plain at tp 2 (overlapped): time sp / plain = $(ratio "${tp_ms[tp2 $dt sp overlap]:-}" "${tp_ms[tp2 $dt serial overlap]:-}") (goal <= 1; --no-nccl-register $(ratio "${tp_ms[tp2 $dt sp no-register]:-}" "${tp_ms[tp2 $dt serial overlap]:-}")), activations sp / plain = $(ratio "${tp_act[tp2 $dt sp overlap]:-}" "${tp_act[tp2 $dt serial overlap]:-}") (goal <= 0.60), kept-gathered sp / plain = $(ratio "${tp_act[tp2 $dt sp keep-gathered]:-}" "${tp_act[tp2 $dt serial overlap]:-}")"
    note "tp goal $dt sequence-parallel + --recompute-gelu at tp 2: activations / plain = $(ratio "${tp_act[tp2 $dt sp recompute-gelu]:-}" "${tp_act[tp2 $dt serial overlap]:-}") (goal <= 0.60; predicted 0.600: 384.6 / 640.6 MiB), / plain + recompute = $(ratio "${tp_act[tp2 $dt sp recompute-gelu]:-}" "${tp_act[tp2 $dt serial recompute-gelu]:-}") (predicted 0.750); time / plain = $(ratio "${tp_ms[tp2 $dt sp recompute-gelu]:-}" "${tp_ms[tp2 $dt serial overlap]:-}"), recomputation's cost (time / sp without it) = $(ratio "${tp_ms[tp2 $dt sp recompute-gelu]:-}" "${tp_ms[tp2 $dt sp overlap]:-}")"
    note "tp goal $dt sequence-parallel + --recompute-gelu --recompute-layernorm at tp 2: activations sp / plain = $(ratio "${tp_act[tp2 $dt sp recompute-both]:-}" "${tp_act[tp2 $dt serial overlap]:-}") (goal <= 0.60; predicted 0.500: 320.6 / 640.6 MiB), / plain with both = $(ratio "${tp_act[tp2 $dt sp recompute-both]:-}" "${tp_act[tp2 $dt serial recompute-both]:-}") (predicted 0.833); parallel sp with both / parallel plain = $(ratio "${tp_act[tp2 $dt parallel sp recompute-both]:-}" "${tp_act[tp2 $dt parallel overlap]:-}") (predicted 0.563: 288.5 / 512.6 MiB); time / plain = $(ratio "${tp_ms[tp2 $dt sp recompute-both]:-}" "${tp_ms[tp2 $dt serial overlap]:-}"), the LayerNorms' recomputation's cost (time / sp + --recompute-gelu) = $(ratio "${tp_ms[tp2 $dt sp recompute-both]:-}" "${tp_ms[tp2 $dt sp recompute-gelu]:-}")"
  done
  for tp in 4 8; do  # where lent: each variant at the wider tp
    [ "$tp" -le "$gpus" ] || break
    for a in "" "--parallel" "--sequence-parallel"; do tp_time "tp$tp fp16 ${a:-serial}" --tp $tp --no-sweep $a; done
  done
  $S07 --tp "$gpus" --iters 5 2>&1 | tee -a "$OUT/tp.log" | grep -aE "<-|ours \(us\)" | sed "s/^/tp sweep: /" >> "$summary"
fi

# The overlap's knobs at tp 2, fp16, beside the default and --no-overlap: the side stream at
# normal priority, the overlapped collectives on a communicator of 8 or 16 CTAs, and (plain TP)
# the forward's all-reduce pipelined in 2 or 4 row blocks. TP_TURNS=2 repeats the set (in
# turns, so that both see the machine alike); one turn is 35 runs, about 6 minutes. --recompute-gelu
# and --recompute-gelu --recompute-layernorm too, in each variant (their time against the default's).
if wants tpknobs && [ "$gpus" -ge 2 ] && [ -x "$S07" ]; then
  export NCCL_NVLS_ENABLE=0
  for turn in $(seq 1 "${TP_TURNS:-1}"); do
    for v in serial parallel sp; do
      case $v in serial) a="" ;; parallel) a="--parallel" ;; sp) a="--sequence-parallel" ;; esac
      tp_time "tp2 fp16 $v default (turn $turn)" --tp 2 --no-sweep $a
      tp_time "tp2 fp16 $v no-overlap (turn $turn)" --tp 2 --no-sweep $a --no-overlap
      tp_time "tp2 fp16 $v priority normal (turn $turn)" --tp 2 --no-sweep $a --overlap-priority normal
      tp_time "tp2 fp16 $v recompute-gelu (turn $turn)" --tp 2 --no-sweep $a --recompute-gelu
      tp_time "tp2 fp16 $v recompute-both (turn $turn)" --tp 2 --no-sweep $a --recompute-gelu --recompute-layernorm
      for n in 8 16; do tp_time "tp2 fp16 $v ctas $n (turn $turn)" --tp 2 --no-sweep $a --overlap-ctas $n; done
      for n in 0 24; do tp_time "tp2 fp16 $v sm-margin $n (turn $turn)" --tp 2 --no-sweep $a --overlap-sm-margin $n; done
      if [ $v != sp ]; then
        for n in 2 4; do tp_time "tp2 fp16 $v fprop-chunks $n (turn $turn)" --tp 2 --no-sweep $a --fprop-chunks $n; done
        # The forward's pipelined all-reduces on a side communicator of few CTAs (the GEMM's
        # row blocks keep more SMs): the two knobs together.
        for n in 2 4; do
          tp_time "tp2 fp16 $v fprop-chunks $n ctas 8 (turn $turn)" --tp 2 --no-sweep $a --fprop-chunks $n --overlap-ctas 8
        done
      fi
    done
  done
fi

# Issue 22's sequence-parallel line: SP (alone and with recomputation) against plain TP, each
# turn's ratio to plain TP's time in the same turn (the machine's drift cancels), and the median
# of the turns. Activations kept per rank are on each line (tp_time).
if wants tpsp && [ "$gpus" -ge 2 ] && [ -x "$S07" ]; then
  export NCCL_NVLS_ENABLE=0
  for dt in fp16 bf16; do
    declare -A ratios=()
    for turn in $(seq 1 "${TP_TURNS:-3}"); do
      tp_time "tpsp $dt plain (turn $turn)" --tp 2 --no-sweep --dtype $dt
      plain=${tp_ms["tpsp $dt plain (turn $turn)"]:-}
      for v in "sp" "sp recompute-gelu" "sp recompute-both"; do
        case $v in
          sp) a="--sequence-parallel" ;;
          "sp recompute-gelu") a="--sequence-parallel --recompute-gelu" ;;
          *) a="--sequence-parallel --recompute-gelu --recompute-layernorm" ;;
        esac
        key="tpsp $dt $v (turn $turn)"
        tp_time "$key" --tp 2 --no-sweep --dtype $dt $a
        ms=${tp_ms[$key]:-}
        [ -n "$plain" ] && [ -n "$ms" ] && ratios[$v]+="$(awk -v a="$ms" -v b="$plain" 'BEGIN {printf "%.4f ", a / b}')"
      done
    done
    for v in "sp" "sp recompute-gelu" "sp recompute-both"; do
      r=${ratios[$v]:-}
      [ -n "$r" ] || continue
      med=$(echo $r | tr ' ' '\n' | sort -n | awk '{x[NR] = $1} END {print (NR % 2) ? x[(NR + 1) / 2] : (x[NR / 2] + x[NR / 2 + 1]) / 2}')
      note "tpsp $dt $v / plain TP, per turn: $r- median $med"
    done
    unset ratios
  done
fi

# An A/B of environment switches (ENVAB, e.g. "ATTENTION_BACKWARD_CAUSAL_DYNAMIC=1"), in turns.
if wants envab; then  # (ENVAB was checked at the start: VAR=VALUE words, at least one)
  for turn in $(seq 1 "${ENVAB_TURNS:-3}"); do
    for side in set unset; do
      run_env=(); [ $side = set ] && run_env=("${envab_words[@]}")
      for dt in fp16 bf16; do
        env "${run_env[@]}" "$BIN/attention_bench" --dtype $dt 2>&1 | tee -a "$OUT/envab.log" |
          grep -E "^ *(128|64) " | sed "s/^/envab turn $turn $dt ${side}: /" >> "$summary"
      done
      ms=$(env "${run_env[@]}" "$BIN/step04_transformer_layer" --iters 20 2>&1 | tee -a "$OUT/envab.log" |
             grep -aoE "Mean time: [0-9.]+ ms" | head -1)
      note "envab turn $turn step04 ${side}: $ms"
    done
  done
fi

if wants pytorch && python3 -c "import torch, safetensors" 2>/dev/null; then
  PYTHONUNBUFFERED=1 python3 "$(tool pytorch_compare.py)" --bin "$BIN" --json "$OUT/pytorch.json" 2>&1 |
    tee "$OUT/pytorch.log" | grep -E "PyTorch|max rel|PYTORCH" >> "$summary"
fi

if wants compare && [ -x "$BIN/compare" ]; then
  base=(); [ -f "$OUT/pytorch.json" ] && base=(--pytorch "$OUT/pytorch.json")
  for dt in fp16 bf16; do
    "$BIN/compare" --dtype $dt --json "$OUT/compare_$dt.json" --svg "$OUT/compare_$dt.svg" "${base[@]}" 2>&1 |
      tee "$OUT/compare_$dt.log" | tail -18 >> "$summary"
    base=()  # PyTorch was timed at fp16
  done
fi
# Where each step's time goes, by category, beside each category's floor (fp16, PyTorch's
# peers too when they were timed): the table, JSON and the stacked chart.
if wants breakdown && [ -x "$BIN/compare" ]; then
  base=(); [ -f "$OUT/pytorch.json" ] && base=(--pytorch "$OUT/pytorch.json")
  "$BIN/compare" --breakdown --skip-check --json "$OUT/breakdown_fp16.json" --svg "$OUT/breakdown_fp16.svg" \
    "${base[@]}" 2>&1 | tee "$OUT/breakdown_fp16.log" | sed -n '/^Where each step/,$p' >> "$summary"
fi
# This version against the baseline's binaries (BASELINE=<rev> tools/gpu_pack.sh), taking
# turns so that both see the same machine: attention_bench, gemm_bench, steps 04-06.
if { wants baseline || [ -z "$*" ]; } && unpack baseline; then
  BASE=.gpu/baseline; rev=$(cat $BASE/REVISION)
  for round in 1 2; do
    for who in new $rev; do
      dir=$BIN; [ "$who" = new ] || dir=$BASE
      "$dir/attention_bench" 2>&1 | tee -a "$OUT/baseline.log" | grep -E "^ *(128|64) " | sed "s/^/attention $who: /" >> "$summary"
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
if wants autotune; then
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

# Each epilogue in the GEMM or in a kernel of its own (modules/linear.h): per GEMM, then the
# whole step 04 under each setting (an empty setting is the default, all in the GEMMs).
if wants epilogues; then
  "$BIN/epilogue_bench" 2>&1 | tee -a "$OUT/epilogues.log" | tee -a "$summary"
  all_kernel="EPILOGUE_BIAS=kernel EPILOGUE_GELU=kernel EPILOGUE_DGELU=kernel EPILOGUE_BGRAD=kernel"
  settings=("" EPILOGUE_BIAS=kernel EPILOGUE_GELU=kernel EPILOGUE_DGELU=kernel EPILOGUE_BGRAD=kernel "$all_kernel")
  for setting in "${settings[@]}"; do
    for dt in fp16 bf16; do
      # shellcheck disable=SC2086  # the setting's words are separate variables
      result=$(env $setting "$BIN/step04_transformer_layer" --check --dtype $dt 2>&1 | tee -a "$OUT/epilogues.log" |
        grep -aE 'CHECK|error' | tail -1)
      note "epilogues check step04 $dt ${setting:-default}: $result"
    done
  done
  for round in 1 2 3; do
    for setting in "${settings[@]}"; do
      # shellcheck disable=SC2086
      ms=$(env $setting "$BIN/step04_transformer_layer" --iters 20 2>&1 | tee -a "$OUT/epilogues.log" |
        grep -aoE "Mean time: [0-9.]+ ms" | head -1)
      note "epilogues round $round: step04 fp16 ${setting:-default}: $ms"
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
wants grade && grade_gpu_exercises
# --deterministic (steps/04_transformer_layer/README.md): two runs with the same seed must save
# identical files; without the flag they may differ. At seq 128 (the small preset) a dQ row
# gets at most two key blocks' shares, and a + b == b + a: even the default path repeats
# itself there, so seq 1024 (16 key blocks of 64) is the case that shows the difference.
# Then the flag's cost: step 04 at the quickstart shape, with and without, in turns.
if wants determinism; then
  for s in step04_transformer_layer step05_fp8 step06_parallel_layers; do
    [ -x "$BIN/$s" ] || continue
    for seq in 128 1024; do
      for mode in --deterministic --default; do
        flag=; [ $mode = --deterministic ] && flag=--deterministic
        for run in a b; do
          "$BIN/$s" --preset small --seq $seq --warmup 0 --iters 1 $flag --save "$OUT/repro_$run.safetensors" \
            >> "$OUT/determinism.log" 2>&1 || note "determinism $s: the run failed (see determinism.log)"
        done
        same=DIFFERENT; cmp -s "$OUT/repro_a.safetensors" "$OUT/repro_b.safetensors" && same=identical
        note "determinism $s seq $seq $mode: the two runs' files are $same"
      done
    done
  done
  rm -f "$OUT"/repro_[ab].safetensors
  for round in 1 2; do
    for flag in "" --deterministic; do
      ms=$("$BIN/step04_transformer_layer" --iters 20 $flag 2>&1 | grep -aoE "Mean time: [0-9.]+ ms" | head -1)
      note "determinism cost round $round: step04 ${flag:-default}: $ms"
    done
  done
fi

# Step 04's MLP wgrads on a second stream, its default, against --no-overlap-wgrad (one stream;
# steps/04_transformer_layer/README.md): right first (the check both ways, and the same bits:
# the same GEMM algorithms; --deterministic so that attention's dQ sums repeat too), then the
# time both ways, in turns.
if wants wgrad; then
  s=step04_transformer_layer
  for setting in "" EPILOGUE_BGRAD=kernel; do
    for dt in fp16 bf16; do
      for flag in "" --no-overlap-wgrad; do
        # shellcheck disable=SC2086  # the setting's words are separate variables
        result=$(env $setting "$BIN/$s" --check $flag --dtype $dt 2>&1 | tee -a "$OUT/wgrad.log" |
          grep -aE 'CHECK|error' | tail -1)
        note "wgrad check step04 ${flag:-(second stream)} $dt ${setting:-default}: $result"
      done
    done
  done
  for dt in fp16 bf16; do
    for flag in "" --no-overlap-wgrad; do
      "$BIN/$s" --preset small --seq 1024 --dtype $dt --warmup 0 --iters 1 --deterministic $flag \
        --save "$OUT/wgrad_${flag:+one}.safetensors" >> "$OUT/wgrad.log" 2>&1 || note "wgrad $dt $flag: the run failed"
    done
    same=DIFFERENT; cmp -s "$OUT/wgrad_.safetensors" "$OUT/wgrad_one.safetensors" && same=identical
    note "wgrad $dt: --deterministic results with the second stream and --no-overlap-wgrad are $same"
  done
  rm -f "$OUT"/wgrad_*.safetensors
  for round in $(seq "${WGRAD_TURNS:-3}"); do
    for flag in --no-overlap-wgrad ""; do
      ms=$("$BIN/$s" --iters 20 $flag 2>&1 | tee -a "$OUT/wgrad.log" | grep -aoE "Mean time: [0-9.]+ ms" | head -1)
      note "wgrad round $round: step04 fp16 ${flag:-second stream}: $ms"
    done
  done
fi

echo "================ summary"
cat "$summary"
if ((${#arch_rows[@]})); then
  echo "================ builds and GPU generations"
  printf '%-32s %-22s   %-26s\n' "" "tests (cases)" "checks (fp16 and bf16 runs)"
  printf '%-9s %-22s %6s %6s %7s   %6s %6s %9s\n' build "GPU acts as" passed failed skipped passed failed refused
  printf '%s\n' "${arch_rows[@]}"
  echo "(refused: an FP8 run below 8.9, or a binary without code for this GPU, that stopped with the expected sentence)"
fi | tee -a "$summary"
