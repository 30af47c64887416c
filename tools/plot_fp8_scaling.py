#!/usr/bin/env python3
"""Draws step 05's FP8 scaling log as an SVG: one panel per FP8 tensor (x, w, dy of each
Linear; q, k, v of attention under --fp8-attention), its amax per training step (dots) and the scale each step used (line), both on a
log axis. The delay is visible: a step's scale comes from the amaxes of the steps before it.

  step05_fp8 --iters 40 --fp8-log out/fp8.csv && python3 tools/plot_fp8_scaling.py out/fp8.csv out/fp8.svg

Standard library only.
"""
import argparse
import csv
import math
import os
import sys
from collections import defaultdict


COLUMNS = ("step", "linear", "tensor", "amax", "scale")


def fail(message):
    sys.exit(f"plot_fp8_scaling.py: {message}")


def read_log(src):
    """The log's rows by (linear, tensor); stops with a message naming the file (and the line)
    for a file that cannot be read, is not an --fp8-log CSV, holds no rows, or holds a value
    that is not a number (a step below 0, an amax or scale below 0 or not finite)."""
    series = defaultdict(lambda: {"step": [], "amax": [], "scale": []})
    try:
        with open(src, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or any(c not in reader.fieldnames for c in COLUMNS):
                fail(f"{src}: not step05_fp8 --fp8-log's CSV (its header: {','.join(COLUMNS)})")
            for row in reader:
                try:
                    step, amax, scale = int(row["step"]), float(row["amax"]), float(row["scale"])
                except (TypeError, ValueError):
                    fail(f"{src} line {reader.line_num}: step, amax and scale must be numbers: {row}")
                if step < 0 or not (math.isfinite(amax) and amax >= 0 and math.isfinite(scale) and scale >= 0):
                    fail(f"{src} line {reader.line_num}: step {step}, amax {amax}, scale {scale}: a step >= 0 and "
                         f"a finite amax and scale >= 0 expected")
                s = series[(row["linear"], row["tensor"])]
                s["step"].append(step)
                s["amax"].append(amax)
                s["scale"].append(scale)
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot read {src}: {e.strerror if isinstance(e, OSError) and e.strerror else e}")
    if not series:
        fail(f"{src}: no rows (did the step run any training step?)")
    return series


def main(src, dst):
    series = read_log(src)
    # The layer's order: the four Linears, then attention's Q, K, V (--fp8-attention); a name
    # the log may gain later goes last rather than stopping the plot.
    modules, tensors = ["qkv", "proj", "fc1", "fc2", "attention"], ["x", "w", "dy", "q", "k", "v"]
    rank = lambda name, order: (order.index(name) if name in order else len(order), name)
    keys = sorted(series, key=lambda k: (rank(k[0], modules), rank(k[1], tensors)))
    cols, pw, ph, pad = 3, 300, 150, 45
    rows = (len(keys) + cols - 1) // cols
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{cols * (pw + pad) + pad}" '
           f'height="{rows * (ph + pad) + 60}" font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="10" y="20" font-size="14" font-weight="bold">FP8 delayed scaling: amax per step '
           '(dots, green) and the scale that step used (line, blue); log axes</text>']
    for n, key in enumerate(keys):
        s = series[key]
        x0, y0 = pad + (n % cols) * (pw + pad), 40 + (n // cols) * (ph + pad)
        steps = max(s["step"]) or 1

        def ypos(values):
            logs = [math.log10(v) for v in values if v > 0]
            lo, hi = (min(logs), max(logs)) if logs else (0, 1)
            hi = hi if hi > lo else lo + 1
            return lambda v: y0 + ph - (math.log10(v) - lo) / (hi - lo) * (ph - 10) - 5 if v > 0 else y0 + ph, lo, hi

        out.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>')
        out.append(f'<text x="{x0}" y="{y0 - 4}" font-weight="bold">{key[0]}.{key[1]}</text>')
        ya, lo_a, hi_a = ypos(s["amax"])
        ys, lo_s, hi_s = ypos(s["scale"])
        pts = " ".join(f'{x0 + st / steps * pw:.1f},{ys(v):.1f}' for st, v in zip(s["step"], s["scale"]))
        out.append(f'<polyline points="{pts}" fill="none" stroke="#1f5fbf" stroke-width="1.5"/>')
        for st, v in zip(s["step"], s["amax"]):
            out.append(f'<circle cx="{x0 + st / steps * pw:.1f}" cy="{ya(v):.1f}" r="2" fill="#3a3"/>')
        out.append(f'<text x="{x0 + 4}" y="{y0 + ph - 4}" fill="#3a3">amax {10**lo_a:.2g}..{10**hi_a:.2g}</text>')
        out.append(f'<text x="{x0 + pw - 4}" y="{y0 + 12}" fill="#1f5fbf" text-anchor="end">'
                   f'scale {10**lo_s:.3g}..{10**hi_s:.3g}</text>')
    out.append("</svg>")
    if os.path.isdir(dst):
        fail(f"{dst}: that is a folder; give a file name")
    try:
        with open(dst + ".tmp", "x") as fh:  # written beside and renamed: whole or not at all
            fh.write("\n".join(out))
        os.replace(dst + ".tmp", dst)
    except FileExistsError:
        fail(f"{dst}.tmp is there already (a run writing it now, or a file of yours); move or remove it first")
    except OSError as e:
        fail(f"cannot write {dst}: {e.strerror or e}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", metavar="LOG.csv", help="step05_fp8 --fp8-log's CSV")
    ap.add_argument("svg", metavar="OUT.svg", help="the SVG to write")
    args = ap.parse_args()  # --help: usage, exit 0; a missing argument: usage, exit 2
    main(args.log, args.svg)
