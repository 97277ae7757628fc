/* POSIX-only tests for the scan walker: symbolic link loops and links out of
 * the root, bind-mount loops, FIFOs, unreadable directories, and pseudo
 * filesystems (/proc, /dev/pts). */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/scan_walk.h"
#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "testutil.h"

static char dir[512];

static void setup(void)
{
    mmr_test_mkdtemp("mmr-scanwalk-posix", dir, sizeof(dir));
}

static char *bound; /* a bind mount to undo */

static void teardown(void)
{
    if (bound) {
        umount2(bound, MNT_DETACH);
        free(bound);
        bound = NULL;
    }
    char *locked = mmr_test_path(dir, "locked", NULL);
    chmod(locked, 0700);
    free(locked);
    mmr_test_rmtree(dir);
}

TestSuite(scan_walk_posix, .init = setup, .fini = teardown);

struct tally {
    uint64_t files;
    bool all_regular;
    char last_skip[512];
};

static int count_file(void *ctx, const char *path, const struct mmr_file_id *id)
{
    (void)path;
    struct tally *t = ctx;
    t->files++;
    if (!id->regular)
        t->all_regular = false;
    return 0;
}

static void note_skip(void *ctx, const char *path, enum mmr_walk_skip why, const char *detail)
{
    (void)why;
    (void)detail;
    struct tally *t = ctx;
    snprintf(t->last_skip, sizeof(t->last_skip), "%s", path);
}

static struct mmr_walk_opts opts_for(struct tally *t)
{
    t->all_regular = true;
    return (struct mmr_walk_opts){.on_file = count_file, .on_skip = note_skip, .ctx = t};
}

Test(scan_walk_posix, symlinks_are_never_followed)
{
    char *sub = mmr_test_path(dir, "sub", NULL);
    char *f = mmr_test_path(dir, "sub", "f.txt", NULL);
    char *loop = mmr_test_path(dir, "sub", "loop", NULL);
    char *out = mmr_test_path(dir, "sub", "out", NULL);
    char *outfile = mmr_test_path(dir, "sub", "passwd", NULL);
    char *dangling = mmr_test_path(dir, "sub", "dangling", NULL);
    cr_assert_eq(mmr_mkdir_p(sub, false), 0);
    mmr_test_write_file(f, "x", 1);
    cr_assert_eq(symlink("..", loop), 0);
    cr_assert_eq(symlink("/etc", out), 0);
    cr_assert_eq(symlink("/etc/passwd", outfile), 0);
    cr_assert_eq(symlink("nowhere", dangling), 0);
    struct tally t = {0};
    struct mmr_walk_opts o = opts_for(&t);
    struct mmr_walk_stats st;
    cr_assert_eq(mmr_walk(dir, &o, &st), 0, "%s", mmr_err_msg());
    cr_expect_eq(st.files, 1);
    cr_expect_eq(st.dirs, 2);
    cr_expect_eq(st.skipped[MMR_WALK_SYMLINK], 4);

    /* A link given as the root is followed: the caller named it. */
    struct tally t2 = {0};
    o = opts_for(&t2);
    cr_assert_eq(mmr_walk(loop, &o, &st), 0, "%s", mmr_err_msg());
    cr_expect_eq(st.files, 1);
    cr_expect_eq(st.skipped[MMR_WALK_SYMLINK], 4);
    free(sub);
    free(f);
    free(loop);
    free(out);
    free(outfile);
    free(dangling);
}

Test(scan_walk_posix, fifo_is_special)
{
    char *fifo = mmr_test_path(dir, "pipe", NULL);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    struct tally t = {0};
    struct mmr_walk_opts o = opts_for(&t);
    struct mmr_walk_stats st;
    cr_assert_eq(mmr_walk(dir, &o, &st), 0);
    cr_expect_eq(st.files, 0);
    cr_expect_eq(st.skipped[MMR_WALK_SPECIAL], 1);
    /* As a root too, without opening it (which would block). */
    cr_assert_eq(mmr_walk(fifo, &o, &st), 0);
    cr_expect_eq(st.skipped[MMR_WALK_SPECIAL], 1);
    free(fifo);
}

Test(scan_walk_posix, unreadable_directory_is_reported_and_walk_goes_on)
{
    if (geteuid() == 0)
        cr_skip_test("root reads every directory; the removed-mid-walk test covers this");
    char *locked = mmr_test_path(dir, "locked", NULL);
    char *inside = mmr_test_path(dir, "locked", "f", NULL);
    char *other = mmr_test_path(dir, "other", NULL);
    cr_assert_eq(mmr_mkdir_p(locked, false), 0);
    mmr_test_write_file(inside, "x", 1);
    mmr_test_write_file(other, "x", 1);
    cr_assert_eq(chmod(locked, 0), 0);
    struct tally t = {0};
    struct mmr_walk_opts o = opts_for(&t);
    struct mmr_walk_stats st;
    cr_assert_eq(mmr_walk(dir, &o, &st), 0);
    cr_expect_eq(st.files, 1);
    cr_expect_eq(st.skipped[MMR_WALK_UNREADABLE], 1);
    free(locked);
    free(inside);
    free(other);
}

Test(scan_walk_posix, proc_is_pseudo)
{
    enum mmr_fs_kind kind = MMR_FS_LOCAL;
    cr_assert_eq(mmr_fs_kind("/proc", &kind), 0, "%s", mmr_err_msg());
    cr_expect_eq(kind, MMR_FS_PSEUDO);
    cr_assert_eq(mmr_fs_kind("/proc/self/status", &kind), 0);
    cr_expect_eq(kind, MMR_FS_PSEUDO);
    struct tally t = {0};
    struct mmr_walk_opts o = opts_for(&t);
    struct mmr_walk_stats st;
    cr_assert_eq(mmr_walk("/proc/self", &o, &st), 0);
    cr_expect_eq(st.files + st.dirs, 0);
    cr_expect_eq(st.skipped[MMR_WALK_PSEUDO_FS], 1);
}

Test(scan_walk_posix, dev_stays_out_of_other_and_pseudo_filesystems)
{
    /* /dev holds devices (special) and, where mounted, /dev/pts (devpts) and
     * /dev/shm (tmpfs, another filesystem). */
    struct tally t = {0};
    struct mmr_walk_opts o = opts_for(&t);
    o.max_depth = 1;
    struct mmr_walk_stats st;
    cr_assert_eq(mmr_walk("/dev", &o, &st), 0, "%s", mmr_err_msg());
    cr_expect(t.all_regular);
    cr_expect_gt(st.skipped[MMR_WALK_SPECIAL], 0);
    struct stat dev_st, pts_st;
    enum mmr_fs_kind kind;
    if (stat("/dev", &dev_st) == 0 && stat("/dev/pts", &pts_st) == 0 &&
        dev_st.st_dev != pts_st.st_dev && mmr_fs_kind("/dev/pts", &kind) == 0) {
        cr_expect_eq(kind, MMR_FS_PSEUDO);
        cr_expect_geq(st.skipped[MMR_WALK_PSEUDO_FS], 1);
    }
    struct stat shm_st;
    if (stat("/dev/shm", &shm_st) == 0 && dev_st.st_dev != shm_st.st_dev &&
        mmr_fs_kind("/dev/shm", &kind) == 0 && kind == MMR_FS_LOCAL) {
        cr_expect_geq(st.skipped[MMR_WALK_OTHER_FS], 1);
        /* Crossing is allowed into local filesystems only. */
        uint64_t dirs_before = st.dirs, pseudo_before = st.skipped[MMR_WALK_PSEUDO_FS];
        o.cross_filesystems = true;
        cr_assert_eq(mmr_walk("/dev", &o, &st), 0, "%s", mmr_err_msg());
        cr_expect_eq(st.skipped[MMR_WALK_OTHER_FS], 0);
        cr_expect_gt(st.dirs, dirs_before);
        cr_expect_eq(st.skipped[MMR_WALK_PSEUDO_FS], pseudo_before);
    }
}

Test(scan_walk_posix, bind_mount_loop_is_not_entered)
{
    /* The root mounted again inside itself: same device, same inode. */
    char *inner = mmr_test_path(dir, "again", NULL);
    char *f = mmr_test_path(dir, "f.txt", NULL);
    cr_assert_eq(mmr_mkdir_p(inner, false), 0);
    mmr_test_write_file(f, "x", 1);
    if (mount(dir, inner, NULL, MS_BIND, NULL) != 0) {
        free(inner);
        free(f);
        cr_skip_test("cannot bind-mount here (needs CAP_SYS_ADMIN)");
    }
    bound = inner;
    struct tally t = {0};
    struct mmr_walk_opts o = opts_for(&t);
    struct mmr_walk_stats st;
    cr_assert_eq(mmr_walk(dir, &o, &st), 0, "%s", mmr_err_msg());
    cr_expect_eq(st.files, 1);
    cr_expect_eq(st.dirs, 1);
    cr_expect_eq(st.skipped[MMR_WALK_LOOP], 1);
    free(f);
}
