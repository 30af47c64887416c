#include "common/io/output_file.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/core/errors.h"

void enter_invoking_directory(void) {
    const char *dir = getenv("BUILD_WORKING_DIRECTORY");
    if (!dir || !*dir) return;
    if (chdir(dir) != 0)
        fail_user("cannot enter the folder `bazel run` was started from (BUILD_WORKING_DIRECTORY=%s): %s", dir,
                  strerror(errno));
}

// Where a write to `path` goes: `path` itself, or, when it is a symbolic link, the file the link
// names (so that the link stays a link: rename() onto the link would replace it). Fails
// (fail_user, naming `flag`) for a link that leads to no file (a pipe, a terminal, nothing).
static void write_target(const char *flag, const char *path, char (*out)[PATH_MAX]) {
    struct stat sb;
    if (lstat(path, &sb) != 0 || !S_ISLNK(sb.st_mode)) {
        snprintf(*out, sizeof *out, "%s", path);
        return;
    }
    if (!realpath(path, *out) || stat(*out, &sb) != 0 || !S_ISREG(sb.st_mode))
        fail_user("%s %s: a link to something that is not a file; give a file name", flag, path);
}

// "<target>.tmp" in a buffer the caller frees.
static char *tmp_name(const char *target) {
    size_t len = strlen(target) + 5;
    char *tmp = xmalloc(len);
    snprintf(tmp, len, "%s.tmp", target);
    return tmp;
}

// A "<path>.tmp" that is already there is not ours to overwrite: another run writing it now,
// or a file of the user's.
static void refuse_existing_tmp(const char *flag, const char *path, const char *tmp) {
    fail_user("%s %s: %s is there already (a run writing it now, or a file of yours); move or remove it "
              "first",
              flag, path, tmp);
}

void input_check_readable(const char *flag, const char *path) {
    if (!path || !*path) fail_user("%s needs a file name", flag);
    FILE *f = fopen(path, "rb");
    if (!f) fail_user("%s: cannot open '%s': %s", flag, path, strerror(errno));
    struct stat sb;
    const int regular = fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode);
    fclose(f);
    if (!regular) fail_user("%s: '%s' is not a regular file", flag, path);
}

void output_check_writable(const char *flag, const char *path) {
    if (!path || !*path) fail_user("%s needs a file name", flag);
    if (strlen(path) >= PATH_MAX - 8) fail_user("%s: a path of %zu characters is too long", flag, strlen(path));
    char target[PATH_MAX], tmp[PATH_MAX + 8];  // on the stack: a refusal leaves nothing behind
    write_target(flag, path, &target);
    snprintf(tmp, sizeof tmp, "%s.tmp", target);
    struct stat sb;
    if (stat(target, &sb) == 0 && S_ISDIR(sb.st_mode))
        fail_user("%s %s: that is a folder; give a file name", flag, path);
    if (stat(target, &sb) == 0 && !S_ISREG(sb.st_mode))
        fail_user("%s %s: that is not a regular file; give a file name", flag, path);
    if (lstat(tmp, &sb) == 0) refuse_existing_tmp(flag, path, tmp);
    FILE *f = fopen(tmp, "wx");  // created here, so removed again
    if (!f) fail_user("%s %s: cannot write there: %s", flag, path, strerror(errno));
    fclose(f);
    remove(tmp);
}

void output_check_distinct(const char *flag_a, const char *a, const char *flag_b, const char *b) {
    if (!a || !b) return;
    struct stat sa, sb;
    const int same = (stat(a, &sa) == 0 && stat(b, &sb) == 0) ? sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
                                                               : strcmp(a, b) == 0;
    if (same) fail_user("%s %s and %s %s name the same file: give each its own", flag_a, a, flag_b, b);
}

FILE *output_open(const char *path, const char *mode) {
    char target[PATH_MAX];
    write_target("output", path, &target);
    char *tmp = tmp_name(target);
    char exclusive[8];
    snprintf(exclusive, sizeof exclusive, "%sx", mode);  // C11's "x": fails if the file exists
    FILE *f = fopen(tmp, exclusive);
    if (!f && errno == EEXIST) refuse_existing_tmp("output", path, tmp);
    if (!f) fail_user("cannot create '%s': %s", tmp, strerror(errno));
    free(tmp);
    return f;
}

void output_commit(FILE *f, const char *path) {
    char target[PATH_MAX];
    write_target("output", path, &target);
    char *tmp = tmp_name(target);
    int ok = !ferror(f);
    int saved_errno = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        saved_errno = errno;
    }
    if (!ok) {
        remove(tmp);
        fail_user("cannot write '%s': %s", tmp, strerror(saved_errno));
    }
    if (rename(tmp, target) != 0) {
        saved_errno = errno;
        remove(tmp);
        fail_user("cannot rename '%s' to '%s': %s", tmp, target, strerror(saved_errno));
    }
    free(tmp);
}
