/* The /v1 API that agents call: enroll (token + CSR, no client certificate
 * yet), and with a device certificate: checkin, events, policy, renew. */
#include "server/server.h"

#include <stdlib.h>
#include <string.h>

#include "mamori_version.h"
#include "server/ca.h"
#include "server/event_batch.h"
#include "server/store.h"
#include "shared/err.h"
#include "shared/json.h"
#include "shared/log.h"
#include "shared/mem.h"
#include "shared/platform.h"

static bool is(const struct mmr_api_request *req, const char *method, const char *path)
{
    return strcmp(req->http->method, method) == 0 && strcmp(req->http->path, path) == 0;
}

/* The certificate must be the device's current one, and the device not
 * revoked: checked on every request, so a revocation bites at once. */
static int authenticate(struct mmr_server *srv, const struct mmr_api_request *req,
                        struct mmr_api_response *res, struct mmr_store_device *dev)
{
    if (!req->has_cert && req->cert_error[0]) {
        /* Presented but failed verification (expired, another CA): say why. */
        bool expired = req->cert.not_after_ms > 0 && req->cert.not_after_ms < mmr_time_now_ms();
        mmr_warn("api", "device certificate refused", "peer=%s error=\"%s\"", req->peer,
                 req->cert_error);
        mmr_api_error(res, 403, MMR_EPERM, expired ? "cert_expired" : "cert_invalid",
                      req->cert_error);
        return MMR_EPERM;
    }
    if (!req->has_cert) {
        mmr_api_error(res, 401, MMR_EPERM, "no_certificate",
                      "this call needs the device certificate issued at enrollment");
        return MMR_EPERM;
    }
    enum mmr_store_cert_state state = MMR_STORE_CERT_UNKNOWN;
    int rc = mmr_store_device_by_serial(srv->store, req->cert.serial_hex, dev, &state);
    if (rc == 0 && strcmp(dev->id, req->cert.cn) != 0) {
        mmr_store_device_clear(dev);
        rc = MMR_EPERM;
        state = MMR_STORE_CERT_UNKNOWN;
    }
    if (rc == 0)
        return 0;
    if (rc != MMR_ENOENT && rc != MMR_EPERM) {
        mmr_api_error(res, 503, rc, "store", mmr_err_msg());
        return rc;
    }
    char reason[32];
    snprintf(reason, sizeof(reason), "cert_%s", mmr_store_cert_state_name(state));
    mmr_warn("api", "device certificate refused", "peer=%s serial=%s state=%s", req->peer,
             req->cert.serial_hex, mmr_store_cert_state_name(state));
    mmr_api_error(res, 403, MMR_EPERM, reason,
                  state == MMR_STORE_CERT_REVOKED    ? "this device has been revoked"
                  : state == MMR_STORE_CERT_REPLACED ? "this certificate was replaced; enroll again"
                  : state == MMR_STORE_CERT_EXPIRED  ? "this certificate has expired; enroll again"
                                                     : "unknown certificate");
    return MMR_EPERM;
}

/* The signed policy for a group: {"payload": "<JSON text>", "signature":
 * "<base64>"}, the payload {"group", "version", "document"}. The bytes are
 * rebuilt exactly as they were signed at publish time. */
static json_t *policy_envelope(struct mmr_server *srv, const char *group, int64_t *version)
{
    struct mmr_store_policy p;
    memset(&p, 0, sizeof(p));
    if (mmr_store_policy_active(srv->store, group ? group : "", &p) < 0)
        return NULL;
    char *payload = mmr_policy_payload(p.group, p.version, p.document);
    json_t *env = json_pack("{s:s,s:s}", "payload", payload, "signature", p.signature);
    *version = p.version;
    free(payload);
    mmr_store_policy_clear(&p);
    return env;
}

char *mmr_policy_payload(const char *group, int64_t version, const char *document)
{
    json_t *g = json_string(group);
    char *gtext = json_dumps(g, JSON_ENCODE_ANY);
    json_decref(g);
    char *payload =
        mmr_asprintf("{\"group\":%s,\"version\":%lld,\"document\":%s}", gtext, (long long)version,
                     document);
    free(gtext);
    return payload;
}

static const char *opt_str(json_t *doc, const char *key)
{
    const char *v = NULL;
    mmr_json_get_str(doc, "$", key, false, &v);
    return v;
}

static void enroll(struct mmr_server *srv, const struct mmr_api_request *req,
                   struct mmr_api_response *res)
{
    json_t *body = mmr_api_body_json(req, res);
    if (!body)
        return;
    const char *token_id, *secret, *csr_pem, *hw;
    struct mmr_csr csr;
    memset(&csr, 0, sizeof(csr));
    char *cert_pem = NULL;
    struct mmr_store_device dev;
    memset(&dev, 0, sizeof(dev));
    int rc;
    if ((rc = mmr_json_get_str(body, "$", "token_id", true, &token_id)) < 0 ||
        (rc = mmr_json_get_str(body, "$", "token_secret", true, &secret)) < 0 ||
        (rc = mmr_json_get_str(body, "$", "csr", true, &csr_pem)) < 0 ||
        (rc = mmr_json_get_str(body, "$", "hardware_id", true, &hw)) < 0) {
        mmr_api_error(res, 400, rc, "bad_request", mmr_err_msg());
        goto out;
    }
    enum mmr_store_refusal why = MMR_STORE_ACCEPTED;
    rc = mmr_store_token_check(srv->store, token_id, secret, &why);
    if (rc == MMR_EPERM) {
        mmr_warn("api", "enrollment refused", "peer=%s token=%s reason=%s", req->peer, token_id,
                 mmr_store_refusal_name(why));
        mmr_api_error(res, 403, rc, mmr_store_refusal_name(why), mmr_err_msg());
        goto out;
    } else if (rc < 0) {
        mmr_api_error(res, rc == MMR_EINVAL ? 400 : 503, rc, "token", mmr_err_msg());
        goto out;
    }
    if ((rc = mmr_csr_parse(csr_pem, &csr)) < 0) {
        mmr_api_error(res, 400, rc, "bad_csr", mmr_err_msg());
        goto out;
    }
    /* Another enrollment of the same new hardware may win a race: start over. */
    for (int attempt = 0; attempt < 3; attempt++) {
        char device_id[MMR_STORE_ID_SIZE];
        struct mmr_cert_info info;
        if ((rc = mmr_store_device_id_for_hardware(srv->store, hw, device_id)) < 0)
            break;
        free(cert_pem);
        cert_pem = NULL;
        if ((rc = mmr_ca_issue_device(srv->ca, &csr, device_id, srv->cfg.org, NULL,
                                      srv->cfg.device_cert_ms, &cert_pem, &info)) < 0)
            break;
        struct mmr_store_enroll in = {
            .token_id = token_id, .token_secret = secret, .device_id = device_id,
            .hardware_id = hw, .hostname = opt_str(body, "hostname"), .os = opt_str(body, "os"),
            .agent_version = opt_str(body, "agent_version"), .cert_serial = info.serial_hex,
            .cert_not_after = info.not_after_ms};
        rc = mmr_store_device_enroll(srv->store, &in, &dev, &why);
        if (rc != MMR_EBUSY)
            break;
    }
    if (rc == MMR_EPERM) {
        mmr_api_error(res, 403, rc, mmr_store_refusal_name(why), mmr_err_msg());
        goto out;
    } else if (rc < 0) {
        mmr_api_error(res, rc == MMR_EINVAL || rc == MMR_ETOOBIG ? 400 : 503, rc, "enroll",
                      mmr_err_msg());
        goto out;
    }
    char *chain = mmr_asprintf("%s%s", mmr_ca_issuing_pem(srv->ca), mmr_ca_root_pem(srv->ca));
    json_t *reply = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I}", "device_id", dev.id,
                              "certificate", cert_pem, "ca_chain", chain, "signing_certificate",
                              mmr_ca_signing_pem(srv->ca), "org", dev.org ? dev.org : "",
                              "group", dev.group ? dev.group : "", "server_time",
                              (json_int_t)mmr_time_now_ms(), "checkin_interval_s",
                              (json_int_t)(srv->cfg.checkin_interval_ms / 1000));
    free(chain);
    int64_t version = 0;
    json_t *policy = policy_envelope(srv, dev.group, &version);
    if (policy)
        json_object_set_new(reply, "policy", policy);
    mmr_info("api", "device enrolled", "peer=%s device=%s token=%s enrollments=%lld", req->peer,
             dev.id, token_id, (long long)dev.enrollments);
    mmr_api_json(res, 200, reply);
out:
    mmr_store_device_clear(&dev);
    mmr_csr_free(&csr);
    free(cert_pem);
    json_decref(body);
}

static void checkin(struct mmr_server *srv, const struct mmr_api_request *req,
                    struct mmr_api_response *res, struct mmr_store_device *dev)
{
    json_t *body = mmr_api_body_json(req, res);
    if (!body)
        return;
    struct mmr_store_checkin c = {.queue_depth = -1, .policy_version = -1};
    json_t *posture = NULL;
    char *posture_text = NULL;
    int rc;
    if ((rc = mmr_json_get_int(body, "$", "queue_depth", false, 0, INT64_MAX,
                               &c.queue_depth)) < 0 ||
        (rc = mmr_json_get_int(body, "$", "policy_version", false, 0, INT64_MAX,
                               &c.policy_version)) < 0 ||
        (rc = mmr_json_get_object(body, "$", "posture", false, &posture)) < 0) {
        mmr_api_error(res, 400, rc, "bad_request", mmr_err_msg());
        goto out;
    }
    c.hostname = opt_str(body, "hostname");
    c.os = opt_str(body, "os");
    c.agent_version = opt_str(body, "agent_version");
    if (posture)
        c.posture = posture_text = mmr_json_dump_line(posture);
    if ((rc = mmr_store_device_checkin(srv->store, dev->id, &c)) < 0) {
        mmr_api_error(res, rc == MMR_EINVAL || rc == MMR_ETOOBIG ? 400 : 503, rc, "checkin",
                      mmr_err_msg());
        goto out;
    }
    int64_t active = 0;
    mmr_store_policy_active_version(srv->store, dev->group ? dev->group : "", &active);
    mmr_api_json(res, 200,
                 json_pack("{s:I,s:I,s:I,s:[]}", "policy_version", (json_int_t)active,
                           "checkin_interval_s", (json_int_t)(srv->cfg.checkin_interval_ms / 1000),
                           "server_time", (json_int_t)mmr_time_now_ms(), "commands"));
out:
    free(posture_text);
    json_decref(body);
}

static void events(struct mmr_server *srv, const struct mmr_api_request *req,
                   struct mmr_api_response *res, struct mmr_store_device *dev)
{
    struct mmr_event_batch batch;
    int rc = mmr_event_batch_parse(req->body, req->body_len, &batch);
    if (rc < 0) {
        mmr_api_error(res, rc == MMR_ETOOBIG ? 413 : 400, rc, "bad_batch", mmr_err_msg());
        return;
    }
    struct mmr_store_events_result r;
    rc = mmr_store_events_insert(srv->store, dev->id, batch.after, batch.events, batch.count, &r);
    mmr_event_batch_free(&batch);
    if (rc < 0) {
        mmr_api_error(res, rc == MMR_EINVAL ? 400 : rc == MMR_EPERM ? 403 : 503, rc, "events",
                      mmr_err_msg());
        return;
    }
    mmr_api_json(res, 200,
                 json_pack("{s:I,s:I,s:I}", "ack", (json_int_t)r.ack, "inserted",
                           (json_int_t)r.inserted, "duplicates", (json_int_t)r.duplicates));
}

static void policy(struct mmr_server *srv, const struct mmr_api_request *req,
                   struct mmr_api_response *res, struct mmr_store_device *dev)
{
    int64_t version = 0;
    mmr_store_policy_active_version(srv->store, dev->group ? dev->group : "", &version);
    char etag[32];
    snprintf(etag, sizeof(etag), "\"%lld\"", (long long)version);
    const char *inm = mmr_http_message_header(req->http, "If-None-Match");
    if (version > 0 && inm && strcmp(inm, etag) == 0) {
        res->status = 304;
        mmr_api_header(res, "ETag", etag);
        return;
    }
    json_t *env = version > 0 ? policy_envelope(srv, dev->group, &version) : NULL;
    if (!env) {
        mmr_api_error(res, 404, MMR_ENOENT, "no_policy", "no policy is published for this group");
        return;
    }
    snprintf(etag, sizeof(etag), "\"%lld\"", (long long)version);
    mmr_api_header(res, "ETag", etag);
    mmr_api_json(res, 200, env);
}

static void renew(struct mmr_server *srv, const struct mmr_api_request *req,
                  struct mmr_api_response *res, struct mmr_store_device *dev)
{
    json_t *body = mmr_api_body_json(req, res);
    if (!body)
        return;
    const char *csr_pem;
    struct mmr_csr csr;
    memset(&csr, 0, sizeof(csr));
    char *pem = NULL;
    struct mmr_cert_info info;
    int rc = mmr_json_get_str(body, "$", "csr", true, &csr_pem);
    if (rc == 0)
        rc = mmr_csr_parse(csr_pem, &csr);
    if (rc < 0) {
        mmr_api_error(res, 400, rc, "bad_csr", mmr_err_msg());
        goto out;
    }
    rc = mmr_ca_issue_device(srv->ca, &csr, dev->id, srv->cfg.org, NULL, srv->cfg.device_cert_ms,
                             &pem, &info);
    if (rc == 0)
        rc = mmr_store_device_renew(srv->store, dev->id, req->cert.serial_hex, info.serial_hex,
                                    info.not_after_ms);
    if (rc < 0) {
        mmr_api_error(res, rc == MMR_EPERM ? 403 : 503, rc, "renew", mmr_err_msg());
        goto out;
    }
    mmr_info("api", "device certificate renewed", "device=%s serial=%s", dev->id,
             info.serial_hex);
    mmr_api_json(res, 200, json_pack("{s:s}", "certificate", pem));
out:
    mmr_csr_free(&csr);
    free(pem);
    json_decref(body);
}

void mmr_api_agent(struct mmr_server *srv, const struct mmr_api_request *req,
                   struct mmr_api_response *res)
{
    if (is(req, "POST", "/v1/enroll")) {
        enroll(srv, req, res);
        return;
    }
    static const struct {
        const char *method, *path;
        void (*fn)(struct mmr_server *, const struct mmr_api_request *,
                   struct mmr_api_response *, struct mmr_store_device *);
    } routes[] = {
        {"POST", "/v1/checkin", checkin},
        {"POST", "/v1/events", events},
        {"GET", "/v1/policy", policy},
        {"POST", "/v1/renew", renew},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(req->http->path, routes[i].path) != 0)
            continue;
        if (strcmp(req->http->method, routes[i].method) != 0) {
            mmr_api_error(res, 405, MMR_EINVAL, "method", "method not allowed here");
            return;
        }
        struct mmr_store_device dev;
        memset(&dev, 0, sizeof(dev));
        if (authenticate(srv, req, res, &dev) == 0)
            routes[i].fn(srv, req, res, &dev);
        mmr_store_device_clear(&dev);
        return;
    }
    mmr_api_error(res, 404, MMR_ENOENT, "no_such_path", "no such path");
}
