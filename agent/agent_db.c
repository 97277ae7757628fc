/* agent.db: schema migrations and the agent facts table. */
#include "agent/agent_db.h"

#include <stdlib.h>
#include <string.h>

#include "agent/queue.h"
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
};

int mmr_agent_db_open(const char *path, struct mmr_db **out)
{
    struct mmr_db_opts opts = {.sync_full = true};
    return mmr_db_open(path, &opts, migrations, sizeof(migrations) / sizeof(migrations[0]), out);
}

void mmr_agent_state_free(struct mmr_agent_state *state)
{
    free(state->device_id);
    free(state->policy_version);
    free(state->last_checkin_result);
    memset(state, 0, sizeof(*state));
}

static void assign(struct mmr_agent_state *state, const char *key, const char *value)
{
    if (strcmp(key, "device_id") == 0) {
        free(state->device_id);
        state->device_id = mmr_strdup(value);
    } else if (strcmp(key, "policy_version") == 0) {
        free(state->policy_version);
        state->policy_version = mmr_strdup(value);
    } else if (strcmp(key, "last_checkin_ms") == 0) {
        state->last_checkin_ms = strtoll(value, NULL, 10);
    } else if (strcmp(key, "last_checkin_result") == 0) {
        free(state->last_checkin_result);
        state->last_checkin_result = mmr_strdup(value);
    }
    /* Facts written by newer agents are kept in the table and ignored here. */
}

int mmr_agent_state_load(struct mmr_db *db, struct mmr_agent_state *state)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(db, "SELECT key, value FROM agent_state", &st);
    if (rc < 0)
        return rc;
    mmr_agent_state_free(state);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        assign(state, (const char *)sqlite3_column_text(st, 0),
               (const char *)sqlite3_column_text(st, 1));
    if (step != SQLITE_DONE)
        return mmr_db_error(db, "reading agent state");
    return 0;
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
