/* Enrollment with a token: key, CSR, pinned TLS, storing the identity. */
#include "agent/enroll.h"

#include <stdlib.h>
#include <string.h>

#include "agent/agent_db.h"
#include "agent/agent_policy.h"
#include "agent/identity.h"
#include "mamori_version.h"
#include "shared/err.h"
#include "shared/https.h"
#include "shared/json.h"
#include "shared/log.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "shared/token.h"

static const char *refusal_text(const char *reason)
{
    static const struct {
        const char *reason, *text;
    } texts[] = {
        {"token_unknown", "the server does not know this token (mistyped or from another server)"},
        {"token_expired", "the token has expired: ask for a new one"},
        {"token_used_up", "the token has been used as often as allowed: ask for a new one"},
        {"token_revoked", "the token has been revoked"},
        {"device_revoked", "this computer has been revoked by an administrator"},
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        if (strcmp(texts[i].reason, reason) == 0)
            return texts[i].text;
    return NULL;
}

/* The chain the server sent must end at the root the token pinned. */
static int check_chain(const char *ca_chain, const char *cert_pem, const char *pin,
                       const char *device_id)
{
    struct mmr_cert_verify_opts v = {.kind = MMR_CERT_CLIENT, .expect_cn = device_id};
    int rc = mmr_cert_verify(cert_pem, ca_chain, &v);
    if (rc < 0)
        return mmr_err_wrap(rc, "the certificate the server issued");
    /* The last certificate of the chain is the root; compare it to the pin. */
    const char *last = NULL;
    for (const char *p = strstr(ca_chain, "-----BEGIN CERTIFICATE-----"); p;
         p = strstr(p + 1, "-----BEGIN CERTIFICATE-----"))
        last = p;
    struct mmr_cert_info root;
    if (!last || mmr_cert_read_info(last, &root) < 0 || strcmp(root.sha256_hex, pin) != 0)
        return mmr_err_set(MMR_EPERM, "the CA chain the server sent does not end at the pinned "
                                      "root CA sha256:%s",
                           pin);
    return 0;
}

static int store_facts(struct mmr_db *db, const struct mmr_token *t, const json_t *reply,
                       const char *device_id)
{
    char now[32];
    snprintf(now, sizeof(now), "%lld", (long long)mmr_time_now_ms());
    const char *org = json_string_value(json_object_get(reply, "org"));
    const char *group = json_string_value(json_object_get(reply, "group"));
    int rc = mmr_db_begin(db);
    if (rc == 0)
        rc = mmr_agent_state_put(db, "device_id", device_id);
    if (rc == 0)
        rc = mmr_agent_state_put(db, "server_url", t->url);
    if (rc == 0)
        rc = mmr_agent_state_put(db, "org", org ? org : "");
    if (rc == 0)
        rc = mmr_agent_state_put(db, "group", group ? group : "");
    if (rc == 0)
        rc = mmr_agent_state_put(db, "enrolled_ms", now);
    if (rc == 0)
        rc = mmr_agent_state_put(db, "enroll_token_id", t->id);
    if (rc == 0)
        rc = mmr_db_commit(db);
    else
        mmr_db_rollback(db);
    return rc;
}

int mmr_enroll(const struct mmr_enroll_opts *o, struct mmr_db *db, char **device_id_out)
{
    struct mmr_token t;
    int rc = mmr_token_decode(o->token, &t);
    if (rc < 0)
        return rc == MMR_EINVAL ? mmr_err_wrap(MMR_EPERM, "enrollment token") : rc;
    char hw[80];
    if (o->hardware_id && o->hardware_id[0])
        snprintf(hw, sizeof(hw), "%s", o->hardware_id);
    else if ((rc = mmr_hardware_id(hw, sizeof(hw))) < 0) {
        mmr_token_free(&t);
        return rc;
    }

    struct mmr_key *key = NULL;
    struct mmr_tls_client *tls = NULL;
    struct mmr_https *https = NULL;
    json_t *reply = NULL, *body = NULL;
    char *csr = NULL;
    struct mmr_sysinfo si;
    mmr_sysinfo_get(&si);
    if ((rc = mmr_key_generate(&key)) < 0 || (rc = mmr_csr_create(key, hw, &csr)) < 0)
        goto out;
    struct mmr_tls_client_opts topts = {.pin_sha256 = t.pin};
    if ((rc = mmr_tls_client_new(&topts, &tls)) < 0)
        goto out;
    struct mmr_https_opts hopts = {.url = t.url, .tls = tls, .timeout_ms = o->timeout_ms};
    if ((rc = mmr_https_new(&hopts, &https)) < 0)
        goto out;
    char *os = mmr_asprintf("%s (%s %s)", si.os_name, si.os_version, si.arch);
    body = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "token_id", t.id, "token_secret", t.secret,
                     "csr", csr, "hardware_id", hw, "hostname", si.hostname, "os", os,
                     "agent_version", MMR_VERSION);
    free(os);
    int status = 0;
    rc = mmr_https_json(https, "POST", "/v1/enroll", body, false, &status, &reply);
    if (rc < 0) {
        /* A trust failure is not an unreachable server: say which it was. */
        mmr_err_wrap(rc, rc == MMR_EPERM ? "refusing to enroll with %s" : "cannot reach %s",
                     t.url);
        goto out;
    }
    if (status != 200) {
        const char *reason = mmr_https_error_reason(reply);
        const char *text = refusal_text(reason);
        rc = mmr_err_set(status == 403 || status == 400 ? MMR_EPERM : MMR_ECONN,
                         "enrollment refused by %s: %s", t.url,
                         text ? text : mmr_https_error_message(reply, "no reason given"));
        goto out;
    }
    const char *device_id, *cert, *chain, *signing;
    if ((rc = mmr_json_get_str(reply, "enroll", "device_id", true, &device_id)) < 0 ||
        (rc = mmr_json_get_str(reply, "enroll", "certificate", true, &cert)) < 0 ||
        (rc = mmr_json_get_str(reply, "enroll", "ca_chain", true, &chain)) < 0 ||
        (rc = mmr_json_get_str(reply, "enroll", "signing_certificate", true, &signing)) < 0) {
        mmr_err_wrap(MMR_EPROTO, "malformed enrollment reply");
        rc = MMR_EPROTO;
        goto out;
    }
    if ((rc = check_chain(chain, cert, t.pin, device_id)) < 0)
        goto out;
    char *key_path = mmr_identity_path(o->data_dir, "device.key");
    rc = mmr_key_save(key, key_path);
    free(key_path);
    if (rc == 0)
        rc = mmr_identity_save_certs(o->data_dir, cert, chain, signing);
    if (rc == 0)
        rc = store_facts(db, &t, reply, device_id);
    json_t *policy = json_object_get(reply, "policy");
    if (rc == 0 && policy) {
        struct mmr_signed_policy sp;
        if (mmr_agent_policy_verify(policy, signing, chain, &sp) == 0) {
            char *env = mmr_json_dump_line(policy);
            char version[24];
            snprintf(version, sizeof(version), "%lld", (long long)sp.version);
            mmr_agent_state_put(db, "policy_envelope", env);
            mmr_agent_state_put(db, "policy_version", version);
            free(env);
            mmr_signed_policy_free(&sp);
        } else {
            mmr_warn("enroll", "initial policy refused", "error=\"%s\"", mmr_err_msg());
        }
    }
    if (rc == 0) {
        mmr_info("enroll", "enrolled", "device=%s server=%s", device_id, t.url);
        if (device_id_out)
            *device_id_out = mmr_strdup(device_id);
    }
out:
    json_decref(body);
    json_decref(reply);
    free(csr);
    mmr_https_free(https);
    mmr_tls_client_free(tls);
    mmr_key_free(key);
    mmr_token_free(&t);
    return rc;
}
