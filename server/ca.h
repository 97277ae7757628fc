/* The server's certificate authority: creates the PKI at `init` (root CA,
 * issuing CA, server certificate, policy-signing certificate), loads it at
 * start, issues and renews device certificates from CSRs, and signs policy
 * documents. Files live in <dir>/pki, keys owner-only. The root key is only
 * needed at init: an organisation can move it offline afterwards. */
#ifndef MMR_SERVER_CA_H
#define MMR_SERVER_CA_H

#include <stddef.h>
#include <stdint.h>

#include "shared/pki.h"

struct mmr_ca;

struct mmr_ca_init_opts {
    const char *org;                  /* O of every certificate, e.g. the municipality */
    const char *const *server_names;  /* SANs of the server certificate */
    size_t server_name_count;
};

/* Creates <dir>/pki with every key and certificate. Refuses (MMR_EEXIST) when
 * a PKI is already there: overwriting it would orphan every enrolled device. */
int mmr_ca_init(const char *dir, const struct mmr_ca_init_opts *opts);

/* Loads the issuing CA, the server identity and the signing key. */
int mmr_ca_load(const char *dir, struct mmr_ca **out);
void mmr_ca_free(struct mmr_ca *ca);

/* PEM texts, owned by the CA. */
const char *mmr_ca_root_pem(const struct mmr_ca *ca);
const char *mmr_ca_issuing_pem(const struct mmr_ca *ca);
/* What TLS presents: the server's certificate, the issuing CA, the root. */
const char *mmr_ca_server_chain_pem(const struct mmr_ca *ca);
const char *mmr_ca_server_key_pem(const struct mmr_ca *ca);
const char *mmr_ca_signing_pem(const struct mmr_ca *ca);
/* SHA-256 of the root certificate: the pin carried by enrollment tokens. */
const char *mmr_ca_root_pin(const struct mmr_ca *ca);

/* Issues a device certificate for a verified CSR: CN = device id, O = org,
 * OU = group, valid for lifetime_ms from now. Thread-safe. */
int mmr_ca_issue_device(struct mmr_ca *ca, const struct mmr_csr *csr, const char *device_id,
                        const char *org, const char *group, int64_t lifetime_ms, char **pem,
                        struct mmr_cert_info *info);

/* Signs data with the policy-signing key; the signature is base64. Thread-safe. */
int mmr_ca_sign(struct mmr_ca *ca, const void *data, size_t len, char **sig_b64);

#endif
