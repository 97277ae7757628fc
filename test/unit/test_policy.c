/* Unit tests for shared/policy.c: validation, JSON paths in errors,
 * defaults, unknown sections kept. */
#include <criterion/criterion.h>

#include <string.h>

#include "shared/err.h"
#include "shared/policy.h"

static int parse(const char *text, struct mmr_policy *p)
{
    return mmr_policy_parse(text, strlen(text), p);
}

Test(policy, minimal_document_gets_defaults)
{
    struct mmr_policy p;
    cr_assert_eq(parse("{\"profile\":\"carried-out\"}", &p), 0, "%s", mmr_err_msg());
    cr_expect_str_eq(p.profile, "carried-out");
    cr_expect_eq(p.checkin_interval_ms, 60000);
    cr_expect_eq(p.checkin_jitter_pct, 20);
    cr_expect_eq(p.queue_max_bytes, 64ull << 20);
    cr_expect_eq(p.queue_max_events, 1000000);
    cr_expect_str_eq(p.language, "ja");
    mmr_policy_free(&p);
}

Test(policy, full_document)
{
    const char *doc = "{\"profile\":\"office-internet\","
                      "\"checkin\":{\"interval\":\"5m\",\"jitter_percent\":10},"
                      "\"telemetry\":{\"queue_max_bytes\":\"16M\",\"queue_max_events\":5000,"
                      "\"upload_batch_events\":200,\"upload_rate\":300},"
                      "\"notify\":{\"language\":\"en\"},"
                      "\"scan\":{\"anything\":\"later\"},\"future\":{\"x\":1}}";
    struct mmr_policy p;
    cr_assert_eq(parse(doc, &p), 0, "%s", mmr_err_msg());
    cr_expect_eq(p.checkin_interval_ms, 300000);
    cr_expect_eq(p.checkin_jitter_pct, 10);
    cr_expect_eq(p.queue_max_bytes, 16ull << 20);
    cr_expect_eq(p.queue_max_events, 5000);
    cr_expect_eq(p.upload_batch_events, 200);
    cr_expect_eq(p.upload_rate_eps, 300);
    cr_expect_str_eq(p.language, "en");
    cr_expect(json_is_object(json_object_get(p.doc, "future")), "unknown sections are kept");
    mmr_policy_free(&p);

    cr_assert_eq(parse("{\"profile\":\"server\",\"checkin\":{\"interval\":120}}", &p), 0);
    cr_expect_eq(p.checkin_interval_ms, 120000, "integers are seconds");
    mmr_policy_free(&p);
}

static void expect_refused(const char *doc, const char *path_in_message)
{
    struct mmr_policy p;
    int rc = parse(doc, &p);
    cr_expect_lt(rc, 0, "accepted: %s", doc);
    cr_expect(strstr(mmr_err_msg(), path_in_message), "for %s the message was: %s", doc,
              mmr_err_msg());
    cr_expect_null(p.doc);
}

Test(policy, errors_name_the_json_path)
{
    expect_refused("{}", "profile");
    expect_refused("{\"profile\":\"beach\"}", "$.profile: 'beach' is not one of");
    expect_refused("{\"profile\":\"server\",\"checkin\":{\"interval\":5}}",
                   "$.checkin.interval: 5 s is outside");
    expect_refused("{\"profile\":\"server\",\"checkin\":{\"intervall\":60}}",
                   "$.checkin.intervall: unknown setting");
    expect_refused("{\"profile\":\"server\",\"checkin\":[]}", "$.checkin");
    expect_refused("{\"profile\":\"server\",\"telemetry\":{\"queue_max_bytes\":\"lots\"}}",
                   "$.telemetry.queue_max_bytes");
    expect_refused("{\"profile\":\"server\",\"telemetry\":{\"queue_max_bytes\":1}}",
                   "$.telemetry.queue_max_bytes: 1 is outside");
    expect_refused("{\"profile\":\"server\",\"telemetry\":{\"queue_max_events\":\"x\"}}",
                   "$.telemetry.queue_max_events");
    expect_refused("{\"profile\":\"server\",\"notify\":{\"language\":\"fr\"}}",
                   "$.notify.language");
    expect_refused("{\"profile\":\"server\",\"scan\":true}", "$.scan");
    expect_refused("[1]", "expected a JSON object");
    expect_refused("{\"profile\":", "not valid JSON");
}

Test(policy, limits)
{
    char deep[100];
    memset(deep, '[', sizeof(deep));
    struct mmr_policy p;
    cr_expect_lt(mmr_policy_parse(deep, sizeof(deep), &p), 0);
    static char big[MMR_POLICY_MAX_BYTES + 2];
    memset(big, ' ', sizeof(big));
    cr_expect_eq(mmr_policy_parse(big, sizeof(big), &p), MMR_ETOOBIG);
}
