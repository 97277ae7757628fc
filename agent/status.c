/* Builds the status document from the agent's in-memory state. */
#include "agent/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/checkin.h"
#include "agent/control.h"
#include "agent/queue.h"
#include "agent/health.h"
#include "mamori_version.h"
#include "shared/json.h"
#include "shared/platform.h"

/* Unset and empty settings both read as null. */
static json_t *str_or_null(const char *s)
{
    return s && s[0] ? json_string(s) : json_null();
}

static json_t *queue_json(struct mmr_queue *q)
{
    if (!q)
        return json_null();
    struct mmr_queue_stats qs;
    mmr_queue_stats(q, &qs);
    return json_pack("{s:I,s:I,s:{s:I,s:I,s:I,s:I},s:{s:I,s:I,s:I},s:o,s:I,s:I,s:I}", "depth",
                     (json_int_t)qs.events, "bytes", (json_int_t)qs.bytes, "by_severity", "low",
                     (json_int_t)qs.depth[0], "medium", (json_int_t)qs.depth[1], "high",
                     (json_int_t)qs.depth[2], "critical", (json_int_t)qs.depth[3], "dropped", "low",
                     (json_int_t)qs.dropped[0], "medium", (json_int_t)qs.dropped[1], "high",
                     (json_int_t)qs.dropped[2], "oldest", mmr_json_time(qs.oldest_ms), "last_seq",
                     (json_int_t)qs.last_seq, "max_events", (json_int_t)qs.max_rows, "max_bytes",
                     (json_int_t)qs.max_bytes);
}

json_t *mmr_status_collect(const struct mmr_agent *a)
{
    json_t *agent = json_object();
    json_object_set_new(agent, "version", json_string(MMR_VERSION));
    json_object_set_new(agent, "commit", json_string(MMR_GIT_COMMIT));
    json_object_set_new(agent, "pid", json_integer(mmr_process_id()));
    json_object_set_new(agent, "started", mmr_json_time(a->started_ms));
    json_object_set_new(
        agent, "uptime_s",
        json_integer((json_int_t)((mmr_time_mono_ms() - a->started_mono_ms) / 1000)));
    json_object_set_new(agent, "data_dir", json_string(a->cfg.data_dir));
    json_object_set_new(agent, "config", json_string(a->config_path));
    json_object_set_new(agent, "endpoint", json_string(a->endpoint));

    /* The check-in thread keeps the enrollment and check-in facts, read from
     * agent.db at its start; it runs whenever IPC is served. */
    struct mmr_checkin_status cs;
    memset(&cs, 0, sizeof(cs));
    if (a->checkin)
        mmr_checkin_status(a->checkin, &cs);
    json_t *enrollment = json_object();
    json_object_set_new(enrollment, "enrolled", json_boolean(cs.enrolled));
    json_object_set_new(enrollment, "device_id", str_or_null(cs.device_id));
    json_object_set_new(enrollment, "server",
                        str_or_null(cs.server[0] ? cs.server : a->cfg.server_url));
    json_object_set_new(enrollment, "group", str_or_null(cs.group));
    json_object_set_new(enrollment, "certificate_expires", mmr_json_time(cs.cert_not_after_ms));
    json_object_set_new(enrollment, "revoked", json_boolean(cs.revoked));

    json_t *policy = json_object();
    json_object_set_new(policy, "version",
                        cs.policy_version > 0 ? json_integer(cs.policy_version) : json_null());

    json_t *checkin = json_object();
    json_object_set_new(checkin, "last", mmr_json_time(cs.last_checkin_ms));
    json_object_set_new(checkin, "result", str_or_null(cs.last_result));
    json_object_set_new(checkin, "next", mmr_json_time(cs.next_checkin_ms));
    json_object_set_new(checkin, "failures", json_integer(cs.failures));
    json_object_set_new(checkin, "events_sent", json_integer((json_int_t)cs.events_sent));
    json_object_set_new(checkin, "connections", json_integer((json_int_t)cs.connects));
    json_object_set_new(checkin, "resumed", json_integer((json_int_t)cs.resumed));

    json_t *status = json_object();
    json_object_set_new(status, "agent", agent);
    json_object_set_new(status, "enrollment", enrollment);
    json_object_set_new(status, "policy", policy);
    json_object_set_new(status, "checkin", checkin);
    json_object_set_new(status, "queue", queue_json(a->queue));
    json_object_set_new(status, "modules", mmr_health_json(a->health));
    return status;
}

static void handle_status(struct mmr_control_call *call, json_t *args, void *ud)
{
    mmr_control_reply(call, mmr_status_collect(ud));
}

void mmr_status_register(struct mmr_control *ctl, struct mmr_agent *agent)
{
    mmr_control_register(ctl, "status", false, handle_status, agent);
}
