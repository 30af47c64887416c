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

// The rank's own rows [r T/tp, (r+1) T/tp), from its slice.
static void own_rows(Linear *l, SpGemm gemm, int tp, int r, const void *slice, void *y, int64_t tokens) {
    const int64_t rows = tokens / tp, n = gemm == SP_GEMM_FPROP ? l->out : l->in;
    gemm_rows(l, gemm, slice, (char *)y + (size_t)(r * rows * n) * dtype_bytes(l->dtype), rows);
}

// The other ranks' rows, from the gathered tensor: those before this rank's, then those after.
static void other_rows(Linear *l, SpGemm gemm, int tp, int r, const void *full, void *y, int64_t tokens) {
    const int64_t rows = tokens / tp;
    const int64_t k = gemm == SP_GEMM_FPROP ? l->in : l->out, n = gemm == SP_GEMM_FPROP ? l->out : l->in;
    const size_t e = dtype_bytes(l->dtype);
    const char *const fullc = full;
    char *const yc = y;
    gemm_rows(l, gemm, fullc, yc, r * rows);
    gemm_rows(l, gemm, fullc + (size_t)((r + 1) * rows * k) * e, yc + (size_t)((r + 1) * rows * n) * e,
              (tp - 1 - r) * rows);
}

static void require_divisible(const char *who, int tp, int64_t tokens) {
    if (tokens % tp != 0) DIE("%s: %d ranks do not divide %lld tokens", who, tp, (long long)tokens);
}

void sp_gathered_gemm(Linear *l, SpGemm gemm, LayerComm *lc, const void *slice, void *full, void *y, int64_t tokens) {
    const int tp = layer_comm_world(lc), r = layer_comm_rank(lc);
    require_divisible("sp_gathered_gemm", tp, tokens);
    const int64_t k = gemm == SP_GEMM_FPROP ? l->in : l->out;
    layer_all_gather_start(lc, slice, full, tokens / tp * k, l->dtype);
    own_rows(l, gemm, tp, r, slice, y, tokens);  // beside the all-gather
    layer_wait_gathered(lc);
    other_rows(l, gemm, tp, r, full, y, tokens);
    if (gemm == SP_GEMM_FPROP) l->saved_x = full;  // the blocks recorded their own rows; the wgrad reads all T
}

void sp_gemm_in_row_blocks(Linear *l, SpGemm gemm, LayerComm *lc, const void *slice, const void *full, void *y,
                           int64_t tokens) {
    const int tp = layer_comm_world(lc), r = layer_comm_rank(lc);
    require_divisible("sp_gemm_in_row_blocks", tp, tokens);
    own_rows(l, gemm, tp, r, slice, y, tokens);
    other_rows(l, gemm, tp, r, full, y, tokens);
    if (gemm == SP_GEMM_FPROP) l->saved_x = full;
}
