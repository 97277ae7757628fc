/* POSIX-only tests for shared/db.c: the database and its -wal/-shm files are
 * 0600 whatever the umask, looser modes are tightened, and a -wal planted as
 * a symbolic link is refused. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shared/db.h"
#include "shared/err.h"
#include "testutil.h"

static char dir[512];
static char path[600];

static const struct mmr_db_migration migs[] = {
    {1, "CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"},
};

static void setup(void)
{
    mmr_test_mkdtemp("mmr-db-posix", dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/agent.db", dir);
}

static void teardown(void)
{
    mmr_test_rmtree(dir);
}

TestSuite(db_posix, .init = setup, .fini = teardown);

static struct mmr_db *open_ok(void)
{
    struct mmr_db *db = NULL;
    int rc = mmr_db_open(path, NULL, migs, 1, &db);
    cr_assert_eq(rc, 0, "mmr_db_open: %d %s", rc, mmr_err_msg());
    cr_assert_not_null(db);
    return db;
}

static unsigned file_mode(const char *p)
{
    struct stat sb;
    cr_assert_eq(stat(p, &sb), 0, "stat %s", p);
    return (unsigned)(sb.st_mode & 0777);
}

Test(db_posix, create_private_wal_files)
{
    mode_t old = umask(0);
    struct mmr_db *db = open_ok();
    umask(old);
    cr_assert_eq(mmr_db_exec(db, "INSERT INTO events(body) VALUES ('a'), ('b'), ('c')"), 0, "%s",
                 mmr_err_msg());
    char side[700];
    cr_expect_eq(file_mode(path), 0600);
    snprintf(side, sizeof(side), "%s-wal", path);
    cr_expect_eq(file_mode(side), 0600, "-wal mode %o", file_mode(side));
    snprintf(side, sizeof(side), "%s-shm", path);
    cr_expect_eq(file_mode(side), 0600, "-shm mode %o", file_mode(side));
    cr_expect_str_eq(mmr_db_path(db), path);
    mmr_db_close(db);
    mmr_db_close(NULL);
}

Test(db_posix, existing_files_tightened)
{
    struct mmr_db *db = open_ok();
    mmr_db_close(db);
    cr_assert_eq(chmod(path, 0644), 0);
    char wal[700];
    snprintf(wal, sizeof(wal), "%s-wal", path);
    mmr_test_write_file(wal, "", 0);
    cr_assert_eq(chmod(wal, 0666), 0);
    db = open_ok();
    cr_expect_eq(file_mode(path), 0600);
    cr_expect_eq(file_mode(wal), 0600);
    mmr_db_close(db);
}

/* A -wal planted as a symlink (to a directory here) is not followed. */
Test(db_posix, sidecar_symlink_refused)
{
    char wal[700];
    snprintf(wal, sizeof(wal), "%s-wal", path);
    cr_assert_eq(symlink(dir, wal), 0);
    struct mmr_db *db = NULL;
    int rc = mmr_db_open(path, NULL, migs, 1, &db);
    cr_expect_lt(rc, 0);
    cr_expect(strstr(mmr_err_msg(), "owner-only") != NULL, "%s", mmr_err_msg());
    cr_expect(strstr(mmr_err_msg(), "-wal") != NULL, "%s", mmr_err_msg());
    cr_expect_null(db);
}
