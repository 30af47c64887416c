// The attention dropout mask drawn ahead, for the wgmma kernels to load instead of running
// Philox among their softmax (ATTENTION_DROPOUT_MASK=memory, attention.h). Inside the forward
// the generator shares the ALU pipes with the softmax, which already limit that kernel, and
// the backward draws the same mask once more; here it runs on its own, at full occupancy.
//
// One thread per (head, query row i, 128-key tile t, c): two row_dropout calls (key blocks 2t
// and 2t + 1) with exactly the arguments a wgmma kernel's thread with lane % 4 == c gives them
// - dropout_row_group takes c from threadIdx.x % 4, and every block's first thread is a
// multiple of 4 - and one 32-bit word stored (DropoutMaskLayout, flash_common.cuh). A warp
// stores 128 contiguous bytes. Philox is ALU work: about 60 instructions per call, b h s^2 / 16
// calls (33.5 M at b 4, heads 32, s 2048; half when causal).
#include "common/gpu/cuda_check.h"
#include "kernels/attention/flash_common.cuh"
#include "kernels/attention/flash_kernels.cuh"
#include "kernels/device_utils.cuh"

namespace {

constexpr int MASK_THREADS = 256;  // a multiple of 4: threadIdx.x % 4 is the word's c

// Block (x, bh) draws words [256 x, 256 x + 256) of head bh's seq * tiles * 4.
__global__ void __launch_bounds__(MASK_THREADS)
    draw_dropout_mask_kernel(const __grid_constant__ FlashParams a, uint32_t *mask) {
    const DropoutMaskLayout layout = {a.seq};
    const int tiles = layout.tiles(), bh = blockIdx.y;
    // (i, t, c) in the head; 32-bit (the launcher checks that a head's words fit): a 64-bit
    // division costs several times the 32-bit one.
    const uint32_t k = blockIdx.x * MASK_THREADS + threadIdx.x;
    if (k >= (uint32_t)layout.words(1)) return;
    const int t = (int)(k / 4 % (uint32_t)tiles), i = (int)(k / 4 / (uint32_t)tiles);
    if (a.causal && t > i / 128) return;  // a tile neither kernel visits
    const int b = bh / a.heads, h = bh % a.heads;
    const uint64_t row_group = dropout_row_group(a.drop.global_bh(b, h), i, a.seq);
    const uint32_t threshold = dropout_threshold(a.p_drop);
    const uint32_t low = row_dropout(row_group, 2 * t, a.keys, a.offset, threshold).bits();
    const uint32_t high = row_dropout(row_group, 2 * t + 1, a.keys, a.offset, threshold).bits();
    mask[layout.word(bh, i, t, threadIdx.x % 4)] = low | high << 16;
}

}  // namespace

void flash_draw_dropout_mask(const FlashParams &p, uint32_t *mask) {
    const DropoutMaskLayout layout = {p.seq};
    const int64_t words_per_head = layout.words(1);
    if (words_per_head > INT32_MAX)
        DIE("attention: the dropout mask drawn ahead is limited to 2^31 words per head (seq %d is too long for it)",
            p.seq);
    dim3 grid(ceil_div(words_per_head, MASK_THREADS), p.batch * p.heads);
    draw_dropout_mask_kernel<<<grid, MASK_THREADS>>>(p, mask);
    CHECK_LAUNCH();
}
