/* The check-in cycle thread: enroll, check in, fetch policy, renew, upload. */
#include "agent/checkin.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "agent/agent_db.h"
#include "agent/agent_policy.h"
#include "agent/enroll.h"
#include "agent/health.h"
#include "agent/identity.h"
#include "agent/queue.h"
#include "mamori_version.h"
#include "shared/err.h"
#include "shared/gzip.h"
#include "shared/https.h"
#include "shared/json.h"
#include "shared/log.h"
#include "shared/mem.h"
#include "shared/platform.h"

#define MOD "checkin"
#define REQUEST_TIMEOUT_MS 30000
#define REFUSED_RETRY_MS (3600 * 1000)
#define BATCH_BYTES (512 * 1024)
#define STOP_GRACE_MS 2000

struct mmr_checkin {
    struct mmr_checkin_opts opts;
    char *data_dir, *db_path, *token, *hardware_id;
    uv_thread_t thread;
    uv_mutex_t lock;
    uv_cond_t cond;
    bool stop, wake, upload_only, exited;
    struct mmr_checkin_status st; /* under lock */

    /* Owned by the thread. */
    struct mmr_db *db;
    struct mmr_identity id;
    bool have_id;
    struct mmr_tls_client *tls;
    struct mmr_https *https;
    char *server_url;
    char *group;
    struct mmr_policy policy;
    int64_t policy_version;
    int64_t server_interval_ms;
    int64_t backoff_ms;
    uint64_t critical_sent; /* highest Critical seq stored ahead of the backlog */
    char *facts_sent;       /* facts the server has: sent again only when they change */
};

/* ---- small helpers --------------------------------------------------------- */

static int64_t jitter(int64_t ms, int64_t pct)
{
    uint32_t r = 0;
    mmr_random_bytes(&r, sizeof(r));
    double f = ((double)r / 4294967295.0) * 2.0 - 1.0; /* -1 .. 1 */
    return ms + (int64_t)((double)ms * (double)pct / 100.0 * f);
}

static void set_result(struct mmr_checkin *c, bool ok, const char *prefix, const char *detail)
{
    uv_mutex_lock(&c->lock);
    snprintf(c->st.last_result, sizeof(c->st.last_result), "%s%s", prefix, detail ? detail : "");
    if (ok) {
        c->st.last_checkin_ms = mmr_time_now_ms();
        c->st.failures = 0;
    } else {
        c->st.failures++;
    }
    uv_mutex_unlock(&c->lock);
}

static void persist_result(struct mmr_checkin *c)
{
    char ms[24], result[256];
    uv_mutex_lock(&c->lock);
    snprintf(ms, sizeof(ms), "%lld", (long long)c->st.last_checkin_ms);
    snprintf(result, sizeof(result), "%s", c->st.last_result);
    uv_mutex_unlock(&c->lock);
    mmr_agent_state_put(c->db, "last_checkin_ms", ms);
    mmr_agent_state_put(c->db, "last_checkin_result", result);
}

/* Waits until due, a wake-up, or stop. Returns false on stop. */
static bool wait_until(struct mmr_checkin *c, uint64_t due_mono, bool *upload_only)
{
    uv_mutex_lock(&c->lock);
    c->st.next_checkin_ms = mmr_time_now_ms() + (int64_t)(due_mono - mmr_time_mono_ms());
    while (!c->stop && !c->wake) {
        uint64_t now = mmr_time_mono_ms();
        if (now >= due_mono)
            break;
        uv_cond_timedwait(&c->cond, &c->lock, (due_mono - now) * 1000000ull);
    }
    bool go = !c->stop;
    *upload_only = c->wake && c->upload_only;
    c->wake = false;
    c->upload_only = false;
    uv_mutex_unlock(&c->lock);
    return go;
}

static bool stopping(struct mmr_checkin *c)
{
    uv_mutex_lock(&c->lock);
    bool s = c->stop;
    uv_mutex_unlock(&c->lock);
    return s;
}

/* ---- identity and connection ---------------------------------------------- */

static void drop_connection(struct mmr_checkin *c)
{
    mmr_https_free(c->https);
    c->https = NULL;
    mmr_tls_client_free(c->tls);
    c->tls = NULL;
}

static int load_identity(struct mmr_checkin *c)
{
    drop_connection(c);
    if (c->have_id)
        mmr_identity_free(&c->id);
    c->have_id = false;
    free(c->server_url);
    free(c->group);
    c->server_url = mmr_agent_state_get(c->db, "server_url");
    c->group = mmr_agent_state_get(c->db, "group");
    char *device = mmr_agent_state_get(c->db, "device_id");
    char *last_ms = mmr_agent_state_get(c->db, "last_checkin_ms");
    char *last_result = mmr_agent_state_get(c->db, "last_checkin_result");
    int rc = device && c->server_url ? mmr_identity_load(c->data_dir, &c->id) : MMR_ENOENT;
    if (rc == 0)
        c->have_id = true;
    uv_mutex_lock(&c->lock);
    c->st.enrolled = c->have_id;
    snprintf(c->st.device_id, sizeof(c->st.device_id), "%s", device ? device : "");
    snprintf(c->st.server, sizeof(c->st.server), "%s", c->server_url ? c->server_url : "");
    snprintf(c->st.group, sizeof(c->st.group), "%s", c->group ? c->group : "");
    c->st.cert_not_after_ms = c->have_id ? c->id.cert.not_after_ms : 0;
    /* What the last run saw, until this run checks in. */
    if (last_ms && !c->st.last_checkin_ms)
        c->st.last_checkin_ms = strtoll(last_ms, NULL, 10);
    if (last_result && !c->st.last_result[0])
        snprintf(c->st.last_result, sizeof(c->st.last_result), "%s", last_result);
    uv_mutex_unlock(&c->lock);
    free(last_ms);
    free(last_result);
    free(device);
    return rc;
}

static int ensure_connection(struct mmr_checkin *c)
{
    if (c->https)
        return 0;
    int rc = mmr_identity_tls_client(&c->id, &c->tls);
    if (rc < 0)
        return rc;
    struct mmr_https_opts o = {.url = c->server_url, .tls = c->tls,
                               .timeout_ms = REQUEST_TIMEOUT_MS};
    rc = mmr_https_new(&o, &c->https);
    if (rc < 0)
        drop_connection(c);
    return rc;
}

/* ---- policy --------------------------------------------------------------- */

static void apply_policy(struct mmr_checkin *c, struct mmr_signed_policy *sp)
{
    mmr_policy_free(&c->policy);
    c->policy = sp->policy;
    mmr_policy_defaults(&sp->policy); /* moved */
    c->policy_version = sp->version;
    if (c->opts.queue)
        mmr_queue_set_limits(c->opts.queue, (uint64_t)c->policy.queue_max_events,
                             c->policy.queue_max_bytes);
    uv_mutex_lock(&c->lock);
    c->st.policy_version = sp->version;
    uv_mutex_unlock(&c->lock);
    char detail[96];
    snprintf(detail, sizeof(detail), "version %lld, profile %s", (long long)sp->version,
             c->policy.profile);
    mmr_health_set(c->opts.health, "policy", MMR_HEALTH_OK, detail);
}

/* Loads and re-verifies the stored policy at start. */
static void load_policy(struct mmr_checkin *c)
{
    char *env_text = mmr_agent_state_get(c->db, "policy_envelope");
    json_t *env = NULL;
    struct mmr_signed_policy sp;
    if (env_text && c->have_id &&
        mmr_json_parse_object(env_text, strlen(env_text), 8, &env) == 0 &&
        mmr_agent_policy_verify(env, c->id.signing_pem, c->id.ca_pem, &sp) == 0) {
        apply_policy(c, &sp);
        mmr_signed_policy_free(&sp);
    }
    json_decref(env);
    free(env_text);
}

static void fetch_policy(struct mmr_checkin *c)
{
    int status = 0;
    json_t *reply = NULL;
    int rc = mmr_https_json(c->https, "GET", "/v1/policy", NULL, false, &status, &reply);
    if (rc < 0 || status != 200) {
        mmr_warn(MOD, "policy fetch failed", "status=%d error=\"%s\"", status,
                 rc < 0 ? mmr_err_msg() : mmr_https_error_message(reply, "?"));
        json_decref(reply);
        return;
    }
    struct mmr_signed_policy sp;
    if (mmr_agent_policy_verify(reply, c->id.signing_pem, c->id.ca_pem, &sp) < 0) {
        /* Keep the last good policy, and say why loudly. */
        mmr_error(MOD, "new policy refused, keeping the current one", "error=\"%s\"",
                  mmr_err_msg());
        mmr_health_set(c->opts.health, "policy", MMR_HEALTH_DEGRADED, mmr_err_msg());
        if (c->opts.queue) {
            json_t *data = json_pack("{s:s}", "reason", mmr_err_msg());
            char *text = mmr_json_dump_line(data);
            struct mmr_event ev = {.severity = MMR_SEV_HIGH, .type = "policy.rejected",
                                   .data = text};
            mmr_queue_push(c->opts.queue, &ev, NULL, NULL);
            free(text);
            json_decref(data);
        }
        json_decref(reply);
        return;
    }
    char *env = mmr_json_dump_line(reply);
    char version[24];
    snprintf(version, sizeof(version), "%lld", (long long)sp.version);
    mmr_agent_state_put(c->db, "policy_envelope", env);
    mmr_agent_state_put(c->db, "policy_version", version);
    free(env);
    mmr_info(MOD, "policy applied", "version=%lld profile=%s", (long long)sp.version,
             sp.policy.profile);
    apply_policy(c, &sp);
    mmr_signed_policy_free(&sp);
    json_decref(reply);
}

/* ---- renewal ---------------------------------------------------------------- */

static void maybe_renew(struct mmr_checkin *c)
{
    int64_t from = c->id.cert.not_before_ms, to = c->id.cert.not_after_ms;
    if (mmr_time_now_ms() < from + (to - from) * 2 / 3)
        return;
    char *csr = NULL;
    json_t *reply = NULL, *body = NULL;
    int status = 0;
    int rc = mmr_csr_create(c->id.key, c->id.cert.cn, &csr);
    if (rc == 0) {
        body = json_pack("{s:s}", "csr", csr);
        rc = mmr_https_json(c->https, "POST", "/v1/renew", body, false, &status, &reply);
    }
    const char *cert = json_string_value(json_object_get(reply, "certificate"));
    struct mmr_cert_verify_opts v = {.kind = MMR_CERT_CLIENT, .expect_cn = c->id.cert.cn};
    if (rc == 0 && status == 200 && cert && mmr_cert_verify(cert, c->id.ca_pem, &v) == 0 &&
        mmr_identity_save_certs(c->data_dir, cert, NULL, NULL) == 0) {
        mmr_info(MOD, "certificate renewed", NULL);
        load_identity(c);
        ensure_connection(c);
    } else {
        mmr_warn(MOD, "certificate renewal failed, will retry", "status=%d error=\"%s\"", status,
                 rc < 0 ? mmr_err_msg() : mmr_https_error_message(reply, "?"));
    }
    json_decref(body);
    json_decref(reply);
    free(csr);
}

/* ---- check-in ---------------------------------------------------------------- */

static json_t *posture(struct mmr_checkin *c)
{
    json_t *p = json_object();
    if (c->opts.queue) {
        struct mmr_queue_stats qs;
        mmr_queue_stats(c->opts.queue, &qs);
        json_object_set_new(p, "queue",
                            json_pack("{s:I,s:I,s:[I,I,I,I],s:[I,I,I]}", "events",
                                      (json_int_t)qs.events, "bytes", (json_int_t)qs.bytes,
                                      "by_severity", (json_int_t)qs.depth[0],
                                      (json_int_t)qs.depth[1], (json_int_t)qs.depth[2],
                                      (json_int_t)qs.depth[3], "dropped",
                                      (json_int_t)qs.dropped[0], (json_int_t)qs.dropped[1],
                                      (json_int_t)qs.dropped[2]));
    }
    json_object_set_new(p, "modules", mmr_health_json(c->opts.health));
    return p;
}

/* Returns 0, or an error after recording why; *refused for permanent refusals. */
static int do_checkin(struct mmr_checkin *c, bool *refused)
{
    *refused = false;
    struct mmr_sysinfo si;
    mmr_sysinfo_get(&si);
    int64_t depth = 0;
    if (c->opts.queue) {
        struct mmr_queue_stats qs;
        mmr_queue_stats(c->opts.queue, &qs);
        depth = (int64_t)qs.events;
    }
    char *os = mmr_asprintf("%s (%s %s)", si.os_name, si.os_version, si.arch);
    json_t *facts = json_pack("{s:s,s:s,s:s,s:o}", "hostname", si.hostname, "os", os,
                              "agent_version", MMR_VERSION, "posture", posture(c));
    free(os);
    /* An idle check-in carries only what changed since the last one the
     * server acknowledged: on a metered SIM line every byte is paid for. */
    char *facts_text = mmr_json_dump_line(facts);
    bool changed = !c->facts_sent || strcmp(facts_text, c->facts_sent) != 0;
    json_t *body = changed ? json_incref(facts) : json_object();
    json_object_set_new(body, "policy_version", json_integer((json_int_t)c->policy_version));
    json_object_set_new(body, "queue_depth", json_integer((json_int_t)depth));
    json_decref(facts);
    int status = 0;
    json_t *reply = NULL;
    int rc = mmr_https_json(c->https, "POST", "/v1/checkin", body, true, &status, &reply);
    json_decref(body);
    if (rc == 0 && status == 200 && changed) {
        free(c->facts_sent);
        c->facts_sent = facts_text;
        facts_text = NULL;
    }
    free(facts_text);
    if (rc < 0) {
        set_result(c, false, "failed: ", mmr_err_msg());
        json_decref(reply);
        return rc;
    }
    if (status != 200) {
        const char *reason = mmr_https_error_reason(reply);
        *refused = status == 401 || status == 403;
        char *msg = mmr_asprintf("refused by the server (HTTP %d %s): %s", status, reason,
                                 mmr_https_error_message(reply, "?"));
        set_result(c, false, msg, NULL);
        rc = mmr_err_set(*refused ? MMR_EPERM : MMR_EPROTO, "%s", msg);
        free(msg);
        if (strcmp(reason, "cert_revoked") == 0) {
            uv_mutex_lock(&c->lock);
            c->st.revoked = true;
            uv_mutex_unlock(&c->lock);
        }
        json_decref(reply);
        return rc;
    }
    int64_t server_version = 0, interval_s = 0;
    mmr_json_get_int(reply, "$", "policy_version", false, 0, INT64_MAX, &server_version);
    mmr_json_get_int(reply, "$", "checkin_interval_s", false, 1, 86400, &interval_s);
    c->server_interval_ms = interval_s * 1000;
    json_decref(reply);
    set_result(c, true, "ok", NULL);
    uv_mutex_lock(&c->lock);
    c->st.revoked = false;
    uv_mutex_unlock(&c->lock);
    if (server_version > 0 && server_version != c->policy_version)
        fetch_policy(c);
    return 0;
}

/* ---- upload --------------------------------------------------------------------- */

/* Sends one batch; returns events acknowledged (>= 0) or an error. ahead:
 * a Critical event sent ahead of the backlog, which the server stores above
 * the hole the backlog leaves, so its ack may stay below it. */
static int send_batch(struct mmr_checkin *c, const struct mmr_queue_batch *b, bool ahead)
{
    struct mmr_buf body = {0}, gz = {0};
    mmr_buf_appendf(&body, "{\"after\":%llu,\"events\":", (unsigned long long)b->after);
    mmr_buf_append(&body, b->json, b->json_len);
    mmr_buf_append(&body, "}", 1);
    int rc = mmr_gzip_compress(body.data, body.len, MMR_GZIP_LEVEL_DEFAULT, &gz);
    mmr_buf_free(&body);
    if (rc < 0)
        return rc;
    struct mmr_http_header h[2] = {{"Content-Type", "application/json"},
                                   {"Content-Encoding", "gzip"}};
    struct mmr_http_message resp;
    rc = mmr_https_request(c->https, "POST", "/v1/events", h, 2, gz.data, gz.len, &resp);
    mmr_buf_free(&gz);
    if (rc < 0)
        return rc;
    json_t *reply = NULL;
    mmr_json_parse(resp.body, resp.body_len, MMR_JSON_MAX_DEPTH, &reply);
    int status = resp.status;
    mmr_http_message_free(&resp);
    int64_t ack = -1;
    if (status == 200)
        mmr_json_get_int(reply, "$", "ack", true, 0, INT64_MAX, &ack);
    if (status != 200 || ack < 0) {
        rc = mmr_err_set(MMR_EPROTO, "event upload refused (HTTP %d): %s", status,
                         mmr_https_error_message(reply, "malformed reply"));
        json_decref(reply);
        return rc;
    }
    json_decref(reply);
    if ((uint64_t)ack > b->last_seq)
        ack = (int64_t)b->last_seq;
    if (ack > 0 && (rc = mmr_queue_ack(c->opts.queue, (uint64_t)ack)) < 0)
        return rc;
    size_t acked = 0;
    if ((uint64_t)ack >= b->last_seq)
        acked = b->count;
    uv_mutex_lock(&c->lock);
    c->st.events_sent += acked;
    uv_mutex_unlock(&c->lock);
    /* A backlog batch starts at the ack: the server must have moved past it.
     * If not, it kept a hole open: stop here and retry next cycle. */
    if (!ahead && (uint64_t)ack < b->first_seq)
        return mmr_err_set(MMR_EPROTO,
                           "the server acknowledged seq %lld, below the batch %llu..%llu",
                           (long long)ack, (unsigned long long)b->first_seq,
                           (unsigned long long)b->last_seq);
    return (int)acked;
}

static void pace(struct mmr_checkin *c, size_t events, uint64_t started_mono)
{
    int64_t rate = c->policy.upload_rate_eps > 0 ? c->policy.upload_rate_eps : 5000;
    uint64_t due = started_mono + (uint64_t)((int64_t)events * 1000 / rate);
    uv_mutex_lock(&c->lock);
    while (!c->stop && mmr_time_mono_ms() < due)
        uv_cond_timedwait(&c->cond, &c->lock, (due - mmr_time_mono_ms()) * 1000000ull);
    uv_mutex_unlock(&c->lock);
}

/* Whether the server answers, asked with an empty batch (the cheapest call
 * it authenticates). Reading the batch that holds an agent.gap event ends
 * its drop episode, since it may be on its way: reading for a server that is
 * down would split one episode into one per attempt. */
static int probe(struct mmr_checkin *c)
{
    json_t *body = json_pack("{s:i,s:[]}", "after", 0, "events");
    int status = 0;
    json_t *reply = NULL;
    int rc = mmr_https_json(c->https, "POST", "/v1/events", body, false, &status, &reply);
    json_decref(body);
    if (rc == 0 && status != 200)
        rc = mmr_err_set(MMR_EPROTO, "event upload refused (HTTP %d): %s", status,
                         mmr_https_error_message(reply, "?"));
    json_decref(reply);
    return rc;
}

/* probe_first: no check-in has just shown that the server answers. */
static int upload(struct mmr_checkin *c, bool probe_first)
{
    if (!c->opts.queue)
        return 0;
    struct mmr_queue_stats qs;
    mmr_queue_stats(c->opts.queue, &qs);
    int prc = probe_first && qs.events > 0 ? probe(c) : 0;
    if (prc < 0)
        return prc;
    /* Critical events first, ahead of any backlog. Once stored they stay
     * queued until the backlog's acks reach them (the server dedupes the
     * resend), so the cursor keeps them from being sent ahead again. */
    for (;;) {
        struct mmr_queue_batch b;
        if (mmr_queue_read_critical(c->opts.queue, c->critical_sent, &b) < 0 || b.count == 0) {
            mmr_queue_batch_free(&b);
            break;
        }
        int rc = send_batch(c, &b, true);
        uint64_t seq = b.last_seq;
        mmr_queue_batch_free(&b);
        if (rc < 0)
            return rc;
        c->critical_sent = seq;
    }
    size_t max = c->policy.upload_batch_events > 0 ? (size_t)c->policy.upload_batch_events : 1000;
    while (!stopping(c)) {
        uint64_t t0 = mmr_time_mono_ms();
        struct mmr_queue_batch b;
        int rc = mmr_queue_read(c->opts.queue, 0, max, BATCH_BYTES, &b);
        if (rc < 0 || b.count == 0) {
            mmr_queue_batch_free(&b);
            return rc;
        }
        rc = send_batch(c, &b, false);
        size_t n = b.count;
        mmr_queue_batch_free(&b);
        if (rc < 0)
            return rc;
        pace(c, n, t0);
    }
    return 0;
}

/* ---- the cycle ------------------------------------------------------------------- */

static int64_t next_delay(struct mmr_checkin *c, int rc, bool refused)
{
    if (rc == 0) {
        c->backoff_ms = 0;
        int64_t interval = c->policy_version > 0 ? c->policy.checkin_interval_ms
                           : c->server_interval_ms > 0 ? c->server_interval_ms
                                                       : c->policy.checkin_interval_ms;
        return jitter(interval, c->policy.checkin_jitter_pct);
    }
    if (refused)
        return REFUSED_RETRY_MS;
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : c->opts.min_backoff_ms;
    if (c->backoff_ms > c->opts.max_backoff_ms)
        c->backoff_ms = c->opts.max_backoff_ms;
    /* Full jitter on the way up, so that a fleet coming back does not
     * reconnect in lockstep. */
    return c->backoff_ms / 2 + jitter(c->backoff_ms / 2, 100);
}

static int64_t try_enroll(struct mmr_checkin *c)
{
    if (!c->token || !c->token[0]) {
        set_result(c, false, "not enrolled: no enrollment token configured", NULL);
        return REFUSED_RETRY_MS;
    }
    struct mmr_enroll_opts eo = {.data_dir = c->data_dir, .token = c->token,
                                 .hardware_id = c->hardware_id, .timeout_ms = REQUEST_TIMEOUT_MS};
    int rc = mmr_enroll(&eo, c->db, NULL);
    if (rc == 0) {
        load_identity(c);
        load_policy(c);
        set_result(c, true, "enrolled", NULL);
        mmr_health_set(c->opts.health, "checkin", MMR_HEALTH_OK, "enrolled");
        return 0;
    }
    mmr_warn(MOD, "enrollment failed", "error=\"%s\"", mmr_err_msg());
    set_result(c, false, "enrollment failed: ", mmr_err_msg());
    mmr_health_set(c->opts.health, "checkin", MMR_HEALTH_DEGRADED, mmr_err_msg());
    return next_delay(c, rc, rc == MMR_EPERM);
}

static int64_t cycle(struct mmr_checkin *c, bool upload_only)
{
    int rc = ensure_connection(c);
    bool refused = false;
    if (rc == 0 && !upload_only) {
        maybe_renew(c);
        rc = do_checkin(c, &refused);
    }
    if (rc == 0)
        rc = upload(c, upload_only);
    if (rc < 0 && !refused && !upload_only)
        set_result(c, false, "failed: ", mmr_err_msg());
    if (rc < 0) {
        mmr_health_set(c->opts.health, "checkin", refused ? MMR_HEALTH_FAILED
                                                          : MMR_HEALTH_DEGRADED, mmr_err_msg());
        mmr_https_disconnect(c->https);
    } else {
        mmr_health_set(c->opts.health, "checkin", MMR_HEALTH_OK, c->server_url);
    }
    if (!upload_only)
        persist_result(c);
    struct mmr_https_stats hs;
    if (c->https) {
        mmr_https_stats(c->https, &hs);
        uv_mutex_lock(&c->lock);
        c->st.connects = hs.connects;
        c->st.resumed = hs.resumed;
        uv_mutex_unlock(&c->lock);
    }
    return next_delay(c, rc, refused);
}

static void run(void *arg)
{
    struct mmr_checkin *c = arg;
    int rc = mmr_agent_db_open(c->db_path, &c->db);
    if (rc < 0) {
        mmr_error(MOD, "cannot open the agent database", "error=\"%s\"", mmr_err_msg());
        mmr_health_set(c->opts.health, "checkin", MMR_HEALTH_FAILED, mmr_err_msg());
    } else {
        load_identity(c);
        load_policy(c);
        mmr_health_set(c->opts.health, "checkin", MMR_HEALTH_STARTING,
                       c->have_id ? "enrolled" : "not enrolled");
        uint64_t due = mmr_time_mono_ms();
        bool upload_only = false;
        while (wait_until(c, due, &upload_only)) {
            int64_t delay = c->have_id ? cycle(c, upload_only) : try_enroll(c);
            due = mmr_time_mono_ms() + (uint64_t)(delay > 0 ? delay : 0);
        }
    }
    drop_connection(c);
    if (c->have_id)
        mmr_identity_free(&c->id);
    mmr_policy_free(&c->policy);
    mmr_db_close(c->db);
    c->db = NULL;
    uv_mutex_lock(&c->lock);
    c->exited = true;
    uv_cond_broadcast(&c->cond);
    uv_mutex_unlock(&c->lock);
}

int mmr_checkin_start(const struct mmr_checkin_opts *opts, struct mmr_checkin **out)
{
    struct mmr_checkin *c = mmr_calloc(1, sizeof(*c));
    c->opts = *opts;
    c->data_dir = mmr_strdup(opts->data_dir);
    c->db_path = mmr_strdup(opts->db_path);
    c->token = opts->enroll_token ? mmr_strdup(opts->enroll_token) : NULL;
    c->hardware_id = opts->hardware_id ? mmr_strdup(opts->hardware_id) : NULL;
    if (!c->opts.min_backoff_ms)
        c->opts.min_backoff_ms = 5000;
    if (!c->opts.max_backoff_ms)
        c->opts.max_backoff_ms = 15 * 60 * 1000;
    mmr_policy_defaults(&c->policy);
    uv_mutex_init(&c->lock);
    uv_cond_init(&c->cond);
    int rc = uv_thread_create(&c->thread, run, c);
    if (rc < 0) {
        uv_mutex_destroy(&c->lock);
        uv_cond_destroy(&c->cond);
        free(c);
        return mmr_err_set(MMR_EIO, "cannot start the check-in thread: %s", uv_strerror(rc));
    }
    *out = c;
    return 0;
}

void mmr_checkin_wake(struct mmr_checkin *c, bool upload_only)
{
    uv_mutex_lock(&c->lock);
    if (!c->wake)
        c->upload_only = upload_only;
    else if (!upload_only)
        c->upload_only = false;
    c->wake = true;
    uv_cond_broadcast(&c->cond);
    uv_mutex_unlock(&c->lock);
}

void mmr_checkin_status(struct mmr_checkin *c, struct mmr_checkin_status *out)
{
    uv_mutex_lock(&c->lock);
    *out = c->st;
    uv_mutex_unlock(&c->lock);
}

bool mmr_checkin_stop(struct mmr_checkin *c)
{
    if (!c)
        return true;
    uv_mutex_lock(&c->lock);
    c->stop = true;
    uv_cond_broadcast(&c->cond);
    uint64_t deadline = mmr_time_mono_ms() + STOP_GRACE_MS;
    while (!c->exited && mmr_time_mono_ms() < deadline)
        uv_cond_timedwait(&c->cond, &c->lock, (deadline - mmr_time_mono_ms()) * 1000000ull);
    bool exited = c->exited;
    uv_mutex_unlock(&c->lock);
    if (!exited) {
        /* A network call is still blocked: the process exit ends it. */
        mmr_warn(MOD, "check-in thread still busy at stop; leaving it to the process exit", NULL);
        return false;
    }
    uv_thread_join(&c->thread);
    uv_mutex_destroy(&c->lock);
    uv_cond_destroy(&c->cond);
    free(c->data_dir);
    free(c->db_path);
    if (c->token)
        memset(c->token, 0, strlen(c->token));
    free(c->token);
    free(c->hardware_id);
    free(c->server_url);
    free(c->group);
    free(c->facts_sent);
    free(c);
    return true;
}
