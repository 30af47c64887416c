// Output files (--save, --json, --svg, --fp8-log): checked before any work, written whole; and
// the input files a flag names (--weights, --input): checked readable before any work.
//
// A run that is told to write a file should say at once if it cannot, not after minutes of
// GPU work: output_check_writable() is called while the flags are read. And a file should
// appear complete or not at all: output_open() writes "<path>.tmp" beside it, and
// output_commit() renames that over `path` (rename is atomic within a folder), so an
// interrupted or failed run never leaves a half-written file under the real name.
#ifndef COMMON_IO_OUTPUT_FILE_H
#define COMMON_IO_OUTPUT_FILE_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

// Refuses (fail_user, naming `flag`) a path that cannot be written: its folder is missing or
// not writable, the path is a folder or not a regular file (a link to a pipe), or "<path>.tmp"
// is there already (not ours to overwrite). It creates and removes "<path>.tmp" to find out,
// the file output_open() will write.
void output_check_writable(const char *flag, const char *path);

// Refuses (fail_user, naming `flag` and the reason: "--weights: cannot open 'w.safetensors': No
// such file or directory") a path that cannot be opened for reading or is not a regular file.
// What the file holds is its reader's to check (safetensors.h).
void input_check_readable(const char *flag, const char *path);

// Under `bazel run` a program starts in its runfiles folder, and Bazel names the folder it was
// run from in the environment variable BUILD_WORKING_DIRECTORY: this changes into that folder, so
// that a relative path on the command line (--save out/x, --weights w.safetensors, --fp8-log,
// --json) means what it means in the user's shell. Nothing outside `bazel run` (the variable
// unset or empty). Stops (fail_user) if the folder cannot be entered. The steps' and compare's
// flag parsing calls it first (steps/driver/options.c).
void enter_invoking_directory(void);

// Refuses (fail_user, naming both flags) two paths that name the same file - an output over an
// input (compare --pytorch P --json P), or two outputs over each other - checked while the flags
// are read. A NULL path is no path. Files that exist are compared by identity (a link or another
// spelling of the same file is the same file), others by their spelling.
void output_check_distinct(const char *flag_a, const char *a, const char *flag_b, const char *b);

// Opens "<path>.tmp" for writing ("w" or "wb"), which must not exist yet (another run's, or the
// user's: refused); fails (fail_user) if it cannot. A path that is a symbolic link is written
// through: the link's file is replaced, the link stays.
FILE *output_open(const char *path, const char *mode);
// Closes f and renames "<path>.tmp" to path; on any write error removes the .tmp file and
// fails (fail_user) with the system's reason.
void output_commit(FILE *f, const char *path);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_IO_OUTPUT_FILE_H
