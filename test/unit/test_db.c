/* Tests for shared/db.c: creation and permissions, WAL, migrations, the
 * statement cache, transactions, damaged files, and I/O faults injected
 * through the "mmr-fault" VFS (shared/db_fault.c). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/db.h"
#include "shared/db_fault.h"
#include "shared/err.h"
#include "shared/platform.h"
#include "testutil.h"

static char dir[512];
static char path[600];

static const struct mmr_db_migration migs[] = {
    {1, "CREATE TABLE events (id INTEGER PRIMARY KEY, sev INTEGER NOT NULL, body TEXT NOT NULL);"},
    {2, "CREATE INDEX events_sev ON events(sev);"
        "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;"},
    {3, "ALTER TABLE events ADD COLUMN ts INTEGER NOT NULL DEFAULT 0;"
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE child (id INTEGER PRIMARY KEY,"
        "                    p INTEGER NOT NULL REFERENCES parent(id));"},
};
#define NMIGS (sizeof(migs) / sizeof(migs[0]))

static void setup(void)
{
    mmr_test_mkdtemp("mmr-db", dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/agent.db", dir);
}

static void teardown(void)
{
    mmr_db_fault_disarm();
    mmr_test_rmtree(dir);
}

TestSuite(db, .init = setup, .fini = teardown);

static struct mmr_db *open_ok(const struct mmr_db_opts *opts, size_t nmigs)
{
    struct mmr_db *db = NULL;
    int rc = mmr_db_open(path, opts, migs, nmigs, &db);
    cr_assert_eq(rc, 0, "mmr_db_open: %d %s", rc, mmr_err_msg());
    cr_assert_not_null(db);
    return db;
}

/* The first column of the first row of sql, as an integer. */
static long long query_int(struct mmr_db *db, const char *sql)
{
    sqlite3_stmt *st;
    cr_assert_eq(mmr_db_stmt(db, sql, &st), 0, "%s", mmr_err_msg());
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s: %s", sql, sqlite3_errmsg(mmr_db_handle(db)));
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return v;
}

static const char *query_text(struct mmr_db *db, const char *sql, char *buf, size_t len)
{
    sqlite3_stmt *st;
    cr_assert_eq(mmr_db_stmt(db, sql, &st), 0, "%s", mmr_err_msg());
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    snprintf(buf, len, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_reset(st);
    return buf;
}

static bool has_table(struct mmr_db *db, const char *name)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM sqlite_master WHERE name = '%s'", name);
    return query_int(db, sql) == 1;
}

static void insert_events(struct mmr_db *db, int n, int sev)
{
    sqlite3_stmt *st;
    for (int i = 0; i < n; i++) {
        cr_assert_eq(mmr_db_stmt(db, "INSERT INTO events(sev, body) VALUES (?1, ?2)", &st), 0);
        sqlite3_bind_int(st, 1, sev);
        sqlite3_bind_text(st, 2, "an event body that takes a little room in the page", -1,
                          SQLITE_STATIC);
        cr_assert_eq(sqlite3_step(st), SQLITE_DONE);
    }
}

static void write_file(const char *p, const void *data, size_t len)
{
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void expect_sound(const char *p)
{
    struct mmr_db *db = NULL;
    int rc = mmr_db_open(p, NULL, migs, NMIGS, &db);
    cr_assert_eq(rc, 0, "reopen: %s", mmr_err_msg());
    char buf[256];
    cr_expect_eq(mmr_db_check(db, true, buf, sizeof(buf)), 0, "%s", buf);
    mmr_db_close(db);
}

/* ---- open, create, permissions ----------------------------------------- */

Test(db, pragmas_per_opts)
{
    struct mmr_db *db = open_ok(NULL, NMIGS);
    char buf[32];
    cr_expect_str_eq(query_text(db, "PRAGMA journal_mode", buf, sizeof(buf)), "wal");
    cr_expect_eq(query_int(db, "PRAGMA synchronous"), 1, "NORMAL");
    cr_expect_eq(query_int(db, "PRAGMA foreign_keys"), 1);
    cr_expect_eq(query_int(db, "PRAGMA busy_timeout"), 5000);
    mmr_db_close(db);

    struct mmr_db_opts opts = {.sync_full = true, .busy_timeout_ms = 1234};
    db = open_ok(&opts, NMIGS);
    cr_expect_eq(query_int(db, "PRAGMA synchronous"), 2, "FULL");
    cr_expect_eq(query_int(db, "PRAGMA busy_timeout"), 1234);
    mmr_db_close(db);
}

Test(db, foreign_keys_enforced)
{
    struct mmr_db *db = open_ok(NULL, NMIGS);
    cr_expect_eq(mmr_db_exec(db, "INSERT INTO child(id, p) VALUES (1, 99)"), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "FOREIGN KEY") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(mmr_db_exec(db, "INSERT INTO parent(id) VALUES (99);"
                                 "INSERT INTO child(id, p) VALUES (1, 99)"),
                 0, "%s", mmr_err_msg());
    mmr_db_close(db);
}

Test(db, memory_database)
{
    struct mmr_db *db = NULL;
    cr_assert_eq(mmr_db_open(":memory:", NULL, migs, NMIGS, &db), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_db_schema_version(db), 3);
    insert_events(db, 2, 0);
    cr_expect_eq(query_int(db, "SELECT count(*) FROM events"), 2);
    mmr_db_close(db);
}

Test(db, bad_arguments)
{
    struct mmr_db *db = (struct mmr_db *)1;
    cr_expect_eq(mmr_db_open("", NULL, migs, NMIGS, &db), MMR_EINVAL);
    cr_expect_null(db);
    static const struct mmr_db_migration gap[] = {{1, "SELECT 1"}, {3, "SELECT 1"}};
    cr_expect_eq(mmr_db_open(path, NULL, gap, 2, &db), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "migration 1 has version 3") != NULL, "%s", mmr_err_msg());
    static const struct mmr_db_migration nosql[] = {{1, NULL}};
    cr_expect_eq(mmr_db_open(path, NULL, nosql, 1, &db), MMR_EINVAL);
    struct mmr_db_opts opts = {.vfs = "no-such-vfs"};
    cr_expect_eq(mmr_db_open(path, &opts, migs, NMIGS, &db), MMR_EDB);
    cr_expect(strstr(mmr_err_msg(), "no such vfs") != NULL, "%s", mmr_err_msg());
    cr_expect_null(db);
}

Test(db, missing_directory)
{
    char p[700];
    snprintf(p, sizeof(p), "%s/no/such/dir/agent.db", dir);
    struct mmr_db *db = NULL;
    int rc = mmr_db_open(p, NULL, migs, NMIGS, &db);
    cr_expect_lt(rc, 0);
    cr_expect_neq(mmr_err_msg()[0], '\0');
    cr_expect_null(db);
}

Test(db, no_wal_refused)
{
    cr_assert_eq(mmr_db_fault_install(), 0);
    mmr_db_fault_without_shm(true);
    struct mmr_db_opts opts = {.vfs = MMR_DB_FAULT_VFS};
    struct mmr_db *db = NULL;
    cr_expect_eq(mmr_db_open(path, &opts, migs, NMIGS, &db), MMR_EUNSUP);
    cr_expect(strstr(mmr_err_msg(), "instead of 'wal'") != NULL, "%s", mmr_err_msg());
    cr_expect_null(db);
    mmr_db_fault_without_shm(false);
    db = open_ok(&opts, NMIGS);
    mmr_db_close(db);
}

Test(db, read_only)
{
    struct mmr_db_opts ro = {.read_only = true};
    struct mmr_db *db = NULL;
    cr_expect_eq(mmr_db_open(path, &ro, migs, NMIGS, &db), MMR_ENOENT);
    cr_expect(strstr(mmr_err_msg(), "agent.db") != NULL, "%s", mmr_err_msg());

    /* An older schema is accepted as it is: read-only opens do not migrate. */
    db = open_ok(NULL, 1);
    insert_events(db, 1, 2);
    mmr_db_close(db);
    db = open_ok(&ro, NMIGS);
    cr_expect_eq(mmr_db_schema_version(db), 1);
    cr_expect_eq(query_int(db, "SELECT count(*) FROM events"), 1);
    cr_expect_eq(mmr_db_exec(db, "DELETE FROM events"), MMR_EPERM);
    mmr_db_close(db);
}

/* ---- migrations ------------------------------------------------------------ */

Test(db, migrations_applied_and_reopen_idempotent)
{
    struct mmr_db *db = open_ok(NULL, NMIGS);
    cr_expect_eq(mmr_db_schema_version(db), 3);
    cr_expect(has_table(db, "events"));
    cr_expect(has_table(db, "kv"));
    cr_expect(has_table(db, "child"));
    insert_events(db, 5, 1);
    mmr_db_close(db);

    /* Re-running a migration would fail on CREATE TABLE: reopening must not. */
    for (int i = 0; i < 3; i++) {
        db = open_ok(NULL, NMIGS);
        cr_expect_eq(mmr_db_schema_version(db), 3);
        cr_expect_eq(query_int(db, "SELECT count(*) FROM events"), 5);
        mmr_db_close(db);
    }
}

Test(db, migrations_incremental)
{
    struct mmr_db *db = open_ok(NULL, 1);
    cr_expect_eq(mmr_db_schema_version(db), 1);
    cr_expect_not(has_table(db, "kv"));
    insert_events(db, 2, 3);
    mmr_db_close(db);

    db = open_ok(NULL, 2);
    cr_expect_eq(mmr_db_schema_version(db), 2);
    cr_expect(has_table(db, "kv"));
    cr_expect_not(has_table(db, "child"));
    mmr_db_close(db);

    db = open_ok(NULL, 3);
    cr_expect_eq(mmr_db_schema_version(db), 3);
    cr_expect_eq(query_int(db, "SELECT count(*) FROM events WHERE ts = 0"), 2);
    mmr_db_close(db);
}

Test(db, newer_version_refused)
{
    struct mmr_db *db = open_ok(NULL, NMIGS);
    mmr_db_close(db);
    db = (struct mmr_db *)1;
    cr_expect_eq(mmr_db_open(path, NULL, migs, 2, &db), MMR_EINVAL);
    cr_expect_null(db);
    cr_expect(strstr(mmr_err_msg(), "newer version") != NULL, "%s", mmr_err_msg());
    cr_expect(strstr(mmr_err_msg(), "schema version 3") != NULL, "%s", mmr_err_msg());
    cr_expect(strstr(mmr_err_msg(), path) != NULL, "%s", mmr_err_msg());
    struct mmr_db_opts ro = {.read_only = true};
    cr_expect_eq(mmr_db_open(path, &ro, migs, 2, &db), MMR_EINVAL);
    /* Refusal changed nothing. */
    db = open_ok(NULL, NMIGS);
    cr_expect_eq(mmr_db_schema_version(db), 3);
    mmr_db_close(db);
}

Test(db, negative_user_version_refused)
{
    struct mmr_db *db = open_ok(NULL, NMIGS);
    cr_assert_eq(mmr_db_exec(db, "PRAGMA user_version = -4"), 0);
    mmr_db_close(db);
    cr_expect_eq(mmr_db_open(path, NULL, migs, NMIGS, &db), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "-4") != NULL, "%s", mmr_err_msg());
}

Test(db, failed_migration_rolled_back)
{
    struct mmr_db *db = open_ok(NULL, 1);
    mmr_db_close(db);
    static const struct mmr_db_migration broken[] = {
        {1, "CREATE TABLE events (id INTEGER PRIMARY KEY, sev INTEGER NOT NULL, body TEXT);"},
        {2, "CREATE TABLE half (x);"
            "CREATE TABLE events (x);"}, /* already exists */
    };
    cr_expect_eq(mmr_db_open(path, NULL, broken, 2, &db), MMR_EDB);
    cr_expect(strstr(mmr_err_msg(), "migrating to schema version 2") != NULL, "%s", mmr_err_msg());
    cr_expect(strstr(mmr_err_msg(), "already exists") != NULL, "%s", mmr_err_msg());
    db = open_ok(NULL, 1);
    cr_expect_eq(mmr_db_schema_version(db), 1);
    cr_expect_not(has_table(db, "half"));
    mmr_db_close(db);
}

Test(db, migration_waits_for_writer_then_busy)
{
    struct mmr_db *a = open_ok(NULL, 1);
    cr_assert_eq(mmr_db_begin(a), 0);
    struct mmr_db_opts quick = {.busy_timeout_ms = 50};
    struct mmr_db *b = NULL;
    cr_expect_eq(mmr_db_open(path, &quick, migs, NMIGS, &b), MMR_EBUSY);
    cr_expect(strstr(mmr_err_msg(), "migrating to schema version 2") != NULL, "%s", mmr_err_msg());
    cr_expect_null(b);
    mmr_db_rollback(a);
    b = open_ok(&quick, NMIGS);
    cr_expect_eq(mmr_db_schema_version(a), 3, "a sees the migrated schema");
    mmr_db_close(b);
    mmr_db_close(a);
}

/* SQLite's recipe for changing a table: build the new one, copy, drop, rename.
 * With foreign keys on, the DROP would cascade or fail. */
Test(db, migration_rebuilds_table_with_foreign_keys)
{
    struct mmr_db *db = open_ok(NULL, NMIGS);
    cr_assert_eq(mmr_db_exec(db, "INSERT INTO parent(id) VALUES (7);"
                                 "INSERT INTO child(id, p) VALUES (1, 7)"),
                 0, "%s", mmr_err_msg());
    mmr_db_close(db);
    struct mmr_db_migration more[NMIGS + 1];
    memcpy(more, migs, sizeof(migs));
    more[NMIGS] = (struct mmr_db_migration){
        4, "CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '');"
           "INSERT INTO parent_new(id) SELECT id FROM parent;"
           "DROP TABLE parent;"
           "ALTER TABLE parent_new RENAME TO parent;"};
    cr_assert_eq(mmr_db_open(path, NULL, more, NMIGS + 1, &db), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_db_schema_version(db), 4);
    cr_expect_eq(query_int(db, "SELECT count(*) FROM child"), 1);
    cr_expect_eq(query_int(db, "PRAGMA foreign_keys"), 1, "back on after migrating");
    mmr_db_close(db);
}

Test(db, migration_breaking_foreign_keys_refused)
{
    struct mmr_db *db = open_ok(NULL, NMIGS);
    cr_assert_eq(mmr_db_exec(db, "INSERT INTO parent(id) VALUES (7);"
                                 "INSERT INTO child(id, p) VALUES (1, 7)"),
                 0, "%s", mmr_err_msg());
    mmr_db_close(db);
    struct mmr_db_migration more[NMIGS + 1];
    memcpy(more, migs, sizeof(migs));
    more[NMIGS] = (struct mmr_db_migration){4, "DELETE FROM parent"};
    cr_expect_eq(mmr_db_open(path, NULL, more, NMIGS + 1, &db), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "broken foreign keys") != NULL, "%s", mmr_err_msg());
    cr_expect(strstr(mmr_err_msg(), "'child'") != NULL, "%s", mmr_err_msg());
    db = open_ok(NULL, NMIGS);
    cr_expect_eq(mmr_db_schema_version(db), 3);
    cr_expect_eq(query_int(db, "SELECT count(*) FROM parent"), 1);
    mmr_db_close(db);
}

/* ---- statements and transactions ----------------------------------------- */

Test(db, stmt_cache)
{
    struct mmr_db *db = open_ok(NULL, NMIGS);
    insert_events(db, 3, 1);
    sqlite3_stmt *a;
    sqlite3_stmt *b;
    const char *sql = "SELECT count(*), ?1 FROM events WHERE sev = ?2";
    cr_assert_eq(mmr_db_stmt(db, sql, &a), 0);
    sqlite3_bind_text(a, 1, "bound", -1, SQLITE_STATIC);
    sqlite3_bind_int(a, 2, 1);
    cr_assert_eq(sqlite3_step(a), SQLITE_ROW);
    cr_expect_eq(sqlite3_column_int(a, 0), 3);
    cr_expect_str_eq((const char *)sqlite3_column_text(a, 1), "bound");

    /* The same text (even from another buffer) gives the same statement,
     * reset, with its bindings cleared. */
    char copy[128];
    snprintf(copy, sizeof(copy), "%s", sql);
    cr_assert_eq(mmr_db_stmt(db, copy, &b), 0);
    cr_expect_eq(a, b);
    cr_expect_not(sqlite3_stmt_busy(b));
    cr_assert_eq(sqlite3_step(b), SQLITE_ROW);
    cr_expect_eq(sqlite3_column_int(b, 0), 0, "sev = NULL matches nothing");
    cr_expect_eq(sqlite3_column_type(b, 1), SQLITE_NULL);

    sqlite3_stmt *c;
    cr_assert_eq(mmr_db_stmt(db, "SELECT 1", &c), 0);
    cr_expect_neq(c, a);
    /* Trailing white space and comments are one statement. */
    cr_expect_eq(mmr_db_stmt(db, "SELECT 2;  -- comment\n", &c), 0, "%s", mmr_err_msg());

    /* Many statements: the cache grows. */
    for (int i = 0; i < 40; i++) {
        char q[64];
        snprintf(q, sizeof(q), "SELECT %d", i);
        cr_assert_eq(mmr_db_stmt(db, q, &c), 0);
        cr_assert_eq(sqlite3_step(c), SQLITE_ROW);
        cr_expect_eq(sqlite3_column_int(c, 0), i);
    }
    cr_assert_eq(mmr_db_stmt(db, sql, &b), 0);
    cr_expect_eq(a, b);
    mmr_db_close(db);
}

Test(db, stmt_errors)
{
    struct mmr_db *db = open_ok(NULL, NMIGS);
    sqlite3_stmt *st = (sqlite3_stmt *)1;
    cr_expect_eq(mmr_db_stmt(db, "SELEKT 1", &st), MMR_EDB);
    cr_expect_null(st);
    cr_expect(strstr(mmr_err_msg(), "SELEKT 1") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(mmr_db_stmt(db, "SELECT 1; SELECT 2", &st), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "more than one statement") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(mmr_db_stmt(db, "SELECT 1; garbage", &st), MMR_EINVAL);
    cr_expect_eq(mmr_db_stmt(db, "   ", &st), MMR_EINVAL);
    cr_expect_eq(mmr_db_stmt(db, "SELECT * FROM nowhere", &st), MMR_EDB);
    cr_expect(strstr(mmr_err_msg(), "no such table") != NULL, "%s", mmr_err_msg());
    mmr_db_close(db);
}

Test(db, exec_errors)
{
    struct mmr_db *db = open_ok(NULL, NMIGS);
    cr_expect_eq(mmr_db_exec(db, "INSERT INTO kv VALUES ('a', '1')"), 0);
    cr_expect_eq(mmr_db_exec(db, "INSERT INTO kv VALUES ('a', '2')"), MMR_EEXIST);
    cr_expect(strstr(mmr_err_msg(), "UNIQUE") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(mmr_db_exec(db, "INSERT INTO events(sev, body) VALUES (1, NULL)"), MMR_EINVAL);
    const char *long_sql = "UPDATE events SET body = 'a very long statement that goes on' "
                           "WHERE nonexistent_column = 1";
    cr_expect_eq(mmr_db_exec(db, long_sql), MMR_EDB);
    cr_expect(strstr(mmr_err_msg(), "executing \"UPDATE events SET") != NULL, "%s", mmr_err_msg());
    cr_expect(strstr(mmr_err_msg(), "...\"") != NULL, "%s", mmr_err_msg());
    cr_expect(strstr(mmr_err_msg(), "no such column") != NULL, "%s", mmr_err_msg());
    mmr_db_close(db);
}

Test(db, transactions)
{
    struct mmr_db *db = open_ok(NULL, NMIGS);
    sqlite3 *h = mmr_db_handle(db);
    cr_assert_eq(mmr_db_begin(db), 0);
    insert_events(db, 4, 0);
    mmr_db_rollback(db);
    cr_expect(sqlite3_get_autocommit(h));
    cr_expect_eq(query_int(db, "SELECT count(*) FROM events"), 0);

    cr_assert_eq(mmr_db_begin(db), 0);
    insert_events(db, 4, 0);
    cr_expect_eq(mmr_db_begin(db), MMR_EDB, "no nesting");
    cr_assert_eq(mmr_db_commit(db), 0, "%s", mmr_err_msg());
    cr_expect_eq(query_int(db, "SELECT count(*) FROM events"), 4);

    mmr_db_rollback(db); /* none open: harmless */
    cr_expect_eq(mmr_db_commit(db), MMR_EDB);
    cr_expect(strstr(mmr_err_msg(), "committing") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(query_int(db, "SELECT count(*) FROM events"), 4);
    mmr_db_close(db);
}

Test(db, close_with_open_transaction_rolls_back)
{
    struct mmr_db *db = open_ok(NULL, NMIGS);
    cr_assert_eq(mmr_db_begin(db), 0);
    insert_events(db, 4, 0);
    mmr_db_close(db);
    db = open_ok(NULL, NMIGS);
    cr_expect_eq(query_int(db, "SELECT count(*) FROM events"), 0);
    mmr_db_close(db);
}

Test(db, busy_maps_to_ebusy)
{
    struct mmr_db *a = open_ok(NULL, NMIGS);
    struct mmr_db_opts quick = {.busy_timeout_ms = 50};
    struct mmr_db *b = open_ok(&quick, NMIGS);
    cr_assert_eq(mmr_db_begin(a), 0);
    cr_expect_eq(mmr_db_begin(b), MMR_EBUSY);
    cr_expect(strstr(mmr_err_msg(), "locked") != NULL, "%s", mmr_err_msg());
    /* Readers are not blocked by a writer in WAL mode. */
    cr_expect_eq(query_int(b, "SELECT count(*) FROM events"), 0);
    cr_assert_eq(mmr_db_commit(a), 0);
    cr_expect_eq(mmr_db_begin(b), 0);
    mmr_db_rollback(b);
    mmr_db_close(a);
    mmr_db_close(b);
}

/* ---- integrity and damaged files ---------------------------------------- */

/* A database of several dozen pages: events with an index. */
static long make_big_db(void)
{
    struct mmr_db *db = open_ok(NULL, NMIGS);
    cr_assert_eq(mmr_db_begin(db), 0);
    insert_events(db, 3000, 2);
    cr_assert_eq(mmr_db_commit(db), 0);
    mmr_db_close(db); /* checkpoints: everything is in the main file */
    int64_t size = mmr_file_size(path);
    cr_assert_gt(size, 40 * 4096);
    return (long)size;
}

Test(db, check_sound_database)
{
    make_big_db();
    struct mmr_db *db = open_ok(NULL, NMIGS);
    char buf[128];
    cr_expect_eq(mmr_db_check(db, false, buf, sizeof(buf)), 0);
    cr_expect_str_eq(buf, "ok");
    cr_expect_eq(mmr_db_check(db, true, buf, sizeof(buf)), 0);
    cr_expect_str_eq(buf, "ok");
    cr_expect_eq(mmr_db_check(db, true, NULL, 0), 0);
    mmr_db_close(db);
}

Test(db, garbage_file_is_corrupt)
{
    char junk[8192];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)(i * 31 + 7);
    write_file(path, junk, sizeof(junk));
    struct mmr_db *db = (struct mmr_db *)1;
    cr_expect_eq(mmr_db_open(path, NULL, migs, NMIGS, &db), MMR_ECORRUPT);
    cr_expect_null(db);
    cr_expect(strstr(mmr_err_msg(), path) != NULL, "%s", mmr_err_msg());
    cr_expect(strstr(mmr_err_msg(), "not a database") != NULL, "%s", mmr_err_msg());
    cr_expect(strstr(mmr_err_msg(), "move it aside") != NULL, "%s", mmr_err_msg());
    /* The file is left for a human to look at. */
    cr_expect_eq(mmr_file_size(path), (int64_t)sizeof(junk));

    /* Text that looks nothing like SQLite, read-only too. */
    write_file(path, "[agent]\nserver = x\n", 19);
    struct mmr_db_opts ro = {.read_only = true};
    cr_expect_eq(mmr_db_open(path, &ro, migs, NMIGS, &db), MMR_ECORRUPT);
}

Test(db, truncated_database)
{
    long size = make_big_db();
    mmr_test_truncate(path, size / 2);
    struct mmr_db *db = NULL;
    int rc = mmr_db_open(path, NULL, migs, NMIGS, &db);
    cr_expect_eq(rc, MMR_ECORRUPT, "rc %d: %s", rc, mmr_err_msg());
    cr_expect(strstr(mmr_err_msg(), "malformed") != NULL, "%s", mmr_err_msg());
    cr_expect(strstr(mmr_err_msg(), "move it aside") != NULL, "%s", mmr_err_msg());
    mmr_db_close(db);
}

/* Shorter than a header: SQLite sees no schema at all, so the open either
 * fails as corrupt or starts over; it must never crash or half-work. */
Test(db, truncated_to_a_few_bytes)
{
    make_big_db();
    mmr_test_truncate(path, 50);
    struct mmr_db *db = NULL;
    int rc = mmr_db_open(path, NULL, migs, NMIGS, &db);
    cr_expect(rc == MMR_ECORRUPT || rc == 0, "rc %d: %s", rc, mmr_err_msg());
    cr_log_info("open of a 50-byte database: %d %s", rc, mmr_err_msg());
    if (rc == 0) {
        char buf[256];
        int crc = mmr_db_check(db, false, buf, sizeof(buf));
        cr_expect(crc == 0 || crc == MMR_ECORRUPT);
        mmr_db_close(db);
    }
}

Test(db, damaged_page_found_by_check)
{
    long size = make_big_db();
    char junk[300];
    memset(junk, 0xff, sizeof(junk));
    mmr_test_write_at(path, (size / 4096 / 2) * 4096 + 100, junk, sizeof(junk));

    struct mmr_db *db = open_ok(NULL, NMIGS);
    char buf[512];
    cr_expect_eq(mmr_db_check(db, false, buf, sizeof(buf)), MMR_ECORRUPT);
    cr_expect(strstr(buf, "page") != NULL, "buf: %s", buf);
    cr_expect(strstr(buf, "*** in database") == NULL, "buf: %s", buf);
    cr_expect(strstr(mmr_err_msg(), "quick_check found problems") != NULL, "%s", mmr_err_msg());
    cr_expect(strstr(mmr_err_msg(), path) != NULL, "%s", mmr_err_msg());
    cr_expect_eq(mmr_db_check(db, true, buf, sizeof(buf)), MMR_ECORRUPT);

    /* A tiny buffer is filled and terminated, never overrun. */
    char tiny[8];
    memset(tiny, 'x', sizeof(tiny));
    cr_expect_eq(mmr_db_check(db, false, tiny, sizeof(tiny)), MMR_ECORRUPT);
    cr_expect_eq(strlen(tiny), sizeof(tiny) - 1);
    cr_expect_eq(mmr_db_check(db, false, NULL, 0), MMR_ECORRUPT);

    /* Reading the damaged table gives ECORRUPT, not a crash. */
    int rc = mmr_db_exec(db, "SELECT sum(length(body)) FROM events");
    cr_expect(rc == MMR_ECORRUPT || rc == 0, "rc %d", rc);
    mmr_db_close(db);
}

Test(db, error_codes_map)
{
    struct mmr_db *db = open_ok(NULL, NMIGS);
    sqlite3 *h = mmr_db_handle(db);
    /* Errors raised by SQL itself carry their extended code through. */
    sqlite3_exec(h, "SELECT * FROM nowhere", NULL, NULL, NULL);
    cr_expect_eq(mmr_db_error(db, "probing"), MMR_EDB);
    cr_expect(strstr(mmr_err_msg(), "probing: no such table") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(strncmp(mmr_err_msg(), path, strlen(path)), 0, "%s", mmr_err_msg());
    sqlite3_exec(h, "INSERT INTO kv VALUES ('k', 'v'); INSERT INTO kv VALUES ('k', 'v')", NULL,
                 NULL, NULL);
    cr_expect_eq(mmr_db_error(db, NULL), MMR_EEXIST);
    cr_expect(strstr(mmr_err_msg(), ": :") == NULL, "%s", mmr_err_msg());
    mmr_db_close(db);
}

/* ---- injected faults ------------------------------------------------------ */

static const struct mmr_db_opts fault_opts = {.vfs = MMR_DB_FAULT_VFS};

Test(db, fault_vfs_passes_through)
{
    cr_assert_eq(mmr_db_fault_install(), 0);
    cr_assert_eq(mmr_db_fault_install(), 0, "idempotent");
    mmr_db_fault_arm(MMR_FAULT_WRITE, 1000000, SQLITE_FULL);
    struct mmr_db *db = open_ok(&fault_opts, NMIGS);
    insert_events(db, 10, 1);
    cr_expect_gt(mmr_db_fault_calls(MMR_FAULT_WRITE), 0);
    cr_expect_eq(mmr_db_fault_failed(MMR_FAULT_WRITE), 0);
    char buf[64];
    cr_expect_str_eq(query_text(db, "PRAGMA journal_mode", buf, sizeof(buf)), "wal");
    mmr_db_close(db);
    expect_sound(path);
}

/* A write failing inside a statement: the statement fails with the mapped
 * code, nothing of it is stored, and the connection works once space is
 * back. */
static void exec_fault(int sqlite_err, int want)
{
    cr_assert_eq(mmr_db_fault_install(), 0);
    struct mmr_db *db = open_ok(&fault_opts, NMIGS);
    insert_events(db, 5, 1);
    mmr_db_fault_arm(MMR_FAULT_WRITE, 1, sqlite_err);
    int rc = mmr_db_exec(db, "INSERT INTO events(sev, body) VALUES (3, 'lost')");
    cr_expect_eq(rc, want, "rc %d: %s", rc, mmr_err_msg());
    cr_expect_gt(mmr_db_fault_failed(MMR_FAULT_WRITE), 0);
    cr_expect(strstr(mmr_err_msg(), path) != NULL, "%s", mmr_err_msg());
    mmr_db_fault_disarm();
    cr_expect(sqlite3_get_autocommit(mmr_db_handle(db)));
    cr_expect_eq(query_int(db, "SELECT count(*) FROM events"), 5);
    cr_expect_eq(mmr_db_exec(db, "INSERT INTO events(sev, body) VALUES (3, 'kept')"), 0, "%s",
                 mmr_err_msg());
    cr_expect_eq(query_int(db, "SELECT count(*) FROM events"), 6);
    mmr_db_close(db);
    expect_sound(path);
}

Test(db, fault_write_full_is_enospc)
{
    exec_fault(SQLITE_FULL, MMR_ENOSPC);
    cr_expect(strstr(mmr_err_msg(), "full") != NULL, "%s", mmr_err_msg());
}

Test(db, fault_write_ioerr_is_eio)
{
    exec_fault(SQLITE_IOERR_WRITE, MMR_EIO);
}

Test(db, fault_during_commit)
{
    cr_assert_eq(mmr_db_fault_install(), 0);
    struct mmr_db *db = open_ok(&fault_opts, NMIGS);
    insert_events(db, 5, 1);
    cr_assert_eq(mmr_db_begin(db), 0);
    insert_events(db, 200, 2);
    mmr_db_fault_arm(MMR_FAULT_WRITE, 1, SQLITE_FULL);
    cr_expect_eq(mmr_db_commit(db), MMR_ENOSPC, "%s", mmr_err_msg());
    mmr_db_fault_disarm();
    /* The failed commit rolled back: no transaction left open. */
    cr_expect(sqlite3_get_autocommit(mmr_db_handle(db)));
    cr_expect_eq(query_int(db, "SELECT count(*) FROM events"), 5);
    cr_assert_eq(mmr_db_begin(db), 0);
    insert_events(db, 200, 2);
    cr_expect_eq(mmr_db_commit(db), 0, "%s", mmr_err_msg());
    cr_expect_eq(query_int(db, "SELECT count(*) FROM events"), 205);
    mmr_db_close(db);
    expect_sound(path);
}

Test(db, fault_sync_on_commit)
{
    cr_assert_eq(mmr_db_fault_install(), 0);
    struct mmr_db_opts opts = {.vfs = MMR_DB_FAULT_VFS, .sync_full = true};
    struct mmr_db *db = open_ok(&opts, NMIGS);
    insert_events(db, 5, 1);
    mmr_db_fault_arm(MMR_FAULT_SYNC, 1, SQLITE_IOERR_FSYNC);
    int rc = mmr_db_exec(db, "INSERT INTO events(sev, body) VALUES (3, 'unsynced')");
    cr_expect_eq(rc, MMR_EIO, "rc %d: %s", rc, mmr_err_msg());
    cr_expect_eq(mmr_db_fault_failed(MMR_FAULT_SYNC), 1);
    mmr_db_fault_disarm();
    cr_expect_eq(mmr_db_exec(db, "INSERT INTO events(sev, body) VALUES (3, 'synced')"), 0, "%s",
                 mmr_err_msg());
    long long n = query_int(db, "SELECT count(*) FROM events");
    /* A failed fsync after the WAL write: SQLite may or may not keep the row,
     * but the count is one of the two and the database stays sound. */
    cr_expect(n == 6 || n == 7, "count %lld", n);
    cr_log_info("rows after a failed fsync and a good insert: %lld", n);
    mmr_db_close(db);
    expect_sound(path);
}

/* The tables each schema version has, to check a migration is all or
 * nothing. */
static void expect_schema_consistent(struct mmr_db *db)
{
    int v = mmr_db_schema_version(db);
    cr_assert_geq(v, 0);
    cr_expect_eq(has_table(db, "events"), v >= 1, "version %d", v);
    cr_expect_eq(has_table(db, "kv"), v >= 2, "version %d", v);
    cr_expect_eq(has_table(db, "child"), v >= 3, "version %d", v);
}

/* Fails the 1st, 2nd, ... write (or sync) of creating and migrating a
 * database until one open goes through untouched. After every failure the
 * file must reopen, migrate and pass integrity_check. */
static void sweep_open(enum mmr_db_fault_op op, int sqlite_err, int want, bool sync_full,
                       size_t start_version)
{
    cr_assert_eq(mmr_db_fault_install(), 0);
    struct mmr_db_opts opts = {.vfs = MMR_DB_FAULT_VFS, .sync_full = sync_full};
    int failures = 0;
    for (int nth = 1; nth < 500; nth++) {
        char side[700];
        remove(path);
        snprintf(side, sizeof(side), "%s-wal", path);
        remove(side);
        snprintf(side, sizeof(side), "%s-shm", path);
        remove(side);
        if (start_version > 0)
            mmr_db_close(open_ok(NULL, start_version));

        struct mmr_db *db = NULL;
        mmr_db_fault_arm(op, nth, sqlite_err);
        int rc = mmr_db_open(path, &opts, migs, NMIGS, &db);
        int failed = mmr_db_fault_failed(op);
        mmr_db_close(db); /* still armed: the closing checkpoint may fail too */
        mmr_db_fault_disarm();
        if (rc == 0 && failed == 0) {
            cr_expect_gt(failures, 0, "no fault was ever hit");
            cr_log_info("%d of %d fault points failed the open", failures, nth - 1);
            return;
        }
        if (rc < 0) {
            failures++;
            cr_expect_eq(rc, want, "nth %d: rc %d: %s", nth, rc, mmr_err_msg());
        }

        /* Without faults: a consistent schema at some version, then a
         * clean migration to the last. */
        db = NULL;
        struct mmr_db_opts ro = {.read_only = true};
        rc = mmr_db_open(path, &ro, migs, NMIGS, &db);
        cr_assert_eq(rc, 0, "nth %d: read-only reopen: %s", nth, mmr_err_msg());
        expect_schema_consistent(db);
        cr_expect_geq(mmr_db_schema_version(db), (int)start_version);
        mmr_db_close(db);
        db = open_ok(NULL, NMIGS);
        cr_expect_eq(mmr_db_schema_version(db), (int)NMIGS);
        expect_schema_consistent(db);
        char buf[256];
        cr_expect_eq(mmr_db_check(db, true, buf, sizeof(buf)), 0, "nth %d: %s", nth, buf);
        mmr_db_close(db);
    }
    cr_assert_fail("the open never completed without a fault");
}

Test(db, fault_sweep_create_write_full)
{
    sweep_open(MMR_FAULT_WRITE, SQLITE_FULL, MMR_ENOSPC, false, 0);
}

Test(db, fault_sweep_create_write_ioerr)
{
    sweep_open(MMR_FAULT_WRITE, SQLITE_IOERR_WRITE, MMR_EIO, true, 0);
}

Test(db, fault_sweep_migrate_write)
{
    sweep_open(MMR_FAULT_WRITE, SQLITE_FULL, MMR_ENOSPC, false, 1);
}

Test(db, fault_sweep_create_sync)
{
    sweep_open(MMR_FAULT_SYNC, SQLITE_IOERR_FSYNC, MMR_EIO, true, 0);
}
