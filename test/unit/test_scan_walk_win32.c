/* Windows-only tests for the scan walker: UNC paths are network, exclusions
 * ignore case and accept either separator, and symbolic links (reparse
 * points) are not followed. */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

#include "agent/scan_walk.h"
#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "testutil.h"

static char dir[512];

static void setup(void)
{
    mmr_test_mkdtemp("mmr-scanwalk-win", dir, sizeof(dir));
}

static void teardown(void)
{
    mmr_test_rmtree(dir);
}

TestSuite(scan_walk_win32, .init = setup, .fini = teardown);

static int count_file(void *ctx, const char *path, const struct mmr_file_id *id)
{
    (void)path;
    (void)id;
    (*(uint64_t *)ctx)++;
    return 0;
}

Test(scan_walk_win32, unc_paths_are_network)
{
    enum mmr_fs_kind kind = MMR_FS_LOCAL;
    /* Decided from the name alone: no server is contacted. */
    cr_assert_eq(mmr_fs_kind("\\\\fileserver\\share\\dir", &kind), 0);
    cr_expect_eq(kind, MMR_FS_NETWORK);
    kind = MMR_FS_LOCAL;
    cr_assert_eq(mmr_fs_kind("//fileserver/share", &kind), 0);
    cr_expect_eq(kind, MMR_FS_NETWORK);
    kind = MMR_FS_LOCAL;
    cr_assert_eq(mmr_fs_kind("\\\\?\\UNC\\fileserver\\share", &kind), 0);
    cr_expect_eq(kind, MMR_FS_NETWORK);
    cr_expect(mmr_path_fold_case());
    cr_expect(mmr_path_is_sep('\\'));
    cr_expect(mmr_path_is_sep('/'));
}

Test(scan_walk_win32, exclusions_ignore_case_and_separator_style)
{
    char *sub = mmr_test_path(dir, "Sub", NULL);
    char *f1 = mmr_test_path(dir, "Sub", "a.txt", NULL);
    char *f2 = mmr_test_path(dir, "B.TXT", NULL);
    char *f3 = mmr_test_path(dir, "c.bin", NULL);
    cr_assert_eq(mmr_mkdir_p(sub, false), 0);
    mmr_test_write_file(f1, "x", 1);
    mmr_test_write_file(f2, "x", 1);
    mmr_test_write_file(f3, "x", 1);
    /* The prefix in upper case with forward slashes. */
    char *prefix = mmr_strdup(sub);
    for (char *p = prefix; *p; p++) {
        if (*p == '\\')
            *p = '/';
        else if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    }
    const char *paths[] = {prefix};
    const char *globs[] = {"*.txt"};
    uint64_t files = 0;
    struct mmr_walk_opts o = {.on_file = count_file, .ctx = &files};
    o.exclude_paths = paths;
    o.n_exclude_paths = 1;
    o.exclude_globs = globs;
    o.n_exclude_globs = 1;
    struct mmr_walk_stats st;
    cr_assert_eq(mmr_walk(dir, &o, &st), 0, "%s", mmr_err_msg());
    cr_expect_eq(files, 1);                         /* c.bin */
    cr_expect_eq(st.skipped[MMR_WALK_EXCLUDED], 2); /* Sub, B.TXT */
    free(prefix);
    free(sub);
    free(f1);
    free(f2);
    free(f3);
}

Test(scan_walk_win32, symbolic_links_are_not_followed)
{
    char *target = mmr_test_path(dir, "real", NULL);
    char *inside = mmr_test_path(dir, "real", "f.txt", NULL);
    char *link = mmr_test_path(dir, "link", NULL);
    cr_assert_eq(mmr_mkdir_p(target, false), 0);
    mmr_test_write_file(inside, "x", 1);
    wchar_t wlink[512], wtarget[512];
    MultiByteToWideChar(CP_UTF8, 0, link, -1, wlink, 512);
    MultiByteToWideChar(CP_UTF8, 0, target, -1, wtarget, 512);
    if (!CreateSymbolicLinkW(wlink, wtarget,
                             SYMBOLIC_LINK_FLAG_DIRECTORY |
                                 SYMBOLIC_LINK_FLAG_ALLOW_UNPRIVILEGED_CREATE)) {
        /* Needs developer mode or the privilege on real Windows. */
        cr_log_warn("cannot create a symbolic link (error %lu): not tested",
                    (unsigned long)GetLastError());
        goto out;
    }
    DWORD attrs = GetFileAttributesW(wlink);
    if (attrs == INVALID_FILE_ATTRIBUTES || !(attrs & FILE_ATTRIBUTE_REPARSE_POINT)) {
        /* Wine 8 reports success and creates nothing. */
        cr_log_warn("CreateSymbolicLinkW made no reparse point: not tested");
        goto out;
    }
    uint64_t files = 0;
    struct mmr_walk_opts o = {.on_file = count_file, .ctx = &files};
    struct mmr_walk_stats st;
    cr_assert_eq(mmr_walk(dir, &o, &st), 0, "%s", mmr_err_msg());
    cr_expect_eq(files, 1);
    cr_expect_eq(st.skipped[MMR_WALK_SYMLINK], 1);
out:
    free(target);
    free(inside);
    free(link);
}
