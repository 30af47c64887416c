#!/usr/bin/env bash
# Fuzzes the flag parser and the weights reader for 20 s each (tools/fuzz.sh). Without clang
# and its libFuzzer the test says so and passes: the fuzzing is then `tools/fuzz.sh` by hand.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
"$root/tools/fuzz.sh" --seconds "${FUZZ_SECONDS:-20}" --workdir "${TEST_TMPDIR:-/tmp}/fuzz"
rc=$?
if [ $rc -eq 3 ]; then echo "SKIPPED: no clang with libFuzzer on this machine"; exit 0; fi
exit $rc
