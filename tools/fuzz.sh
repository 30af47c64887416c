#!/usr/bin/env bash
# Fuzzes the shared flag parser and the weights reader with libFuzzer (clang's
# -fsanitize=fuzzer, from Debian's clang package), under AddressSanitizer and
# UndefinedBehaviorSanitizer, for a bounded time each. The harnesses are tests/fuzz/*.c; a
# refusal (fail_user) is the expected outcome for most inputs, a crash, sanitizer report or
# hang is a finding: the input that caused it is kept in the work folder and the script
# exits 1.
#
#   tools/fuzz.sh                      20 s per target, work in $TMPDIR/te_c_fuzz
#   tools/fuzz.sh --seconds 600        longer
#   tools/fuzz.sh --target weights     one of: flags, weights, all (default)
#   tools/fuzz.sh --workdir DIR        keep the corpora and any crash inputs there
set -euo pipefail
# A bad argument: what is wrong, then the usage, exit 2.
bad() { echo "fuzz.sh: $1" >&2; usage >&2; exit 2; }
usage() {
  echo "usage: tools/fuzz.sh [--seconds N] [--target flags|weights|all] [--workdir DIR]"
  echo "  libFuzzer (clang -fsanitize=fuzzer,address,undefined) on the flag parser and the weights reader"
}
seconds=20 target=all workdir=${TMPDIR:-/tmp}/te_c_fuzz
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --seconds) [ $# -ge 2 ] && [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] ||
                 bad "--seconds expects a whole number of seconds, 1 or more, got '${2-}'"
               seconds=$2; shift 2 ;;
    --target) [ $# -ge 2 ] && [[ $2 =~ ^(flags|weights|all)$ ]] ||
                bad "--target expects flags, weights or all, got '${2-}'"
              target=$2; shift 2 ;;
    --workdir) [ $# -ge 2 ] || bad "--workdir expects a folder"; workdir=$2; shift 2 ;;
    *) echo "fuzz.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."

cc=$(command -v clang || command -v clang-14 || true)
if [ -z "$cc" ] || ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' |
    "$cc" -x c -fsanitize=fuzzer - -o /dev/null 2>/dev/null; then
  echo "fuzz.sh: no clang with libFuzzer here (Debian: apt-get install clang)"
  exit 3
fi
jansson=$(find /usr/lib /usr/lib64 -name libjansson.a 2>/dev/null | head -1)
[ -n "$jansson" ] || { echo "fuzz.sh: libjansson.a not found (apt-get install libjansson-dev)" >&2; exit 1; }

mkdir -p "$workdir"
flags=(-g -O1 -std=c11 -D_GNU_SOURCE -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
       -Wall -Wextra -Werror)
wrap=-Wl,--wrap=exit,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free,--wrap=strdup,--wrap=fopen,--wrap=fclose
core=(common/core/errors.c common/core/flags.c common/core/half.c common/core/layer.c)
io=(common/io/output_file.c common/io/safetensors.c common/io/weights_io.c)

status=0
run_target() {  # run_target NAME SOURCES...
  local name=$1; shift
  echo "== fuzz_$name: building"
  "$cc" "${flags[@]}" "$@" tests/fuzz/fuzz_support.c "$wrap" "$jansson" -lm -o "$workdir/fuzz_$name"
  mkdir -p "$workdir/corpus_$name" "$workdir/seeds_$name"
  echo "== fuzz_$name: $seconds s"
  local log="$workdir/fuzz_$name.log"
  if (cd "$workdir" && TMPDIR="$workdir" ./"fuzz_$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -close_fd_mask=3 -artifact_prefix="$workdir/crash_${name}_" \
        "corpus_$name" "seeds_$name" >"$log" 2>&1); then
    grep -aE "^(#[0-9]+\s+DONE|Done [0-9]+ runs)" "$log" | tail -2
    echo "== fuzz_$name: no crash, no sanitizer report, no hang"
  else
    tail -40 "$log"
    echo "== fuzz_$name: FOUND a problem; the input is $workdir/crash_${name}_*"
    status=1
  fi
}

if [ "$target" = flags ] || [ "$target" = all ]; then
  # Seeds: real command lines, arguments separated by NUL bytes.
  mkdir -p "$workdir/seeds_flags"
  printf -- '--preset\0tiny\0--dtype=bf16\0--check' > "$workdir/seeds_flags/a"
  printf -- '--seq\0128\0--dropout\0.1\0--causal\0--fast\0--level=3' > "$workdir/seeds_flags/b"
  printf -- '--save\0out.safetensors\0--attn-dropout\0.0234375\0--rate\0.5' > "$workdir/seeds_flags/c"
  run_target flags tests/fuzz/fuzz_flags.c steps/driver/options.c "${core[@]}" "${io[@]}"
fi
if [ "$target" = weights ] || [ "$target" = all ]; then
  mkdir -p "$workdir/seeds_weights"
  "$cc" -O1 -std=c11 -D_GNU_SOURCE -I. tests/fuzz/make_seeds.c "${core[@]}" "${io[@]}" "$jansson" -lm \
    -o "$workdir/make_seeds"
  "$workdir/make_seeds" "$workdir/seeds_weights"
  run_target weights tests/fuzz/fuzz_weights.c "${core[@]}" "${io[@]}"
fi
exit $status
