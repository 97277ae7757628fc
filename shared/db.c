/* SQLite databases: opening with owner-only files in WAL mode, migrations by
 * PRAGMA user_version, the prepared-statement cache, transactions, integrity
 * checks, and the mapping of SQLite errors to MMR_E* codes. */
#include "shared/db.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"

#define DEFAULT_BUSY_TIMEOUT_MS 5000
/* Bound the -wal file left behind after a large transaction. */
#define WAL_SIZE_LIMIT (16 * 1024 * 1024)
/* Problems collected by mmr_db_check; the pragma stops after this many. */
#define CHECK_MAX_PROBLEMS 8
/* How much of a statement's text an error message quotes. */
#define SQL_QUOTE_MAX 48

struct stmt_entry {
    uint64_t hash;
    char *sql;
    sqlite3_stmt *stmt;
};

struct mmr_db {
    sqlite3 *h;
    char *path;
    struct stmt_entry *stmts;
    size_t nstmts;
    size_t capstmts;
};

/* ---- errors --------------------------------------------------------------- */

static int map_code(int ext)
{
    switch (ext & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return MMR_ECORRUPT;
    case SQLITE_FULL:
        return MMR_ENOSPC;
    case SQLITE_IOERR:
        return ext == SQLITE_IOERR_NOMEM ? MMR_ENOMEM : MMR_EIO;
    case SQLITE_CANTOPEN:
        return MMR_EIO;
    case SQLITE_NOMEM:
        return MMR_ENOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return MMR_EBUSY;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return MMR_EPERM;
    case SQLITE_TOOBIG:
        return MMR_ETOOBIG;
    case SQLITE_CONSTRAINT:
        if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY)
            return MMR_EEXIST;
        return MMR_EINVAL;
    default:
        return MMR_EDB;
    }
}

int mmr_db_error(struct mmr_db *db, const char *what)
{
    if (!db->h)
        return mmr_err_set(MMR_ENOMEM, "%s: out of memory opening the database", db->path);
    int ext = sqlite3_extended_errcode(db->h);
    int code = map_code(ext);
    const char *msg = sqlite3_errmsg(db->h);
    const char *advice = "";
    if (code == MMR_ECORRUPT)
        advice = ext == SQLITE_NOTADB ? " (corrupt?); move it aside to start with a fresh database"
                                      : "; move it aside to start with a fresh database";
    char detail[32] = "";
    if (code == MMR_EIO || code == MMR_ENOSPC)
        snprintf(detail, sizeof(detail), " (sqlite code %d)", ext);
    return mmr_err_set(code, "%s: %s%s%s%s%s", db->path, what ? what : "", what ? ": " : "", msg,
                       detail, advice);
}

/* "executing \"CREATE TABLE x (...\"": enough of the SQL to find it. */
static void quote_sql(const char *sql, char *out, size_t outlen)
{
    size_t n = 0;
    for (; sql[n] && n < SQL_QUOTE_MAX && n + 4 < outlen; n++)
        out[n] = (sql[n] == '\n' || sql[n] == '\t' || sql[n] == '\r') ? ' ' : sql[n];
    if (sql[n]) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

static int exec_what(struct mmr_db *db, const char *sql, const char *what)
{
    if (sqlite3_exec(db->h, sql, NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    return mmr_db_error(db, what);
}

int mmr_db_exec(struct mmr_db *db, const char *sql)
{
    if (sqlite3_exec(db->h, sql, NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    char quoted[SQL_QUOTE_MAX + 8];
    char what[sizeof(quoted) + 16];
    quote_sql(sql, quoted, sizeof(quoted));
    snprintf(what, sizeof(what), "executing \"%s\"", quoted);
    return mmr_db_error(db, what);
}

/* ---- pragmas -------------------------------------------------------------- */

/* Runs a pragma that returns one row and copies its first column. what
 * names it in errors (NULL: the open itself failed, as far as a user sees). */
static int pragma_text(struct mmr_db *db, const char *sql, const char *what, char *out,
                       size_t outlen)
{
    sqlite3_stmt *st = NULL;
    out[0] = '\0';
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK)
        return mmr_db_error(db, what);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        const unsigned char *text = sqlite3_column_text(st, 0);
        snprintf(out, outlen, "%s", text ? (const char *)text : "");
    } else if (step != SQLITE_DONE) {
        int rc = mmr_db_error(db, what);
        sqlite3_finalize(st);
        return rc;
    }
    sqlite3_finalize(st);
    return 0;
}

static int read_user_version(struct mmr_db *db, const char *what, int *out)
{
    char text[32];
    int rc = pragma_text(db, "PRAGMA user_version", what, text, sizeof(text));
    if (rc < 0)
        return rc;
    *out = atoi(text);
    return 0;
}

int mmr_db_schema_version(struct mmr_db *db)
{
    int version;
    int rc = read_user_version(db, "reading the schema version", &version);
    return rc < 0 ? rc : version;
}

/* ---- transactions ------------------------------------------------------- */

int mmr_db_begin(struct mmr_db *db)
{
    return exec_what(db, "BEGIN IMMEDIATE", "beginning a transaction");
}

int mmr_db_commit(struct mmr_db *db)
{
    if (sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    int rc = mmr_db_error(db, "committing");
    mmr_db_rollback(db);
    return rc;
}

void mmr_db_rollback(struct mmr_db *db)
{
    /* SQLite may already have rolled back after an I/O error or a full disk;
     * then there is nothing left to undo. */
    if (!sqlite3_get_autocommit(db->h))
        sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

/* ---- migrations ------------------------------------------------------------ */

static int check_migrations(const char *path, const struct mmr_db_migration *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (m[i].version != (int)i + 1 || !m[i].sql)
            return mmr_err_set(MMR_EINVAL,
                               "%s: migration %zu has version %d (want %zu, with SQL); "
                               "migrations are numbered from 1 in order",
                               path, i, m[i].version, i + 1);
    }
    return 0;
}

/* Migrations run with foreign keys off, so that a table can be rebuilt the
 * way SQLite documents; the keys are checked before each commit instead. */
static int check_foreign_keys(struct mmr_db *db, const char *what)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->h, "PRAGMA foreign_key_check", -1, &st, NULL) != SQLITE_OK)
        return mmr_db_error(db, what);
    int rc = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        rc = mmr_err_set(MMR_EINVAL, "%s: %s: leaves rows in '%s' with broken foreign keys",
                         db->path, what, (const char *)sqlite3_column_text(st, 0));
    else if (step != SQLITE_DONE)
        rc = mmr_db_error(db, what);
    sqlite3_finalize(st);
    return rc;
}

/* One migration in its own transaction, which also sets user_version, so a
 * crash or a failed write leaves the schema at the version before or after. */
static int migrate_one(struct mmr_db *db, const struct mmr_db_migration *m)
{
    char what[64];
    snprintf(what, sizeof(what), "migrating to schema version %d", m->version);
    int rc = exec_what(db, "BEGIN IMMEDIATE", what);
    if (rc < 0)
        return rc;
    /* Another process may have migrated while we waited for the lock. */
    int current;
    rc = read_user_version(db, what, &current);
    if (rc < 0)
        goto fail;
    if (current >= m->version) {
        mmr_db_rollback(db);
        return 0;
    }
    if (sqlite3_exec(db->h, m->sql, NULL, NULL, NULL) != SQLITE_OK) {
        rc = mmr_db_error(db, what);
        goto fail;
    }
    char sql[48];
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", m->version);
    rc = exec_what(db, sql, what);
    if (rc < 0)
        goto fail;
    rc = check_foreign_keys(db, what);
    if (rc < 0)
        goto fail;
    if (sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        rc = mmr_db_error(db, what);
        goto fail;
    }
    return 0;
fail:
    mmr_db_rollback(db);
    return rc;
}

static int migrate(struct mmr_db *db, const struct mmr_db_migration *m, size_t n, int current)
{
    for (size_t i = (size_t)current; i < n; i++) {
        int rc = migrate_one(db, &m[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- open and close -------------------------------------------------------- */

/* Owner-only main file, created empty if missing so that SQLite inherits
 * its mode for -wal and -shm; sidecar files left from a crash are tightened. */
static int make_files_private(const char *path)
{
    static const char *const sidecars[] = {"-wal", "-shm", "-journal"};
    int rc = mmr_file_make_private(path);
    if (rc < 0)
        return mmr_err_wrap(rc, "%s: making the database owner-only", path);
    for (size_t i = 0; i < sizeof(sidecars) / sizeof(sidecars[0]); i++) {
        char *side = mmr_asprintf("%s%s", path, sidecars[i]);
        rc = mmr_path_exists(side) ? mmr_file_make_private(side) : 0;
        if (rc < 0)
            mmr_err_wrap(rc, "%s: making the database owner-only", side);
        free(side);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int setup_wal(struct mmr_db *db)
{
    char mode[32];
    int rc = pragma_text(db, "PRAGMA journal_mode = WAL", "switching to WAL", mode, sizeof(mode));
    if (rc < 0)
        return rc;
    if (strcmp(mode, "wal") != 0)
        return mmr_err_set(MMR_EUNSUP,
                           "%s: the journal mode stayed '%s' instead of 'wal'; the filesystem "
                           "may not support shared memory (network filesystems do not)",
                           db->path, mode);
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA journal_size_limit = %d", WAL_SIZE_LIMIT);
    return pragma_text(db, sql, "limiting the WAL size", mode, sizeof(mode));
}

static int configure(struct mmr_db *db, const struct mmr_db_opts *opts, bool memory,
                     const struct mmr_db_migration *migrations, size_t nmigrations)
{
    sqlite3_extended_result_codes(db->h, 1);
    sqlite3_busy_timeout(db->h, opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms
                                                          : DEFAULT_BUSY_TIMEOUT_MS);
    /* No SQL may corrupt the file (writable_schema and the like). */
    sqlite3_db_config(db->h, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);

    /* The first read of the header: a foreign or damaged file shows here. */
    int version;
    int rc = read_user_version(db, NULL, &version);
    if (rc < 0)
        return rc;
    if (version < 0)
        return mmr_err_set(MMR_EINVAL, "%s: schema version %d is not one of ours", db->path,
                           version);
    /* No migrations at all means "inspect as it is" (diagnostics). */
    if (nmigrations > 0 && (size_t)version > nmigrations)
        return mmr_err_set(MMR_EINVAL,
                           "%s: schema version %d was written by a newer version of Mamori "
                           "(this one knows up to %zu); upgrade, or move the file aside",
                           db->path, version, nmigrations);
    if (!opts->read_only && !memory) {
        rc = setup_wal(db);
        if (rc < 0)
            return rc;
    }
    rc =
        exec_what(db, opts->sync_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                  "setting synchronous");
    if (rc < 0)
        return rc;
    if (!opts->read_only) {
        rc = exec_what(db, "PRAGMA foreign_keys = OFF", "migrating");
        if (rc < 0)
            return rc;
        rc = migrate(db, migrations, nmigrations, version);
        if (rc < 0)
            return rc;
    }
    return exec_what(db, "PRAGMA foreign_keys = ON", "enabling foreign keys");
}

int mmr_db_open(const char *path, const struct mmr_db_opts *opts,
                const struct mmr_db_migration *migrations, size_t nmigrations, struct mmr_db **out)
{
    static const struct mmr_db_opts defaults;
    *out = NULL;
    if (!opts)
        opts = &defaults;
    if (!path || !path[0])
        return mmr_err_set(MMR_EINVAL, "opening a database: the path is empty");
    int rc = check_migrations(path, migrations, nmigrations);
    if (rc < 0)
        return rc;

    bool memory = strcmp(path, ":memory:") == 0;
    if (!memory && opts->read_only && !mmr_path_exists(path))
        return mmr_err_set(MMR_ENOENT, "%s: no such database", path);
    if (!memory && !opts->read_only) {
        rc = make_files_private(path);
        if (rc < 0)
            return rc;
    }

    struct mmr_db *db = mmr_calloc(1, sizeof(*db));
    db->path = mmr_strdup(path);
    int flags =
        SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_EXRESCODE |
        (opts->read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (sqlite3_open_v2(path, &db->h, flags, opts->vfs) != SQLITE_OK) {
        rc = mmr_db_error(db, "opening");
        goto fail;
    }
    rc = configure(db, opts, memory, migrations, nmigrations);
    /* SQLite gives -wal and -shm the main file's mode on POSIX; on Windows
     * they get the directory's inherited ACL instead (and Wine, which maps
     * ACLs to modes, has no inheritance): tighten them once they exist. */
    if (rc == 0 && !memory && !opts->read_only)
        rc = make_files_private(path);
    if (rc < 0)
        goto fail;
    *out = db;
    return 0;
fail:
    mmr_db_close(db);
    return rc;
}

void mmr_db_close(struct mmr_db *db)
{
    if (!db)
        return;
    for (size_t i = 0; i < db->nstmts; i++) {
        sqlite3_finalize(db->stmts[i].stmt);
        free(db->stmts[i].sql);
    }
    free(db->stmts);
    /* close_v2 never fails: statements a caller forgot to finalize keep the
     * connection alive until they are, instead of leaking it. */
    if (db->h)
        sqlite3_close_v2(db->h);
    free(db->path);
    free(db);
}

sqlite3 *mmr_db_handle(struct mmr_db *db)
{
    return db->h;
}

const char *mmr_db_path(const struct mmr_db *db)
{
    return db->path;
}

/* ---- the statement cache ------------------------------------------------ */

static uint64_t hash_sql(const char *s)
{
    uint64_t h = 14695981039346656037u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

/* Prepares sql, which must hold exactly one statement (comments aside). */
static int prepare_one(struct mmr_db *db, const char *sql, sqlite3_stmt **out)
{
    char quoted[SQL_QUOTE_MAX + 8];
    char what[sizeof(quoted) + 16];
    const char *tail = NULL;
    sqlite3_stmt *st = NULL;
    sqlite3_stmt *extra = NULL;

    quote_sql(sql, quoted, sizeof(quoted));
    snprintf(what, sizeof(what), "preparing \"%s\"", quoted);
    if (sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, &tail) != SQLITE_OK)
        return mmr_db_error(db, what);
    if (!st)
        return mmr_err_set(MMR_EINVAL, "%s: %s: no statement", db->path, what);
    if (tail && *tail) {
        int rc = sqlite3_prepare_v2(db->h, tail, -1, &extra, NULL);
        sqlite3_finalize(extra);
        if (rc != SQLITE_OK || extra) {
            sqlite3_finalize(st);
            return mmr_err_set(MMR_EINVAL, "%s: %s: more than one statement", db->path, what);
        }
    }
    *out = st;
    return 0;
}

int mmr_db_stmt(struct mmr_db *db, const char *sql, sqlite3_stmt **out)
{
    *out = NULL;
    uint64_t h = hash_sql(sql);
    for (size_t i = 0; i < db->nstmts; i++) {
        struct stmt_entry *e = &db->stmts[i];
        if (e->hash == h && strcmp(e->sql, sql) == 0) {
            /* reset returns the error of the last step, already reported. */
            sqlite3_reset(e->stmt);
            sqlite3_clear_bindings(e->stmt);
            *out = e->stmt;
            return 0;
        }
    }
    sqlite3_stmt *st = NULL;
    int rc = prepare_one(db, sql, &st);
    if (rc < 0)
        return rc;
    if (db->nstmts == db->capstmts) {
        db->capstmts = db->capstmts ? db->capstmts * 2 : 16;
        db->stmts = mmr_realloc(db->stmts, db->capstmts * sizeof(*db->stmts));
    }
    db->stmts[db->nstmts++] = (struct stmt_entry){.hash = h, .sql = mmr_strdup(sql), .stmt = st};
    *out = st;
    return 0;
}

/* ---- integrity ------------------------------------------------------------ */

/* Appends a line to buf, truncating; buf stays NUL-terminated. */
static void add_line(char *buf, size_t buflen, const char *line, size_t len)
{
    if (!buf || buflen == 0)
        return;
    size_t used = strlen(buf);
    if (used + 1 >= buflen)
        return;
    snprintf(buf + used, buflen - used, "%s%.*s", used ? "\n" : "", (int)len, line);
}

/* One row of check output may hold several problems, one a line, under a
 * "*** in database main ***" heading that says nothing by itself. */
static void add_problems(const char *row, char *buf, size_t buflen, char *first, size_t firstlen)
{
    static const char heading[] = "*** in database ";
    while (*row) {
        size_t len = strcspn(row, "\n");
        if (len > 0 && strncmp(row, heading, sizeof(heading) - 1) != 0) {
            if (!first[0])
                snprintf(first, firstlen, "%.*s", (int)len, row);
            add_line(buf, buflen, row, len);
        }
        row += len;
        if (*row == '\n')
            row++;
    }
}

static int run_check(struct mmr_db *db, sqlite3_stmt *st, const char *name, char *buf,
                     size_t buflen)
{
    bool sound = false;
    char first[256] = "";
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *row = (const char *)sqlite3_column_text(st, 0);
        if (!row)
            continue;
        if (strcmp(row, "ok") == 0) {
            sound = true;
            add_line(buf, buflen, row, strlen(row));
        } else {
            add_problems(row, buf, buflen, first, sizeof(first));
        }
    }
    if (step != SQLITE_DONE)
        return mmr_db_error(db, name);
    if (!sound || first[0])
        return mmr_err_set(MMR_ECORRUPT,
                           "%s: %s found problems, first: %s; move it aside to start with a "
                           "fresh database",
                           db->path, name, first[0] ? first : "(none reported)");
    return 0;
}

int mmr_db_check(struct mmr_db *db, bool full, char *buf, size_t buflen)
{
    const char *name = full ? "integrity_check" : "quick_check";
    char sql[48];
    sqlite3_stmt *st = NULL;
    int rc;

    if (buf && buflen)
        buf[0] = '\0';
    snprintf(sql, sizeof(sql), "PRAGMA %s(%d)", name, CHECK_MAX_PROBLEMS);
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK)
        rc = mmr_db_error(db, name);
    else
        rc = run_check(db, st, name, buf, buflen);
    sqlite3_finalize(st);
    if (rc < 0 && rc != MMR_ECORRUPT && buf && buflen)
        buf[0] = '\0';
    /* Damage that stops the check itself is still damage: say so in buf. */
    if (rc == MMR_ECORRUPT && buf && buflen && !buf[0])
        add_line(buf, buflen, mmr_err_msg(), strlen(mmr_err_msg()));
    return rc;
}
