/* Module health registry, shared between the loop thread and workers. */
#include "agent/health.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "shared/mem.h"
#include "shared/platform.h"

#define MAX_MODULES 32

struct entry {
    char *module;
    enum mmr_health_state state;
    char *detail;
    int64_t since_ms;
};

struct mmr_health {
    uv_mutex_t lock;
    struct entry entries[MAX_MODULES];
    size_t count;
};

static const char *const state_names[] = {"starting", "ok", "degraded", "failed", "disabled"};

const char *mmr_health_state_name(enum mmr_health_state state)
{
    if ((unsigned)state > MMR_HEALTH_DISABLED)
        return "unknown";
    return state_names[state];
}

struct mmr_health *mmr_health_new(void)
{
    struct mmr_health *h = mmr_calloc(1, sizeof(*h));
    uv_mutex_init(&h->lock);
    return h;
}

void mmr_health_free(struct mmr_health *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->count; i++) {
        free(h->entries[i].module);
        free(h->entries[i].detail);
    }
    uv_mutex_destroy(&h->lock);
    free(h);
}

void mmr_health_set(struct mmr_health *h, const char *module, enum mmr_health_state state,
                    const char *detail)
{
    uv_mutex_lock(&h->lock);
    struct entry *e = NULL;
    for (size_t i = 0; i < h->count; i++)
        if (strcmp(h->entries[i].module, module) == 0)
            e = &h->entries[i];
    if (!e && h->count < MAX_MODULES) {
        e = &h->entries[h->count++];
        e->module = mmr_strdup(module);
        e->since_ms = 0;
    }
    if (e) {
        if (e->state != state || e->since_ms == 0)
            e->since_ms = mmr_time_now_ms();
        e->state = state;
        free(e->detail);
        e->detail = detail ? mmr_strdup(detail) : NULL;
    }
    uv_mutex_unlock(&h->lock);
}

json_t *mmr_health_json(struct mmr_health *h)
{
    json_t *arr = json_array();
    uv_mutex_lock(&h->lock);
    for (size_t i = 0; i < h->count; i++) {
        const struct entry *e = &h->entries[i];
        char since[32];
        mmr_time_format(e->since_ms, since);
        json_t *o = json_object();
        json_object_set_new(o, "module", json_string(e->module));
        json_object_set_new(o, "state", json_string(mmr_health_state_name(e->state)));
        json_object_set_new(o, "since", json_string(since));
        if (e->detail)
            json_object_set_new(o, "detail", json_string(e->detail));
        json_array_append_new(arr, o);
    }
    uv_mutex_unlock(&h->lock);
    return arr;
}
