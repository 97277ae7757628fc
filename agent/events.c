/* The selftest and events IPC commands. */
#include "agent/events.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "agent/agent.h"
#include "agent/checkin.h"
#include "agent/control.h"
#include "agent/queue.h"
#include "shared/err.h"
#include "shared/json.h"
#include "shared/log.h"
#include "shared/mem.h"
#include "shared/platform.h"

/* Below the queue's pending bound (65,536): the loop thread never waits. */
#define SELFTEST_MAX 50000
#define TAIL_MAX 1000

struct selftest {
    struct mmr_control_call *call;
    struct mmr_agent *agent;
    int64_t want, done, failed;
    uint64_t first_seq, last_seq;
    char error[256];
};

static void selftest_finish(struct selftest *t)
{
    if (t->failed) {
        mmr_control_fail(t->call, MMR_EIO, t->error);
    } else {
        mmr_info("events", "selftest events queued", "count=%lld first_seq=%llu",
                 (long long)t->done, (unsigned long long)t->first_seq);
        mmr_control_reply(t->call, json_pack("{s:I,s:I,s:I}", "queued", (json_int_t)t->done,
                                             "first_seq", (json_int_t)t->first_seq, "last_seq",
                                             (json_int_t)t->last_seq));
        if (t->agent->checkin)
            mmr_checkin_wake(t->agent->checkin, true);
    }
    free(t);
}

static void on_stored(void *arg, int rc, uint64_t seq)
{
    struct selftest *t = arg;
    if (rc < 0) {
        if (!t->failed)
            snprintf(t->error, sizeof(t->error), "%s", mmr_err_msg());
        t->failed++;
    } else {
        if (!t->first_seq || seq < t->first_seq)
            t->first_seq = seq;
        if (seq > t->last_seq)
            t->last_seq = seq;
    }
    if (++t->done >= t->want)
        selftest_finish(t);
}

static void handle_selftest(struct mmr_control_call *call, json_t *args, void *ud)
{
    struct mmr_agent *a = ud;
    int64_t n = 1, sev = 0;
    if (mmr_json_get_int(args, "$.args", "events", false, 1, SELFTEST_MAX, &n) < 0 ||
        mmr_json_get_int(args, "$.args", "severity", false, 0, 3, &sev) < 0) {
        mmr_control_fail(call, MMR_EINVAL, mmr_err_msg());
        return;
    }
    if (!a->queue) {
        mmr_control_fail(call, MMR_EIO, "the telemetry queue is not open");
        return;
    }
    struct selftest *t = mmr_calloc(1, sizeof(*t));
    t->call = call;
    t->agent = a;
    t->want = n;
    char ts[32];
    mmr_time_format(mmr_time_now_ms(), ts);
    const struct mmr_peer *peer = mmr_control_peer(call);
    for (int64_t i = 0; i < n; i++) {
        char data[160];
        snprintf(data, sizeof(data), "{\"n\":%lld,\"of\":%lld,\"by\":\"%s\",\"started\":\"%s\"}",
                 (long long)i + 1, (long long)n, peer->name, ts);
        struct mmr_event ev = {.severity = (int)sev, .type = "agent.selftest", .data = data};
        int rc = mmr_queue_push(a->queue, &ev, on_stored, t);
        if (rc < 0) {
            /* Events not accepted count as done-and-failed, so the reply comes. */
            snprintf(t->error, sizeof(t->error), "%s", mmr_err_msg());
            t->failed += n - i;
            t->done += n - i;
            if (t->done >= t->want)
                selftest_finish(t);
            return;
        }
    }
}

struct tail_job {
    uv_work_t work;
    struct mmr_control_call *call;
    struct mmr_queue *queue;
    size_t n;
    struct mmr_event *events;
    size_t count;
    int rc;
    char error[256];
};

static void tail_work(uv_work_t *w)
{
    struct tail_job *j = w->data;
    j->rc = mmr_queue_tail(j->queue, j->n, &j->events, &j->count);
    if (j->rc < 0)
        snprintf(j->error, sizeof(j->error), "%s", mmr_err_msg());
}

static void tail_done(uv_work_t *w, int status)
{
    struct tail_job *j = w->data;
    if (status < 0 || j->rc < 0) {
        mmr_control_fail(j->call, j->rc < 0 ? j->rc : MMR_EIO, j->error);
    } else {
        json_t *arr = json_array();
        for (size_t i = 0; i < j->count; i++) {
            const struct mmr_event *e = &j->events[i];
            char ts[32];
            mmr_time_format(e->time_ms, ts);
            json_t *data = NULL;
            mmr_json_parse(e->data, strlen(e->data), MMR_JSON_MAX_DEPTH, &data);
            json_array_append_new(arr, json_pack("{s:I,s:s,s:s,s:i,s:o}", "seq",
                                                 (json_int_t)e->seq, "time", ts, "type", e->type,
                                                 "severity", e->severity, "data",
                                                 data ? data : json_null()));
        }
        mmr_control_reply(j->call, json_pack("{s:o}", "events", arr));
    }
    mmr_queue_events_free(j->events, j->count);
    free(j);
}

static void handle_events(struct mmr_control_call *call, json_t *args, void *ud)
{
    struct mmr_agent *a = ud;
    int64_t n = 20;
    if (mmr_json_get_int(args, "$.args", "tail", false, 1, TAIL_MAX, &n) < 0) {
        mmr_control_fail(call, MMR_EINVAL, mmr_err_msg());
        return;
    }
    if (!a->queue) {
        mmr_control_fail(call, MMR_EIO, "the telemetry queue is not open");
        return;
    }
    struct tail_job *j = mmr_calloc(1, sizeof(*j));
    j->work.data = j;
    j->call = call;
    j->queue = a->queue;
    j->n = (size_t)n;
    if (uv_queue_work(a->loop, &j->work, tail_work, tail_done) < 0) {
        mmr_control_fail(call, MMR_EIO, "cannot start the query");
        free(j);
    }
}

/* "sync": check in and send everything now, instead of at the next cycle. */
static void handle_sync(struct mmr_control_call *call, json_t *args, void *ud)
{
    struct mmr_agent *a = ud;
    if (!a->checkin) {
        mmr_control_fail(call, MMR_EIO, "the check-in cycle is not running");
        return;
    }
    mmr_checkin_wake(a->checkin, false);
    mmr_control_reply(call, json_pack("{s:b}", "started", 1));
}

void mmr_events_register(struct mmr_control *ctl, struct mmr_agent *agent)
{
    mmr_control_register(ctl, "sync", true, handle_sync, agent);
    mmr_control_register(ctl, "selftest", true, handle_selftest, agent);
    mmr_control_register(ctl, "events", true, handle_events, agent);
}
