/* Integration: the agent's uplink details — enrollment from the environment,
 * `mamorictl events --tail`, and a backlog drained at the policy's pace
 * (token bucket) rather than all at once. */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fleet.h"
#include "proc.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/platform.h"

static struct fleet f;
static struct fleet_server srv;

static void setup(void)
{
    fleet_init(&f);
    fleet_server_init(&f, &srv, NULL);
    fleet_server_start(&srv);
}

static void teardown(void)
{
    fleet_server_stop(&srv);
    fleet_cleanup(&f);
}

TestSuite(uplink, .init = setup, .fini = teardown, .timeout = 240);

static long long queue_depth(const struct fleet_agent *a)
{
    json_t *st = fleet_agent_status(a);
    long long d = st ? fleet_json_int(st, "queue.depth") : -1;
    json_decref(st);
    return d;
}

static void ctl_ok(const struct fleet_agent *a, const char *cmd, const char *arg1,
                   const char *arg2)
{
    struct proc_result res;
    int rc = fleet_ctl(a, &res, cmd, arg1, arg2, NULL);
    cr_assert_eq(rc, 0, "mamorictl %s: exit %d: %s", cmd, rc, res.err);
    proc_result_free(&res);
}

Test(uplink, enrolls_from_the_environment)
{
    char *token = fleet_token_create(&srv, "City", "staff", 1, NULL);
    struct fleet_agent a;
    fleet_agent_init(&f, &a, "envagent", &srv, NULL, NULL, NULL);
    setenv("MAMORI_ENROLL_TOKEN", token, 1);
    fleet_agent_start_enrolled(&a);
    unsetenv("MAMORI_ENROLL_TOKEN");
    fleet_agent_stop(&a);
    free(token);
}

Test(uplink, tail_shows_queued_events)
{
    char *token = fleet_token_create(&srv, "City", "staff", 1, NULL);
    struct fleet_agent a;
    fleet_agent_init(&f, &a, "tailer", &srv, NULL, token, NULL);
    fleet_agent_start_enrolled(&a);
    fleet_server_stop(&srv); /* events stay queued */
    ctl_ok(&a, "selftest", "--events", "5");

    struct proc_result res;
    cr_assert_eq(fleet_ctl(&a, &res, "events", "--tail", "3", "--json", NULL), 0, "%s", res.err);
    json_t *doc = NULL;
    cr_assert_eq(mmr_json_parse_object(res.out, strlen(res.out), 16, &doc), 0, "%s", res.out);
    json_t *events = json_object_get(doc, "events");
    cr_expect_eq(json_array_size(events), 3);
    long long prev = 0;
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        cr_expect_str_eq(fleet_json_str(e, "type"), "agent.selftest");
        cr_expect_gt(fleet_json_int(e, "seq"), prev, "oldest first");
        prev = fleet_json_int(e, "seq");
    }
    json_decref(doc);
    proc_result_free(&res);

    cr_assert_eq(fleet_ctl(&a, &res, "events", "--tail", "2", NULL), 0, "%s", res.err);
    cr_expect(strstr(res.out, "agent.selftest"), "%s", res.out);
    proc_result_free(&res);
    fleet_agent_stop(&a);
    fleet_server_start(&srv);
    free(token);
}

Test(uplink, backlog_drains_at_the_policy_pace)
{
    char *token = fleet_token_create(&srv, "City", "paced", 1, NULL);
    char *policy_path = mmr_asprintf("%s/paced.json", f.root);
    fleet_write_file(policy_path, "{\"profile\":\"carried-out\",\"telemetry\":"
                                  "{\"upload_rate\":500,\"upload_batch_events\":250}}");
    struct proc_result res;
    cr_assert_eq(fleet_adm(&srv, &res, "policy", "publish", "--group", "paced", policy_path,
                           NULL),
                 0, "%s", res.err);
    proc_result_free(&res);

    struct fleet_agent a;
    fleet_agent_init(&f, &a, "paced", &srv, NULL, token, NULL);
    fleet_agent_start_enrolled(&a);
    fleet_server_stop(&srv);
    ctl_ok(&a, "selftest", "--events", "1500");
    cr_assert_eq(queue_depth(&a), 1500);

    /* 1,500 events at 500 events/s: about three seconds, not a burst. */
    fleet_server_start(&srv);
    uint64_t t0 = mmr_time_mono_ms();
    ctl_ok(&a, "sync", NULL, NULL);
    while (queue_depth(&a) > 0 && mmr_time_mono_ms() - t0 < (uint64_t)fleet_ms(30000))
        usleep(50 * 1000);
    uint64_t took = mmr_time_mono_ms() - t0;
    cr_assert_eq(queue_depth(&a), 0, "backlog did not drain");
    cr_log_info("1500 events drained in %llu ms at upload_rate 500", (unsigned long long)took);
    cr_expect_geq(took, 2000, "drained in %llu ms: the rate limit was not applied",
                  (unsigned long long)took);
    fleet_agent_stop(&a);
    free(policy_path);
    free(token);
}
