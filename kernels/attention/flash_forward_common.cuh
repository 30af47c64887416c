// What the two Hopper attention forwards share - flash_forward_wgmma.cu (16-bit) and
// flash_forward_fp8.cu (E4M3) - written once: a consumer warpgroup's pipeline over the tiles of
// keys of one work tile, the heart of FlashAttention-3's overlap within a warpgroup. The kernels
// plug in what differs: their products (16-bit or FP8 wgmmas), their softmax (causal mask and
// dropout, or P times 2^8) and how P becomes the A operand (packed pairs, or E4M3 shuffled
// across lanes).
//
// All inline: the kernels' generated code is what it was when each spelled the pipeline out (the
// SASS of every kernel of both files was compared before and after: sm_80, 86, 89, 90a, CUDA
// 13.0). The last turn's hand-over is tested as `!last_consumer || more_after` here, from two
// flags, because a single flag computed by the caller changed the persistent kernels' SASS.
#ifndef KERNELS_ATTENTION_FLASH_FORWARD_COMMON_CUH
#define KERNELS_ATTENTION_FLASH_FORWARD_COMMON_CUH

#include <stdint.h>

#include <type_traits>

#include "kernels/attention/flash_common.cuh"
#include "kernels/attention/hopper_pipeline.cuh"
#include "kernels/attention/wgmma.cuh"

// One consumer warpgroup's work on the `tiles` (>= 1) tiles of keys of a work tile, from the
// scores of tile 0 to the output O = sum_t P_t V_t in o (not yet divided by the row sums), once Q
// has landed (the caller waited for it). Per tile t the thread holds S_t in s (floats, wgmma's
// accumulator layout), then the probabilities in s, then P_t as A operands in p.
//
// What overlaps with what. Tile 0 has only its scores to compute. Then, in each of this
// consumer's turns, it issues two groups of wgmmas back to back: the scores S_t = Q K_t^T and
// the output O += P_(t-1) V_(t-1) of the tile before; it hands the turn on at once, so that the
// next consumer's products queue right behind. wgmma_wait<1> waits for the first group alone
// (groups complete in order): S_t has landed, and the softmax of tile t runs on this
// warpgroup's ALUs while the tensor cores still work on P_(t-1) V_(t-1) (and on the other
// consumers' products). So the tensor cores need not wait for a softmax, nor the softmax for the
// tensor cores.
//
// Why o is rescaled only once P_(t-1) V_(t-1) has landed: that product accumulates into o, in
// registers the tensor cores own until wgmma_wait<0>; and alpha_t (the factor by which the new
// row maxima of tile t shrink everything summed so far) applies to that product as much as to
// the tiles before it, since P_(t-1) was taken against the old maxima. So: wait, then rescale.
//
// Why P's registers stay untouched meanwhile: the running product reads its A operand, P_(t-1),
// from this thread's registers while it runs. The softmax of t therefore leaves p alone, and
// P_t is packed into p only after wgmma_wait<0>; wgmma_settle(p) there tells the compiler that
// p is in use until that point, so that it neither moves the packing earlier nor gives those
// registers to anything else.
//
// The K/V ring: tile t's stage(t) and parity(t) (the kernel's running count over the CTA's
// work tiles); k_full / v_full[stage] complete when the producer's copies have landed, and this
// thread arrives on k_empty[stage] once its S_t has landed and on v_empty[stage] once P_t V_t
// has. bars: the kernel's barriers (any struct with those four arrays and q_empty).
// PERSISTENT: the CTA loops over work tiles; Q is released (q_empty) once this thread's last S
// has landed, so that the producer may load the next work tile's Q, and the last tile's V stage
// is released too (not persistent, no one waits for either again).
// Turns: my_turn() waits for this consumer's turn to issue, your_turn() hands it to the next.
// After its last turn of this work tile a consumer hands on too, except the last consumer
// (last_consumer) when the CTA has no work tiles after this one (more_after false): that takes
// the token out of the round robin (the kernels' comments on their turns say why; the dynamic
// schedule passes more_after true always, and takes it out itself).
// The kernel's steps: issue_scores(t) issues S_t into s and issue_output(t) O += P_t V_t from p
// and V_t, each as one committed group; softmax(t, alpha) turns S_t in s into probabilities,
// updating the row maxima and sums, and sets alpha to the factor for o; pack_probabilities(t)
// turns the probabilities in s into P_t in p.
// The last tile's products: issue_last_scores and issue_last_output, the same two objects as
// issue_scores and issue_output where every tile is alike. Where they differ (products over
// fewer keys, those past seq left out: flash_forward_wgmma.cu's LAST_N), the loop's last turn is
// written out after it, so that each stretch of code issues products of one shape: a branch
// between two shapes inside the loop made ptxas serialise every wgmma of the kernel (its C7511,
// "insufficient register resources for the wgmma pipeline").
template <bool PERSISTENT, typename Barriers, typename Stage, typename Parity, typename MyTurn, typename YourTurn,
          typename IssueScores, typename IssueOutput, typename IssueLastScores, typename IssueLastOutput,
          typename Softmax, typename PackProbabilities, int NS, int NO, int NP>
__device__ __forceinline__ void consume_key_tiles(Barriers &bars, const int tiles, const Stage &stage,
                                                  const Parity &parity, const MyTurn &my_turn,
                                                  const YourTurn &your_turn, const bool last_consumer,
                                                  const bool more_after,
                                                  const IssueScores &issue_scores, const IssueOutput &issue_output,
                                                  const IssueLastScores &issue_last_scores,
                                                  const IssueLastOutput &issue_last_output,
                                                  const Softmax &softmax, const PackProbabilities &pack_probabilities,
                                                  float (&s)[NS][4], float (&o)[NO][4], uint32_t (&p)[NP][4]) {
    constexpr bool LAST_ALIKE =
        std::is_same<IssueScores, IssueLastScores>::value && std::is_same<IssueOutput, IssueLastOutput>::value;
    // Q's use for this work tile is over once this thread's last S has landed.
    auto release_q = [&]() {
        if constexpr (PERSISTENT) mbarrier_arrive(&bars.q_empty);
    };

    // Tile 0: only its scores. (Also when it is the last tile: issue_last_scores is only ever
    // narrower, over keys the mask sets to -inf; a branch here between the two made ptxas
    // serialise the wgmmas too.)
    mbarrier_wait(&bars.k_full[stage(0)], parity(0));
    my_turn();
    issue_scores(0);
    your_turn();
    wgmma_wait<0>();
    wgmma_settle(s);
    mbarrier_arrive(&bars.k_empty[stage(0)]);
    if (tiles == 1) release_q();
    float alpha[2];
    softmax(0, alpha);  // o is still zero: nothing to rescale
    pack_probabilities(0);

    // Tile t: S_t and P_(t-1) V_(t-1) issued together; the softmax of t while the tensor cores
    // work on the product.
    auto turn = [&](const int t, const auto &issue_scores_of_t) {
        mbarrier_wait(&bars.k_full[stage(t)], parity(t));
        mbarrier_wait(&bars.v_full[stage(t - 1)], parity(t - 1));
        my_turn();
        issue_scores_of_t(t);
        issue_output(t - 1);
        your_turn();
        wgmma_wait<1>();  // the scores
        wgmma_settle(s);
        mbarrier_arrive(&bars.k_empty[stage(t)]);
        if (t == tiles - 1) release_q();
        softmax(t, alpha);
        wgmma_wait<0>();  // the output
        wgmma_settle(o);
        wgmma_settle(p);  // P_(t-1)'s registers stay untouched until its product has landed
        mbarrier_arrive(&bars.v_empty[stage(t - 1)]);
        rescale_output(o, alpha);
        pack_probabilities(t);
    };
    if constexpr (LAST_ALIKE) {
        for (int t = 1; t < tiles; t++) turn(t, issue_scores);
    } else {
        for (int t = 1; t < tiles - 1; t++) turn(t, issue_scores);
        if (tiles > 1) turn(tiles - 1, issue_last_scores);
    }

    // The last tile's output, issued alone.
    mbarrier_wait(&bars.v_full[stage(tiles - 1)], parity(tiles - 1));
    my_turn();
    issue_last_output(tiles - 1);
    if (!last_consumer || more_after) your_turn();
    wgmma_wait<0>();
    wgmma_settle(o);
    wgmma_settle(p);
    // The last tile's V stage: not persistent, no one waits for it again; persistent, the
    // producer refills it for a later work tile once every consumer has released it.
    if constexpr (PERSISTENT) mbarrier_arrive(&bars.v_empty[stage(tiles - 1)]);
}

#endif  // KERNELS_ATTENTION_FLASH_FORWARD_COMMON_CUH
