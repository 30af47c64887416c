#!/usr/bin/env bash
# Runs the whole test suite: every cmocka test under Bazel. GPU test cases skip themselves
# on a machine without a GPU; each skipped case is listed with its reason. Ends with one line
# "N passed, N failed, N skipped" counting test cases (cmocka's own counts, summed over all
# test binaries).
#
#   tools/test.sh                      all tests
#   tools/test.sh --config=exercises   the graded exercises' stubs instead of solutions
#   tools/test.sh --summarize LOG      only the summary, from a saved `bazel test` output and
#                                      the test logs under $TESTLOGS (default bazel-testlogs)
set -uo pipefail
usage() {
  echo "usage: tools/test.sh [bazel test flags...]   run every test, list the skipped cases with their reasons"
  echo "       tools/test.sh --summarize LOG [STATUS] the same summary from a saved 'bazel test' output (and its exit status)"
}
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
esac
cd "$(dirname "$0")/.."

# The summary: per test target, cmocka's counts from its log; every skipped case with the
# reason its test printed ("[ SKIP     ] <function>: <reason>" just before cmocka's
# "[  SKIPPED ] <case>"). A target that failed without cmocka saying so (a crash, a timeout,
# a build error) counts as one failed case.
summarize() {
  local log=$1 testlogs=${TESTLOGS:-bazel-testlogs} bazel_status=${2:-0}
  local passed=0 failed=0 skipped=0 target status dir tl p f s
  while read -r target status; do
    dir="$testlogs/${target#//}"
    dir="${dir/://}"
    tl="$dir/test.log"
    p=0 f=0 s=0
    if [ -f "$tl" ]; then
      p=$(grep -ao '^\[  PASSED  \] [0-9]*' "$tl" | awk '{s+=$NF} END{print s+0}')
      f=$(grep -ao '^\[  FAILED  \] [0-9]*' "$tl" | awk '{s+=$NF} END{print s+0}')
      s=$(grep -ao '^\[  SKIPPED \] [0-9]* test' "$tl" | awk '{s+=$(NF-1)} END{print s+0}')
      awk -v target="$target" '
        /^\[ RUN      \] / { reason = "" }
        /^\[ SKIP     \] / { reason = substr($0, 14); sub(/^[A-Za-z0-9_]+: /, "", reason); next }
        /^\[  SKIPPED \] [0-9]+ test/ { listed = 1 }
        !listed && /^\[  SKIPPED \] / {
          printf "skipped %s %s: %s\n", target, substr($0, 14), reason == "" ? "(the test printed no reason)" : reason
          reason = ""
        }' "$tl"
    fi
    if [ "$status" != PASSED ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  done < <(grep -aE '^//[^ ]+ +(\(cached\) )?(PASSED|FAILED|TIMEOUT|NO STATUS|FLAKY)' "$log" |
           sed -E 's/\(cached\) //' | awk '{print $1, $2}')
  if [ "$bazel_status" -ne 0 ] && [ $((passed + failed + skipped)) -eq 0 ]; then
    echo "bazel test exited with status $bazel_status before any test ran (a bad flag or a build error: see above)"
    return 1
  fi
  if [ "$bazel_status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi  # e.g. build failure
  echo "$passed passed, $failed failed, $skipped skipped"
  [ "$failed" -eq 0 ]
}

if [ "${1:-}" = --summarize ]; then
  [ $# -eq 2 ] || [ $# -eq 3 ] || { usage >&2; exit 2; }
  [ -f "$2" ] || { echo "tools/test.sh --summarize: no such file '$2'" >&2; exit 2; }
  summarize "$2" "${3:-0}"
  exit
fi

tools/bootstrap.sh || exit 1
log=$(mktemp)
# (Bazel's hint that some tests' declared size is larger than they need - they finish well
# within their timeout - is left out of what is shown: nothing to act on. The log keeps it.)
bazel test //... --test_output=errors --test_summary=short "$@" 2>&1 | tee "$log" |
  grep -av '^There were tests whose specified size is too big'
bazel_status=${PIPESTATUS[0]}
summarize "$log" "$bazel_status"
rc=$?
rm -f "$log"
exit $rc
