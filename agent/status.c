/* Builds the status document from the agent's in-memory state. */
#include "agent/status.h"

#include "agent/control.h"
#include "agent/health.h"
#include "mamori_version.h"
#include "shared/platform.h"

/* Unset and empty settings both read as null. */
static json_t *str_or_null(const char *s)
{
    return s && s[0] ? json_string(s) : json_null();
}

static json_t *time_or_null(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    char buf[32];
    mmr_time_format(ms, buf);
    return json_string(buf);
}

json_t *mmr_status_collect(const struct mmr_agent *a)
{
    json_t *agent = json_object();
    json_object_set_new(agent, "version", json_string(MMR_VERSION));
    json_object_set_new(agent, "commit", json_string(MMR_GIT_COMMIT));
    json_object_set_new(agent, "pid", json_integer(mmr_process_id()));
    json_object_set_new(agent, "started", time_or_null(a->started_ms));
    json_object_set_new(agent, "uptime_s",
                        json_integer((json_int_t)((mmr_time_mono_ms() - a->started_mono_ms) / 1000)));
    json_object_set_new(agent, "data_dir", json_string(a->cfg.data_dir));
    json_object_set_new(agent, "config", json_string(a->config_path));
    json_object_set_new(agent, "endpoint", json_string(a->endpoint));

    json_t *enrollment = json_object();
    json_object_set_new(enrollment, "enrolled", json_boolean(a->state.device_id != NULL));
    json_object_set_new(enrollment, "device_id", str_or_null(a->state.device_id));
    json_object_set_new(enrollment, "server", str_or_null(a->cfg.server_url));

    json_t *policy = json_object();
    json_object_set_new(policy, "version", str_or_null(a->state.policy_version));

    json_t *checkin = json_object();
    json_object_set_new(checkin, "last", time_or_null(a->state.last_checkin_ms));
    json_object_set_new(checkin, "result", str_or_null(a->state.last_checkin_result));

    json_t *status = json_object();
    json_object_set_new(status, "agent", agent);
    json_object_set_new(status, "enrollment", enrollment);
    json_object_set_new(status, "policy", policy);
    json_object_set_new(status, "checkin", checkin);
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
