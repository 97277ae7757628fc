/* POSIX-only tests for mmr_file_identify and the scan cache: a chmod moves
 * only ctime, a restored mtime still misses, and symbolic links. */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/scan_cache.h"
#include "shared/err.h"
#include "shared/platform.h"
#include "testutil.h"

static char dir[512];

static void setup(void)
{
    mmr_test_mkdtemp("mmr-scancache-posix", dir, sizeof(dir));
}

static void teardown(void)
{
    mmr_test_rmtree(dir);
}

TestSuite(scan_cache_posix, .init = setup, .fini = teardown);

static struct mmr_file_id identify(const char *path, bool follow)
{
    struct mmr_file_id id;
    int rc = mmr_file_identify(path, follow, &id);
    cr_assert_eq(rc, 0, "identify %s: %d %s", path, rc, mmr_err_msg());
    return id;
}

Test(scan_cache_posix, chmod_changes_only_ctime)
{
    char *p = mmr_test_path(dir, "a.sh", NULL);
    mmr_test_write_file(p, "#!/bin/sh\n", 10);
    struct mmr_file_id a = identify(p, false);
    mmr_test_sleep_ms(30);
    cr_assert_eq(chmod(p, 0755), 0);
    struct mmr_file_id b = identify(p, false);
    cr_expect_eq(a.ino, b.ino);
    cr_expect_eq(a.size, b.size);
    cr_expect_eq(a.mtime_ns, b.mtime_ns);
    cr_expect_gt(b.ctime_ns, a.ctime_ns);
    free(p);
}

Test(scan_cache_posix, restored_mtime_still_misses)
{
    char *p = mmr_test_path(dir, "doc.txt", NULL);
    char *db = mmr_test_path(dir, "agent.db", NULL);
    mmr_test_write_file(p, "original", 8);
    struct mmr_scan_cache_opts o = {.fresh_ms = -1};
    struct mmr_scan_cache *c = NULL;
    cr_assert_eq(mmr_scan_cache_open(db, &o, &c), 0, "%s", mmr_err_msg());
    struct mmr_file_id a = identify(p, false);
    cr_assert_eq(mmr_scan_cache_store(c, &a, "v1", NULL), 0, "%s", mmr_err_msg());
    mmr_test_sleep_ms(30);
    /* Same size, and the old mtime put back as a tool that hides a change
     * would: ctime gives it away. */
    mmr_test_write_at(p, 0, "ORIGINAL", 8);
    struct timespec ts[2] = {
        {.tv_sec = a.mtime_ns / 1000000000, .tv_nsec = a.mtime_ns % 1000000000},
        {.tv_sec = a.mtime_ns / 1000000000, .tv_nsec = a.mtime_ns % 1000000000},
    };
    cr_assert_eq(utimensat(AT_FDCWD, p, ts, 0), 0);
    struct mmr_file_id b = identify(p, false);
    cr_expect_eq(b.mtime_ns, a.mtime_ns);
    cr_expect_eq(b.size, a.size);
    cr_expect_eq(mmr_scan_cache_lookup(c, &b, "v1", NULL), MMR_SCAN_CACHE_MISS);
    mmr_scan_cache_close(c);
    free(db);
    free(p);
}

Test(scan_cache_posix, symlinks)
{
    char *target = mmr_test_path(dir, "target", NULL);
    char *link = mmr_test_path(dir, "link", NULL);
    char *dangling = mmr_test_path(dir, "dangling", NULL);
    mmr_test_write_file(target, "data", 4);
    cr_assert_eq(symlink("target", link), 0);
    cr_assert_eq(symlink("nowhere", dangling), 0);
    struct mmr_file_id l = identify(link, false), t = identify(link, true);
    struct mmr_file_id real = identify(target, false);
    cr_expect_not(l.regular);
    cr_expect(t.regular);
    cr_expect_eq(t.ino, real.ino);
    cr_expect_neq(l.ino, real.ino);
    struct mmr_file_id d = identify(dangling, false);
    cr_expect_not(d.regular);
    cr_expect_eq(mmr_file_identify(dangling, true, &d), MMR_ENOENT);
    free(target);
    free(link);
    free(dangling);
}
