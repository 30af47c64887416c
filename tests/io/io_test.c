// safetensors: round trips, and every kind of bad file ending in a clear message and exit 1.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/safetensors.h"
#include "common/weights_io.h"
#include "tests/test_util.h"

static char dir[256];

static const char *path_of(const char *name) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

static int setup(void **state) {
    (void)state;
    const char *tmp = getenv("TEST_TMPDIR");
    snprintf(dir, sizeof dir, "%s/io_test_XXXXXX", tmp ? tmp : "/tmp");
    return mkdtemp(dir) ? 0 : -1;
}

static LayerConfig tiny(void) {
    LayerConfig c;
    layer_config_preset("tiny", &c);
    return c;
}

// ---- round trips ------------------------------------------------------------------------
static void test_params_round_trip(void **state) {
    (void)state;
    LayerConfig c = tiny();
    LayerParams a, b;
    layer_params_alloc(&c, &a);
    layer_params_alloc(&c, &b);
    layer_params_init_random(&c, test_seed(), &a);
    save_layer_params(path_of("p.safetensors"), &c, &a);
    load_layer_params(path_of("p.safetensors"), &c, &b);
    for (int i = 0; i < NUM_PARAMS; i++)
        assert_memory_equal(a.tensor[i], b.tensor[i], (size_t)param_numel(&c, i) * sizeof(float));
    layer_params_free(&a);
    layer_params_free(&b);
}

static void test_half_types_round_trip(void **state) {
    (void)state;
    const int n = 1000;
    float *x = random_floats(n, -100, 100);
    float *y = malloc(n * sizeof(float));
    for (int t = 0; t < 2; t++) {
        StDType dt = t ? ST_BF16 : ST_F16;
        StEntry e = {.name = "x", .ndim = 2, .shape = {10, 100}, .data = x, .dtype = dt};
        st_write(path_of("h.safetensors"), &e, 1);
        SafeTensors *st = st_open(path_of("h.safetensors"));
        st_read_f32(st, "x", 2, (int64_t[]){10, 100}, y);
        st_close(st);
        float *r = malloc(n * sizeof(float));
        memcpy(r, x, n * sizeof(float));
        round_to_dtype(r, n, t ? DTYPE_BF16 : DTYPE_FP16);
        assert_memory_equal(r, y, n * sizeof(float));  // stored rounded to nearest even
        free(r);
    }
    free(x);
    free(y);
}

static void test_results_and_inputs(void **state) {
    (void)state;
    LayerConfig c = tiny();
    LayerResults r;
    layer_results_alloc(&c, &r);
    int64_t n = layer_tokens(&c) * c.hidden;
    for (int64_t i = 0; i < n; i++) r.out[i] = (float)i, r.dx[i] = (float)-i;
    save_layer_results(path_of("r.safetensors"), &c, &r);
    SafeTensors *st = st_open(path_of("r.safetensors"));
    assert_true(st_has(st, "out") && st_has(st, "dx") && st_has(st, "grad.mlp.linear2.bias"));
    st_close(st);
    // "out" and "dx" have the inputs' shape: load them back as x and dy via a file that has both.
    StEntry e[2] = {{.name = "x", .ndim = 3, .shape = {c.seq, c.batch, c.hidden}, .data = r.out},
                    {.name = "dy", .ndim = 3, .shape = {c.seq, c.batch, c.hidden}, .data = r.dx}};
    st_write(path_of("in.safetensors"), e, 2);
    LayerInputs in;
    layer_inputs_alloc(&c, &in);
    load_layer_inputs(path_of("in.safetensors"), &c, &in);
    assert_memory_equal(in.x, r.out, (size_t)n * sizeof(float));
    assert_memory_equal(in.dy, r.dx, (size_t)n * sizeof(float));
    layer_inputs_free(&in);
    layer_results_free(&r);
}

// ---- bad files: the loader runs in a child process, which must exit 1 with the message ---
static void write_raw(const char *name, const char *header, size_t header_len, size_t data_bytes,
                      uint64_t claimed_len) {
    FILE *f = fopen(path_of(name), "wb");
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(claimed_len >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(header, 1, header_len, f);
    for (size_t i = 0; i < data_bytes; i++) fputc(0, f);
    fclose(f);
}

static void write_header(const char *name, const char *header, size_t data_bytes) {
    write_raw(name, header, strlen(header), data_bytes, strlen(header));
}

static void expect_failure(const char *file, int64_t rows, int64_t cols, const char *message) {
    char errpath[512];
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen(errpath, "w", stderr)) _exit(99);
        SafeTensors *st = st_open(path_of(file));
        float out[64];
        st_read_f32(st, "w", 2, (int64_t[]){rows, cols}, out);
        _exit(0);  // loaded: the test fails below
    }
    int status;
    waitpid(pid, &status, 0);
    FILE *f = fopen(errpath, "r");
    char text[1024] = "";
    size_t got = f ? fread(text, 1, sizeof text - 1, f) : 0;
    text[got] = 0;
    if (f) fclose(f);
    print_message("  %-22s -> %s", file, text);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    if (!strstr(text, message)) fail_msg("message '%s' does not contain '%s'", text, message);
    assert_non_null(strstr(text, file));  // names the file
}

static void test_bad_files(void **state) {
    (void)state;
    const char *good = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}";
    write_header("good.safetensors", good, 24);
    // The good file loads (in a child, like the others, to be sure the harness can pass).
    pid_t pid = fork();
    if (pid == 0) {
        SafeTensors *st = st_open(path_of("good.safetensors"));
        float out[6];
        st_read_f32(st, "w", 2, (int64_t[]){2, 3}, out);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    expect_failure("missing.safetensors", 2, 3, "cannot open");
    write_header("notjson.safetensors", "{\"w\": [1, 2", 0);
    expect_failure("notjson.safetensors", 2, 3, "not valid JSON");
    write_raw("longheader.safetensors", good, strlen(good), 24, 1u << 20);
    expect_failure("longheader.safetensors", 2, 3, "larger than the file");
    write_header("truncated.safetensors", good, 10);
    expect_failure("truncated.safetensors", 2, 3, "truncated");
    expect_failure("good.safetensors", 3, 2, "has shape [2, 3], expected [3, 2]");
    write_header("dtype.safetensors", "{\"w\":{\"dtype\":\"I64\",\"shape\":[2,3],\"data_offsets\":[0,48]}}", 48);
    expect_failure("dtype.safetensors", 2, 3, "dtype I64");
    write_header("offsets.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24);
    expect_failure("offsets.safetensors", 2, 3, "need 24");
    write_header("other.safetensors", "{\"v\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24);
    expect_failure("other.safetensors", 2, 3, "no tensor named 'w'");
    write_raw("tiny.safetensors", "", 0, 0, 0);
    expect_failure("tiny.safetensors", 2, 3, "not valid JSON");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_round_trip),
        cmocka_unit_test(test_half_types_round_trip),
        cmocka_unit_test(test_results_and_inputs),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
