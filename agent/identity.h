/* The device's identity on disk, in the data directory: device.key (the
 * private key, made here and never sent anywhere, owner-only), device.crt
 * (issued by the server), ca.crt (issuing CA then root CA: what the server's
 * certificate must chain to), signing.crt (the policy-signing certificate). */
#ifndef MMR_IDENTITY_H
#define MMR_IDENTITY_H

#include <stdint.h>

#include "shared/pki.h"
#include "shared/tls.h"

struct mmr_identity {
    struct mmr_key *key;
    char *cert_pem;
    char *ca_pem;
    char *signing_pem;
    struct mmr_cert_info cert;
};

/* Loads all four files; MMR_ENOENT when the device is not enrolled. */
int mmr_identity_load(const char *data_dir, struct mmr_identity *out);
void mmr_identity_free(struct mmr_identity *id);

/* Writes the certificate files (the key is saved separately, first). */
int mmr_identity_save_certs(const char *data_dir, const char *cert_pem, const char *ca_pem,
                            const char *signing_pem);

/* A TLS client that trusts ca.crt and presents device.crt. */
int mmr_identity_tls_client(const struct mmr_identity *id, struct mmr_tls_client **out);

char *mmr_identity_path(const char *data_dir, const char *name);

#endif
