// Sequence parallelism's all-gather overlapped with the GEMM on the rank's own rows: see sp_gather.h.
#include "steps/07_tensor_parallel/sp_gather.h"

#include "common/core/errors.h"
#include "common/gpu/gpu.h"

// The GEMM on `rows` rows: x [rows, k] -> y [rows, n].
static void gemm_rows(Linear *l, SpGemm gemm, const void *x, void *y, int64_t rows) {
    if (rows == 0) return;
    if (gemm == SP_GEMM_FPROP) linear_forward(l, x, y, rows, NULL);
    else linear_dgrad(l, x, y, rows);
}

void sp_gathered_gemm(Linear *l, SpGemm gemm, LayerComm *lc, const void *slice, void *full, void *y, int64_t tokens) {
    const int tp = layer_comm_world(lc), r = layer_comm_rank(lc);
    if (tokens % tp != 0) DIE("sp_gathered_gemm: %d ranks do not divide %lld tokens", tp, (long long)tokens);
    const int64_t rows = tokens / tp;
    const int64_t k = gemm == SP_GEMM_FPROP ? l->in : l->out, n = gemm == SP_GEMM_FPROP ? l->out : l->in;
    const size_t e = dtype_bytes(l->dtype);
    char *const fullc = full, *const yc = y;
    layer_all_gather_start(lc, slice, full, rows * k, l->dtype);
    gemm_rows(l, gemm, slice, yc + (size_t)(r * rows * n) * e, rows);  // own rows, beside the all-gather
    layer_wait_gathered(lc);
    gemm_rows(l, gemm, fullc, yc, r * rows);  // the ranks before this one
    gemm_rows(l, gemm, fullc + (size_t)((r + 1) * rows * k) * e, yc + (size_t)((r + 1) * rows * n) * e,
              (tp - 1 - r) * rows);  // and after
    if (gemm == SP_GEMM_FPROP) l->saved_x = full;  // the blocks recorded their own rows; the wgrad reads all T
}
