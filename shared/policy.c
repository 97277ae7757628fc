/* Policy document validation and its typed view. */
#include "shared/policy.h"

#include <string.h>

#include "shared/config.h"
#include "shared/err.h"
#include "shared/json.h"
#include "shared/mem.h"

static const char *const profiles[] = {"carried-out", "office-internet", "server", NULL};
static const char *const languages[] = {"ja", "en", NULL};
/* Sections whose contents later capabilities define; today they must be objects. */
static const char *const object_sections[] = {"scan", "devctl", "crypt", "patch", NULL};

void mmr_policy_defaults(struct mmr_policy *p)
{
    memset(p, 0, sizeof(*p));
    p->profile = "carried-out";
    p->checkin_interval_ms = 60 * 1000;
    p->checkin_jitter_pct = 20;
    p->queue_max_bytes = 64ull * 1024 * 1024;
    p->queue_max_events = 1000000;
    p->upload_batch_events = 1000;
    p->upload_rate_eps = 5000;
    p->language = "ja";
}

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

/* Every key of a known section must be known: a typo must not silently
 * become the default on thousands of laptops. */
static int only_keys(const json_t *obj, const char *path, const char *const *known)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        if (!in_list(key, known))
            return mmr_err_set(MMR_EINVAL, "%s.%s: unknown setting", path, key);
    }
    return 0;
}

/* A size: a non-negative integer (bytes) or a string such as "64M". */
static int get_size(const json_t *obj, const char *path, const char *key, uint64_t min,
                    uint64_t max, uint64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    uint64_t n;
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        n = (uint64_t)json_integer_value(v);
    } else if (json_is_string(v)) {
        if (mmr_parse_size(json_string_value(v), &n) < 0)
            return mmr_err_wrap(MMR_EINVAL, "%s.%s", path, key);
    } else {
        return mmr_err_set(MMR_EINVAL, "%s.%s: expected a size such as 65536 or \"64M\"", path,
                           key);
    }
    if (n < min || n > max)
        return mmr_err_set(MMR_EINVAL, "%s.%s: %llu is outside %llu..%llu bytes", path, key,
                           (unsigned long long)n, (unsigned long long)min,
                           (unsigned long long)max);
    *out = n;
    return 0;
}

/* A duration: an integer (seconds) or a string such as "90s", "5m". */
static int get_duration(const json_t *obj, const char *path, const char *key, int64_t min_ms,
                        int64_t max_ms, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    int64_t ms;
    if (json_is_integer(v) && json_integer_value(v) <= INT64_MAX / 1000) {
        ms = json_integer_value(v) * 1000;
    } else if (json_is_string(v)) {
        if (mmr_parse_duration_ms(json_string_value(v), &ms) < 0)
            return mmr_err_wrap(MMR_EINVAL, "%s.%s", path, key);
    } else {
        return mmr_err_set(MMR_EINVAL, "%s.%s: expected seconds or a duration such as \"5m\"",
                           path, key);
    }
    if (ms < min_ms || ms > max_ms)
        return mmr_err_set(MMR_EINVAL, "%s.%s: %lld s is outside %lld..%lld s", path, key,
                           (long long)(ms / 1000), (long long)(min_ms / 1000),
                           (long long)(max_ms / 1000));
    *out = ms;
    return 0;
}

static int get_choice(const json_t *obj, const char *path, const char *key, bool required,
                      const char *const *choices, const char **out)
{
    const char *s = NULL;
    int rc = mmr_json_get_str(obj, path, key, required, &s);
    if (rc < 0 || !s)
        return rc;
    if (!in_list(s, choices)) {
        struct mmr_buf list = {0};
        for (const char *const *c = choices; *c; c++)
            mmr_buf_appendf(&list, "%s%s", c == choices ? "" : ", ", *c);
        rc = mmr_err_set(MMR_EINVAL, "%s.%s: '%s' is not one of: %s", path, key, s, list.data);
        mmr_buf_free(&list);
        return rc;
    }
    *out = s;
    return 0;
}

static int check_checkin(const json_t *doc, struct mmr_policy *p)
{
    static const char *const keys[] = {"interval", "jitter_percent", NULL};
    json_t *sec = NULL;
    int rc = mmr_json_get_object(doc, "$", "checkin", false, &sec);
    if (rc < 0 || !sec)
        return rc;
    if ((rc = only_keys(sec, "$.checkin", keys)) < 0)
        return rc;
    if ((rc = get_duration(sec, "$.checkin", "interval", 10 * 1000, 86400 * 1000,
                           &p->checkin_interval_ms)) < 0)
        return rc;
    return mmr_json_get_int(sec, "$.checkin", "jitter_percent", false, 0, 50,
                            &p->checkin_jitter_pct);
}

static int check_telemetry(const json_t *doc, struct mmr_policy *p)
{
    static const char *const keys[] = {"queue_max_bytes", "queue_max_events",
                                       "upload_batch_events", "upload_rate", NULL};
    json_t *sec = NULL;
    int rc = mmr_json_get_object(doc, "$", "telemetry", false, &sec);
    if (rc < 0 || !sec)
        return rc;
    if ((rc = only_keys(sec, "$.telemetry", keys)) < 0)
        return rc;
    if ((rc = get_size(sec, "$.telemetry", "queue_max_bytes", 64 * 1024, 4ull << 30,
                       &p->queue_max_bytes)) < 0)
        return rc;
    if ((rc = mmr_json_get_int(sec, "$.telemetry", "queue_max_events", false, 100, 100000000,
                               &p->queue_max_events)) < 0)
        return rc;
    if ((rc = mmr_json_get_int(sec, "$.telemetry", "upload_batch_events", false, 1, 10000,
                               &p->upload_batch_events)) < 0)
        return rc;
    return mmr_json_get_int(sec, "$.telemetry", "upload_rate", false, 1, 1000000,
                            &p->upload_rate_eps);
}

static int check_notify(const json_t *doc, struct mmr_policy *p)
{
    static const char *const keys[] = {"language", NULL};
    json_t *sec = NULL;
    int rc = mmr_json_get_object(doc, "$", "notify", false, &sec);
    if (rc < 0 || !sec)
        return rc;
    if ((rc = only_keys(sec, "$.notify", keys)) < 0)
        return rc;
    return get_choice(sec, "$.notify", "language", false, languages, &p->language);
}

int mmr_policy_from_json(json_t *doc, struct mmr_policy *out)
{
    mmr_policy_defaults(out);
    if (!json_is_object(doc))
        return mmr_err_set(MMR_EINVAL, "$: a policy must be a JSON object");
    int rc = get_choice(doc, "$", "profile", true, profiles, &out->profile);
    if (rc == 0)
        rc = check_checkin(doc, out);
    if (rc == 0)
        rc = check_telemetry(doc, out);
    if (rc == 0)
        rc = check_notify(doc, out);
    for (const char *const *s = object_sections; rc == 0 && *s; s++) {
        json_t *sec = NULL;
        rc = mmr_json_get_object(doc, "$", *s, false, &sec);
    }
    if (rc < 0) {
        mmr_policy_defaults(out);
        return rc;
    }
    out->doc = json_incref(doc);
    return 0;
}

int mmr_policy_parse(const char *text, size_t len, struct mmr_policy *out)
{
    mmr_policy_defaults(out);
    if (len > MMR_POLICY_MAX_BYTES)
        return mmr_err_set(MMR_ETOOBIG, "policy is %zu bytes, over the limit of %d", len,
                           MMR_POLICY_MAX_BYTES);
    json_t *doc;
    int rc = mmr_json_parse_object(text, len, MMR_POLICY_MAX_DEPTH, &doc);
    if (rc < 0)
        return mmr_err_wrap(rc, "policy is not valid JSON");
    rc = mmr_policy_from_json(doc, out);
    json_decref(doc);
    return rc;
}

void mmr_policy_free(struct mmr_policy *p)
{
    json_decref(p->doc);
    mmr_policy_defaults(p);
}
