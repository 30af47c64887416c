// Step 04: the whole layer as one TransformerLayer module (modules/transformer_layer.c)
// with our own fused attention. What is new against step 03: attention never writes the
// [seq x seq] scores (flash attention, kernels/attention), and the projection's bias, dropout
// and residual add are one elementwise pass (kernels/fused).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/gpu/gpu.h"
#include "modules/transformer_layer.h"
#include "steps/04_transformer_layer/step04.h"

typedef struct {
    TransformerLayer layer;
    void *out, *dx;
} Step04;

// The MLP's weight-gradient GEMMs on a second stream (TransformerLayer's overlap_wgrad): on
// by default since it measured faster (README: "The MLP's weight gradients on a second
// stream"); --no-overlap-wgrad runs them in order on one stream. StepOps.parse_flag has no
// context, so the setting lives here.
static int overlap_wgrad = 1;

void step04_set_overlap_wgrad(int on) { overlap_wgrad = on != 0; }

static int parse_flag(const char *flag, const char *value) {
    if (value || strcmp(flag, "--no-overlap-wgrad") != 0) return 0;
    overlap_wgrad = 0;
    return 1;
}

static void *create(const LayerConfig *c, const LayerParams *p) {
    Step04 *s = xcalloc(1, sizeof *s);
    transformer_layer_init(&s->layer, c, p);
    static int told;  // once per process: create runs for the check, the timing and --save
    if (!told)
        fprintf(stderr, "note: step 04: the MLP's wgrad GEMMs on %s\n",
                overlap_wgrad ? "a second stream (--no-overlap-wgrad: one stream)" : "the default stream (--no-overlap-wgrad)");
    told = 1;
    if (overlap_wgrad) transformer_layer_set_overlap_wgrad(&s->layer, 1);
    size_t bytes = (size_t)layer_tokens(c) * c->hidden * dtype_bytes(c->dtype);
    s->out = dev_alloc(bytes);
    s->dx = dev_alloc(bytes);
    return s;
}

static void forward(void *state, const void *x, uint64_t step) {
    Step04 *s = state;
    transformer_layer_forward(&s->layer, x, s->out, step);
}

static void backward(void *state, const void *dout, uint64_t step) {
    Step04 *s = state;
    transformer_layer_backward(&s->layer, dout, s->dx, step);
}

static void train_step(void *state, const void *x, const void *dout, uint64_t step) {
    forward(state, x, step);
    backward(state, dout, step);
}

static const void *output(const void *state) { return ((const Step04 *)state)->out; }

static void load_params(void *state, const LayerParams *p) { transformer_layer_load_params(&((Step04 *)state)->layer, p); }

static void read_results(void *state, LayerResults *r) {
    Step04 *s = state;
    const LayerConfig *c = &s->layer.cfg;
    int64_t n = layer_tokens(c) * c->hidden;
    dev_download(r->out, s->out, n, c->dtype);
    dev_download(r->dx, s->dx, n, c->dtype);
    transformer_layer_read_grads(&s->layer, &r->grad);
}

static void destroy(void *state) {
    Step04 *s = state;
    transformer_layer_free(&s->layer);
    dev_free(s->out);
    dev_free(s->dx);
    free(s);
}

const StepOps STEP_04_TRANSFORMER_LAYER = {
    .id = "04_transformer_layer",
    .title = "TransformerLayer",
    .whats_new = "flash attention (no s x s scores), fused bias-dropout-add",
    .unsupported = transformer_layer_unsupported,
    .create = create,
    .train_step = train_step,
    .read_results = read_results,
    .destroy = destroy,
    .forward = forward,
    .backward = backward,
    .output = output,
    .load_params = load_params,
    .parse_flag = parse_flag,
    .flags_help =
        "  --no-overlap-wgrad   run the MLP's two weight-gradient GEMMs (dW2/db2, dW1/db1) in order on\n"
        "                       the default stream. By default they run on a second stream (its own\n"
        "                       cuBLASLt workspace), beside FC1's dgrad, LN2's, the projection's and\n"
        "                       attention's backward; both give the same bits, also with\n"
        "                       --deterministic (the same GEMM algorithms, only the stream differs)\n",
};
