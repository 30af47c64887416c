// What both libFuzzer harnesses share (tests/fuzz, built and run by tools/fuzz.sh).
//
// Our code reports bad input with fail_user, which exits; a fuzz target must return. The
// harnesses are linked with -Wl,--wrap=exit,--wrap=malloc,...: exit() from our code (and from
// the statically linked jansson) jumps back to the harness instead, and every allocation and
// FILE opened during one input is recorded, so that what a refused input left behind is
// freed and closed before the next (else a million refusals would exhaust memory and file
// descriptors). A refusal is the expected outcome for most inputs; a crash, a sanitizer
// report or a hang is a finding.
#ifndef TESTS_FUZZ_FUZZ_SUPPORT_H
#define TESTS_FUZZ_FUZZ_SUPPORT_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

extern jmp_buf fuzz_exit_jump;  // where exit() lands during an input
extern int fuzz_exit_status;
extern int fuzz_refuse_files;   // 1: fopen refuses every path during an input (EACCES)

// Brackets one input: fuzz_begin() starts recording; fuzz_end() frees and closes what was
// left. Use as: fuzz_begin(); if (!setjmp(fuzz_exit_jump)) { ...call the code... } fuzz_end();
void fuzz_begin(void);
void fuzz_end(void);

#endif  // TESTS_FUZZ_FUZZ_SUPPORT_H
