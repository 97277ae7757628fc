/* Verification of signed policy envelopes. */
#include "agent/agent_policy.h"

#include <stdlib.h>
#include <string.h>

#include "shared/base64.h"
#include "shared/err.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/pki.h"

#define SIGNING_OU "policy-signing"

int mmr_agent_policy_verify(const json_t *envelope, const char *signing_pem, const char *ca_pem,
                            struct mmr_signed_policy *out)
{
    memset(out, 0, sizeof(*out));
    mmr_policy_defaults(&out->policy);
    const char *payload, *sig_b64;
    int rc = mmr_json_get_str(envelope, "policy", "payload", true, &payload);
    if (rc == 0)
        rc = mmr_json_get_str(envelope, "policy", "signature", true, &sig_b64);
    if (rc < 0)
        return rc;

    /* The signer must be our server's policy-signing certificate. */
    struct mmr_cert_verify_opts vopts = {.kind = MMR_CERT_CLIENT};
    struct mmr_cert_info info;
    if ((rc = mmr_cert_verify(signing_pem, ca_pem, &vopts)) < 0)
        return mmr_err_wrap(rc, "policy-signing certificate");
    if ((rc = mmr_cert_read_info(signing_pem, &info)) < 0)
        return rc;
    if (strcmp(info.org_unit, SIGNING_OU) != 0)
        return mmr_err_set(MMR_EPERM, "certificate '%s' is not a policy-signing certificate",
                           info.cn);
    struct mmr_key *key = NULL;
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    json_t *doc = NULL;
    if ((rc = mmr_base64_decode(sig_b64, strlen(sig_b64), &sig, &sig_len)) < 0)
        goto out;
    /* The public key comes from the certificate just verified. */
    if ((rc = mmr_cert_public_key(signing_pem, &key)) < 0)
        goto out;
    rc = mmr_ecdsa_verify(key, payload, strlen(payload), sig, sig_len);
    if (rc < 0) {
        mmr_err_wrap(rc, "policy signature does not verify");
        goto out;
    }
    if ((rc = mmr_json_parse_object(payload, strlen(payload), MMR_POLICY_MAX_DEPTH, &doc)) < 0)
        goto out;
    const char *group;
    json_t *document;
    if ((rc = mmr_json_get_str(doc, "$", "group", true, &group)) < 0 ||
        (rc = mmr_json_get_int(doc, "$", "version", true, 1, INT64_MAX, &out->version)) < 0 ||
        (rc = mmr_json_get_object(doc, "$", "document", true, &document)) < 0)
        goto out;
    if ((rc = mmr_policy_from_json(document, &out->policy)) < 0)
        goto out;
    out->group = mmr_strdup(group);
out:
    json_decref(doc);
    free(sig);
    mmr_key_free(key);
    if (rc < 0)
        mmr_signed_policy_free(out);
    return rc;
}

void mmr_signed_policy_free(struct mmr_signed_policy *p)
{
    free(p->group);
    mmr_policy_free(&p->policy);
    p->group = NULL;
    p->version = 0;
}
