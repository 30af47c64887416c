#!/usr/bin/env python3
"""Side by side with PyTorch: the same layer, the same weights, the same inputs.

Runs where PyTorch and a GPU are (e.g. the GPU machine, next to .gpu/bin from
tools/gpu_pack.sh):

  python3 tools/pytorch_compare.py --bin .gpu/bin            # check every step + time PyTorch
  python3 tools/pytorch_compare.py --bin .gpu/bin --no-time  # correctness only

1. Builds the quickstart's BasicTransformerLayer in PyTorch (our parameter names), with
   dropout off so both sides compute the same deterministic function.
   Step 06 is compared with the same module in its parallel form (attention and MLP on
   one LayerNorm), the model that step computes.
2. Exports its weights and an input x, dy as safetensors; runs each step binary with
   --weights/--input/--save; compares out, dx and every gradient with PyTorch's, computed in
   float32 from the same fp16-rounded weights and inputs. As a yardstick it also reports how
   far PyTorch's own fp16 run is from that float32 result: a step passes when its error is
   within max(3 x PyTorch-fp16's, the tolerance).
3. Times the PyTorch layer at the quickstart config, fwd+bwd (dx included, as our steps
   compute it), as four honest peers:
     PyTorch eager          the layer as TE's quickstart builds it (quickstart_utils'
                            DotProductAttention: two bmm around a softmax in the input dtype)
     PyTorch SDPA           attention by F.scaled_dot_product_attention, default backend
     PyTorch SDPA cuDNN     the same, forced onto cuDNN's attention (sdpa_kernel)
     PyTorch SDPA compiled  torch.compile of the SDPA layer
   each with its mean time, peak memory and, from torch.profiler on one more step, its time
   per category of our breakdown (tools/torch_categories.py sorts the kernels). Writes them as
   JSON for the comparison (steps/compare/compare --pytorch FILE [--breakdown]).
"""
import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=".gpu/bin", help="folder with the step binaries")
    ap.add_argument("--no-time", action="store_true", help="skip timing PyTorch")
    ap.add_argument("--no-check", action="store_true", help="skip checking the step binaries")
    ap.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16", help="of the timed peers")
    ap.add_argument("--json", default="out/pytorch.json")
    return ap.parse_args()


# The arguments are read before PyTorch is imported, so that --help (and a bad flag) need no
# PyTorch; then a missing PyTorch is said in words.
ARGS = parse_args() if __name__ == "__main__" else None
try:
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file, save_file
except ImportError as e:
    sys.exit(f"pytorch_compare.py needs PyTorch and safetensors ({e}): pip install torch safetensors")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_categories import classify  # noqa: E402  (beside this file)

FP8_TOLERANCE = 0.15

PARAM_NAMES = [
    "ln1.weight", "ln1.bias", "qkv_projection.weight", "qkv_projection.bias",
    "projection.weight", "projection.bias", "ln2.weight", "ln2.bias",
    "mlp.linear1.weight", "mlp.linear1.bias", "mlp.linear2.weight", "mlp.linear2.bias",
]


class Layer(torch.nn.Module):
    """The quickstart's BasicTransformerLayer; attention eager or through SDPA."""

    def __init__(self, hidden, ffn, heads, dropout=0.0, sdpa=False, parallel=False):
        super().__init__()
        self.heads, self.d, self.dropout, self.sdpa, self.parallel = heads, hidden // heads, dropout, sdpa, parallel
        self.ln1 = torch.nn.LayerNorm(hidden, eps=1e-5)
        self.qkv_projection = torch.nn.Linear(hidden, 3 * hidden)
        self.projection = torch.nn.Linear(hidden, hidden)
        self.ln2 = torch.nn.LayerNorm(hidden, eps=1e-5)
        self.mlp = torch.nn.Module()
        self.mlp.linear1 = torch.nn.Linear(hidden, ffn)
        self.mlp.linear2 = torch.nn.Linear(ffn, hidden)

    def attention(self, q, k, v):  # each [s, b, heads, d]
        s, b, heads, d = q.shape
        # The forward's kernels are found by this range in the profile (tools/torch_categories.py).
        with torch.profiler.record_function("attention"):
            if self.sdpa:
                q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))  # [b, heads, s, d]
                ctx = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
                return ctx.permute(2, 0, 1, 3).reshape(s, b, -1)
            # As TE's quickstart does it (quickstart_utils.DotProductAttention): [s, b * heads, d]
            # views, two batched products, the softmax in the input dtype.
            q, k, v = (t.reshape(s, b * heads, d).transpose(0, 1) for t in (q, k, v))  # [b * heads, s, d]
            scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(d)
            probs = F.dropout(torch.softmax(scores, dim=-1), self.dropout, self.training)
            ctx = torch.bmm(probs, v).view(b, heads, s, d)
            return ctx.permute(2, 0, 1, 3).contiguous().view(s, b, heads * d)

    def forward(self, x):
        s, b, h = x.shape
        a = self.ln1(x)
        qkv = self.qkv_projection(a).view(s, b, self.heads, 3 * self.d)
        q, k, v = torch.split(qkv, self.d, dim=3)
        attn = self.projection(self.attention(q, k, v))
        if self.parallel:  # step 06: x + Dropout(Attn(LN(x)) + MLP(LN(x))); ln2 is unused
            mlp = self.mlp.linear2(F.gelu(self.mlp.linear1(a), approximate="tanh"))
            return x + F.dropout(attn + mlp, self.dropout, self.training)
        y = x + F.dropout(attn, self.dropout, self.training)
        return y + self.mlp.linear2(F.gelu(self.mlp.linear1(self.ln2(y)), approximate="tanh"))


def train_step(layer, x, dy):
    x = x.detach().requires_grad_(True)
    for p in layer.parameters():
        p.grad = None
    out = layer(x)
    out.backward(dy)
    grads = {f"grad.{n}": p.grad if p.grad is not None else torch.zeros_like(p) for n, p in layer.named_parameters()}
    return {"out": out.detach(), "dx": x.grad, **grads}


def rel_error(a, ref):
    a, ref = a.double(), ref.double()
    if ref.norm() == 0:  # e.g. ln2's gradients in the parallel layer, which does not use it
        return a.norm().item()
    return ((a - ref).norm() / ref.norm()).item()


def check_steps(args, dtype_name):
    torch.manual_seed(0)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    h, f, heads, s, b = 256, 1024, 4, 128, 2  # the "small" preset
    layer32 = Layer(h, f, heads).cuda()
    with torch.no_grad():  # LayerNorm affine params away from 1/0 so they are exercised
        for ln in (layer32.ln1, layer32.ln2):
            ln.weight.uniform_(0.9, 1.1)
            ln.bias.uniform_(-0.1, 0.1)
        for p in layer32.parameters():  # the values both sides see: rounded to the storage type
            p.copy_(p.to(dtype).float())
    x = torch.rand(s, b, h, device="cuda").to(dtype).float()
    dy = torch.rand(s, b, h, device="cuda").to(dtype).float()
    ref = train_step(layer32, x, dy)
    layer32.parallel = True
    ref_parallel = train_step(layer32, x, dy)  # step 06 computes the parallel layer
    layer32.parallel = False
    layer16 = Layer(h, f, heads).cuda().to(dtype)
    layer16.load_state_dict({k: v.to(dtype) for k, v in layer32.state_dict().items()})
    torch_lowp = {k: v.float() for k, v in train_step(layer16, x.to(dtype), dy.to(dtype)).items()}
    torch_err = max(rel_error(torch_lowp[k], ref[k]) for k in ref)

    tmp = tempfile.mkdtemp()
    wpath, ipath = os.path.join(tmp, "weights.safetensors"), os.path.join(tmp, "input.safetensors")
    save_file({n: t.detach().float().contiguous().cpu() for n, t in layer32.state_dict().items()}, wpath)
    save_file({"x": x.cpu().contiguous(), "dy": dy.cpu().contiguous()}, ipath)
    tol = {"fp16": 4e-3, "bf16": 2e-2}[dtype_name]
    rows, ok = [], True
    for exe in sorted(os.listdir(args.bin)):
        if not exe.startswith("step") or exe.endswith(("_test", "_demo")):  # steps only, not their tests or demos
            continue
        opath = os.path.join(tmp, f"{exe}.safetensors")
        cmd = [os.path.join(args.bin, exe), "--preset", "small", "--dtype", dtype_name, "--dropout", "0",
               "--weights", wpath, "--input", ipath, "--save", opath, "--warmup", "0", "--iters", "1"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            rows.append((exe, float("nan"), "did not run: " + (run.stderr.strip().splitlines() or ["?"])[-1]))
            ok = False
            continue
        got = load_file(opath)
        want = ref_parallel if exe.startswith("step06") else ref  # against PyTorch's parallel layer
        errs = {k: rel_error(got[k].cuda(), want[k]) for k in want}
        worst = max(errs, key=errs.get)
        # FP8 (step 05): its first step casts with scale 1 (no amax seen yet), so its error
        # against float32 is FP8's rounding of every Linear operand: a tolerance of its own.
        step_tol = FP8_TOLERANCE if exe.startswith("step05") else max(3 * torch_err, tol)
        passed = errs[worst] <= step_tol
        ok &= passed
        rows.append((exe, errs[worst], f"worst {worst}; {'ok' if passed else 'FAIL'}"))
    print(f"\n{dtype_name}: PyTorch {dtype_name} itself vs float32: max rel.err {torch_err:.2e}")
    for exe, err, note in rows:
        print(f"  {exe:28s} max rel.err {err:.2e}   {note}")
    return ok


QUICKSTART = dict(hidden=4096, ffn=16384, heads=32, seq=2048, batch=4)  # as our steps' default
CATEGORY_KEYS = ("gemm_fprop", "gemm_dgrad", "gemm_wgrad", "attention_fwd", "attention_bwd", "layernorm",
                 "elementwise", "fp8_cast", "communication", "other")

# name, attention through SDPA, the SDPA backend to force (None: PyTorch's choice), compiled
PEERS = (
    ("PyTorch eager", False, None, False),
    ("PyTorch SDPA", True, None, False),
    ("PyTorch SDPA cuDNN", True, "CUDNN_ATTENTION", False),
    ("PyTorch SDPA compiled", True, None, True),
)


def profile_categories(train_step, tokens, seq):
    """One step under torch.profiler: ms per category, and the span from the first kernel's start
    to the last one's end (what is not in any kernel is "other")."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        train_step()
        torch.cuda.synchronize()
    ms = dict.fromkeys(CATEGORY_KEYS, 0.0)
    start, end = math.inf, -math.inf
    for e in prof.events():
        if e.device_type == DeviceType.CUDA:
            start, end = min(start, e.time_range.start), max(end, e.time_range.end)
            continue
        kernels = getattr(e, "kernels", None) or []
        if not kernels:
            continue
        ops, parent = [], e
        while parent is not None:
            ops.append(parent.name)
            parent = parent.cpu_parent
        backward = any("backward" in o.lower() for o in ops)
        for k in kernels:  # the kernels this op launched; duration in us
            ms[classify(k.name, ops, backward, e.input_shapes, tokens, seq)] += k.duration / 1e3
    span = (end - start) / 1e3 if end > start else 0.0
    ms["other"] = max(0.0, span - sum(ms.values()))
    return ms, span


def time_peer(sdpa, backend, compiled, dtype, warmup=3, iters=10):
    """Mean ms of a training step (after warm-up), peak MiB (parameters, gradients, inputs and
    activations, as our steps count it) and the profiled step's categories."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    c = QUICKSTART
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    layer = Layer(c["hidden"], c["ffn"], c["heads"], dropout=0.1, sdpa=sdpa).cuda().to(dtype)
    x = torch.rand(c["seq"], c["batch"], c["hidden"], device="cuda", dtype=dtype, requires_grad=True)
    dy = torch.rand(c["seq"], c["batch"], c["hidden"], device="cuda", dtype=dtype)
    model = torch.compile(layer) if compiled else layer
    backend_scope = (lambda: sdpa_kernel(getattr(SDPBackend, backend))) if backend else contextlib.nullcontext

    def train_step():  # gradients written, not accumulated: the same work as our steps
        x.grad = None
        for p in layer.parameters():
            p.grad = None
        with backend_scope():
            model(x).backward(dy)

    for _ in range(warmup + (3 if compiled else 0)):  # compiling takes the first call or two
        train_step()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        train_step()
    end.record()
    torch.cuda.synchronize()
    mean_ms = start.elapsed_time(end) / iters
    peak = torch.cuda.max_memory_allocated() / 2**20
    categories, span = profile_categories(train_step, c["seq"] * c["batch"], c["seq"])
    del model, layer, x, dy
    torch.cuda.empty_cache()
    return {"mean_ms": mean_ms, "peak_mib": peak, "profiled_step_ms": span, "categories": categories}


def main(args):
    if not args.no_check and not os.path.isdir(args.bin):
        sys.exit(f"--bin {args.bin}: no such folder (the step binaries; or --no-check)")
    ok = args.no_check or (check_steps(args, "fp16") & check_steps(args, "bf16"))
    if not args.no_time:
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
        results = {}
        for name, sdpa, backend, compiled in PEERS:
            try:
                r = time_peer(sdpa, backend, compiled, dtype)
            except Exception as e:  # e.g. no cuDNN attention in this PyTorch or on this GPU
                print(f"{name:22s} not timed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                results[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
                continue
            results[name] = r
            cats = ", ".join(f"{k} {v:.2f}" for k, v in r["categories"].items() if v > 0)
            print(f"{name:22s} quickstart {args.dtype} fwd+bwd: {r['mean_ms']:.2f} ms, peak {r['peak_mib']:.0f} MiB; "
                  f"profiled step {r['profiled_step_ms']:.2f} ms: {cats}")
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json + ".tmp", "w") as fh:  # written beside and renamed: whole or not at all
            json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "config": {**QUICKSTART, "dtype": args.dtype, "dropout": 0.1}, **results}, fh, indent=1)
        os.replace(args.json + ".tmp", args.json)
    print("PYTORCH COMPARISON", "PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(ARGS)
