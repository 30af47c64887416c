#!/usr/bin/env python3
"""PyTorch's fused attention backends at attention_bench's rows, for the table beside ours.

Times torch.nn.functional.scaled_dot_product_attention with each backend forced
(FlashAttention-2 as PyTorch ships it, and cuDNN's), forward and backward, at the rows
kernels/attention/attention_bench prints: head dim 128 and 64, each without dropout, with
dropout 0.1, and causal. Same convention as attention_bench: forward FLOPs 4 b h s^2 d,
backward 2.5x, both halved when causal; CUDA events, median of 20 after 3 warm-ups, random
inputs. A backend that cannot run a row (e.g. cuDNN with dropout in some versions) prints
"n/a" with PyTorch's reason in the log, not a number.

    python3 tools/attention_peers.py [--batch 4 --heads 32 --seq 2048] [--dtype fp16|bf16|both]
                                     [--json FILE] [--ours LOG [LOG ...]]

--ours takes attention_bench's printout (one file per dtype, `attention_bench --dtype bf16 >
LOG`) and ends with one table: each row, ours beside both backends, and whether ours is at or
above cuDNN's forward and backward (`gpu_run.sh attention` runs all of it in one call).
"""
import argparse
import json
import sys

ROWS = [(128, 0.0, False), (128, 0.1, False), (128, 0.0, True),
        (64, 0.0, False), (64, 0.1, False), (64, 0.0, True)]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--dtype", choices=["fp16", "bf16", "both"], default="both")
    ap.add_argument("--json", help="write the figures here as well")
    ap.add_argument("--ours", nargs="+", metavar="LOG",
                    help="attention_bench printouts to put beside the backends, one per dtype")
    args = ap.parse_args()
    # Checked before PyTorch is looked for: a bad value says so on any machine.
    for name in ("batch", "heads", "seq"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} {getattr(args, name)}: at least 1")
    if args.json:
        import os
        folder = os.path.dirname(args.json) or "."
        if os.path.isdir(args.json) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            ap.error(f"--json {args.json}: cannot write there (a missing or unwritable folder, or a folder)")
    return args


def read_ours(paths):
    """{(dtype, d, dropout, causal): (fwd TFLOP/s, bwd TFLOP/s)} from attention_bench printouts
    (its "A" columns: the best kernels on this GPU). A file that is missing or holds no rows
    stops with a message naming it."""
    ours = {}
    for path in paths:
        try:
            with open(path) as fh:
                text = fh.read()
        except OSError as e:
            sys.exit(f"attention_peers: --ours {path}: {e.strerror}")
        except UnicodeDecodeError:
            sys.exit(f"attention_peers: --ours {path}: not text (an attention_bench printout is expected)")
        dtype, rows = None, 0
        for line in text.splitlines():
            if line.startswith("GPU:") and "flash attention, " in line:
                dtype = line.split("flash attention, ")[1].split(",")[0]
            fields = line.replace("|", " ").split()
            if dtype and len(fields) >= 7 and fields[0] in ("64", "128"):
                d, p, causal = int(fields[0]), float(fields[1]), fields[2] == "1"
                ours[(dtype, d, p, causal)] = (float(fields[4]), float(fields[6]))
                rows += 1
        if rows == 0:
            sys.exit(f"attention_peers: --ours {path}: no attention_bench rows in it")
    return ours


def print_side_by_side(ours, results):
    """One table: ours, cuDNN, flash per row and dtype; 'yes' where ours >= cuDNN."""
    peers = {(r["dtype"], r["head_dim"], r["dropout"], r["causal"], r["backend"]): r for r in results}

    def cell(r):
        if not r:
            return "not timed"
        return f"{r['forward_tflops']:5.0f} / {r['backward_tflops']:4.0f}" if "error" not in r else "n/a"
    print("\nours beside PyTorch's SDPA, TFLOP/s forward / backward (same run)")
    print(f"{'dtype':<5} {'d':>4} {'dropout':>7} {'causal':>6} | {'ours':>12} | {'SDPA cuDNN':>12} | "
          f"{'SDPA flash':>12} | ours >= cuDNN (fwd, bwd)")
    behind = compared = 0
    for (dtype, d, p, causal), (f, b) in sorted(ours.items(), key=lambda kv: (kv[0][0] != "fp16", -kv[0][1], kv[0][3], kv[0][2])):
        cudnn = peers.get((dtype, d, p, causal, "SDPA cuDNN"))
        flash = peers.get((dtype, d, p, causal, "SDPA flash"))
        if cudnn and "error" not in cudnn:
            verdict = ", ".join("yes" if a >= c else "no" for a, c in
                                ((f, cudnn["forward_tflops"]), (b, cudnn["backward_tflops"])))
            behind += verdict.count("no")
            compared += 2
        else:
            verdict = "cuDNN not timed" if not cudnn else "cuDNN could not run this row"
        print(f"{dtype:<5} {d:>4} {p:>7.1f} {int(causal):>6} | {f:5.0f} / {b:4.0f} | {cell(cudnn):>12} | "
              f"{cell(flash):>12} | {verdict}")
    print(f"columns where ours is behind cuDNN: {behind} of the {compared} compared")


def median_ms(torch, fn, iters=20, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def time_backend(torch, backend, dtype, b, h, s, d, p, causal):
    """(forward ms, backward ms) of SDPA with `backend` forced, or a string saying why not."""
    from torch.nn.attention import sdpa_kernel
    F = torch.nn.functional
    q, k, v = (torch.empty(b, h, s, d, device="cuda", dtype=dtype).uniform_(-1, 1).requires_grad_()
               for _ in range(3))
    dout = torch.empty(b, h, s, d, device="cuda", dtype=dtype).uniform_(-1, 1)
    try:
        with sdpa_kernel([backend]):
            def fwd():
                return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
            out = fwd()
            fwd_ms = median_ms(torch, fwd)

            def bwd():
                torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
            bwd_ms = median_ms(torch, bwd)
    except RuntimeError as e:  # the backend refused this row
        return str(e).splitlines()[0][:160]
    return fwd_ms, bwd_ms


def main():
    args = parse_args()
    ours = read_ours(args.ours) if args.ours else {}  # a bad file stops before the long timing
    try:
        import torch
        from torch.nn.attention import SDPBackend
    except ImportError as e:
        print(f"attention_peers: PyTorch is not installed here ({e}); nothing to time")
        if ours:
            print_side_by_side(ours, [])  # ours alone, the peers "not timed"
        return 0
    if not torch.cuda.is_available():
        print("attention_peers: no CUDA GPU visible to PyTorch; nothing to time")
        if ours:
            print_side_by_side(ours, [])
        return 0
    backends = [("SDPA flash", SDPBackend.FLASH_ATTENTION), ("SDPA cuDNN", SDPBackend.CUDNN_ATTENTION)]
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
    names = list(dtypes) if args.dtype == "both" else [args.dtype]
    b, h, s = args.batch, args.heads, args.seq
    print(f"GPU: {torch.cuda.get_device_name()}; PyTorch {torch.__version__}; batch {b}, heads {h}, seq {s}")
    print(f"{'backend':<11} {'dtype':<5} {'d':>4} {'dropout':>7} {'causal':>6} | "
          f"{'fwd ms':>7} {'TFLOP/s':>7} | {'bwd ms':>7} {'TFLOP/s':>7}")
    results = []
    for dname in names:
        for d, p, causal in ROWS:
            flops = 4.0 * b * h * s * s * d * (0.5 if causal else 1.0)
            for bname, backend in backends:
                r = time_backend(torch, backend, dtypes[dname], b, h, s, d, p, causal)
                row = {"backend": bname, "dtype": dname, "head_dim": d, "dropout": p, "causal": causal}
                if isinstance(r, str):
                    print(f"{bname:<11} {dname:<5} {d:>4} {p:>7.1f} {int(causal):>6} | n/a ({r})")
                    row["error"] = r
                else:
                    f_ms, b_ms = r
                    f_tf, b_tf = flops / f_ms / 1e9, 2.5 * flops / b_ms / 1e9
                    print(f"{bname:<11} {dname:<5} {d:>4} {p:>7.1f} {int(causal):>6} | "
                          f"{f_ms:7.3f} {f_tf:7.0f} | {b_ms:7.3f} {b_tf:7.0f}")
                    row.update(forward_ms=f_ms, forward_tflops=f_tf, backward_ms=b_ms, backward_tflops=b_tf)
                results.append(row)
                sys.stdout.flush()
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": results}, f,
                      indent=1)
        import os
        os.replace(args.json + ".tmp", args.json)
    if ours:
        print_side_by_side(ours, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
