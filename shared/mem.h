/* Allocation wrappers. Out of memory is not a recoverable condition for a
 * resident agent: these log one line and abort, so callers never check NULL. */
#ifndef MMR_MEM_H
#define MMR_MEM_H

#include "shared/compiler.h"
#include <stddef.h>

void *mmr_malloc(size_t size);
void *mmr_calloc(size_t count, size_t size);
void *mmr_realloc(void *ptr, size_t size);
char *mmr_strdup(const char *s);
char *mmr_strndup(const char *s, size_t n);
char *mmr_asprintf(const char *fmt, ...) MMR_PRINTF(1, 2);

/* A growable byte buffer; always NUL-terminated past len for convenience. */
struct mmr_buf {
    char *data;
    size_t len;
    size_t cap;
};

void mmr_buf_append(struct mmr_buf *b, const void *data, size_t len);
void mmr_buf_appendf(struct mmr_buf *b, const char *fmt, ...) MMR_PRINTF(2, 3);
void mmr_buf_free(struct mmr_buf *b);

#endif
