#!/usr/bin/env bash
# The grader: builds and runs each exercise's graded tests against your code and prints, per
# exercise, a table of its test cases with the first failing check's message under each failure.
#
#   tools/grade.sh [NAME ...]            grade your exercises (the stubs in exercises/ you edited)
#   tools/grade.sh --strict [NAME ...]   the same, your files built with warnings as errors (-Werror,
#                                        as CI builds the solutions): a warning costs the exercise
#   tools/grade.sh --list                the exercises: chapter, CPU or GPU, the file to edit
#   tools/grade.sh --solutions [NAME]    the reference solutions (what full marks look like)
#   tools/grade.sh --expect-stubs-fail   CI: every graded case must FAIL on the untouched stubs
#   tools/grade.sh --bugs [NAME]         CI: every planted bug (tools/solutions/bugs/) must fail a case
#   tools/grade.sh --help
# Exit status: 0 when every graded case that ran passed (CI modes: when their check held); 1 when
# a case failed or an exercise did not build (so a script can test a grade); 2 for a bad option
# or exercise name.
#
# Each exercise is built and graded on its own (--define=EXERCISES=<name>: its stub, every other
# exercise's reference solution), so one that does not build scores 0 by itself and says so, with
# the compiler's first errors. Your files build with warnings, not errors (the grader shows them),
# unless --strict.
# Each test case is one point. GPU exercises are graded where there is a GPU; elsewhere their
# cases are reported as skipped, with the reason (still built, so compile errors show). Test data
# is fresh on every run (TEST_SEED=<n> replays a run: each test prints its seed).
# Full logs: bazel-testlogs/<test's package>/<test>/test.log.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

# name                  chapter needs stub (the file to edit)             graded test
EXERCISES="\
layernorm_backward      00  CPU  exercises/layernorm_backward.c      //tests/exercises:layernorm_backward_test
layernorm_forward_gpu   02  GPU  exercises/layernorm_forward_gpu.cu  //tests/exercises:layernorm_forward_gpu_test
linear_cublaslt         02  GPU  exercises/linear_cublaslt.c         //tests/exercises:linear_cublaslt_test
bias_gelu_gpu           03  GPU  exercises/bias_gelu_gpu.cu          //tests/exercises:bias_gelu_gpu_test
online_softmax          04  CPU  exercises/online_softmax.c          //tests/exercises:online_softmax_test
attention_tile_gpu      04  GPU  exercises/attention_tile_gpu.cu     //tests/exercises:attention_tile_gpu_test
swizzle                 04  CPU  exercises/swizzle.c                 //tests/exercises:swizzle_test
fp8_encode              05  CPU  exercises/fp8_encode.c              //tests/fp8:fp8_format_test
fp8_scale               05  CPU  exercises/fp8_scale.c               //tests/fp8:fp8_scale_test
fp8_cast_gpu            05  GPU  exercises/fp8_cast_gpu.cu           //tests/exercises:fp8_cast_gpu_test
fused_weights           06  CPU  exercises/fused_weights.c           //tests/exercises:fused_weights_test
tp_backward             07  CPU  exercises/tp_backward.c             //tests/exercises:tp_backward_test"

usage() {  # the header above
  echo "usage: tools/grade.sh [--strict] [NAME ...] | --list | --solutions [NAME] | --expect-stubs-fail | --bugs [NAME]"
  sed -n '2,/^# Full logs/p' "$0" | sed 's/^# \{0,1\}//'
}
mode=learner
strict=()  # --strict: the define that makes the learner's warnings errors (tools/exercises.bzl)
names=()
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --list|--solutions|--expect-stubs-fail|--bugs)
      [ "$mode" = learner ] || { echo "grade: one of --list, --solutions, --expect-stubs-fail, --bugs at a time" >&2; exit 2; }
      case "$arg" in
        --list) mode=list ;;
        --solutions) mode=solutions ;;
        --expect-stubs-fail) mode=expect_fail ;;
        --bugs) mode=bugs ;;
      esac ;;
    --strict) strict=(--define=GRADE_STRICT=1) ;;
    -*) echo "grade: unknown option $arg" >&2; usage >&2; exit 2 ;;
    *) echo "$EXERCISES" | awk '{print $1}' | grep -qx -- "$arg" ||
         { echo "grade: no exercise named '$arg' (tools/grade.sh --list)" >&2; exit 2; }
       names+=("$arg") ;;
  esac
done
[ -n "${TEST_SEED:-}" ] && ! [[ $TEST_SEED =~ ^[0-9]+$ ]] &&
  { echo "grade: TEST_SEED=$TEST_SEED: expected the whole number a run printed (\"random seed N\")" >&2; exit 2; }
[ ${#strict[@]} -gt 0 ] && [ "$mode" != learner ] &&
  { echo "grade: --strict grades your own files: not with --list, --solutions, --expect-stubs-fail, --bugs" >&2
    exit 2; }
[ ${#names[@]} -eq 0 ] && mapfile -t names < <(echo "$EXERCISES" | awk '{print $1}')
field() { echo "$EXERCISES" | awk -v n="$1" -v f="$2" '$1 == n {print $f}'; }

if [ "$mode" = list ]; then
  printf "%-22s %-8s %-5s %-36s %s\n" exercise chapter needs "edit" "graded by"
  for n in "${names[@]}"; do
    printf "%-22s %-8s %-5s %-36s %s\n" "$n" "$(field "$n" 2)" "$(field "$n" 3)" "$(field "$n" 4)" "$(field "$n" 5)"
  done
  exit 0
fi

tools/bootstrap.sh >/dev/null || exit 1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The test target's log and the number of cases its source declares.
log_of() { local d="bazel-testlogs/${1#//}"; echo "${d/://}/test.log"; }
cases_in_source() {  # every cmocka_unit_test( counts, several may share a line
  local s="${1#//}" n; s="${s/://}.c"
  n=$(grep -o 'cmocka_unit_test(' "$s" 2>/dev/null | wc -l)
  [ "$n" -gt 0 ] && echo "$n" || echo 1
}

# The compiler's first errors in a Bazel log (gcc "file:line:col: error", nvcc "file(line): error",
# the linker's "undefined reference"), with a line of context each.
first_errors() {
  grep -aE -A2 '(^[^ ]+:[0-9]+:[0-9]+: (fatal )?error)|(^[^ ]+\([0-9]+\): error)|undefined reference|error: ld ' "$1" |
    grep -av '^--$' | head -12 | sed 's/^/      | /'
  grep -aqE '(: (fatal )?error)|(\): error)|undefined reference' "$1" ||
    grep -a '^ERROR: ' "$1" | head -3 | cut -c1-300 | sed 's/^/      | /'
}

# Warnings in the exercise's own file (they do not stop the build; they often point at a bug).
warnings_in() {
  local stub="$2" base; base=$(basename "$2")
  grep -aE "($stub|$base).*warning" "$1" | sort -u | head -5 | sed 's/^/      | /'
}

# Grades one exercise from its Bazel run: prints its table; sets score_pass, score_cases,
# n_fail, n_pass, n_skip, skip_reason, built.
report() {
  local name="$1" target="$2" bazel_log="$3" shown_file="$4"
  local tl; tl=$(log_of "$target")
  score_pass=0; score_cases=$(cases_in_source "$target"); n_fail=0; n_pass=0; n_skip=0; skip_reason=""; built=1
  printf "\n== %s (chapter %s, %s): %s\n" "$name" "$(field "$name" 2)" "$(field "$name" 3)" "$shown_file"
  if ! grep -aqE "^$target +(\(cached\) )?(PASSED|FAILED|TIMEOUT|FLAKY)(,| in)" "$bazel_log"; then
    built=0; n_fail=$score_cases
    echo "   DID NOT BUILD - 0/$score_cases. The compiler's first errors:"
    first_errors "$bazel_log"
    echo "   (all of them: bazel build ${strict[*]:+${strict[*]} }--define=EXERCISES=${name%%.*} $target)"
    return
  fi
  local w; w=$(warnings_in "$bazel_log" "$(field "$name" 4)")
  [ -n "$w" ] && { echo "   warnings in your file (not errors, but worth a look):"; echo "$w"; }
  awk -f tools/cmocka_report.awk "$tl" > "$work/cases" 2>/dev/null || : > "$work/cases"
  local announced; announced=$(awk -F'\t' '$1 == "CASES" {print $3}' "$work/cases")
  [ -n "$announced" ] && [ "$announced" -gt 0 ] && score_cases=$announced
  local seen=0 table=""
  while IFS=$'\t' read -r status case msg; do
    case "$status" in
      PASS) table+=$(printf "   PASS   %s" "$case")$'\n'; n_pass=$((n_pass + 1)) ;;
      FAIL) table+=$(printf "   FAIL   %s\n          %s" "$case" "$msg")$'\n'; n_fail=$((n_fail + 1)) ;;
      SKIP) table+=$(printf "   SKIP   %s: %s" "$case" "$msg")$'\n'; n_skip=$((n_skip + 1)); skip_reason="$msg" ;;
      CRASH) table+=$(printf "   CRASH  %s: the test program stopped here\n          %s" "$case" "$msg")$'\n'
             n_fail=$((n_fail + 1)) ;;
      SPEED) table+=$(printf "   %s" "$msg")$'\n' ;;
    esac
    [ "$status" != SPEED ] && [ "$status" != CASES ] && seen=$((seen + 1))
  done < "$work/cases"
  # All skipped (a GPU exercise without a GPU): the reason once, not once per case.
  [ "$n_skip" -gt 0 ] && [ "$n_skip" -eq "$seen" ] || printf "%s" "$table"
  if [ "$seen" -lt "$score_cases" ]; then
    local missing=$((score_cases - seen))
    [ "$seen" -eq 0 ] && echo "   the test program printed no results (timed out or crashed at start): $tl"
    [ "$seen" -gt 0 ] && echo "   $missing case(s) never ran (the program stopped): 0 points for them"
    n_fail=$((n_fail + missing))
  fi
  if [ "$n_fail" -gt 0 ]; then  # the data was random: say how to draw the same data again
    local seed; seed=$(grep -aom1 'random seed [0-9]*' "$tl" 2>/dev/null | awk '{print $3}')
    [ -n "$seed" ] && echo "   (random seed $seed: TEST_SEED=$seed tools/grade.sh $name replays these inputs)"
  fi
  score_pass=$n_pass
  if [ "$n_skip" -gt 0 ] && [ "$n_skip" -eq "$score_cases" ]; then
    echo "   score: skipped - $skip_reason"
  else
    echo "   score: $n_pass/$score_cases"
  fi
}

# bazel test of the given targets with the given flags; returns Bazel's exit status.
run_bazel() {
  local log="$1"; shift
  local seed=(); [ -n "${TEST_SEED:-}" ] && seed=(--test_env=TEST_SEED="$TEST_SEED")  # replay a run
  bazel test --keep_going --nocache_test_results --test_output=summary --test_summary=short "${seed[@]}" "$@" >"$log" 2>&1
}

total_pass=0 total_cases=0 skipped=() summary=() bad=0

case "$mode" in
learner | expect_fail)
  for n in "${names[@]}"; do
    target=$(field "$n" 5)
    run_bazel "$work/bazel.log" "${strict[@]}" --define=EXERCISES="$n" "$target"
    report "$n" "$target" "$work/bazel.log" "$(field "$n" 4)"
    if [ "$n_skip" -gt 0 ] && [ "$n_skip" -eq "$score_cases" ]; then
      skipped+=("$n"); summary+=("$(printf "%-22s %-7s %-4s skipped: %s" "$n" "$(field "$n" 2)" "$(field "$n" 3)" "$skip_reason")")
    else
      summary+=("$(printf "%-22s %-7s %-4s %d/%d" "$n" "$(field "$n" 2)" "$(field "$n" 3)" "$score_pass" "$score_cases")")
      total_pass=$((total_pass + score_pass)); total_cases=$((total_cases + score_cases))
    fi
    # The learner's grade as the exit status: 1 if anything that ran failed or did not build.
    [ "$mode" = learner ] && { [ "$built" -eq 0 ] || [ "$n_fail" -ne 0 ]; } && bad=1
    if [ "$mode" = expect_fail ]; then
      [ "$built" -eq 0 ] && { echo "   ERROR: the untouched stub of $n does not build"; bad=1; }
      [ "$n_pass" -ne 0 ] && { echo "   ERROR: $n_pass graded case(s) of $n pass on the untouched stub: they do not bite"; bad=1; }
    fi
  done ;;
solutions)
  targets=()
  for n in "${names[@]}"; do targets+=("$(field "$n" 5)"); done
  # Every graded test in the tree must be in the table above (and so be graded).
  if [ ${#names[@]} -eq "$(echo "$EXERCISES" | wc -l)" ]; then
    for t in $(bazel query 'attr(tags, "\bgraded\b", tests(//...))' 2>/dev/null); do
      echo "$EXERCISES" | awk '{print $5}' | grep -qx -- "$t" ||
        { echo "grade: $t is tagged graded but not in tools/grade.sh's table"; bad=1; }
    done
  fi
  run_bazel "$work/bazel.log" "${targets[@]}"
  for n in "${names[@]}"; do
    report "$n" "$(field "$n" 5)" "$work/bazel.log" "the reference solution"
    if [ "$n_skip" -gt 0 ] && [ "$n_skip" -eq "$score_cases" ]; then
      skipped+=("$n"); summary+=("$(printf "%-22s %-7s %-4s skipped: %s" "$n" "$(field "$n" 2)" "$(field "$n" 3)" "$skip_reason")")
    else
      summary+=("$(printf "%-22s %-7s %-4s %d/%d" "$n" "$(field "$n" 2)" "$(field "$n" 3)" "$score_pass" "$score_cases")")
      total_pass=$((total_pass + score_pass)); total_cases=$((total_cases + score_cases))
    fi
    [ "$n_fail" -ne 0 ] && { echo "   ERROR: the reference solution of $n fails $n_fail graded case(s)"; bad=1; }
  done ;;
bugs)
  # The planted bugs the build knows (tools/exercises.bzl: a genrule <exercise>__<bug>_src each);
  # a .sed file it does not know would silently build the solution.
  declared=$(bazel query 'kind(genrule, attr(name, "__.*_src$", //...))' 2>/dev/null)
  for n in "${names[@]}"; do
    target=$(field "$n" 5)
    bugs=(tools/solutions/bugs/"$n".*.sed)
    [ -e "${bugs[0]}" ] || { echo "   ERROR: $n has no planted bugs in tools/solutions/bugs/"; bad=1; continue; }
    for b in "${bugs[@]}"; do
      bug=$(basename "$b" .sed)
      if ! grep -q ":${bug//./__}_src\$" <<<"$declared"; then
        echo "$bug: ERROR: the build does not know $b:"
        echo "  add it to the bugs of its exercise_library (reference/BUILD or common/BUILD)"
        summary+=("$(printf "%-48s %s" "$bug" "ERROR: not in the build")"); bad=1; continue
      fi
      run_bazel "$work/bazel.log" --define=EXERCISES="$bug" "$target"
      what=$(grep -m1 '^#' "$b" | sed 's/^# *//')
      report "$bug" "$target" "$work/bazel.log" "$what" >"$work/report" 2>&1
      if [ "$built" -eq 0 ]; then
        result="ERROR: does not build"; bad=1; cat "$work/report"
      elif [ "$n_fail" -gt 0 ]; then
        first=$(awk -F'\t' '$1 == "FAIL" || $1 == "CRASH" {print $2 ": " $3; exit}' "$work/cases")
        result="caught by $n_fail of $score_cases case(s); first: $first"
      elif [ "$n_skip" -eq "$score_cases" ]; then
        result="not checked here: $skip_reason"; skipped+=("$bug")
      else
        result="ERROR: NOT CAUGHT - every graded case passes with this bug"; bad=1
      fi
      printf "%-48s %s\n  planted: %s\n" "$bug" "$result" "$what"
      summary+=("$(printf "%-48s %s" "$bug" "${result:0:60}")")
    done
  done
  echo; echo "== planted bugs"; printf "%s\n" "${summary[@]}"
  [ "$bad" -eq 0 ] && echo "every planted bug that could run here was caught"
  exit $bad ;;
esac

echo
echo "== scores"
printf "%-22s %-7s %-4s %s\n" exercise chapter runs score
printf "%s\n" "${summary[@]}"
echo "total: $total_pass/$total_cases$([ ${#skipped[@]} -gt 0 ] && echo " (skipped, no GPU here: ${skipped[*]})")"
[ "$mode" = learner ] && [ ${#skipped[@]} -gt 0 ] &&
  echo "(GPU exercises build here; grade them where there is a GPU: tools/grade.sh NAME there)"
exit $bad
