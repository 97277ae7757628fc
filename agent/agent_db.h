/* agent.db: the agent's SQLite database, its schema history, and the small
 * key/value table of agent facts (enrollment, policy version, check-ins). */
#ifndef MMR_AGENT_DB_H
#define MMR_AGENT_DB_H

#include "agent/agent.h"
#include "shared/db.h"

int mmr_agent_db_open(const char *path, struct mmr_db **out);

/* One fact (allocated), or NULL when it is not stored. */
char *mmr_agent_state_get(struct mmr_db *db, const char *key);

/* Stores one fact durably; value NULL deletes it. */
int mmr_agent_state_put(struct mmr_db *db, const char *key, const char *value);

#endif
