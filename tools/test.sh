#!/usr/bin/env bash
# Runs the whole test suite: every cmocka test under Bazel. GPU test cases skip themselves,
# with a message, on a machine without a GPU. Ends with one line "N passed, N failed,
# N skipped" counting test cases (cmocka's own counts, summed over all test binaries).
#
#   tools/test.sh                 all tests
#   tools/test.sh --config=exercises   the graded exercises' stubs instead of solutions
set -uo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh || exit 1

log=$(mktemp)
bazel test //... --test_output=errors --test_summary=short "$@" 2>&1 | tee "$log"
bazel_status=${PIPESTATUS[0]}

passed=0 failed=0 skipped=0
# Each test target's log; a target that failed without cmocka saying so (a crash, a
# timeout, a build error) counts as one failed case.
while read -r target status; do
  dir="bazel-testlogs/${target#//}"
  dir="${dir/://}"
  tl="$dir/test.log"
  p=0 f=0 s=0
  if [ -f "$tl" ]; then
    p=$(grep -ao '^\[  PASSED  \] [0-9]*' "$tl" | awk '{s+=$NF} END{print s+0}')
    f=$(grep -ao '^\[  FAILED  \] [0-9]*' "$tl" | awk '{s+=$NF} END{print s+0}')
    s=$(grep -ao '^\[  SKIPPED \] [0-9]*' "$tl" | awk '{s+=$NF} END{print s+0}')
  fi
  if [ "$status" != PASSED ] && [ "$f" -eq 0 ]; then f=1; fi
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done < <(grep -aE '^//[^ ]+ +(\(cached\) )?(PASSED|FAILED|TIMEOUT|NO STATUS|FLAKY)' "$log" |
         sed -E 's/\(cached\) //' | awk '{print $1, $2}')

if [ "$bazel_status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi  # e.g. build failure
rm -f "$log"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
