/* agent.db: schema migrations and the agent facts table. */
#include "agent/agent_db.h"

#include <stdlib.h>
#include <string.h>

#include "agent/queue.h"
#include "agent/scan_cache.h"
#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"

static const struct mmr_db_migration migrations[] = {
    {1, "CREATE TABLE agent_state ("
        "  key TEXT PRIMARY KEY,"
        "  value TEXT NOT NULL,"
        "  updated_ms INTEGER NOT NULL"
        ") WITHOUT ROWID;"},
    {2, mmr_queue_schema_sql}, /* the telemetry queue's tables */
    {3, mmr_scan_cache_schema_sql}, /* the scan verdict cache */
};

int mmr_agent_db_open(const char *path, struct mmr_db **out)
{
    struct mmr_db_opts opts = {.sync_full = true};
    return mmr_db_open(path, &opts, migrations, sizeof(migrations) / sizeof(migrations[0]), out);
}

char *mmr_agent_state_get(struct mmr_db *db, const char *key)
{
    sqlite3_stmt *st;
    if (mmr_db_stmt(db, "SELECT value FROM agent_state WHERE key = ?1", &st) < 0)
        return NULL;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    char *v = NULL;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = mmr_strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_reset(st);
    return v;
}

int mmr_agent_state_put(struct mmr_db *db, const char *key, const char *value)
{
    sqlite3_stmt *st;
    int rc;
    if (value) {
        rc = mmr_db_stmt(db,
                         "INSERT INTO agent_state(key, value, updated_ms) VALUES (?1, ?2, ?3) "
                         "ON CONFLICT(key) DO UPDATE SET value = ?2, updated_ms = ?3",
                         &st);
        if (rc < 0)
            return rc;
        sqlite3_bind_text(st, 2, value, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, mmr_time_now_ms());
    } else {
        rc = mmr_db_stmt(db, "DELETE FROM agent_state WHERE key = ?1", &st);
        if (rc < 0)
            return rc;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE)
        return mmr_db_error(db, "storing agent state");
    return 0;
}
