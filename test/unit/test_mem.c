/* Unit tests for shared/mem.c: the allocation wrappers (including the abort
 * on out-of-memory), string helpers and the growable buffer. */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shared/mem.h"

/* Under AddressSanitizer an impossible allocation is reported and kills the
 * process before malloc returns; these tests need the NULL that mmr_malloc
 * turns into an abort, as it would see in production. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

Test(mem, zero_sizes_give_usable_pointers)
{
    void *a = mmr_malloc(0);
    void *b = mmr_calloc(0, 8);
    void *c = mmr_calloc(8, 0);
    void *d = mmr_realloc(NULL, 0);
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert_not_null(c);
    cr_assert_not_null(d);
    d = mmr_realloc(d, 0);
    cr_assert_not_null(d);
    free(a);
    free(b);
    free(c);
    free(d);
}

Test(mem, calloc_zeroes)
{
    unsigned char *p = mmr_calloc(100, 3);
    for (size_t i = 0; i < 300; i++)
        cr_assert_eq(p[i], 0);
    free(p);
}

Test(mem, realloc_keeps_content)
{
    char *p = mmr_realloc(NULL, 4);
    memcpy(p, "abc", 4);
    p = mmr_realloc(p, 1 << 20);
    cr_assert_str_eq(p, "abc");
    p[(1 << 20) - 1] = 'z';
    p = mmr_realloc(p, 2);
    cr_assert_eq(p[0], 'a');
    cr_assert_eq(p[1], 'b');
    free(p);
}

Test(mem, strdup_and_strndup)
{
    char *a = mmr_strdup("");
    cr_assert_str_eq(a, "");
    char *b = mmr_strdup("日本語 text");
    cr_assert_str_eq(b, "日本語 text");
    char *c = mmr_strndup("abcdef", 3);
    cr_assert_str_eq(c, "abc");
    char *d = mmr_strndup("ab", 100);
    cr_assert_str_eq(d, "ab");
    char *e = mmr_strndup("abc", 0);
    cr_assert_str_eq(e, "");
    free(a);
    free(b);
    free(c);
    free(d);
    free(e);
}

Test(mem, strndup_reads_at_most_n_bytes)
{
    /* No NUL anywhere: strndup must stop at n. */
    char raw[5] = {'h', 'e', 'l', 'l', 'o'};
    char *p = mmr_strndup(raw, sizeof(raw));
    cr_assert_str_eq(p, "hello");
    free(p);
}

Test(mem, asprintf_formats)
{
    char *a = mmr_asprintf("%s-%d-%05.1f", "x", -3, 2.5);
    cr_assert_str_eq(a, "x--3-002.5");
    char *b = mmr_asprintf("%s", "");
    cr_assert_str_eq(b, "");
    char *c = mmr_asprintf("%10000d|", 7);
    cr_assert_eq(strlen(c), 10001);
    cr_assert_eq(c[9999], '7');
    cr_assert_eq(c[10000], '|');
    free(a);
    free(b);
    free(c);
}

Test(mem, buf_starts_empty_and_grows)
{
    struct mmr_buf b = {0};
    mmr_buf_append(&b, "", 0);
    cr_assert_not_null(b.data, "even an empty append gives a string");
    cr_assert_str_eq(b.data, "");
    cr_assert_eq(b.len, 0);

    for (int i = 0; i < 1000; i++)
        mmr_buf_append(&b, "0123456789", 10);
    cr_assert_eq(b.len, 10000);
    cr_assert_geq(b.cap, b.len + 1);
    cr_assert_eq(b.data[b.len], '\0');
    cr_assert_eq(memcmp(b.data + 9990, "0123456789", 10), 0);
    mmr_buf_free(&b);
    cr_assert_null(b.data);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(b.cap, 0);
}

Test(mem, buf_holds_binary_data)
{
    struct mmr_buf b = {0};
    mmr_buf_append(&b, "a\0b", 3);
    cr_assert_eq(b.len, 3);
    cr_assert_eq(memcmp(b.data, "a\0b", 4), 0, "NUL-terminated past len");
    mmr_buf_free(&b);
}

Test(mem, buf_appendf)
{
    struct mmr_buf b = {0};
    mmr_buf_appendf(&b, "%s=%d", "n", 1);
    mmr_buf_appendf(&b, "%s", "");
    mmr_buf_appendf(&b, ",%s=%d", "m", 22);
    cr_assert_str_eq(b.data, "n=1,m=22");
    cr_assert_eq(b.len, 8);
    mmr_buf_appendf(&b, "%300s", "!");
    cr_assert_eq(b.len, 308);
    cr_assert_eq(b.data[307], '!');
    mmr_buf_free(&b);
}

Test(mem, buf_reusable_after_free)
{
    struct mmr_buf b = {0};
    mmr_buf_append(&b, "one", 3);
    mmr_buf_free(&b);
    mmr_buf_free(&b);
    mmr_buf_append(&b, "two", 3);
    cr_assert_str_eq(b.data, "two");
    mmr_buf_free(&b);
}

/* Opaque to the optimiser, so the impossible sizes reach malloc at run time. */
static volatile size_t huge = SIZE_MAX;

Test(mem_oom, malloc_aborts, .signal = SIGABRT)
{
    free(mmr_malloc(huge));
}

Test(mem_oom, calloc_overflow_aborts, .signal = SIGABRT)
{
    free(mmr_calloc(huge / 2, 4));
}

/* Reachable from a global, so that the abort does not leave a leak behind for
 * valgrind to report. */
static void *volatile held;

Test(mem_oom, realloc_aborts, .signal = SIGABRT)
{
    held = mmr_malloc(16);
    held = mmr_realloc(held, huge);
    free(held);
}

Test(mem, strndup_with_huge_n)
{
    /* n only bounds the scan: the NUL comes first, so this allocates 5 bytes. */
    char *p = mmr_strndup("fine", huge);
    cr_assert_str_eq(p, "fine");
    free(p);
}
