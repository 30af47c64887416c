// Tests of common/safetensors and common/weights_io.
//
// Round trips: values written (F32, F16, BF16) read back equal, after the storage dtype's
// rounding. Bad files: each is built byte by byte here, loaded in a child process (a bad
// file ends the program through fail_user, exit status 1), and the test checks the exit
// status and that the message names the file and the problem.
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/core/half.h"
#include "common/core/layer.h"
#include "common/io/output_file.h"
#include "common/io/safetensors.h"
#include "common/io/weights_io.h"
#include "tests/test_util.h"

// ---- helpers ------------------------------------------------------------------------------

static char tmp_dir[512];

static int make_tmp_dir(void **state) {
    (void)state;
    const char *base = getenv("TEST_TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/io_test_XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(tmp_dir)) return -1;
    return 0;
}

static int remove_tmp_dir(void **state) {
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

// A path in the temporary directory (a static buffer per call site is enough: rotating).
static const char *tmp_path(const char *name) {
    static char bufs[4][600];
    static int next;
    char *p = bufs[next++ % 4];
    snprintf(p, sizeof bufs[0], "%s/%s", tmp_dir, name);
    return p;
}

static LayerConfig tiny_config(void) {
    LayerConfig c;
    assert_true(layer_config_preset("tiny", &c));
    return c;
}

// Writes a file byte by byte: the 8-byte little-endian header length (header_len, or the
// header's real length when header_len is AUTO_LEN), the header text, then data_len bytes.
#define AUTO_LEN UINT64_MAX
static void write_raw(const char *path, uint64_t header_len, const char *header,
                      const void *data, size_t data_len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (header_len == AUTO_LEN) header_len = strlen(header);
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (unsigned char)(header_len >> (8 * i));
    assert_int_equal(fwrite(len_bytes, 1, 8, f), 8);
    assert_int_equal(fwrite(header, 1, strlen(header), f), strlen(header));
    if (data_len) assert_int_equal(fwrite(data, 1, data_len, f), data_len);
    assert_int_equal(fclose(f), 0);
}

// Runs run(path) in a child process with stderr captured, and asserts that it exited with
// status 1 and that its message contains every word of the NULL-terminated list. Prints the
// message, so the log shows what a user would see.
static void expect_failure(void (*run)(const char *), const char *path, ...) {
    char err_path[600];
    snprintf(err_path, sizeof err_path, "%s/stderr.txt", tmp_dir);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, 2) < 0) _exit(3);
        run(path);
        _exit(0);  // the load succeeded: the parent reports that
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    char msg[4096] = "";
    FILE *f = fopen(err_path, "r");
    assert_non_null(f);
    size_t len = fread(msg, 1, sizeof msg - 1, f);
    msg[len] = '\0';
    fclose(f);
    print_message("    message: %s", msg);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 1)
        fail_msg("expected exit status 1, got %s %d", WIFEXITED(status) ? "exit" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    va_list ap;
    va_start(ap, path);
    for (const char *word; (word = va_arg(ap, const char *));)
        if (!strstr(msg, word)) fail_msg("the message does not contain \"%s\"", word);
    va_end(ap);
}

// What the child processes run.
static void run_load_params(const char *path) {
    LayerConfig c = tiny_config();
    LayerParams p;
    layer_params_alloc(&c, &p);
    load_layer_params(path, &c, &p);
}

static void run_load_inputs(const char *path) {
    LayerConfig c = tiny_config();
    LayerInputs in;
    layer_inputs_alloc(&c, &in);
    load_layer_inputs(path, &c, &in);
}

// Reads tensor "w", expecting shape [4].
static void run_read_w4(const char *path) {
    SafeTensors *st = st_open(path);
    float out[4];
    const int64_t shape[1] = {4};
    st_read_f32(st, "w", 1, shape, out);
    st_close(st);
}

static void run_open(const char *path) { st_close(st_open(path)); }

static const float FOUR[4] = {1.0f, -2.5f, 0.125f, 3.0f};

// ---- round trips --------------------------------------------------------------------------

static void test_params_round_trip(void **state) {
    (void)state;
    LayerConfig c = tiny_config();
    LayerParams p, q;
    layer_params_alloc(&c, &p);
    layer_params_alloc(&c, &q);
    layer_params_init_random(&c, test_seed(), &p);
    const char *path = tmp_path("params.safetensors");
    save_layer_params(path, &c, &p);
    load_layer_params(path, &c, &q);
    for (int i = 0; i < NUM_PARAMS; i++)
        assert_memory_equal(p.tensor[i], q.tensor[i], (size_t)param_numel(&c, i) * sizeof(float));
    layer_params_free(&p);
    layer_params_free(&q);
}

static void test_results_round_trip(void **state) {
    (void)state;
    LayerConfig c = tiny_config();
    LayerResults r;
    layer_results_alloc(&c, &r);
    int64_t n = layer_tokens(&c) * c.hidden;
    float *out = random_floats(n, -1, 1), *dx = random_floats(n, -1, 1);
    memcpy(r.out, out, (size_t)n * sizeof(float));
    memcpy(r.dx, dx, (size_t)n * sizeof(float));
    layer_params_init_random(&c, test_seed() + 1, &r.grad);
    const char *path = tmp_path("results.safetensors");
    save_layer_results(path, &c, &r);

    SafeTensors *st = st_open(path);
    assert_int_equal(st_count(st), 2 + NUM_PARAMS);
    const int64_t act[3] = {c.seq, c.batch, c.hidden};
    float *got = malloc((size_t)n * sizeof(float));
    st_read_f32(st, "out", 3, act, got);
    assert_memory_equal(got, out, (size_t)n * sizeof(float));
    st_read_f32(st, "dx", 3, act, got);
    assert_memory_equal(got, dx, (size_t)n * sizeof(float));
    for (int i = 0; i < NUM_PARAMS; i++) {
        char name[64];
        snprintf(name, sizeof name, "grad.%s", PARAM_NAMES[i]);
        int64_t shape[2];
        int ndim = param_shape(&c, i, shape);
        float *g = malloc((size_t)param_numel(&c, i) * sizeof(float));
        st_read_f32(st, name, ndim, shape, g);
        assert_memory_equal(g, r.grad.tensor[i], (size_t)param_numel(&c, i) * sizeof(float));
        free(g);
    }
    st_close(st);

    // The header is padded so that the data section starts 8-byte aligned.
    FILE *f = fopen(path, "rb");
    unsigned char len_bytes[8];
    assert_int_equal(fread(len_bytes, 1, 8, f), 8);
    fclose(f);
    assert_int_equal(len_bytes[0] % 8, 0);
    free(got);
    free(out);
    free(dx);
    layer_results_free(&r);
}

// F16 and BF16 storage: values come back as the nearest 16-bit value, and a parameter file
// stored in bf16 loads into the layer.
static void test_half_storage_round_trip(void **state) {
    (void)state;
    const int n = 1000;
    float *v = random_floats(n, -4, 4);
    StWriteEntry e[3] = {
        {.name = "h", .ndim = 2, .shape = {10, 100}, .data = v, .dtype = ST_F16},
        {.name = "b", .ndim = 1, .shape = {n}, .data = v, .dtype = ST_BF16},
        {.name = "f", .ndim = 3, .shape = {10, 10, 10}, .data = v},  // F32 by default
    };
    const char *path = tmp_path("half.safetensors");
    st_write(path, e, 3);
    SafeTensors *st = st_open(path);
    float *got = malloc(n * sizeof(float));
    st_read_f32(st, "h", 2, e[0].shape, got);
    for (int i = 0; i < n; i++) assert_true(got[i] == fp16_to_float(float_to_fp16(v[i])));
    st_read_f32(st, "b", 1, e[1].shape, got);
    for (int i = 0; i < n; i++) assert_true(got[i] == bf16_to_float(float_to_bf16(v[i])));
    st_read_f32(st, "f", 3, e[2].shape, got);
    assert_memory_equal(got, v, n * sizeof(float));
    st_close(st);

    // The 12 parameters stored as BF16.
    LayerConfig c = tiny_config();
    LayerParams p, q;
    layer_params_alloc(&c, &p);
    layer_params_alloc(&c, &q);
    layer_params_init_random(&c, test_seed() + 2, &p);
    StWriteEntry pe[NUM_PARAMS];
    for (int i = 0; i < NUM_PARAMS; i++) {
        pe[i] = (StWriteEntry){.name = PARAM_NAMES[i], .data = p.tensor[i], .dtype = ST_BF16};
        pe[i].ndim = param_shape(&c, i, pe[i].shape);
    }
    path = tmp_path("params_bf16.safetensors");
    st_write(path, pe, NUM_PARAMS);
    load_layer_params(path, &c, &q);
    for (int i = 0; i < NUM_PARAMS; i++)
        for (int64_t j = 0; j < param_numel(&c, i); j++)
            assert_true(q.tensor[i][j] == bf16_to_float(float_to_bf16(p.tensor[i][j])));
    layer_params_free(&p);
    layer_params_free(&q);
    free(got);
    free(v);
}

// A file written by hand, as another writer might lay it out: metadata, keys in any order,
// data not in key order, F16 and BF16 bit patterns with known values, an extra I64 tensor.
static void test_hand_crafted_file(void **state) {
    (void)state;
    const char *header =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,8]},"
        "\"v\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
        "\"step\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]}}   ";
    const unsigned char data[16] = {
        0x00, 0x3c, 0x00, 0xc0,  // F16 1.0, -2.0
        0x80, 0x3f, 0x49, 0x40,  // BF16 1.0, 3.140625
        7, 0, 0, 0, 0, 0, 0, 0,  // I64 7
    };
    const char *path = tmp_path("hand.safetensors");
    write_raw(path, AUTO_LEN, header, data, sizeof data);
    SafeTensors *st = st_open(path);
    assert_int_equal(st_count(st), 3);
    assert_string_equal(st_name(st, 0), "step");  // names are listed sorted
    assert_string_equal(st_metadata(st, "format"), "pt");
    assert_null(st_metadata(st, "other"));
    assert_true(st_has(st, "v"));
    assert_false(st_has(st, "x"));
    const int64_t two[1] = {2};
    float got[2];
    st_read_f32(st, "v", 1, two, got);
    assert_true(got[0] == 1.0f && got[1] == -2.0f);
    st_read_f32(st, "w", 1, two, got);
    assert_true(got[0] == 1.0f && got[1] == 3.140625f);
    st_close(st);
}

// ---- bad files ----------------------------------------------------------------------------

static void test_missing_file(void **state) {
    (void)state;
    const char *path = tmp_path("does_not_exist.safetensors");
    expect_failure(run_load_params, path, "cannot open", path, "No such file", NULL);
}

static void test_not_json(void **state) {
    (void)state;
    const char *path = tmp_path("not_json.safetensors");
    write_raw(path, AUTO_LEN, "{\"w\": {\"dtype\": \"F32\",\n  shape: [4]}}", FOUR, 16);
    expect_failure(run_read_w4, path, path, "not valid JSON", "line 2", NULL);
    write_raw(path, AUTO_LEN, "[1, 2]", NULL, 0);
    expect_failure(run_open, path, path, "not an object", NULL);
    write_raw(path, AUTO_LEN,
              "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
              FOUR, 16);
    expect_failure(run_open, path, path, "duplicate", NULL);
}

static void test_header_length_too_large(void **state) {
    (void)state;
    const char *path = tmp_path("long_header.safetensors");
    write_raw(path, 1000, "{}", NULL, 0);
    expect_failure(run_open, path, path, "header length", "1000", "larger than the file", NULL);
    // A text file: its first 8 bytes read as an enormous length.
    FILE *f = fopen(path, "w");
    fputs("hello, this is not a safetensors file\n", f);
    fclose(f);
    expect_failure(run_open, path, path, "larger than the file", NULL);
    // Too short to hold the length itself.
    write_raw(path, AUTO_LEN, "", NULL, 0);
    assert_int_equal(truncate(path, 5), 0);
    expect_failure(run_open, path, path, "fewer than the 8", NULL);
    // Longer than the format allows, in a (sparse) file large enough to hold it: the
    // format's reference reader (safetensors' MAX_HEADER_SIZE) refuses more than 100,000,000
    // bytes - decimal, not 100 MiB (104,857,600), which we used to allow.
    write_raw(path, 100000001ull, "{}", NULL, 0);
    assert_int_equal(truncate(path, 100000001ll + 8 + 16), 0);
    expect_failure(run_open, path, path, "100000001 bytes", "over the 100000000 bytes",
                   "format's reference reader", NULL);
    write_raw(path, 200ull << 20, "{}", NULL, 0);
    assert_int_equal(truncate(path, 300ll << 20), 0);
    expect_failure(run_open, path, path, "over the 100000000 bytes", NULL);
    remove(path);
}

// A value the layer's dtype cannot hold: named, placed, and the dtype's range given.
static void run_load_inputs_fp16(const char *path) { run_load_inputs(path); }

static void run_load_params_bf16(const char *path) {
    LayerConfig c = tiny_config();
    c.dtype = DTYPE_BF16;
    LayerParams p;
    layer_params_alloc(&c, &p);
    load_layer_params(path, &c, &p);
}

static void test_values_beyond_dtype(void **state) {
    (void)state;
    LayerConfig c = tiny_config();
    const int64_t n = layer_tokens(&c) * c.hidden;
    float *x = calloc((size_t)n, sizeof(float)), *dy = calloc((size_t)n, sizeof(float));
    StWriteEntry e[2] = {
        {.name = "x", .ndim = 3, .shape = {c.seq, c.batch, c.hidden}, .data = x},
        {.name = "dy", .ndim = 3, .shape = {c.seq, c.batch, c.hidden}, .data = dy},
    };
    const char *path = tmp_path("beyond.safetensors");
    // 65519.99 still rounds to fp16's largest, 65504: it fits.
    x[3] = 65519.0f, dy[7] = -65504.0f;
    st_write(path, e, 2);
    run_load_inputs(path);
    // 66246 rounds to inf at fp16.
    x[3] = 0.0f, dy[2 * c.hidden + 5] = 66246.0f;
    st_write(path, e, 2);
    expect_failure(run_load_inputs_fp16, path, path, "tensor 'dy' holds 66246 at index [1, 0, 5]",
                   "outside fp16's range [-65504, 65504]", "would become an infinity", "--dtype bf16", NULL);
    dy[2 * c.hidden + 5] = 0.0f, x[9] = -70000.0f;
    st_write(path, e, 2);
    expect_failure(run_load_inputs_fp16, path, path, "tensor 'x' holds -70000 at index [0, 0, 9] (element 9", NULL);
    x[9] = NAN;
    st_write(path, e, 2);
    expect_failure(run_load_inputs_fp16, path, path, "tensor 'x' holds nan at index [0, 0, 9]", "not a finite number",
                   NULL);
    free(x);
    free(dy);
    // bf16 holds 1e38 but not 3.4e38 (float's largest).
    LayerParams p;
    layer_params_alloc(&c, &p);
    p.tensor[P_QKV_BIAS][1] = 1e38f;
    save_layer_params(path, &c, &p);
    run_load_params_bf16(path);
    p.tensor[P_QKV_BIAS][1] = 3.4e38f;
    save_layer_params(path, &c, &p);
    expect_failure(run_load_params_bf16, path, "tensor 'qkv_projection.bias' holds 3.39999995e+38 at index [1]",
                   "bf16's range", NULL);
    layer_params_free(&p);
}

static void test_truncated_data(void **state) {
    (void)state;
    const char *path = tmp_path("truncated.safetensors");
    write_raw(path, AUTO_LEN, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
              FOUR, 10);
    expect_failure(run_read_w4, path, path, "truncated", "16 bytes", "only 10", NULL);
    // A real parameter file cut short (as by a full disk or an interrupted copy).
    LayerConfig c = tiny_config();
    LayerParams p;
    layer_params_alloc(&c, &p);
    save_layer_params(path, &c, &p);
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    assert_int_equal(truncate(path, size - 100), 0);
    expect_failure(run_load_params, path, path, "truncated", NULL);
    layer_params_free(&p);
}

static void test_wrong_shape(void **state) {
    (void)state;
    const char *path = tmp_path("shape.safetensors");
    write_raw(path, AUTO_LEN, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}",
              FOUR, 16);
    expect_failure(run_read_w4, path, path, "'w'", "[2, 2]", "[4]", NULL);
    // Parameters saved for another configuration: FC1's shapes differ first.
    LayerConfig c = tiny_config();
    c.ffn *= 2;
    LayerParams p;
    layer_params_alloc(&c, &p);
    save_layer_params(path, &c, &p);
    char found[64], expected[64];
    snprintf(found, sizeof found, "[%d, %d]", c.ffn, c.hidden);
    snprintf(expected, sizeof expected, "[%d, %d]", c.ffn / 2, c.hidden);
    expect_failure(run_load_params, path, path, PARAM_NAMES[P_FC1_WEIGHT], found, expected,
                   "ffn", NULL);
    layer_params_free(&p);
}

static void test_unknown_dtype(void **state) {
    (void)state;
    const char *path = tmp_path("dtype.safetensors");
    write_raw(path, AUTO_LEN, "{\"w\":{\"dtype\":\"F33\",\"shape\":[4],\"data_offsets\":[0,16]}}",
              FOUR, 16);
    expect_failure(run_read_w4, path, path, "'w'", "unknown dtype", "F33", NULL);
    // A valid safetensors dtype that is not a float type we convert.
    write_raw(path, AUTO_LEN, "{\"w\":{\"dtype\":\"I32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
              FOUR, 16);
    expect_failure(run_read_w4, path, path, "'w'", "I32", "only F32, F16 and BF16", NULL);
    write_raw(path, AUTO_LEN, "{\"w\":{\"shape\":[4],\"data_offsets\":[0,16]}}", FOUR, 16);
    expect_failure(run_read_w4, path, path, "'w'", "no \"dtype\"", NULL);
}

static void test_missing_tensor(void **state) {
    (void)state;
    const char *path = tmp_path("missing.safetensors");
    // A results file given where parameters are expected.
    LayerConfig c = tiny_config();
    LayerResults r;
    layer_results_alloc(&c, &r);
    save_layer_results(path, &c, &r);
    expect_failure(run_load_params, path, path, "no tensor named 'ln1.weight'", "'dx'",
                   "(2 more)", NULL);
    layer_results_free(&r);
    // Names with a prefix: the message points at the likely match.
    const int64_t n = layer_tokens(&c) * c.hidden;
    float *x = calloc((size_t)n, sizeof(float));
    StWriteEntry e[2] = {
        {.name = "layer0.x", .ndim = 3, .shape = {c.seq, c.batch, c.hidden}, .data = x},
        {.name = "layer0.dy", .ndim = 3, .shape = {c.seq, c.batch, c.hidden}, .data = x},
    };
    st_write(path, e, 2);
    expect_failure(run_load_inputs, path, path, "no tensor named 'x'", "layer0.x", NULL);
    free(x);
}

static void test_bad_offsets(void **state) {
    (void)state;
    const char *path = tmp_path("offsets.safetensors");
    // Past the end of the data section.
    write_raw(path, AUTO_LEN,
              "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[100,116]}}", FOUR, 16);
    expect_failure(run_read_w4, path, path, "'w'", "[100, 116]", "out of range", NULL);
    // Inconsistent with the shape.
    write_raw(path, AUTO_LEN, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,8]}}",
              FOUR, 16);
    expect_failure(run_read_w4, path, path, "'w'", "8 bytes", "needs 16 bytes", NULL);
    // Overlapping tensors.
    float eight[8] = {0};
    write_raw(path, AUTO_LEN,
              "{\"v\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
              eight, 32);
    expect_failure(run_read_w4, path, path, "overlaps", NULL);
    // Not two integers; negative; end before begin.
    write_raw(path, AUTO_LEN, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0]}}",
              FOUR, 16);
    expect_failure(run_read_w4, path, path, "'w'", "data_offsets", NULL);
    write_raw(path, AUTO_LEN, "{\"w\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}",
              FOUR, 16);
    expect_failure(run_read_w4, path, path, "'w'", "non-negative", NULL);
    write_raw(path, AUTO_LEN, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}}",
              FOUR, 16);
    expect_failure(run_read_w4, path, path, "'w'", "end before", NULL);
    // Bytes left over after the last tensor.
    write_raw(path, AUTO_LEN, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
              FOUR, 16);
    expect_failure(run_open, path, path, "8 unexpected bytes", NULL);
    // A shape whose byte count would overflow 64 bits.
    write_raw(path, AUTO_LEN,
              "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
              "\"data_offsets\":[0,0]}}",
              NULL, 0);
    expect_failure(run_open, path, path, "'w'", "impossibly large", NULL);
}

// Output files (output_file.h): nothing the user had is lost. A "<path>.tmp" of the user's stops
// the run and is left as it was; a link is written through (its file replaced, the link kept);
// a link to a folder is refused; an output over an input is refused, also when spelt as a link.
static void run_check_writable(const char *path) { output_check_writable("--json", path); }
static void run_open_output(const char *path) { output_commit(output_open(path, "w"), path); }
static void run_same_file(const char *path) { output_check_distinct("--json", path, "--pytorch", path); }
static char link_path[700];
static void run_link_and_target(const char *path) { output_check_distinct("--json", link_path, "--pytorch", path); }

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void read_text(const char *path, char *buf, size_t n) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    const size_t len = fread(buf, 1, n - 1, f);
    buf[len] = 0;
    fclose(f);
}

static void test_outputs_keep_what_was_there(void **state) {
    (void)state;
    char out[600], tmp[620], target[600], text[64];
    snprintf(out, sizeof out, "%s/r.json", tmp_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    write_text(tmp, "the user's own\n");
    expect_failure(run_check_writable, out, tmp, "is there already", NULL);
    expect_failure(run_open_output, out, tmp, "is there already", NULL);
    read_text(tmp, text, sizeof text);
    assert_string_equal(text, "the user's own\n");
    assert_int_equal(remove(tmp), 0);
    run_check_writable(out);  // now it may
    // A link: written through.
    snprintf(target, sizeof target, "%s/target.json", tmp_dir);
    snprintf(link_path, sizeof link_path, "%s/link.json", tmp_dir);
    write_text(target, "old\n");
    assert_int_equal(symlink(target, link_path), 0);
    run_check_writable(link_path);
    FILE *f = output_open(link_path, "w");
    fputs("new\n", f);
    output_commit(f, link_path);
    struct stat sb;
    assert_int_equal(lstat(link_path, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    read_text(target, text, sizeof text);
    assert_string_equal(text, "new\n");
    // The same file twice, and a link beside its file.
    expect_failure(run_same_file, target, "--json", "--pytorch", "name the same file", NULL);
    expect_failure(run_link_and_target, target, "name the same file", NULL);
    output_check_distinct("--json", out, "--pytorch", target);  // two files: fine
    // A link to a folder.
    assert_int_equal(remove(link_path), 0);
    assert_int_equal(symlink(tmp_dir, link_path), 0);
    expect_failure(run_check_writable, link_path, "not a file", NULL);
    assert_int_equal(remove(link_path), 0);
    assert_int_equal(remove(target), 0);
}

// `bazel run`'s folder (enter_invoking_directory): entered when BUILD_WORKING_DIRECTORY names
// it, refused with the variable and the reason when it names nothing.
static void run_enter_directory(const char *path) {
    setenv("BUILD_WORKING_DIRECTORY", path, 1);
    enter_invoking_directory();
}

static void test_invoking_directory(void **state) {
    (void)state;
    char was[PATH_MAX], now[PATH_MAX], want[PATH_MAX];
    assert_non_null(getcwd(was, sizeof was));
    const char *env_was = getenv("BUILD_WORKING_DIRECTORY");
    char *saved = env_was ? strdup(env_was) : NULL;
    unsetenv("BUILD_WORKING_DIRECTORY");
    enter_invoking_directory();  // outside `bazel run`: stays
    assert_non_null(getcwd(now, sizeof now));
    assert_string_equal(now, was);
    run_enter_directory(tmp_dir);
    assert_non_null(getcwd(now, sizeof now));
    assert_non_null(realpath(tmp_dir, want));
    assert_string_equal(now, want);
    assert_int_equal(chdir(was), 0);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no_such_folder", tmp_dir);
    expect_failure(run_enter_directory, missing, "BUILD_WORKING_DIRECTORY", missing, "No such file", NULL);
    if (saved) setenv("BUILD_WORKING_DIRECTORY", saved, 1);
    else unsetenv("BUILD_WORKING_DIRECTORY");
    free(saved);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_round_trip),
        cmocka_unit_test(test_results_round_trip),
        cmocka_unit_test(test_half_storage_round_trip),
        cmocka_unit_test(test_hand_crafted_file),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_header_length_too_large),
        cmocka_unit_test(test_truncated_data),
        cmocka_unit_test(test_values_beyond_dtype),
        cmocka_unit_test(test_wrong_shape),
        cmocka_unit_test(test_unknown_dtype),
        cmocka_unit_test(test_missing_tensor),
        cmocka_unit_test(test_bad_offsets),
        cmocka_unit_test(test_invoking_directory),
        cmocka_unit_test(test_outputs_keep_what_was_there),
    };
    return cmocka_run_group_tests(tests, make_tmp_dir, remove_tmp_dir);
}
