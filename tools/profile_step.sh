#!/usr/bin/env bash
# Per-kernel time of one steady-state training step, on the GPU machine (needs ncu, Nsight
# Compute): step_time brackets its last timed step with cudaProfilerStart/Stop, and ncu
# measures only that. Kernels are replayed one at a time, so their durations add up to more
# than the step's wall time (no overlap) but rank where the time goes.
#
#   tools/profile_step.sh BINARY [step flags...]      e.g. .gpu/bin/step04_transformer_layer
set -euo pipefail
usage() { echo "usage: tools/profile_step.sh BINARY [step flags...]   e.g. .gpu/bin/step04_transformer_layer (needs ncu)"; }
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac
[ -x "$1" ] || { echo "profile_step.sh: '$1' is not an executable file" >&2; usage >&2; exit 2; }
bin=$1; shift
csv=$(mktemp)
ncu --profile-from-start off --metrics gpu__time_duration.sum --csv --print-units base \
    "$bin" --warmup 2 --iters 1 "$@" 2>/dev/null | grep -a '^"' > "$csv" || true
python3 - "$csv" "$(basename "$bin") $*" <<'PY'
import csv, sys, collections
rows = list(csv.DictReader(open(sys.argv[1])))
total = collections.defaultdict(float); count = collections.Counter()
for r in rows:
    if r.get("Metric Name") != "gpu__time_duration.sum": continue
    name = r["Kernel Name"].split("(")[0][:90]
    total[name] += float(r["Metric Value"].replace(",", "")) / 1e6; count[name] += 1
s = sum(total.values())
print(f"== {sys.argv[2]}: {sum(count.values())} kernels, {s:.2f} ms in all (one step, replayed)")
for name, ms in sorted(total.items(), key=lambda kv: -kv[1])[:16]:
    print(f"{ms:7.3f} ms {100 * ms / s:5.1f}%  x{count[name]:<3d} {name}")
PY
rm -f "$csv"
