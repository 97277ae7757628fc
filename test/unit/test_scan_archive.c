/* Tests for agent/scan_archive.c: archives built here with libarchive's
 * writer (zip, tar.gz, nested, bombs, encrypted, damaged) through the walker,
 * from memory and from a file. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <archive.h>
#include <archive_entry.h>

#include "agent/scan_archive.h"
#include "shared/err.h"
#include "shared/mem.h"
#include "testutil.h"

#define ZEROS_BYTES ((size_t)10 * 1024 * 1024)

/* What the callbacks saw: paths joined by ',', data concatenated, problems. */
struct seen {
    size_t count;
    struct mmr_buf paths;
    struct mmr_buf data;
    unsigned max_depth;
    size_t problems;
    enum mmr_scan_archive_reason reasons[32];
    struct mmr_buf problem_paths;
    int stop_after;
};

static int on_member(const char *path, unsigned depth, const void *data, size_t len, void *ud)
{
    struct seen *s = ud;
    s->count++;
    mmr_buf_appendf(&s->paths, "%s%s", s->paths.len ? "," : "", path);
    mmr_buf_append(&s->data, data, len);
    if (depth > s->max_depth)
        s->max_depth = depth;
    return s->stop_after && s->count == (size_t)s->stop_after ? 42 : 0;
}

static void on_problem(const char *path, unsigned depth, enum mmr_scan_archive_reason reason,
                       const char *message, void *ud)
{
    struct seen *s = ud;
    cr_assert(message[0] != '\0');
    cr_assert(depth <= MMR_SCAN_ARCHIVE_MAX_DEPTH);
    if (s->problems < 32)
        s->reasons[s->problems] = reason;
    s->problems++;
    mmr_buf_appendf(&s->problem_paths, "%s%s", s->problem_paths.len ? "," : "", path);
}

static void seen_free(struct seen *s)
{
    mmr_buf_free(&s->paths);
    mmr_buf_free(&s->data);
    mmr_buf_free(&s->problem_paths);
}

static bool had(const struct seen *s, enum mmr_scan_archive_reason reason)
{
    for (size_t i = 0; i < s->problems && i < 32; i++)
        if (s->reasons[i] == reason)
            return true;
    return false;
}

static int walk(const char *name, const struct mmr_buf *arc,
                const struct mmr_scan_archive_limits *lim, struct seen *s,
                struct mmr_scan_archive_stats *st)
{
    struct mmr_scan_archive_cb cb = {.member = on_member, .problem = on_problem, .ud = s};
    return mmr_scan_archive_walk(name, arc->data, arc->len, lim, &cb, st);
}

/* ---- building archives ---------------------------------------------------- */

enum kind { ZIP, ZIP_STORE, TAR, TAR_GZ, RAW_GZ };

struct member {
    const char *name;
    const void *data;
    size_t len;
};

static la_ssize_t write_cb(struct archive *a, void *ud, const void *data, size_t len)
{
    (void)a;
    mmr_buf_append(ud, data, len);
    return (la_ssize_t)len;
}

static struct archive *writer(enum kind kind)
{
    struct archive *a = archive_write_new();
    cr_assert_not_null(a);
    int r = ARCHIVE_OK;
    switch (kind) {
    case ZIP:
    case ZIP_STORE:
        r = archive_write_set_format_zip(a);
        if (r == ARCHIVE_OK && kind == ZIP_STORE)
            r = archive_write_set_format_option(a, "zip", "compression", "store");
        break;
    case TAR:
    case TAR_GZ:
        r = archive_write_set_format_pax_restricted(a);
        if (r == ARCHIVE_OK)
            r = archive_write_set_format_option(a, "pax", "hdrcharset", "BINARY");
        if (r == ARCHIVE_OK && kind == TAR_GZ)
            r = archive_write_add_filter_gzip(a);
        break;
    case RAW_GZ:
        r = archive_write_set_format_raw(a);
        if (r == ARCHIVE_OK)
            r = archive_write_add_filter_gzip(a);
        break;
    }
    /* Without this the output is padded with zeros to 10 KiB. */
    if (r == ARCHIVE_OK)
        r = archive_write_set_bytes_in_last_block(a, 1);
    cr_assert_eq(r, ARCHIVE_OK, "%s", archive_error_string(a));
    return a;
}

static void add_members(struct archive *a, const struct member *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_copy_pathname(e, m[i].name);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t)m[i].len);
        archive_entry_set_mtime(e, 1700000000, 0);
        cr_assert_eq(archive_write_header(a, e), ARCHIVE_OK, "%s", archive_error_string(a));
        if (m[i].len)
            cr_assert_eq(archive_write_data(a, m[i].data, m[i].len), (la_ssize_t)m[i].len, "%s",
                         archive_error_string(a));
        archive_entry_free(e);
    }
}

static void finish(struct archive *a)
{
    cr_assert_eq(archive_write_close(a), ARCHIVE_OK, "%s", archive_error_string(a));
    archive_write_free(a);
}

/* An archive of kind holding members m[0..n). */
static struct mmr_buf build(enum kind kind, const struct member *m, size_t n)
{
    struct mmr_buf out = {0};
    struct archive *a = writer(kind);
    cr_assert_eq(archive_write_open2(a, &out, NULL, write_cb, NULL, NULL), ARCHIVE_OK);
    add_members(a, m, n);
    finish(a);
    return out;
}

/* levels archives one inside the other, alternating zip and tar, with
 * "leaf.txt" in the innermost; the outermost is level 1. */
static struct mmr_buf nest(unsigned levels)
{
    struct mmr_buf cur = {0};
    mmr_buf_append(&cur, "leaf", 4);
    const char *name = "leaf.txt";
    char inner_name[32];
    for (unsigned lvl = levels; lvl >= 1; lvl--) {
        struct member m = {name, cur.data, cur.len};
        struct mmr_buf next = build(lvl % 2 ? ZIP : TAR, &m, 1);
        mmr_buf_free(&cur);
        cur = next;
        snprintf(inner_name, sizeof(inner_name), "l%u.%s", lvl, lvl % 2 ? "zip" : "tar");
        name = inner_name;
    }
    return cur;
}

/* ---- tests ---------------------------------------------------------------- */

Test(scan_archive, zip_members_and_japanese_name)
{
    struct member m[] = {
        {"a.txt", "alpha", 5},
        {"dir/b.txt", "beta", 4},
        {"テスト/日本語.txt", "nihongo", 7},
    };
    struct mmr_buf arc = build(ZIP, m, 3);
    struct seen s = {0};
    struct mmr_scan_archive_stats st;
    cr_assert_eq(walk("x.zip", &arc, NULL, &s, &st), 0, "%s", mmr_err_msg());
    cr_assert_str_eq(s.paths.data, "x.zip/a.txt,x.zip/dir/b.txt,x.zip/テスト/日本語.txt");
    cr_assert_str_eq(s.data.data, "alphabetanihongo");
    cr_assert_eq(st.members, 3);
    cr_assert_eq(st.bytes, 16);
    cr_assert_eq(st.problems, 0);
    cr_assert_eq(s.max_depth, 1);
    seen_free(&s);
    mmr_buf_free(&arc);
}

Test(scan_archive, tar_gz_and_japanese_name)
{
    struct member m[] = {{"one.txt", "1", 1}, {"テスト.txt", "two", 3}};
    struct mmr_buf arc = build(TAR_GZ, m, 2);
    struct seen s = {0};
    cr_assert_eq(walk("t.tar.gz", &arc, NULL, &s, NULL), 0, "%s", mmr_err_msg());
    cr_assert_str_eq(s.paths.data, "t.tar.gz/one.txt,t.tar.gz/テスト.txt");
    cr_assert_str_eq(s.data.data, "1two");
    seen_free(&s);
    mmr_buf_free(&arc);
}

Test(scan_archive, raw_gzip_stream)
{
    struct member m = {"data", "just some text", 14};
    struct mmr_buf arc = build(RAW_GZ, &m, 1);
    struct seen s = {0};
    cr_assert_eq(walk("notes.txt.gz", &arc, NULL, &s, NULL), 0, "%s", mmr_err_msg());
    cr_assert_str_eq(s.paths.data, "notes.txt.gz/notes.txt");
    cr_assert_str_eq(s.data.data, "just some text");
    seen_free(&s);
    mmr_buf_free(&arc);
}

Test(scan_archive, nested_zip_in_tar_in_zip)
{
    struct member evil = {"evil.txt", "EVIL", 4};
    struct mmr_buf z = build(ZIP, &evil, 1);
    struct member in_tar[] = {{"readme", "r", 1}, {"inner.zip", z.data, z.len}};
    struct mmr_buf t = build(TAR, in_tar, 2);
    struct member in_zip = {"inner.tar", t.data, t.len};
    struct mmr_buf outer = build(ZIP, &in_zip, 1);

    struct seen s = {0};
    struct mmr_scan_archive_stats st;
    cr_assert_eq(walk("outer.zip", &outer, NULL, &s, &st), 0, "%s", mmr_err_msg());
    cr_assert_str_eq(s.paths.data, "outer.zip/inner.tar,outer.zip/inner.tar/readme,"
                                   "outer.zip/inner.tar/inner.zip,"
                                   "outer.zip/inner.tar/inner.zip/evil.txt");
    cr_assert_eq(s.max_depth, 3);
    cr_assert_eq(st.members, 4);
    seen_free(&s);
    mmr_buf_free(&z);
    mmr_buf_free(&t);
    mmr_buf_free(&outer);
}

Test(scan_archive, depth_limit)
{
    struct mmr_buf arc = nest(5);
    struct seen s = {0};
    struct mmr_scan_archive_stats st;
    int rc = walk("l1.zip", &arc, NULL, &s, &st);
    cr_assert_eq(rc, MMR_ETOOBIG, "%d %s", rc, mmr_err_msg());
    cr_assert(strstr(mmr_err_msg(), "deeper") != NULL, "%s", mmr_err_msg());
    cr_assert_eq(st.first_problem, MMR_SCAN_ARCHIVE_DEPTH);
    cr_assert_eq(s.problems, 1);
    cr_assert_str_eq(s.problem_paths.data, "l1.zip/l2.tar/l3.zip/l4.tar");
    cr_assert_eq(s.max_depth, 3);
    cr_assert(strstr(s.paths.data, "leaf.txt") == NULL);

    /* With room for all five levels, the leaf is found. */
    struct seen s2 = {0};
    struct mmr_scan_archive_limits lim = {.max_depth = 5};
    cr_assert_eq(walk("l1.zip", &arc, &lim, &s2, NULL), 0, "%s", mmr_err_msg());
    cr_assert(strstr(s2.paths.data, "l1.zip/l2.tar/l3.zip/l4.tar/l5.zip/leaf.txt") != NULL);
    cr_assert_eq(s2.max_depth, 5);
    seen_free(&s);
    seen_free(&s2);
    mmr_buf_free(&arc);
}

Test(scan_archive, ratio_bomb_stops_early)
{
    char *zeros = mmr_calloc(1, ZEROS_BYTES);
    struct member m[] = {{"zeros.bin", zeros, ZEROS_BYTES}, {"after.txt", "after", 5}};
    struct mmr_buf arc = build(ZIP, m, 2);
    free(zeros);
    cr_assert_lt(arc.len, ZEROS_BYTES / 100);

    struct seen s = {0};
    struct mmr_scan_archive_stats st;
    int rc = walk("bomb.zip", &arc, NULL, &s, &st);
    cr_assert_eq(rc, MMR_ETOOBIG, "%s", mmr_err_msg());
    cr_assert_eq(st.first_problem, MMR_SCAN_ARCHIVE_RATIO);
    cr_assert(strstr(mmr_err_msg(), "bomb.zip/zeros.bin") != NULL, "%s", mmr_err_msg());
    /* Stopped within a chunk of the point where the ratio was crossed. */
    cr_assert_leq(st.bytes, MMR_SCAN_ARCHIVE_DEFAULT_RATIO_SLACK + 64 * 1024 + 100 * arc.len);
    cr_assert_eq(s.count, 0);
    seen_free(&s);
    mmr_buf_free(&arc);
}

Test(scan_archive, total_bytes_limit_ends_the_walk)
{
    char *blob = mmr_malloc(200000);
    for (size_t i = 0; i < 200000; i++)
        blob[i] = (char)((i * 2654435761u) >> 13);
    struct member m[] = {{"a", blob, 200000}, {"b", blob, 200000}, {"c", blob, 200000}};
    struct mmr_buf arc = build(ZIP_STORE, m, 3);
    free(blob);
    struct seen s = {0};
    struct mmr_scan_archive_stats st;
    struct mmr_scan_archive_limits lim = {.max_total_bytes = 300000};
    cr_assert_eq(walk("big.zip", &arc, &lim, &s, &st), MMR_ETOOBIG);
    cr_assert_eq(st.first_problem, MMR_SCAN_ARCHIVE_TOTAL);
    cr_assert_eq(s.count, 1);
    cr_assert_eq(s.problems, 1);
    cr_assert_leq(st.bytes, 300000 + 64 * 1024);
    seen_free(&s);
    mmr_buf_free(&arc);
}

Test(scan_archive, member_size_skips_in_zip_and_leaves_tar_gz)
{
    char big[5000];
    memset(big, 'x', sizeof(big));
    struct member m[] = {{"small1", "s1", 2}, {"big", big, sizeof(big)}, {"small2", "s2", 2}};
    struct mmr_scan_archive_limits lim = {.max_member_bytes = 1000};

    struct mmr_buf zip = build(ZIP, m, 3);
    struct seen s = {0};
    cr_assert_eq(walk("m.zip", &zip, &lim, &s, NULL), MMR_ETOOBIG);
    cr_assert_str_eq(s.paths.data, "m.zip/small1,m.zip/small2");
    cr_assert(had(&s, MMR_SCAN_ARCHIVE_MEMBER_SIZE));
    cr_assert_str_eq(s.problem_paths.data, "m.zip/big");

    /* Skipping inside a gzip stream would decompress the member anyway. */
    struct mmr_buf tgz = build(TAR_GZ, m, 3);
    struct seen s2 = {0};
    cr_assert_eq(walk("m.tgz", &tgz, &lim, &s2, NULL), MMR_ETOOBIG);
    cr_assert_str_eq(s2.paths.data, "m.tgz/small1");
    cr_assert(strstr(mmr_err_msg(), "rest of the container") != NULL, "%s", mmr_err_msg());
    seen_free(&s);
    seen_free(&s2);
    mmr_buf_free(&zip);
    mmr_buf_free(&tgz);
}

Test(scan_archive, too_many_members)
{
    struct member m[50];
    char names[50][16];
    for (int i = 0; i < 50; i++) {
        snprintf(names[i], sizeof(names[i]), "f%d", i);
        m[i] = (struct member){names[i], "x", 1};
    }
    struct mmr_buf arc = build(TAR, m, 50);
    struct seen s = {0};
    struct mmr_scan_archive_stats st;
    struct mmr_scan_archive_limits lim = {.max_members = 10};
    cr_assert_eq(walk("many.tar", &arc, &lim, &s, &st), MMR_ETOOBIG);
    cr_assert_eq(st.first_problem, MMR_SCAN_ARCHIVE_MEMBERS);
    cr_assert_eq(s.count, 10);
    seen_free(&s);
    mmr_buf_free(&arc);
}

Test(scan_archive, truncated_archives)
{
    char blob[3000]; /* incompressible, so that half the gzip stream is half the tar */
    uint32_t x = 7;
    for (size_t i = 0; i < sizeof(blob); i++) {
        x = x * 1103515245u + 12345u;
        blob[i] = (char)(x >> 16);
    }
    struct member m[] = {{"first", "1", 1}, {"second", blob, sizeof(blob)}};
    enum kind kinds[] = {ZIP, TAR_GZ, TAR};
    for (size_t k = 0; k < 3; k++) {
        struct mmr_buf arc = build(kinds[k], m, 2);
        /* Every cut: never a crash; a cut archive is corrupt or not one at all. */
        for (size_t cut = 1; cut < arc.len; cut += (cut < 600 ? 1 : 97)) {
            struct seen s = {0};
            struct mmr_buf part = {.data = arc.data, .len = cut, .cap = 0};
            int rc = walk("cut", &part, NULL, &s, NULL);
            cr_assert(rc == 0 || rc == MMR_ECORRUPT || rc == MMR_EINVAL, "kind %zu cut %zu: %d",
                      k, cut, rc);
            seen_free(&s);
        }
        /* Cut in the second member's data: the first is still delivered. */
        struct seen s = {0};
        size_t half = kinds[k] == TAR ? arc.len - 2000 : arc.len / 2;
        struct mmr_buf part = {.data = arc.data, .len = half, .cap = 0};
        int rc = walk("cut", &part, NULL, &s, NULL);
        /* zip's directory is at the end; libarchive then reads the local headers
         * as a stream, and the cut may fall in the directory after both. */
        if (kinds[k] != ZIP) {
            cr_assert_eq(rc, MMR_ECORRUPT, "kind %zu: %d %s", k, rc, mmr_err_msg());
            cr_assert(had(&s, MMR_SCAN_ARCHIVE_CORRUPT));
            /* gzip's read-ahead at open may already meet the cut. */
            if (kinds[k] == TAR)
                cr_assert_str_eq(s.paths.data, "cut/first", "%s", mmr_err_msg());
        } else {
            cr_assert(rc == 0 || rc == MMR_ECORRUPT || rc == MMR_EINVAL, "%d", rc);
        }
        seen_free(&s);
        mmr_buf_free(&arc);
    }
}

Test(scan_archive, garbage_and_plain_files)
{
    char buf[4096];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(buf); i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (char)(x >> 16);
    }
    buf[0] = 'Z';
    struct seen s = {0};
    struct mmr_buf g = {.data = buf, .len = sizeof(buf), .cap = 0};
    cr_assert_eq(walk("noise", &g, NULL, &s, NULL), MMR_EINVAL);
    cr_assert(strstr(mmr_err_msg(), "not an archive") != NULL);
    cr_assert_eq(s.count + s.problems, 0);
    cr_assert_not(mmr_scan_archive_sniff("hello world\n", 12));
    cr_assert_not(mmr_scan_archive_sniff("", 0));

    /* Garbage behind a zip or gzip signature is a corrupt archive. */
    memcpy(buf, "PK\003\004", 4);
    cr_assert(mmr_scan_archive_sniff(buf, sizeof(buf)));
    int rc = walk("fake.zip", &g, NULL, &s, NULL);
    cr_assert(rc == MMR_ECORRUPT, "%d %s", rc, mmr_err_msg());
    memcpy(buf, "\037\213\010\000", 4);
    /* libarchive's gzip bidder wants more than the signature: without it the
     * bytes are no archive it reads. */
    rc = walk("fake.gz", &g, NULL, &s, NULL);
    cr_assert(rc == MMR_ECORRUPT || rc == MMR_EINVAL, "%d %s", rc, mmr_err_msg());
    cr_assert_eq(s.count, 0);
    seen_free(&s);
}

Test(scan_archive, encrypted_zip)
{
    struct archive *a = writer(ZIP);
    if (archive_write_set_format_option(a, "zip", "encryption", "zipcrypt") != ARCHIVE_OK ||
        archive_write_set_passphrase(a, "secret") != ARCHIVE_OK) {
        cr_log_warn("scan_archive.encrypted_zip skipped: this libarchive cannot write an "
                    "encrypted zip (%s)", archive_error_string(a));
        archive_write_free(a);
        return;
    }
    struct mmr_buf enc = {0};
    cr_assert_eq(archive_write_open2(a, &enc, NULL, write_cb, NULL, NULL), ARCHIVE_OK);
    struct member m = {"secret.txt", "hidden payload", 14};
    add_members(a, &m, 1);
    finish(a);

    /* An encrypted member beside a plain one, in an outer zip. */
    struct member outer_m[] = {{"locked.zip", enc.data, enc.len}, {"open.txt", "open", 4}};
    struct mmr_buf outer = build(ZIP, outer_m, 2);
    struct seen s = {0};
    cr_assert_eq(walk("o.zip", &outer, NULL, &s, NULL), MMR_EUNSUP, "%s", mmr_err_msg());
    cr_assert(had(&s, MMR_SCAN_ARCHIVE_ENCRYPTED));
    cr_assert_str_eq(s.problem_paths.data, "o.zip/locked.zip/secret.txt");
    cr_assert_str_eq(s.paths.data, "o.zip/locked.zip,o.zip/open.txt");
    cr_assert(strstr(s.data.data ? s.data.data : "", "hidden payload") == NULL);
    seen_free(&s);
    mmr_buf_free(&enc);
    mmr_buf_free(&outer);
}

Test(scan_archive, callback_stops_the_walk)
{
    struct member m[] = {{"a", "1", 1}, {"b", "2", 1}, {"c", "3", 1}};
    struct mmr_buf arc = build(ZIP, m, 3);
    struct seen s = {.stop_after = 2};
    cr_assert_eq(walk("s.zip", &arc, NULL, &s, NULL), 42);
    cr_assert_eq(s.count, 2);
    seen_free(&s);
    mmr_buf_free(&arc);
}

Test(scan_archive, from_a_file)
{
    struct member evil = {"evil.txt", "EVIL", 4};
    struct mmr_buf z = build(ZIP, &evil, 1);
    struct member in_tar[] = {{"テスト.zip", z.data, z.len}};
    struct mmr_buf t = build(TAR_GZ, in_tar, 1);

    char dir[512];
    mmr_test_mkdtemp("scanarc", dir, sizeof(dir));
    char *path = mmr_test_path(dir, "アーカイブ.tgz", NULL);
    mmr_test_write_file(path, t.data, t.len);

    struct seen s = {0};
    struct mmr_scan_archive_cb cb = {.member = on_member, .problem = on_problem, .ud = &s};
    cr_assert_eq(mmr_scan_archive_walk_file(path, "アーカイブ.tgz", NULL, &cb, NULL), 0, "%s",
                 mmr_err_msg());
    cr_assert_str_eq(s.paths.data, "アーカイブ.tgz/テスト.zip,アーカイブ.tgz/テスト.zip/evil.txt");

    char *plain = mmr_test_path(dir, "plain.txt", NULL);
    mmr_test_write_file(plain, "hello", 5);
    cr_assert_eq(mmr_scan_archive_walk_file(plain, "plain.txt", NULL, &cb, NULL), MMR_EINVAL);
    char *missing = mmr_test_path(dir, "missing", NULL);
    cr_assert_eq(mmr_scan_archive_walk_file(missing, "missing", NULL, &cb, NULL), MMR_ENOENT);

    cr_assert_eq(mmr_test_rmtree(dir), 0);
    free(path);
    free(plain);
    free(missing);
    seen_free(&s);
    mmr_buf_free(&z);
    mmr_buf_free(&t);
}

Test(scan_archive, reason_names)
{
    cr_assert_str_eq(mmr_scan_archive_reason_name(MMR_SCAN_ARCHIVE_RATIO), "ratio");
    cr_assert_str_eq(mmr_scan_archive_reason_name(MMR_SCAN_ARCHIVE_ENCRYPTED), "encrypted");
    cr_assert_str_eq(mmr_scan_archive_reason_name(MMR_SCAN_ARCHIVE_CORRUPT), "corrupt");
    cr_assert_str_eq(mmr_scan_archive_reason_name((enum mmr_scan_archive_reason)99), "unknown");
}
