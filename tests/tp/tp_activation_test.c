// What step 07's layer keeps for backward per rank (tp_kept_activation_bytes,
// steps/07_tensor_parallel/tp_schedule.h), on the CPU: the chapter's table in units of
// U = s b h bytes, with and without --recompute-gelu and --recompute-layernorm, and the issue's
// goal at the quickstart size - sequence parallelism with GELU (and the LayerNorm outputs)
// recomputed against plain TP at tp 2. (The GPU modules
// count their allocations; tp_modules_test checks that they agree with this function.)
#include <stdint.h>
#include <stdio.h>

#include "common/core/layer.h"
#include "reference/tp_layer_reference.h"
#include "steps/07_tensor_parallel/tp_schedule.h"
#include "tests/test_util.h"

static const TpSchedule KEPT = {SP_REGATHER, 1, 0, 0}, RECOMPUTED = {SP_REGATHER, 1, 1, 0};
static const TpSchedule KEEP_GATHERED = {SP_KEEP_GATHERED, 1, 0, 0};
// --recompute-gelu --recompute-layernorm
static const TpSchedule BOTH_RECOMPUTED = {SP_REGATHER, 1, 1, 1};

static double mib(size_t bytes) { return (double)bytes / 1048576.0; }

// The small fp32 tensors: LayerNorm statistics (mean, rstd per token of the rank: two
// LayerNorms in the serial layer, one in the parallel) and attention's lse (per query of the
// rank's heads: split by tp, never by sequence parallelism).
static int64_t lse_bytes(const LayerConfig *c, int tp) { return (int64_t)c->batch * (c->heads / tp) * c->seq * 4; }
static int64_t stats_bytes(const LayerConfig *c, int tp, const TpVariant *v) {
    const int64_t Tl = layer_tokens(c) / (v->sequence_parallel ? tp : 1);
    return (v->layer == TP_LAYER_SERIAL ? 2 : 1) * 2 * Tl * 4;
}

// The chapter's formulas, in units of U = s b h bytes (16-bit values), times 2t to stay in
// integers: serial 8 + 24/t plain, 32/t sequence-parallel; parallel 4 + 24/t, 28/t; GELU's
// output is 8/t of them (2 bytes x ffn/t = 4h/t per token); each LayerNorm's output (two in
// the serial layer, one in the parallel) 2 plain, 2/t sequence-parallel.
static int64_t formula_2t(TpLayerKind layer, int sp, int recompute_gelu, int recompute_ln, int t) {
    const int64_t replicated = layer == TP_LAYER_SERIAL ? 8 : 4, split = 24;
    const int64_t layernorms = layer == TP_LAYER_SERIAL ? 2 : 1;
    int64_t u2t = sp ? 2 * (replicated + split) : 2 * (replicated * t + split);  // (2t) x units
    if (recompute_gelu) u2t -= 2 * 8;
    if (recompute_ln) u2t -= layernorms * (sp ? 2 * 2 : 2 * 2 * t);
    return u2t;
}

static void test_table_at_every_tp(void **state) {
    (void)state;
    LayerConfig c = layer_config_quickstart();
    const int64_t U = (int64_t)c.seq * c.batch * c.hidden;
    for (int t = 1; t <= 8; t *= 2)
        for (int layer = TP_LAYER_SERIAL; layer <= TP_LAYER_PARALLEL; layer++)
            for (int sp = 0; sp <= 1; sp++)
                for (int rc = 0; rc <= 1; rc++)
                    for (int rl = 0; rl <= 1; rl++) {
                        const TpVariant v = {(TpLayerKind)layer, sp, 0, 0, 0};
                        const TpSchedule sched = {SP_REGATHER, 1, rc, rl};
                        const size_t got = tp_kept_activation_bytes(&c, t, &v, &sched);
                        const int64_t want = formula_2t((TpLayerKind)layer, sp, rc, rl, t) * U / (2 * t) +
                                             stats_bytes(&c, t, &v) + lse_bytes(&c, t);
                        assert_int_equal((int64_t)got, want);
                    }
    // --keep-gathered keeps each LayerNorm's gathered output as well: 2U each.
    const TpVariant sp = {TP_LAYER_SERIAL, 1, 0, 0, 0}, psp = {TP_LAYER_PARALLEL, 1, 0, 0, 0};
    assert_int_equal(tp_kept_activation_bytes(&c, 2, &sp, &KEEP_GATHERED) - tp_kept_activation_bytes(&c, 2, &sp, &KEPT),
                     2 * 2 * U);
    assert_int_equal(tp_kept_activation_bytes(&c, 2, &psp, &KEEP_GATHERED) -
                         tp_kept_activation_bytes(&c, 2, &psp, &KEPT), 2 * U);
    // NULL is the default schedule.
    assert_int_equal(tp_kept_activation_bytes(&c, 2, &sp, NULL), tp_kept_activation_bytes(&c, 2, &sp, &KEPT));
}

// The goal at the quickstart size (s 2048, b 4, h 4096, ffn 16384, 32 heads, tp 2):
// sequence parallelism with GELU recomputed keeps 12 U against plain TP's 20 U: 60.0% of the
// 16-bit tensors exactly. Counted with the fp32 ones it lands a hair above: attention's lse
// (512 KiB per rank) is the same in both (split by heads, not by the sequence), and a constant
// added to both sides of 0.6 pulls the ratio toward 1; the LayerNorm statistics (halved by
// sequence parallelism) pull the other way, by less. Printed, and pinned here, not hidden.
static void test_sequence_parallel_with_recomputation_at_tp_2(void **state) {
    (void)state;
    LayerConfig c = layer_config_quickstart();
    const TpVariant plain = {TP_LAYER_SERIAL, 0, 0, 0, 0}, sp = {TP_LAYER_SERIAL, 1, 0, 0, 0};
    const double p = mib(tp_kept_activation_bytes(&c, 2, &plain, &KEPT));
    const double p_rc = mib(tp_kept_activation_bytes(&c, 2, &plain, &RECOMPUTED));
    const double s = mib(tp_kept_activation_bytes(&c, 2, &sp, &KEPT));
    const double s_rc = mib(tp_kept_activation_bytes(&c, 2, &sp, &RECOMPUTED));
    const double lse = mib((size_t)lse_bytes(&c, 2));
    print_message("serial layer, quickstart, tp 2, MiB per rank: plain %.4f, plain + recompute %.4f, SP %.4f, "
                  "SP + recompute %.4f\n", p, p_rc, s, s_rc);
    print_message("SP / plain %.5f; SP + recompute / plain %.5f (without lse %.5f); SP + recompute / plain + "
                  "recompute %.5f\n", s / p, s_rc / p, (s_rc - lse) / (p - lse), s_rc / p_rc);
    assert_true(p == 640.625 && p_rc == 512.625 && s == 512.5625 && s_rc == 384.5625);  // exact in binary
    assert_true(s_rc / p > 0.60 && s_rc / p < 0.6003);  // 0.60029: the lse, as above
    assert_true((s_rc - lse) / (p - lse) <= 0.60);      // the rest: 0.59998
    assert_true(s_rc / p_rc > 0.75 && s_rc / p_rc < 0.7503);
    // The parallel layer: 10 U against 16 U (62.5%), against 12 U with recomputation on both.
    const TpVariant par = {TP_LAYER_PARALLEL, 0, 0, 0, 0}, par_sp = {TP_LAYER_PARALLEL, 1, 0, 0, 0};
    const double q = mib(tp_kept_activation_bytes(&c, 2, &par, &KEPT));
    const double q_rc = mib(tp_kept_activation_bytes(&c, 2, &par, &RECOMPUTED));
    const double r_rc = mib(tp_kept_activation_bytes(&c, 2, &par_sp, &RECOMPUTED));
    print_message("parallel layer: plain %.4f, plain + recompute %.4f, SP + recompute %.4f MiB: %.5f of plain, "
                  "%.5f of plain + recompute\n", q, q_rc, r_rc, r_rc / q, r_rc / q_rc);
    assert_true(q == 512.5625 && q_rc == 384.5625 && r_rc == 320.53125);
}

// --recompute-layernorm on top: no LayerNorm output kept (their statistics are, 2 x 4 bytes per
// token of the rank). Serial layer at tp 2: SP keeps 10 U against plain TP's 20 U - 50.0% of
// the 16-bit tensors, 0.50039 with the fp32 ones (the lse again). Plain TP with both
// recomputations keeps 12 U. The parallel layer: 9 U against 16 U.
static void test_layernorm_outputs_recomputed_at_tp_2(void **state) {
    (void)state;
    LayerConfig c = layer_config_quickstart();
    const TpVariant plain = {TP_LAYER_SERIAL, 0, 0, 0, 0}, sp = {TP_LAYER_SERIAL, 1, 0, 0, 0};
    const double p = mib(tp_kept_activation_bytes(&c, 2, &plain, &KEPT));
    const double p_both = mib(tp_kept_activation_bytes(&c, 2, &plain, &BOTH_RECOMPUTED));
    const double s_both = mib(tp_kept_activation_bytes(&c, 2, &sp, &BOTH_RECOMPUTED));
    const double lse = mib((size_t)lse_bytes(&c, 2));
    print_message("serial layer, quickstart, tp 2, GELU and LayerNorm outputs recomputed, MiB per rank: plain %.4f, "
                  "SP %.4f: %.5f of plain (without lse %.5f), %.5f of plain with the same recomputation\n", p_both,
                  s_both, s_both / p, (s_both - lse) / (p - lse), s_both / p_both);
    assert_true(p_both == 384.625 && s_both == 320.5625);  // exact in binary
    assert_true(s_both / p > 0.50 && s_both / p < 0.5004);  // 0.50039: the lse
    assert_true((s_both - lse) / (p - lse) <= 0.50);
    assert_true(s_both / p_both > 0.8334 && s_both / p_both < 0.8335);
    const TpVariant par = {TP_LAYER_PARALLEL, 0, 0, 0, 0}, par_sp = {TP_LAYER_PARALLEL, 1, 0, 0, 0};
    const double q = mib(tp_kept_activation_bytes(&c, 2, &par, &KEPT));
    const double r_both = mib(tp_kept_activation_bytes(&c, 2, &par_sp, &BOTH_RECOMPUTED));
    print_message("parallel layer: SP with both recomputations %.4f MiB: %.5f of plain\n", r_both, r_both / q);
    assert_true(r_both == 288.53125);
    // LayerNorm recomputation alone (GELU's output kept) takes each LayerNorm's output: 2 U per
    // LayerNorm plain, 1 U under SP at tp 2.
    const TpSchedule ln_only = {SP_REGATHER, 1, 0, 1};
    assert_true(mib(tp_kept_activation_bytes(&c, 2, &plain, &ln_only)) == p - 2 * 64.0);
    assert_true(mib(tp_kept_activation_bytes(&c, 2, &sp, &ln_only)) == mib(tp_kept_activation_bytes(&c, 2, &sp, &KEPT)) - 2 * 32.0);
    // And --keep-gathered with it is refused (it would keep what this recomputes).
    const TpSchedule clash = {SP_KEEP_GATHERED, 1, 0, 1};
    assert_non_null(tp_schedule_problem(&clash));
    assert_null(tp_schedule_problem(&BOTH_RECOMPUTED));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_at_every_tp),
        cmocka_unit_test(test_sequence_parallel_with_recomputation_at_tp_2),
        cmocka_unit_test(test_layernorm_outputs_recomputed_at_tp_2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
