// The shared driver's flags as options_parse reads them (steps/driver/step.h), on the CPU:
// here, that --deterministic reaches LayerConfig.deterministic whatever comes after it -
// --preset and --check's small configuration both replace the whole layer configuration.
#include "steps/driver/step.h"
#include "tests/test_util.h"

static LayerConfig parse(int argc, char **argv) {
    Options o;
    options_defaults(&o);
    options_parse(argc, argv, &o, NULL);
    return o.layer;
}

static void test_deterministic_flag(void **state) {
    (void)state;
    char *none[] = {"step", "--preset", "small"};
    assert_int_equal(parse(3, none).deterministic, 0);
    char *before_preset[] = {"step", "--deterministic", "--preset", "small"};
    const LayerConfig a = parse(4, before_preset);
    assert_int_equal(a.deterministic, 1);
    assert_int_equal(a.seq, 128);
    char *after_preset[] = {"step", "--preset", "tiny", "--deterministic"};
    assert_int_equal(parse(4, after_preset).deterministic, 1);
    char *with_check[] = {"step", "--deterministic", "--check"};  // --check swaps in the small preset
    const LayerConfig c = parse(3, with_check);
    assert_int_equal(c.deterministic, 1);
    assert_int_equal(c.hidden, 256);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_deterministic_flag)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
