/* Allocation wrappers that abort cleanly on out-of-memory, and a byte buffer. */
#include "shared/compiler.h"
#include "shared/mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void out_of_memory(size_t size)
{
    /* No logger here: it may itself need memory. stderr reaches the journal. */
    fprintf(stderr, "mamori: out of memory allocating %zu bytes, aborting\n", size);
    abort();
}

void *mmr_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        out_of_memory(size);
    return p;
}

void *mmr_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        out_of_memory(count * size);
    return p;
}

void *mmr_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (!p)
        out_of_memory(size);
    return p;
}

char *mmr_strdup(const char *s)
{
    return mmr_strndup(s, strlen(s));
}

char *mmr_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = mmr_malloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

MMR_PRINTF(1, 0) static char *vasprintf_checked(const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0)
        n = 0;
    char *p = mmr_malloc((size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

char *mmr_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = vasprintf_checked(fmt, ap);
    va_end(ap);
    return p;
}

static void buf_reserve(struct mmr_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->data = mmr_realloc(b->data, cap);
    b->cap = cap;
}

void mmr_buf_append(struct mmr_buf *b, const void *data, size_t len)
{
    buf_reserve(b, len);
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void mmr_buf_appendf(struct mmr_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = vasprintf_checked(fmt, ap);
    va_end(ap);
    mmr_buf_append(b, s, strlen(s));
    free(s);
}

void mmr_buf_free(struct mmr_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
