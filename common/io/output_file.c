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

// "<path>.tmp" in a buffer the caller frees.
static char *tmp_name(const char *path) {
    size_t len = strlen(path) + 5;
    char *tmp = xmalloc(len);
    snprintf(tmp, len, "%s.tmp", path);
    return tmp;
}

void output_check_writable(const char *flag, const char *path) {
    if (!path || !*path) fail_user("%s needs a file name", flag);
    char tmp[PATH_MAX + 8];  // on the stack: a refusal leaves nothing behind
    if (strlen(path) >= PATH_MAX) fail_user("%s: a path of %zu characters is too long", flag, strlen(path));
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        fail_user("%s %s: that is a folder; give a file name", flag, path);
    // Append mode: a .tmp file that is already there (another run's, being written) keeps
    // its contents; one that we created is removed again.
    int existed = stat(tmp, &sb) == 0;
    FILE *f = fopen(tmp, "a");
    if (!f) fail_user("%s %s: cannot write there: %s", flag, path, strerror(errno));
    fclose(f);
    if (!existed) remove(tmp);
}

FILE *output_open(const char *path, const char *mode) {
    char *tmp = tmp_name(path);
    FILE *f = fopen(tmp, mode);
    if (!f) fail_user("cannot create '%s': %s", tmp, strerror(errno));
    free(tmp);
    return f;
}

void output_commit(FILE *f, const char *path) {
    char *tmp = tmp_name(path);
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
    if (rename(tmp, path) != 0) {
        saved_errno = errno;
        remove(tmp);
        fail_user("cannot rename '%s' to '%s': %s", tmp, path, strerror(saved_errno));
    }
    free(tmp);
}
