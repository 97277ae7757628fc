/* Tests for shared/targz.c: round trips, limits, unsafe names, and damaged,
 * truncated or foreign input to the bounded reader. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <archive.h>
#include <archive_entry.h>

#include "shared/err.h"
#include "shared/gzip.h"
#include "shared/mem.h"
#include "shared/targz.h"

/* What the read callback saw: names and contents concatenated. */
struct seen {
    size_t count;
    size_t bytes;
    char names[4096];
    struct mmr_buf data;
    int stop_after; /* 0: never */
};

static int collect(const char *name, const void *data, size_t len, void *ud)
{
    struct seen *s = ud;
    s->count++;
    s->bytes += len;
    size_t used = strlen(s->names);
    snprintf(s->names + used, sizeof(s->names) - used, "%s%s", used ? "," : "", name);
    mmr_buf_append(&s->data, data, len);
    if (s->stop_after && s->count == (size_t)s->stop_after)
        return 42;
    return 0;
}

/* Builds an archive of n entries "f<i>.txt" holding "content <i>". */
static void build(size_t n, char **out, size_t *out_len)
{
    struct mmr_targz *tgz;
    cr_assert_eq(mmr_targz_new(&tgz), 0);
    for (size_t i = 0; i < n; i++) {
        char name[32];
        char body[32];
        snprintf(name, sizeof(name), "f%zu.txt", i);
        snprintf(body, sizeof(body), "content %zu", i);
        cr_assert_eq(mmr_targz_add(tgz, name, body, strlen(body), 1700000000000), 0, "%s",
                     mmr_err_msg());
    }
    cr_assert_eq(mmr_targz_finish(tgz, out, out_len), 0, "%s", mmr_err_msg());
}

Test(targz, round_trip)
{
    struct mmr_targz *tgz;
    cr_assert_eq(mmr_targz_new(&tgz), 0);
    cr_assert_eq(mmr_targz_add(tgz, "status.json", "{\"ok\":true}", 11, 1700000000123), 0);
    cr_assert_eq(mmr_targz_add(tgz, "logs/agent.log", "line 1\nline 2\n", 14, 0), 0);
    cr_assert_eq(mmr_targz_add(tgz, "empty", "", 0, -1), 0);
    cr_assert_eq(mmr_targz_add(tgz, "r\xc3\xa9sum\xc3\xa9.txt", "utf8", 4, 0), 0, "%s",
                 mmr_err_msg());
    char *out;
    size_t len;
    cr_assert_eq(mmr_targz_finish(tgz, &out, &len), 0, "%s", mmr_err_msg());
    cr_assert_gt(len, 18);
    cr_expect_eq((unsigned char)out[0], 0x1f, "gzip magic");
    cr_expect_eq((unsigned char)out[1], 0x8b, "gzip magic");

    struct seen s = {0};
    cr_assert_eq(mmr_targz_read(out, len, NULL, collect, &s), 0, "%s", mmr_err_msg());
    cr_expect_eq(s.count, 4);
    cr_expect_str_eq(s.names, "status.json,logs/agent.log,empty,r\xc3\xa9sum\xc3\xa9.txt");
    cr_expect_str_eq(s.data.data, "{\"ok\":true}line 1\nline 2\nutf8");
    mmr_buf_free(&s.data);
    free(out);
}

/* The header fields a tar tool would show: mode, type, time. */
Test(targz, entry_metadata)
{
    struct mmr_targz *tgz;
    cr_assert_eq(mmr_targz_new(&tgz), 0);
    cr_assert_eq(mmr_targz_add(tgz, "a", "x", 1, 1700000000123), 0);
    cr_assert_eq(mmr_targz_add(tgz, "old", "y", 1, -1500), 0);
    char *out;
    size_t len;
    cr_assert_eq(mmr_targz_finish(tgz, &out, &len), 0);

    struct archive *a = archive_read_new();
    archive_read_support_filter_gzip(a);
    archive_read_support_format_tar(a);
    cr_assert_eq(archive_read_open_memory(a, out, len), ARCHIVE_OK);
    struct archive_entry *e;
    cr_assert_eq(archive_read_next_header(a, &e), ARCHIVE_OK);
    cr_expect_str_eq(archive_entry_pathname(e), "a");
    cr_expect_eq(archive_entry_filetype(e), AE_IFREG);
    cr_expect_eq(archive_entry_perm(e), 0600);
    cr_expect_eq(archive_entry_mtime(e), 1700000000);
    cr_assert_eq(archive_read_next_header(a, &e), ARCHIVE_OK);
    cr_expect_eq(archive_entry_mtime(e), -2, "mtime %lld", (long long)archive_entry_mtime(e));
    cr_expect_eq(archive_read_next_header(a, &e), ARCHIVE_EOF);
    archive_read_free(a);
    free(out);
}

Test(targz, many_entries)
{
    char *out;
    size_t len;
    build(2000, &out, &len);
    struct seen s = {0};
    cr_assert_eq(mmr_targz_read(out, len, NULL, collect, &s), 0, "%s", mmr_err_msg());
    cr_expect_eq(s.count, 2000);
    cr_expect(strncmp(s.names, "f0.txt,f1.txt,f2.txt", 20) == 0);
    mmr_buf_free(&s.data);
    free(out);
}

Test(targz, large_entry_round_trip)
{
    size_t n = 3 * 1024 * 1024 + 17;
    char *big = malloc(n);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        big[i] = (char)(x >> 24);
    }
    struct mmr_targz *tgz;
    cr_assert_eq(mmr_targz_new(&tgz), 0);
    cr_assert_eq(mmr_targz_add(tgz, "big.bin", big, n, 0), 0);
    char *out;
    size_t len;
    cr_assert_eq(mmr_targz_finish(tgz, &out, &len), 0);
    struct seen s = {0};
    cr_assert_eq(mmr_targz_read(out, len, NULL, collect, &s), 0, "%s", mmr_err_msg());
    cr_assert_eq(s.data.len, n);
    cr_expect(memcmp(s.data.data, big, n) == 0);
    mmr_buf_free(&s.data);
    free(out);
    free(big);
}

Test(targz, empty_archive)
{
    struct mmr_targz *tgz;
    cr_assert_eq(mmr_targz_new(&tgz), 0);
    char *out;
    size_t len;
    cr_assert_eq(mmr_targz_finish(tgz, &out, &len), 0, "%s", mmr_err_msg());
    cr_assert_gt(len, 0);
    struct seen s = {0};
    cr_expect_eq(mmr_targz_read(out, len, NULL, collect, &s), 0, "%s", mmr_err_msg());
    cr_expect_eq(s.count, 0);
    free(out);
}

Test(targz, free_unfinished)
{
    struct mmr_targz *tgz;
    cr_assert_eq(mmr_targz_new(&tgz), 0);
    cr_assert_eq(mmr_targz_add(tgz, "a", "abc", 3, 0), 0);
    mmr_targz_free(tgz);
    mmr_targz_free(NULL);
}

Test(targz, unsafe_names_refused_on_add)
{
    static const char *const bad[] = {
        "",    "../x", "a/../b", "..",   "/etc/passwd", "a/",     "a//b",  "./a", "a/.", "a\\b",
        "C:x", "a\nb", "a\tb",   "\x7f", "../../a",     "a/b/..", "a/./b", "/",   ".",
    };
    struct mmr_targz *tgz;
    cr_assert_eq(mmr_targz_new(&tgz), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(mmr_targz_add(tgz, bad[i], "x", 1, 0), MMR_EINVAL, "name '%s'", bad[i]);
    }
    cr_expect(strstr(mmr_err_msg(), "names must be relative") != NULL, "%s", mmr_err_msg());
    char long_name[1100];
    memset(long_name, 'n', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    cr_expect_eq(mmr_targz_add(tgz, long_name, "x", 1, 0), MMR_EINVAL);

    char max_name[1025];
    memset(max_name, 'n', sizeof(max_name) - 1);
    max_name[sizeof(max_name) - 1] = '\0';
    cr_expect_eq(mmr_targz_add(tgz, max_name, "x", 1, 0), 0, "1024 bytes is allowed");
    /* Too large to be a real buffer: refused before data is touched. */
    cr_expect_eq(mmr_targz_add(tgz, "huge", "", SIZE_MAX, 0), MMR_ETOOBIG);

    /* A refused name does not spoil the archive. */
    static const char *const good[] = {"a", "a.b", "..a", "a..", ".hidden", "d/e/f.txt", "x y"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        cr_expect_eq(mmr_targz_add(tgz, good[i], "x", 1, 0), 0, "name '%s': %s", good[i],
                     mmr_err_msg());
    char *out;
    size_t len;
    cr_assert_eq(mmr_targz_finish(tgz, &out, &len), 0);
    struct seen s = {0};
    cr_assert_eq(mmr_targz_read(out, len, NULL, collect, &s), 0, "%s", mmr_err_msg());
    cr_expect_eq(s.count, sizeof(good) / sizeof(good[0]) + 1);
    mmr_buf_free(&s.data);
    free(out);
}

Test(targz, limit_entries)
{
    char *out;
    size_t len;
    build(11, &out, &len);
    struct mmr_targz_limits lim = {.max_entries = 10};
    struct seen s = {0};
    cr_expect_eq(mmr_targz_read(out, len, &lim, collect, &s), MMR_ETOOBIG);
    cr_expect(strstr(mmr_err_msg(), "more than 10 entries") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(s.count, 10);
    mmr_buf_free(&s.data);

    lim.max_entries = 11;
    s = (struct seen){0};
    cr_expect_eq(mmr_targz_read(out, len, &lim, collect, &s), 0);
    cr_expect_eq(s.count, 11);
    mmr_buf_free(&s.data);
    free(out);
}

Test(targz, limit_entry_bytes)
{
    struct mmr_targz *tgz;
    cr_assert_eq(mmr_targz_new(&tgz), 0);
    cr_assert_eq(mmr_targz_add(tgz, "small", "12345", 5, 0), 0);
    cr_assert_eq(mmr_targz_add(tgz, "big", "123456", 6, 0), 0);
    char *out;
    size_t len;
    cr_assert_eq(mmr_targz_finish(tgz, &out, &len), 0);
    struct mmr_targz_limits lim = {.max_entry_bytes = 5};
    struct seen s = {0};
    cr_expect_eq(mmr_targz_read(out, len, &lim, collect, &s), MMR_ETOOBIG);
    cr_expect(strstr(mmr_err_msg(), "'big'") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(s.count, 1);
    mmr_buf_free(&s.data);
    free(out);
}

/* A header that claims far more than the real data is refused from the
 * header alone, before any allocation of that size. */
Test(targz, huge_declared_size_refused_before_allocating)
{
    struct mmr_buf raw = {0};
    char hdr[512] = {0};
    snprintf(hdr, 100, "huge");
    snprintf(hdr + 100, 8, "0000600");
    snprintf(hdr + 108, 8, "0000000");
    snprintf(hdr + 116, 8, "0000000");
    snprintf(hdr + 124, 12, "77777777777"); /* 8 GiB - 1 */
    snprintf(hdr + 136, 12, "00000000000");
    hdr[156] = '0';
    memcpy(hdr + 257, "ustar", 6);
    memcpy(hdr + 263, "00", 2);
    memset(hdr + 148, ' ', 8);
    unsigned sum = 0;
    for (size_t i = 0; i < sizeof(hdr); i++)
        sum += (unsigned char)hdr[i];
    snprintf(hdr + 148, 8, "%06o", sum);
    mmr_buf_append(&raw, hdr, sizeof(hdr));
    char zeros[1024] = {0};
    mmr_buf_append(&raw, zeros, sizeof(zeros));

    /* gzip it with libarchive's raw writer. */
    struct archive *a = archive_write_new();
    archive_write_add_filter_gzip(a);
    archive_write_set_format_raw(a);
    char out[8192];
    size_t used = 0;
    cr_assert_eq(archive_write_open_memory(a, out, sizeof(out), &used), ARCHIVE_OK);
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_filetype(e, AE_IFREG);
    cr_assert_eq(archive_write_header(a, e), ARCHIVE_OK, "%s", archive_error_string(a));
    cr_assert_eq(archive_write_data(a, raw.data, raw.len), (la_ssize_t)raw.len);
    archive_write_close(a);
    archive_write_free(a);
    archive_entry_free(e);
    mmr_buf_free(&raw);

    struct seen s = {0};
    cr_expect_eq(mmr_targz_read(out, used, NULL, collect, &s), MMR_ETOOBIG);
    cr_expect(strstr(mmr_err_msg(), "'huge'") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(s.count, 0);
}

Test(targz, limit_total_bytes)
{
    char *out;
    size_t len;
    build(5, &out, &len); /* 5 x 9 bytes */
    struct mmr_targz_limits lim = {.max_total_bytes = 40};
    struct seen s = {0};
    cr_expect_eq(mmr_targz_read(out, len, &lim, collect, &s), MMR_ETOOBIG);
    cr_expect(strstr(mmr_err_msg(), "'f4.txt'") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(s.count, 4);
    mmr_buf_free(&s.data);

    lim.max_total_bytes = 45;
    s = (struct seen){0};
    cr_expect_eq(mmr_targz_read(out, len, &lim, collect, &s), 0);
    mmr_buf_free(&s.data);
    free(out);
}

Test(targz, callback_stops_walk)
{
    char *out;
    size_t len;
    build(5, &out, &len);
    struct seen s = {.stop_after = 2};
    cr_expect_eq(mmr_targz_read(out, len, NULL, collect, &s), 42);
    cr_expect_eq(s.count, 2);
    mmr_buf_free(&s.data);
    free(out);
}

Test(targz, truncated_input)
{
    char *out;
    size_t len;
    struct mmr_targz *tgz;
    cr_assert_eq(mmr_targz_new(&tgz), 0);
    char body[4096];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (char)(i * 7919 % 251);
    for (int i = 0; i < 4; i++) {
        char name[16];
        snprintf(name, sizeof(name), "part%d", i);
        cr_assert_eq(mmr_targz_add(tgz, name, body, sizeof(body), 0), 0);
    }
    cr_assert_eq(mmr_targz_finish(tgz, &out, &len), 0);
    /* Every cut short of the gzip trailer must fail cleanly, never crash. */
    for (size_t cut = 1; cut < len - 8; cut += 97) {
        struct seen s = {0};
        int rc = mmr_targz_read(out, cut, NULL, collect, &s);
        cr_expect_eq(rc, MMR_ECORRUPT, "cut at %zu of %zu: rc %d", cut, len, rc);
        cr_expect_lt(s.count, 4);
        mmr_buf_free(&s.data);
    }
    free(out);
}

Test(targz, corrupt_input)
{
    char *out;
    size_t len;
    build(3, &out, &len);
    /* Flip bytes in the deflate stream: a CRC or inflate error, never a crash. */
    for (size_t pos = 10; pos < len - 8; pos += 3) {
        char *copy = malloc(len);
        memcpy(copy, out, len);
        copy[pos] ^= 0x55;
        struct seen s = {0};
        int rc = mmr_targz_read(copy, len, NULL, collect, &s);
        cr_expect(rc == MMR_ECORRUPT || rc == 0, "flip at %zu: rc %d", pos, rc);
        mmr_buf_free(&s.data);
        free(copy);
    }
    free(out);
}

Test(targz, garbage_and_empty_input)
{
    struct seen s = {0};
    static const char garbage[] = "this is not an archive at all, just words and words";
    cr_expect_eq(mmr_targz_read(garbage, sizeof(garbage), NULL, collect, &s), MMR_ECORRUPT);
    cr_expect_eq(mmr_targz_read(garbage, 0, NULL, collect, &s), MMR_ECORRUPT);
    cr_expect_eq(mmr_targz_read(NULL, 0, NULL, collect, &s), MMR_ECORRUPT);
    static const unsigned char gz_head_only[] = {0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3};
    cr_expect_eq(mmr_targz_read(gz_head_only, sizeof(gz_head_only), NULL, collect, &s),
                 MMR_ECORRUPT);
    cr_expect_eq(s.count, 0);
}

/* Writes an archive with libarchive directly, for shapes our writer refuses. */
static void write_raw(const char *format, const char *const *names, const int *types, size_t n,
                      char *out, size_t outlen, size_t *used)
{
    struct archive *a = archive_write_new();
    if (strcmp(format, "gzip") == 0)
        archive_write_add_filter_gzip(a);
    archive_write_set_format_pax_restricted(a);
    cr_assert_eq(archive_write_open_memory(a, out, outlen, used), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, names[i]);
        archive_entry_set_filetype(e, (unsigned)types[i]);
        archive_entry_set_perm(e, 0644);
        if (types[i] == AE_IFLNK)
            archive_entry_set_symlink(e, "/etc/passwd");
        else if (types[i] == AE_IFREG)
            archive_entry_set_size(e, 2);
        cr_assert_eq(archive_write_header(a, e), ARCHIVE_OK, "%s", archive_error_string(a));
        if (types[i] == AE_IFREG)
            archive_write_data(a, "hi", 2);
        archive_entry_free(e);
    }
    cr_assert_eq(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

/* Renames the entry whose ustar header holds from (no pax record) to to, of
 * the same length, and fixes the header's checksum. For names libarchive's
 * writer does not keep: on Windows it turns every '\\' into '/'. */
static void patch_ustar_name(char *tar, size_t len, const char *from, const char *to)
{
    cr_assert_eq(strlen(from), strlen(to));
    for (size_t off = 0; off + 512 <= len; off += 512) {
        char *h = tar + off;
        if (strncmp(h, from, 100) != 0)
            continue;
        memcpy(h, to, strlen(to));
        /* The sum of the header's bytes, its own field counted as spaces. */
        memset(h + 148, ' ', 8);
        unsigned sum = 0;
        for (size_t i = 0; i < 512; i++)
            sum += (unsigned char)h[i];
        snprintf(h + 148, 8, "%06o", sum);
        h[155] = ' ';
        return;
    }
    cr_assert_fail("no ustar header names %s", from);
}

Test(targz, unsafe_names_refused_on_read)
{
    static const char *const bad[] = {"../evil", "/abs", "a/../../b", "a\\b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *names[] = {"ok", bad[i]};
        const int types[] = {AE_IFREG, AE_IFREG};
        char out[16384];
        size_t used;
        struct mmr_buf gz = {0};
        if (strchr(bad[i], '\\')) {
            names[1] = "a|b";
            write_raw("none", names, types, 2, out, sizeof(out), &used);
            patch_ustar_name(out, used, "a|b", bad[i]);
            cr_assert_eq(mmr_gzip_compress(out, used, MMR_GZIP_LEVEL_DEFAULT, &gz), 0);
        } else {
            write_raw("gzip", names, types, 2, out, sizeof(out), &used);
            mmr_buf_append(&gz, out, used);
        }
        struct seen s = {0};
        cr_expect_eq(mmr_targz_read(gz.data, gz.len, NULL, collect, &s), MMR_ECORRUPT, "%s",
                     bad[i]);
        mmr_buf_free(&gz);
        cr_expect(strstr(mmr_err_msg(), "unsafe name") != NULL, "%s", mmr_err_msg());
        cr_expect_eq(s.count, 1);
        mmr_buf_free(&s.data);
    }
}

Test(targz, directories_and_links_skipped)
{
    const char *names[] = {"dir", "dir/file", "link", "../dir2"};
    const int types[] = {AE_IFDIR, AE_IFREG, AE_IFLNK, AE_IFDIR};
    char out[16384];
    size_t used;
    write_raw("gzip", names, types, 4, out, sizeof(out), &used);
    struct seen s = {0};
    cr_expect_eq(mmr_targz_read(out, used, NULL, collect, &s), 0, "%s", mmr_err_msg());
    cr_expect_str_eq(s.names, "dir/file");
    mmr_buf_free(&s.data);

    /* Skipped entries still count towards the entry limit. */
    struct mmr_targz_limits lim = {.max_entries = 3};
    s = (struct seen){0};
    cr_expect_eq(mmr_targz_read(out, used, &lim, collect, &s), MMR_ETOOBIG);
    mmr_buf_free(&s.data);
}

Test(targz, plain_tar_refused)
{
    const char *names[] = {"a"};
    const int types[] = {AE_IFREG};
    char out[16384];
    size_t used;
    write_raw("none", names, types, 1, out, sizeof(out), &used);
    struct seen s = {0};
    cr_expect_eq(mmr_targz_read(out, used, NULL, collect, &s), MMR_ECORRUPT);
    cr_expect(strstr(mmr_err_msg(), "gzip") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(s.count, 0);

    write_raw("none", names, types, 0, out, sizeof(out), &used);
    cr_expect_eq(mmr_targz_read(out, used, NULL, collect, &s), MMR_ECORRUPT);
}
