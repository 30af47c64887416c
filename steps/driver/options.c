// The command line every step shares (and compare, and step 07's tp): flags into Options.
//
// The rules, for every binary (also in --help and README.md):
//   - "--flag value" and "--flag=value" are the same; a switch (--check) takes no value.
//   - The preset is applied first, wherever --preset stands; every other flag then changes it
//     where given, in order. So `--dtype bf16 --preset tiny` is the tiny preset in bf16. A
//     second --preset is refused (which one would win is not obvious).
//   - Without --preset, --check starts from the small preset unless a size is given;
//     otherwise the start is the layer Options held (options_defaults: the quickstart).
//   - Values are parsed strictly (common/core/flags.h); unknown flags are named as unknown.
//   - Contradictions are refused (--check with --breakdown here; the driver refuses --check
//     with --warmup/--iters, which step 07 may mean otherwise).
//   - Output paths (--save, --json) are checked writable here, before any work.
// Nothing here touches the GPU: the flags are read and refused on any machine.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/flags.h"
#include "common/io/output_file.h"
#include "steps/driver/step.h"

void options_defaults(Options *o) {
    memset(o, 0, sizeof *o);
    o->layer = layer_config_quickstart();
    o->warmup = 3;
    o->iters = 10;
}

static void print_help(const char *prog, const StepOps *step) {
    printf("usage: %s [flags]\n", prog);
    if (step && step->id && step->title) printf("Step %s: %s\n  %s\n", step->id, step->title, step->whats_new);
    printf(
        "\nThe layer (defaults: the quickstart configuration)\n"
        "  --preset NAME        quickstart (h4096 ffn16384 heads32 s2048 b4), small (--check's), tiny.\n"
        "                       Applied first, wherever it stands: the other flags change it where\n"
        "                       given (--dtype bf16 --preset tiny is tiny in bf16). One preset only.\n"
        "  --hidden N --ffn N --heads N --seq N --batch N\n"
        "  --dtype fp16|bf16    storage type on the GPU (default fp16)\n"
        "  --dropout P          attention and hidden dropout (default 0.1). P runs as the nearest\n"
        "                       multiple of 1/256 (0.1 as 26/256 = 0.1016, printed); one that this\n"
        "                       changes by more than 5%% is refused (0.001, 0.999)\n"
        "  --attn-dropout P --hidden-dropout P\n"
        "  --causal             causal attention mask\n"
        "  --seed N             dropout masks and random weights/inputs (default 1234)\n"
        "  --deterministic      bit-reproducible steps: attention's dQ and the GEMMs sum in a fixed order\n"
        "Running\n"
        "  --warmup N --iters N untimed and timed training steps (default 3 and 10)\n"
        "  --check              compare out, dx and every gradient with the CPU reference\n"
        "                       (uses the small preset unless a preset or size is given)\n"
        "  --weights FILE       load the 12 parameters from safetensors (PyTorch names)\n"
        "  --input FILE         load x and dy from safetensors (else random)\n"
        "  --save FILE          save out, dx and grad.<name> after one step (safetensors)\n"
        "  --breakdown          also five steps among the timed ones recorded by category (GEMM\n"
        "                       fprop/dgrad/wgrad, attention, LayerNorm, ...), each beside its floors\n"
        "                       measured here, in a burst and held at the power limit (about 8 s more;\n"
        "                       steps 01-06 and compare: step 07 refuses it)\n"
        "  --json FILE          write the results as JSON\n"
        "  --help\n"
        "Every flag takes --flag VALUE or --flag=VALUE; numbers must be whole and in range.\n");
    if (step && step->flags_help) printf("%s\n%s", step->id ? "Flags of this step" : "Flags of this program", step->flags_help);
}

static const char *const SWITCHES[] = {"--check", "--causal", "--breakdown", "--deterministic"};
static const char *const VALUE_FLAGS[] = {
    "--preset", "--hidden", "--ffn",  "--heads", "--seq",    "--batch",   "--dtype",   "--dropout", "--attn-dropout",
    "--hidden-dropout", "--seed", "--warmup", "--iters", "--weights", "--input", "--save", "--json",
};
static const char *const SIZE_FLAGS[] = {"--hidden", "--ffn", "--heads", "--seq", "--batch"};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

// flags_split's view of a name: the shared flags, then the step's. A step's switch is applied
// here, when it is met (switches do not touch the layer, so the preset's order is moot).
static FlagKind flag_kind(const char *name, void *ctx) {
    const StepOps *step = ctx;
    if (flag_is_one_of(name, SWITCHES, COUNT(SWITCHES))) return FLAG_SWITCH;
    if (flag_is_one_of(name, VALUE_FLAGS, COUNT(VALUE_FLAGS))) return FLAG_VALUE;
    if (!step || !step->parse_flag) return FLAG_UNKNOWN;
    if (step->parse_flag(name, NULL)) return FLAG_SWITCH;
    return help_lists_flag(step->flags_help, name) ? FLAG_VALUE : FLAG_VALUE_OR_UNKNOWN;
}

static float parse_dropout(const char *flag, const char *value) {
    float p = (float)parse_probability_flag(flag, value);
    const char *why = dropout_problem(p);
    if (why) fail_user("%s %s: %s", flag, value, why);
    return p;
}

// One shared flag with a value (not --preset); 0 if `f` is not one.
static int apply_shared(Options *o, const FlagArg *f) {
    LayerConfig *c = &o->layer;
    const char *n = f->name, *v = f->value;
    static const char *const DTYPES[] = {"fp16", "bf16"};
    if (!strcmp(n, "--hidden")) c->hidden = (int)parse_int_flag(n, v, 1, 1 << 20);
    else if (!strcmp(n, "--ffn")) c->ffn = (int)parse_int_flag(n, v, 1, 1 << 22);
    else if (!strcmp(n, "--heads")) c->heads = (int)parse_int_flag(n, v, 1, 1 << 12);
    else if (!strcmp(n, "--seq")) c->seq = (int)parse_int_flag(n, v, 1, 1 << 20);
    else if (!strcmp(n, "--batch")) c->batch = (int)parse_int_flag(n, v, 1, 1 << 16);
    else if (!strcmp(n, "--dtype")) c->dtype = parse_choice_flag(n, v, DTYPES, 2) ? DTYPE_BF16 : DTYPE_FP16;
    else if (!strcmp(n, "--dropout")) c->attn_dropout = c->hidden_dropout = parse_dropout(n, v);
    else if (!strcmp(n, "--attn-dropout")) c->attn_dropout = parse_dropout(n, v);
    else if (!strcmp(n, "--hidden-dropout")) c->hidden_dropout = parse_dropout(n, v);
    else if (!strcmp(n, "--seed")) c->seed = (uint64_t)parse_int_flag(n, v, 0, INT64_MAX);
    else if (!strcmp(n, "--warmup")) o->warmup = (int)parse_int_flag(n, v, 0, 1000000), o->timing_given = 1;
    else if (!strcmp(n, "--iters")) o->iters = (int)parse_int_flag(n, v, 1, 1000000), o->timing_given = 1;
    else if (!strcmp(n, "--weights")) o->weights_path = v;
    else if (!strcmp(n, "--input")) o->input_path = v;
    else if (!strcmp(n, "--save")) o->save_path = v;
    else if (!strcmp(n, "--json")) o->json_path = v;
    else return 0;
    return 1;
}

// More arguments than any real command line has; the parser then needs no heap.
enum { MAX_ARGUMENTS = 256 };

void options_parse(int argc, char **argv, Options *o, const StepOps *step) {
    enter_invoking_directory();  // `bazel run`: relative paths from where the user stands
    if (argc > MAX_ARGUMENTS) fail_user("%d arguments: at most %d are taken", argc - 1, MAX_ARGUMENTS - 1);
    FlagArg flags[MAX_ARGUMENTS];
    const int n = flags_split(argc, argv, flag_kind, (void *)step, flags);
    if (n < 0) {
        print_help(argv[0], step);
        exit(0);
    }

    // The preset first, wherever it stands.
    int sizes_given = 0;
    for (int i = 0; i < n; i++) {
        if (!strcmp(flags[i].name, "--check")) o->check = 1;
        if (flag_is_one_of(flags[i].name, SIZE_FLAGS, COUNT(SIZE_FLAGS))) sizes_given = 1;
        if (strcmp(flags[i].name, "--preset") != 0) continue;
        if (o->preset)
            fail_user("--preset given twice ('%s' and '%s'): give one; the other flags then change it where given",
                      o->preset, flags[i].value);
        o->preset = flags[i].value;
    }
    const char *start = o->preset ? o->preset : o->check && !sizes_given ? "small" : NULL;
    if (start && !layer_config_preset(start, &o->layer))
        fail_user("unknown preset '%s' (quickstart, small, tiny)", start);
    o->check_config_given = o->preset != NULL || sizes_given;

    // Then every other flag, in order.
    for (int i = 0; i < n; i++) {
        const FlagArg *f = &flags[i];
        if (!strcmp(f->name, "--preset") || !strcmp(f->name, "--check")) continue;
        if (!strcmp(f->name, "--causal")) o->layer.causal = 1;
        else if (!strcmp(f->name, "--breakdown")) o->breakdown = 1;
        else if (!strcmp(f->name, "--deterministic")) o->layer.deterministic = o->deterministic = 1;
        else if (!f->value) continue;  // a step's switch, applied by flags_split
        else if (apply_shared(o, f)) {}
        else if (step && step->parse_flag && step->parse_flag(f->name, f->value)) {}
        else fail_user("unknown flag '%s' (see --help)", f->name);
    }

    if (o->check && o->breakdown) fail_user("--breakdown times a step and --check checks one: give one of them");
    const char *problem = layer_config_problem(&o->layer);
    if (problem) fail_user("bad configuration: %s", problem);
    if (o->save_path) output_check_writable("--save", o->save_path);
    if (o->json_path) output_check_writable("--json", o->json_path);
    // No output over an input or over the other output.
    output_check_distinct("--save", o->save_path, "--json", o->json_path);
    output_check_distinct("--save", o->save_path, "--weights", o->weights_path);
    output_check_distinct("--save", o->save_path, "--input", o->input_path);
    output_check_distinct("--json", o->json_path, "--weights", o->weights_path);
    output_check_distinct("--json", o->json_path, "--input", o->input_path);
}
