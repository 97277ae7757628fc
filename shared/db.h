/* SQLite databases: open in WAL mode with owner-only files, schema migrations
 * by PRAGMA user_version, a cache of prepared statements, transactions and an
 * integrity check. Corrupt or foreign files are reported, never crashed on. */
#ifndef MMR_DB_H
#define MMR_DB_H

#include <stdbool.h>
#include <stddef.h>

#include <sqlite3.h>

/* One connection and its statement cache: use it from one thread at a time. */
struct mmr_db;

/* Migration n brings the schema from user_version n-1 to n; versions start
 * at 1 and are listed in order. Each runs in its own transaction (so its SQL
 * holds no BEGIN or COMMIT) with foreign keys off, as SQLite's recipe for
 * rebuilding a table needs; they are checked before the commit instead. */
struct mmr_db_migration {
    int version;
    const char *sql;
};

struct mmr_db_opts {
    bool read_only;      /* never creates, sets up WAL or migrates */
    bool sync_full;      /* synchronous=FULL (survives power loss) instead of NORMAL */
    int busy_timeout_ms; /* 0: 5000 */
    const char *vfs;     /* SQLite VFS name; NULL: the default (tests: "mmr-fault") */
};

/* Opens (creating if allowed) and migrates. opts may be NULL for defaults.
 * A new file is made owner-only before SQLite touches it, and its -wal and
 * -shm inherit that; an existing one is tightened. The journal must become
 * WAL (MMR_EUNSUP when the filesystem cannot do it). ":memory:" gives a
 * private in-memory database. A database newer than the migrations known
 * here is refused (MMR_EINVAL: "written by a newer version"); a read-only
 * open accepts an older one as it is, and with no migrations given any
 * version is accepted (for inspection, e.g. the support bundle). A damaged or foreign file gives
 * MMR_ECORRUPT naming the file; a missing one opened read-only MMR_ENOENT. */
int mmr_db_open(const char *path, const struct mmr_db_opts *opts,
                const struct mmr_db_migration *migrations, size_t nmigrations, struct mmr_db **out);
void mmr_db_close(struct mmr_db *db);

sqlite3 *mmr_db_handle(struct mmr_db *db);
const char *mmr_db_path(const struct mmr_db *db);
/* PRAGMA user_version as it is now, or a negative MMR_E* code. */
int mmr_db_schema_version(struct mmr_db *db);

/* Runs one or more statements; any result rows are discarded. */
int mmr_db_exec(struct mmr_db *db, const char *sql);

/* A cached prepared statement for sql (exactly one statement), reset and
 * with bindings cleared. Owned by db: do not finalize. Statements are keyed
 * by the SQL text, so asking again for the same text resets the one a caller
 * may still be stepping. */
int mmr_db_stmt(struct mmr_db *db, const char *sql, sqlite3_stmt **out);

int mmr_db_begin(struct mmr_db *db); /* BEGIN IMMEDIATE */
/* A failed commit rolls the transaction back before returning the error, so
 * the database is never left with a transaction open. */
int mmr_db_commit(struct mmr_db *db);
void mmr_db_rollback(struct mmr_db *db); /* safe to call when no transaction is open */

/* PRAGMA quick_check (or integrity_check when full). Writes "ok" or the
 * first problems, one a line, into buf (which may be NULL); returns 0 when
 * the database is sound, MMR_ECORRUPT when it is not (also when the damage
 * stops the check itself), other codes when the check could not run. */
int mmr_db_check(struct mmr_db *db, bool full, char *buf, size_t buflen);

/* Maps the last SQLite error of db (extended code) to an MMR_E* code and
 * sets the message "<what>: <path>: <SQLite's message>", with advice for a
 * corrupt file; returns the code. what may be NULL. Corruption gives
 * MMR_ECORRUPT, a full disk MMR_ENOSPC, I/O errors MMR_EIO, locks MMR_EBUSY,
 * read-only files MMR_EPERM, unique keys MMR_EEXIST, other constraints
 * MMR_EINVAL, anything else MMR_EDB. */
int mmr_db_error(struct mmr_db *db, const char *what);

#endif
