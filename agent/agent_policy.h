/* Signed policies on the agent: verifies the server's envelope (payload
 * bytes + ECDSA signature by the policy-signing certificate, which must chain
 * to our CA) and validates the document. A policy that fails either check is
 * refused and the last good one stays. */
#ifndef MMR_AGENT_POLICY_H
#define MMR_AGENT_POLICY_H

#include <stdint.h>

#include <jansson.h>

#include "shared/policy.h"

struct mmr_signed_policy {
    char *group;
    int64_t version;
    struct mmr_policy policy;
};

/* envelope: {"payload": "<JSON text>", "signature": "<base64>"}. */
int mmr_agent_policy_verify(const json_t *envelope, const char *signing_pem, const char *ca_pem,
                            struct mmr_signed_policy *out);
void mmr_signed_policy_free(struct mmr_signed_policy *p);

#endif
