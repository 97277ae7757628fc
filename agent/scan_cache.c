/* The scan verdict cache in agent.db: lookups by (dev, ino) checked field by
 * field in C, stores batched in memory and written in one transaction, with
 * eviction of the oldest rows and a bounded purge of old rules versions. */
#include "agent/scan_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "agent/agent_db.h"
#include "shared/err.h"
#include "shared/log.h"
#include "shared/mem.h"

#define MOD "scan_cache"

#define DEFAULT_MAX_ROWS  1000000
#define DEFAULT_BATCH     256
#define DEFAULT_PURGE_MAX 1000
#define DEFAULT_FRESH_MS  2000

enum { VERDICT_CLEAN = 1, VERDICT_DETECTED = 2 };

const char mmr_scan_cache_schema_sql[] =
    "CREATE TABLE scan_cache ("
    "  dev INTEGER NOT NULL,"
    "  ino INTEGER NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  mtime_ns INTEGER NOT NULL,"
    "  ctime_ns INTEGER NOT NULL,"
    "  rules_version TEXT NOT NULL,"
    "  verdict INTEGER NOT NULL CHECK (verdict IN (1, 2)),"
    "  rule TEXT CHECK ((verdict = 1) = (rule IS NULL)),"
    "  scanned_at INTEGER NOT NULL,"
    "  PRIMARY KEY (dev, ino)"
    ") WITHOUT ROWID;"
    /* Eviction takes the oldest; the purge finds rows of other versions. */
    "CREATE INDEX scan_cache_age ON scan_cache(scanned_at);"
    "CREATE INDEX scan_cache_rules ON scan_cache(rules_version);";

static const char SQL_GET[] = "SELECT size, mtime_ns, ctime_ns, rules_version, verdict, rule "
                              "FROM scan_cache WHERE dev = ?1 AND ino = ?2";
static const char SQL_INSERT[] =
    "INSERT OR IGNORE INTO scan_cache"
    "(dev, ino, size, mtime_ns, ctime_ns, rules_version, verdict, rule, scanned_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
static const char SQL_UPDATE[] =
    "UPDATE scan_cache SET size = ?3, mtime_ns = ?4, ctime_ns = ?5, rules_version = ?6, "
    "verdict = ?7, rule = ?8, scanned_at = ?9 WHERE dev = ?1 AND ino = ?2";
static const char SQL_EVICT[] =
    "DELETE FROM scan_cache WHERE (dev, ino) IN "
    "(SELECT dev, ino FROM scan_cache ORDER BY scanned_at, dev, ino LIMIT ?1)";
static const char SQL_PURGE[] =
    "DELETE FROM scan_cache WHERE (dev, ino) IN "
    "(SELECT dev, ino FROM scan_cache WHERE rules_version <> ?1 LIMIT ?2)";
static const char SQL_COUNT[] = "SELECT count(*) FROM scan_cache";

struct pending {
    struct mmr_file_id id;
    char *rules_version;
    char *rule; /* NULL: clean */
    int64_t at_ms;
};

struct mmr_scan_cache {
    uv_mutex_t lock;
    struct mmr_db *db;
    struct mmr_scan_cache_opts opts;
    struct pending *pending; /* opts.batch slots */
    unsigned npending;
    uint64_t rows;    /* rows in the table, without the pending stores */
    char *version;    /* rules version of the latest store */
    bool purge_due;   /* rows of other versions may remain */
};

static int count_rows(struct mmr_scan_cache *c)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(c->db, SQL_COUNT, &st);
    if (rc < 0)
        return rc;
    if (sqlite3_step(st) != SQLITE_ROW)
        return mmr_db_error(c->db, "counting the scan cache");
    c->rows = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return 0;
}

int mmr_scan_cache_open(const char *path, const struct mmr_scan_cache_opts *opts,
                        struct mmr_scan_cache **out)
{
    struct mmr_db *db = NULL;
    int rc = mmr_agent_db_open(path, &db);
    if (rc < 0)
        return rc;
    /* A lost cache write costs a rescan, not a missed detection: no fsync
     * per batch (WAL keeps the file sound either way). */
    rc = mmr_db_exec(db, "PRAGMA synchronous = NORMAL");
    if (rc < 0) {
        mmr_db_close(db);
        return rc;
    }
    struct mmr_scan_cache *c = mmr_calloc(1, sizeof(*c));
    c->db = db;
    if (opts)
        c->opts = *opts;
    if (c->opts.max_rows == 0)
        c->opts.max_rows = DEFAULT_MAX_ROWS;
    if (c->opts.batch == 0)
        c->opts.batch = DEFAULT_BATCH;
    if (c->opts.purge_max == 0)
        c->opts.purge_max = DEFAULT_PURGE_MAX;
    if (c->opts.fresh_ms == 0)
        c->opts.fresh_ms = DEFAULT_FRESH_MS;
    c->pending = mmr_calloc(c->opts.batch, sizeof(*c->pending));
    rc = count_rows(c);
    if (rc < 0) {
        free(c->pending);
        free(c);
        mmr_db_close(db);
        return rc;
    }
    if (uv_mutex_init(&c->lock) != 0) {
        free(c->pending);
        free(c);
        mmr_db_close(db);
        return mmr_err_set(MMR_ENOMEM, "cannot create the scan cache's mutex");
    }
    *out = c;
    return 0;
}

static void clear_pending(struct mmr_scan_cache *c)
{
    for (unsigned i = 0; i < c->npending; i++) {
        free(c->pending[i].rules_version);
        free(c->pending[i].rule);
    }
    c->npending = 0;
}

static int bind_row(sqlite3_stmt *st, const struct pending *p)
{
    int rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)p->id.dev);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, (sqlite3_int64)p->id.ino);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 3, (sqlite3_int64)p->id.size);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 4, p->id.mtime_ns);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 5, p->id.ctime_ns);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 6, p->rules_version, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 7, p->rule ? VERDICT_DETECTED : VERDICT_CLEAN);
    if (rc == SQLITE_OK)
        rc = p->rule ? sqlite3_bind_text(st, 8, p->rule, -1, SQLITE_STATIC)
                     : sqlite3_bind_null(st, 8);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 9, p->at_ms);
    return rc;
}

/* Runs a cached statement with one row's bindings; *changes gets the rows
 * it changed. */
static int write_row(struct mmr_scan_cache *c, const char *sql, const struct pending *p,
                     int *changes)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(c->db, sql, &st);
    if (rc < 0)
        return rc;
    if (bind_row(st, p) != SQLITE_OK || sqlite3_step(st) != SQLITE_DONE)
        rc = mmr_db_error(c->db, "writing the scan cache");
    *changes = sqlite3_changes(mmr_db_handle(c->db));
    sqlite3_reset(st);
    return rc;
}

/* DELETE with one optional text and one limit; returns rows deleted or a
 * negative code. */
static int delete_some(struct mmr_scan_cache *c, const char *sql, const char *text, int64_t limit)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(c->db, sql, &st);
    if (rc < 0)
        return rc;
    int brc = text ? sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC) : SQLITE_OK;
    if (brc == SQLITE_OK)
        brc = sqlite3_bind_int64(st, text ? 2 : 1, limit);
    if (brc != SQLITE_OK || sqlite3_step(st) != SQLITE_DONE)
        rc = mmr_db_error(c->db, "trimming the scan cache");
    else
        rc = sqlite3_changes(mmr_db_handle(c->db));
    sqlite3_reset(st);
    return rc;
}

static int flush_locked(struct mmr_scan_cache *c)
{
    if (c->npending == 0 && !c->purge_due && c->rows <= c->opts.max_rows)
        return 0;
    int rc = mmr_db_begin(c->db);
    if (rc < 0)
        goto fail;
    uint64_t rows = c->rows;
    for (unsigned i = 0; i < c->npending; i++) {
        int changes = 0;
        rc = write_row(c, SQL_INSERT, &c->pending[i], &changes);
        if (rc == 0 && changes == 0)
            rc = write_row(c, SQL_UPDATE, &c->pending[i], &changes);
        else if (rc == 0)
            rows++;
        if (rc < 0)
            goto fail;
    }
    if (rows > c->opts.max_rows) {
        rc = delete_some(c, SQL_EVICT, NULL, (int64_t)(rows - c->opts.max_rows));
        if (rc < 0)
            goto fail;
        rows -= (uint64_t)rc;
    }
    bool purge_due = c->purge_due;
    if (purge_due && c->version) {
        rc = delete_some(c, SQL_PURGE, c->version, c->opts.purge_max);
        if (rc < 0)
            goto fail;
        rows -= (uint64_t)rc;
        purge_due = (unsigned)rc == c->opts.purge_max;
    }
    rc = mmr_db_commit(c->db);
    if (rc < 0)
        goto fail;
    c->rows = rows;
    c->purge_due = purge_due;
    clear_pending(c);
    return 0;
fail:
    /* A cache may lose entries: drop the batch and learn the table again. */
    mmr_db_rollback(c->db);
    clear_pending(c);
    int err = rc;
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", mmr_err_msg());
    if (count_rows(c) < 0)
        mmr_warn(MOD, "cannot count the scan cache", "error=\"%s\"", mmr_err_msg());
    return mmr_err_set(err, "%s", msg);
}

int mmr_scan_cache_flush(struct mmr_scan_cache *c)
{
    uv_mutex_lock(&c->lock);
    int rc = flush_locked(c);
    uv_mutex_unlock(&c->lock);
    return rc;
}

void mmr_scan_cache_close(struct mmr_scan_cache *c)
{
    if (!c)
        return;
    if (mmr_scan_cache_flush(c) < 0)
        mmr_warn(MOD, "cannot write the scan cache", "error=\"%s\"", mmr_err_msg());
    uv_mutex_destroy(&c->lock);
    free(c->pending);
    free(c->version);
    mmr_db_close(c->db);
    free(c);
}

static bool same_file(const struct mmr_file_id *a, const struct mmr_file_id *b)
{
    return a->size == b->size && a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

static int verdict_of(const char *rule, char **out)
{
    if (!rule)
        return MMR_SCAN_CACHE_CLEAN;
    if (out)
        *out = mmr_strdup(rule);
    return MMR_SCAN_CACHE_DETECTED;
}

static int lookup_locked(struct mmr_scan_cache *c, const struct mmr_file_id *id,
                         const char *rules_version, char **rule)
{
    /* The newest pending store of this file decides, if there is one. */
    for (unsigned i = c->npending; i-- > 0;) {
        const struct pending *p = &c->pending[i];
        if (p->id.dev != id->dev || p->id.ino != id->ino)
            continue;
        if (!same_file(&p->id, id) || strcmp(p->rules_version, rules_version) != 0)
            return MMR_SCAN_CACHE_MISS;
        return verdict_of(p->rule, rule);
    }
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(c->db, SQL_GET, &st);
    if (rc < 0)
        return rc;
    if (sqlite3_bind_int64(st, 1, (sqlite3_int64)id->dev) != SQLITE_OK ||
        sqlite3_bind_int64(st, 2, (sqlite3_int64)id->ino) != SQLITE_OK)
        return mmr_db_error(c->db, "reading the scan cache");
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE) {
        rc = MMR_SCAN_CACHE_MISS;
    } else if (step != SQLITE_ROW) {
        rc = mmr_db_error(c->db, "reading the scan cache");
    } else {
        struct mmr_file_id row = {
            .size = (uint64_t)sqlite3_column_int64(st, 0),
            .mtime_ns = sqlite3_column_int64(st, 1),
            .ctime_ns = sqlite3_column_int64(st, 2),
        };
        const char *version = (const char *)sqlite3_column_text(st, 3);
        int verdict = sqlite3_column_int(st, 4);
        const char *matched = (const char *)sqlite3_column_text(st, 5);
        if (!same_file(&row, id) || !version || strcmp(version, rules_version) != 0)
            rc = MMR_SCAN_CACHE_MISS;
        else if (verdict == VERDICT_CLEAN)
            rc = verdict_of(NULL, rule);
        else if (verdict == VERDICT_DETECTED && matched)
            rc = verdict_of(matched, rule);
        else
            rc = MMR_SCAN_CACHE_MISS; /* a row we did not write: scan again */
    }
    sqlite3_reset(st);
    return rc;
}

int mmr_scan_cache_lookup(struct mmr_scan_cache *c, const struct mmr_file_id *id,
                          const char *rules_version, char **rule)
{
    if (rule)
        *rule = NULL;
    if (!id->regular)
        return MMR_SCAN_CACHE_MISS;
    uv_mutex_lock(&c->lock);
    int rc = lookup_locked(c, id, rules_version, rule);
    uv_mutex_unlock(&c->lock);
    return rc;
}

int mmr_scan_cache_store(struct mmr_scan_cache *c, const struct mmr_file_id *id,
                         const char *rules_version, const char *rule)
{
    if (!rules_version || !*rules_version)
        return mmr_err_set(MMR_EINVAL, "a scan cache entry needs a rules version");
    if (rule && !*rule)
        return mmr_err_set(MMR_EINVAL, "a detection in the scan cache needs a rule name");
    if (!id->regular)
        return 0;
    int64_t now_ms = mmr_time_now_ms();
    if (c->opts.fresh_ms > 0) {
        int64_t limit_ns = (now_ms - c->opts.fresh_ms) * 1000000;
        if (id->mtime_ns > limit_ns || id->ctime_ns > limit_ns)
            return 0;
    }
    uv_mutex_lock(&c->lock);
    int rc = 0;
    if (c->npending == c->opts.batch)
        rc = flush_locked(c);
    if (rc == 0) {
        if (!c->version || strcmp(c->version, rules_version) != 0) {
            free(c->version);
            c->version = mmr_strdup(rules_version);
            c->purge_due = true;
        }
        c->pending[c->npending++] = (struct pending){
            .id = *id,
            .rules_version = mmr_strdup(rules_version),
            .rule = rule ? mmr_strdup(rule) : NULL,
            .at_ms = now_ms,
        };
    }
    uv_mutex_unlock(&c->lock);
    return rc;
}

int mmr_scan_cache_count(struct mmr_scan_cache *c, uint64_t *out)
{
    uv_mutex_lock(&c->lock);
    int rc = flush_locked(c);
    if (rc == 0)
        *out = c->rows;
    uv_mutex_unlock(&c->lock);
    return rc;
}
