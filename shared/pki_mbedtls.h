/* The mbedTLS side of shared/pki, for shared/tls*.c only: the process-wide
 * random generator, the verification profile, key access, and chain
 * verification with messages that name the certificate and the reason. */
#ifndef MMR_PKI_MBEDTLS_H
#define MMR_PKI_MBEDTLS_H

#include <stdint.h>

#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include "shared/pki.h"

/* CTR_DRBG seeded from mbedtls_entropy, shared by the whole process (locked,
 * reseeded after fork). The f_rng shape mbedTLS wants; p_rng is unused. */
int mmr_pki_random(void *p_rng, unsigned char *buf, size_t len);

/* ECDSA P-256 keys, SHA-256 signatures: the only certificates we accept. */
extern const mbedtls_x509_crt_profile mmr_pki_profile;

/* Copies key (private if it has one) into pk, which the caller has
 * initialised with mbedtls_pk_init and frees with mbedtls_pk_free. */
int mmr_pki_key_copy(const struct mmr_key *key, mbedtls_pk_context *pk);

/* Copies a parsed certificate's facts into out. */
void mmr_pki_crt_info(const mbedtls_x509_crt *crt, struct mmr_cert_info *out);

/* mbedTLS's error text for ret, for messages. */
const char *mmr_pki_strerror(int ret, char *buf, size_t size);

/* Parses a PEM bundle of certificates into chain (initialised by the caller),
 * refusing empty, oversized or partly malformed input. what names the input
 * in messages ("server certificate chain"). */
int mmr_pki_parse_chain(mbedtls_x509_crt *chain, const char *pem, const char *what);

/* Records, during mbedtls_x509_crt_verify, which certificate of a chain is the
 * most telling reason for a refusal. Pass mmr_pki_trace_cb with a trace as
 * the verification callback. */
struct mmr_pki_trace {
    int depth; /* of the certificate reported; -1: none yet */
    int rank;  /* how telling its flags are */
    uint32_t flags;
    struct mmr_cert_info cert;
    bool have_leaf;
    char leaf_cn[MMR_CERT_NAME_MAX + 1];
};

void mmr_pki_trace_init(struct mmr_pki_trace *t);
int mmr_pki_trace_cb(void *trace, mbedtls_x509_crt *crt, int depth, uint32_t *flags);

/* Sets the message explaining flags (from a verification traced in t, which
 * may be empty, e.g. for a resumed TLS session: then leaf describes the
 * certificate) and returns MMR_EPERM. what names the certificate's role
 * ("client certificate"), anchor the trust ("our CA"). */
int mmr_pki_explain(const struct mmr_pki_trace *t, uint32_t flags, const mbedtls_x509_crt *leaf,
                    const char *what, const char *anchor);

/* Verifies chain (leaf first; later entries are candidate intermediates) up
 * to trust with mmr_pki_profile, then the conditions in opts (may be NULL).
 * Messages as mmr_pki_explain. */
int mmr_pki_verify_chain(mbedtls_x509_crt *chain, mbedtls_x509_crt *trust,
                         const struct mmr_cert_verify_opts *opts, const char *what,
                         const char *anchor);

#endif
