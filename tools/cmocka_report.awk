# Reads the log of one cmocka test program and prints one tab-separated line per test case:
#
#   PASS  <case>
#   FAIL  <case>  <the first failing check's message>
#   SKIP  <case>  <why: e.g. "needs a CUDA GPU (no CUDA-capable device is detected)">
#   CRASH <case>  <the last thing the program said>     (it stopped inside this case)
#
# then "SPEED - <line>" for each speed line a GPU exercise's test printed, and
# "CASES - <n>" with the number of cases the program announced (cases after a crash never ran).
# Used by tools/grade.sh (on a test.log from Bazel) and tools/gpu_run.sh grade (on a binary's
# output), so that both read a failure the same way.
#
# cmocka's output: "[ RUN      ] case", then the checks' messages (fail_msg prints "ERROR: ..."
# on stderr; assert_* print "[  ERROR   ] --- ..."; our SKIP_WITHOUT_GPU "[ SKIP     ] case: why"),
# then "[       OK ] case", "[  FAILED  ] case" or "[  SKIPPED ] case"; after
# "[==========] N test(s) run." a summary that repeats the failed cases (ignored here).
BEGIN { OFS = "\t"; open = 0; cases = 0; done = 0 }

function text(s) { gsub(/\t/, " ", s); return s }

/^\[==========\] Running [0-9]+ test/ { cases = $3 + 0; next }
/^\[==========\] [0-9]+ test\(s\) run/ { done = 1; next }
/^\[ RUN      \] / { name = substr($0, 14); msg = ""; open = 1; next }
/^speed: / { speeds[++nspeed] = text($0) }
open && /^ERROR: / && msg == "" { msg = substr($0, 8) }
open && /^\[  ERROR   \] --- / && msg == "" {
    m = substr($0, 18)
    if (m !~ /^\[   LINE   \]/) msg = m
}
open && /^\[ SKIP     \] / && msg == "" { m = substr($0, 14); sub(/^[^:]*: /, "", m); msg = m }
open && /^\[       OK \] / { print "PASS", name, ""; open = 0; next }
open && /^\[  FAILED  \] / { print "FAIL", name, text(msg); open = 0; next }
open && /^\[  SKIPPED \] / { print "SKIP", name, text(msg); open = 0; next }
NF > 0 && !done { last = $0 }

END {
    if (open) print "CRASH", name, text(msg != "" ? msg : last)
    for (i = 1; i <= nspeed; i++) print "SPEED", "-", speeds[i]
    print "CASES", "-", cases
}
