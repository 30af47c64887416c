#!/usr/bin/env bash
# The grader: runs the graded tests against your exercise code and prints a score per
# exercise and in total.
#
#   tools/grade.sh                      grade your exercises (the stubs you edited)
#   tools/grade.sh --solutions          grade the reference solutions (all should pass)
#   tools/grade.sh --expect-stubs-fail  CI: every graded test must FAIL on the untouched stubs
#
# A graded test is a cmocka test tagged "graded" and "exercise=<name>" (tests/exercises/).
# Each test case is one point. GPU exercises are skipped (no points, no failure) without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh >/dev/null || exit 1
mode=exercises
case "${1:-}" in
  --solutions) mode=solutions ;;
  --expect-stubs-fail) mode=expect_fail ;;
  "") ;;
  *) echo "usage: tools/grade.sh [--solutions | --expect-stubs-fail]" >&2; exit 2 ;;
esac
config=(--config=exercises)
[ "$mode" = solutions ] && config=()

targets=$(bazel query 'attr(tags, "\bgraded\b", tests(//...))' 2>/dev/null)
[ -n "$targets" ] || { echo "no graded tests found"; exit 1; }
log=$(mktemp)
bazel test "${config[@]}" --test_output=summary --test_summary=terse $targets >"$log" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 3 ]; then  # 3: some tests failed, which grading expects
  tail -20 "$log"; echo "grade: bazel could not run the graded tests (exit $rc)"; exit 1
fi
rm -f "$log"

total_pass=0 total_cases=0 bad=0
printf "%-28s %-6s %s\n" "exercise" "score" "test"
for t in $targets; do
  ex=$(bazel query "attr(tags, 'exercise=', $t)" --output=build 2>/dev/null |
       grep -o 'exercise=[a-z0-9_]*' | head -1 | cut -d= -f2)
  dir="bazel-testlogs/${t#//}"; dir="${dir/://}"
  log="$dir/test.log"
  p=$(grep -ao '^\[  PASSED  \] [0-9]*' "$log" 2>/dev/null | awk '{s+=$NF} END{print s+0}')
  f=$(grep -ao '^\[  FAILED  \] [0-9]*' "$log" 2>/dev/null | awk '{s+=$NF} END{print s+0}')
  s=$(grep -ao '^\[  SKIPPED \] [0-9]*' "$log" 2>/dev/null | awk '{s+=$NF} END{print s+0}')
  n=$((p + f))
  [ "$n" -eq 0 ] && [ "$s" -eq 0 ] && { n=1; f=1; }  # did not build or crashed: no points
  note=""; [ "$s" -gt 0 ] && note=" ($s skipped: needs a GPU)"
  printf "%-28s %2d/%-3d %s%s\n" "${ex:-?}" "$p" "$n" "$t" "$note"
  total_pass=$((total_pass + p)); total_cases=$((total_cases + n))
  if [ "$mode" = expect_fail ] && [ "$p" -ne 0 ]; then
    echo "  ERROR: $p graded case(s) of $t pass on the untouched stub: the test does not bite"; bad=1
  fi
  if [ "$mode" = solutions ] && [ "$f" -ne 0 ]; then
    echo "  ERROR: the reference solution fails $f graded case(s) of $t"; bad=1
  fi
done
echo "total: $total_pass/$total_cases"
exit $bad
