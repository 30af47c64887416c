// Why there is no GPU, in words a learner can act on: on a machine without NVIDIA device
// files, gpu_unavailable_reason() says so plainly rather than passing on CUDA's
// "CUDA driver version is insufficient for CUDA runtime version" (what the runtime reports
// when there is no driver at all). A CPU test: it needs the absence of a GPU.
#include <unistd.h>

#include "common/gpu/gpu.h"
#include "tests/test_util.h"

static void test_no_gpu_reason(void **state) {
    (void)state;
    if (access("/dev/nvidiactl", F_OK) == 0 || access("/dev/nvidia0", F_OK) == 0 || access("/dev/dxg", F_OK) == 0) {
        print_message("[ SKIP     ] test_no_gpu_reason: this machine has NVIDIA device files\n");
        skip();
    }
    assert_int_equal(gpu_count(), 0);
    print_message("  gpu_unavailable_reason(): %s\n", gpu_unavailable_reason());
    assert_string_equal(gpu_unavailable_reason(), "no GPU (no NVIDIA driver / device found)");
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_no_gpu_reason)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
