#!/usr/bin/env bash
# Every tool in tools/ answers --help with its usage and exit status 0, and a missing argument
# with its usage and a non-zero exit status. tools/test.sh lists each skipped test case with
# the reason its test printed.
set -uo pipefail
tools=$(cd "$(dirname "$0")/../../tools" && pwd)
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# Every tool is checked (the list is kept for one that cannot answer --help here).
not_here=" "

run() {  # run TOOL ARGS...: a script, or a Python file through python3
  case $1 in
    *.py) python3 "$@" ;;
    *) bash "$@" ;;
  esac
}

for t in "$tools"/*.sh "$tools"/*.py; do
  name=$(basename "$t")
  if [[ $not_here == *" $name "* ]]; then echo "not checked here: $name"; continue; fi
  if [[ $name == *.py ]] && ! command -v python3 >/dev/null; then echo "no python3: $name not checked"; continue; fi
  out=$(run "$t" --help 2>&1); rc=$?
  if [ $rc -ne 0 ] || ! grep -qi "usage" <<<"$out"; then fail "$name --help: exit $rc, output: $out"
  else echo "ok: $name --help -> exit 0, $(head -1 <<<"$out")"; fi
done

# The tools that need arguments: without them, the usage and a non-zero exit (not a shell's
# "unbound variable").
for t in profile_step.sh profile_stalls.sh plot_fp8_scaling.py; do
  out=$(run "$tools/$t" 2>&1); rc=$?
  if [ $rc -eq 0 ] || ! grep -qi "usage" <<<"$out" || grep -q "unbound variable" <<<"$out"; then
    fail "$t without arguments: exit $rc, output: $out"
  else echo "ok: $t (no arguments) -> exit $rc, $(head -1 <<<"$out")"; fi
done
out=$(bash "$tools/profile_stalls.sh" /bin/true 2>&1); rc=$?
[ $rc -ne 0 ] && grep -qi usage <<<"$out" || fail "profile_stalls.sh with one argument: exit $rc: $out"

# gpu_run.sh refuses bad input before any work (no GPU needed to see it): an unknown mode, and
# envab without ENVAB or with a word that is not VAR=VALUE - exit 2, naming what is wrong.
out=$(bash "$tools/gpu_run.sh" nosuchmode 2>&1); rc=$?
[ $rc -eq 2 ] && grep -qF "unknown mode 'nosuchmode'" <<<"$out" || fail "gpu_run.sh nosuchmode: exit $rc: $out"
out=$(env -u ENVAB bash "$tools/gpu_run.sh" envab 2>&1); rc=$?
[ $rc -eq 2 ] && grep -qF "set ENVAB" <<<"$out" || fail "gpu_run.sh envab without ENVAB: exit $rc: $out"
out=$(ENVAB="A=1 oops" bash "$tools/gpu_run.sh" envab 2>&1); rc=$?
[ $rc -eq 2 ] && grep -qF "'oops' is not one" <<<"$out" || fail "gpu_run.sh envab with ENVAB='A=1 oops': exit $rc: $out"

# tools/test.sh's summary lists every skipped case with its reason.
tmp=${TEST_TMPDIR:-/tmp}/tools_test.$$
mkdir -p "$tmp/testlogs/tests/x/gpu_test" "$tmp/testlogs/tests/x/cpu_test"
cat > "$tmp/testlogs/tests/x/gpu_test/test.log" <<'LOG'
[ RUN      ] test_kernel
[ SKIP     ] test_kernel: needs a CUDA GPU: no GPU (no NVIDIA driver / device found)
[  SKIPPED ] test_kernel
[ RUN      ] test_other
[  SKIPPED ] test_other
[ RUN      ] test_runs
[       OK ] test_runs
[==========] 3 test(s) run.
[  PASSED  ] 1 test(s).
[  SKIPPED ] 2 test(s), listed below:
[  SKIPPED ] test_kernel
[  SKIPPED ] test_other
LOG
cat > "$tmp/testlogs/tests/x/cpu_test/test.log" <<'LOG'
[ RUN      ] test_a
[       OK ] test_a
[  PASSED  ] 1 test(s).
LOG
printf '//tests/x:gpu_test   PASSED in 0.1s\n//tests/x:cpu_test (cached) PASSED in 0.1s\n' > "$tmp/bazel.log"
out=$(TESTLOGS="$tmp/testlogs" bash "$tools/test.sh" --summarize "$tmp/bazel.log" 2>&1); rc=$?
echo "$out"
grep -qF "skipped //tests/x:gpu_test test_kernel: needs a CUDA GPU: no GPU (no NVIDIA driver / device found)" <<<"$out" ||
  fail "test.sh does not list the skipped case with its reason"
grep -qF "skipped //tests/x:gpu_test test_other: (the test printed no reason)" <<<"$out" ||
  fail "test.sh does not list a skipped case without a reason"
grep -qF "2 passed, 0 failed, 2 skipped" <<<"$out" && [ $rc -eq 0 ] || fail "test.sh's counts: exit $rc"
# bazel stopping before any test (a bad flag, a build error) is said as that, not as a failed test.
: > "$tmp/empty.log"
out=$(TESTLOGS="$tmp/testlogs" bash "$tools/test.sh" --summarize "$tmp/empty.log" 2 2>&1); rc=$?
grep -qF "bazel test exited with status 2 before any test ran" <<<"$out" && [ $rc -ne 0 ] ||
  fail "test.sh does not say that bazel stopped before any test ran: exit $rc, '$out'"
rm -rf "$tmp"

[ $failures -eq 0 ] && echo "all tools answered" || echo "$failures failure(s)"
exit $failures
