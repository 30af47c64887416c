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
3. Times the PyTorch layer at the quickstart config, eager and with
   scaled_dot_product_attention, fwd+bwd, and writes the times as JSON for the comparison
   table (steps/compare/compare --pytorch FILE).
"""
import argparse
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
        q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))  # [b, heads, s, d]
        if self.sdpa:
            ctx = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d)
            probs = F.dropout(torch.softmax(scores.float(), dim=-1).to(q.dtype), self.dropout, self.training)
            ctx = torch.matmul(probs, v)
        s, b = ctx.shape[2], ctx.shape[0]
        return ctx.permute(2, 0, 1, 3).reshape(s, b, -1)

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


def time_pytorch(sdpa, dtype=torch.float16, warmup=3, iters=10):
    h, f, heads, s, b = 4096, 16384, 32, 2048, 4
    layer = Layer(h, f, heads, dropout=0.1, sdpa=sdpa).cuda().to(dtype)
    x = torch.rand(s, b, h, device="cuda", dtype=dtype, requires_grad=True)
    dy = torch.rand(s, b, h, device="cuda", dtype=dtype)
    for _ in range(warmup):
        layer(x).backward(dy)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        layer(x).backward(dy)
    end.record()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20
    del layer, x, dy
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return start.elapsed_time(end) / iters, peak


def main(args):
    ok = check_steps(args, "fp16") & check_steps(args, "bf16")
    if not args.no_time:
        results = {}
        for name, sdpa in (("PyTorch eager", False), ("PyTorch SDPA", True)):
            ms, peak = time_pytorch(sdpa)
            results[name] = {"mean_ms": ms, "peak_mib": peak}
            print(f"{name:16s} quickstart fp16 fwd+bwd: {ms:.2f} ms, peak {peak:.0f} MiB")
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, **results}, fh, indent=1)
    print("PYTORCH COMPARISON", "PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(ARGS)
