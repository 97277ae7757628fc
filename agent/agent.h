/* The agent's shared context: what main.c wires together and hands to each
 * module. Modules receive the pieces they need; none reach for globals. */
#ifndef MMR_AGENT_H
#define MMR_AGENT_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "agent/agent_config.h"

struct mmr_db;
struct mmr_health;
struct mmr_control;
struct mmr_lock;
struct mmr_queue;
struct mmr_checkin;

struct mmr_agent {
    uv_loop_t *loop;
    char *config_path;
    bool config_explicit; /* given with --config: must exist */
    struct mmr_agent_config cfg;
    char *db_path;
    char *log_path;
    char *endpoint;
    struct mmr_lock *lock;
    struct mmr_db *db;
    struct mmr_health *health;
    struct mmr_control *control;
    struct mmr_queue *queue;
    struct mmr_checkin *checkin;
    int64_t started_ms;
    uint64_t started_mono_ms;
    bool foreground;
};

#endif
