#!/usr/bin/env bash
# Where a kernel's warps wait, instruction by instruction, on the GPU machine (needs ncu,
# Nsight Compute): the warp-stall samples of one launch, summed by reason and listed for the
# SASS instructions that hold the most. This is how the attention backward's imbalances were
# found (steps/04_transformer_layer/README.md): samples on a barrier mean warps waiting for other
# warps; samples on a wgmma that starts a group, for the rest of their warpgroup.
#
#   tools/profile_stalls.sh BINARY KERNEL_REGEX [step flags...]
#   e.g. tools/profile_stalls.sh .gpu/bin/step04_transformer_layer flash_backward_wgmma
# Profiles the kernel's first launch inside the step's profiled region (step_time brackets
# its last timed step with cudaProfilerStart/Stop), and ends with how busy it kept the tensor
# cores, the issue slots and the other pipes. The report stays in $OUT (or /tmp).
set -euo pipefail
usage() {
  echo "usage: tools/profile_stalls.sh BINARY KERNEL_REGEX [step flags...]"
  echo "  e.g. tools/profile_stalls.sh .gpu/bin/step04_transformer_layer flash_backward_wgmma (needs ncu)"
}
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
esac
[ $# -ge 2 ] || { usage >&2; exit 2; }
[ -x "$1" ] || { echo "profile_stalls.sh: '$1' is not an executable file" >&2; usage >&2; exit 2; }
bin=$1 kernel=$2; shift 2
out=${OUT:-/tmp}
report="$out/stalls_$kernel"
ncu --profile-from-start off -k "regex:$kernel" -c 1 --set full --import-source yes -f -o "$report" \
    "$bin" --warmup 2 --iters 1 "$@" > "$out/stalls_$kernel.log" 2>&1
ncu --import "$report.ncu-rep" --page source --csv --print-source sass > "$report.csv"
python3 - "$report.csv" "$kernel" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
header = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
cols = rows[header]
at = {name: i for i, name in enumerate(cols)}
reasons = [c for c in cols if c.startswith("stall_") and "Not Issued" not in c]
lines = [r for r in rows[header + 1:] if len(r) == len(cols)]
samples = lambda r: int(r[at["Warp Stall Sampling (All Samples)"]] or 0)
total = sum(samples(r) for r in lines)
print(f"== {sys.argv[2]}: {total} warp-stall samples over {len(lines)} SASS instructions")
by_reason = {c: sum(int(r[at[c]] or 0) for r in lines) for c in reasons}
for c, n in sorted(by_reason.items(), key=lambda kv: -kv[1])[:8]:
    print(f"  {c[6:]:18s} {100 * n / total:5.1f}%")
print("  (the rest carry reasons these columns do not list - in the attention backward, most sat")
print("   on a tile's first wgmma, and shrank once its warpgroup's warps arrived together)")
print("top instructions (share of all samples, main reasons):")
for r in sorted(lines, key=samples, reverse=True)[:25]:
    main = sorted(((int(r[at[c]] or 0), c[6:]) for c in reasons), reverse=True)[:2]
    why = ", ".join(f"{name} {n}" for n, name in main if n)
    print(f"  {100 * samples(r) / total:5.1f}%  {r[0][-5:]}  {r[1].strip()[:58]:58s} {why}")
PY
# How busy the kernel kept the SM, from the same report: its duration (at Nsight Compute's
# locked base clocks, so longer than in a timed run), the shared pipe (the tensor cores and
# 16-bit math), the issue slots and the ALU / FMA / XU (exp2) pipes, as % of their peak over the
# active cycles.
ncu --import "$report.ncu-rep" --page raw --csv > "$report.raw.csv"
python3 - "$report.raw.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
names, units, values = rows[0], rows[1], rows[2]
wanted = [("gpu__time_duration.sum", "duration"),
          ("sm__pipe_shared_cycles_active.avg.pct_of_peak_sustained_active", "shared pipe (tensor cores) busy"),
          ("smsp__issue_active.avg.pct_of_peak_sustained_active", "issue slots busy"),
          ("sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active", "ALU pipe busy"),
          ("sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active", "FMA pipe busy"),
          ("sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active", "XU (exp2) pipe busy")]
at = {n: i for i, n in enumerate(names)}
print("how busy:")
for metric, label in wanted:
    # ncu scales a duration's unit with its size (us, ms): printed as the report gives it.
    if metric in at: print(f"  {label + ' (' + units[at[metric]] + ')':38s} {values[at[metric]]}")
PY
