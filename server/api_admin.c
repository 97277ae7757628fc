/* The /admin/v1 API for mamoriadm and the console: devices, enrollment
 * tokens, policies, event counts, the audit log. Authenticated with the admin
 * token from `mamori-server init` (Authorization: Bearer ...). */
#include "server/server.h"

#include <stdlib.h>
#include <string.h>

#include "server/ca.h"
#include "server/store.h"
#include "shared/err.h"
#include "shared/json.h"
#include "shared/log.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "shared/policy.h"
#include "shared/token.h"

#define ACTOR "admin"

static bool authorized(struct mmr_server *srv, const struct mmr_api_request *req)
{
    const char *auth = mmr_http_message_header(req->http, "Authorization");
    if (!auth || strncmp(auth, "Bearer ", 7) != 0)
        return false;
    uint8_t h[MMR_SHA256_LEN];
    mmr_sha256(auth + 7, strlen(auth + 7), h);
    /* Constant time: the comparison must not tell how much of it matched. */
    uint8_t diff = 0;
    for (size_t i = 0; i < sizeof(h); i++)
        diff |= (uint8_t)(h[i] ^ srv->admin_token_hash[i]);
    return diff == 0;
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *device_json(const struct mmr_store_device *d)
{
    json_t *posture = NULL;
    if (d->posture)
        mmr_json_parse(d->posture, strlen(d->posture), MMR_JSON_MAX_DEPTH, &posture);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(d->id));
    json_object_set_new(o, "hostname", str_or_null(d->hostname));
    json_object_set_new(o, "os", str_or_null(d->os));
    json_object_set_new(o, "agent_version", str_or_null(d->agent_version));
    json_object_set_new(o, "org", str_or_null(d->org));
    json_object_set_new(o, "group", str_or_null(d->group));
    json_object_set_new(o, "hardware_id", str_or_null(d->hardware_id));
    json_object_set_new(o, "enrolled_at", mmr_json_time(d->enrolled_at));
    json_object_set_new(o, "enrollments", json_integer(d->enrollments));
    json_object_set_new(o, "last_checkin", mmr_json_time(d->last_checkin_at));
    json_object_set_new(o, "cert_serial", str_or_null(d->cert_serial));
    json_object_set_new(o, "cert_expires", mmr_json_time(d->cert_not_after));
    json_object_set_new(o, "queue_depth",
                        d->queue_depth >= 0 ? json_integer(d->queue_depth) : json_null());
    json_object_set_new(o, "policy_version",
                        d->policy_version >= 0 ? json_integer(d->policy_version) : json_null());
    json_object_set_new(o, "event_ack",
                        d->event_ack >= 0 ? json_integer(d->event_ack) : json_null());
    json_object_set_new(o, "revoked", json_boolean(d->revoked_at > 0));
    json_object_set_new(o, "revoked_at", mmr_json_time(d->revoked_at));
    json_object_set_new(o, "posture", posture ? posture : json_null());
    return o;
}

static void store_error(struct mmr_api_response *res, int rc)
{
    int status = rc == MMR_ENOENT                        ? 404
                 : rc == MMR_EINVAL || rc == MMR_ETOOBIG ? 400
                 : rc == MMR_EBUSY                       ? 409
                 : rc == MMR_EPERM                       ? 403
                                                         : 503;
    mmr_api_error(res, status, rc, NULL, mmr_err_msg());
}

static int64_t query_int(const struct mmr_api_request *req, const char *key, int64_t dflt)
{
    char *v = mmr_api_query(req, key);
    if (!v)
        return dflt;
    char *end;
    long long n = strtoll(v, &end, 10);
    int64_t out = *v && !*end ? (int64_t)n : dflt;
    free(v);
    return out;
}

static void devices_list(struct mmr_server *srv, const struct mmr_api_request *req,
                         struct mmr_api_response *res)
{
    char *org = mmr_api_query(req, "org");
    char *group = mmr_api_query(req, "group");
    struct mmr_store_device_query q = {.org = org,
                                       .group = group,
                                       .offset = (size_t)query_int(req, "offset", 0),
                                       .limit = (size_t)query_int(req, "limit", 100)};
    struct mmr_store_device *devs = NULL;
    size_t n = 0;
    int64_t total = 0;
    int rc = mmr_store_device_list(srv->store, &q, &devs, &n, &total);
    if (rc < 0) {
        store_error(res, rc);
    } else {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, device_json(&devs[i]));
        mmr_api_json(res, 200, json_pack("{s:I,s:o}", "total", (json_int_t)total, "devices", arr));
        mmr_store_device_free(devs, n);
    }
    free(org);
    free(group);
}

static void device_show(struct mmr_server *srv, const char *id, struct mmr_api_response *res)
{
    struct mmr_store_device d;
    memset(&d, 0, sizeof(d));
    int rc = mmr_store_device_get(srv->store, id, &d);
    if (rc < 0) {
        store_error(res, rc);
        return;
    }
    json_t *o = device_json(&d);
    mmr_store_device_clear(&d);
    struct mmr_store_event *ev = NULL;
    size_t n = 0;
    json_t *recent = json_array();
    if (mmr_store_events_recent(srv->store, id, 20, &ev, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            json_t *data = NULL;
            mmr_json_parse(ev[i].data, strlen(ev[i].data), MMR_JSON_MAX_DEPTH, &data);
            json_array_append_new(
                recent, json_pack("{s:I,s:s,s:i,s:o,s:o}", "seq", (json_int_t)ev[i].seq, "type",
                                  ev[i].type, "severity", ev[i].severity, "time",
                                  mmr_json_time(ev[i].time), "data", data ? data : json_null()));
        }
        mmr_store_event_free(ev, n);
    }
    json_object_set_new(o, "recent_events", recent);
    int64_t sev[MMR_STORE_SEVERITIES] = {0};
    if (mmr_store_events_count_by_severity(srv->store, id, sev) == 0)
        json_object_set_new(o, "events_by_severity",
                            json_pack("{s:I,s:I,s:I,s:I}", "low", (json_int_t)sev[0], "medium",
                                      (json_int_t)sev[1], "high", (json_int_t)sev[2], "critical",
                                      (json_int_t)sev[3]));
    mmr_api_json(res, 200, o);
}

static void device_revoke(struct mmr_server *srv, const char *id, struct mmr_api_response *res)
{
    int rc = mmr_store_device_revoke(srv->store, id, ACTOR);
    if (rc < 0) {
        store_error(res, rc);
        return;
    }
    mmr_info("admin", "device revoked", "device=%s", id);
    mmr_api_json(res, 200, json_pack("{s:s,s:b}", "id", id, "revoked", 1));
}

static void token_create(struct mmr_server *srv, const struct mmr_api_request *req,
                         struct mmr_api_response *res)
{
    json_t *body = mmr_api_body_json(req, res);
    if (!body)
        return;
    const char *org = "", *group = "";
    int64_t uses = 1, expires_s = 7 * 86400;
    int rc;
    if ((rc = mmr_json_get_str(body, "$", "org", true, &org)) < 0 ||
        (rc = mmr_json_get_str(body, "$", "group", true, &group)) < 0 ||
        (rc = mmr_json_get_int(body, "$", "uses", false, 1, 1000000, &uses)) < 0 ||
        (rc = mmr_json_get_int(body, "$", "expires_in_s", false, 60, 3650LL * 86400, &expires_s)) <
            0) {
        mmr_api_error(res, 400, rc, NULL, mmr_err_msg());
        json_decref(body);
        return;
    }
    struct mmr_store_token_new in = {.org = org,
                                     .group = group,
                                     .uses = uses,
                                     .expires_at = mmr_time_now_ms() + expires_s * 1000,
                                     .created_by = ACTOR};
    char id[MMR_STORE_TOKEN_ID_SIZE], secret[MMR_STORE_SECRET_SIZE];
    rc = mmr_store_token_create(srv->store, &in, id, secret);
    if (rc < 0) {
        store_error(res, rc);
        json_decref(body);
        return;
    }
    struct mmr_token t = {.url = srv->cfg.public_url,
                          .id = id,
                          .secret = secret,
                          .pin = (char *)mmr_ca_root_pin(srv->ca),
                          .org = org[0] ? (char *)org : NULL,
                          .group = group[0] ? (char *)group : NULL};
    char *text = mmr_token_encode(&t);
    memset(secret, 0, sizeof(secret));
    mmr_info("admin", "enrollment token created", "id=%s org=\"%s\" group=\"%s\" uses=%lld", id,
             org, group, (long long)uses);
    mmr_api_json(res, 201,
                 json_pack("{s:s,s:s,s:I,s:o}", "id", id, "token", text, "uses", (json_int_t)uses,
                           "expires_at", mmr_json_time(in.expires_at)));
    free(text);
    json_decref(body);
}

static void token_list(struct mmr_server *srv, struct mmr_api_response *res)
{
    struct mmr_store_token *t = NULL;
    size_t n = 0;
    int rc = mmr_store_token_list(srv->store, false, &t, &n);
    if (rc < 0) {
        store_error(res, rc);
        return;
    }
    int64_t now = mmr_time_now_ms();
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        const char *state = t[i].revoked_at                  ? "revoked"
                            : t[i].expires_at <= now         ? "expired"
                            : t[i].uses >= t[i].uses_allowed ? "used_up"
                                                             : "active";
        json_array_append_new(
            arr, json_pack("{s:s,s:s,s:s,s:I,s:I,s:o,s:o,s:s}", "id", t[i].id, "org",
                           t[i].org ? t[i].org : "", "group", t[i].group ? t[i].group : "", "uses",
                           (json_int_t)t[i].uses, "uses_allowed", (json_int_t)t[i].uses_allowed,
                           "expires_at", mmr_json_time(t[i].expires_at), "created_at",
                           mmr_json_time(t[i].created_at), "state", state));
    }
    mmr_store_token_free(t, n);
    mmr_api_json(res, 200, json_pack("{s:o}", "tokens", arr));
}

static void token_revoke(struct mmr_server *srv, const char *id, struct mmr_api_response *res)
{
    int rc = mmr_store_token_revoke(srv->store, id, ACTOR);
    if (rc < 0) {
        store_error(res, rc);
        return;
    }
    mmr_api_json(res, 200, json_pack("{s:s,s:b}", "id", id, "revoked", 1));
}

/* Validates a policy body; on failure answers 422 with the JSON path. */
static json_t *valid_policy(const struct mmr_api_request *req, struct mmr_api_response *res)
{
    struct mmr_policy p;
    if (mmr_policy_parse(req->body, req->body_len, &p) < 0) {
        mmr_api_error(res, 422, MMR_EINVAL, "invalid_policy", mmr_err_msg());
        return NULL;
    }
    json_t *doc = json_incref(p.doc);
    mmr_policy_free(&p);
    return doc;
}

static void policy_publish(struct mmr_server *srv, const char *group,
                           const struct mmr_api_request *req, struct mmr_api_response *res)
{
    json_t *doc = valid_policy(req, res);
    if (!doc)
        return;
    char *text = mmr_json_dump_line(doc);
    json_decref(doc);
    int rc = 0;
    int64_t version = 0;
    /* Sign for the next version; retry if someone published meanwhile. */
    for (int attempt = 0; attempt < 3; attempt++) {
        int64_t latest = 0;
        if ((rc = mmr_store_policy_latest_version(srv->store, group, &latest)) < 0)
            break;
        version = latest + 1;
        char *payload = mmr_policy_payload(group, version, text);
        char *sig = NULL;
        rc = mmr_ca_sign(srv->ca, payload, strlen(payload), &sig);
        free(payload);
        if (rc == 0)
            rc = mmr_store_policy_publish(srv->store, group, &version, text, sig, ACTOR);
        free(sig);
        if (rc != MMR_EBUSY)
            break;
    }
    free(text);
    if (rc < 0) {
        store_error(res, rc);
        return;
    }
    mmr_info("admin", "policy published", "group=\"%s\" version=%lld", group, (long long)version);
    mmr_api_json(res, 201, json_pack("{s:s,s:I}", "group", group, "version", (json_int_t)version));
}

static json_t *policy_json(const struct mmr_store_policy *p)
{
    json_t *doc = NULL;
    mmr_json_parse(p->document, strlen(p->document), MMR_POLICY_MAX_DEPTH, &doc);
    return json_pack("{s:s,s:I,s:b,s:s,s:o,s:o}", "group", p->group, "version",
                     (json_int_t)p->version, "active", p->active, "published_by",
                     p->published_by ? p->published_by : "", "published_at",
                     mmr_json_time(p->published_at), "document", doc ? doc : json_null());
}

static void policy_show(struct mmr_server *srv, const char *group, struct mmr_api_response *res)
{
    struct mmr_store_policy p;
    memset(&p, 0, sizeof(p));
    int rc = mmr_store_policy_active(srv->store, group, &p);
    if (rc < 0) {
        store_error(res, rc);
        return;
    }
    mmr_api_json(res, 200, policy_json(&p));
    mmr_store_policy_clear(&p);
}

static void policy_history(struct mmr_server *srv, const char *group, struct mmr_api_response *res)
{
    struct mmr_store_policy_change *c = NULL;
    size_t n = 0;
    int rc = mmr_store_policy_history(srv->store, group, &c, &n);
    if (rc < 0) {
        store_error(res, rc);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s,s:I,s:I,s:s,s:o}", "action", c[i].action,
                                             "version", (json_int_t)c[i].version, "previous",
                                             (json_int_t)c[i].previous, "by", c[i].actor, "at",
                                             mmr_json_time(c[i].at)));
    mmr_store_policy_change_free(c, n);
    mmr_api_json(res, 200, json_pack("{s:s,s:o}", "group", group, "history", arr));
}

static void policy_rollback(struct mmr_server *srv, const char *group,
                            const struct mmr_api_request *req, struct mmr_api_response *res)
{
    json_t *body = mmr_api_body_json(req, res);
    if (!body)
        return;
    int64_t version = 0;
    int rc = mmr_json_get_int(body, "$", "version", true, 1, INT64_MAX, &version);
    json_decref(body);
    if (rc < 0) {
        mmr_api_error(res, 400, rc, NULL, mmr_err_msg());
        return;
    }
    if ((rc = mmr_store_policy_rollback(srv->store, group, version, ACTOR)) < 0) {
        store_error(res, rc);
        return;
    }
    mmr_info("admin", "policy rolled back", "group=\"%s\" version=%lld", group, (long long)version);
    mmr_api_json(res, 200, json_pack("{s:s,s:I}", "group", group, "version", (json_int_t)version));
}

static void events_count(struct mmr_server *srv, const struct mmr_api_request *req,
                         struct mmr_api_response *res)
{
    char *device = mmr_api_query(req, "device");
    char *type = mmr_api_query(req, "type");
    struct mmr_store_event_filter f = {
        .device_id = device, .type = type, .severity = (int)query_int(req, "severity", -1)};
    int64_t count = 0;
    int rc = mmr_store_events_count(srv->store, &f, &count);
    if (rc < 0)
        store_error(res, rc);
    else
        mmr_api_json(res, 200, json_pack("{s:I}", "count", (json_int_t)count));
    free(device);
    free(type);
}

static void events_summary(struct mmr_server *srv, const struct mmr_api_request *req,
                           struct mmr_api_response *res)
{
    char *device = mmr_api_query(req, "device");
    int64_t sev[MMR_STORE_SEVERITIES] = {0};
    struct mmr_store_type_count *types = NULL;
    size_t n = 0;
    int rc = mmr_store_events_count_by_severity(srv->store, device, sev);
    if (rc == 0)
        rc = mmr_store_events_count_by_type(srv->store, device, &types, &n);
    if (rc < 0) {
        store_error(res, rc);
    } else {
        json_t *by_type = json_object();
        for (size_t i = 0; i < n; i++)
            json_object_set_new(by_type, types[i].type, json_integer(types[i].count));
        mmr_store_type_count_free(types, n);
        mmr_api_json(res, 200,
                     json_pack("{s:{s:I,s:I,s:I,s:I},s:o}", "by_severity", "low",
                               (json_int_t)sev[0], "medium", (json_int_t)sev[1], "high",
                               (json_int_t)sev[2], "critical", (json_int_t)sev[3], "by_type",
                               by_type));
    }
    free(device);
}

/* Splits "/admin/v1/<a>/<b>/<c>" into at most 3 segments (borrowed into buf). */
static size_t segments(const char *path, char *buf, size_t cap, const char *seg[3])
{
    snprintf(buf, cap, "%s", path + strlen("/admin/v1/"));
    size_t n = 0;
    for (char *p = buf; n < 3 && *p;) {
        seg[n++] = p;
        char *slash = strchr(p, '/');
        if (!slash)
            break;
        *slash = '\0';
        p = slash + 1;
    }
    return n;
}

void mmr_api_admin(struct mmr_server *srv, const struct mmr_api_request *req,
                   struct mmr_api_response *res)
{
    if (!authorized(srv, req)) {
        mmr_warn("admin", "unauthorised admin request", "peer=%s path=\"%s\"", req->peer,
                 req->http->path);
        mmr_api_error(res, 401, MMR_EPERM, "unauthorized", "a valid admin token is required");
        return;
    }
    char buf[512];
    const char *s[3] = {NULL, NULL, NULL};
    size_t n = segments(req->http->path, buf, sizeof(buf), s);
    bool get = strcmp(req->http->method, "GET") == 0;
    bool post = strcmp(req->http->method, "POST") == 0;

    if (n == 1 && strcmp(s[0], "devices") == 0 && get)
        devices_list(srv, req, res);
    else if (n == 2 && strcmp(s[0], "devices") == 0 && get)
        device_show(srv, s[1], res);
    else if (n == 3 && strcmp(s[0], "devices") == 0 && strcmp(s[2], "revoke") == 0 && post)
        device_revoke(srv, s[1], res);
    else if (n == 1 && strcmp(s[0], "tokens") == 0 && post)
        token_create(srv, req, res);
    else if (n == 1 && strcmp(s[0], "tokens") == 0 && get)
        token_list(srv, res);
    else if (n == 3 && strcmp(s[0], "tokens") == 0 && strcmp(s[2], "revoke") == 0 && post)
        token_revoke(srv, s[1], res);
    else if (n == 2 && strcmp(s[0], "policies") == 0 && strcmp(s[1], "validate") == 0 && post) {
        json_t *doc = valid_policy(req, res);
        if (doc)
            mmr_api_json(res, 200, json_pack("{s:b}", "valid", 1));
        json_decref(doc);
    } else if (n == 2 && strcmp(s[0], "policies") == 0 && post)
        policy_publish(srv, s[1], req, res);
    else if (n == 2 && strcmp(s[0], "policies") == 0 && get)
        policy_show(srv, s[1], res);
    else if (n == 3 && strcmp(s[0], "policies") == 0 && strcmp(s[2], "history") == 0 && get)
        policy_history(srv, s[1], res);
    else if (n == 3 && strcmp(s[0], "policies") == 0 && strcmp(s[2], "rollback") == 0 && post)
        policy_rollback(srv, s[1], req, res);
    else if (n == 2 && strcmp(s[0], "events") == 0 && strcmp(s[1], "count") == 0 && get)
        events_count(srv, req, res);
    else if (n == 2 && strcmp(s[0], "events") == 0 && strcmp(s[1], "summary") == 0 && get)
        events_summary(srv, req, res);
    else
        mmr_api_error(res, 404, MMR_ENOENT, "no_such_path", "no such admin path");
}
