#include "modules/linear.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/gpu/gpu.h"
#include "common/gpu/gpu_phase.h"
#include "kernels/fused/bias_epilogue.h"
#include "modules/gemm.h"

// ---- where each epilogue runs (linear.h) --------------------------------------------------------
static const char *const kind_variables[EPILOGUE_KINDS] = {"EPILOGUE_BIAS", "EPILOGUE_GELU", "EPILOGUE_DGELU",
                                                           "EPILOGUE_BGRAD"};
static int place_set[EPILOGUE_KINDS] = {-1, -1, -1, -1};  // linear_set_epilogue_place's; -1: none
static int place_from_env[EPILOGUE_KINDS] = {-1, -1, -1, -1};  // read once; -1: not yet

const char *epilogue_kind_variable(EpilogueKind kind) {
    if ((unsigned)kind >= EPILOGUE_KINDS) DIE("epilogue kind %d out of range", (int)kind);
    return kind_variables[kind];
}

const char *epilogue_place_name(EpiloguePlace place) { return place == EPILOGUE_IN_KERNEL ? "kernel" : "gemm"; }

// The environment's value for `kind`; any value but gemm, kernel or none stops the program.
static EpiloguePlace place_in_env(EpilogueKind kind) {
    const char *v = getenv(kind_variables[kind]);
    if (!v || !*v || !strcmp(v, "gemm")) return EPILOGUE_IN_GEMM;
    if (!strcmp(v, "kernel")) return EPILOGUE_IN_KERNEL;
    fail_user("%s=%s: expected gemm (the epilogue in the GEMM) or kernel (a kernel of its own after it)",
              kind_variables[kind], v);
}

static int read_place_from_env(EpilogueKind kind) {
    const EpiloguePlace place = place_in_env(kind);
    if (place == EPILOGUE_IN_KERNEL)  // said once, so that a timed run shows which way it ran
        fprintf(stderr, "note: %s=kernel: that epilogue's work runs in a kernel of its own after a plain GEMM\n",
                kind_variables[kind]);
    return place;
}

void linear_require_valid_switches(void) {
    for (int kind = 0; kind < EPILOGUE_KINDS; kind++) place_in_env((EpilogueKind)kind);
    gemm_require_valid_switches();  // the GEMMs under every Linear
}

EpiloguePlace linear_epilogue_place(EpilogueKind kind) {
    if ((unsigned)kind >= EPILOGUE_KINDS) DIE("epilogue kind %d out of range", (int)kind);
    if (place_set[kind] >= 0) return (EpiloguePlace)place_set[kind];
    if (place_from_env[kind] < 0) place_from_env[kind] = read_place_from_env(kind);
    return (EpiloguePlace)place_from_env[kind];
}

void linear_set_epilogue_place(EpilogueKind kind, int place) {
    if ((unsigned)kind >= EPILOGUE_KINDS) DIE("epilogue kind %d out of range", (int)kind);
    if (place > EPILOGUE_IN_KERNEL) DIE("epilogue place %d: expected -1, EPILOGUE_IN_GEMM or EPILOGUE_IN_KERNEL", place);
    place_set[kind] = place < 0 ? -1 : place;
}

static int in_kernel(EpilogueKind kind) { return linear_epilogue_place(kind) == EPILOGUE_IN_KERNEL; }

void linear_init(Linear *l, int in, int out, const float *weight, const float *bias, DType dtype) {
    l->in = in;
    l->out = out;
    l->dtype = dtype;
    l->weight = dev_upload(weight, (int64_t)in * out, dtype);
    l->dweight = dev_alloc((size_t)in * out * dtype_bytes(dtype));
    l->bias = bias ? dev_upload(bias, out, dtype) : NULL;
    l->dbias = bias ? dev_alloc((size_t)out * dtype_bytes(dtype)) : NULL;
    // Only where the bias gradient runs in its own kernel (EPILOGUE_BGRAD=kernel, as set now):
    // the GEMM's BGRADB epilogue needs none.
    l->dbias_workspace = bias && in_kernel(EPILOGUE_KIND_BGRAD) ? dev_alloc(bias_grad_workspace_bytes(out)) : NULL;
    l->saved_x = NULL;
}

void linear_free(Linear *l) {
    dev_free(l->weight);
    dev_free(l->dweight);
    dev_free(l->bias);
    dev_free(l->dbias);
    dev_free(l->dbias_workspace);
}

// Row-major Y [T, out] = X [T, in] W^T is column-major Y^T [out x T] = W^T... in cuBLASLt's
// terms: A = W stored column-major as [in x out] (so op(A) = A^T is out x in), B = X stored
// as [in x T]; D = [out x T] with leading dimension out. The epilogue's bias runs along D's
// rows, i.e. along `out`: exactly a Linear's bias. Every forward goes through here, and
// records x for the wgrad.
static void fprop(Linear *l, const void *x, void *y, int64_t tokens, GemmEpilogue epilogue, void *aux,
                  const void *residual) {
    Gemm g = {.trans_a = 1, .trans_b = 0, .m = l->out, .n = tokens, .k = l->in,
              .a = l->weight, .lda = l->in, .b = x, .ldb = l->in, .c = residual, .d = y,
              .ldd = l->out, .epilogue = epilogue, .bias = epilogue == GEMM_EPILOGUE_NONE ? NULL : l->bias,
              .aux = aux, .aux_ld = l->out, .dtype = l->dtype};
    GPU_PHASE(CAT_GEMM_FPROP, gemm_run(&g));
    l->saved_x = x;
}

void linear_forward(Linear *l, const void *x, void *y, int64_t tokens, const void *residual) {
    if (l->bias && in_kernel(EPILOGUE_KIND_BIAS)) {  // y = x W^T (+ residual), then y += b
        fprop(l, x, y, tokens, GEMM_EPILOGUE_NONE, NULL, residual);
        bias_add_rows(y, l->bias, tokens, l->out, l->dtype);
        return;
    }
    fprop(l, x, y, tokens, l->bias ? GEMM_EPILOGUE_BIAS : GEMM_EPILOGUE_NONE, NULL, residual);
}

const void *linear_forward_return_bias(Linear *l, const void *x, void *y, int64_t tokens) {
    fprop(l, x, y, tokens, GEMM_EPILOGUE_NONE, NULL, NULL);
    return l->bias;
}

void linear_forward_gelu(Linear *l, const void *x, void *y, void *pre_gelu, int64_t tokens) {
    if (!l->bias) DIE("linear_forward_gelu: the epilogue adds a bias, and this Linear has none");
    if (in_kernel(EPILOGUE_KIND_GELU)) {  // pre_gelu = x W^T, then pre_gelu += b, y = GELU(pre_gelu)
        fprop(l, x, pre_gelu, tokens, GEMM_EPILOGUE_NONE, NULL, NULL);
        bias_gelu_forward(pre_gelu, l->bias, y, tokens, l->out, l->dtype);
        return;
    }
    fprop(l, x, y, tokens, GEMM_EPILOGUE_GELU_AUX_BIAS, pre_gelu, NULL);
}

// Row-major dX [T, in] = dY [T, out] W [out, in]: column-major dX^T [in x T] = A B with
// A = W stored as [in x out] (no transpose) and B = dY stored as [out x T].
void linear_dgrad_epilogue(const Linear *l, const void *dy, void *dx, int64_t tokens, GemmEpilogue epilogue,
                           void *bias_grad, void *aux) {
    Gemm g = {.trans_a = 0, .trans_b = 0, .m = l->in, .n = tokens, .k = l->out,
              .a = l->weight, .lda = l->in, .b = dy, .ldb = l->out, .d = dx, .ldd = l->in,
              .epilogue = epilogue, .bias = bias_grad, .aux = aux, .aux_ld = l->in, .dtype = l->dtype};
    GPU_PHASE(CAT_GEMM_DGRAD, gemm_run(&g));
}

void linear_dgrad(const Linear *l, const void *dy, void *dx, int64_t tokens) {
    linear_dgrad_epilogue(l, dy, dx, tokens, GEMM_EPILOGUE_NONE, NULL, NULL);
}

// Row-major dW [out, in] = dY^T X: column-major dW^T [in x out] = A B^T with A = X stored as
// [in x T] and B = dY stored as [out x T]. BGRADB sums B over the k dimension (tokens): the
// bias gradient, without a pass of its own (or, EPILOGUE_BGRAD=kernel, in one after the GEMM).
void linear_wgrad(const Linear *l, const void *dy, int64_t tokens, int bias_grad) {
    linear_wgrad_on(l, dy, tokens, bias_grad, NULL);
}

void linear_wgrad_on(const Linear *l, const void *dy, int64_t tokens, int bias_grad, const GemmStream *where) {
    if (!l->saved_x) DIE("linear_wgrad before a forward of this Linear");
    const int sum_db = bias_grad && l->bias;
    const int db_in_kernel = sum_db && in_kernel(EPILOGUE_KIND_BGRAD);
    Gemm g = {.trans_a = 0, .trans_b = 1, .m = l->in, .n = l->out, .k = tokens,
              .a = l->saved_x, .lda = l->in, .b = dy, .ldb = l->out, .d = l->dweight, .ldd = l->in,
              .epilogue = sum_db && !db_in_kernel ? GEMM_EPILOGUE_BGRADB : GEMM_EPILOGUE_NONE,
              .bias = sum_db && !db_in_kernel ? l->dbias : NULL, .dtype = l->dtype};
    GPU_PHASE(CAT_GEMM_WGRAD, gemm_run_on(&g, where));
    if (db_in_kernel && !l->dbias_workspace)
        DIE("linear_wgrad: EPILOGUE_BGRAD=kernel was set after this Linear was created (it has no workspace "
            "for the bias gradient's kernel): set it before");
    if (db_in_kernel)
        bias_grad_columns_on(dy, tokens, l->out, l->dbias, l->dbias_workspace, l->dtype, where ? where->stream : NULL);
}

void linear_set_saved_input(Linear *l, const void *x) { l->saved_x = x; }

void linear_backward(Linear *l, const void *dy, void *dx, int64_t tokens) {
    if (dx) linear_dgrad(l, dy, dx, tokens);
    linear_wgrad(l, dy, tokens, 1);
}

void linear_load_params(Linear *l, const float *weight, const float *bias) {
    dev_upload_to(l->weight, weight, (int64_t)l->in * l->out, l->dtype);
    if (l->bias && bias) dev_upload_to(l->bias, bias, l->out, l->dtype);
}

void linear_read_grads(const Linear *l, float *dweight, float *dbias) {
    dev_download(dweight, l->dweight, (int64_t)l->in * l->out, l->dtype);
    if (l->bias && dbias) dev_download(dbias, l->dbias, l->out, l->dtype);
}
