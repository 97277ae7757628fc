/* Tests for agent/scan_cache.c and mmr_file_identify: identities of real
 * files (unchanged, written, renamed over, Japanese names), hits and misses
 * per field, rules versions, eviction, the purge, and a lookup rate. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent_db.h"
#include "agent/scan_cache.h"
#include "shared/err.h"
#include "shared/platform.h"
#include "testutil.h"

static char dir[512];
static char *dbpath;

static void setup(void)
{
    mmr_test_mkdtemp("mmr-scancache", dir, sizeof(dir));
    dbpath = mmr_test_path(dir, "agent.db", NULL);
}

static void teardown(void)
{
    free(dbpath);
    mmr_test_rmtree(dir);
}

TestSuite(scan_cache, .init = setup, .fini = teardown);

/* ---- helpers ------------------------------------------------------------- */

static struct mmr_scan_cache *open_cache(uint64_t max_rows, unsigned batch, unsigned purge_max)
{
    struct mmr_scan_cache_opts o = {
        .max_rows = max_rows, .batch = batch, .purge_max = purge_max, .fresh_ms = -1};
    struct mmr_scan_cache *c = NULL;
    int rc = mmr_scan_cache_open(dbpath, &o, &c);
    cr_assert_eq(rc, 0, "mmr_scan_cache_open: %d %s", rc, mmr_err_msg());
    return c;
}

static struct mmr_file_id fake_id(uint64_t ino)
{
    return (struct mmr_file_id){.dev = 2049,
                                .ino = ino,
                                .size = 1000 + ino,
                                .mtime_ns = 1700000000123456789LL,
                                .ctime_ns = 1700000001987654321LL,
                                .regular = true};
}

static struct mmr_file_id identify(const char *path)
{
    struct mmr_file_id id;
    int rc = mmr_file_identify(path, false, &id);
    cr_assert_eq(rc, 0, "identify %s: %d %s", path, rc, mmr_err_msg());
    return id;
}

static bool same_id(const struct mmr_file_id *a, const struct mmr_file_id *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns && a->regular == b->regular;
}

static int lookup(struct mmr_scan_cache *c, const struct mmr_file_id *id, const char *v)
{
    int rc = mmr_scan_cache_lookup(c, id, v, NULL);
    cr_assert_geq(rc, 0, "lookup: %d %s", rc, mmr_err_msg());
    return rc;
}

static void store(struct mmr_scan_cache *c, const struct mmr_file_id *id, const char *v,
                  const char *rule)
{
    int rc = mmr_scan_cache_store(c, id, v, rule);
    cr_assert_eq(rc, 0, "store: %d %s", rc, mmr_err_msg());
}

static uint64_t count(struct mmr_scan_cache *c)
{
    uint64_t n = 0;
    int rc = mmr_scan_cache_count(c, &n);
    cr_assert_eq(rc, 0, "count: %d %s", rc, mmr_err_msg());
    return n;
}

/* ---- identity -------------------------------------------------------------- */

Test(scan_cache, identity_stable_for_unchanged_file)
{
    char *p = mmr_test_path(dir, "a.bin", NULL);
    mmr_test_write_file(p, "hello", 5);
    struct mmr_file_id a = identify(p);
    mmr_test_sleep_ms(20);
    struct mmr_file_id b = identify(p);
    cr_expect(same_id(&a, &b));
    cr_expect(a.regular);
    cr_expect_eq(a.size, 5);
    cr_expect_neq(a.ino, 0);
    /* Within a day of now: the times are Unix nanoseconds. */
    int64_t now_ns = mmr_time_now_ms() * 1000000;
    cr_expect_lt(llabs(a.mtime_ns - now_ns), 86400LL * 1000000000);
    cr_expect_lt(llabs(a.ctime_ns - now_ns), 86400LL * 1000000000);
    free(p);
}

Test(scan_cache, identity_changes_on_write)
{
    char *p = mmr_test_path(dir, "a.bin", NULL);
    mmr_test_write_file(p, "hello", 5);
    struct mmr_file_id a = identify(p);
    mmr_test_sleep_ms(30);
    /* Same size, new contents: only the times can tell. */
    mmr_test_write_at(p, 0, "HELLO", 5);
    struct mmr_file_id b = identify(p);
    cr_expect_eq(a.ino, b.ino);
    cr_expect_eq(a.size, b.size);
    cr_expect_neq(a.mtime_ns, b.mtime_ns);
    mmr_test_write_at(p, 5, "!", 1);
    struct mmr_file_id c = identify(p);
    cr_expect_eq(c.size, 6);
    free(p);
}

Test(scan_cache, identity_changes_on_rename_over)
{
    char *p = mmr_test_path(dir, "a.bin", NULL);
    char *q = mmr_test_path(dir, "b.bin", NULL);
    mmr_test_write_file(p, "hello", 5);
    mmr_test_write_file(q, "HELLO", 5);
    struct mmr_file_id a = identify(p);
    cr_assert_eq(mmr_file_rename(q, p), 0, "%s", mmr_err_msg());
    struct mmr_file_id b = identify(p);
    cr_expect_neq(a.ino, b.ino);
    cr_expect_eq(a.dev, b.dev);
    free(p);
    free(q);
}

Test(scan_cache, identity_of_directory_and_missing)
{
    struct mmr_file_id id;
    cr_assert_eq(mmr_file_identify(dir, false, &id), 0, "%s", mmr_err_msg());
    cr_expect_not(id.regular);
    char *p = mmr_test_path(dir, "missing", NULL);
    cr_expect_eq(mmr_file_identify(p, false, &id), MMR_ENOENT);
    cr_expect_eq(mmr_file_identify(p, true, &id), MMR_ENOENT);
    cr_expect_neq(strstr(mmr_err_msg(), "missing"), NULL);
    free(p);
}

Test(scan_cache, japanese_path)
{
    char *sub = mmr_test_path(dir, "テスト", NULL);
    cr_assert_eq(mmr_mkdir_p(sub, false), 0, "%s", mmr_err_msg());
    char *p = mmr_test_path(sub, "検体ファイル.exe", NULL);
    mmr_test_write_file(p, "MZ", 2);
    struct mmr_file_id a = identify(p);
    cr_expect(a.regular);
    cr_expect_eq(a.size, 2);
    struct mmr_file_id b;
    cr_assert_eq(mmr_file_identify(p, true, &b), 0, "%s", mmr_err_msg());
    cr_expect(same_id(&a, &b));

    struct mmr_scan_cache *c = open_cache(0, 0, 0);
    store(c, &a, "ルール-1", "悪性_テスト");
    mmr_scan_cache_close(c);
    c = open_cache(0, 0, 0);
    char *rule = NULL;
    cr_expect_eq(mmr_scan_cache_lookup(c, &b, "ルール-1", &rule), MMR_SCAN_CACHE_DETECTED);
    cr_expect_str_eq(rule, "悪性_テスト");
    free(rule);
    mmr_scan_cache_close(c);
    free(p);
    free(sub);
}

/* ---- hits and misses ----------------------------------------------------------- */

static void check_misses(struct mmr_scan_cache *c, const struct mmr_file_id *id)
{
    struct mmr_file_id x = *id;
    x.dev++;
    cr_expect_eq(lookup(c, &x, "v1"), MMR_SCAN_CACHE_MISS, "dev");
    x = *id;
    x.ino++;
    cr_expect_eq(lookup(c, &x, "v1"), MMR_SCAN_CACHE_MISS, "ino");
    x = *id;
    x.size--;
    cr_expect_eq(lookup(c, &x, "v1"), MMR_SCAN_CACHE_MISS, "size");
    x = *id;
    x.mtime_ns++;
    cr_expect_eq(lookup(c, &x, "v1"), MMR_SCAN_CACHE_MISS, "mtime");
    x = *id;
    x.ctime_ns++;
    cr_expect_eq(lookup(c, &x, "v1"), MMR_SCAN_CACHE_MISS, "ctime");
    x = *id;
    x.regular = false;
    cr_expect_eq(lookup(c, &x, "v1"), MMR_SCAN_CACHE_MISS, "not regular");
    cr_expect_eq(lookup(c, id, "v2"), MMR_SCAN_CACHE_MISS, "rules version");
    cr_expect_eq(lookup(c, id, "v"), MMR_SCAN_CACHE_MISS, "rules version prefix");
}

Test(scan_cache, hits_and_misses_per_field)
{
    struct mmr_scan_cache *c = open_cache(0, 0, 0);
    struct mmr_file_id clean = fake_id(1), bad = fake_id(2);
    cr_expect_eq(lookup(c, &clean, "v1"), MMR_SCAN_CACHE_MISS);
    store(c, &clean, "v1", NULL);
    store(c, &bad, "v1", "EICAR_Test");

    /* While pending in memory, then from the table, then after a reopen. */
    for (int round = 0; round < 3; round++) {
        char *rule = (char *)"x";
        cr_expect_eq(mmr_scan_cache_lookup(c, &clean, "v1", &rule), MMR_SCAN_CACHE_CLEAN);
        cr_expect_null(rule);
        cr_expect_eq(mmr_scan_cache_lookup(c, &bad, "v1", &rule), MMR_SCAN_CACHE_DETECTED);
        cr_expect_str_eq(rule, "EICAR_Test");
        free(rule);
        cr_expect_eq(lookup(c, &bad, "v1"), MMR_SCAN_CACHE_DETECTED);
        check_misses(c, &clean);
        check_misses(c, &bad);
        if (round == 0) {
            cr_assert_eq(mmr_scan_cache_flush(c), 0, "%s", mmr_err_msg());
        } else if (round == 1) {
            mmr_scan_cache_close(c);
            c = open_cache(0, 0, 0);
        }
    }
    cr_expect_eq(count(c), 2);

    /* A rescan replaces the row: the file was cleaned. */
    bad.mtime_ns += 1000;
    store(c, &bad, "v1", NULL);
    cr_expect_eq(lookup(c, &bad, "v1"), MMR_SCAN_CACHE_CLEAN);
    cr_expect_eq(count(c), 2);
    cr_expect_eq(lookup(c, &bad, "v1"), MMR_SCAN_CACHE_CLEAN);
    mmr_scan_cache_close(c);
}

Test(scan_cache, real_file_write_misses)
{
    char *p = mmr_test_path(dir, "doc.txt", NULL);
    mmr_test_write_file(p, "contents", 8);
    struct mmr_scan_cache *c = open_cache(0, 0, 0);
    struct mmr_file_id a = identify(p);
    store(c, &a, "v1", NULL);
    struct mmr_file_id b = identify(p);
    cr_expect_eq(lookup(c, &b, "v1"), MMR_SCAN_CACHE_CLEAN);
    mmr_test_sleep_ms(30);
    mmr_test_write_at(p, 0, "CONTENTS", 8);
    b = identify(p);
    cr_expect_eq(lookup(c, &b, "v1"), MMR_SCAN_CACHE_MISS);
    mmr_scan_cache_close(c);
    free(p);
}

Test(scan_cache, rules_version_change_misses_and_purges)
{
    struct mmr_scan_cache *c = open_cache(0, 16, 10);
    for (uint64_t i = 1; i <= 50; i++) {
        struct mmr_file_id id = fake_id(i);
        store(c, &id, "2024.1", NULL);
    }
    cr_expect_eq(count(c), 50);
    struct mmr_file_id one = fake_id(1);
    cr_expect_eq(lookup(c, &one, "2024.1"), MMR_SCAN_CACHE_CLEAN);
    cr_expect_eq(lookup(c, &one, "2024.2"), MMR_SCAN_CACHE_MISS);

    /* New rules: each write purges at most purge_max rows of the old. */
    struct mmr_file_id fresh = fake_id(1000);
    store(c, &fresh, "2024.2", NULL);
    cr_expect_eq(count(c), 50 + 1 - 10);
    cr_assert_eq(mmr_scan_cache_flush(c), 0, "%s", mmr_err_msg());
    cr_expect_eq(count(c), 50 + 1 - 30); /* count flushes too */
    for (int i = 0; i < 5; i++)
        cr_assert_eq(mmr_scan_cache_flush(c), 0, "%s", mmr_err_msg());
    cr_expect_eq(count(c), 1);
    cr_expect_eq(lookup(c, &fresh, "2024.2"), MMR_SCAN_CACHE_CLEAN);
    /* Back to the old version: the new row is the one that goes now. */
    store(c, &one, "2024.1", NULL);
    cr_expect_eq(count(c), 1);
    cr_expect_eq(lookup(c, &fresh, "2024.2"), MMR_SCAN_CACHE_MISS);
    cr_expect_eq(lookup(c, &one, "2024.1"), MMR_SCAN_CACHE_CLEAN);
    mmr_scan_cache_close(c);
}

Test(scan_cache, eviction_keeps_the_bound)
{
    struct mmr_scan_cache *c = open_cache(100, 7, 0);
    for (uint64_t i = 1; i <= 350; i++) {
        struct mmr_file_id id = fake_id(i);
        store(c, &id, "v1", NULL);
        if (i % 50 == 0)
            cr_expect_leq(count(c), 100);
    }
    cr_expect_eq(count(c), 100);
    /* Oldest first (same millisecond: inode order breaks the tie). */
    struct mmr_file_id old = fake_id(250), kept = fake_id(251), last = fake_id(350);
    cr_expect_eq(lookup(c, &old, "v1"), MMR_SCAN_CACHE_MISS);
    cr_expect_eq(lookup(c, &kept, "v1"), MMR_SCAN_CACHE_CLEAN);
    cr_expect_eq(lookup(c, &last, "v1"), MMR_SCAN_CACHE_CLEAN);
    mmr_scan_cache_close(c);

    /* A smaller bound on reopen trims at the first write. */
    c = open_cache(10, 0, 0);
    cr_expect_eq(count(c), 10);
    cr_expect_eq(lookup(c, &last, "v1"), MMR_SCAN_CACHE_CLEAN);
    mmr_scan_cache_close(c);
}

Test(scan_cache, not_cached_when_fresh_or_special)
{
    struct mmr_scan_cache_opts o = {0}; /* the default freshness window */
    struct mmr_scan_cache *c = NULL;
    cr_assert_eq(mmr_scan_cache_open(dbpath, &o, &c), 0, "%s", mmr_err_msg());
    char *p = mmr_test_path(dir, "new.txt", NULL);
    mmr_test_write_file(p, "just written", 12);
    struct mmr_file_id now = identify(p);
    store(c, &now, "v1", NULL);
    cr_expect_eq(lookup(c, &now, "v1"), MMR_SCAN_CACHE_MISS);
    struct mmr_file_id future = fake_id(3);
    future.ctime_ns = (mmr_time_now_ms() + 3600 * 1000) * 1000000;
    store(c, &future, "v1", NULL);
    cr_expect_eq(lookup(c, &future, "v1"), MMR_SCAN_CACHE_MISS);
    struct mmr_file_id old = fake_id(4), special = fake_id(5);
    special.regular = false;
    store(c, &old, "v1", NULL);
    store(c, &special, "v1", NULL);
    cr_expect_eq(lookup(c, &old, "v1"), MMR_SCAN_CACHE_CLEAN);
    cr_expect_eq(count(c), 1);

    cr_expect_eq(mmr_scan_cache_store(c, &old, "", NULL), MMR_EINVAL);
    cr_expect_eq(mmr_scan_cache_store(c, &old, NULL, NULL), MMR_EINVAL);
    cr_expect_eq(mmr_scan_cache_store(c, &old, "v1", ""), MMR_EINVAL);
    mmr_scan_cache_close(c);
    free(p);
}

Test(scan_cache, open_errors)
{
    struct mmr_scan_cache *c = NULL;
    char *bad = mmr_test_path(dir, "no-such-dir", "agent.db", NULL);
    cr_expect_lt(mmr_scan_cache_open(bad, NULL, &c), 0);
    cr_expect_null(c);
    free(bad);
    mmr_scan_cache_close(NULL);

    /* Rows written through another connection are seen; a detection
     * without a rule name is refused by the table. */
    c = open_cache(0, 0, 0);
    mmr_scan_cache_close(c);
    struct mmr_db *db;
    cr_assert_eq(mmr_agent_db_open(dbpath, &db), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_db_exec(db, "INSERT INTO scan_cache VALUES "
                                 "(1, 2, 3, 4, 5, 'v1', 2, 'r', 6)"), 0, "%s", mmr_err_msg());
    cr_expect_neq(mmr_db_exec(db, "INSERT INTO scan_cache VALUES "
                                  "(1, 3, 3, 4, 5, 'v1', 2, NULL, 6)"), 0);
    mmr_db_close(db);
    c = open_cache(0, 0, 0);
    struct mmr_file_id id = {.dev = 1, .ino = 2, .size = 3, .mtime_ns = 4, .ctime_ns = 5,
                             .regular = true};
    cr_expect_eq(lookup(c, &id, "v1"), MMR_SCAN_CACHE_DETECTED);
    /* Identities beyond INT64_MAX round-trip through SQLite's integers. */
    struct mmr_file_id big = fake_id(UINT64_MAX - 1);
    big.dev = UINT64_MAX;
    store(c, &big, "v1", NULL);
    cr_assert_eq(mmr_scan_cache_flush(c), 0, "%s", mmr_err_msg());
    cr_expect_eq(lookup(c, &big, "v1"), MMR_SCAN_CACHE_CLEAN);
    mmr_scan_cache_close(c);
}

/* ---- a rate, printed ------------------------------------------------------------ */

Test(scan_cache, lookup_rate_on_100k_rows, .timeout = 300)
{
    enum { ROWS = 100000 };
    struct mmr_scan_cache *c = open_cache(0, 1024, 0);
    uint64_t t0 = mmr_time_mono_ms();
    for (uint64_t i = 1; i <= ROWS; i++) {
        struct mmr_file_id id = fake_id(i * 7919);
        store(c, &id, "v1", (i % 1000) ? NULL : "Planted");
    }
    cr_assert_eq(mmr_scan_cache_flush(c), 0, "%s", mmr_err_msg());
    uint64_t t1 = mmr_time_mono_ms();
    cr_expect_eq(count(c), ROWS);
    unsigned hits = 0;
    for (uint64_t i = 1; i <= ROWS; i++) {
        struct mmr_file_id id = fake_id(i * 7919);
        hits += lookup(c, &id, "v1") != MMR_SCAN_CACHE_MISS;
    }
    uint64_t t2 = mmr_time_mono_ms();
    cr_expect_eq(hits, ROWS);
    double store_s = (double)(t1 - t0) / 1000.0, look_s = (double)(t2 - t1) / 1000.0;
    cr_log_info("scan_cache: %d stores in %.2f s (%.0f/s); %d lookups in %.2f s (%.0f/s)",
                ROWS, store_s, ROWS / (store_s > 0 ? store_s : 0.001), ROWS, look_s,
                ROWS / (look_s > 0 ? look_s : 0.001));
    mmr_scan_cache_close(c);
}
