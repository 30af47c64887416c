#!/usr/bin/env python3
"""PyTorch's kernels sorted into the time breakdown's categories (common/core/breakdown.h).

tools/pytorch_compare.py profiles one training step of each PyTorch peer with torch.profiler
and hands every kernel here with what the profiler knows of it: the kernel's name, the names
of the CPU ops around its launch (innermost first: the op that launched it, its callers, and in
backward the autograd node, "autograd::engine::evaluate_function: MmBackward0"), whether it ran
in backward, and the input shapes of the op that launched it. The rules, first match wins:

  1. attention: the forward inside our record_function("attention") range; or an op or kernel
     named for attention (scaled_dot_product, flash, fmha, cudnn's sdpa, softmax, bmm - the
     Linears never use bmm); or an op that reads a [..., seq, seq] tensor (the eager layer's
     scores, probabilities and their dropout);
  2. LayerNorm: "layer_norm" in an op's or the kernel's name (Inductor names its fused kernels
     after the ops they fuse, e.g. triton_per_fused_add_native_layer_norm_3);
  3. GEMM: an mm/addmm/matmul/linear op, or a GEMM kernel (gemm, nvjet, xmma, cutlass): fprop
     in forward; in backward a weight gradient when the product sums over the tokens (its inner
     dimension is seq * batch), else an input gradient;
  4. everything else is elementwise (GELU, dropout, residual adds, bias gradients' sums, the
     copies of permutes).
This is only as good as the names: where Inductor fuses a LayerNorm with a residual add, the
add counts as LayerNorm; where it fuses GELU into a GEMM's epilogue, GELU counts as GEMM.

  python3 tools/torch_categories.py     runs the rules' self-test (no PyTorch needed)
"""

ATTENTION_WORDS = ("scaled_dot_product", "flash", "fmha", "sdpa", "attention", "softmax", "bmm")
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::matmul", "aten::linear", "aten::_scaled_mm")
GEMM_KERNEL_WORDS = ("gemm", "nvjet", "xmma", "cutlass", "cublas")


def _reads_scores(shapes, seq):
    return any(isinstance(s, (list, tuple)) and len(s) >= 2 and s[-1] == seq and s[-2] == seq for s in shapes or [])


def _inner_dimension(op_name, shapes):
    """The summed-over dimension of mm(a [M, K], b [K, N]) or addmm(c, a, b); None if unknown."""
    try:
        if op_name == "aten::mm":
            return shapes[0][-1]
        if op_name == "aten::addmm":
            return shapes[1][-1]
    except (IndexError, TypeError):
        pass
    return None


def classify(kernel, ops, backward, shapes, tokens, seq):
    """The category key (as in the JSON: gemm_fprop, attention_bwd, ...) of one kernel.

    kernel: its name; ops: names of the CPU ops around its launch, innermost first;
    backward: it ran in the backward pass; shapes: input shapes of the innermost op (may be
    empty); tokens: seq * batch; seq: the sequence length.
    """
    k = kernel.lower()
    names = [o.lower() for o in ops]
    joined = " ".join(names)
    if not backward and "attention" in names:
        return "attention_fwd"
    if any(w in k or w in joined for w in ATTENTION_WORDS) or _reads_scores(shapes, seq):
        return "attention_bwd" if backward else "attention_fwd"
    if "layer_norm" in k or "layernorm" in k or "layer_norm" in joined:
        return "layernorm"
    gemm_op = next((o for o in ops if o in GEMM_OPS), None)
    if gemm_op or any(w in k for w in GEMM_KERNEL_WORDS):
        if not backward:
            return "gemm_fprop"
        inner = _inner_dimension(ops[0], shapes) if ops else None
        return "gemm_wgrad" if inner == tokens else "gemm_dgrad"
    return "elementwise"


def _self_test():
    t, s = 8192, 2048
    cases = [
        # the eager quickstart layer
        (("ampere_fp16_s16816gemm_fp16_256x128", ["aten::addmm", "aten::linear"], False, [[12288], [8192, 4096], [4096, 12288]]), "gemm_fprop"),
        (("nvjet_hsh_256x128", ["aten::mm", "AddmmBackward0", "autograd::engine::evaluate_function: AddmmBackward0"], True, [[8192, 12288], [12288, 4096]]), "gemm_dgrad"),
        (("nvjet_hsh_256x128", ["aten::mm", "AddmmBackward0", "autograd::engine::evaluate_function: AddmmBackward0"], True, [[12288, 8192], [8192, 4096]]), "gemm_wgrad"),
        (("reduce_kernel", ["aten::sum", "AddmmBackward0"], True, [[8192, 12288]]), "elementwise"),
        (("sm90_xmma_gemm_f16f16_f32", ["aten::bmm", "attention"], False, [[128, 2048, 128], [128, 128, 2048]]), "attention_fwd"),
        (("softmax_warp_forward", ["aten::_softmax", "aten::softmax", "attention"], False, [[4, 32, 2048, 2048]]), "attention_fwd"),
        (("fused_dropout_kernel", ["aten::native_dropout"], False, [[4, 32, 2048, 2048]]), "attention_fwd"),
        (("fused_dropout_kernel", ["aten::native_dropout"], False, [[2048, 4, 4096]]), "elementwise"),
        (("masked_scale_kernel", ["aten::_masked_scale", "NativeDropoutBackward0"], True, [[4, 32, 2048, 2048], [4, 32, 2048, 2048]]), "attention_bwd"),
        (("masked_scale_kernel", ["aten::_masked_scale", "NativeDropoutBackward0"], True, [[2048, 4, 4096]]), "elementwise"),
        (("cunn_SoftMaxBackward", ["aten::_softmax_backward_data", "SoftmaxBackward0"], True, []), "attention_bwd"),
        (("sm90_xmma_gemm", ["aten::bmm", "BmmBackward0"], True, [[128, 2048, 2048], [128, 2048, 128]]), "attention_bwd"),
        (("vectorized_layer_norm_kernel", ["aten::native_layer_norm", "aten::layer_norm"], False, [[2048, 4, 4096]]), "layernorm"),
        (("layer_norm_grad_input_kernel", ["aten::native_layer_norm_backward", "NativeLayerNormBackward0"], True, []), "layernorm"),
        (("vectorized_elementwise_kernel", ["aten::gelu"], False, [[2048, 4, 16384]]), "elementwise"),
        (("vectorized_elementwise_kernel", ["aten::add"], False, [[2048, 4, 4096], [2048, 4, 4096]]), "elementwise"),
        # SDPA, cuDNN and Inductor
        (("flash_fwd_kernel", ["aten::_flash_attention_forward", "aten::_scaled_dot_product_flash_attention"], False, []), "attention_fwd"),
        (("flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel", ["aten::_flash_attention_backward"], True, []), "attention_bwd"),
        (("cudnn_generated_fort_native_sdpa_sm90_flash_fprop", ["aten::_scaled_dot_product_cudnn_attention"], False, []), "attention_fwd"),
        (("triton_per_fused_add_native_dropout_native_layer_norm_3", ["CompiledFunction"], False, []), "layernorm"),
        (("triton_poi_fused_gelu_5", ["CompiledFunction"], False, []), "elementwise"),
        (("nvjet_hsh_128x256", ["aten::mm", "CompiledFunctionBackward"], True, [[16384, 8192], [8192, 4096]]), "gemm_wgrad"),
    ]
    failed = 0
    for (kernel, ops, backward, shapes), want in cases:
        got = classify(kernel, ops, backward, shapes, t, s)
        if got != want:
            failed += 1
            print(f"FAIL {kernel} {ops[0]} backward={backward}: {got}, expected {want}")
    print(f"{len(cases) - failed} passed, {failed} failed")
    return failed == 0


if __name__ == "__main__":
    import sys
    if sys.argv[1:] in (["-h"], ["--help"]):
        print("usage: python3 tools/torch_categories.py   run the rules' self-test (a module of pytorch_compare.py)")
        raise SystemExit(0)
    if sys.argv[1:]:
        raise SystemExit("usage: python3 tools/torch_categories.py   (it takes no arguments)")
    raise SystemExit(0 if _self_test() else 1)
