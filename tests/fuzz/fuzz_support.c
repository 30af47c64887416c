#include "tests/fuzz/fuzz_support.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

jmp_buf fuzz_exit_jump;
int fuzz_exit_status;
int fuzz_refuse_files;

// ---- exit ------------------------------------------------------------------------------------
void __real_exit(int status) __attribute__((noreturn));
static int inside;  // 1 while an input is being run

void __wrap_exit(int status) {
    if (!inside) __real_exit(status);
    fuzz_exit_status = status;
    longjmp(fuzz_exit_jump, 1);
}

// ---- allocations: a small open-addressing set of live pointers -------------------------------
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
FILE *__real_fopen(const char *path, const char *mode);
int __real_fclose(FILE *f);

// Live pointers in an open-addressing table; touched[] lists the slots an input used, so
// that clearing after an input costs what the input allocated, not the table's size.
enum { SLOTS = 1 << 17 };
static void *live[SLOTS];
static uint32_t touched[SLOTS];
static size_t ntouched;
static FILE *open_files[64];
static void *const TOMBSTONE = (void *)1;

static size_t slot_of(void *p) { return (size_t)(((uintptr_t)p >> 4) * 2654435761u % SLOTS); }

static void remember(void *p) {
    if (!inside || !p) return;
    for (size_t i = slot_of(p), k = 0; k < SLOTS; i = (i + 1) % SLOTS, k++) {
        if (live[i] == TOMBSTONE) {
            live[i] = p;
            return;
        }
        if (!live[i]) {
            if (ntouched == SLOTS) abort();  // more live allocations than the table holds
            live[i] = p;
            touched[ntouched++] = (uint32_t)i;
            return;
        }
    }
}

static void forget(void *p) {
    if (!inside || !p) return;
    for (size_t i = slot_of(p), k = 0; k < SLOTS && live[i]; i = (i + 1) % SLOTS, k++)
        if (live[i] == p) {
            live[i] = TOMBSTONE;
            return;
        }
}

void *__wrap_malloc(size_t n) {
    void *p = __real_malloc(n);
    remember(p);
    return p;
}

void *__wrap_calloc(size_t n, size_t size) {
    void *p = __real_calloc(n, size);
    remember(p);
    return p;
}

void *__wrap_realloc(void *old, size_t n) {
    void *p = __real_realloc(old, n);
    if (p) forget(old), remember(p);
    return p;
}

void __wrap_free(void *p) {
    forget(p);
    __real_free(p);
}

char *__real_strdup(const char *s);

char *__wrap_strdup(const char *s) {
    char *p = __real_strdup(s);
    remember(p);
    return p;
}

FILE *__wrap_fopen(const char *path, const char *mode) {
    if (inside && fuzz_refuse_files) {
        errno = EACCES;
        return NULL;
    }
    FILE *f = __real_fopen(path, mode);
    for (int i = 0; inside && f && i < 64; i++)
        if (!open_files[i]) {
            open_files[i] = f;
            break;
        }
    return f;
}

int __wrap_fclose(FILE *f) {
    for (int i = 0; i < 64; i++)
        if (open_files[i] == f) open_files[i] = NULL;
    return __real_fclose(f);
}

void fuzz_begin(void) { inside = 1; }

void fuzz_end(void) {
    inside = 0;
    for (size_t k = 0; k < ntouched; k++) {
        void **slot = &live[touched[k]];
        if (*slot && *slot != TOMBSTONE) __real_free(*slot);
        *slot = NULL;
    }
    ntouched = 0;
    for (int i = 0; i < 64; i++)
        if (open_files[i]) __real_fclose(open_files[i]), open_files[i] = NULL;
}
