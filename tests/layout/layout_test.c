// The layout's rules, checked on the source tree itself (CPU only, runs in CI):
//
// 1. Floors. Every folder is one floor; a file may include from its own floor and the ones
//    below it, never from a floor above (so the bottom floor builds, and can be read, alone):
//
//        0  common/core                      errors, half, layer config, Philox, tolerances
//        1  common/gpu, common/io, common/fp8 runtime, safetensors, FP8 formats and recipe
//        2  reference                        the CPU ground truth
//        3  kernels                          CUDA kernels, one folder per topic
//        4  modules                          TE-style modules (Linear, LayerNorm, ...)
//        5  steps/driver                     flags, speedometer, --check
//        6  steps/NN_*                       the steps
//        7  steps/compare                    the comparison, which links every step
//        8  exercises, tests, tools          may include anything
//
// 2. No two headers share a file name (three `layernorm.h` once made "which one?" a question
//    every reader had to answer).
// 3. Every relative link in a Markdown file points at a file or folder that exists, and a link's
//    #anchor into a Markdown file (or within its own) at an anchor that file has: an HTML
//    id="..." or a heading's GitHub slug (results.md's sections are linked from every chapter).
//
// A violation is reported with its file and line. Each rule is also run on a small tree
// made in a temporary folder with a planted violation, so the test shows that it can fail.
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/test_util.h"

// out = a "/" b; a path too long for out is left empty (and then found missing).
static void join(char *out, size_t n, const char *a, const char *b) {
    int len = snprintf(out, n, "%s%s%s", a, a[0] && b[0] ? "/" : "", b);
    if (len < 0 || (size_t)len >= n) out[0] = 0;
}

// --- floors -----------------------------------------------------------------------------

typedef struct {
    const char *prefix;  // a path relative to the repository root: a folder ending in '/', or a file
    int floor;
} Floor;

static const Floor FLOORS[] = {
    {"common/core/", 0}, {"common/gpu/", 1},   {"common/io/", 1},     {"common/fp8/", 1},
    {"reference/", 2},   {"kernels/", 3},      {"modules/", 4},       {"steps/driver/", 5},
    {"steps/compare/", 7}, {"steps/", 6},      {"exercises/", 8},     {"tests/", 8},
    {"tools/", 8},
    // Exercise stubs that stand in for a lower floor's code (tools/exercises.bzl compiles them
    // into that floor's library) keep that floor's rule.
    {"exercises/fp8_encode.c", 1}, {"exercises/fp8_scale.c", 1}, {"exercises/layernorm_backward.c", 2},
    {"exercises/online_softmax.c", 2}, {"exercises/swizzle.c", 2}, {"exercises/fused_weights.c", 2},
    {"exercises/tp_backward.c", 2},
};

// The floor of `path` (relative to the root), or -1 when it is on none (e.g. third_party/).
// The longest matching prefix wins: steps/driver/ before steps/.
static int floor_of(const char *path) {
    int best = -1;
    size_t best_len = 0;
    for (size_t i = 0; i < sizeof FLOORS / sizeof FLOORS[0]; i++) {
        size_t n = strlen(FLOORS[i].prefix);
        if (n > best_len && strncmp(path, FLOORS[i].prefix, n) == 0) {
            best = FLOORS[i].floor;
            best_len = n;
        }
    }
    return best;
}

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int is_source(const char *name) {
    return has_suffix(name, ".c") || has_suffix(name, ".h") || has_suffix(name, ".cu") ||
           has_suffix(name, ".cuh");
}

// Calls visit(root, rel) for every regular file under root/dir (rel is relative to root).
// Skips hidden folders and Bazel's output links.
typedef void (*Visit)(const char *root, const char *rel, void *ctx);

static void walk(const char *root, const char *dir, Visit visit, void *ctx) {
    char full[PATH_MAX];
    join(full, sizeof full, root, dir);
    DIR *d = opendir(full);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strncmp(e->d_name, "bazel-", 6) == 0) continue;
        char rel[PATH_MAX];
        join(rel, sizeof rel, dir, e->d_name);
        char path[PATH_MAX];
        join(path, sizeof path, root, rel);
        struct stat st;
        if (lstat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            if (strcmp(rel, "third_party") != 0 && strcmp(rel, "out") != 0) walk(root, rel, visit, ctx);
        } else if (S_ISREG(st.st_mode)) {
            visit(root, rel, ctx);
        }
    }
    closedir(d);
}

typedef struct {
    int violations;
    int files;
} Tally;

static void check_includes(const char *root, const char *rel, void *ctx) {
    Tally *t = ctx;
    if (!is_source(rel)) return;
    int own = floor_of(rel);
    if (own < 0) return;
    t->files++;
    char path[PATH_MAX];
    join(path, sizeof path, root, rel);
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[4096];
    for (int lineno = 1; fgets(line, sizeof line, f); lineno++) {
        const char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (strncmp(p, "#include \"", 10) != 0) continue;
        p += 10;
        const char *end = strchr(p, '"');
        if (!end) continue;
        char target[PATH_MAX];
        snprintf(target, sizeof target, "%.*s", (int)(end - p), p);
        int theirs = floor_of(target);
        if (theirs > own) {
            print_error("%s:%d: includes \"%s\" (floor %d) from floor %d: a floor may include only "
                        "from its own floor and those below it\n",
                        rel, lineno, target, theirs, own);
            t->violations++;
        }
    }
    fclose(f);
}

static const char *const TOP_FOLDERS[] = {"common", "reference", "kernels",   "modules",
                                          "steps",  "exercises", "tests",     "tools"};

static Tally check_floors(const char *root) {
    Tally t = {0, 0};
    for (size_t i = 0; i < sizeof TOP_FOLDERS / sizeof TOP_FOLDERS[0]; i++)
        walk(root, TOP_FOLDERS[i], check_includes, &t);
    return t;
}

// --- header names ---------------------------------------------------------------------

typedef struct {
    char names[1024][256];
    char paths[1024][PATH_MAX / 4];
    int n;
    int duplicates;
} Headers;

static void collect_header(const char *root, const char *rel, void *ctx) {
    (void)root;
    Headers *h = ctx;
    if (!has_suffix(rel, ".h") && !has_suffix(rel, ".cuh")) return;
    const char *base = strrchr(rel, '/');
    base = base ? base + 1 : rel;
    for (int i = 0; i < h->n; i++) {
        if (strcmp(h->names[i], base) == 0) {
            print_error("%s and %s share the name %s: name one after what it holds\n", h->paths[i], rel,
                        base);
            h->duplicates++;
            return;
        }
    }
    if (h->n < 1024) {
        snprintf(h->names[h->n], sizeof h->names[0], "%s", base);
        snprintf(h->paths[h->n], sizeof h->paths[0], "%s", rel);
        h->n++;
    }
}

static int check_header_names(const char *root) {
    Headers *h = calloc(1, sizeof *h);
    for (size_t i = 0; i < sizeof TOP_FOLDERS / sizeof TOP_FOLDERS[0]; i++)
        walk(root, TOP_FOLDERS[i], collect_header, h);
    int d = h->duplicates;
    free(h);
    return d;
}

// --- Markdown links -------------------------------------------------------------------

typedef struct {
    int broken;
    int links;
} Links;

// A heading's anchor as GitHub makes it: lower case; letters, digits, '_' and '-' kept (bytes
// of UTF-8 characters too); spaces become '-'; everything else dropped.
static void heading_slug(const char *heading, char *slug, size_t n) {
    size_t k = 0;
    for (const unsigned char *c = (const unsigned char *)heading; *c && *c != '\n' && k + 1 < n; c++) {
        if (*c >= 'A' && *c <= 'Z') slug[k++] = (char)(*c - 'A' + 'a');
        else if ((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '-' || *c >= 0x80)
            slug[k++] = (char)*c;
        else if (*c == ' ') slug[k++] = '-';
    }
    slug[k] = 0;
}

// Whether the Markdown file at `path` has `anchor`: an HTML id="anchor", or a heading whose slug
// is the anchor (GitHub numbers a repeated heading's slug -1, -2, ...: accepted too).
static int has_anchor(const char *path, const char *anchor) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char id[512];
    snprintf(id, sizeof id, "id=\"%s\"", anchor);
    char line[8192], slug[8192];
    int found = 0, in_code = 0;
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, "```", 3) == 0) in_code = !in_code;
        if (in_code) continue;
        if (strstr(line, id)) found = 1;
        if (line[0] != '#') continue;
        const char *text = line + strspn(line, "#");
        heading_slug(text + strspn(text, " "), slug, sizeof slug);
        const size_t length = strlen(slug);
        if (strcmp(slug, anchor) == 0) found = 1;
        else if (strncmp(slug, anchor, length) == 0 && anchor[length] == '-' && anchor[length + 1] &&
                 strspn(anchor + length + 1, "0123456789") == strlen(anchor + length + 1))
            found = 1;
    }
    fclose(f);
    return found;
}

// Every "](target)" whose target is not a URL: the path must exist, relative to the Markdown
// file's folder; an "#anchor" tail into a Markdown file (or, alone, into this one) must name an
// anchor that file has.
static void check_links(const char *root, const char *rel, void *ctx) {
    Links *l = ctx;
    if (!has_suffix(rel, ".md")) return;
    char path[PATH_MAX];
    join(path, sizeof path, root, rel);
    FILE *f = fopen(path, "r");
    if (!f) return;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", rel);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        dir[0] = 0;
    char line[8192];
    int in_code = 0;
    for (int lineno = 1; fgets(line, sizeof line, f); lineno++) {
        if (strncmp(line, "```", 3) == 0) in_code = !in_code;
        if (in_code) continue;
        for (const char *p = strstr(line, "]("); p; p = strstr(p + 2, "](")) {
            const char *start = p + 2;
            const char *end = strpbrk(start, ") ");
            if (!end || end == start) continue;
            char target[PATH_MAX];
            snprintf(target, sizeof target, "%.*s", (int)(end - start), start);
            if (strstr(target, "://") || strncmp(target, "mailto:", 7) == 0) continue;
            char *hash = strchr(target, '#');
            const char *anchor = hash ? hash + 1 : NULL;
            if (hash) *hash = 0;
            char in_dir[PATH_MAX], full[PATH_MAX];
            join(in_dir, sizeof in_dir, root, dir);
            if (target[0]) join(full, sizeof full, in_dir, target);
            else snprintf(full, sizeof full, "%s", path);  // "#anchor": this file
            l->links++;
            struct stat st;
            if (stat(full, &st) != 0) {
                print_error("%s:%d: the link (%s) points at nothing\n", rel, lineno, target);
                l->broken++;
            } else if (anchor && *anchor && has_suffix(full, ".md") && !has_anchor(full, anchor)) {
                print_error("%s:%d: the link (%s#%s) names an anchor that file does not have\n", rel, lineno,
                            target, anchor);
                l->broken++;
            }
        }
    }
    fclose(f);
}

static int check_markdown(const char *root) {
    Links l = {0, 0};
    walk(root, "", check_links, &l);
    return l.broken;
}

// --- the tree under test ---------------------------------------------------------------

// The repository's root: the test's data file README.md is a link into the source tree
// (Bazel builds with --spawn_strategy=local), so its real path's folder is the root.
static const char *repository_root(void) {
    static char root[PATH_MAX];
    if (root[0]) return root;
    if (!realpath("README.md", root)) {
        print_error("cannot find the repository's README.md from the test's folder\n");
        return NULL;
    }
    char *slash = strrchr(root, '/');
    if (slash) *slash = 0;
    return root;
}

static void write_file(const char *root, const char *rel, const char *text) {
    char path[PATH_MAX];
    join(path, sizeof path, root, rel);
    for (char *p = path + strlen(root) + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            mkdir(path, 0755);
            *p = '/';
        }
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_the_tree_keeps_its_floors(void **state) {
    (void)state;
    const char *root = repository_root();
    assert_non_null(root);
    Tally t = check_floors(root);
    assert_true(t.files > 50);  // it read the tree, not an empty folder
    assert_int_equal(t.violations, 0);
}

static void test_no_two_headers_share_a_name(void **state) {
    (void)state;
    const char *root = repository_root();
    assert_non_null(root);
    assert_int_equal(check_header_names(root), 0);
}

static void test_every_markdown_link_resolves(void **state) {
    (void)state;
    const char *root = repository_root();
    assert_non_null(root);
    assert_int_equal(check_markdown(root), 0);
}

// The three rules on a made-up tree: clean first, then each with one planted violation.
static void test_planted_violations_are_found(void **state) {
    (void)state;
    char root[] = "/tmp/layout_test_XXXXXX";
    assert_non_null(mkdtemp(root));
    write_file(root, "common/core/errors.h", "#include <stdio.h>\n");
    write_file(root, "kernels/x/a.cu", "#include \"common/core/errors.h\"\n#include \"reference/r.h\"\n");
    write_file(root, "reference/r.h", "#include \"common/core/errors.h\"\n");
    write_file(root, "steps/driver/step.h", "#include \"modules/m.h\"\n");
    write_file(root, "modules/m.h", "#include \"kernels/x/k.h\"\n");
    write_file(root, "kernels/x/k.h", "\n");
    write_file(root, "docs/a.md", "[b](b.md) [web](https://example.com) [top](../README.md#x)\n");
    write_file(root, "README.md", "# X\n[a](docs/a.md) [runs](docs/b.md#h200-runs)\n");
    write_file(root, "docs/b.md", "## Two words\n<a id=\"h200-runs\"></a>\n[up](#two-words)\n");
    assert_int_equal(check_floors(root).violations, 0);
    assert_int_equal(check_header_names(root), 0);
    assert_int_equal(check_markdown(root), 0);

    // An upward include: the bottom floor reaching for a module.
    write_file(root, "common/core/errors.h", "#include <stdio.h>\n#include \"modules/m.h\"\n");
    assert_int_equal(check_floors(root).violations, 1);
    // The driver reaching for a step.
    write_file(root, "steps/driver/step.h", "#include \"steps/01_naive/s.h\"\n");
    assert_int_equal(check_floors(root).violations, 2);
    // An exercise stub that replaces common/fp8 code reaching for the reference.
    write_file(root, "exercises/fp8_encode.c", "#include \"reference/r.h\"\n");
    assert_int_equal(check_floors(root).violations, 3);
    // A second header named k.h.
    write_file(root, "modules/k.h", "\n");
    assert_int_equal(check_header_names(root), 1);
    // A link to a chapter that moved.
    write_file(root, "docs/a.md", "see [the chapter](01_naive.md)\n");
    assert_int_equal(check_markdown(root), 1);
    // A link to a section whose anchor was renamed, and one within a file to a heading it lacks.
    write_file(root, "README.md", "# X\n[a](docs/a.md) [runs](docs/b.md#h200-run)\n");
    assert_int_equal(check_markdown(root), 2);
    write_file(root, "docs/b.md", "## Two words\n<a id=\"h200-runs\"></a>\n[up](#three-words)\n");
    assert_int_equal(check_markdown(root), 3);

    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_planted_violations_are_found),
        cmocka_unit_test(test_the_tree_keeps_its_floors),
        cmocka_unit_test(test_no_two_headers_share_a_name),
        cmocka_unit_test(test_every_markdown_link_resolves),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
