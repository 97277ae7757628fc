/* Mamori's PKI primitives over mbedTLS: P-256 keys, certificate requests,
 * certificates (issue, inspect, verify), SHA-256 and ECDSA signatures.
 * Every key is ECDSA P-256 and every signature ECDSA-SHA256 (DER-encoded). */
#ifndef MMR_PKI_H
#define MMR_PKI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* PEM text larger than this is refused before parsing (keys, CSRs, chains). */
#define MMR_PEM_MAX (64 * 1024)
/* A CSR arrives from the network: a P-256 request is well under 1 KiB. */
#define MMR_CSR_PEM_MAX (8 * 1024)

#define MMR_SHA256_LEN      32
#define MMR_SHA256_HEX_SIZE (2 * MMR_SHA256_LEN + 1) /* 64 hex digits and a NUL */

/* Longest DER encoding of a P-256 ECDSA signature. */
#define MMR_ECDSA_SIG_MAX 72

/* Longest CN, O or OU we issue or accept in a request (X.520 upper bound). */
#define MMR_CERT_NAME_MAX 64
/* Longest serial number kept by mmr_cert_info, in bytes (RFC 5280 allows 20). */
#define MMR_CERT_SERIAL_MAX 32
/* Most subjectAltName entries in a certificate we issue. */
#define MMR_CERT_MAX_SANS 16

/* ---- hashes and hex ------------------------------------------------------- */

void mmr_sha256(const void *data, size_t len, uint8_t out[MMR_SHA256_LEN]);
/* SHA-256 as 64 lower-case hex digits. */
void mmr_sha256_hex(const void *data, size_t len, char out[MMR_SHA256_HEX_SIZE]);

/* Lower-case hex of len bytes; out holds 2 * len + 1 characters. */
void mmr_hex_encode(const void *data, size_t len, char *out);
/* Decodes exactly out_len bytes from hex (either case, nothing else allowed). */
int mmr_hex_decode(const char *hex, uint8_t *out, size_t out_len);

/* ---- keys ------------------------------------------------------------------- */

/* A P-256 key pair, or only a public key (from a CSR or a public-key PEM).
 * Every constructor refuses other key types, so a struct mmr_key is always
 * P-256. */
struct mmr_key;

int mmr_key_generate(struct mmr_key **out);
/* Private key from PEM (SEC1 "EC PRIVATE KEY" or PKCS#8). */
int mmr_key_from_pem(const char *pem, struct mmr_key **out);
/* Public key from PEM ("PUBLIC KEY"). */
int mmr_key_from_public_pem(const char *pem, struct mmr_key **out);
/* Reads a private key file written by mmr_key_save. */
int mmr_key_load(const char *path, struct mmr_key **out);
/* Writes the private key as PEM, atomically and readable by the owner only. */
int mmr_key_save(const struct mmr_key *key, const char *path);
/* The public key as PEM ("-----BEGIN PUBLIC KEY-----"). Allocated. */
int mmr_key_public_pem(const struct mmr_key *key, char **out);
bool mmr_key_has_private(const struct mmr_key *key);
/* True when both hold the same public key. */
bool mmr_key_same_public(const struct mmr_key *a, const struct mmr_key *b);
/* Wipes the key material and frees. NULL is fine. */
void mmr_key_free(struct mmr_key *key);

/* ---- signatures ----------------------------------------------------------- */

/* ECDSA-SHA256 over data; sig receives the DER signature (*sig_len bytes). */
int mmr_ecdsa_sign(const struct mmr_key *key, const void *data, size_t len,
                   uint8_t sig[MMR_ECDSA_SIG_MAX], size_t *sig_len);
/* 0 when sig is key's signature over data; MMR_EPERM when it is not (data or
 * signature changed, or another key); MMR_EINVAL when sig is not a signature. */
int mmr_ecdsa_verify(const struct mmr_key *key, const void *data, size_t len, const uint8_t *sig,
                     size_t sig_len);
/* The same with the public key given as PEM. */
int mmr_ecdsa_verify_pem(const char *public_pem, const void *data, size_t len, const uint8_t *sig,
                         size_t sig_len);

/* ---- certificate signing requests ------------------------------------------ */

/* A PEM CSR with subject CN=cn for key's public key, signed by key. */
int mmr_csr_create(const struct mmr_key *key, const char *cn, char **out_pem);

/* What a request asks for, once its signature has been checked. */
struct mmr_csr {
    char cn[MMR_CERT_NAME_MAX + 1];
    struct mmr_key *key; /* the requester's public key; owned */
};

/* Parses an untrusted PEM request (at most MMR_CSR_PEM_MAX bytes): it must be
 * signed with ECDSA-SHA256 by its own P-256 key and carry one printable UTF-8
 * CN of at most MMR_CERT_NAME_MAX bytes. MMR_EPERM for a bad signature,
 * MMR_EINVAL or MMR_ETOOBIG otherwise; the message says which. */
int mmr_csr_parse(const char *pem, struct mmr_csr *out);
void mmr_csr_free(struct mmr_csr *csr);

/* ---- certificates ------------------------------------------------------------ */

enum mmr_cert_kind {
    MMR_CERT_ANY = 0, /* in verification: no usage check */
    MMR_CERT_CA,      /* signs certificates: root or issuing CA */
    MMR_CERT_SERVER,  /* TLS server: serverAuth, names in subjectAltName */
    MMR_CERT_CLIENT,  /* TLS client (device, admin): clientAuth */
};

/* What to put in a new certificate. */
struct mmr_cert_spec {
    enum mmr_cert_kind kind; /* CA, SERVER or CLIENT */
    const char *cn;          /* required: printable UTF-8, <= MMR_CERT_NAME_MAX bytes */
    const char *org;         /* O; NULL or "" for none */
    const char *org_unit;    /* OU; NULL or "" for none */
    const uint8_t *serial;   /* big-endian, 1..20 bytes, positive; NULL: 20 random bytes */
    size_t serial_len;
    int64_t not_before_ms; /* validity, UTC ms since the epoch (kept to the second) */
    int64_t not_after_ms;
    int max_path_len;       /* CA only: CAs allowed below this one; -1 for no limit */
    const char *const *san; /* SERVER: DNS names and IP literals ("localhost", "::1") */
    size_t san_count;       /* at most MMR_CERT_MAX_SANS */
};

/* Issues a certificate for subject_key's public key, signed by issuer_key.
 * issuer_cert_pem is the issuer's certificate (a CA whose key is issuer_key);
 * NULL makes a self-signed root, and then subject_key and issuer_key must be
 * the same key. The result is PEM, allocated. */
int mmr_cert_issue(const struct mmr_cert_spec *spec, const struct mmr_key *subject_key,
                   const struct mmr_key *issuer_key, const char *issuer_cert_pem, char **out_pem);

/* What a certificate says about itself. Names are copied with control
 * characters replaced by '?' and cut at MMR_CERT_NAME_MAX bytes. */
struct mmr_cert_info {
    char cn[MMR_CERT_NAME_MAX + 1];
    char org[MMR_CERT_NAME_MAX + 1];
    char org_unit[MMR_CERT_NAME_MAX + 1];
    char issuer_cn[MMR_CERT_NAME_MAX + 1];
    char serial_hex[2 * MMR_CERT_SERIAL_MAX + 1]; /* lower-case, no leading zero bytes */
    int64_t not_before_ms;
    int64_t not_after_ms;
    char sha256_hex[MMR_SHA256_HEX_SIZE]; /* fingerprint: SHA-256 of the DER */
    bool is_ca;
    int max_path_len; /* CA: -1 for no limit */
};

/* Information about the first certificate in pem. */
int mmr_cert_read_info(const char *pem, struct mmr_cert_info *out);
/* The public key of the first certificate in pem (P-256 only). */
int mmr_cert_public_key(const char *pem, struct mmr_key **out);
int mmr_cert_read_info_der(const uint8_t *der, size_t len, struct mmr_cert_info *out);

/* DER certificate to PEM. Allocated. */
int mmr_cert_der_to_pem(const uint8_t *der, size_t len, char **out_pem);

/* Extra conditions for mmr_cert_verify; NULL means none. */
struct mmr_cert_verify_opts {
    enum mmr_cert_kind kind; /* the leaf must be fit for this use */
    const char *expect_cn;   /* the leaf's CN must be exactly this */
    const char *expect_host; /* a DNS name or IP literal that the leaf's SANs must hold */
};

/* Verifies chain_pem (the leaf first, then any intermediates) up to one of the
 * CA certificates in trusted_pem, at the current time, with ECDSA P-256 and
 * SHA-256 only. Returns MMR_EPERM with a message naming the certificate and
 * the reason ("certificate 'dev-1' expired at 2024-05-01T00:00:00.000Z", "...
 * is not signed by a trusted CA", "... is for 'a', not 'b'"), or MMR_EINVAL
 * for malformed PEM. */
int mmr_cert_verify(const char *chain_pem, const char *trusted_pem,
                    const struct mmr_cert_verify_opts *opts);

#endif
